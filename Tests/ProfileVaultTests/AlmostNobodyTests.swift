import Foundation
import ProfileVault
import Testing

/// Issue 16, item 8: a job over almost nobody (no consent yet, an `events_since` window without
/// events) spent its budget silently on a model of pure noise. Now the artifact records
/// `privacy.noisy_subjects` (and `noisy_events`), and `train` and `query` warn under 5 noise
/// scales.
///
/// With a true count of 0, a discrete Laplace release exceeds 5 scales with probability below
/// e^-5 < 0.0068; the tests that need a warning from a count of 0 run 5 independent jobs and
/// require a warning from at least one (all 5 missing it: below 1.5e-11). Tests that must not
/// warn use counts of 59 (177 events) against noise scales of at most 0.7 (1.3): a false
/// warning, or a count off by the allowed margin, needs noise of over 10 scales (below e^-10
/// for one Laplace value, far below for the sums).
extension TrainTests {
    func artifact(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    /// The warning and the recorded count agree: a warning exactly when the count is under 5 scales.
    func consistent(_ a: [String: Any], _ count: String) -> Bool {
        let p = a["privacy"] as? [String: Any] ?? [:]
        guard let n = p["noisy_\(count)"] as? Double, let b = p["noisy_\(count)_scale"] as? Double, b > 0 else { return false }
        let warned = (a["warnings"] as? [String] ?? []).contains { $0.contains(count == "subjects" ? "subject count" : "event count") }
        return warned == (n < 5 * b)
    }

    @Test func aJobOverNobodyWarnsAndRecordsItsNoisySubjectCount() throws {
        let s = try store(modelTrainingBudget: "1000.0")
        // Nobody consents to model_training any more.
        let ids = try s.write("everyone.txt", (0..<60).map { "C\($0)" }.joined(separator: "\n"))
        #expect(try s.run(["consent", "revoke", "--purpose", "model_training", "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        let p = try job(s, "km.yaml", "job: km\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2 }\nepsilon: 0.5\n")
        var warned = 0
        for i in 0..<5 {
            let out = s.dir + "/km\(i).json"
            let r = try s.run(["train", p, "--out", out, "--role", "trainer", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let a = try artifact(out)
            #expect(consistent(a, "subjects"), "\(a["privacy"] ?? "") \(a["warnings"] ?? "")")
            let summary = (r.json?["warnings"] as? [String]) ?? []
            #expect(summary == (a["warnings"] as? [String] ?? ["missing"]))
            if !summary.isEmpty {
                warned += 1
                #expect(r.stderr.contains("warning: the noisy subject count") && r.stderr.contains("consented to purpose model_training"), "\(r.stderr)")
            }
        }
        #expect(warned >= 1)
        // Everyone but C0 consents again: a large epsilon trains without a warning.
        #expect(try s.run(["consent", "grant", "--purpose", "model_training", "--subjects", s.write("back.txt", (1..<60).map { "C\($0)" }.joined(separator: "\n")), "--role", "privacy_officer"]).status == 0)
        let big = try job(s, "big.yaml", "job: km\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2 }\nepsilon: 100\n")
        let r = try s.run(["train", big, "--out", s.dir + "/big.json", "--role", "trainer", "--json"])
        #expect(r.status == 0 && !r.stderr.contains("warning"), "\(r.stderr)")
        let a = try artifact(s.dir + "/big.json")
        #expect((a["warnings"] as? [String]) == [] && consistent(a, "subjects"))
        let n = (a["privacy"] as? [String: Any])?["noisy_subjects"] as? Double ?? 0
        #expect(abs(n - 59) < 10, "\(n)")
    }

    @Test func aRecommenderOverAnEmptyWindowWarnsAboutItsEvents() throws {
        let s = try store(modelTrainingBudget: "1000.0")
        let catalog = try s.catalog(((0..<12).map { "SKU-\($0)" } + (0..<88).map { "PAD-\($0)" }).joined(separator: "\n") + "\n")
        // Every purchase is in October 2026: a window from 2027 on holds none.
        let empty = try job(s, "r.yaml", "job: r\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(catalog)\nevents_since: 2027-01-01\nepsilon: 0.5\n")
        var warned = 0
        for i in 0..<5 {
            let out = s.dir + "/r\(i).json"
            let r = try s.run(["train", empty, "--out", out, "--role", "trainer"])
            #expect(r.status == 0, "\(r.stderr)")
            let a = try artifact(out)
            #expect(consistent(a, "events") && consistent(a, "subjects"), "\(a["privacy"] ?? "")")
            if (a["warnings"] as? [String] ?? []).contains(where: { $0.contains("event count") && $0.contains("events_since") }) { warned += 1 }
        }
        #expect(warned >= 1)
        // The same job over all of October: 59 subjects x 3 items, epsilon 200, no warning.
        let full = try job(s, "f.yaml", "job: r\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(catalog)\nevents_since: 2026-10-01\nepsilon: 200\n")
        let r = try s.run(["train", full, "--out", s.dir + "/full.json", "--role", "trainer"])
        #expect(r.status == 0 && !r.stderr.contains("warning"), "\(r.stderr)")
        let a = try artifact(s.dir + "/full.json")
        let p = a["privacy"] as? [String: Any] ?? [:]
        #expect((a["warnings"] as? [String]) == [] && abs((p["noisy_events"] as? Double ?? 0) - 177) < 20, "\(p)")
    }

    @Test func aQueryOverNobodyWarns() throws {
        let s = try store()
        // Nobody consented to analytics in this store. Five independent releases (--fresh: the
        // release cache would answer the same release five times): none warning has chance
        // about (e^-5 / 2)^5, about 5e-13.
        var warned = 0
        for _ in 0..<5 {
            let r = try s.run(["query", "count", "--purpose", "analytics", "--epsilon", "0.2", "--fresh", "--role", "trainer", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let w = r.json?["warnings"] as? [String]
            #expect(w != nil)
            let v = r.json?["value"] as? Double ?? 0, b = r.json?["scale"] as? Double ?? 0
            #expect((w?.isEmpty == false) == (v < 5 * b), "\(v) \(b) \(w ?? [])")
            if w?.isEmpty == false {
                warned += 1
                #expect(r.stderr.contains("warning: the noisy count"))
            }
        }
        #expect(warned >= 1)
        // 59 consenting subjects, scale 0.2: no warning; a mean's denominator is checked too.
        let ok = try s.run(["query", "count", "--purpose", "model_training", "--epsilon", "5", "--role", "trainer", "--json"])
        #expect(ok.status == 0 && (ok.json?["warnings"] as? [String]) == [] && !ok.stderr.contains("warning"), "\(ok.stdout) \(ok.stderr)")
        let mean = try s.run(["query", "mean", "--purpose", "model_training", "--epsilon", "3", "--attribute", "age", "--role", "trainer", "--json"])
        #expect(mean.status == 0 && (mean.json?["warnings"] as? [String]) == [], "\(mean.stdout) \(mean.stderr)")
    }

    /// The shipped example jobs that fit the default policy train something useful on the demo
    /// store (`profilectl demo`: 10,000 customers, 90% consenting): no warning, about 9,000 noisy
    /// subjects (noise scales at most 21: a warning would need noise of over 400 scales), and
    /// the recommenders count thousands of purchases in their window. (bank-* and later-spend
    /// need the example schemas of bank marketing and online retail, not the demo store's.)
    @Test func theExampleJobsTrainWithoutAWarningOnTheDemoStore() throws {
        let dir = NSTemporaryDirectory() + "pv-demo-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = try CLI.run(["demo", "--dir", dir], cwd: NSTemporaryDirectory())
        #expect(d.status == 0, "\(d.stderr)")
        #expect(!d.stdout.contains("warning"))
        let env = ["PROFILEVAULT_STORE": dir + "/store.sqlite", "PROFILEVAULT_KEYS": dir + "/keyring.json", "PROFILEVAULT_POLICY": dir + "/policies"]
        for name in ["income-from-age", "profile-by-country", "recommend-by-country", "recommend-products", "segment-customers"] {
            let out = dir + "/\(name).json"
            let r = try CLI.run(["train", CLI.repoRoot + "/policies/examples/jobs/\(name).yaml", "--out", out, "--role", "trainer", "--json", "--allow-example-keys"], env: env)
            #expect(r.status == 0 && (r.json?["warnings"] as? [String]) == [] && !r.stderr.contains("warning"), "\(name): \(r.stderr)")
            let p = try artifact(out)["privacy"] as? [String: Any] ?? [:]
            #expect((p["noisy_subjects"] as? Double ?? 0) > 8000, "\(name): \(p)")
            if name.hasPrefix("recommend") { #expect((p["noisy_events"] as? Double ?? 0) > 5000, "\(name): \(p)") }
        }
    }
}
