import Foundation
import GRDB
import Synchronization
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultStore

/// The audit log's guarantees (SPEC §7): append-only, every kind of tampering detected in the
/// store and in exports, verification with the public key alone, no PII in any entry.
@Suite struct AuditTests {
    static let context = AuditContext(actor: "tester", role: "operator", requestID: "req-1")

    /// A store with 3 ingest batches (3 audit entries) and 5 single-entry transactions.
    func populated() throws -> TempStore {
        let t = try TempStore()
        var o = IngestOptions()
        o.batchSize = 10
        o.holdForValidation = 0   // three transactions, whatever the validation pass's timing
        o.audit = Self.context
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<25)), options: o)
        for i in 0..<5 {
            try t.store.audit([Self.context.record("get", .read, purpose: "customer_support",
                                                   subject: try t.store.pseudonym(ofCustomerID: "CUST-\(i)"), fields: ["email"])])
        }
        return t
    }

    func sql(_ t: TempStore, _ statements: String) throws {
        try t.store.pool.writeWithoutTransaction { db in try db.execute(sql: statements) }
    }

    static let dropTriggers = """
        DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
        DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;
        """

    @Test func ingestWritesOneEntryPerBatchWithCounts() throws {
        let t = try populated()
        #expect(try t.store.auditHead().entries == 8)
        let first = try t.store.pool.read { db in try String.fetchOne(db, sql: "SELECT entry FROM audit WHERE seq = 1")! }
        let e = try JSONValue.parse(first)
        #expect(e["api.operation"] == .string("ingest.profiles"))
        #expect(e["unmapped.counts"]?["inserted"] == .int(10))
        #expect(e["unmapped.counts"]?["first_line"] == .int(2))
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(v.ok && v.entries == 8 && v.firstBad == nil)
    }

    @Test func triggersRefuseUpdateAndDelete() throws {
        let t = try populated()
        #expect(throws: DatabaseError.self) { try sql(t, "UPDATE audit SET entry = '{}' WHERE seq = 2") }
        #expect(throws: DatabaseError.self) { try sql(t, "DELETE FROM audit WHERE seq = 8") }
        #expect(throws: DatabaseError.self) { try sql(t, "DELETE FROM audit_checkpoints") }
        #expect(throws: DatabaseError.self) { try sql(t, "UPDATE audit_checkpoints SET hash = x'00'") }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
    }

    @Test func modifiedEntryInTheStoreIsNamed() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + "UPDATE audit SET entry = replace(entry, '\"tester\"', '\"mallory\"') WHERE seq = 5")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 5)
    }

    @Test func recomputedChainIsCaughtByTheSignedCheckpoints() throws {
        let t = try populated()
        // Rewrite entry 6 and recompute every hash after it, as an attacker without the key can.
        try sql(t, Self.dropTriggers)
        try t.store.pool.write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT seq, entry FROM audit ORDER BY seq")
            var prev = AuditLog.genesis
            for row in rows {
                let seq: Int64 = row["seq"]
                var text: String = row["entry"]
                if seq == 6 { text = text.replacingOccurrences(of: "tester", with: "mallory") }
                let h = AuditLog.chain(previous: prev, entry: try JSONValue.parse(text))
                try db.execute(sql: "UPDATE audit SET entry = ?, prev_hash = ?, hash = ? WHERE seq = ?", arguments: [text, Data(prev), Data(h), seq])
                try db.execute(sql: "UPDATE audit_checkpoints SET hash = ? WHERE seq = ?", arguments: [Data(h), seq])
                prev = h
            }
        }
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok)
        #expect(v.firstBad == 6, "\(v)")
    }

    @Test func reorderedEntriesAreNamed() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + """
            UPDATE audit SET seq = -1 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = -1;
            """)
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 4)
    }

    @Test func deletedEntryInTheMiddleIsNamed() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + "DELETE FROM audit WHERE seq = 3")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 3)
    }

    @Test func truncatedTailIsCaughtByCheckpointsOrExpectHead() throws {
        let t = try populated()
        let head = try t.store.auditHead().head
        // Entries only: the orphaned checkpoint gives it away.
        try sql(t, Self.dropTriggers + "DELETE FROM audit WHERE seq > 6")
        var v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 7)
        // Entries and their checkpoints: only the earlier head can tell.
        try sql(t, "DELETE FROM audit_checkpoints WHERE seq > 6")
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        v = try t.store.verifyAudit(expectHead: head)
        #expect(!v.ok && v.firstBad == 7)
    }

    @Test func failedTransactionLeavesNeitherDataNorAuditEntry() throws {
        let t = try populated()
        let before = try t.counts()
        let head = try t.store.auditHead()
        struct Crash: Error {}
        #expect(throws: Crash.self) {
            try t.store.pool.write { db in
                try db.execute(sql: "INSERT INTO subjects(pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity) VALUES (x'00', 1, x'00', 0, 0, 0)")
                try t.store.appendAudit(db, [Self.context.record("ingest.profiles", .create)])
                throw Crash()
            }
        }
        #expect(try t.counts() == before)
        #expect(try t.store.auditHead() == head)
    }

    // MARK: Exports

    func exported(_ t: TempStore) throws -> (path: String, key: Ed25519PublicKey, lines: [String], head: String) {
        let path = t.dir + "/audit.jsonl"
        let r = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: path)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        return (path, t.store.auditPublicKey, lines, r.head)
    }

    func verify(_ t: TempStore, _ lines: [String], key: Ed25519PublicKey, expectHead: String? = nil) throws -> AuditVerification {
        let p = t.dir + "/edited.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return try AuditExportVerifier.verify(path: p, publicKey: key, expectHead: expectHead)
    }

    @Test func exportVerifiesWithThePublicKeyAlone() throws {
        let t = try populated()
        let e = try exported(t)
        #expect(e.lines.count == 9)   // 8 entries + the signed head
        let v = try AuditExportVerifier.verify(path: e.path, publicKey: e.key, expectHead: e.head)
        #expect(v.ok && v.entries == 8 && v.head == e.head)
        // A PEM round trip is all an auditor needs.
        let pemKey = try Ed25519PublicKey(pemRepresentation: e.key.pemRepresentation)
        #expect(try AuditExportVerifier.verify(path: e.path, publicKey: pemKey, expectHead: nil).ok)
        // Another store's key does not verify it.
        let other = try TempStore()
        #expect(try AuditExportVerifier.verify(path: e.path, publicKey: other.store.auditPublicKey, expectHead: nil).ok == false)
    }

    @Test func everyTamperingOfAnExportIsNamed() throws {
        let t = try populated()
        let e = try exported(t)
        var modified = e.lines
        modified[3] = modified[3].replacingOccurrences(of: "\"tester\"", with: "\"mallory\"")
        var v = try verify(t, modified, key: e.key)
        #expect(!v.ok && v.firstBad == 4, "modified: \(v)")

        var deleted = e.lines
        deleted.remove(at: 2)
        v = try verify(t, deleted, key: e.key)
        #expect(!v.ok && v.firstBad == 3, "deleted: \(v)")

        var reordered = e.lines
        reordered.swapAt(4, 5)
        v = try verify(t, reordered, key: e.key)
        #expect(!v.ok && v.firstBad == 5, "reordered: \(v)")

        var inserted = e.lines
        inserted.insert(e.lines[1], at: 2)
        v = try verify(t, inserted, key: e.key)
        #expect(!v.ok && v.firstBad == 3, "inserted: \(v)")

        var headless = e.lines
        headless.removeLast(3)   // two entries and the head cut off
        v = try verify(t, headless, key: e.key)
        #expect(!v.ok && v.firstBad == 7, "truncated without head: \(v)")

        var cut = e.lines
        cut.removeSubrange(6..<8)   // entries 7 and 8 cut, head kept
        v = try verify(t, cut, key: e.key)
        #expect(!v.ok && v.firstBad == 7, "truncated with head: \(v)")

        var headCut = e.lines
        headCut.removeFirst()   // the first entry cut
        v = try verify(t, headCut, key: e.key)
        #expect(!v.ok && v.firstBad == 1, "start cut: \(v)")

        // An older, complete export checked against a newer head: the newer head is missing.
        try t.store.audit([Self.context.record("get", .read)])
        let newer = try t.store.auditHead().head
        v = try verify(t, e.lines, key: e.key, expectHead: newer)
        #expect(!v.ok && v.firstBad == 9, "expect-head: \(v)")
        #expect(try verify(t, e.lines, key: e.key, expectHead: e.head).ok)
    }

    @Test func timeRangeExportIsAVerifiableSlice() throws {
        let t = try populated()
        let times = try t.store.pool.read { db in try Int64.fetchAll(db, sql: "SELECT time FROM audit ORDER BY seq") }
        let path = t.dir + "/slice.jsonl"
        let r = try t.store.exportAudit(sinceMillis: times[3], untilMillis: times[5], format: .jsonl, to: path)
        #expect(r.entries >= 1)
        #expect(try AuditExportVerifier.verify(path: path, publicKey: t.store.auditPublicKey, expectHead: nil).ok)
        let csv = t.dir + "/audit.csv"
        _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .csv, to: csv)
        let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 10)
        #expect(rows[0].hasPrefix("metadata.sequence,time,time_dt"))
        #expect(rows[9].hasPrefix("head,"))
    }

    @Test func noPlaintextPIIInEntriesOrExports() throws {
        let t = try populated()
        let e = try exported(t)
        let text = e.lines.joined(separator: "\n")
        for i in 0..<25 {
            let r = Fixtures.row(i)
            for needle in [r[0], r[1], r[1].lowercased(), r[2], r[3]] { #expect(!text.contains(needle), "\(needle)") }
        }
    }
}

