import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultAudit
import VaultServer

/// Issue 16, item 2 over HTTP: the numbers that trapped the service (SIGILL) are 400 answers
/// naming the field, with nothing charged, and the service keeps answering.
@Suite struct NumberAttackRouteTests {
    @Test func badNumbersAre400AndChargeNothing() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            // 2^-20 (1 + 2^-10): a mean's halves round to 0 units (the reported SIGILL); then a
            // subnormal, 1e300, and max_contributions out of range.
            for body in [#"{"kind":"mean","purpose":"analytics","epsilon":9.5460563898086548e-07,"attribute":"age"}"#,
                         #"{"kind":"mean","purpose":"analytics","epsilon":5e-324,"attribute":"age"}"#,
                         #"{"kind":"count","purpose":"analytics","epsilon":1e300}"#,
                         #"{"kind":"sum","purpose":"analytics","epsilon":0.5,"events":"purchase","max_contributions":1e300}"#] {
                let r = try await c.call(.post, "/v1/queries", as: "trainer", body: body)
                #expect(r.status == .badRequest, "\(body): \(r.text)")
                #expect(r.error?.contains("epsilon") == true || r.error?.contains("max_contributions") == true, "\(r.text)")
            }
            for body in [#"{"job":"k","purpose":"model_training","model":"kmeans","features":["age"],"params":{"k":1e300},"epsilon":1.0}"#,
                         #"{"job":"d","purpose":"model_training","model":"kmeans","features":["age","tiny"],"derived":{"tiny":{"events":"purchase","aggregate":"count","bounds":[0,1e-300]}},"epsilon":1.0}"#] {
                let r = try await c.call(.post, "/v1/jobs", as: "trainer", body: body)
                #expect(r.status == .badRequest, "\(body): \(r.text)")
                #expect(r.error?.contains("params.k") == true || r.error?.contains("derived.tiny.bounds") == true, "\(r.text)")
            }
            let budget = try await c.call(.get, "/v1/budget", as: "trainer")
            for purpose in ["analytics", "model_training"] {
                if case .double(let spent)? = budget.json?["purposes"]?[purpose]?["spent"] { #expect(spent == 0, "\(purpose)") }
                else if case .int(let spent)? = budget.json?["purposes"]?[purpose]?["spent"] { #expect(spent == 0, "\(purpose)") }
                else { Issue.record("\(budget.text)") }
            }
            #expect(try await c.call(.get, "/healthz").status == .ok)
        }
    }
}
