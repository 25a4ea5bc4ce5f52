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
                // Room for the checkpointer: wait for a pass that started after these appends
                // (not a fixed sleep, which a loaded machine may not honour).
                if i % 20 == 19 { if background { t.store.waitForBackgroundCheckpoint() } else { usleep(5_000) } }
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

/// Attacks on the log by someone who can edit the file (sqlite3 and SHA-256) but does not hold
/// the keyring: the store must never sign over what they wrote, and what they cannot hide from
/// the file alone (a tail cut back to an older checkpoint) is caught by published heads.
extension AuditTests {
    /// The forgery of issue 16: delete an actor's entries made after the auditor's last export,
    /// renumber, recompute the chain, delete the checkpoints from the first changed entry.
    func forge(_ t: TempStore, deletingActor actor: String) throws {
        try sql(t, Self.dropTriggers)
        try t.store.pool.writeWithoutTransaction { db in
            let rows = try Row.fetchAll(db, sql: "SELECT seq, entry, subject FROM audit ORDER BY seq")
            var kept: [(entry: JSONValue, subject: Data?)] = []
            var firstChanged: Int64?
            for row in rows {
                let seq: Int64 = row["seq"]
                let entry = try JSONValue.parse(row["entry"] as String)
                if entry["actor.user.name"] == .string(actor) {
                    if firstChanged == nil { firstChanged = seq }
                    continue
                }
                kept.append((entry, row["subject"]))
            }
            guard let firstChanged else { return }
            try db.execute(sql: "DELETE FROM audit WHERE seq >= ?", arguments: [firstChanged])
            try db.execute(sql: "DELETE FROM audit_checkpoints WHERE seq >= ?", arguments: [firstChanged])
            var prev = try Data.fetchOne(db, sql: "SELECT hash FROM audit WHERE seq = ?", arguments: [firstChanged - 1]).map { [UInt8]($0) } ?? AuditLog.genesis
            for (i, k) in kept.enumerated() where Int64(i + 1) >= firstChanged {
                let seq = Int64(i + 1)
                guard case .object(var pairs) = k.entry else { continue }
                pairs = pairs.map { $0.0 == "metadata.sequence" ? ($0.0, .int(seq)) : $0 }
                let text = JSONValue.object(pairs).canonicalString()
                let h = SHA256.hash(prev, Array(text.utf8))
                try db.execute(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [seq, AuditLog.nowMillis, text, Data(prev), Data(h), k.subject])
                prev = h
            }
            try db.execute(sql: """
                CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                """)
        }
    }

    func expectIntegrityFailure(_ body: () throws -> Void, _ what: String) {
        do {
            try body()
            Issue.record("\(what): succeeded over a forged log")
        } catch let e as VaultError {
            #expect(e.kind == .integrity, "\(what): \(e)")
        } catch {
            Issue.record("\(what): \(error)")
        }
    }

