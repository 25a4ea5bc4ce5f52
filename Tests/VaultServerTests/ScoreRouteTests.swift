import Foundation
import HummingbirdTesting
import PrivateModels
@testable import ProfileVault
import Testing
import VaultAudit

/// `POST /v1/scores` (issue 24): the app's route, the artifact in the body with its MAC, the
/// scores of `Regression.predict` / `KMeans.nearest`, one answer for every subject that cannot
/// be scored, options refused (400) before anything is read or audited, the trainer refused.
@Suite struct ScoreRouteTests {
    /// A linear regression (age, annual_income -> purchase spend) trained over HTTP by the trainer.
    func model(_ c: Client) async throws -> String {
        try await c.seed()
        let job = try await c.call(.post, "/v1/jobs", as: "trainer",
                                   body: #"{"job":"lin","purpose":"model_training","model":"linear_regression","derived":{"spend":{"events":"purchase","aggregate":"sum","bounds":[0,100]}},"features":["age","annual_income"],"target":"spend","epsilon":1}"#)
        #expect(job.status == .ok, "\(job.text)")
        return job.text
    }

    @Test func theAppGetsThePredictionsTheTrainerIsRefused() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let m = try await model(c)
            // As the vault loads it (the values the scores are computed with).
            let a = try f.vault.loadArtifact(.body(try JSONValue.parse(m), label: "model"))
            let r = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(m),"subjects":["C1","C2","C9"]}"#)
            #expect(r.status == .ok, "\(r.text)")
            guard case .array(let rows)? = r.json?["scores"], rows.count == 3 else { Issue.record("\(r.text)"); return }
            func score(_ v: JSONValue?) -> Double? { if case .double(let d)? = v { d } else if case .int(let i)? = v { Double(i) } else { nil } }
            #expect(score(rows[0]["score"]) == Regression.predict(a, [36, 50000]) && score(rows[1]["score"]) == Regression.predict(a, [48, 62000]), "\(r.text)")
            #expect(rows[2]["error"]?.stringValue == Vault.unscoredSubject && rows[2]["score"] == nil)
            // Alone, an unknown subject: 403 with the one answer.
            let unknown = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(m),"subject":"C9"}"#)
            #expect(unknown.status == .forbidden && unknown.error?.contains(Vault.unscoredSubject) == true, "\(unknown.text)")
            // all + top: the highest first.
            let all = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(m),"all":true,"top":2}"#)
            guard case .array(let best)? = all.json?["scores"] else { Issue.record("\(all.text)"); return }
            let want = [[36.0, 50000], [48, 62000], [33, 41000]].map { Regression.predict(a, $0) }.sorted(by: >)
            #expect(best.count == 2 && best.map { score($0["score"]) } == Array(want.prefix(2)), "\(all.text)")
            // The trainer analyses; it does not score subjects.
            let t = try await c.call(.post, "/v1/scores", as: "trainer", body: #"{"model":\#(m),"subject":"C1"}"#)
            #expect(t.status == .forbidden && t.error?.contains("may not score") == true, "\(t.text)")
            #expect(try await c.call(.post, "/v1/scores", body: #"{"model":\#(m),"subject":"C1"}"#).status == .unauthorized)
            // One entry per subject asked about: C1, C2 served, C9 denied (in the list, and alone, where
            // the refused call adds its own entry, as recommend's does); then C1..C3 read by all.
            let entries = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "score" }
            #expect(entries.filter { $0["status"]?.stringValue == "ok" }.count == 5, "\(entries.count)")
            #expect(entries.filter { $0["status"]?.stringValue == "denied" && $0["status_detail"]?.stringValue == Vault.unscoredSubject }.count == 3)
        }
    }

    @Test func badBodiesAre400BeforeAnythingIsReadOrAudited() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let m = try await model(c)
            let cases: [(String, String)] = [
                (#"{"model":\#(m),"subject":"C1","top":0}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":-1}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":10001}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":1e300}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","min_score":1e300}"#, "min_score"),
                (#"{"model":\#(m),"subject":"C1","min_score":"NaN"}"#, "min_score"),
                (#"{"model":\#(m),"all":true}"#, "all"),
                (#"{"model":\#(m),"all":true,"top":3,"subject":"C1"}"#, "all"),
                (#"{"model":\#(m),"all":"yes","top":3}"#, "all"),
                (#"{"model":\#(m)}"#, "subject"),
                (#"{"model":\#(m),"subject":"C1","colour":"red"}"#, "colour"),
            ]
            for (body, field) in cases {
                let r = try await c.call(.post, "/v1/scores", as: "app", body: body)
                #expect(r.status == .badRequest, "\(body.suffix(60)): \(r.status) \(r.text)")
                #expect(r.error?.contains(field) == true, "\(field): \(r.text)")
            }
            // A sealed artifact of another kind and an edited one: 400, never scored.
            let edited = m.replacingOccurrences(of: "\"intercept\"", with: "\"intercept_\"")
            let e = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(edited),"subject":"C1"}"#)
            #expect(e.status == .badRequest, "\(e.text)")
            let km = try await c.call(.post, "/v1/jobs", as: "trainer",
                                      body: #"{"job":"km","purpose":"model_training","model":"kmeans","features":["age","annual_income"],"params":{"k":2},"epsilon":0.5}"#)
            let seg = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(km.text),"subject":"C1","min_score":0.5}"#)
            #expect(seg.status == .badRequest && seg.error?.contains("segments") == true, "\(seg.text)")
            let ok = try await c.call(.post, "/v1/scores", as: "app", body: #"{"model":\#(km.text),"subject":"C1"}"#)
            #expect(ok.status == .ok && ok.text.contains("\"segment\""), "\(ok.text)")
            // Nothing was read for the refused bodies: only the kmeans call that succeeded is an ok score entry.
            let served = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "score" && $0["status"]?.stringValue == "ok" }
            #expect(served.count == 1, "\(served.count)")
        }
    }
}
