import Foundation
import Testing
@testable import ProfileVault

/// Issue 24: association rules without a catalog name their items by the recommender's item
/// selection (each subject votes for k = `selection_items` of its items, with its own share
/// `selection_share` of the job's epsilon), not by a selection over every subject's m items;
/// an empty vocabulary warns naming only what association rules accept; a bad or unknown
/// parameter is invalid input naming file, line and field, and nothing is charged.
extension TrainTests {
    func trainingSpent(_ s: CLIStore) throws -> Double? {
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        return ((b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any])?["spent"] as? Double
    }

    /// The heavy-subject store of `aSubjectWithManyItemsOnlyInfluencesItsKVotes` (C1..C30 each
    /// also bought HEAVY-0..29, each its own most recent once), for association rules: with
    /// k = 1 every HEAVY item has exactly one vote and the threshold is 2 (epsilon 2000, selection
    /// 600, delta 1e-9), so none is named (probability p/(1+p), p = e^-600); the SKUs have 2-3
    /// votes from C31..C59 and fail only below noise -1 (probability below e^-600). With k = 30
    /// (threshold 3) the HEAVY items have 30 votes each and all are named.
    @Test func associationRulesWithoutACatalogCountOnlyKVotesPerSubject() throws {
        let s = try store(modelTrainingBudget: "100000.0")
        var ev = "customer_id,kind,item,value,time\n"
        for i in 1...30 {
            for j in 0..<30 {
                let minute = ((j - i) % 30 + 30) % 30
                ev += "C\(i),purchase,HEAVY-\(j),1,2026-11-01T10:\(minute < 10 ? "0" : "")\(minute):00Z\n"
            }
        }
        #expect(try s.run(["ingest", "events", s.write("heavy.csv", ev)]).status == 0)
        func rules(_ k: Int) throws -> (items: Set<String>, artifact: [String: Any]) {
            let (_, a) = try trainJSON(s, "ar\(k)", "job: ar\(k)\npurpose: model_training\nmodel: association_rules\nevents: purchase\nparams: { selection_items: \(k) }\nepsilon: 2000\ndelta: 1.0e-9\n")
            return (Set(a["items"] as? [String] ?? ["missing"]), a)
        }
        let one = try rules(1)
        // vocabulary_size 50 keeps all 12 SKUs; no HEAVY item.
        #expect(one.items == Set((0..<12).map { "SKU-\($0)" }), "\(one.items.sorted())")
        #expect(one.artifact["item_source"] as? String == "private_selection")
        let params = one.artifact["params"] as? [String: Any] ?? [:]
        #expect(params["selection_items"] as? Double == 1 && params["selection_share"] as? Double == 0.3 && params["selection_threshold"] as? Double == 2, "\(params)")
        let names = releases(one.artifact)
        #expect(names.first?.hasPrefix("association_rules: item selection (1 votes per subject) (partition selection") == true, "\(names)")
        #expect(names.contains("association_rules: item popularity (selected items) (12 groups)"), "\(names)")
        // The selection is 30% of the job's epsilon; the rest splits 25/5/20/30/20.
        let split = ((one.artifact["privacy"] as? [String: Any])?["budget_split"] as? [[String: Any]]) ?? []
        let eps = split.compactMap { $0["epsilon"] as? Double }
        #expect(eps.count == 6 && abs(eps[0] - 600) < 0.01 && abs(eps[1] - 350) < 0.01 && abs(eps.reduce(0, +) - 2000) < 0.01, "\(split)")
        let thirty = try rules(30)
        #expect(thirty.items.isSuperset(of: Set((0..<30).map { "HEAVY-\($0)" })), "\(thirty.items.sorted())")
    }

    /// At epsilon 0.5 (selection 0.15, noise scale 6.7, delta 1e-9: threshold about 140 votes)
    /// no SKU (at most 6 votes) is named: the job trains, releases no rule, and warns; the
    /// warning names only keys and parameters an association_rules job accepts.
    @Test func associationRulesWithAnEmptyVocabularyWarnNamingOnlyTheirOwnParameters() throws {
        let s = try store()
        let (r, a) = try trainJSON(s, "empty", "job: empty\npurpose: model_training\nmodel: association_rules\nevents: purchase\nepsilon: 0.5\ndelta: 1.0e-9\n")
        #expect((a["items"] as? [String]) == [] && (a["rules"] as? [Any])?.isEmpty == true, "\(a["items"] ?? "")")
        let w = a["warnings"] as? [String] ?? []
        let warning = try #require(w.first { $0.contains("the private item selection released no items") }, "\(w)")
        #expect(r.stderr.contains("warning: the private item selection released no items"), "\(r.stderr)")
        // Every name with an underscore in it is a job key or a parameter of association_rules.
        let accepted = Vault.jobKeys.union(Vault.paramKeys["association_rules"] ?? [])
        let words = warning.split { !($0.isLetter || $0 == "_") }.map(String.init).filter { $0.contains("_") }
        #expect(!words.isEmpty && words.allSatisfy { accepted.contains($0) }, "\(words)")
        // Nothing past the selection was released (no vocabulary to count), but the job was charged whole.
        #expect(releases(a).count == 1, "\(releases(a))")
        #expect(try trainingSpent(s) == 0.5)
    }

