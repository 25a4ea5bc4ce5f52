import Foundation
@testable import ProfileVault
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultStore

/// Issue 16 items 5 and 6 from the command line: a changed policy is refused until a privacy
/// officer applies it; applying is audited and leaves a history row with the diff; a period
/// change does not reset the current window; delta is charged and refused.
@Suite struct PolicyChangeTests {
    /// A store whose policy directory is its own copy of policies/, with `edit` applied before init.
    func store(_ edit: (String) -> String = { $0 }) throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        try edit(try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8))
            .write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = pol
        #expect(try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"]).status == 0)
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(10))]).status == 0)
        return s
    }

    func editPolicy(_ s: CLIStore, _ edit: (String) -> String) throws {
        let path = s.dir + "/policies/policy.yaml"
        let before = try String(contentsOfFile: path, encoding: .utf8)
        let after = edit(before)
        precondition(after != before, "the edit changed nothing")
        try after.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Moves the store's creation, the origin of every budget window, into the past.
    func created(_ s: CLIStore, secondsAgo: Int64) throws {
        let files = try Vault.loadPolicyFiles(directory: s.dir + "/policies")
        let store = try ProfileStore.open(path: s.dir + "/store.sqlite", keyring: try Keyring.load(path: s.dir + "/keyring.json"), schema: files.schema)
        defer { try? store.close() }
        let t = Int64(Date().timeIntervalSince1970) - secondsAgo
        try store.pool.write { db in try db.execute(sql: "UPDATE meta SET value = '\(t)' WHERE key = 'created_at'") }
    }

    func query(_ s: CLIStore, _ epsilon: String) throws -> CLI.Result {
        try s.run(["query", "count", "--purpose", "analytics", "--epsilon", epsilon, "--role", "trainer", "--json"])
    }

    func analyticsSpent(_ s: CLIStore) throws -> Double? {
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        return ((b.json?["purposes"] as? [String: Any])?["analytics"] as? [String: Any])?["spent"] as? Double
    }

    func auditLog(_ s: CLIStore) throws -> String {
        let out = s.dir + "/audit-\(UUID().uuidString).jsonl"
        #expect(try s.run(["audit", "export", "--out", out, "--role", "auditor", "--flat"]).status == 0)
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    /// The attack: with a 1h period, 0.9 of 1.0 spent at 1h05m; the period edited to 2h. Before,
    /// the 2h window had no row and granted another 0.9 in the same hour (1.8 of 1.0).
    @Test func aPeriodChangeIsRefusedUntilAppliedAndNeverResetsTheWindow() throws {
        let s = try store { $0.replacingOccurrences(of: "dp_budget: { epsilon: 4.0, period: 30d }", with: "dp_budget: { epsilon: 1.0, period: 1h }") }
        try created(s, secondsAgo: 3_900)
        #expect(try query(s, "0.9").status == 0)
        try editPolicy(s) { $0.replacingOccurrences(of: "epsilon: 1.0, period: 1h", with: "epsilon: 1.0, period: 2h") }

        // Refused until applied, naming the command; budget status too.
        let refused = try query(s, "0.9")
        #expect(refused.status == 78 && refused.stderr.contains("profilectl policy apply --role privacy_officer"), "\(refused.stderr)")
        #expect(try s.run(["budget", "status", "--role", "trainer"]).status == 78)
        let st = try s.run(["policy", "status", "--json"])
        #expect(st.status == 0 && st.json?["in_force"] as? Bool == false, "\(st.stderr)")
        let pending = st.json?["changes"] as? [[String: Any]] ?? []
        #expect(pending.contains { $0["kind"] as? String == "budget" && $0["field"] as? String == "period" && $0["from"] as? String == "1h" && $0["to"] as? String == "2h" })

        // Only a role with `policy` applies it.
        #expect(try s.run(["policy", "apply", "--role", "trainer"]).status == 77)
        let applied = try s.run(["policy", "apply", "--role", "privacy_officer", "--json"])
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect((applied.json?["changes"] as? [[String: Any]])?.count == 1)

        // The 0.9 spent at 1h05m counts in the 2h window [0, 2h): no second 0.9.
        let second = try query(s, "0.9")
        #expect(second.status == 77 && second.stderr.contains("budget exceeded"), "\(second.stderr)")
        #expect(try analyticsSpent(s).map { abs($0 - 0.9) < 1e-5 } == true)
        #expect(try query(s, "0.1").status == 0)
        #expect(try analyticsSpent(s).map { abs($0 - 1.0) < 1e-5 } == true)
    }

    @Test func aRaisedLimitIsRefusedUntilAppliedAndApplyingLeavesAnAuditEntryAndAHistoryRow() throws {
        let s = try store()
        #expect(try query(s, "4").status == 0)
        #expect(try query(s, "0.1").status == 77)   // exhausted
        try editPolicy(s) { $0.replacingOccurrences(of: "dp_budget: { epsilon: 4.0, period: 30d }", with: "dp_budget: { epsilon: 400, period: 30d }") }
        #expect(try query(s, "0.1").status == 78)
        // Every keyed command refuses, the HTTP service does not start; the read-only verification runs.
        #expect(try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"]).status == 78)
        #expect(try s.run(["tokens", "add", "--tokens", s.dir + "/tokens.json", "--actor", "a", "--role", "trainer"]).status == 0)
        let serve = try s.run(["serve", "--listen", "127.0.0.1:0", "--tokens", s.dir + "/tokens.json"])
        #expect(serve.status == 78 && serve.stderr.contains("policy apply"), "\(serve.stderr)")
        #expect(try s.run(["audit", "verify", "--role", "auditor"]).status == 0)
        // status (no keyring) still shows the policy in force: the first one.
        let before = try s.run(["status", "--json"])
        let first = before.json?["policy"] as? [String: Any]
        #expect(first?["sha256"] as? String != nil && first?["applied_at"] as? String != nil)

        let applied = try s.run(["policy", "apply", "--role", "privacy_officer", "--actor", "olga", "--json"])
        #expect(applied.status == 0, "\(applied.stderr)")
        let change = (applied.json?["changes"] as? [[String: Any]])?.first
        #expect(change?["kind"] as? String == "budget" && change?["name"] as? String == "analytics" && change?["field"] as? String == "epsilon"
                && change?["from"] as? String == "4" && change?["to"] as? String == "400", "\(applied.stdout)")
        let sha = try #require(applied.json?["sha256"] as? String)
        #expect(sha == AuditLog.hex(SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: s.dir + "/policies/policy.yaml"))))))
        #expect(sha != first?["sha256"] as? String)
        #expect((try s.run(["status", "--json"]).json?["policy"] as? [String: Any])?["sha256"] as? String == sha)
        // Applying again records nothing.
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer", "--json"]).json?["applied"] as? Bool == false)

        let history = try s.run(["policy", "history", "--json"])
        let rows = try #require(history.json?["history"] as? [[String: Any]])
        #expect(rows.count == 2 && rows[1]["actor"] as? String == "olga" && rows[1]["sha256"] as? String == sha)
        #expect((rows[1]["changes"] as? [[String: Any]])?.first?["to"] as? String == "400")
        let log = try auditLog(s)
        let entries = log.split(separator: "\n").filter { $0.contains(#""api.operation":"policy.apply""#) && $0.contains(#""status":"ok""#) }
        #expect(entries.count == 2)   // init's record and the apply
        #expect(entries.last?.contains("budget analytics: epsilon 4 -> 400") == true && entries.last?.contains(sha) == true)
        #expect(try query(s, "0.1").status == 0)
    }

    @Test func aJobNeedingDeltaIsRefusedOnAPureDPPurposeAndWhenItsDeltaIsSpent() throws {
        let s = try TrainTests().store()
        let job = try s.write("rec.yaml", "job: rec\npurpose: model_training\nmodel: recommender\nevents: purchase\nparams: { max_items_per_subject: 3 }\nepsilon: 1\ndelta: 1.0e-6\n")
        func train() throws -> CLI.Result { try s.run(["train", job, "--out", s.dir + "/m-\(UUID().uuidString).json", "--role", "trainer"]) }
        func spent() throws -> (Double?, Double?) {
            let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
            let m = (b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any]
            return (m?["spent"] as? Double, m?["delta_spent"] as? Double)
        }
        // Pure DP only: refused before anything is charged, naming the purpose and delta.
        try editPolicy(s) { $0.replacingOccurrences(of: "delta: 1.0e-5, period: 30d", with: "delta: 0, period: 30d") }
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        let pure = try train()
        #expect(pure.status == 77 && pure.stderr.contains("model_training") && pure.stderr.contains("delta"), "\(pure.stderr)")
        #expect(try spent() == (0, 0))
        // delta 1.5e-6: one job of 1e-6 fits, the second does not, and spends nothing.
        try editPolicy(s) { $0.replacingOccurrences(of: "delta: 0, period: 30d", with: "delta: 1.5e-6, period: 30d") }
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        let first = try train()
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try spent() == (1, 1e-6))
        let second = try train()
        #expect(second.status == 77 && second.stderr.contains("delta"), "\(second.stderr)")
        #expect(try spent() == (1, 1e-6))
        let log = try auditLog(s)
        let trains = log.split(separator: "\n").filter { $0.contains(#""api.operation":"train""#) }
        #expect(trains.filter { $0.contains(#""status":"denied""#) }.count == 2)
        #expect(trains.filter { $0.contains(#""status":"ok""#) && $0.contains("delta 1e-06") }.count == 1)
    }

    /// A policy `version` holding U+0000 (YAML's `\0` escape) would be cut at it by SQLite and
    /// refused by PostgreSQL's text: `policy apply` refuses it (exit 65, naming the field, not
    /// the value) before anything is recorded; the policy in force stays the first one.
    @Test func aPolicyVersionWithANulIsRefusedBeforeItIsRecorded() throws {
        let s = try store()
        try editPolicy(s) { $0.replacingOccurrences(of: #"version: "2026-11-01""#, with: #"version: "2026-11-01\0SECRET""#) }
        let applied = try s.run(["policy", "apply", "--role", "privacy_officer", "--json"])
        #expect(applied.status == 65, "\(applied.status) \(applied.stderr)")
        #expect(applied.stderr.contains("the policy version contains the control character U+0000") && !applied.stderr.contains("SECRET"), "\(applied.stderr)")
        let history = try s.run(["policy", "history", "--json"])
        #expect(history.status == 0 && !history.stdout.contains("SECRET"), "\(history.stdout) \(history.stderr)")
        #expect(history.stdout.contains("2026-11-01"), "\(history.stdout)")
    }

    /// The same version at `init`: refused (exit 65) before a store is created.
    @Test func initWithANulInThePolicyVersionCreatesNothing() throws {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
            .replacingOccurrences(of: #"version: "2026-11-01""#, with: #"version: "2026-11-01\0SECRET""#)
            .write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = pol
        #expect(try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"]).status == 0)
        let r = try s.run(["init"])
        #expect(r.status == 65 && r.stderr.contains("the policy version contains the control character U+0000") && !r.stderr.contains("SECRET"), "\(r.status) \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/store.sqlite"))
    }
}
