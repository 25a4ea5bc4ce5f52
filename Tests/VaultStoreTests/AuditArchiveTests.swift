import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import EngineConformanceSupport
@testable import VaultStore

/// Attacks on an archived log by someone who can edit the store file (sqlite3) and the archive
/// file but does not hold the keyring, and the archive's failure paths (issue 20 §3).
@Suite struct AuditArchiveTests {
    static let context = AuditContext(actor: "auditor-1", role: "auditor", requestID: "req-a")

    /// A store with six transactions (two entries each) before `cut` and two after it.
    func populated(publishingTo heads: String? = nil) throws -> (TempStore, cut: Int64) {
        let t = try TempStore()
        if let heads { try t.store.publishAuditHeads(to: t.dir + "/" + heads) }
        for i in 0..<6 {
            try t.store.audit([Self.context.record("get", .read, detail: "a \(i)"), Self.context.record("get", .read, detail: "b \(i)")])
        }
        let cut = AuditLog.nowMillis
        ArchiveConformance.waitPast(cut)
        for i in 0..<2 { try t.store.audit([Self.context.record("get", .read, detail: "after \(i)")]) }
        return (t, cut + 1)
    }

    func sql(_ t: TempStore, _ statements: String) throws {
        try t.store.pool.writeWithoutTransaction { db in try db.execute(sql: statements) }
    }

    func archive(_ t: TempStore, before: Int64, _ name: String) throws -> AuditArchiveResult {
        try t.store.archiveAudit(before: before, to: try OutputFile(path: t.dir + "/" + name, force: false, protecting: []), audit: Self.context)
    }

    func count(_ t: TempStore) throws -> Int {
        try t.store.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit") ?? 0 }
    }

