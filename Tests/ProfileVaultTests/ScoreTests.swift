import Foundation
import PrivateModels
@testable import ProfileVault
import Testing
import VaultStore

/// `profilectl score` (issue 24): scores equal the models' own prediction functions on the
/// subjects' values; the gate (permission, MAC, model kind, purpose), the one answer for every
/// subject that cannot be scored, the audit entries, and the options refused before anything
/// is read.
extension TrainTests {
    /// Subject i of `store()`: age 30 + i % 50, annual income 1000 i, three purchases of 1.5,
    /// 2.5 and 3.5 (count 3, sum 7.5); C0 has no consent.
    static func values(_ i: Int) -> (age: Double, income: Double) { (Double(30 + i % 50), Double(1000 * i)) }

    func train(_ s: CLIStore, _ name: String, _ text: String) throws -> String {
        let out = s.dir + "/\(name).json"
        let r = try s.run(["train", try job(s, "\(name).yaml", text), "--out", out, "--role", "trainer"])
        #expect(r.status == 0, "\(r.stderr)")
        return out
    }

    /// The artifact as the vault loads it (MAC checked, decoded from the canonical bytes): the
    /// values `score` computes with.
    func loaded(_ s: CLIStore, _ path: String) throws -> ModelArtifact {
        let vault = try Vault.open(VaultConfiguration(storePath: s.dir + "/store.sqlite", keysPath: s.dir + "/keyring.json",
                                                      policyDirectory: s.dir + "/policies", actor: Actor(name: "t", role: "app")))
        defer { try? vault.store.close() }
        return try vault.loadArtifact(.file(path))
    }

    /// The output's lines; `score` read from its text with Double(_:) (correctly rounded:
    /// JSONSerialization's number parsing may be off by an ulp).
    func scoreLines(_ r: CLI.Result) -> [[String: Any]] {
        r.stdout.split(separator: "\n").compactMap { line in
            guard var object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            if let range = line.range(of: "\"score\":") {
                let text = line[range.upperBound...].prefix { $0 != "," && $0 != "}" }
                object["score"] = Double(text)
            }
            return object
        }
    }

    func scoreEntries(_ s: CLIStore) throws -> [[String: Any]] {
        try auditEntries(s).filter { $0["api.operation"] as? String == "score" }
    }

    static let linearJob = """
        job: lin
        purpose: model_training
        model: linear_regression
        derived:
          spend: { events: purchase, aggregate: sum, bounds: [0, 20] }
        features: [age, annual_income]
        target: spend
        epsilon: 1
        """

