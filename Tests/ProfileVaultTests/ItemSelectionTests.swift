import Foundation
import Testing

/// Issue 24, part 2: a recommender without a catalog selects its items with a small
/// per-subject vote bound k (`selection_items`), with its own share of the job's epsilon
/// (`selection_share`), separate from the cap m on everything else; with a catalog there is no
/// selection; an empty or tiny released vocabulary makes the job warn (stderr, `--json`
/// summary and the artifact's `warnings`); an absurd k is refused naming file, line and field.
extension TrainTests {
    func trainJSON(_ s: CLIStore, _ name: String, _ text: String) throws -> (result: CLI.Result, artifact: [String: Any]) {
        let out = s.dir + "/\(name).json"
        let r = try s.run(["train", try job(s, "\(name).yaml", text), "--out", out, "--role", "trainer", "--json"])
        #expect(r.status == 0, "\(name): \(r.stderr)")
        return (r, try artifact(out))
    }

    func releases(_ a: [String: Any]) -> [String] {
        ((a["privacy"] as? [String: Any])?["budget_split"] as? [[String: Any]] ?? []).compactMap { $0["release"] as? String }
    }

    /// Subjects C1..C30 (all consenting) also bought HEAVY-0..HEAVY-29 in November, each at its
    /// own minute, so that each subject's most recent item is a different HEAVY item
    /// (HEAVY-((i + 29) mod 30) for Ci). With k = 1, each HEAVY item has exactly 1 vote and the
    /// SKUs get the votes of C31..C59 (2 or 3 each: the most recent of Ci is SKU-((i + 2) mod 12));
    /// with k = 30, each HEAVY item has 30 votes. At epsilon 2000 the selection's noise scale is
    /// k/570 and its threshold T is 2 (k = 1) or 3 (k = 30): an item with 1 vote passes with
    /// probability p/(1+p), p = e^-570, and one with 2 votes fails only if the noise is below
    /// -1 (T = 2; probability below e^-570) — the outcome is certain to far beyond any test
    /// flake. So with k = 1 the many items of a heavy subject name nothing (each of its votes
    /// but one is not even cast), while k = 30 names them all: the bound is what stops them.
    @Test func aSubjectWithManyItemsOnlyInfluencesItsKVotes() throws {
        let s = try store(modelTrainingBudget: "100000.0")
        var ev = "customer_id,kind,item,value,time\n"
        for i in 1...30 {
            for j in 0..<30 {
                let minute = ((j - i) % 30 + 30) % 30
                ev += "C\(i),purchase,HEAVY-\(j),1,2026-11-01T10:\(minute < 10 ? "0" : "")\(minute):00Z\n"
            }
        }
        #expect(try s.run(["ingest", "events", s.write("heavy.csv", ev)]).status == 0)
        func selected(_ k: Int) throws -> (items: Set<String>, artifact: [String: Any], result: CLI.Result) {
            let (r, a) = try trainJSON(s, "k\(k)", "job: k\(k)\npurpose: model_training\nmodel: recommender\nevents: purchase\nparams: { selection_items: \(k) }\nepsilon: 2000\ndelta: 1.0e-9\n")
            return (Set(a["items"] as? [String] ?? ["missing"]), a, r)
        }
        let one = try selected(1)
        #expect(one.items == Set((0..<12).map { "SKU-\($0)" }), "\(one.items.sorted())")
        #expect(one.artifact["item_source"] as? String == "private_selection")
        let params = one.artifact["params"] as? [String: Any] ?? [:]
        #expect(params["selection_items"] as? Double == 1 && params["selection_share"] as? Double == 0.3 && params["selection_threshold"] as? Double == 2, "\(params)")
        // The selection is its own release (k votes, its own share), then the popularity of the
        // selected items with the cap m, then the co-occurrence.
        let names = releases(one.artifact)
        #expect(names.contains { $0.hasPrefix("recommender: item selection (1 votes per subject) (partition selection") }, "\(names)")
        #expect(names.contains("recommender: item popularity (selected items) (12 groups)"), "\(names)")
        let thirty = try selected(30)
        #expect(thirty.items == Set((0..<12).map { "SKU-\($0)" } + (0..<30).map { "HEAVY-\($0)" }), "\(thirty.items.sorted())")
        // Both vocabularies are under 100 items: the job says so, on stderr, in the summary and
        // in the artifact.
        for (n, r) in [(12, one), (42, thirty)] {
            let w = r.artifact["warnings"] as? [String] ?? []
            #expect(w.contains { $0.contains("released only \(n) items (under 100)") && $0.contains("at most \(n / 10) items") }, "\(w)")
            #expect((r.result.json?["warnings"] as? [String]) == w)
            #expect(r.result.stderr.contains("warning: the private item selection released only \(n) items"), "\(r.result.stderr)")
        }
    }

