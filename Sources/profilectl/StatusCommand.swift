import ArgumentParser
import ProfileVault
import VaultValues

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counts of subjects, events, key versions and audit entries.")
    @OptionGroup var options: GlobalOptions

    func run() throws {
        let s = try Vault.status(storePath: options.storePath())
        options.emit(JSONForms.storeStatus(s), text: """
            subjects:      \(s.subjects)
            events:        \(s.events)
            key versions:  \(s.keyVersions.map(String.init).joined(separator: ", ")) (identity version \(s.identityKeyVersion))
            schema:        version \(s.schemaVersion); policy \(s.policyVersion)
            policy:        \(s.policy.map { "version \($0.version), sha256 \($0.sha256), applied \(Vault.isoTime(millis: $0.appliedAtMillis)) by \($0.actor)" } ?? "none recorded (run `\(Vault.applyCommand)`)")
            audit log:     \(s.auditEntries) entries, head \(s.auditHead)
            file size:     \(s.fileBytes) bytes
            """)
    }
}
