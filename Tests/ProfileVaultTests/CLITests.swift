import Foundation
import Testing
import ProfileVault

/// The CLI contract of SPEC §8 and §10: forms, `--json` shapes, exit statuses, `error:` lines.
@Suite struct CLITests {
    @Test func initIngestGetFindStatusWorkEndToEnd() throws {
        let s = try CLIStore()
        let ing = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(20)), "--json"])
        #expect(ing.status == 0, "\(ing.stderr)")
        #expect(ing.json?["inserted"] as? Int == 20)
        for k in ["inserted", "updated", "rejected", "seconds"] { #expect(ing.json?[k] != nil) }
        #expect(ing.stderr.isEmpty)   // no progress noise when stderr is not a terminal

        let ev = try s.run(["ingest", "events", s.write("e.csv", "customer_id,kind,item,value,time\nC1,purchase,SKU-1,9.5,2026-10-01T12:00:00Z\n"), "--json"])
        #expect(ev.status == 0 && ev.json?["inserted"] as? Int == 1)

        let get = try s.run(["get", "--subject", "C3", "--purpose", "customer_support", "--role", "support", "--json"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(get.json?["customer_id"] as? String == "C3")
        #expect(get.json?["email"] as? String == "user3@example.com")
        #expect(get.json?["full_name"] as? String == "Test Person 3")
        #expect(get.json?["birth_date"] == nil)   // customer_support may not read it

        let find = try s.run(["find", "--email", " USER7@example.com", "--role", "support", "--json"])
        #expect(find.status == 0 && find.json?["customer_id"] as? String == "C7")
        let findPhone = try s.run(["find", "--phone", "+49 (30) 1007", "--role", "support", "--json"])
        #expect(findPhone.json?["customer_id"] as? String == "C7")

        let st = try s.run(["status", "--json"])
        #expect(st.json?["subjects"] as? Int == 20 && st.json?["events"] as? Int == 1)
        for k in ["subjects", "events", "key_versions", "audit_entries", "audit_head"] { #expect(st.json!.keys.contains(k)) }
    }

    @Test func jsonOutputIsExactlyOneDocumentOnStdout() throws {
        let s = try CLIStore(initialise: false)
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        let r = try s.run(["init", "--json"])
        #expect(r.status == 0)
        #expect(r.json?["store"] as? String == s.dir + "/store.sqlite")
        #expect(r.json?["schema_version"] as? Int == 1)
        #expect(r.json?["policy_version"] as? String == "2026-11-01")
        #expect(r.stderr.isEmpty, "\(r.stderr)")
        for args in [["status", "--json"], ["ingest", "profiles", try s.write("p.csv", CLIStore.rows(2)), "--json"]] {
            let o = try s.run(args)
            #expect(o.status == 0 && o.json != nil, "\(args): \(o.stdout)")
        }
    }

    @Test func theExampleKeyringIsRefusedByServeAndWarnedAboutElsewhere() throws {
        let s = try CLIStore(initialise: false)
        // A copy of the public example keyring under an innocent name, mode 0600.
        let keys = s.dir + "/keyring.json"
        #expect(FileManager.default.createFile(atPath: keys, contents: Data((EmbeddedDefaults.keyringJSON + "\n").utf8),
                                               attributes: [.posixPermissions: 0o600]))
        let warning = "warning: keyring \(keys) is the public example keyring: anyone can decrypt what it protects; generate one with profilectl keys generate (--allow-example-keys silences this, for demos only)\n"
        let i = try s.run(["init", "--json"])
        #expect(i.status == 0 && i.json?["store"] != nil, "\(i.stderr)")
        #expect(i.stderr == warning)
        // --json: still exactly one JSON document on stdout; the warning is stderr's only line.
        let st = try s.run(["status", "--json"])
        #expect(st.status == 0 && st.json?["subjects"] != nil, "\(st.stdout)")
        #expect(st.stderr == warning)
        let quiet = try s.run(["status", "--json", "--allow-example-keys"])
        #expect(quiet.status == 0 && quiet.json != nil && quiet.stderr.isEmpty, "\(quiet.stderr)")
        // serve refuses before it listens (78), whatever the tokens file.
        let serve = try s.run(["serve", "--listen", "127.0.0.1:0", "--tokens", s.dir + "/tokens.json"])
        #expect(serve.status == 78)
        #expect(serve.stderr == "error: keyring \(keys): the example keyring is public: generate one with profilectl keys generate (--allow-example-keys runs with it anyway, for demos only)\n")
        // --allow-example-keys lets serve past the check: it then stops at the missing tokens file.
        let allowed = try s.run(["serve", "--allow-example-keys", "--listen", "127.0.0.1:0", "--tokens", s.dir + "/tokens.json"])
        #expect(allowed.status == 78 && allowed.stderr.contains("tokens file") && !allowed.stderr.contains("example"), "\(allowed.stderr)")
        // A generated keyring draws no warning (the other CLI tests assert empty stderr with one).
        let g = try CLIStore()
        let gs = try g.run(["status", "--json"])
        #expect(gs.status == 0 && gs.stderr.isEmpty, "\(gs.stderr)")
    }

    @Test func exitStatusesFollowTheSpec() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        func expectError(_ args: [String], _ code: Int32, _ fragment: String = "", file: String = #fileID, line: Int = #line) throws {
            let r = try s.run(args)
            #expect(r.status == code, "\(args): exit \(r.status), stderr \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: "), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            if !fragment.isEmpty { #expect(r.stderr.contains(fragment), "\(args): \(r.stderr)") }
        }
        try expectError(["get", "--subject", "C1"], 64, "purpose")                                      // missing option
        try expectError(["status", "--no-such-flag"], 64)
        try expectError(["ingest", "profiles", s.dir + "/missing.csv"], 66, "missing.csv")
        try expectError(["get", "--subject", "nobody", "--purpose", "customer_support", "--role", "support"], 66)
        try expectError(["find", "--email", "nobody@example.com", "--role", "support"], 66)
        try expectError(["get", "--subject", "C1", "--purpose", "customer_support"], 77, "support")  // operator may not get
        try expectError(["get", "--subject", "C1", "--purpose", "analytics", "--role", "support"], 77, "PII")
        try expectError(["get", "--subject", "C1", "--purpose", "marketing", "--role", "support"], 77, "not declared")
        try expectError(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "root"], 77, "not defined")
        try expectError(["ingest", "profiles", s.write("bad.csv", CLIStore.header + "\nX,x@y.z,Secret Name,+1,2000-02-30,20,female,DE,1\n")], 65, "bad.csv:2: field birth_date")
        try expectError(["init"], 78, "already exists")
    }

    @Test func errorLinesNeverEchoPII() throws {
        let s = try CLIStore()
        let r = try s.run(["ingest", "profiles", s.write("bad.csv", CLIStore.header + "\nX,secret.person@example.com,Secret Name,+1 555 0199,1990-01-01,20,female,Atlantis,1\n")])
        #expect(r.status == 65)
        for secret in ["secret.person", "Secret Name", "555 0199"] { #expect(!r.stderr.contains(secret)) }
    }

    @Test func insecureKeyringIsRefusedWithAFix() throws {
        let s = try CLIStore()
        chmod(s.dir + "/keyring.json", 0o644)
        let r = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"])
        #expect(r.status == 78)
        #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains("chmod 600"))
    }

    @Test func keysGenerateWritesOwnerOnlyAndNeverOverwrites() throws {
        let s = try CLIStore(initialise: false)
        let path = s.dir + "/k.json"
        let r = try CLI.run(["keys", "generate", "--out", path, "--json"])
        #expect(r.status == 0 && r.json?["path"] as? String == path && r.json?["versions"] != nil)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! Int
        #expect(mode == 0o600)
        let again = try CLI.run(["keys", "generate", "--out", path])
        #expect(again.status == 73)
    }

    @Test func wrongKeyringIsAnIntegrityFailure() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(2))])
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/other.json"])
        var env = s.env
        env["PROFILEVAULT_KEYS"] = s.dir + "/other.json"
        let r = try CLI.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], env: env)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains("does not match"))
    }

    @Test func invalidPolicyIsAConfigurationErrorWithFileAndLine() throws {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/pol"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        let policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        try policy.replacingOccurrences(of: "epsilon: 4.0", with: "epsilon: -1").write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        let r = try CLI.run(["init", "--store", s.dir + "/s.sqlite", "--keys", s.dir + "/keyring.json", "--policy", pol])
        #expect(r.status == 78)
        #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains("policy.yaml:"))
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/s.sqlite"))
    }

    @Test func demoRunsOnAFreshFolder() throws {
        let dir = NSTemporaryDirectory() + "pv-demo-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["demo", "--dir", dir, "--customers", "300"], cwd: NSTemporaryDirectory())
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("none found"))
        #expect(r.stdout.contains("pii[email]"))
        #expect(r.stdout.contains("300 inserted"))
        #expect(!r.stderr.contains("example keyring"), "demo uses the example keyring without a warning")
    }
}
