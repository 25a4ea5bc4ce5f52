import Foundation
import Testing

/// Issue 19 part 5, from the command line on a SQLite store: who tried to read a customer
/// (`audit export --subject`), incremental shipping (`--after-seq`), nested OCSF exports that
/// still verify, export write errors (73), and the auditor's report.
@Suite struct AuditorTests {
    /// A customer ID that appears nowhere else (so its absence from the log bytes means something).
    static let customer = "ZQX-4471-WQ"

    static func store() throws -> CLIStore {
        let s = try CLIStore()
        let rows = CLIStore.rows(4) + "\(customer),zq@example.com,Zed Q,+49 30 9999,1980-01-05,41,female,DE,5000\n"
        let i = try s.run(["ingest", "profiles", s.write("p.csv", rows), "--actor", "olga"])
        precondition(i.status == 0, i.stderr)
        return s
    }

    static func lines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// A value at a dotted path of a nested entry (`actor.user.name`).
    static func at(_ entry: [String: Any], _ path: String) -> Any? {
        var node: Any? = entry
        for part in path.split(separator: ".") { node = (node as? [String: Any])?[String(part)] }
        return node
    }

    static func verify(_ s: CLIStore, _ file: String) throws -> CLI.Result {
        if !FileManager.default.fileExists(atPath: s.dir + "/k.pem") {
            let k = try s.run(["audit", "public-key", "--out", s.dir + "/k.pem"])
            precondition(k.status == 0)
        }
        return try CLI.run(["audit", "verify", "--file", file, "--public-key", s.dir + "/k.pem", "--json"])
    }

    /// The attack: an analyst (trainer role) tries to read customer X and is refused. Before,
    /// the denied entry named no subject, so "who tried to read X" could not find it.
    @Test func aDeniedGetOnANamedCustomerIsInThatCustomersExportAndTheIDIsNowhereInTheLog() throws {
        let s = try Self.store()
        let denied = try s.run(["get", "--subject", Self.customer, "--purpose", "customer_support", "--role", "trainer", "--actor", "tina"])
        #expect(denied.status == 77)
        let unknownPurpose = try s.run(["get", "--subject", Self.customer, "--purpose", "nosuch", "--role", "support", "--actor", "sam"])
        #expect(unknownPurpose.status == 77)
        #expect(try s.run(["get", "--subject", Self.customer, "--purpose", "customer_support", "--role", "support", "--actor", "sam"]).status == 0)
        #expect(try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--actor", "sam"]).status == 0)
        #expect(try s.run(["export", "--subject", Self.customer, "--role", "support", "--actor", "sid", "--out", s.dir + "/x.json"]).status == 77)
        // Asking for a customer's entries is itself refused to a non-auditor, and recorded.
        let notAuditor = try s.run(["audit", "export", "--subject", Self.customer, "--out", s.dir + "/no.jsonl", "--actor", "sam", "--role", "support"])
        #expect(notAuditor.status == 77)

        let out = s.dir + "/x.jsonl"
        let ex = try s.run(["audit", "export", "--subject", Self.customer, "--out", out, "--role", "auditor", "--actor", "audra", "--json"])
        #expect(ex.status == 0, "\(ex.stderr)")
        let all = try Self.lines(out)
        #expect(all.first?["selection"] != nil)
        let entries = all.filter { $0["head"] == nil && $0["selection"] == nil }
        #expect(ex.json?["entries"] as? Int == entries.count)
        func count(_ actor: String, _ op: String, _ status: String) -> Int {
            entries.filter { Self.at($0, "actor.user.name") as? String == actor && Self.at($0, "api.operation") as? String == op
                && Self.at($0, "status") as? String == status }.count
        }
        #expect(count("tina", "get", "denied") == 1)
        #expect(count("sam", "get", "denied") == 1)
        #expect(count("sam", "get", "ok") == 1)
        #expect(count("sid", "export", "denied") == 1)
        #expect(count("sam", "audit.export", "denied") == 1)
        #expect(count("audra", "audit.resolve_subject", "ok") == 1)
        #expect(entries.count == 6, "\(entries)")   // nothing about C1, nothing about nobody
        let subjects = Set(entries.compactMap { Self.at($0, "unmapped.subject") as? String })
        #expect(subjects.count == 1 && subjects.first?.count == 64)
        // Every entry carries the policy in force.
        #expect(entries.allSatisfy { Self.at($0, "unmapped.policy_version") as? String == "2026-11-01" })
        let v = try Self.verify(s, out)
        #expect(v.status == 0 && v.json?["entries"] as? Int == 6, "\(v.stdout) \(v.stderr)")

        // The ID itself is in no entry: the whole log, flat.
        let full = s.dir + "/all.jsonl"
        #expect(try s.run(["audit", "export", "--out", full, "--role", "auditor", "--flat"]).status == 0)
        let text = try String(contentsOfFile: full, encoding: .utf8)
        #expect(!text.contains(Self.customer) && !text.contains("ZQX"))
        #expect(text.contains(subjects.first ?? "-"))

        // A selection with one entry dropped, or one entry of another subject added, fails.
        var raw = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map(String.init)
        let dropped = raw.enumerated().filter { $0.offset != 2 }.map(\.element).joined(separator: "\n") + "\n"
        let dv = try Self.verify(s, try s.write("dropped.jsonl", dropped))
        #expect(dv.status == 1 && dv.json?["ok"] as? Bool == false, "\(dv.stdout)")
        raw[1] = raw[1].replacingOccurrences(of: "\"name\":\"tina\"", with: "\"name\":\"tino\"")
        let ev = try Self.verify(s, try s.write("edited.jsonl", raw.joined(separator: "\n") + "\n"))
        #expect(ev.status == 1, "\(ev.stdout)")
    }

