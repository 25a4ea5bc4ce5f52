import DifferentialPrivacy
import Foundation
import Hummingbird
import HummingbirdTesting
@testable import ProfileVault
import Testing
import VaultAudit
@testable import VaultServer
@testable import VaultStore

/// The data subject's rights over HTTP (issue 19, part 3): restriction, rectification,
/// objection through the consent route, consent import.
@Suite struct RightsRouteTests {
    @Test func restrictionRefusesGetKeepsExportAndLeavesTheSubjectOutOfAggregates() async throws {
        let f = try ServiceFixture()
        let source = f.vault.store.aggregateSource
        try await f.test { c in
            try await c.seed()
            let count = AggregateRequest(consentPurpose: "analytics", grouping: nil, coordinates: [.subjects])
            #expect(try source.boundedSums(count)[""] == [3])
            let denied = try await c.call(.post, "/v1/subjects/C2/restriction", as: "trainer")
            #expect(denied.status == .forbidden)
            let r = try await c.call(.post, "/v1/subjects/C2/restriction", as: "privacy_officer")
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.text.contains(#""changed":true"#) && r.text.contains(#""customer_id":"C2""#))
            let again = try await c.call(.post, "/v1/subjects/C2/restriction", as: "privacy_officer")
            #expect(again.text.contains(#""changed":false"#))
            #expect(try source.boundedSums(count)[""] == [2])
            let get = try await c.call(.get, "/v1/subjects/C2?purpose=customer_support", as: "support")
            #expect(get.status == .forbidden && get.text.contains("Art. 18"), "\(get.text)")
            #expect(!get.text.contains("Bob"))
            let export = try await c.call(.get, "/v1/subjects/C2/export", as: "privacy_officer")
            #expect(export.status == .ok && export.text.contains("Bob Secretname"))
            let lifted = try await c.call(.delete, "/v1/subjects/C2/restriction", as: "privacy_officer")
            #expect(lifted.status == .ok && lifted.text.contains(#""changed":true"#), "\(lifted.text)")
            #expect(try source.boundedSums(count)[""] == [3])
            #expect(try await c.call(.get, "/v1/subjects/C2?purpose=customer_support", as: "support").status == .ok)
            #expect(try await c.call(.post, "/v1/subjects/C404/restriction", as: "privacy_officer").status == .notFound)
        }
    }

    @Test func rectificationIsAllOrNothingAndNeverEchoesAValue() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let bad = try await c.call(.post, "/v1/subjects/C1/rectification", as: "privacy_officer",
                                       body: #"{"set":{"email":"new-ada@example.org","age":"old-as-91"}}"#)
            #expect(bad.status == .badRequest && bad.text.contains("age"), "\(bad.text)")
            #expect(!bad.text.contains("old-as-91") && !bad.text.contains("new-ada"))
            let unchanged = try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support")
            #expect(unchanged.text.contains("ada@example.com"), "\(unchanged.text)")
            let unknown = try await c.call(.post, "/v1/subjects/C1/rectification", as: "privacy_officer", body: #"{"set":{"shoe_size":"44"}}"#)
            #expect(unknown.status == .badRequest && unknown.text.contains("field"), "\(unknown.text)")
            #expect(try await c.call(.post, "/v1/subjects/C1/rectification", as: "support", body: #"{"set":{"age":40}}"#).status == .forbidden)
            #expect(try await c.call(.post, "/v1/subjects/C404/rectification", as: "privacy_officer", body: #"{"set":{"age":40}}"#).status == .notFound)
            let ok = try await c.call(.post, "/v1/subjects/C1/rectification", as: "privacy_officer",
                                      body: #"{"set":{"email":"new-ada@example.org","age":40,"gender":"female"}}"#)
            #expect(ok.status == .ok && ok.text.contains(#""changed":["email","age"]"#), "\(ok.text)")
            let read = try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support")
            #expect(read.text.contains("new-ada@example.org"), "\(read.text)")
        }
    }

    @Test func theConsentRouteRecordsObjectionsOnlyForLegitimateInterest() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            // The shipped policy has no legitimate_interest purpose: every objection is refused.
            let r = try await c.call(.post, "/v1/subjects/C1/consent", as: "privacy_officer", body: #"{"purpose":"analytics","objection":true}"#)
            #expect(r.status == .badRequest && r.text.contains("legitimate_interest"), "\(r.text)")
            let revoke = try await c.call(.post, "/v1/subjects/C1/consent", as: "privacy_officer", body: #"{"purpose":"customer_support","granted":false}"#)
            #expect(revoke.status == .badRequest && revoke.text.contains("contract"), "\(revoke.text)")
        }
    }

    @Test func consentImportIsAllOrNothing() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let p = try await c.call(.post, "/v1/profiles", as: "operator", body: ServiceFixture.profiles)
            #expect(p.status == .ok)
            let bad = try await c.call(.post, "/v1/consent/import", as: "privacy_officer", body: """
                {"rows":[{"customer_id":"C1","purpose":"analytics","granted":true,"time":"2025-03-01T10:00:00Z","source":"paper"},
                         {"customer_id":"C2","purpose":"analytics","granted":"true","time":"2025-03-01T10:00:00Z"},
                         {"customer_id":"C3","purpose":"analytics","granted":"perhaps","time":1740823200000}]}
                """)
            #expect(bad.status == .badRequest && bad.text.contains("record 3") && bad.text.contains("granted"), "\(bad.text)")
            #expect(try f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer")).consentHistory(customerID: "C1").isEmpty)
            let ok = try await c.call(.post, "/v1/consent/import", as: "privacy_officer", body: """
                {"rows":[{"customer_id":"C1","purpose":"analytics","granted":true,"time":"2025-03-01T10:00:00Z","source":"paper"},
                         {"customer_id":"C3","purpose":"analytics","granted":false,"time":1740823200000}]}
                """)
            #expect(ok.status == .ok && ok.text.contains(#""changed":2"#), "\(ok.text)")
            #expect(try await c.call(.post, "/v1/consent/import", as: "support", body: #"{"rows":[]}"#).status == .forbidden)
        }
        let history = try f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer")).consentHistory(customerID: "C1")
        #expect(history.count == 1 && history[0].timeMillis == 1_740_823_200_000 && history[0].source == "paper")
    }
}
