import Foundation
import ProfileVault
import Testing

/// Issue 16, item 4: `recommend` read a subject's data at zero epsilon. These attack it as the
/// review did: the trainer asking, `--top 1000` over the catalog (the catalog minus the answer
/// was the purchase set), hand-edited artifacts, and errors that told unknown, erased and
/// unconsented subjects apart.
extension TrainTests {
    /// A recommender over a 100-item catalog (SKU-0..11 are bought, PAD-n never), so `--top`
    /// may be at most 10; `by` trains the segment-based mode (by gender).
    func recommender(_ s: CLIStore, name: String = "r", by: String? = nil) throws -> (path: String, catalog: [String]) {
        let items = (0..<12).map { "SKU-\($0)" } + (0..<88).map { "PAD-\($0)" }
        let catalog = try s.catalog(items.joined(separator: "\n") + "\n")
        let params = by.map { "params: { by: \($0), max_items_per_subject: 5 }\n" } ?? "params: { max_items_per_subject: 5 }\n"
        let p = try job(s, "\(name).yaml", "job: \(name)\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(catalog)\n\(params)epsilon: 2\n")
        let out = s.dir + "/\(name).json"
        let t = try s.run(["train", p, "--out", out, "--role", "trainer"])
        #expect(t.status == 0, "\(t.stderr)")
        return (out, items)
    }

    func recommend(_ s: CLIStore, _ model: String, _ args: [String], role: String = "app") throws -> CLI.Result {
        try s.run(["recommend", "--model", model] + args + ["--role", role, "--json"])
    }

