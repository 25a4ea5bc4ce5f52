import Foundation
import HummingbirdTesting
@testable import ProfileVault
import Testing
import VaultAudit

/// Issue 23 over HTTP: an identical query is answered from the release cache (`"cached": true`,
/// `"epsilon_charged": 0`, nothing charged), `"fresh"` pays again, `"kind": "bounds"` and
/// `"report_clamped"` answer their forms, bad bodies are 400 with nothing charged.
@Suite struct ReleaseCacheRouteTests {
    func spent(_ c: Client) async throws -> Double {
        switch try await c.call(.get, "/v1/budget", as: "trainer").json?["purposes"]?["analytics"]?["spent"] {
        case .double(let d)?: return d
        case .int(let i)?: return Double(i)
        default: return -1
        }
    }

    @Test func payOnceBoundsAndClamped() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let body = #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[20,60],"where":"age>=30,age<60"}"#
            let first = try await c.call(.post, "/v1/queries", as: "trainer", body: body)
            #expect(first.status == .ok && first.json?["cached"] == .bool(false), "\(first.text)")
            let charged = try await spent(c)
            let again = try await c.call(.post, "/v1/queries", as: "trainer",
                                         body: #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"attribute":"age","bounds":[20,60],"where":["age<60","age>=30"]}"#)
            #expect(again.status == .ok && again.json?["cached"] == .bool(true) && again.json?["epsilon_charged"] == .double(0), "\(again.text)")
            #expect(again.json?["value"] == first.json?["value"] && again.json?["released_at"] != nil)
            #expect(try await spent(c) == charged)
            let dry = try await c.call(.post, "/v1/queries", as: "trainer", body: body.replacingOccurrences(of: "}", with: #","dry_run":true}"#))
            #expect(dry.json?["cached"] == .bool(true) && dry.json?["epsilon_charged"] == .double(0), "\(dry.text)")
            let fresh = try await c.call(.post, "/v1/queries", as: "trainer", body: body.replacingOccurrences(of: "}", with: #","fresh":true}"#))
            #expect(fresh.json?["cached"] == .bool(false), "\(fresh.text)")
            #expect(try await spent(c) > charged)

            let b = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"bounds","purpose":"analytics","epsilon":1,"attribute":"age"}"#)
            #expect(b.status == .ok && b.json?["bounds"] != nil && b.json?["suggestion"] != nil, "\(b.text)")
            let clamped = try await c.call(.post, "/v1/queries", as: "trainer",
                                           body: #"{"kind":"mean","purpose":"analytics","epsilon":1,"attribute":"age","bounds":[30,40],"report_clamped":true,"clamped_epsilon":0.3}"#)
            #expect(clamped.status == .ok && clamped.json?["clamped"]?["share"] != nil, "\(clamped.text)")
            let before = try await spent(c)
            for bad in [#"{"kind":"sum","purpose":"analytics","epsilon":1,"attribute":"age","bounds":[30,40],"clamped_epsilon":0.3}"#,
                        #"{"kind":"sum","purpose":"analytics","epsilon":1,"attribute":"age","report_clamped":true}"#,
                        #"{"kind":"sum","purpose":"analytics","epsilon":1,"attribute":"age","fresh":"yes"}"#,
                        #"{"kind":"bounds","purpose":"analytics","epsilon":1,"attribute":"age","low":0.9,"high":0.1}"#,
                        #"{"kind":"bounds","purpose":"analytics","epsilon":1,"attribute":"age","q":0.5}"#] {
                let r = try await c.call(.post, "/v1/queries", as: "trainer", body: bad)
                #expect(r.status == .badRequest, "\(bad): \(r.status) \(r.text)")
            }
            #expect(try await spent(c) == before)
        }
    }
}