    @Test func forgedLogIsNeverSignedOver() throws {
        let t = try populated()
        let auditorExport = try exported(t)
        let mallory = AuditContext(actor: "mallory", role: "support", requestID: "m")
        for i in 0..<3 {
            try t.store.audit([mallory.record("get", .read, purpose: "customer_support", subject: try t.store.pseudonym(ofCustomerID: "CUST-\(i)"))])
            try t.store.audit([Self.context.record("get", .read)])
        }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        try forge(t, deletingActor: "mallory")
        let forged = try t.store.auditHead()
        #expect(forged.entries == 11)

        // The next operation of anyone, the auditor's export included, fails; nothing is appended.
        expectIntegrityFailure({ try t.store.audit([Self.context.record("get", .read)]) }, "a read's audit entry")
        expectIntegrityFailure({ _ = try t.store.signedAuditHead() }, "audit head")
        let out = t.dir + "/after-forgery.jsonl"
        expectIntegrityFailure({ _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out) }, "audit export")
        #expect(!FileManager.default.fileExists(atPath: out))
        expectIntegrityFailure({
            try t.store.pool.write { db in _ = try t.store.appendAudit(db, [Self.context.record("erase", .delete)]) }
        }, "an audited write")
        #expect(try t.store.auditHead() == forged)
        let checkpoints = try t.store.pool.read { db in try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit_checkpoints") }
        #expect(checkpoints == 8)   // the forger deleted those from the first changed entry on; none was re-signed

        // Verification names the first uncovered entry, with or without the auditor's head.
        var v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 9, "\(v)")
        v = try t.store.verifyAudit(expectHead: auditorExport.head)
        #expect(!v.ok && v.firstBad == 9, "\(v)")
    }

    @Test func deletedCheckpointInTheMiddleBreaksTheCheckpointChain() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + "DELETE FROM audit_checkpoints WHERE seq = 5")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 5, "\(v)")
        #expect(v.reason?.contains("checkpoint 6 links to checkpoint 5") == true, "\(v)")
        // An export over the gap refuses to sign it.
        let out = t.dir + "/gap.jsonl"
        expectIntegrityFailure({ _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out) }, "export over a deleted checkpoint")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func uncoveredOrOrphanedTailFailsTheNextOperation() throws {
        // An entry inserted after the head, with a correct hash but no signature.
        let t = try populated()
        try sql(t, Self.dropTriggers)
        try t.store.pool.writeWithoutTransaction { db in
            let head = [UInt8](try Data.fetchOne(db, sql: "SELECT hash FROM audit WHERE seq = 8")!)
            let text = Self.context.record("get", .read).entry(sequence: 9, timeMillis: AuditLog.nowMillis).canonicalString()
            try db.execute(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash) VALUES (9, 0, ?, ?, ?)",
                           arguments: [text, Data(head), Data(SHA256.hash(head, Array(text.utf8)))])
        }
        expectIntegrityFailure({ try t.store.audit([Self.context.record("get", .read)]) }, "append after an unsigned entry")
        #expect(try t.store.auditHead().entries == 9)

        // The newest entry deleted, its checkpoint kept.
        let u = try populated()
        try sql(u, Self.dropTriggers + "DELETE FROM audit WHERE seq = 8")
        expectIntegrityFailure({ try u.store.audit([Self.context.record("get", .read)]) }, "append after a deleted head")

        // The newest entry rewritten in place (hash column left alone).
        let w = try populated()
        try sql(w, Self.dropTriggers + "UPDATE audit SET entry = replace(entry, '\"tester\"', '\"mallory\"') WHERE seq = 8")
        expectIntegrityFailure({ try w.store.audit([Self.context.record("get", .read)]) }, "append after a rewritten head")
    }

    @Test func checkpointsAreChainedAndTheHeadIsPublished() throws {
        let t = try populated()
        let heads = t.dir + "/heads.jsonl"
        try t.store.publishAuditHeads(to: heads)
        for _ in 0..<4 { try t.store.audit([Self.context.record("get", .read)]) }
        let lines = try String(contentsOfFile: heads, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 5)   // the head at start, then one per commit
        let published = try lines.map { try #require(AuditCheckpoint.parsePublished(try JSONValue.parse(String($0)))) }
        #expect(published.map(\.sequence) == [8, 9, 10, 11, 12])
        for (a, b) in zip(published, published.dropFirst()) {
            #expect(b.isValid(publicKey: t.store.auditPublicKey))
            #expect(b.linkFailure(after: a) == nil)
        }
        #expect(try t.store.signedAuditHead() == published.last)
        #expect(try t.store.verifyAudit(expectHead: heads).ok)
        let export = try exported(t)
        #expect(try AuditExportVerifier.verify(path: export.path, publicKey: export.key, expectHead: heads).ok)

        // Cut the tail back to an older checkpoint, entries and checkpoints alike: the file alone
        // cannot tell, the published heads can.
        try sql(t, Self.dropTriggers + "DELETE FROM audit WHERE seq > 10; DELETE FROM audit_checkpoints WHERE seq > 10;")
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        var v = try t.store.verifyAudit(expectHead: heads)
        #expect(!v.ok && v.firstBad == 11, "\(v)")
        // ... even after the store goes on from there (a fork: entry 11 exists again, differently).
        try t.store.audit([AuditContext(actor: "other", role: "support", requestID: "x").record("get", .read)])
        v = try t.store.verifyAudit(expectHead: heads)
        #expect(!v.ok && v.firstBad == 11, "\(v)")

        // A head file someone edited is refused, not trusted.
        var edited = lines.map(String.init)
        edited[0] = edited[0].replacingOccurrences(of: "\"seq\":8", with: "\"seq\":7")
        try (edited.joined(separator: "\n") + "\n").write(toFile: t.dir + "/edited-heads.jsonl", atomically: true, encoding: .utf8)
        #expect(throws: VaultError.self) { _ = try t.store.verifyAudit(expectHead: t.dir + "/edited-heads.jsonl") }
        #expect(throws: VaultError.self) { _ = try t.store.verifyAudit(expectHead: t.dir + "/no-such-file") }
    }

    @Test func legacyUnchainedCheckpointsStillVerifyAndChainedOnesFollowThem() throws {
        let t = try populated()
        // Make entries 1-8 look like a store written before chaining: v1 signatures, no links.
        try sql(t, Self.dropTriggers)
        let key = t.store.keys.auditSigning
        try t.store.pool.writeWithoutTransaction { db in
            for row in try Row.fetchAll(db, sql: "SELECT seq, hash FROM audit_checkpoints") {
                let seq: Int64 = row["seq"]
                let sig = try key.signature(for: AuditLog.checkpointMessage(sequence: seq, hash: [UInt8](row["hash"] as Data)))
                try db.execute(sql: "UPDATE audit_checkpoints SET signature = ?, checkpoint_time = NULL, prev_seq = NULL, prev_digest = NULL WHERE seq = ?",
                               arguments: [Data(sig), seq])
            }
        }
        t.store.auditHeads.trusted.withLock { $0 = nil }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        try t.store.audit([Self.context.record("get", .read)])
        try t.store.audit([Self.context.record("get", .read)])
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        let e = try exported(t)
        #expect(try AuditExportVerifier.verify(path: e.path, publicKey: e.key, expectHead: nil).ok)
    }
}

