import Foundation
import HummingbirdTesting
@testable import ProfileVault
import Testing
import VaultAudit

/// `POST /v1/recommendations` (SPEC §12): the app's route, not the trainer's; the artifact
/// travels in the body and must carry a MAC that verifies; `top` is capped; unknown and
/// unconsented subjects get the same answer; bad bodies are 400 naming the field, never 500.
@Suite struct RecommendationRouteTests {
    /// Seeds C1..C3 (consenting), C1..C3 purchases, and trains a recommender over a 100-item
    /// catalog (so `top` may be 10) as the trainer, outside HTTP (a catalog names a file).
    func model(_ f: ServiceFixture, _ c: Client) async throws -> String {
        try await c.seed()
        let ev = (1...3).flatMap { i in (0..<3).map { j in
            #"{"customer_id":"C\#(i)","kind":"purchase","item":"SKU-\#(i * 3 + j)","value":5,"time":"2026-10-0\#(j + 1)T12:00:00Z"}"#
        } }
        #expect(try await c.call(.post, "/v1/events", as: "operator", body: "[" + ev.joined(separator: ",") + "]").status == .ok)
        // The catalog `products` of a copy of the shipped policies (the same files, so the same
        // policy in force), holding these 100 items.
        let policies = f.dir + "/policies"
        try FileManager.default.createDirectory(atPath: policies + "/catalogs", withIntermediateDirectories: true)
        for file in ["schema.yaml", "policy.yaml"] {
            try FileManager.default.copyItem(atPath: ServiceFixture.repoRoot + "/policies/" + file, toPath: policies + "/" + file)
        }
        try (0..<100).map { "SKU-\($0)" }.joined(separator: "\n").write(toFile: policies + "/catalogs/products.tsv", atomically: true, encoding: .utf8)
        let job = f.dir + "/rec.yaml"
        try "job: rec\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: products\nepsilon: 1\n"
            .write(toFile: job, atomically: true, encoding: .utf8)
        var config = f.vault.configuration
        config.policyDirectory = policies
        config.actor = ProfileVault.Actor(name: "t", role: "trainer")
        let trainer = try Vault.open(config)
        defer { try? trainer.store.close() }
        let r = try trainer.train(jobFile: job)
        return String(decoding: r.json, as: UTF8.self)
    }

