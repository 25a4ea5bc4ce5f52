import DifferentialPrivacy
import Foundation
import ProfileVault
import Testing
import VaultStore

/// Training jobs (SPEC §6): the gate's refusals (exit 77 + reason, audited), job file errors
/// (exit 65), the artifact, the budget charged once, recommend, and the store's SQL for the
/// model groupings against a brute-force computation of the documented maps.
@Suite struct TrainTests {
    /// A store with 60 subjects (all consenting to model_training but C0), 3 purchases each,
    /// and a policy with an extra narrow purpose.
    func store() throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "  customer_support:", with: """
              narrow:
                data_use: personalize
                legal_basis: consent
                may_read: [user.demographic]
                models: [kmeans]
                dp_budget: { epsilon: 2.0, period: 30d }
              customer_support:
            """)
        try policy.write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = pol
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(60))]).status == 0)
        var ev = "customer_id,kind,item,value,time\n"
        for i in 0..<60 { for j in 0..<3 { ev += "C\(i),purchase,SKU-\((i + j * 7) % 12),\(j + 1).5,2026-10-0\(j + 1)T12:00:00Z\n" } }
        #expect(try s.run(["ingest", "events", s.write("e.csv", ev)]).status == 0)
        let ids = try s.write("ids.txt", (1..<60).map { "C\($0)" }.joined(separator: "\n"))
        #expect(try s.run(["consent", "grant", "--purpose", "model_training", "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        return s
    }

    func job(_ s: CLIStore, _ name: String, _ text: String) throws -> String { try s.write(name, text) }

    func auditEntries(_ s: CLIStore) throws -> [[String: Any]] {
        let out = s.dir + "/audit.jsonl"
        #expect(try s.run(["audit", "export", "--out", out, "--role", "auditor"]).status == 0)
        return try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test func theGateRefusesWithAReasonAndAuditsEveryRefusal() throws {
        let s = try store()
        let base = "job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nepsilon: 1.0\n"
        let cases: [(String, String, [String], String)] = [
            ("unknown purpose", base.replacingOccurrences(of: "model_training", with: "marketing"), ["--role", "trainer"], "purpose marketing is not declared"),
            ("model not allowed", base.replacingOccurrences(of: "model_training", with: "analytics"), ["--role", "trainer"], "model kmeans is not allowed for purpose analytics"),
            ("outside categories", base.replacingOccurrences(of: "model_training", with: "narrow"), ["--role", "trainer"], "annual_income (category user.financial) is outside purpose narrow"),
            ("pii feature", base.replacingOccurrences(of: "annual_income", with: "birth_date"), ["--role", "trainer"], "birth_date is a PII field"),
            ("role", base, ["--role", "operator"], "role operator may not train"),
            ("budget", base.replacingOccurrences(of: "1.0", with: "10.5"), ["--role", "trainer"], "budget exceeded"),
        ]
        for (label, text, args, reason) in cases {
            let r = try s.run(["train", try job(s, "j.yaml", text), "--out", s.dir + "/m.json"] + args)
            #expect(r.status == 77, "\(label): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error:") && r.stderr.contains(reason), "\(label): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/m.json"))
        let denied = try auditEntries(s).filter { $0["api.operation"] as? String == "train" && $0["status"] as? String == "denied" }
        #expect(denied.count == cases.count)
        // Nothing was charged by the refusals.
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        #expect(((b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any])?["spent"] as? Double == 0)
    }

    @Test func jobFileErrorsExit65NamingFileLineAndField() throws {
        let s = try store()
        let cases: [(String, String)] = [
            ("job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nepsilon: lots\n", "j.yaml:5: epsilon: expected a number"),
            ("job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nepsilon: 1\ncolour: red\n", "j.yaml:6: colour: unknown key"),
            ("job: j\npurpose: model_training\nmodel: forest\nepsilon: 1\n", "j.yaml:3: model: unknown model forest"),
            ("job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [height]\nepsilon: 1\n", "height is not a field of the schema"),
            ("job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nparams: { k: 3, depth: 2 }\nepsilon: 1\n", "params.depth: not a parameter of kmeans"),
            ("job: j\npurpose: model_training\nmodel: kmeans\nepsilon: 1\n", "features: kmeans needs features"),
        ]
        for (text, reason) in cases {
            let r = try s.run(["train", try job(s, "j.yaml", text), "--role", "trainer"])
            #expect(r.status == 65 && r.stderr.contains(reason), "\(r.status) \(r.stderr)")
        }
    }

    @Test func kmeansJobWritesTheArtifactAndChargesTheBudgetOnce() throws {
        let s = try store()
        let p = try job(s, "k.yaml", "job: seg\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2, iterations: 6 }\nepsilon: 1.5\n")
        let r = try s.run(["train", p, "--out", s.dir + "/k.json", "--role", "trainer", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.json?["model"] as? String == "kmeans" && r.json?["epsilon"] as? Double == 1.5 && r.json?["out"] as? String == s.dir + "/k.json")
        let m = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s.dir + "/k.json"))) as? [String: Any])
        #expect(m["model"] as? String == "kmeans" && m["features"] as? [String] == ["age", "annual_income"])
        let c = try #require(m["centroids"] as? [[Double]])
        #expect(c.count == 2 && c.allSatisfy { $0.count == 2 && (18...100).contains($0[0]) && (0...250_000).contains($0[1]) })
        let privacy = try #require(m["privacy"] as? [String: Any])
        for k in ["purpose", "epsilon", "mechanism", "contribution_bounds", "policy_version", "job", "trained_at"] { #expect(privacy[k] != nil, "privacy lacks \(k)") }
        #expect(privacy["job"] as? String == "seg" && privacy["purpose"] as? String == "model_training")
        let split = (privacy["budget_split"] as? [[String: Any]] ?? []).compactMap { $0["epsilon"] as? Double }
        #expect(split.count == 8 && split.reduce(0, +) <= 1.5)   // count, grid, 6 iterations
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        #expect(((b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any])?["spent"] as? Double == 1.5)
        let granted = try auditEntries(s).filter { $0["api.operation"] as? String == "train" && $0["status"] as? String == "ok" }
        #expect(granted.count == 1)
    }

    @Test func recommenderFromACatalogNeverRecommendsOwnedItems() throws {
        let s = try store()
        let catalog = try s.write("catalog.txt", (0..<12).map { "SKU-\($0)" }.joined(separator: "\n") + "\nSKU-NEW\n")
        let p = try job(s, "r.yaml", "job: rec\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(catalog)\nparams: { max_items_per_subject: 5 }\nepsilon: 2\n")
        #expect(try s.run(["train", p, "--out", s.dir + "/r.json", "--role", "trainer"]).status == 0)
        let m = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s.dir + "/r.json"))) as? [String: Any])
        #expect(Set(m["items"] as? [String] ?? []) == Set((0..<12).map { "SKU-\($0)" } + ["SKU-NEW"]))
        let ids = try s.write("all.txt", (0..<60).map { "C\($0)" }.joined(separator: "\n"))
        let r = try s.run(["recommend", "--model", s.dir + "/r.json", "--subjects", ids, "--top", "20", "--role", "trainer", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.count == 60)
        for l in lines {
            let id = l["customer_id"] as? String ?? ""
            let i = Int(id.dropFirst())!
            let owned = Set((0..<3).map { "SKU-\((i + $0 * 7) % 12)" })
            let items = l["items"] as? [String] ?? []
            if i == 0 { #expect(items.isEmpty && l["error"] != nil); continue }   // no consent
            #expect(items.count == 10 && owned.isDisjoint(with: items), "\(id): \(items)")
        }
        // One subject without consent: refused.
        #expect(try s.run(["recommend", "--model", s.dir + "/r.json", "--subject", "C0", "--role", "trainer"]).status == 77)
        #expect(try s.run(["recommend", "--model", s.dir + "/r.json", "--subject", "C1", "--role", "operator"]).status == 77)
    }

    @Test func theStoreComputesTheModelGroupingsExactly() throws {
        let s = try store()
        let v = try Vault.open(VaultConfiguration(storePath: s.env["PROFILEVAULT_STORE"]!, keysPath: s.env["PROFILEVAULT_KEYS"]!,
                                                  policyDirectory: s.env["PROFILEVAULT_POLICY"]!, actor: Actor(name: "t", role: "trainer")))
        let src = v.store.aggregateSource
        let age = ScaledFeature(name: "age", lower: 18, upper: 100), inc = ScaledFeature(name: "annual_income", lower: 0, upper: 250_000)
        struct R { var age: Double; var inc: Double }
        let rows: [R] = (0..<60).map { (i: Int) -> R in R(age: Double(30 + i % 50), inc: Double(1000 * (i % 250))) }   // CLIStore.rows
        let consenting = Array(rows.dropFirst())
        let cents: [[Double]] = [[0.2, 0.1], [0.8, 0.1], [0.5, 0.5]]
        let near = try src.boundedSums(AggregateRequest(consentPurpose: "model_training", grouping: .nearest(features: [age, inc], centroids: cents),
                                                        coordinates: [.subjects, .attribute(name: "age", lower: 18, upper: 100, center: 59, grid: 1)]))
        var expectNear: [String: [Int64]] = ["0": [0, 0], "1": [0, 0], "2": [0, 0]]
        for r in consenting {
            let u = [age.unit(r.age), inc.unit(r.inc)]
            let d: [Double] = cents.map { (c: [Double]) -> Double in
                let a: Double = (c[0] - u[0]) * (c[0] - u[0])
                let b: Double = (c[1] - u[1]) * (c[1] - u[1])
                return a + b
            }
            let k = String(d.firstIndex(of: d.min()!)!)
            expectNear[k]![0] += 1
            expectNear[k]![1] += Int64(r.age) - 59
        }
        #expect(near == expectNear)
        let cell = try src.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .cell(features: [age, inc], bins: 4), coordinates: [.subjects]))
        var expectCell = [String: [Int64]](uniqueKeysWithValues: (0..<16).map { (String($0), [Int64(0)]) })
        for r in rows {
            let bx: Int = min(3, Int(age.unit(r.age) * 4)), by: Int = min(3, Int(inc.unit(r.inc) * 4))
            expectCell[String(bx + 4 * by)]![0] += 1
        }
        #expect(cell == expectCell)
        let g = BoundedSum.grid(forBound: 1, integral: false)
        let prod = try src.boundedSums(AggregateRequest(consentPurpose: nil, nonNull: ["age", "annual_income"], grouping: nil,
                                                        coordinates: [.product(left: age, right: inc, grid: g), .product(left: age, right: nil, grid: g)]))[""]!
        func z(_ f: ScaledFeature, _ x: Double) -> Double { 2 * f.unit(x) - 1 }
        var p0: Int64 = 0, p1: Int64 = 0
        for r in rows {
            let a: Double = z(age, r.age), b: Double = z(inc, r.inc)
            p0 += Int64((a * b / g).rounded(.toNearestOrAwayFromZero))
            p1 += Int64((a / g).rounded(.toNearestOrAwayFromZero))
        }
        #expect(prod[0] == p0)
        #expect(prod[1] == p1)
        // Items: each subject's distinct items, the 2 most recent (time DESC, then item).
        let owned = (1..<60).map { i in (0..<3).reversed().map { "SKU-\((i + $0 * 7) % 12)" } }   // most recent first
        let vocab = (0..<12).map { "SKU-\($0)" }
        let pres = try src.boundedSums(AggregateRequest(consentPurpose: "model_training", grouping: .items(vocabulary: vocab), coordinates: [.itemPresence(kind: "purchase", maxItems: 2)]))
        var expectPres = [String: [Int64]](uniqueKeysWithValues: vocab.map { ($0, [Int64(0)]) })
        for o in owned { for item in o.prefix(2) { expectPres[item]![0] += 1 } }
        #expect(pres == expectPres)
        let pairs = try src.boundedSums(AggregateRequest(consentPurpose: "model_training", grouping: .itemPairs(vocabulary: vocab), coordinates: [.itemPairWeight(kind: "purchase", maxItems: 3, unit: 1024)]))
        var expectPairs: [String: [Int64]] = [:]
        for o in owned {
            let idx = o.prefix(3).map { vocab.firstIndex(of: $0)! }
            for a in idx { for b in idx where a < b { expectPairs["\(a)|\(b)", default: [0]][0] += 1024 / Int64(idx.count - 1) } }
        }
        #expect(pairs == expectPairs)
        #expect(Coordinate.itemPairWeight(kind: "purchase", maxItems: 3, unit: 1024).bound == 1536)   // n/2 units of 1024, n <= 3
    }
}