    @Test func afterSeqTwiceShipsEveryEntryOnceWithoutAGap() throws {
        let s = try Self.store()
        let a = try s.run(["audit", "export", "--out", s.dir + "/1.jsonl", "--role", "auditor", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        let first = try #require(a.json?["last_sequence"] as? Int)
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"])
        _ = try s.run(["get", "--subject", "C2", "--purpose", "customer_support", "--role", "trainer"])
        let b = try s.run(["audit", "export", "--after-seq", String(first), "--out", s.dir + "/2.jsonl", "--role", "auditor", "--json"])
        #expect(b.status == 0, "\(b.stderr)")
        let second = try #require(b.json?["last_sequence"] as? Int)
        let c = try s.run(["audit", "export", "--after-seq", String(second), "--out", s.dir + "/3.jsonl", "--role", "auditor", "--json"])
        #expect(c.status == 0, "\(c.stderr)")
        var seqs: [Int] = []
        for f in ["1", "2", "3"] {
            seqs += try Self.lines(s.dir + "/\(f).jsonl").compactMap { Self.at($0, "metadata.sequence") as? Int }
            #expect(try Self.verify(s, s.dir + "/\(f).jsonl").status == 0)
        }
        #expect(seqs == Array(1...seqs.count), "\(seqs)")   // no duplicate, no gap
        #expect(seqs.count == (c.json?["last_sequence"] as? Int ?? 0))
        // Beyond the newest entry: not this log (65); negative: usage (64).
        let beyond = try s.run(["audit", "export", "--after-seq", "100000", "--out", s.dir + "/4.jsonl", "--role", "auditor"])
        #expect(beyond.status == 65, "\(beyond.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/4.jsonl"))
        #expect(try s.run(["audit", "export", "--after-seq", "-1", "--out", s.dir + "/5.jsonl", "--role", "auditor"]).status == 64)
    }

    /// The default export nests OCSF objects; the hash covers the stored flat entry, so the
    /// verifier flattens each line back. One changed byte in any entry is found at that entry.
    @Test func aNestedExportWithOneChangedByteFailsAtThatEntry() throws {
        let s = try Self.store()
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--actor", "sam"])
        _ = try s.run(["get", "--subject", "C2", "--purpose", "customer_support", "--role", "support", "--actor", "sam"])
        let out = s.dir + "/n.jsonl"
        #expect(try s.run(["audit", "export", "--out", out, "--role", "auditor"]).status == 0)
        let entries = try Self.lines(out).filter { $0["head"] == nil }
        let first = try #require(entries.first)
        #expect(first["actor.user.name"] == nil && Self.at(first, "actor.user.name") is String)
        #expect(Self.at(first, "metadata.sequence") as? Int == 1 && Self.at(first, "api.operation") is String)
        #expect(try Self.verify(s, out).json?["ok"] as? Bool == true)

        let raw = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map(String.init)
        let getLine = try #require(raw.firstIndex { $0.contains("\"name\":\"sam\"") })
        let seq = try #require(Self.at(entries[getLine], "metadata.sequence") as? Int)
        for (from, to) in [("\"name\":\"sam\"", "\"name\":\"sbm\""), ("\"user\":{", "\"usen\":{"), ("\"sequence\":\(seq)", "\"sequencf\":\(seq)")] {
            var edited = raw
            edited[getLine] = edited[getLine].replacingOccurrences(of: from, with: to)
            #expect(edited[getLine] != raw[getLine])
            let v = try Self.verify(s, try s.write("t.jsonl", edited.joined(separator: "\n") + "\n"))
            #expect(v.status == 1 && v.json?["first_bad"] as? Int == seq, "\(from): \(v.stdout)")
        }
        // A line rewritten flat verifies (the same entry); a line with one path doubled does not.
        var doubled = raw
        doubled[getLine] = doubled[getLine].replacingOccurrences(of: "\"actor\":{", with: "\"actor.user\":{\"name\":\"sam\"},\"actor\":{")
        #expect(doubled[getLine] != raw[getLine])
        let dv = try Self.verify(s, try s.write("d.jsonl", doubled.joined(separator: "\n") + "\n"))
        #expect(dv.status == 1, "\(dv.stdout)")
    }

    /// An export that cannot be written is 73 (cannot create), never 1 (integrity), and leaves
    /// no file and an intact log.
    @Test func anExportThatCannotBeWrittenIsExit73() throws {
        let s = try Self.store()
        let existing = try s.write("exists.jsonl", "keep\n")
        let cases = [existing, s.dir + "/no/such/dir/a.jsonl", existing + "/under-a-file.jsonl", s.dir]
        for path in cases {
            let r = try s.run(["audit", "export", "--out", path, "--role", "auditor"])
            #expect(r.status == 73, "\(path): \(r.status) \(r.stderr)")
            let csv = try s.run(["audit", "export", "--out", path, "--format", "csv", "--subject", "C1", "--role", "auditor"])
            #expect(csv.status == 73, "\(path): \(csv.status) \(csv.stderr)")
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "keep\n")
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(v.status == 0 && v.json?["ok"] as? Bool == true)
    }

    /// A write that fails half-way (the file size limit: EFBIG, as a full disk gives ENOSPC) is
    /// 73 too, the partial file is removed, and the log (with the failure's entry) verifies.
    @Test func anExportWhoseWriteFailsIsExit73AndLeavesNoFile() throws {
        let s = try CLIStore()
        // 160 entries from 160 short processes (denied reads, 8 at a time): the export (about
        // 160 KB) passes an 80 KiB limit, while each process's own store writes (a few WAL
        // pages for one append, the WAL restarting after each process's checkpoint) stay far
        // below it.
        DispatchQueue.concurrentPerform(iterations: 8) { k in
            for i in 0..<20 { _ = try? s.run(["get", "--subject", "C\(k * 20 + i)", "--purpose", "customer_support", "--role", "trainer"]) }
        }
        // Then one process alone: the last connection to close checkpoints and removes the WAL,
        // so the limited export starts from an empty one.
        #expect(try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "trainer"]).status == 77)
        #expect(((try? FileManager.default.attributesOfItem(atPath: s.dir + "/store.sqlite-wal"))?[.size] as? Int ?? 0) == 0)
        let out = s.dir + "/big.jsonl"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        // SIGXFSZ ignored (as inherited through exec), so write(2) fails with EFBIG instead.
        p.arguments = ["-c", "trap '' XFSZ; ulimit -f 80; exec \"$0\" \"$@\"", CLI.binary,
                       "audit", "export", "--out", out, "--role", "auditor"]
        p.environment = ProcessInfo.processInfo.environment.merging(s.env) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 73, "\(p.terminationStatus) \(message)")
        #expect(message.contains("cannot write"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(v.status == 0 && v.json?["ok"] as? Bool == true, "\(v.stdout)")
        // Without the limit the same export is written.
        #expect(try s.run(["audit", "export", "--out", out, "--role", "auditor"]).status == 0)
        #expect((try FileManager.default.attributesOfItem(atPath: out)[.size] as? Int ?? 0) > 120 * 1024)
    }

    /// The report's counts are recomputed here from an export of the same entries.
    @Test func theReportsCountsEqualACountOverTheExportedEntries() throws {
        let s = try Self.store()
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--actor", "sam"])
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "trainer", "--actor", "tina"])
        _ = try s.run(["get", "--subject", "C404", "--purpose", "customer_support", "--role", "support", "--actor", "sam"])
        for _ in 0..<2 {
            let q = try s.run(["query", "count", "--purpose", "analytics", "--epsilon", "0.25", "--role", "trainer", "--actor", "tina"])
            #expect(q.status == 0, "\(q.stderr)")
        }
        #expect(try s.run(["audit", "report", "--json"]).status == 77)   // not an auditor: denied, recorded
        let r = try s.run(["audit", "report", "--json", "--role", "auditor", "--actor", "audra"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(r.json)
        let last = try #require(report["last_sequence"] as? Int)
        #expect(try s.run(["audit", "export", "--out", s.dir + "/a.jsonl", "--role", "auditor", "--flat"]).status == 0)
        let entries = try Self.lines(s.dir + "/a.jsonl").filter { ($0["metadata.sequence"] as? Int).map { $0 <= last } ?? false }
        #expect(report["entries"] as? Int == entries.count)
        // Every entry of this store (init's policy record, ingest, reads, denials, budget
        // charges, the report) names the policy in force.
        #expect(entries.allSatisfy { $0["unmapped.policy_version"] as? String == "2026-11-01" },
                "\(entries.filter { $0["unmapped.policy_version"] == nil })")
        func counts(_ key: String) -> [String: Int] {
            entries.reduce(into: [:]) { $0[($1[key] as? String) ?? "(none)", default: 0] += 1 }
        }
        #expect(report["by_actor"] as? [String: Int] == counts("actor.user.name"))
        #expect(report["by_action"] as? [String: Int] == counts("api.operation"))
        #expect(report["by_outcome"] as? [String: Int] == counts("status"))
        #expect(report["by_purpose"] as? [String: Int] == counts("unmapped.purpose"))
        let denied = entries.filter { $0["status"] as? String == "denied" }
        #expect(report["denied_count"] as? Int == denied.count && denied.count >= 2)
        #expect((report["denied"] as? [[String: Any]])?.compactMap { $0["seq"] as? Int } == denied.compactMap { $0["metadata.sequence"] as? Int })
        var epsilon: [String: Double] = [:]
        for e in entries where e["status"] as? String == "ok" {
            if let text = e["unmapped.epsilon"] as? String, let d = Double(text) { epsilon[(e["unmapped.purpose"] as? String) ?? "(none)", default: 0] += d }
        }
        let reported = try #require(report["epsilon_by_purpose"] as? [String: Double])
        #expect(Set(reported.keys) == Set(epsilon.keys) && (epsilon["analytics"] ?? 0) > 0)
        for (k, v) in epsilon { #expect(abs((reported[k] ?? -1) - v) < 1e-9) }
        // The report is on the record, and so is the refused one.
        #expect(entries.contains { $0["api.operation"] as? String == "audit.report" && $0["status"] as? String == "ok" })
        #expect(denied.contains { $0["api.operation"] as? String == "audit.report" })
        // A window before everything is empty.
        let none = try s.run(["audit", "report", "--json", "--role", "auditor", "--until", "2000-01-01"])
        #expect(none.status == 0 && none.json?["entries"] as? Int == 0)
    }

    /// The independent Python verifier reads the nested form and subject selections too.
    @Test func thePythonVerifierReadsNestedExportsAndSelections() throws {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import cryptography"]
        probe.standardError = Pipe()
        guard (try? probe.run()) != nil else { print("SKIP: python3 not available"); return }
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else { print("SKIP: python3 'cryptography' package not installed"); return }
        let s = try Self.store()
        _ = try s.run(["get", "--subject", Self.customer, "--purpose", "customer_support", "--role", "trainer"])
        #expect(try s.run(["audit", "export", "--out", s.dir + "/n.jsonl", "--role", "auditor"]).status == 0)
        #expect(try s.run(["audit", "export", "--subject", Self.customer, "--out", s.dir + "/s.jsonl", "--role", "auditor"]).status == 0)
        _ = try s.run(["audit", "public-key", "--out", s.dir + "/k.pem"])
        func python(_ file: String) throws -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", CLI.repoRoot + "/scripts/verify-audit-export.py", file, s.dir + "/k.pem"]
            p.standardOutput = Pipe()
            try p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        #expect(try python(s.dir + "/n.jsonl") == 0)
        #expect(try python(s.dir + "/s.jsonl") == 0)
        for f in ["n", "s"] {
            let text = try String(contentsOfFile: s.dir + "/\(f).jsonl", encoding: .utf8)
            let edited = text.replacingOccurrences(of: "\"role\":\"trainer\"", with: "\"role\":\"support\"")
            #expect(edited != text)
            #expect(try python(try s.write("e.jsonl", edited)) == 1)
        }
    }
}