extension AuditTests {
    @Test func subjectIndexThatDisagreesWithItsEntryIsCaught() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + "UPDATE audit SET subject = NULL WHERE seq = 6")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 6)
    }
}

extension AuditTests {
    @Test func concurrentReadEntriesAreGroupCommittedAndAllDurable() throws {
        let t = try TempStore()
        let store = t.store
        DispatchQueue.concurrentPerform(iterations: 200) { i in
            try! store.audit([AuditContext(actor: "r\(i)", role: "support", requestID: "q\(i)").record("get", .read)])
        }
        #expect(try t.store.auditHead().entries == 200)
        let checkpoints = try t.store.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit_checkpoints")! }
        #expect(checkpoints >= 1 && checkpoints <= 200)
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        let actors = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit") }
        let names = actors.compactMap { text -> String? in
            if case .string(let s)? = (try? JSONValue.parse(text))?["actor.user.name"] { return s }
            return nil
        }
        #expect(Set(names).count == 200)
    }

    /// The commit delay applies only under concurrent load: a thread appending in a loop is
    /// never made to wait; overlapping callers are.
    @Test func onlyOverlappingCallersDelayTheGroupCommit() throws {
        let sequential = AuditGroupCommit(maxDelay: 0.0005)
        var committed = 0
        for _ in 0..<300 { try sequential.append([]) { _ in committed += 1 } }
        #expect(committed == 300 && sequential.delayedLeaders == 0)

        // 16 threads (the load test's 16 connections), 25 appends each.
        let busy = AuditGroupCommit(maxDelay: 0.0005)
        let batches = Mutex(0)
        let group = DispatchGroup()
        for _ in 0..<16 {
            group.enter()
            Thread {
                for _ in 0..<25 {
                    try! busy.append([AuditContext(actor: "a", role: "support", requestID: "r").record("get", .read)]) { _ in
                        batches.withLock { $0 += 1 }
                        usleep(200)   // a commit that takes a while, as an fsync does
                    }
                }
                group.leave()
            }.start()
        }
        group.wait()
        #expect(busy.delayedLeaders > 0)
        #expect(batches.withLock { $0 } < 400)
    }