    /// The base store's 59 consenting subjects give each SKU at most 6 votes (k = 1). At epsilon
    /// 0.5 and delta 1e-9 the selection (epsilon 0.1425, noise scale 7.0) needs T = 143 votes:
    /// an item with c <= 6 votes passes with probability p^(T-c)/(1+p) <= (δ/k)·p^-5 < 2.1e-9
    /// (p = e^-0.1425), so all 12 stay unnamed except with probability below 2.6e-8. The job
    /// trains, releases an empty vocabulary, and warns (it used to say nothing).
    @Test func anEmptyVocabularyWarns() throws {
        let s = try store()
        let (r, a) = try trainJSON(s, "empty", "job: empty\npurpose: model_training\nmodel: recommender\nevents: purchase\nepsilon: 0.5\ndelta: 1.0e-9\n")
        #expect((a["items"] as? [String]) == [], "\(a["items"] ?? "")")
        let w = a["warnings"] as? [String] ?? []
        #expect(w.contains { $0.contains("the private item selection released no items") && $0.contains("items_from") }, "\(w)")
        #expect((r.json?["warnings"] as? [String]) == w)
        #expect(r.stderr.contains("warning: the private item selection released no items"), "\(r.stderr)")
        // No popularity release over an empty vocabulary.
        #expect(!releases(a).contains { $0.contains("item popularity") }, "\(releases(a))")
    }

    /// With a catalog there is no selection: no selection release, no selection parameters in
    /// the artifact, every catalog item named, and no vocabulary warning.
    @Test func withACatalogThereIsNoSelection() throws {
        let s = try store(modelTrainingBudget: "1000.0")
        let catalog = try s.catalog(((0..<12).map { "SKU-\($0)" } + (0..<88).map { "PAD-\($0)" }).joined(separator: "\n") + "\n")
        let (r, a) = try trainJSON(s, "cat", "job: cat\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(catalog)\nparams: { selection_items: 2, selection_share: 0.5 }\nepsilon: 1\n")
        #expect(a["item_source"] as? String == "catalog" && (a["items"] as? [String])?.count == 100)
        let params = a["params"] as? [String: Any] ?? [:]
        #expect(params["selection_items"] == nil && params["selection_share"] == nil && params["selection_threshold"] == nil, "\(params)")
        let names = releases(a)
        #expect(!names.contains { $0.contains("selection") } && names.contains("recommender: item popularity (catalog) (100 groups)"), "\(names)")
        #expect(!r.stderr.contains("item selection") && !((a["warnings"] as? [String]) ?? []).contains { $0.contains("item selection") })
    }

    /// An absurd vote bound or share is invalid input naming file, line and field, before any
    /// charge (the job parser checks params against ModelParameters.rules).
    @Test func anAbsurdSelectionIsRefusedNamingFileLineAndField() throws {
        let s = try store()
        for p in ["selection_items: 0", "selection_items: 51", "selection_items: 1e300", "selection_items: 2.5", "selection_items: -1",
                  "selection_share: 0", "selection_share: 0.95", "selection_share: .nan", "selection_share: 1e300"] {
            let path = try job(s, "sel.yaml", "job: sel\npurpose: model_training\nmodel: recommender\nevents: purchase\nepsilon: 1\nparams: { \(p) }\n")
            let r = try s.run(["train", path, "--out", s.dir + "/sel.json", "--role", "trainer"])
            let field = "params." + p.prefix { $0 != ":" }
            #expect(r.status == 65 && r.stderr.contains("sel.yaml:6") && r.stderr.contains(field), "\(p): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/sel.json"))
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        #expect(((b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any])?["spent"] as? Double == 0)
    }
}