    @Test func theTrainerMayNotRecommendAndTopIsCapped() throws {
        let s = try store()
        let (model, catalog) = try recommender(s)
        // The review's attack, as the trainer: denied.
        let asTrainer = try recommend(s, model, ["--subject", "C1", "--top", "10"], role: "trainer")
        #expect(asTrainer.status == 77 && asTrainer.stderr.contains("serve_recommendations"), "\(asTrainer.stderr)")
        // As the app, --top 1000 (the review's attack) and anything above 100: refused (64),
        // naming --top, before any subject is read.
        let reads = try auditEntries(s).filter { $0["api.operation"] as? String == "recommend" && $0["status"] as? String == "ok" }.count
        for top in ["1000", "101"] {
            let r = try recommend(s, model, ["--subject", "C1", "--top", top])
            #expect(r.status == 64 && r.stderr.contains("--top") && r.stdout.isEmpty, "--top \(top): \(r.status) \(r.stderr)")
        }
        #expect(try auditEntries(s).filter { $0["api.operation"] as? String == "recommend" && $0["status"] as? String == "ok" }.count == reads)
        // Above a tenth of the model's 100 items: cut to 10.
        for top in ["11", "100"] {
            let r = try recommend(s, model, ["--subject", "C1", "--top", top])
            let items = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["items"] as? [String]
            #expect(r.status == 0 && items?.count == 10, "--top \(top): \(r.status) \(r.stdout) \(r.stderr)")
        }
        // At the cap, the catalog minus the answer is far from any subject's purchase set.
        let ids = try s.write("ids.txt", (1..<60).map { "C\($0)" }.joined(separator: "\n"))
        let r = try recommend(s, model, ["--subjects", ids, "--top", "10"])
        #expect(r.status == 0, "\(r.stderr)")
        for line in r.stdout.split(separator: "\n") {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let i = Int((o["customer_id"] as? String ?? "C0").dropFirst()) ?? 0
            let owned = Set((0..<3).map { "SKU-\((i + $0 * 7) % 12)" })
            let answer = Set(o["items"] as? [String] ?? [])
            #expect(answer.count <= 10 && answer.isDisjoint(with: owned))
            let complement = Set(catalog).subtracting(answer)
            #expect(complement.count >= 90 && complement != owned)
        }
        // A model whose vocabulary is under 10 items serves nothing (a tenth of it is 0): with 3
        // items, two unowned, the old answer named the one item C1 has not bought of the three.
        let tiny = try s.catalog("SKU-0\nSKU-1\nSKU-8\n")
        let tj = try job(s, "tiny.yaml", "job: tiny\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(tiny)\nepsilon: 1\n")
        #expect(try s.run(["train", tj, "--out", s.dir + "/tiny.json", "--role", "trainer"]).status == 0)
        let t = try recommend(s, s.dir + "/tiny.json", ["--subject", "C1", "--top", "3"])
        let tItems = (try? JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])?["items"] as? [String]
        #expect(t.status == 0 && tItems == [], "\(t.stdout) \(t.stderr)")
    }

    /// Every hand-edit of an artifact is refused (exit 1) before anything is scored: an item,
    /// a popularity ("rating"), a segment table value, a stripped MAC, a MAC of another
    /// keyring, and a k-means model used by a segments job. Re-serialising it unchanged is not
    /// an edit.
    @Test func aHandEditedArtifactIsNeverScored() throws {
        let s = try store(modelTrainingBudget: "100.0")
        let (plain, _) = try recommender(s)
        let (segmented, _) = try recommender(s, name: "seg", by: "gender")
        func edited(_ path: String, _ name: String, _ change: (inout [String: Any]) -> Void) throws -> String {
            var o = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
            change(&o)
            let out = s.dir + "/" + name
            try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]).write(to: URL(fileURLWithPath: out))
            return out
        }
        let same = try edited(plain, "same.json") { _ in }
        #expect(try recommend(s, same, ["--subject", "C1"]).status == 0)
        let cases: [(String, String)] = [
            ("item", try edited(plain, "item.json") { o in
                var items = o["items"] as? [String] ?? []
                items[items.count - 1] = "SKU-1"      // C1 owns SKU-1: scoring it would reveal that
                o["items"] = items
            }),
            ("rating", try edited(plain, "pop.json") { o in
                var pop = o["popularity"] as? [Double] ?? []
                pop[pop.count - 1] = 1e9
                o["popularity"] = pop
            }),
            ("segment", try edited(segmented, "segval.json") { o in
                var table = o["segment_popularity"] as? [[Double]] ?? []
                table[0][0] = (table[0][0]) + 1
                o["segment_popularity"] = table
            }),
            ("segment keys", try edited(segmented, "segkeys.json") { o in o["segment_keys"] = ["female", "female", "female", "female"] }),
            ("mac stripped", try edited(plain, "nomac.json") { o in o["mac"] = nil }),
            ("mac garbage", try edited(plain, "badmac.json") { o in o["mac"] = "hmac-sha256:" + String(repeating: "0", count: 64) }),
        ]
        let before = try auditEntries(s).filter { $0["api.operation"] as? String == "recommend" && $0["status"] as? String == "ok" }.count
        for (what, path) in cases {
            let r = try recommend(s, path, ["--subject", "C1"])
            #expect(r.status == 1 && r.stderr.contains("MAC") && r.stdout.isEmpty, "\(what): \(r.status) \(r.stderr)")
        }
        // Nothing was scored from an edited artifact (only the unchanged copy's read is on record).
        #expect(try auditEntries(s).filter { $0["api.operation"] as? String == "recommend" && $0["status"] as? String == "ok" }.count == before)

        // A MAC made with another keyring: the same job trained by another store.
        let other = try store()
        let (foreign, _) = try recommender(other)
        let f = try recommend(s, foreign, ["--subject", "C1"])
        #expect(f.status == 1 && f.stderr.contains("another keyring"), "\(f.stderr)")
        #expect(try recommend(other, foreign, ["--subject", "C1"]).status == 0)

        // params.from_model loads an artifact too: an edited k-means model is refused.
        let km = try job(s, "km.yaml", "job: km\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nparams: { k: 2 }\nepsilon: 1\n")
        #expect(try s.run(["train", km, "--out", s.dir + "/km.json", "--role", "trainer"]).status == 0)
        let kmEdited = try edited(s.dir + "/km.json", "km-edited.json") { o in
            var c = o["centroids"] as? [[Double]] ?? []
            c[0][0] = 99
            o["centroids"] = c
        }
        let seg = try job(s, "seg-km.yaml", "job: seg\npurpose: model_training\nmodel: segments\nfeatures: [age]\nparams: { from_model: \(kmEdited) }\nepsilon: 1\n")
        let spent = try s.run(["budget", "status", "--role", "trainer", "--json"]).stdout
        let r = try s.run(["train", seg, "--role", "trainer"])
        #expect(r.status == 1 && r.stderr.contains("MAC"), "\(r.stderr)")
        #expect(try s.run(["budget", "status", "--role", "trainer", "--json"]).stdout == spent)   // nothing charged
        let segOK = try job(s, "seg-ok.yaml", "job: seg\npurpose: model_training\nmodel: segments\nfeatures: [age]\nparams: { from_model: \(s.dir)/km.json }\nepsilon: 1\n")
        #expect(try s.run(["train", segOK, "--role", "trainer"]).status == 0)
    }

    /// Unknown, erased and unconsented subjects: byte-identical exit status, stdout and stderr,
    /// and the same audit detail; in a list, the same entry but for the ID.
    @Test func unknownErasedAndUnconsentedSubjectsGetTheSameAnswer() throws {
        let s = try store()
        let (model, _) = try recommender(s)
        #expect(try s.run(["erase", "--subject", "C5", "--role", "privacy_officer"]).status == 0)
        let subjects = ["C0", "C5", "C-NOBODY"]   // no consent, erased, unknown
        for json in [true, false] {
            let runs = try subjects.map { id in
                try s.run(["recommend", "--model", model, "--subject", id, "--role", "app"] + (json ? ["--json"] : []))
            }
            #expect(Set(runs.map(\.status)) == [77], "\(runs.map(\.status))")
            #expect(Set(runs.map(\.stdout)).count == 1 && Set(runs.map(\.stderr)).count == 1, "\(runs.map(\.stderr))")
        }
        let denied = try auditEntries(s).filter { $0["api.operation"] as? String == "recommend" && $0["status"] as? String == "denied" }
        // Each call: one entry for the subject asked about (with its pseudonym, whether or not
        // it exists) and the call's denial, which names the subject too (a denied attempt on a
        // named customer carries its pseudonym): the same work and the same detail for all three.
        #expect(denied.count == 12 && Set(denied.map { $0["status_detail"] as? String ?? "" }) == [Vault.unavailableSubject], "\(denied)")
        #expect(denied.filter { $0["unmapped.subject"] is String }.count == 12)
        #expect(Set(denied.compactMap { $0["unmapped.subject"] as? String }).count == 3)
        let ids = try s.write("mixed.txt", subjects.joined(separator: "\n") + "\n")
        let list = try recommend(s, model, ["--subjects", ids])
        #expect(list.status == 0, "\(list.stderr)")
        let lines = list.stdout.split(separator: "\n").map { line in
            line.replacingOccurrences(of: #"^\{"customer_id":"[^"]*","#, with: "{", options: .regularExpression)
        }
        #expect(lines.count == 3 && Set(lines).count == 1 && lines[0].contains(Vault.unavailableSubject), "\(lines)")
    }
}