    /// `serve` moves WAL checkpoints to a thread of their own: the writer no longer
    /// checkpoints, the thread keeps the WAL short, and close() stops it with every entry kept.
    @Test func backgroundCheckpointsKeepTheWALShortAndStopOnClose() throws {
        func walBytes(_ t: TempStore, background: Bool) throws -> Int {
            if background {
                try t.store.startBackgroundCheckpoints(every: 0.002)
            } else {
                try t.store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
            }
            let auto = try t.store.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint")! }
            #expect(auto == 0)
            for i in 0..<400 {
                try t.store.audit([AuditContext(actor: "r\(i)", role: "support", requestID: "q\(i)").record("get", .read)])
                if i % 20 == 19 { usleep(5_000) }   // room for the checkpointer to run
            }
            return (try FileManager.default.attributesOfItem(atPath: t.store.path + "-wal")[.size] as? Int) ?? 0
        }
        let with = try TempStore(), without = try TempStore()
        let short = try walBytes(with, background: true), long = try walBytes(without, background: false)
        #expect(short * 2 < long, "WAL with background checkpoints \(short) bytes, without \(long)")
        try with.store.close()
        let reopened = try DatabaseQueue(path: with.store.path)
        #expect(try reopened.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit")! } == 400)
        #expect(try reopened.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check")! } == "ok")
    }
}
