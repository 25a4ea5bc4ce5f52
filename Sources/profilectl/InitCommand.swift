import ArgumentParser
import ProfileVault
import VaultAudit
import VaultStore

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a store for the schema and policy.")
    @OptionGroup var options: GlobalOptions

    func run() throws {
        let vault = try Vault.initialize(options.configuration())
        let status = try vault.status()
        options.emit(.object([
            ("store", .string(vault.store.path)),
            ("schema_version", .int(Int64(vault.schema.version))),
            ("policy_version", .string(vault.policy.version)),
            ("identity_key_version", .int(Int64(status.identityKeyVersion))),
        ]), text: "created store \(vault.store.path) (schema version \(vault.schema.version), policy \(vault.policy.version))")
    }
}
