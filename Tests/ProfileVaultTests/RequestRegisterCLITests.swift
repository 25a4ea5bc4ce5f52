import Foundation
import Testing
import VaultCrypto

/// The request register from the command line (issue 19 §1), on a SQLite store: deadlines,
/// extensions, denial, fulfilment, erased subjects, partial erasure, and what the file holds.
@Suite struct RequestRegisterCLITests {
    static let officer = ["--role", "privacy_officer", "--actor", "petra"]
    /// Long, distinctive customer IDs, so a search of the file's bytes cannot match by chance.
    static func id(_ i: Int) -> String { "REGISTER-CUSTOMER-\(7_300_000 + i)-ZQX" }
    static let note = "Caller said her name is Wilhelmina Quaxenberg-Oort, phone +31 6 9988 7766"
    static let reason = "Identity of Bartholomeus Vandersnoot not verified by letter"

    static func store(_ n: Int = 4) throws -> CLIStore {
        let s = try CLIStore()
        let rows = (0..<n).map { "\(id($0)),user\($0)@example.com,Test Person \($0),+49 30 \(1000 + $0),1980-01-0\(1 + $0 % 9),\(30 + $0),female,DE,1000" }
        let r = try s.run(["ingest", "profiles", s.write("p.csv", ([CLIStore.header] + rows).joined(separator: "\n") + "\n")])
        #expect(r.status == 0, "\(r.stderr)")
        return s
    }

    func open(_ s: CLIStore, _ type: String, _ subject: String, _ extra: [String] = []) throws -> CLI.Result {
        try s.run(["requests", "open", "--type", type, "--subject", subject, "--json"] + extra + Self.officer)
    }

    func requestID(_ r: CLI.Result) -> String { (r.json?["request"] as? String) ?? "" }

    /// Every byte of the store's files (the database, its WAL and shared memory).
    func storeBytes(_ s: CLIStore) -> [Data] {
        ["", "-wal", "-shm"].compactMap { FileManager.default.contents(atPath: s.dir + "/store.sqlite" + $0) }
    }