/// The second round of attacks on the file (an adversarial review of the first fix): unsigned
/// columns, empty slices and columns of the wrong type.
extension AuditTests {
    @Test func anEditedTimeColumnCannotMoveAnEntryOutOfAnExport() throws {
        let t = try populated()
        let times = try t.store.pool.read { db in try Int64.fetchAll(db, sql: "SELECT time FROM audit ORDER BY seq") }
        // Entry 6 (a read) pushed before the slice by its unhashed time column. The slice
        // starts at entry 6's own time, so the entry belongs in it whatever the clock did.
        try sql(t, Self.dropTriggers + "UPDATE audit SET time = 0 WHERE seq = 6")
        let out = t.dir + "/slice.jsonl"
        expectIntegrityFailure({ _ = try t.store.exportAudit(sinceMillis: times[5], untilMillis: nil, format: .jsonl, to: out) }, "export over an edited time")
        #expect(!FileManager.default.fileExists(atPath: out))
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 6, "\(v)")
    }

    @Test func anEmptySliceDoesNotSignAForgedPreviousHash() throws {
        let t = try populated()
        try sql(t, Self.dropTriggers + "UPDATE audit SET prev_hash = zeroblob(32) WHERE seq = 4")
        let times = try t.store.pool.read { db in try Int64.fetchAll(db, sql: "SELECT time FROM audit ORDER BY seq") }
        let out = t.dir + "/empty.jsonl"
        // A range that selects no entry but starts at entry 4: the hash before it must be proved.
        expectIntegrityFailure({ _ = try t.store.exportAudit(sinceMillis: times[3], untilMillis: times[2], format: .jsonl, to: out) }, "empty slice")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func columnsOfTheWrongTypeAreIntegrityErrorsNotCrashes() throws {
        for edit in ["UPDATE audit_checkpoints SET prev_seq = 1e300 WHERE seq = 8",
                     "UPDATE audit_checkpoints SET checkpoint_time = 'abc' WHERE seq = 3",
                     "UPDATE audit_checkpoints SET prev_digest = NULL WHERE seq = 8",
                     "UPDATE audit SET hash = 42 WHERE seq = 8",
                     "UPDATE audit SET entry = x'00ff' WHERE seq = 5",
                     "UPDATE audit SET time = 'yesterday' WHERE seq = 2",
                     "UPDATE audit SET subject = 7 WHERE seq = 6"] {
            let t = try populated()
            try sql(t, Self.dropTriggers + edit)
            let v = try t.store.verifyAudit(expectHead: nil)
            #expect(!v.ok, "\(edit): \(v)")
            if !edit.contains("subject") {   // exports do not read the subject index
                expectIntegrityFailure({ _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: t.dir + "/x.jsonl") }, edit)
            }
        }
        // At the head, every operation refuses (and none traps).
        for edit in ["UPDATE audit_checkpoints SET prev_seq = 1e300 WHERE seq = 8", "UPDATE audit SET hash = 42 WHERE seq = 8",
                     "UPDATE audit SET entry = x'00ff' WHERE seq = 8"] {
            let t = try populated()
            try sql(t, Self.dropTriggers + edit)
            expectIntegrityFailure({ try t.store.audit([Self.context.record("get", .read)]) }, edit)
            _ = try? t.store.auditHead()   // status reads the head's hash: an error or a value, never a trap
        }
    }

    @Test func aCheckpointInsertedBeforeTheFirstEntryIsCaught() throws {
        let t = try populated()
        // INSERT is not blocked by the triggers (they refuse UPDATE and DELETE).
        try sql(t, "INSERT INTO audit_checkpoints(seq, hash, signature, time) VALUES (0, zeroblob(32), zeroblob(64), 0)")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 1, "\(v)")
    }
}
