import Foundation
import HummingbirdTesting
@testable import ProfileVault
import Testing
import VaultAudit

/// Issue 23 over HTTP: `"dry_run"` answers the quote and charges nothing (audited as a quote),
/// `"accuracy"`/`"confidence"` spend the least epsilon, `"bounds"` outside the schema's is 400
/// naming the field with nothing charged.
@Suite struct QueryAccuracyRouteTests {
    func spent(_ c: Client) async throws -> Double {
        switch try await c.call(.get, "/v1/budget", as: "trainer").json?["purposes"]?["analytics"]?["spent"] {
        case .double(let d)?: return d
        case .int(let i)?: return Double(i)
        default: return -1
        }
    }

    @Test func dryRunAccuracyAndBounds() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let dry = try await c.call(.post, "/v1/queries", as: "trainer",
                                       body: #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[20,60],"dry_run":true}"#)
            #expect(dry.status == .ok, "\(dry.text)")
            #expect(dry.json?["dry_run"] == .bool(true) && dry.json?["fits"] == .bool(true))
            #expect(dry.json?["bounds"] != nil && dry.json?["interval_half_width"] != nil)
            #expect(try await spent(c) == 0)
            let quotes = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "query.sum.quote" && $0["status"]?.stringValue == "ok" }
            #expect(quotes.count == 1)

            let acc = try await c.call(.post, "/v1/queries", as: "trainer",
                                       body: #"{"kind":"count","purpose":"analytics","accuracy":30,"confidence":0.9}"#)
            #expect(acc.status == .ok, "\(acc.text)")
            #expect(acc.json?["cached"] == .bool(false) && acc.json?["confidence"] == .double(0.9))
            let charged = try await spent(c)
            #expect(charged > 0)

            for body in [#"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[0,60]}"#,
                         #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[60,20]}"#,
                         #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":"20,60"}"#,
                         #"{"kind":"count","purpose":"analytics","epsilon":0.5,"accuracy":3}"#,
                         #"{"kind":"count","purpose":"analytics"}"#,
                         #"{"kind":"count","purpose":"analytics","accuracy":3,"confidence":1}"#,
                         #"{"kind":"count","purpose":"analytics","accuracy":3,"dry_run":"yes"}"#] {
                let r = try await c.call(.post, "/v1/queries", as: "trainer", body: body)
                #expect(r.status == .badRequest, "\(body): \(r.status) \(r.text)")
            }
            let outside = try await c.call(.post, "/v1/queries", as: "trainer",
                                           body: #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[0,60]}"#)
            #expect(outside.error?.contains("--bounds") == true || outside.error?.contains("bounds") == true, "\(outside.text)")
            #expect(try await spent(c) == charged)
        }
    }

    @Test func quantileKind() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let r = try await c.call(.post, "/v1/queries", as: "trainer",
                                     body: #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":[0.5,0.9]}"#)
            #expect(r.status == .ok, "\(r.text)")
            guard case .array(let qs)? = r.json?["quantiles"] else { Issue.record("\(r.text)"); return }
            #expect(qs.count == 2)
            let one = try await c.call(.post, "/v1/queries", as: "trainer",
                                       body: #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":0.5,"dry_run":true}"#)
            #expect(one.status == .ok && one.json?["dry_run"] == .bool(true), "\(one.text)")
            for body in [#"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age"}"#,
                         #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":2}"#,
                         #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":["x"]}"#,
                         #"{"kind":"quantile","purpose":"analytics","epsilon":1,"q":0.5}"#,
                         #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":0.5,"accuracy":3}"#,
                         #"{"kind":"quantile","purpose":"analytics","epsilon":1,"attribute":"age","q":0.5,"bounds":[0,50]}"#] {
                let b = try await c.call(.post, "/v1/queries", as: "trainer", body: body)
                #expect(b.status == .badRequest, "\(body): \(b.status) \(b.text)")
            }
        }
    }
}
