import ArgumentParser
import ProfileVault
import VaultValues

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counts of subjects, events, key versions and audit entries.")
    @OptionGroup var options: GlobalOptions

    func run() throws {
        let s = try Vault.status(storePath: options.storePath())
        options.emit(.object([
            ("subjects", .int(Int64(s.subjects))),
            ("events", .int(Int64(s.events))),
            ("key_versions", .array(s.keyVersions.map { .int(Int64($0)) })),
            ("audit_entries", .int(s.auditEntries)),
            ("audit_head", .string(s.auditHead)),
            ("schema_version", .int(Int64(s.schemaVersion))),
            ("policy_version", .string(s.policyVersion)),
            ("file_bytes", .int(s.fileBytes)),
            ("policy", s.policy.map { p in .object([("version", .string(p.version)), ("sha256", .string(p.sha256)),
                                                    ("schema_sha256", .string(p.schemaSHA256)),
                                                    ("applied_at", .string(Vault.isoTime(millis: p.appliedAtMillis))),
                                                    ("actor", .string(p.actor))]) } ?? .null),
        ]), text: """
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
