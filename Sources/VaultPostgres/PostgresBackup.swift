import Foundation
import PostgresNIO
public import VaultStore
import VaultAudit

// The erasure journal on PostgreSQL, as on SQLite (VaultStore/Backup.swift): the suppression
// list with its receipts, the store id and the audit head, read in one transaction; sealed and
// verified with the same erasure-journal key. Its journal is written by `audit erasures --out
// FILE` (there is no file beside a PostgreSQL store); backup and restore:
// PostgresBackupRestore.swift.

extension PostgresProfiles {
    public func erasureJournal() throws -> ErasureJournal {
        try Self.wait("reading the erasure journal") { [engine] in
            // One snapshot for the list and the head: under READ COMMITTED an erasure
            // committing between the two reads would be missing from a journal whose head
            // claims to cover it.
            try await engine.transaction("reading the erasure journal", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
                var entries: [ErasureJournalEntry] = []
                for row in try await engine.rows(conn, "SELECT pseudonym, erased_at, reason, receipt_seq, receipt FROM profilevault.suppressed") {
                    let (p, at, reason, seq, receipt) = try row.decode((ByteBuffer, Int64, String, Int64?, String?).self)
                    entries.append(ErasureJournalEntry(pseudonym: p.bytes, erasedAtMillis: at, reason: reason, auditSequence: seq, receipt: receipt))
                }
                let store = try await Self.journalIdentity(engine, conn)
                guard let head = try await engine.rows(conn, "SELECT seq, hash FROM profilevault.audit_head WHERE id = 1").first else {
                    throw PostgresStoreError(.integrity, "the audit head row is missing: the database was edited")
                }
                let (seq, hash) = try head.decode((Int64, ByteBuffer).self)
                return ErasureJournal(storeID: store, entries: ErasureJournal.merged([], entries), auditSequence: seq,
                                      auditHead: AuditLog.hex(hash.bytes), writtenAtMillis: AuditLog.nowMillis)
            }
        }
    }

    public func sealErasureJournal(_ journal: ErasureJournal) -> [UInt8] {
        journal.sealed(key: keys.erasureJournal)
    }

    public func openErasureJournal(_ bytes: [UInt8], label: String) throws -> ErasureJournal {
        let identity = try Self.wait("reading the store's identity") { [engine] in
            try await engine.transaction("reading the store's identity") { conn in try await Self.journalIdentity(engine, conn) }
        }
        return try ErasureJournal.open(bytes, key: keys.erasureJournal, storeID: identity, label: label)
    }

    /// Whose erasures a journal speaks for (as on SQLite): the store id, and for a store
    /// restored from a backup the line it started (`meta.lineage`, new at every restore), so a
    /// journal of the store it was restored from does not count as covering it.
    static func journalIdentity(_ engine: PostgresEngine, _ conn: PostgresConnection) async throws -> String {
        var id = "", lineage = ""
        for row in try await engine.rows(conn, "SELECT key, value FROM profilevault.meta WHERE key IN ('store_id', 'lineage')") {
            let (k, v) = try row.decode((String, String).self)
            if k == "store_id" { id = v } else { lineage = v }
        }
        return lineage.isEmpty ? id : id + "/" + lineage
    }
}
