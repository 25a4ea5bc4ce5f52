import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultStore

/// Erasure in batches (`ProfileStore.erase(_:reason:audit:batchSize:)`): every subject of a
/// batch is shredded, gets its own audit entry and receipt and its suppression row, under one
/// signed checkpoint per batch, all in one transaction.
@Suite struct ErasureBatchTests {
    static let context = AuditContext(actor: "officer", role: "privacy_officer", requestID: "erase-1")

    func populated(_ n: Int) throws -> TempStore {
        let t = try TempStore()
        var o = IngestOptions()
        o.audit = Self.context
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<n)), options: o)
        return t
    }

    func resolved(_ t: TempStore, _ range: Range<Int>) throws -> [(id: String, row: ProfileStore.SubjectRow)] {
        try t.store.pool.read { db in try t.store.resolve(db, range.map { (line: $0 + 1, id: "CUST-\($0)") }, file: nil) }
    }

    func scalar(_ t: TempStore, _ sql: String) throws -> Int64 {
        try t.store.pool.read { db in try Int64.fetchOne(db, sql: sql) ?? -1 }
    }

    /// A file-level attacker rewrote the newest audit entry: the batch's audit append refuses to
    /// sign over it after the subjects were shredded in the same transaction, and the whole
    /// batch rolls back: every subject still there, none suppressed, no entry appended.
    @Test func aBatchOverAForgedLogRollsBackWhole() throws {
        let t = try populated(12)
        let before = try t.counts()
        let entries = try scalar(t, "SELECT count(*) FROM audit")
        try t.store.pool.writeWithoutTransaction { db in
            try db.execute(sql: """
                DROP TRIGGER audit_no_update;
                UPDATE audit SET entry = replace(entry, '"officer"', '"mallory"') WHERE seq = (SELECT max(seq) FROM audit);
                """)
        }
        do {
            _ = try t.store.erase(try resolved(t, 2..<9), reason: "request", audit: Self.context, batchSize: 500)
            Issue.record("an erasure signed over a rewritten log")
        } catch let e as VaultError {
            #expect(e.kind == .integrity, "\(e)")
        }
        #expect(try t.counts() == before)
        for i in 2..<9 { #expect(try t.store.exists(customerID: "CUST-\(i)")) }
        #expect(try scalar(t, "SELECT count(*) FROM suppressed") == 0)
        #expect(try scalar(t, "SELECT count(*) FROM audit") == entries)
    }

    /// Each receipt is the hash of the entry that records that subject's erasure (its pseudonym,
    /// its counts), the suppression row names it, one checkpoint signs each batch, and the log
    /// verifies up to every receipt.
    @Test func everySubjectHasItsOwnEntryAndReceiptUnderOneCheckpointPerBatch() throws {
        let t = try populated(12)
        let checkpointsBefore = try scalar(t, "SELECT count(*) FROM audit_checkpoints")
        let firstNew = try scalar(t, "SELECT max(seq) FROM audit") + 1
        let subjects = try resolved(t, 1..<11)
        let receipts = try t.store.erase(subjects, reason: "request 7", audit: Self.context, batchSize: 4)
        #expect(receipts.count == 10)
        // Batches of 4, 4 and 2: three checkpoints, entries numbered in order.
        #expect(try scalar(t, "SELECT count(*) FROM audit_checkpoints") == checkpointsBefore + 3)
        #expect(receipts.map(\.auditSequence) == Array(firstNew..<(firstNew + 10)))
        for (r, s) in zip(receipts, subjects) {
            #expect(r.customerID == s.id)
            let row = try #require(try t.store.pool.read { db in
                try Row.fetchOne(db, sql: "SELECT entry, hash, subject FROM audit WHERE seq = ?", arguments: [r.auditSequence])
            })
            #expect(AuditLog.hex([UInt8](row["hash"] as Data)) == r.receipt)
            #expect([UInt8](row["subject"] as Data) == s.row.pseudonym)
            let entry = try JSONValue.parse(row["entry"] as String)
            #expect(entry["api.operation"] == .string("erase"))
            #expect(entry["unmapped.counts"]?["wrapped_data_key"] == .int(1))
            #expect(entry["unmapped.counts"]?["attribute_rows"] == .int(1))
            let suppressed = try #require(try t.store.pool.read { db in
                try Row.fetchOne(db, sql: "SELECT receipt_seq, receipt, reason FROM suppressed WHERE pseudonym = ?", arguments: [Data(s.row.pseudonym)])
            })
            #expect(suppressed["receipt_seq"] as Int64 == r.auditSequence)
            #expect(suppressed["receipt"] as String == r.receipt)
            #expect(suppressed["reason"] as String == "request 7")
            #expect(r.removed.first { $0.0 == "wrapped_data_key" }?.1 == 1)
        }
        for r in [receipts[0], receipts[5], receipts[9]] {
            #expect(try t.store.verifyAudit(expectHead: r.receipt).ok)
        }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        // The others are untouched; the erased are gone.
        #expect(try t.store.exists(customerID: "CUST-0") && t.store.exists(customerID: "CUST-11"))
        for i in 1..<11 { #expect(try !t.store.exists(customerID: "CUST-\(i)")) }
    }

    /// A file-level attacker reading the store files after a multi-subject batch finds none of
    /// the erased subjects' wrapped keys, ciphertexts or blind-index MACs (the WAL checkpointed,
    /// secure_delete on).
    @Test func noByteOfAnErasedSubjectIsLeftInTheFiles() throws {
        let t = try populated(12)
        var secrets: [[UInt8]] = []
        for i in 3..<9 {
            let raw = try #require(try t.store.rawRows(customerID: "CUST-\(i)"))
            secrets += ([raw.wrappedDEKHex] + raw.pii.map(\.ciphertextHex) + raw.blindIndex.map(\.macHex)).compactMap { AuditLog.unhex($0) }
        }
        #expect(secrets.count >= 6 * 3)
        _ = try t.store.erase(try resolved(t, 3..<9), reason: "request", audit: Self.context, batchSize: 4)
        let files = ["", "-wal", "-shm"].compactMap { FileManager.default.contents(atPath: t.dir + "/store.sqlite" + $0) }
        #expect(!files.isEmpty)
        for file in files {
            for s in secrets { #expect(file.range(of: Data(s)) == nil, "erased bytes still in the store files") }
        }
    }
}