    @Test func scoresEqualThePredictionFunctionsForEveryKind() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        let log = try train(s, "log", """
            job: log
            purpose: model_training
            model: logistic_regression
            derived:
              n: { events: purchase, aggregate: count, bounds: [0, 10] }
              late: { events: purchase, aggregate: count, from: 2026-10-03, bounds: [0, 1] }
            features: [age, n]
            target: late
            epsilon: 1
            """)
        let rf = try train(s, "rf", """
            job: rf
            purpose: model_training
            model: random_forest
            derived:
              late: { events: purchase, aggregate: count, from: 2026-10-03, bounds: [0, 1] }
            features: [age, annual_income]
            target: late
            params: { trees: 5, depth: 4 }
            epsilon: 1
            """)
        let km = try train(s, "km", "job: km\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 3 }\nepsilon: 1\n")
        let ids = try s.write("ids.txt", (0..<60).map { "C\($0)" }.joined(separator: "\n"))
        for path in [lin, log, rf, km] {
            let a = try loaded(s, path)
            let r = try s.run(["score", "--model", path, "--subjects", ids, "--role", "app"])
            #expect(r.status == 0, "\(a.model): \(r.stderr)")
            let lines = scoreLines(r)
            #expect(lines.count == 60)
            for l in lines {
                let id = l["customer_id"] as? String ?? ""
                let i = Int(id.dropFirst()) ?? -1
                if i == 0 {
                    #expect(l["error"] as? String == Vault.unscoredSubject && l["score"] == nil && l["segment"] == nil)
                    continue
                }
                let (age, income) = Self.values(i)
                switch a.model {
                case .linear_regression:
                    #expect(l["score"] as? Double == Regression.predict(a, [age, income]), "\(id)")
                case .logistic_regression:
                    #expect(l["score"] as? Double == Regression.predict(a, [age, 3]), "\(id)")   // n = 3 purchases
                case .random_forest:
                    #expect(l["score"] as? Double == RandomForest.predict(a, ["age": age, "annual_income": income]), "\(id)")
                default:
                    let f = a.scaledFeatures
                    let expected = KMeans.nearest([f[0].unit(age), f[1].unit(income)], (a.centroids ?? []).map { c in [f[0].unit(c[0]), f[1].unit(c[1])] })
                    #expect(l["segment"] as? Int == expected && l["score"] == nil, "\(id)")
                }
            }
        }
        // One entry per subject asked about, per run: 59 served, C0 denied, naming the fields read.
        let entries = try scoreEntries(s)
        #expect(entries.count == 4 * 60)
        #expect(entries.filter { $0["status"] as? String == "denied" }.count == 4)
        #expect(entries.contains { ($0["unmapped.fields"] as? [String]) == ["age", "events.purchase"] }, "\(entries.first ?? [:])")
    }

    @Test func allWithTopAnswersTheHighestScoresOnly() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        let a = try loaded(s, lin)
        let expected = (1..<60).map { i -> Double in let v = Self.values(i); return Regression.predict(a, [v.age, v.income]) }.sorted(by: >)
        let r = try s.run(["score", "--model", lin, "--all", "--top", "5", "--role", "app"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = scoreLines(r)
        #expect(lines.map { $0["score"] as? Double ?? .nan } == Array(expected.prefix(5)))
        for l in lines {
            let i = Int((l["customer_id"] as? String ?? "").dropFirst()) ?? 0
            #expect(l["score"] as? Double == Regression.predict(a, [Self.values(i).age, Self.values(i).income]))
        }
        // --min-score keeps the scores at or above it.
        let cut = expected[2]
        let m = try s.run(["score", "--model", lin, "--all", "--top", "50", "--min-score", "\(cut)", "--role", "app"])
        #expect(scoreLines(m).map { $0["score"] as? Double ?? .nan } == Array(expected.prefix(3)), "\(m.stderr)")
        // Every consenting subject's read is audited (C0 is not read), per run.
        #expect(try scoreEntries(s).count == 2 * 59)
    }

    @Test func everySubjectThatCannotBeScoredGetsTheSameAnswer() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        func one(_ id: String) throws -> CLI.Result { try s.run(["score", "--model", lin, "--subject", id, "--role", "app"]) }
        #expect(try one("C5").status == 0)
        #expect(try s.run(["restrict", "--subject", "C2", "--role", "privacy_officer"]).status == 0)
        #expect(try s.run(["erase", "--subject", "C3", "--role", "privacy_officer"]).status == 0)
        #expect(try s.run(["consent", "revoke", "--purpose", "model_training", "--subject", "C4", "--role", "privacy_officer"]).status == 0)
        let answers = try ["C0", "C2", "C3", "C4", "C-NOBODY"].map(one)
        for a in answers {
            #expect(a.status == 77 && a.stderr == answers[0].stderr && a.stdout.isEmpty, "\(a.stderr)")
        }
        #expect(answers[0].stderr.contains(Vault.unscoredSubject))
        // In a list, one line each, the same.
        let ids = try s.write("odd.txt", "C0\nC2\nC3\nC4\nC-NOBODY\nC5\n")
        let lines = scoreLines(try s.run(["score", "--model", lin, "--subjects", ids, "--role", "app"]))
        #expect(lines.count == 6 && lines.prefix(5).allSatisfy { $0.count == 2 && $0["error"] as? String == Vault.unscoredSubject && $0["score"] == nil })
        #expect(lines.last?["score"] is Double)
    }

    /// The reviewer's attack: a trainer trains `age -> age` (or any one-feature model) and the
    /// app role scores everyone, reading the attribute back. train refuses a target that is also
    /// a feature (65, before any charge), and score refuses a one-feature model (65, nothing
    /// read or audited as a score).
    @Test func scoresNeverGiveAnAttributeBack() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let same = try s.run(["train", try job(s, "same.yaml", "job: same\npurpose: model_training\nmodel: linear_regression\nfeatures: [age]\ntarget: age\nepsilon: 5\n"),
                              "--out", s.dir + "/same.json", "--role", "trainer"])
        #expect(same.status == 65 && same.stderr.contains("target: age is also a feature"), "\(same.status) \(same.stderr)")
        let one = try train(s, "one", "job: one\npurpose: model_training\nmodel: linear_regression\nderived:\n  late: { events: purchase, aggregate: count, bounds: [0, 5] }\nfeatures: [age]\ntarget: late\nepsilon: 1\n")
        let before = try scoreEntries(s).count
        for selection in [["--subject", "C5"], ["--all", "--top", "10"]] {
            let r = try s.run(["score", "--model", one] + selection + ["--role", "app"])
            #expect(r.status == 65 && r.stderr.contains("at least 2 features"), "\(selection): \(r.status) \(r.stderr)")
            #expect(!r.stdout.contains("score"))
        }
        // Only the two refused calls' own entries (outcome error): no subject was read or scored.
        let added = try scoreEntries(s).dropFirst(before)
        #expect(added.count == 2 && added.allSatisfy { $0["status"] as? String == "error" }, "\(added)")
    }

    @Test func theGateRefusesForgedArtifactsOtherKindsRolesAndWithdrawnPurposes() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        // An edited coefficient: the MAC no longer verifies (exit 1).
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lin))) as? [String: Any])
        let intercept = try #require(object["intercept"] as? Double)
        object["intercept"] = intercept + 1
        let forged = s.dir + "/forged.json"
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: forged))
        let f = try s.run(["score", "--model", forged, "--subject", "C5", "--role", "app"])
        #expect(f.status == 1 && f.stderr.contains("MAC"), "\(f.stderr)")
        // A recommender (MAC valid) is not scored.
        let rec = try train(s, "rec", "job: rec\npurpose: model_training\nmodel: recommender\nevents: purchase\nepsilon: 2\n")
        let r = try s.run(["score", "--model", rec, "--subject", "C5", "--role", "app"])
        #expect(r.status == 65 && r.stderr.contains("recommender model is not scored"), "\(r.stderr)")
        // Roles without `score`.
        for role in ["trainer", "support", "auditor"] {
            let t = try s.run(["score", "--model", lin, "--subject", "C5", "--role", role])
            #expect(t.status == 77 && t.stderr.contains("may not score"), "\(role): \(t.stderr)")
        }
        // The purpose no longer reads a feature, then no longer allows the model.
        let policy = s.dir + "/policies/policy.yaml"
        let shipped = try String(contentsOfFile: policy, encoding: .utf8)
        for (label, edited, reason) in [
            ("feature", shipped.replacingOccurrences(of: "may_read: [user.demographic, user.location.imprecise, user.financial, user.behavior]\n    models:",
                                                     with: "may_read: [user.demographic, user.location.imprecise, user.behavior]\n    models:"),
             "may not read annual_income"),
            ("model", shipped.replacingOccurrences(of: "kmeans, linear_regression,", with: "kmeans,"), "no longer allows linear_regression"),
        ] {
            #expect(edited != shipped, "\(label): the policy edit did not apply")
            try edited.write(toFile: policy, atomically: true, encoding: .utf8)
            #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
            let d = try s.run(["score", "--model", lin, "--subject", "C5", "--role", "app"])
            #expect(d.status == 77 && d.stderr.contains(reason), "\(label): \(d.stderr)")
            try shipped.write(toFile: policy, atomically: true, encoding: .utf8)
            #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        }
        #expect(try s.run(["score", "--model", lin, "--subject", "C5", "--role", "app"]).status == 0)
    }

    @Test func absurdOptionsAreUsageErrorsWithNothingReadOrAudited() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        func nonExport() throws -> Int { try auditEntries(s).filter { $0["api.operation"] as? String != "audit.export" }.count }
        let before = try nonExport()
        for extra in [["--top", "0"], ["--top", "-1"], ["--top", "10001"], ["--top", "1e300"], ["--min-score", "nan"], ["--min-score", "NaN"],
                      ["--min-score", "inf"], ["--min-score", "1e300"], ["--min-score", "-1e300"], ["--min-score", "lots"]] {
            let r = try s.run(["score", "--model", lin, "--subject", "C5", "--role", "app"] + extra)
            #expect(r.status == 64 && r.stdout.isEmpty, "\(extra): \(r.status) \(r.stderr)")
        }
        for args in [["--all"], ["--all", "--subject", "C5", "--top", "3"], []] {
            let r = try s.run(["score", "--model", lin, "--role", "app"] + args)
            #expect(r.status == 64, "\(args): \(r.stderr)")
        }
        // Nothing read, nothing audited (audit export itself adds entries after the count).
        #expect(try scoreEntries(s).isEmpty)
        #expect(try nonExport() == before)
    }

    /// An artifact whose numbers train never writes, sealed with the store's own key (so the MAC
    /// verifies): a clear invalid-input error naming the problem, never a crash.
    @Test func sealedArtifactsWithBadNumbersAreRefusedNotCrashed() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let lin = try train(s, "lin", Self.linearJob)
        let rf = try train(s, "rf", """
            job: rf
            purpose: model_training
            model: random_forest
            derived:
              late: { events: purchase, aggregate: count, from: 2026-10-03, bounds: [0, 1] }
            features: [age, annual_income]
            target: late
            params: { trees: 2, depth: 3 }
            epsilon: 1
            """)
        let vault = try Vault.open(VaultConfiguration(storePath: s.dir + "/store.sqlite", keysPath: s.dir + "/keyring.json",
                                                      policyDirectory: s.dir + "/policies", actor: Actor(name: "t", role: "app")))
        let good = try ModelArtifact.decode(Data(contentsOf: URL(fileURLWithPath: lin)))
        let forest = try ModelArtifact.decode(Data(contentsOf: URL(fileURLWithPath: rf)))
        var cases: [(String, ModelArtifact, String)] = []
        var x = good; x.coefficients = [1e300, 1e300]; cases.append(("huge", x, "overflow"))
        x = good; x.coefficients = [1]; cases.append(("short coefficients", x, "one number per feature"))
        x = good; x.featureBounds = [[18, 100]]; cases.append(("short bounds", x, "feature_bounds has 1 entries"))
        x = good; x.featureBounds = [[18], [0, 1]]; cases.append(("bound pair", x, "feature_bounds[0]"))
        x = good; x.intercept = nil; cases.append(("no intercept", x, "finite"))
        var y = forest; y.trees?[0].leafProbabilities = [0.5]; cases.append(("short leaves", y, "leaf_probabilities must have"))
        y = forest; y.trees?[0].cuts = [1]; cases.append(("cuts", y, "same length"))
        y = forest; y.trees?[0].features = ["annual_income", "age", "zzz"]; cases.append(("tree feature", y, "not a feature of the model"))
        for (label, artifact, reason) in cases {
            let (_, json) = try vault.sealed(artifact)
            let path = try s.write("bad-\(label.replacingOccurrences(of: " ", with: "-")).json", String(decoding: json, as: UTF8.self))
            let r = try s.run(["score", "--model", path, "--subject", "C5", "--role", "app"])
            #expect(r.status == 65 && r.stderr.contains(reason), "\(label): \(r.status) \(r.stderr)")
        }
    }
}