    /// Unknown and invalid parameters of an association_rules job: exit 65 naming file, line and
    /// field, no artifact, nothing charged, nothing audited as a training run.
    @Test func badAssociationRulesParametersAreRefusedNamingFileLineAndFieldBeforeAnyCharge() throws {
        let s = try store()
        let cases: [(String, String, String)] = [
            ("selection_items: 0", "params.selection_items", "whole number from 1 to 50"),
            ("selection_items: 51", "params.selection_items", "whole number from 1 to 50"),
            ("selection_items: 2.5", "params.selection_items", "whole number"),
            ("selection_items: 1e300", "params.selection_items", "whole number"),
            ("selection_share: 0", "params.selection_share", "number from 0.05 to 0.9"),
            ("selection_share: 0.95", "params.selection_share", "number from 0.05 to 0.9"),
            ("selection_share: .nan", "params.selection_share", "expected a number"),
            ("neighbors: 5", "params.neighbors", "not a parameter of association_rules"),
            ("selection_item: 2", "params.selection_item", "not a parameter of association_rules"),
            ("max_items_per_subject: 1", "params.max_items_per_subject", "whole number from 2 to 20"),
            ("vocabulary_size: 301", "params.vocabulary_size", "whole number from 2 to 300"),
            ("triple_vocabulary: 61", "params.triple_vocabulary", "whole number from 0 to 60"),
            ("triple_vocabulary: 30, vocabulary_size: 20", "params.triple_vocabulary", "must not exceed vocabulary_size (20)"),
            ("min_confidence: 1.5", "params.min_confidence", "number from 0 to 1"),
            ("max_rules: 0", "params.max_rules", "whole number from 1 to 10000"),
            ("support_threshold: -1", "params.support_threshold", "number from 0"),
        ]
        for (p, field, reason) in cases {
            let path = try job(s, "ar.yaml", "job: ar\npurpose: model_training\nmodel: association_rules\nevents: purchase\nepsilon: 1\nparams: { \(p) }\n")
            let r = try s.run(["train", path, "--out", s.dir + "/ar.json", "--role", "trainer"])
            #expect(r.status == 65 && r.stderr.contains("ar.yaml:6: \(field): ") && r.stderr.contains(reason), "\(p): \(r.stderr)")
        }
        // A key only the recommender takes, at the top level.
        let since = try job(s, "ar.yaml", "job: ar\npurpose: model_training\nmodel: association_rules\nevents: purchase\nevents_since: 2026-01-01\nepsilon: 1\n")
        let r = try s.run(["train", since, "--out", s.dir + "/ar.json", "--role", "trainer"])
        #expect(r.status == 65 && r.stderr.contains("ar.yaml:5: events_since:"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/ar.json"))
        #expect(try trainingSpent(s) == 0)
        #expect(try auditEntries(s).filter { $0["api.operation"] as? String == "train" && $0["status"] as? String == "ok" }.isEmpty)
        // The edges are accepted: no triples (triple_vocabulary 0, which the parser used to refuse
        // as "not a positive integer" though the model takes it) and the largest vote bound.
        let (_, a) = try trainJSON(s, "edge", "job: edge\npurpose: model_training\nmodel: association_rules\nevents: purchase\nitems_from: \(try s.catalog((0..<12).map { "SKU-\($0)" }.joined(separator: "\n") + "\n"))\nparams: { triple_vocabulary: 0, selection_items: 50, selection_share: 0.9 }\nepsilon: 1\n")
        #expect(!releases(a).contains { $0.contains("triple") } && (a["params"] as? [String: Any])?["selection_items"] == nil, "\(releases(a))")
        #expect(try trainingSpent(s) == 1)
        // A vocabulary under 15 without triple_vocabulary: the triples default to the vocabulary
        // (they used to default to 15 and the job failed on its own default).
        let (_, small) = try trainJSON(s, "small", "job: small\npurpose: model_training\nmodel: association_rules\nevents: purchase\nitems_from: \(try s.catalog((0..<12).map { "SKU-\($0)" }.joined(separator: "\n") + "\n"))\nparams: { vocabulary_size: 10 }\nepsilon: 1\n")
        #expect((small["params"] as? [String: Any])?["triple_vocabulary"] as? Double == 10, "\(small["params"] ?? "")")
    }
}