    @Test func deletingAPrefixWithoutAnAnchorIsDetected() throws {
        let (t, _) = try populated()
        // The old trigger's wall is gone once an attacker edits the file; the verifier is not.
        try sql(t, "DROP TRIGGER audit_no_delete; DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints WHERE seq <= 4; DELETE FROM audit WHERE seq <= 4")
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 1 && (v.reason ?? "").contains("no signed archive anchor"), "\(v)")
    }

    @Test func theTriggerLetsThroughOnlyAnchoredRows() throws {
        let (t, cut) = try populated()
        #expect(throws: DatabaseError.self) { try sql(t, "DELETE FROM audit WHERE seq = 1") }
        let a = try archive(t, before: cut, "a.jsonl")
        #expect(throws: DatabaseError.self) { try sql(t, "DELETE FROM audit WHERE seq = \(a.lastSequence + 1)") }
        #expect(throws: DatabaseError.self) { try sql(t, "DELETE FROM audit_archive") }
        #expect(throws: DatabaseError.self) { try sql(t, "UPDATE audit_archive SET first_seq = 2") }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
    }

    @Test func archiveMovesThePrefixAndTheStoreVerifiesFromItsAnchor() throws {
        let (t, cut) = try populated(publishingTo: "heads.jsonl")
        let total = try count(t)
        let a = try archive(t, before: cut, "a.jsonl")
        #expect(a.firstSequence == 1 && a.lastSequence == 12 && a.entries == 12)
        #expect(try count(t) == total - 12 + 1)   // the archive's own entry
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(v.ok && v.archivedThrough == 12 && v.entries == total - 12 + 1, "\(v)")
        let f = try AuditExportVerifier.verify(path: t.dir + "/a.jsonl", publicKey: t.store.auditPublicKey, expectHead: a.head)
        #expect(f.ok && f.entries == 12)
        // Appends go on; the published heads (most of them now archived) keep working.
        try t.store.audit([Self.context.record("get", .read)])
        #expect(try t.store.verifyAudit(expectHead: t.dir + "/heads.jsonl").ok)
    }

    /// An attacker who kept a copy of the store from before the archive puts the archived
    /// entries and checkpoints back and removes the anchor: every entry verifies again from
    /// genesis, but the live `audit.archive` entry names a range no anchor covers.
    @Test func puttingArchivedEntriesBackAndRemovingTheAnchorIsDetected() throws {
        let (t, cut) = try populated()
        let copy = t.dir + "/before-archive.sqlite"
        try sql(t, "VACUUM INTO '\(copy)'")
        let a = try archive(t, before: cut, "a.jsonl")
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        try sql(t, """
            ATTACH '\(copy)' AS old;
            INSERT INTO audit SELECT * FROM old.audit WHERE seq <= \(a.lastSequence);
            INSERT INTO audit_checkpoints SELECT * FROM old.audit_checkpoints WHERE seq <= \(a.lastSequence);
            DROP TRIGGER audit_archive_no_delete; DELETE FROM audit_archive;
            DETACH old;
            """)
        let v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == a.recordSequence && (v.reason ?? "").contains("no signed anchor"), "\(v)")
        #expect(v.archivedThrough == nil)
    }

    @Test func alteringTheAnchorIsDetected() throws {
        for alteration in ["UPDATE audit_archive SET time = time + 1", "UPDATE audit_archive SET hash = prev_anchor",
                           "UPDATE audit_archive SET first_seq = 2", "UPDATE audit_archive SET cp_time = cp_time + 1"] {
            let (t, cut) = try populated()
            _ = try archive(t, before: cut, "a.jsonl")
            try sql(t, "DROP TRIGGER audit_archive_no_update; " + alteration)
            let v = try t.store.verifyAudit(expectHead: nil)
            #expect(!v.ok && (v.reason ?? "").contains("archive anchor"), "\(alteration): \(v)")
        }
    }

    @Test func deletingTheAnchorOrForgingOneIsDetected() throws {
        let (t, cut) = try populated()
        _ = try archive(t, before: cut, "a.jsonl")
        // The anchor removed: the live chain starts at 13 with nothing to say why.
        try sql(t, "DROP TRIGGER audit_archive_no_delete; CREATE TEMP TABLE saved AS SELECT * FROM audit_archive; DELETE FROM audit_archive")
        var v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && v.firstBad == 1, "\(v)")
        // The anchor moved forward over live entries the attacker deleted (copying the next
        // checkpoint in): its signature no longer covers it.
        try sql(t, """
            INSERT INTO audit_archive SELECT * FROM saved;
            DROP TRIGGER audit_archive_no_update;
            UPDATE audit_archive SET last_seq = 13, hash = (SELECT hash FROM audit WHERE seq = 13),
                cp_signature = (SELECT signature FROM audit_checkpoints WHERE seq = 13),
                cp_time = (SELECT checkpoint_time FROM audit_checkpoints WHERE seq = 13),
                cp_prev_seq = (SELECT prev_seq FROM audit_checkpoints WHERE seq = 13),
                cp_prev_digest = (SELECT prev_digest FROM audit_checkpoints WHERE seq = 13);
            DELETE FROM audit_checkpoints WHERE seq = 13; DELETE FROM audit WHERE seq = 13;
            """)
        v = try t.store.verifyAudit(expectHead: nil)
        #expect(!v.ok && (v.reason ?? "").contains("does not verify with the store's key"), "\(v)")
    }

    @Test func oneByteChangedInTheArchiveIsNamed() throws {
        let (t, cut) = try populated()
        let a = try archive(t, before: cut, "a.jsonl")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: t.dir + "/a.jsonl")))
        // Entry 5's detail "a 2" becomes "a 3".
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        var offset = 0
        for line in lines.prefix(4) { offset += line.count + 1 }
        let line = Array(lines[4])
        let needle = Array("a 2".utf8)
        guard let at = (0...(line.count - needle.count)).first(where: { Array(line[$0..<($0 + needle.count)]) == needle }) else {
            Issue.record("entry 5 does not hold its detail")
            return
        }
        bytes[offset + at + 2] = UInt8(ascii: "3")
        let tampered = try t.write("tampered.jsonl", bytes: bytes)
        let v = try AuditExportVerifier.verify(path: tampered, publicKey: t.store.auditPublicKey, expectHead: a.head)
        #expect(!v.ok && v.firstBad == 5, "\(v)")
    }

    @Test func refusalsWriteNothingAndRemoveNothing() throws {
        let (t, cut) = try populated()
        let before = try t.store.verifyAudit(expectHead: nil)
        // Before the first entry: invalid input, no file.
        #expect(throws: VaultError.self) { _ = try archive(t, before: 1, "early.jsonl") }
        #expect(!FileManager.default.fileExists(atPath: t.dir + "/early.jsonl"))
        do { _ = try archive(t, before: 1, "early.jsonl") } catch let e as VaultError { #expect(e.kind == .invalidInput && e.message.contains("nothing to archive")) }
        // The output exists: refused (73), the file untouched, nothing deleted.
        let existing = try t.write("exists.jsonl", "keep me\n")
        do {
            _ = try archive(t, before: cut, "exists.jsonl")
            Issue.record("an existing file was accepted")
        } catch let e as VaultError { #expect(e.kind == .cannotCreate) }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "keep me\n")
        #expect(try t.store.verifyAudit(expectHead: nil) == before)
        // Twice with the same date: the second finds nothing new.
        _ = try archive(t, before: cut, "a.jsonl")
        do {
            _ = try archive(t, before: cut, "b.jsonl")
            Issue.record("a second archive of the same range was accepted")
        } catch let e as VaultError { #expect(e.kind == .invalidInput && e.message.contains("archived already")) }
        #expect(!FileManager.default.fileExists(atPath: t.dir + "/b.jsonl"))
    }

    /// A crash after the file is written and before the entries go: the store still holds
    /// (and verifies) every entry, the file verifies, and running again is safe.
    @Test func failureAfterTheFileLeavesAStoreThatVerifiesAndARerunWorks() throws {
        let (t, cut) = try populated()
        let total = try count(t)
        try sql(t, "CREATE TRIGGER crash BEFORE INSERT ON audit_archive BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
        #expect(throws: (any Error).self) { _ = try archive(t, before: cut, "first.jsonl") }
        #expect(try count(t) == total)
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        #expect(try AuditExportVerifier.verify(path: t.dir + "/first.jsonl", publicKey: t.store.auditPublicKey, expectHead: nil).ok)
        try sql(t, "DROP TRIGGER crash")
        let a = try archive(t, before: cut, "second.jsonl")
        #expect(a.firstSequence == 1 && a.lastSequence == 12)
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
    }
}
