import Foundation
import Testing
import VaultAudit

/// `profilectl audit archive` end to end (issue 20 §3), and `erase` when the erasure journal
/// cannot be written.
@Suite struct AuditArchiveCLITests {
    func ingested() throws -> CLIStore {
        let s = try CLIStore()
        let r = try s.run(["ingest", "profiles", try s.write("p.csv", CLIStore.rows(5)), "--role", "operator"])
        #expect(r.status == 0, "\(r.stderr)")
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"])
        return s
    }

    @Test func archiveWritesAFileThatVerifiesAndTheStoreVerifiesFromItsAnchor() throws {
        let s = try ingested()
        let cut = AuditLog.nowMillis
        while AuditLog.nowMillis <= cut { usleep(2_000) }   // later entries get a later time
        _ = try s.run(["get", "--subject", "C2", "--purpose", "customer_support", "--role", "support"])
        let out = s.dir + "/archive.jsonl"
        // Only the auditor's permission.
        let denied = try s.run(["audit", "archive", "--before", String(cut + 1), "--out", out, "--role", "support"])
        #expect(denied.status == 77 && !FileManager.default.fileExists(atPath: out), "\(denied.stderr)")
        let a = try s.run(["audit", "archive", "--before", String(cut + 1), "--out", out, "--role", "auditor", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        let json = try #require(a.json)
        #expect(json["first_sequence"] as? Int == 1)
        // SPEC §8's form: {"archived","head"}.
        #expect(json["archived"] as? Int == json["entries"] as? Int && (json["archived"] as? Int ?? 0) > 0 && json["head"] is String, "\(a.stdout)")
        // An export continuing from inside the archived range would skip those entries: refused.
        let last = try #require(json["last_sequence"] as? Int)
        let inside = try s.run(["audit", "export", "--after-seq", "0", "--out", s.dir + "/e.jsonl", "--role", "auditor"])
        #expect(inside.status == 65 && inside.stderr.contains("moved to audit archives"), "\(inside.status) \(inside.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/e.jsonl"))
        let from = try s.run(["audit", "export", "--after-seq", String(last), "--out", s.dir + "/f.jsonl", "--role", "auditor"])
        #expect(from.status == 0, "\(from.stderr)")
        let pem = s.dir + "/audit.pem"
        #expect(try s.run(["audit", "public-key", "--out", pem, "--role", "auditor"]).status == 0)
        let file = try s.run(["audit", "verify", "--file", out, "--public-key", pem, "--json"])
        #expect(file.status == 0, "\(file.stdout)\(file.stderr)")
        let store = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(store.status == 0 && (store.json?["archived_through"] as? Int) == (json["last_sequence"] as? Int), "\(store.stdout)\(store.stderr)")
        // The access export lists the live accesses and says older ones are archived.
        let before = try s.run(["export", "--subject", "C1", "--role", "privacy_officer"])
        #expect(before.status == 0 && (before.json?["accesses_archived_through"] as? Int) == (json["last_sequence"] as? Int), "\(before.stderr)")
        // The archive holds no customer ID, e-mail or name.
        let text = try String(contentsOfFile: out, encoding: .utf8)
        for needle in ["\"C1\"", "user1@example.com", "Test Person"] { #expect(!text.contains(needle), "\(needle) in the archive") }
        // The Python verifier accepts it too (when python3 is there).
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            p.arguments = [CLI.repoRoot + "/scripts/verify-audit-export.py", out, pem]
            p.standardOutput = Pipe()
            p.standardError = Pipe()
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "scripts/verify-audit-export.py refuses the archive")
        }
    }

    @Test func archiveRefusalsExitWithTheirCodesAndWriteNothing() throws {
        let s = try ingested()
        let out = s.dir + "/a.jsonl"
        let unparseable = try s.run(["audit", "archive", "--before", "yesterday-ish", "--out", out, "--role", "auditor"])
        #expect(unparseable.status == 64, "\(unparseable.stderr)")
        let future = try s.run(["audit", "archive", "--before", "2999-01-01", "--out", out, "--role", "auditor"])
        #expect(future.status == 65 && future.stderr.contains("in the future"), "\(future.stderr)")
        let early = try s.run(["audit", "archive", "--before", "2001-01-01", "--out", out, "--role", "auditor"])
        #expect(early.status == 65 && early.stderr.contains("nothing to archive"), "\(early.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let existing = try s.write("exists.jsonl", "mine\n")
        let exists = try s.run(["audit", "archive", "--before", String(AuditLog.nowMillis), "--out", existing, "--role", "auditor"])
        #expect(exists.status == 73 && !exists.stderr.contains("--force") && exists.stderr.contains("never replaced"), "\(exists.stderr)")
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "mine\n")
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(v.status == 0 && v.json?["archived_through"] is NSNull, "\(v.stdout)")
        // Nothing archived: the access export has no archive note.
        let export = try s.run(["export", "--subject", "C1", "--role", "privacy_officer"])
        #expect(export.status == 0 && export.json?["accesses_archived_through"] == nil, "\(export.stderr)")
    }

    /// The journal beside the store cannot be written (a directory in its place): the erasure
    /// is done, but `erase` exits 73 saying so and how to rebuild the journal.
    @Test func eraseExitsNonZeroWhenTheJournalCannotBeWritten() throws {
        let s = try ingested()
        let journal = s.dir + "/store.sqlite.erasures"
        try FileManager.default.createDirectory(atPath: journal, withIntermediateDirectories: false)
        let r = try s.run(["erase", "--subject", "C3", "--role", "privacy_officer"])
        #expect(r.status == 73, "\(r.status) \(r.stderr)")
        #expect(r.stderr.contains("the erasure is done") && r.stderr.contains("audit erasures --out"), "\(r.stderr)")
        // The store's temporary path holds a random UUID, which may contain "C3": look past it.
        #expect(!r.stderr.replacingOccurrences(of: s.dir, with: "").contains("C3"), "the message names the customer ID")
        // The erasure itself happened, and the journal can be rebuilt elsewhere.
        let again = try s.run(["get", "--subject", "C3", "--purpose", "customer_support", "--role", "support"])
        #expect(again.status == 66 && again.stderr.contains("erased on"), "\(again.stderr)")
        let rebuilt = try s.run(["audit", "erasures", "--out", s.dir + "/journal.jsonl", "--role", "privacy_officer", "--json"])
        #expect(rebuilt.status == 0 && rebuilt.json?["entries"] as? Int == 1, "\(rebuilt.stderr)")
        // With the path writable again, the next erasure rewrites it and exits 0.
        try FileManager.default.removeItem(atPath: journal)
        let next = try s.run(["erase", "--subject", "C4", "--role", "privacy_officer"])
        #expect(next.status == 0 && FileManager.default.fileExists(atPath: journal), "\(next.stderr)")
    }
}