    @Test func theFileNeverHoldsTheCustomerIDNoteOrReasonInClear() throws {
        let s = try Self.store()
        let a = try open(s, "access", Self.id(1), ["--note", Self.note, "--channel", "phone"])
        #expect(a.status == 0, "\(a.stderr)")
        let b = try open(s, "erasure", Self.id(2))
        #expect(try s.run(["requests", "deny", requestID(b), "--reason", Self.reason] + Self.officer).status == 0)
        let c = try open(s, "rectification", Self.id(3))
        #expect(try s.run(["requests", "extend", requestID(c), "--reason", Self.reason] + Self.officer).status == 0)
        // The register holds the requests ...
        let list = try s.run(["requests", "list", "--json"] + Self.officer)
        #expect((list.json?["requests"] as? [[String: Any]])?.count == 3)
        // ... and neither the file nor its WAL holds the IDs, the note or the reason in clear
        // (the profiles' own PII is sealed too, so the IDs appear nowhere).
        let files = storeBytes(s)
        #expect(!files.isEmpty)
        for needle in [Self.id(1), Self.id(2), Self.id(3), "Wilhelmina", "Quaxenberg", "Bartholomeus", "Vandersnoot"] {
            for f in files { #expect(f.range(of: Data(needle.utf8)) == nil, "\(needle) found in clear") }
        }
        // Nor does the list show them.
        for needle in [Self.id(1), "Wilhelmina", "Vandersnoot"] { #expect(!list.stdout.contains(needle)) }
    }

    /// An erasure request fulfilled while the erasure journal cannot be written: the request is
    /// closed with its receipt first (never left open after the subject is gone), then the
    /// command exits 73 saying the erasure is done and how to rebuild the journal.
    @Test func anErasureRequestClosesWithItsReceiptEvenWhenTheJournalFails() throws {
        let s = try Self.store()
        let id = requestID(try open(s, "erasure", Self.id(3)))
        let journal = s.dir + "/store.sqlite.erasures"
        try? FileManager.default.removeItem(atPath: journal)
        try FileManager.default.createDirectory(atPath: journal, withIntermediateDirectories: false)
        let f = try s.run(["requests", "fulfil", id] + Self.officer)
        #expect(f.status == 73 && f.stderr.contains("the erasure is done"), "\(f.status) \(f.stderr)")
        let list = try s.run(["requests", "list", "--json"] + Self.officer)
        let entry = (list.json?["requests"] as? [[String: Any]])?.first { $0["request"] as? String == id || $0["id"] as? String == id }
        #expect(entry?["status"] as? String == "done", "\(list.stdout)")
        #expect((entry?["outcome"] as? String)?.hasPrefix("receipt:") == true, "\(list.stdout)")
    }

    @Test func anUnknownSubjectIsRefusedAndAnErasedOneSaysWhenWithItsReceipt() throws {
        let s = try Self.store()
        let unknown = try open(s, "access", "NOBODY-WITH-THIS-ID-4242")
        #expect(unknown.status == 66)
        #expect(unknown.stderr.contains("no subject with this customer ID"))
        #expect(!unknown.stderr.contains("NOBODY-WITH-THIS-ID-4242"))
        let erased = try s.run(["erase", "--subject", Self.id(0), "--json"] + Self.officer)
        #expect(erased.status == 0, "\(erased.stderr)")
        let receipt = try #require(erased.json?["receipt"] as? String)
        let day = String(try #require(erased.json?["erased_at"] as? String).prefix(10))
        // requests open, get, export and erase all say it was erased on DATE with receipt R (66).
        let attempts: [[String]] = [
            ["requests", "open", "--type", "access", "--subject", Self.id(0)] + Self.officer,
            ["get", "--subject", Self.id(0), "--purpose", "customer_support", "--role", "support"],
            ["export", "--subject", Self.id(0)] + Self.officer,
            ["erase", "--subject", Self.id(0)] + Self.officer,
        ]
        for args in attempts {
            let r = try s.run(args)
            #expect(r.status == 66, "\(args[0]): \(r.stderr)")
            #expect(r.stderr.contains("erased on \(day)"), "\(args[0]): \(r.stderr)")
            #expect(r.stderr.contains(receipt), "\(args[0]): \(r.stderr)")
            #expect(!r.stderr.contains(Self.id(0)))
        }
    }

    @Test func aRequestIsExtendedOnceAndAClosedOneNeverChanges() throws {
        let s = try Self.store()
        let o = try open(s, "access", Self.id(1), ["--received", "2026-11-01"])
        #expect(o.status == 0, "\(o.stderr)")
        let id = requestID(o)
        // due = received + 30d (the shipped policy's requests.deadline).
        #expect((o.json?["due"] as? String)?.hasPrefix("2026-12-01") == true)
        let x = try s.run(["requests", "extend", id, "--reason", "complex", "--json"] + Self.officer)
        #expect(x.status == 0, "\(x.stderr)")
        #expect((x.json?["due"] as? String)?.hasPrefix("2027-01-30") == true)   // + 60d
        let again = try s.run(["requests", "extend", id, "--reason", "more"] + Self.officer)
        #expect(again.status == 65)
        #expect(again.stderr.contains("extended once"))
        #expect(try s.run(["requests", "deny", id, "--reason", "identity not verified"] + Self.officer).status == 0)
        // Denied: fulfil, extend and deny are refused (65) and nothing is exported.
        let out = s.dir + "/export.json"
        let f = try s.run(["requests", "fulfil", id, "--out", out] + Self.officer)
        #expect(f.status == 65)
        #expect(f.stderr.contains("denied"))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try s.run(["requests", "deny", id, "--reason", "again"] + Self.officer).status == 65)
        // An unknown or malformed id is 66, and not echoed.
        for bad in ["req_0000000000000000", "nonsense-id-77"] {
            let r = try s.run(["requests", "deny", bad, "--reason", "x"] + Self.officer)
            #expect(r.status == 66)
            #expect(!r.stderr.contains("nonsense-id-77"))
        }
    }

    @Test func fulfillingAnErasureRequestErasesRecordsTheReceiptAndIsAudited() throws {
        let s = try Self.store()
        let o = try open(s, "erasure", Self.id(2), ["--note", Self.note])
        let id = requestID(o)
        // --out belongs to access and portability: refused (64), nothing erased, no file left.
        let wrong = try s.run(["requests", "fulfil", id, "--out", s.dir + "/x.json"] + Self.officer)
        #expect(wrong.status == 64 && !FileManager.default.fileExists(atPath: s.dir + "/x.json"))
        #expect(try s.run(["export", "--subject", Self.id(2)] + Self.officer).status == 0)
        let f = try s.run(["requests", "fulfil", id, "--json"] + Self.officer)
        #expect(f.status == 0, "\(f.stderr)")
        let receipt = try #require((f.json?["receipt"] as? [String: Any])?["receipt"] as? String)
        let request = try #require(f.json?["request"] as? [String: Any])
        #expect(request["status"] as? String == "done")
        #expect(request["outcome"] as? String == "receipt:\(receipt)")
        // The subject is gone; the register still lists the request, done, with its receipt.
        #expect(try s.run(["export", "--subject", Self.id(2)] + Self.officer).status == 66)
        let done = try s.run(["requests", "list", "--status", "done", "--json"] + Self.officer)
        let listed = try #require((done.json?["requests"] as? [[String: Any]])?.first)
        #expect(listed["request"] as? String == id && listed["outcome"] as? String == "receipt:\(receipt)")
        // A second fulfil is refused.
        #expect(try s.run(["requests", "fulfil", id] + Self.officer).status == 65)
        // The audit log holds the open, the erasure and the fulfilment, about the same subject.
        let log = s.dir + "/audit.jsonl"
        #expect(try s.run(["audit", "export", "--out", log, "--role", "auditor"]).status == 0)
        let entries = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let opened = entries.filter { $0.contains("\"requests.open\"") && $0.contains(id) }
        let erased = entries.filter { $0.contains("\"erase\"") && $0.contains("\"ok\"") }
        let fulfilled = entries.filter { $0.contains("\"requests.fulfil\"") && $0.contains(receipt) }
        #expect(opened.count == 1 && erased.count == 1 && fulfilled.count == 1)
        #expect(!entries.contains { $0.contains("Wilhelmina") || $0.contains(Self.id(2)) })
    }

    @Test func fulfillingAnAccessRequestWritesTheExportAndAttachesItsDigest() throws {
        let s = try Self.store()
        let id = requestID(try open(s, "access", Self.id(1)))
        // Without --out: a usage error before anything is read.
        #expect(try s.run(["requests", "fulfil", id] + Self.officer).status == 64)
        // An --out that cannot be created: 73, and the request stays open.
        let blocked = try s.run(["requests", "fulfil", id, "--out", s.dir + "/no-such-dir/x.json"] + Self.officer)
        #expect(blocked.status == 73)
        let out = s.dir + "/export.json"
        let f = try s.run(["requests", "fulfil", id, "--out", out, "--json"] + Self.officer)
        #expect(f.status == 0, "\(f.stderr)")
        let data = try #require(FileManager.default.contents(atPath: out))
        let attrs = try FileManager.default.attributesOfItem(atPath: out)
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect(String(decoding: data, as: UTF8.self).contains(Self.id(1)))
        let digest = try #require(f.json?["export_sha256"] as? String)
        #expect(digest == SHA256.hash(Array(data)).map { String(format: "%02x", $0) }.joined())
        #expect((f.json?["request"] as? [String: Any])?["outcome"] as? String == "sha256:\(digest)")
        #expect(digest.count == 64)
        // An existing --out is refused (73) on another request.
        let id2 = requestID(try open(s, "portability", Self.id(3)))
        #expect(try s.run(["requests", "fulfil", id2, "--out", out] + Self.officer).status == 73)
    }

    /// Restriction: fulfil restricts the subject. Objection: fulfil checks the ledger and is
    /// refused while the subject objects to nothing (`--done` does not override that).
    /// Rectification: the values come from the person, so `rectify` then `--done`.
    @Test func restrictionRestrictsObjectionIsCheckedRectificationIsConfirmed() throws {
        let s = try Self.store()
        let id = requestID(try open(s, "restriction", Self.id(1)))
        let f = try s.run(["requests", "fulfil", id, "--json"] + Self.officer)
        #expect(f.status == 0, "\(f.stderr)")
        #expect((f.json?["request"] as? [String: Any])?["outcome"] as? String == "restricted")
        // The subject is now restricted: support's get is refused (77), the export still works.
        #expect(try s.run(["get", "--subject", Self.id(1), "--purpose", "customer_support", "--role", "support"]).status == 77)
        #expect(try s.run(["export", "--subject", Self.id(1)] + Self.officer).status == 0)

        let o = requestID(try open(s, "objection", Self.id(2)))
        for extra in [[], ["--done"]] {
            let r = try s.run(["requests", "fulfil", o] + extra + Self.officer)
            #expect(r.status == 65, "\(r.stderr)")
            #expect(r.stderr.contains("consent object"))
        }

        let c = requestID(try open(s, "rectification", Self.id(3)))
        let r = try s.run(["requests", "fulfil", c] + Self.officer)
        #expect(r.status == 65)
        #expect(r.stderr.contains("--done") && r.stderr.contains("rectify"))
        #expect(try s.run(["rectify", "--subject", Self.id(3), "--set", "country=FR"] + Self.officer).status == 0)
        let d = try s.run(["requests", "fulfil", c, "--done", "--json"] + Self.officer)
        #expect(d.status == 0, "\(d.stderr)")
        #expect((d.json?["request"] as? [String: Any])?["status"] as? String == "done")
        #expect((d.json?["request"] as? [String: Any])?["outcome"] as? String == "confirmed")
    }

    @Test func overdueIsComputedFromTheReceivedDate() throws {
        let s = try Self.store()
        let old = requestID(try open(s, "access", Self.id(1), ["--received", "2020-01-01"]))
        let fresh = requestID(try open(s, "access", Self.id(2)))
        let l = try s.run(["requests", "list", "--status", "overdue", "--json"] + Self.officer)
        let rows = try #require(l.json?["requests"] as? [[String: Any]])
        #expect(rows.map { $0["request"] as? String } == [old])
        let daysLeft = try #require(rows.first?["days_left"] as? Int)
        // Due 2020-01-31: thousands of days ago, negative.
        #expect(daysLeft < -2000)
        let all = try s.run(["requests", "list", "--status", "open", "--json"] + Self.officer)
        let fr = try #require((all.json?["requests"] as? [[String: Any]])?.first { $0["request"] as? String == fresh })
        #expect((fr["days_left"] as? Int).map { (29...30).contains($0) } == true)
        // The text form is a table with a header.
        let text = try s.run(["requests", "list"] + Self.officer)
        #expect(text.stdout.hasPrefix("REQUEST"))
        #expect(text.stdout.contains("overdue"))
    }

    @Test func aRoleWithoutTheRequestsPermissionIs77() throws {
        let s = try Self.store()
        for args in [["requests", "open", "--type", "access", "--subject", Self.id(1)], ["requests", "list"],
                     ["requests", "deny", "req_0123456789abcdef", "--reason", "x"]] {
            let r = try s.run(args + ["--role", "support"])
            #expect(r.status == 77, "\(args): \(r.stderr)")
            #expect(r.stderr.contains("privacy_officer"))
        }
    }

    @Test func badFlagsAreRefusedNamingTheFlag() throws {
        let s = try Self.store()
        let cases: [([String], String)] = [
            (["--type", "complaint"], "--type"), (["--type", "access", "--channel", "pigeon"], "--channel"),
            (["--type", "access", "--received", "yesterday"], "--received"), (["--type", "access", "--received", "2999-01-01"], "--received"),
        ]
        for (args, flag) in cases {
            let r = try s.run(["requests", "open", "--subject", Self.id(1)] + args + Self.officer)
            #expect(r.status == 64 || r.status == 65, "\(args): \(r.status)")
            #expect(r.stderr.contains(flag), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("pigeon") && !r.stderr.contains("complaint"))
        }
        let st = try s.run(["requests", "list", "--status", "late"] + Self.officer)
        #expect(st.status == 64 && st.stderr.contains("--status"))
    }

    @Test func eraseSubjectsErasesTheKnownOnesAndReportsTheOthersByLine() throws {
        let s = try Self.store(5)
        #expect(try s.run(["erase", "--subject", Self.id(4)] + Self.officer).status == 0)
        let file = try s.write("ids.txt", [Self.id(0), "UNKNOWN-CUSTOMER-99", Self.id(4), Self.id(1)].joined(separator: "\n") + "\n")
        // --all-or-nothing: today's behaviour, nothing erased.
        let strict = try s.run(["erase", "--subjects", file, "--all-or-nothing"] + Self.officer)
        #expect(strict.status == 66)
        #expect(try s.run(["export", "--subject", Self.id(0)] + Self.officer).status == 0)
        let r = try s.run(["erase", "--subjects", file, "--json"] + Self.officer)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.json?["erased"] as? Int == 2)
        let skipped = try #require(r.json?["skipped"] as? [[String: Any]])
        #expect(skipped.map { $0["line"] as? Int } == [2, 3])
        #expect(skipped.map { $0["reason"] as? String } == ["unknown", "erased"])
        #expect(skipped[1]["receipt"] as? String != nil)
        #expect(r.stderr.contains(":2: no subject") && r.stderr.contains(":3: already erased"))
        #expect(!r.stderr.contains("UNKNOWN-CUSTOMER-99") && !r.stderr.contains(Self.id(4)))
        for i in [0, 1] { #expect(try s.run(["export", "--subject", Self.id(i)] + Self.officer).status == 66) }
        #expect(try s.run(["export", "--subject", Self.id(2)] + Self.officer).status == 0)
        // A file of only unknown and erased IDs: nothing erased, 66 naming the lines.
        let none = try s.run(["erase", "--subjects", file] + Self.officer)
        #expect(none.status == 66)
        #expect(none.stderr.contains("line 1") && none.stderr.contains("line 4"))
    }

    @Test func theRequestsPolicyKeyIsParsedAndCheckedWithItsLine() throws {
        let s = try CLIStore(initialise: false)
        let dir = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: dir + "/catalogs", withIntermediateDirectories: true)
        for f in ["schema.yaml", "catalogs/products.tsv"] {
            try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/" + f, toPath: dir + "/" + f)
        }
        let policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        #expect(policy.contains("requests: { deadline: 30d, extension: 60d }"))
        try policy.replacingOccurrences(of: "requests: { deadline: 30d, extension: 60d }", with: "requests: { deadline: 30x }")
            .write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        var env = s.env
        env["PROFILEVAULT_POLICY"] = dir
        #expect(try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"]).status == 0)
        let bad = try CLI.run(["init"], env: env)
        #expect(bad.status == 78)
        #expect(bad.stderr.contains("policy.yaml:") && bad.stderr.contains("requests.deadline"))
        // A shorter deadline: due = received + 10d.
        try policy.replacingOccurrences(of: "requests: { deadline: 30d, extension: 60d }", with: "requests: { deadline: 10d }")
            .write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        #expect(try CLI.run(["init"], env: env).status == 0)
        let csv = try s.write("p.csv", CLIStore.header + "\n\(Self.id(1)),a@example.com,A B,+49 30 1,1980-01-01,40,female,DE,1\n")
        #expect(try CLI.run(["ingest", "profiles", csv], env: env).status == 0)
        let o = try CLI.run(["requests", "open", "--type", "access", "--subject", Self.id(1), "--received", "2026-11-01", "--json"] + Self.officer, env: env)
        #expect((o.json?["due"] as? String)?.hasPrefix("2026-11-11") == true, "\(o.stdout) \(o.stderr)")
        // Changing it is a policy change that policy apply reports.
        try policy.replacingOccurrences(of: "requests: { deadline: 30d, extension: 60d }", with: "requests: { deadline: 20d }")
            .write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        let apply = try CLI.run(["policy", "apply", "--json"] + Self.officer, env: env)
        #expect(apply.status == 0, "\(apply.stderr)")
        let changes = try #require(apply.json?["changes"] as? [[String: Any]])
        #expect(changes.contains { $0["kind"] as? String == "requests" && $0["field"] as? String == "deadline" && $0["to"] as? String == "20d" })
    }
}