    @Test func theAppIsServedTheTrainerIsNot() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let m = try await model(f, c)
            let body = #"{"model":\#(m),"subject":"C1","top":10}"#
            let ok = try await c.call(.post, "/v1/recommendations", as: "app", body: body)
            #expect(ok.status == .ok, "\(ok.text)")
            guard case .array(let recs)? = ok.json?["recommendations"], case .array(let items)? = recs.first?["items"] else {
                Issue.record("\(ok.text)"); return
            }
            #expect(recs.first?["customer_id"]?.stringValue == "C1")
            let names = items.compactMap(\.stringValue)
            #expect(names.count == 10 && Set(names).isDisjoint(with: ["SKU-3", "SKU-4", "SKU-5"]), "\(names)")
            // Above a tenth of the 100 items: cut to 10.
            let cut = try await c.call(.post, "/v1/recommendations", as: "app", body: #"{"model":\#(m),"subject":"C1","top":50}"#)
            if case .array(let rs)? = cut.json?["recommendations"], case .array(let its)? = rs.first?["items"] { #expect(its.count == 10) } else { Issue.record("\(cut.text)") }
            // Several subjects, and the default top (10).
            let many = try await c.call(.post, "/v1/recommendations", as: "app", body: #"{"model":\#(m),"subjects":["C1","C2"]}"#)
            if case .array(let rs)? = many.json?["recommendations"] { #expect(rs.count == 2) } else { Issue.record("\(many.text)") }
            // The trainer analyses; it does not serve subjects.
            let t = try await c.call(.post, "/v1/recommendations", as: "trainer", body: body)
            #expect(t.status == .forbidden && t.error?.contains("serve_recommendations") == true, "\(t.text)")
            #expect(try await c.call(.post, "/v1/recommendations", body: body).status == .unauthorized)
        }
    }

    @Test func badBodiesAre400NamingTheFieldNever500() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let m = try await model(f, c)
            // A hand-edited artifact: the catalog's first item renamed, a popularity changed.
            let renamed = m.replacingOccurrences(of: "\"SKU-0\"", with: "\"SKU-X\"")
            #expect(renamed != m)
            guard case .object(var pairs)? = try? JSONValue.parse(m) else { Issue.record("artifact"); return }
            let withoutMAC = JSONValue.object(pairs.filter { $0.0 != "mac" }).rendered(pretty: false)
            if let i = pairs.firstIndex(where: { $0.0 == "popularity" }), case .array(var pop) = pairs[i].1 {
                pop[0] = .double(1e6)
                pairs[i].1 = .array(pop)
            }
            let inflated = JSONValue.object(pairs).rendered(pretty: false)
            let cases: [(String, String)] = [
                ("[]", "request body"),
                (#"{"subject":"C1"}"#, "model"),
                (#"{"model":"rec.json","subject":"C1"}"#, "model"),
                (#"{"model":\#(m)}"#, "subject"),
                (#"{"model":\#(m),"subject":"C1","subjects":["C2"]}"#, "subjects"),
                (#"{"model":\#(m),"subjects":"C2"}"#, "subjects"),
                (#"{"model":\#(m),"subjects":[]}"#, "subjects"),
                (#"{"model":\#(m),"subjects":[7]}"#, "subjects[0]"),
                (#"{"model":\#(m),"subject":7}"#, "subject"),
                (#"{"model":\#(m),"subject":"C1","top":0}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":1000}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":2.5}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","top":"ten"}"#, "top"),
                (#"{"model":\#(m),"subject":"C1","colour":"red"}"#, "colour"),
                (#"{"model":\#(renamed),"subject":"C1"}"#, "model: the model artifact's MAC does not verify"),
                (#"{"model":\#(inflated),"subject":"C1"}"#, "model: the model artifact's MAC does not verify"),
                (#"{"model":\#(withoutMAC),"subject":"C1"}"#, "model: the model artifact has no MAC"),
                (#"{"model":{"model":"kmeans"},"subject":"C1"}"#, "model"),
            ]
            for (body, field) in cases {
                let r = try await c.call(.post, "/v1/recommendations", as: "app", body: body)
                #expect(r.status == .badRequest, "\(body.prefix(80)): \(r.status) \(r.text)")
                #expect(r.error?.hasPrefix(field) == true || r.error?.contains(field) == true, "\(field): \(r.text)")
            }
            // A hand-edited artifact is never scored: nothing was recommended from it.
            let served = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "recommend" && $0["status"]?.stringValue == "ok" }
            #expect(served.isEmpty)
        }
    }

    /// Issue 16 item 8 over HTTP: job and query answers carry "warnings"; a job's artifact its MAC.
    @Test func jobAndQueryAnswersCarryWarnings() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let job = try await c.call(.post, "/v1/jobs", as: "trainer",
                                       body: #"{"job":"km","purpose":"model_training","model":"kmeans","features":["age"],"params":{"k":2},"epsilon":0.5}"#)
            #expect(job.status == .ok, "\(job.text)")
            guard case .array? = job.json?["warnings"], case .string(let mac)? = job.json?["mac"] else { Issue.record("\(job.text)"); return }
            #expect(mac.hasPrefix("hmac-sha256:") && mac.count == 12 + 64)
            #expect(job.json?["privacy"]?["noisy_subjects"] != nil)
            let q = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":0.1}"#)
            guard case .array? = q.json?["warnings"] else { Issue.record("\(q.text)"); return }
        }
    }

    @Test func unknownAndUnconsentedSubjectsGetTheSameAnswer() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let m = try await model(f, c)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer",
                                     body: #"{"purpose":"model_training","granted":false,"source":"test"}"#).status == .ok)
            #expect(try await c.call(.delete, "/v1/subjects/C3", as: "privacy_officer").status == .ok)
            var answers: [String] = []
            for id in ["C2", "C3", "NOBODY"] {   // no consent, erased, unknown
                let r = try await c.call(.post, "/v1/recommendations", as: "app", body: #"{"model":\#(m),"subject":"\#(id)"}"#)
                #expect(r.status == .forbidden)
                answers.append(r.text)
            }
            #expect(Set(answers).count == 1, "\(answers)")
            // In a list: each gets the same entry but for its ID.
            let list = try await c.call(.post, "/v1/recommendations", as: "app", body: #"{"model":\#(m),"subjects":["C2","C3","NOBODY"]}"#)
            guard case .array(let rs)? = list.json?["recommendations"], rs.count == 3 else { Issue.record("\(list.text)"); return }
            let stripped = rs.map { r -> String in
                guard case .object(let p) = r else { return "" }
                return JSONValue.object(p.filter { $0.0 != "customer_id" }).rendered(pretty: false)
            }
            #expect(Set(stripped).count == 1 && stripped[0].contains(Vault.unavailableSubject), "\(stripped)")
        }
    }
}
