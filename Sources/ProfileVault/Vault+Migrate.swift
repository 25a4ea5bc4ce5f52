import Foundation
import VaultAudit
public import VaultPostgres
import VaultStore
import VaultValues

/// What `profilectl migrate` copied (counts per table) and the copy's new audit head.
public typealias StoreMigrationReport = VaultPostgres.StoreMigrationReport

extension Vault {
    /// `profilectl migrate --to postgres://...`: copies this (SQLite) store to a new store on
    /// PostgreSQL (permission `keys`: the copy carries every wrapped key). Ciphertexts and keys
    /// are copied as stored, the audit chain entry for entry, continued on the target with a
    /// `store.migrate` entry; the copy is verified before this returns
    /// (`PostgresStore.migrate`). This store records the migration too (`store.migrate`,
    /// naming the target's new head), and stays as it was otherwise.
    public func migrate(to url: String, serviceRole: String? = nil) throws -> StoreMigrationReport {
        try audited("store.migrate", .read, permission: "keys") { context in
            guard let source = store as? ProfileStore else {
                throw VaultError(.usage, "migrate copies a SQLite store (--store FILE) to PostgreSQL (--to postgres://...)")
            }
            guard PostgresStore.isLocation(url) else {
                throw VaultError(.usage, "--to must be a PostgreSQL location (postgres://user@host:port/database?sslmode=...)")
            }
            let keyring = try loadKeyring()
            let report = try PostgresStore.migrate(from: source, to: url, keyring: keyring, schema: schema, serviceRole: serviceRole, audit: context)
            try store.audit([context.record("store.migrate", .read, detail: "copied to a PostgreSQL store; its audit head is entry \(report.headSequence), \(report.head)",
                                            counts: [("subjects", report.subjects), ("audit_entries", report.auditEntries)])])
            return report
        }
    }
}
