import Foundation
import Testing

/// `audit export / verify / public-key` from the command line, and the entries that reads,
/// denials and ingests leave behind.
@Suite struct AuditCLITests {
    @Test func readsDenialsAndIngestsAreAuditedAndTheExportVerifiesWithoutAKeyring() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(5)), "--actor", "olga"])
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--actor", "sam"])
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--actor", "eve"])   // denied: operator
        let st = try s.run(["status", "--json"])
        #expect(st.json?["audit_entries"] as? Int == 4)   // init's policy record, the ingest and the two gets
        let head = try #require(st.json?["audit_head"] as? String)
        #expect(head.count == 64)

        // Exporting needs the auditor role.
        let denied = try s.run(["audit", "export", "--out", s.dir + "/a.jsonl"])
        #expect(denied.status == 77 && denied.stderr.contains("auditor"))

        let ex = try s.run(["audit", "export", "--out", s.dir + "/a.jsonl", "--role", "auditor", "--json", "--flat"])
        #expect(ex.status == 0, "\(ex.stderr)")
        #expect(ex.json?["entries"] as? Int == 6)   // 4 above + the denied export + the export itself
        let text = try String(contentsOfFile: s.dir + "/a.jsonl", encoding: .utf8)
        #expect(text.contains(#""actor.user.name":"eve""#) && text.contains(#""status":"denied""#))
        #expect(!text.contains("user1@example.com") && !text.contains("\"C1\""))

        let pk = try s.run(["audit", "public-key", "--out", s.dir + "/k.pem", "--json"])
        #expect(pk.status == 0 && pk.json?["path"] as? String == s.dir + "/k.pem")

        // Verification of the file needs neither keyring nor store.
        let v = try CLI.run(["audit", "verify", "--file", s.dir + "/a.jsonl", "--public-key", s.dir + "/k.pem", "--json"])
        #expect(v.status == 0, "\(v.stderr)")
        #expect(v.json?["ok"] as? Bool == true && v.json?["entries"] as? Int == 6)
        #expect(v.json?.keys.contains("first_bad") == true)

        try text.replacingOccurrences(of: #""actor.user.name":"eve""#, with: #""actor.user.name":"sam""#)
            .write(toFile: s.dir + "/b.jsonl", atomically: true, encoding: .utf8)
        let bad = try CLI.run(["audit", "verify", "--file", s.dir + "/b.jsonl", "--public-key", s.dir + "/k.pem", "--json"])
        #expect(bad.status == 1)
        #expect(bad.json?["ok"] as? Bool == false && bad.json?["first_bad"] as? Int == 4)
        #expect(bad.stderr.hasPrefix("error: "))

        let store = try s.run(["audit", "verify", "--role", "auditor", "--json", "--expect-head", head])
        #expect(store.status == 0 && store.json?["ok"] as? Bool == true, "\(store.stdout) \(store.stderr)")
    }

    /// An auditor's own verifier, written from docs/audit.md in Python, agrees with ours.
    @Test func independentPythonVerifierAgrees() throws {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import cryptography"]
        probe.standardError = Pipe()
        guard (try? probe.run()) != nil else { print("SKIP: python3 not available"); return }
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else { print("SKIP: python3 'cryptography' package not installed"); return }
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(5))])
        _ = try s.run(["get", "--subject", "C2", "--purpose", "customer_support", "--role", "support"])
        _ = try s.run(["audit", "export", "--out", s.dir + "/a.jsonl", "--role", "auditor"])
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
        #expect(try python(s.dir + "/a.jsonl") == 0)
        let text = try String(contentsOfFile: s.dir + "/a.jsonl", encoding: .utf8)
        // The default export nests OCSF objects: `"unmapped":{..."purpose":...}`.
        #expect(text.contains(#""purpose":"customer_support""#))
        try text.replacingOccurrences(of: #""purpose":"customer_support""#, with: #""purpose":"analytics""#)
            .write(toFile: s.dir + "/b.jsonl", atomically: true, encoding: .utf8)
        #expect(try python(s.dir + "/b.jsonl") == 1)
    }

    @Test func signedHeadIsPrintedAndAcceptedAsAnExpectation() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        let denied = try s.run(["audit", "head", "--json"])
        #expect(denied.status == 77)
        let h = try s.run(["audit", "head", "--json", "--role", "auditor"])
        #expect(h.status == 0, "\(h.stderr)")
        for k in ["seq", "hash", "signature", "time", "time_ms", "previous_seq", "previous", "checkpoint"] {
            #expect(h.json?[k] != nil, "\(k) missing: \(h.stdout)")
        }
        let heads = try s.write("heads.jsonl", h.stdout)
        _ = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"])
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json", "--expect-head", heads])
        #expect(v.status == 0 && v.json?["ok"] as? Bool == true, "\(v.stdout) \(v.stderr)")
        _ = try s.run(["audit", "export", "--out", s.dir + "/a.jsonl", "--role", "auditor"])
        _ = try s.run(["audit", "public-key", "--out", s.dir + "/k.pem"])
        let fv = try CLI.run(["audit", "verify", "--file", s.dir + "/a.jsonl", "--public-key", s.dir + "/k.pem", "--expect-head", heads])
        #expect(fv.status == 0, "\(fv.stderr)")
        // An edited heads file is refused, not trusted.
        let edited = try s.write("edited.jsonl", h.stdout.replacingOccurrences(of: "\"seq\":", with: "\"seq\":1"))
        let bad = try s.run(["audit", "verify", "--role", "auditor", "--expect-head", edited])
        #expect(bad.status == 64 && bad.stderr.hasPrefix("error: "), "\(bad.stderr)")
        let missing = try s.run(["audit", "verify", "--role", "auditor", "--expect-head", s.dir + "/nothing"])
        #expect(missing.status == 64)
    }

    @Test func badVerifyArgumentsAreUsageErrors() throws {
        let s = try CLIStore()
        let r = try s.run(["audit", "verify", "--file", s.dir + "/x.jsonl"])
        #expect(r.status == 64 && r.stderr.hasPrefix("error: "))
        let t = try s.run(["audit", "export", "--out", s.dir + "/x", "--since", "yesterday", "--role", "auditor"])
        #expect(t.status == 64)
    }
}
