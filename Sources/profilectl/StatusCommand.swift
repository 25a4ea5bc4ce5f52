import ArgumentParser
import ProfileVault
import VaultAudit
import VaultStore

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Counts of subjects, events, key versions and audit entries.")
    @OptionGroup var options: GlobalOptions

    func run() throws {
        let s = try ProfileStore.status(path: options.storePath())
        options.emit(.object([
            ("subjects", .int(Int64(s.subjects))),
            ("events", .int(Int64(s.events))),
            ("key_versions", .array(s.keyVersions.map { .int(Int64($0)) })),
            ("audit_entries", .int(s.auditEntries)),
            ("audit_head", .string(s.auditHead)),
            ("schema_version", .int(Int64(s.schemaVersion))),
            ("policy_version", .string(s.policyVersion)),
            ("file_bytes", .int(s.fileBytes)),
        ]), text: """
            subjects:      \(s.subjects)
            events:        \(s.events)
            key versions:  \(s.keyVersions.map(String.init).joined(separator: ", ")) (identity version \(s.identityKeyVersion))
            schema:        version \(s.schemaVersion); policy \(s.policyVersion)
            audit log:     \(s.auditEntries) entries, head \(s.auditHead)
            file size:     \(s.fileBytes) bytes
            """)
    }
}
