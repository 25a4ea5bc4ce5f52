import DifferentialPrivacy
import Foundation
import PrivateModels
@testable import ProfileVault
import Testing
import VaultStore

/// Issue 16, items 2 and 7: numbers from the whole Double range, through the Vault API (and the
/// CLI for flag parsing). Each one must come back as a clean VaultError (usage 64 or invalid
/// input 65) naming the field, with no budget charged and no "ok" entry audited; what is
/// charged, reported in results and artifacts and audited is one and the same epsilon.
@Suite struct NumberAttackTests {
    /// 40 consenting subjects with purchases and `points` events: an int event kind bounded
    /// [0, 10^9] (the extreme integer bound of item 3).
    static func store() throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        var schema = try String(contentsOfFile: CLI.repoRoot + "/policies/schema.yaml", encoding: .utf8)
        schema += "  points:   { category: user.behavior,                  item: string, value: { type: int,   bounds: [0, 1000000000] } }\n"
        try schema.write(toFile: pol + "/schema.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/policy.yaml", toPath: pol + "/policy.yaml")
        s.env["PROFILEVAULT_POLICY"] = pol
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(40))]).status == 0)
        var ev = "customer_id,kind,item,value,time\n"
        for i in 0..<40 {
            for j in 0..<3 { ev += "C\(i),purchase,SKU-\((i + j * 7) % 12),\(j + 1).5,2026-10-0\(j + 1)T12:00:00Z\n" }
            ev += "C\(i),points,P,\(i * 25_000_000),2026-10-05T12:00:00Z\n"
        }
        #expect(try s.run(["ingest", "events", s.write("e.csv", ev)]).status == 0)
        let ids = try s.write("ids.txt", (0..<40).map { "C\($0)" }.joined(separator: "\n"))
        for purpose in ["analytics", "model_training"] {
            #expect(try s.run(["consent", "grant", "--purpose", purpose, "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        }
        return s
    }

    static func vault(_ s: CLIStore) throws -> Vault {
        try Vault.open(VaultConfiguration(storePath: s.env["PROFILEVAULT_STORE"]!, keysPath: s.env["PROFILEVAULT_KEYS"]!,
                                          policyDirectory: s.env["PROFILEVAULT_POLICY"]!, actor: Actor(name: "t", role: "trainer")))
    }

    static func spent(_ v: Vault, _ purpose: String) throws -> Double {
        try v.budgetStatus().first { $0.purpose == purpose }?.spent ?? -1
    }

    static func auditEntries(_ s: CLIStore) throws -> [[String: Any]] {
        let out = s.dir + "/audit-\(UUID().uuidString).jsonl"
        #expect(try s.run(["audit", "export", "--out", out, "--role", "auditor", "--flat"]).status == 0)
        return try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    static func okEntries(_ s: CLIStore, _ operation: String) throws -> Int {
        try auditEntries(s).filter { $0["api.operation"] as? String == operation && $0["status"] as? String == "ok" }.count
    }

    /// The reported reproduction: a mean with epsilon in [2^-20, 2^-19) trapped (SIGILL) after
    /// the charge and its audit entry (ok). Now every such number is a usage error before it.
    @Test func queryNumbersAreRefusedBeforeTheCharge() throws {
        let s = try Self.store()
        let v = try Self.vault(s)
        let before = try Self.spent(v, "analytics")
        let okBefore = try Self.okEntries(s, "query.mean")
        let bad: [Double] = [0x1p-20 * (1 + 0x1p-10), 0x1p-20, (0x1p-19).nextDown, 0x1p-20.nextUp, 1e-6,
                             5e-324, Double.leastNormalMagnitude, -0.0, 0, -1, .nan, .infinity, -.infinity, 1e300, 1_000_000.nextUp]
        for e in bad {
            for (attribute, events) in [("age", nil), (nil, "points"), ("annual_income", nil)] as [(String?, String?)] {
                let q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: e, attribute: attribute, events: events)
                let err = #expect(throws: VaultError.self, "epsilon \(e)") { _ = try v.query(q) }
                #expect(err?.kind == .usage, "epsilon \(e): \(String(describing: err))")
                #expect(err?.message.contains("--epsilon") == true, "names the field: \(String(describing: err?.message))")
            }
        }
        for k in [0, -1, 10_001, Int.max, Int.min] {
            let q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 0.5, events: "points", maxContributions: k)
            let err = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(err?.kind == .usage && err?.message.contains("--max-contributions") == true)
        }
        #expect(try Self.spent(v, "analytics") == before)
        #expect(try Self.okEntries(s, "query.mean") == okBefore)
        // 2^-19 is the smallest mean: it runs, and charges exactly 2^-19.
        let r = try v.query(Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: 0x1p-19, attribute: "age"))
        #expect(r.epsilon == 0x1p-19)
        #expect(try Self.spent(v, "analytics") == before + 0x1p-19)
    }

    /// The same numbers as flag text: exit 64, nothing charged.
    @Test func epsilonFlagTextExits64() throws {
        let s = try Self.store()
        for text in ["nan", "inf", "-inf", "-0", "0x1p-20", "1.2e-6", "5e-324", "1e300", "4.9406564584124654e-324"] {
            let r = try s.run(["query", "mean", "--purpose", "analytics", "--epsilon=\(text)", "--attribute", "age", "--role", "trainer"])
            #expect(r.status == 64, "--epsilon=\(text): \(r.status) \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Illegal instruction"))
        }
        #expect(try Self.spent(try Self.vault(s), "analytics") == 0)
        #expect(try Self.okEntries(s, "query.mean") == 0)
    }

    /// Item 3 through the Vault: an int event kind bounded [0, 10^9] with 10,000 events per
    /// subject (a per-subject bound of 10^13, which wrapped the old sampler 13.5% of the time)
    /// is released on a coarser grid, with its true contribution bound.
    @Test func anExtremeIntegerBoundIsReleased() throws {
        let s = try Self.store()
        let v = try Self.vault(s)
        let r = try v.query(Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 1, events: "points", maxContributions: 10_000))
        let bound = try #require(r.contributionBounds["coordinate_0"])
        #expect(bound >= 1e13 * 0.999 && bound <= 1e13 * 1.001)
        #expect(r.value?.value.isFinite == true && r.scale > 1e12)
        let plan = try QueryEngine.plan(DPQuery(kind: .sum, measure: .events(kind: "points", lower: 0, upper: 1e9, integral: true, maxContributions: 10_000),
                                                consentPurpose: nil, predicates: [], groupBy: nil, epsilon: Epsilon(1)!))
        #expect(plan[0].0.bound <= 1 << 31 && plan[0].0.grid == 0x1p13)
    }

    func trainRefused(_ s: CLIStore, _ v: Vault, _ name: String, _ text: String, field: String) throws {
        let before = try Self.spent(v, "model_training")
        let path = try s.write(name, text)
        let err = #expect(throws: VaultError.self, "\(name)") { _ = try v.train(jobFile: path) }
        #expect(err?.kind == .invalidInput, "\(name): \(String(describing: err))")
        #expect(err?.message.contains(field) == true, "\(name) names \(field): \(String(describing: err?.message))")
        #expect(try Self.spent(v, "model_training") == before, "\(name) charged nothing")
    }

    /// The reported reproductions for jobs (k: 1e300 and derived bounds [0, 1e-300] trapped),
    /// and their neighbours: every number is refused (exit 65) naming the field, uncharged.
    @Test func jobNumbersAreRefusedBeforeTheCharge() throws {
        let s = try Self.store()
        let v = try Self.vault(s)
        let okBefore = try Self.okEntries(s, "train")
        func kmeans(_ params: String, epsilon: String = "1.0") -> String {
            "job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { \(params) }\nepsilon: \(epsilon)\n"
        }
        for k in ["1e300", "5e-324", "-0", "0", ".nan", ".inf", "65", "2.5", "9223372036854775808", "1e19"] {
            try trainRefused(s, v, "k.yaml", kmeans("k: \(k)"), field: "params.k")
        }
        try trainRefused(s, v, "it.yaml", kmeans("k: 3, iterations: 1e300"), field: "params.iterations")
        try trainRefused(s, v, "init.yaml", kmeans("k: 3, init_share: 5e-324"), field: "params.init_share")
        for e in ["5e-324", "-0", ".nan", ".inf", "1e300", "0"] {
            try trainRefused(s, v, "e.yaml", kmeans("k: 3", epsilon: e), field: "epsilon")
        }
        // An epsilon the model cannot split (its smallest share rounds below 2^-20): refused
        // by the dry run before the charge, not after it.
        try trainRefused(s, v, "small.yaml", kmeans("k: 3", epsilon: "1.5e-6"), field: "epsilon")
        let rec = "job: r\npurpose: model_training\nmodel: recommender\nevents: purchase\nepsilon: 1.0\nparams: { %@ }\n"
        for p in ["candidates: 1e300", "neighbors: 1e300", "vocabulary_size: 1e300", "max_items_per_subject: 1e19",
                  "popularity_weight: 1e300", "factors: 1e300", "segment_vocabulary: 1e300"] {
            try trainRefused(s, v, "r.yaml", rec.replacingOccurrences(of: "%@", with: p), field: "params." + p.prefix { $0 != ":" })
        }
        for bounds in ["[0, 1e-300]", "[0, 5e-324]", "[-0, 0]", "[0, 1e300]", "[-1e300, 1e300]", "[0, 1e-7]"] {
            let job = """
                job: d
                purpose: model_training
                model: linear_regression
                features: [age, tiny]
                target: annual_income
                derived:
                  tiny: { events: purchase, aggregate: count, bounds: \(bounds) }
                epsilon: 1.0
                """
            try trainRefused(s, v, "d.yaml", job, field: "derived.tiny.bounds")
        }
        #expect(try Self.okEntries(s, "train") == okBefore)
    }

    /// Item 7: the query result, the artifact's privacy.epsilon, the audit entry and the
    /// ledger all carry the charged epsilon (the asked-for value rounded down to 2^-20).
    @Test func resultsArtifactsAndAuditReportTheChargedEpsilon() throws {
        let s = try Self.store()
        let v = try Self.vault(s)
        let asked = 0.3
        let charged = (asked * 0x1p20).rounded(.down) / 0x1p20
        #expect(charged != asked)
        let before = try Self.spent(v, "analytics")
        let r = try v.query(Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: asked))
        #expect(r.epsilon == charged)
        #expect(try Self.spent(v, "analytics") - before == charged)
        let queryEntry = try #require(try Self.auditEntries(s).last { $0["api.operation"] as? String == "query.count" && $0["status"] as? String == "ok" })
        #expect((queryEntry["unmapped.epsilon"] as? String).flatMap(Double.init) == charged)

        let trainedBefore = try Self.spent(v, "model_training")
        let path = try s.write("k.yaml", "job: k\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2 }\nepsilon: \(asked)\n")
        let t = try v.train(jobFile: path)
        #expect(t.artifact.privacy?.epsilon == charged)
        let json = try JSONSerialization.jsonObject(with: t.json) as? [String: Any]
        #expect((json?["privacy"] as? [String: Any])?["epsilon"] as? Double == charged)
        #expect(try Self.spent(v, "model_training") - trainedBefore == charged)
        let trainEntry = try #require(try Self.auditEntries(s).last { $0["api.operation"] as? String == "train" && $0["status"] as? String == "ok" })
        #expect((trainEntry["unmapped.epsilon"] as? String).flatMap(Double.init) == charged)
    }
}
