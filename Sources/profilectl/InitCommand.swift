import ArgumentParser
import ProfileVault
import VaultValues

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a store for the schema and policy.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "PostgreSQL only: the role service nodes run as (created NOLOGIN when missing; default profilevault_service). Grant it to each node's login role.")
    var serviceRole: String?

    func run() throws {
        let vault = try Vault.initialize(options.configuration(), serviceRole: serviceRole)
        let status = try vault.status()
        options.emit(.object([
            ("store", .string(vault.storePath)),
            ("schema_version", .int(Int64(vault.schema.version))),
            ("policy_version", .string(vault.policy.version)),
            ("identity_key_version", .int(Int64(status.identityKeyVersion))),
        ]), text: "created store \(vault.storePath) (schema version \(vault.schema.version), policy \(vault.policy.version))")
    }
}
