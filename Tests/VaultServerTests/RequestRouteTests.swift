import Foundation

import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultValues

/// The request register over HTTP (issue 19 §1): the same operations, refusals and messages
/// as `profilectl requests`.
@Suite struct RequestRouteTests {
    func object(_ a: Client.Answer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(a.text.utf8))) as? [String: Any] ?? [:]
    }

    @Test func aRequestIsOpenedListedExtendedAndFulfilled() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let o = try await c.call(.post, "/v1/requests", as: "privacy_officer",
                                     body: #"{"type":"access","customer_id":"C1","received":"2026-11-01","channel":"web","note":"Ada rang twice"}"#)
            #expect(o.status == .created, "\(o.text)")
            let id = try #require(object(o)["request"] as? String)
            #expect((object(o)["due"] as? String)?.hasPrefix("2026-12-01") == true)
            let l = try await c.call(.get, "/v1/requests?status=overdue", as: "privacy_officer")
            let rows = try #require(object(l)["requests"] as? [[String: Any]])
            #expect(rows.map { $0["request"] as? String } == [id])
            #expect(!l.text.contains("C1") && !l.text.contains("Ada"))
            let x = try await c.call(.post, "/v1/requests/\(id)/extend", as: "privacy_officer", body: #"{"reason":"archive"}"#)
            #expect(x.status == .ok, "\(x.text)")
            let x2 = try await c.call(.post, "/v1/requests/\(id)/extend", as: "privacy_officer", body: #"{"reason":"again"}"#)
            #expect(x2.status == .badRequest)
            // An access request returns the export and attaches its digest.
            let ful = try await c.call(.post, "/v1/requests/\(id)/fulfil", as: "privacy_officer")
            #expect(ful.status == .ok, "\(ful.text)")
            let body = object(ful)
            #expect((body["export"] as? [String: Any])?["customer_id"] as? String == "C1")
            let digest = try #require(body["export_sha256"] as? String)
            #expect(((body["request"] as? [String: Any])?["outcome"] as? String) == "sha256:\(digest)")
            // Closed: deny refused.
            #expect(try await c.call(.post, "/v1/requests/\(id)/deny", as: "privacy_officer", body: #"{"reason":"x"}"#).status == .badRequest)
        }
    }

    @Test func otherTypesAreCheckedOrConfirmedWithDone() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            // An objection with none recorded is refused, even with {"done": true}.
            let o = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"objection","customer_id":"C3"}"#)
            let oid = try #require(object(o)["request"] as? String)
            for body in [nil, #"{"done":true}"#] as [String?] {
                let r = try await c.call(.post, "/v1/requests/\(oid)/fulfil", as: "privacy_officer", body: body)
                #expect(r.status == .badRequest && r.error?.contains("consent object") == true, "\(r.text)")
            }
            // A rectification is confirmed with {"done": true} once the officer has rectified.
            let q = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"rectification","customer_id":"C3"}"#)
            let id = try #require(object(q)["request"] as? String)
            let refused = try await c.call(.post, "/v1/requests/\(id)/fulfil", as: "privacy_officer")
            #expect(refused.status == .badRequest && refused.error?.contains("done") == true)
            let done = try await c.call(.post, "/v1/requests/\(id)/fulfil", as: "privacy_officer", body: #"{"done":true}"#)
            #expect(done.status == .ok, "\(done.text)")
            #expect((object(done)["request"] as? [String: Any])?["outcome"] as? String == "confirmed")
        }
    }

    @Test func erasureThroughTheRegisterThenTheErasedSubjectSaysWhen() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let o = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"erasure","customer_id":"C2"}"#)
            let id = try #require(object(o)["request"] as? String)
            let ful = try await c.call(.post, "/v1/requests/\(id)/fulfil", as: "privacy_officer")
            #expect(ful.status == .ok, "\(ful.text)")
            let receipt = try #require((object(ful)["receipt"] as? [String: Any])?["receipt"] as? String)
            for (method, uri, body) in [(HTTPRequest.Method.get, "/v1/subjects/C2/export", nil as String?),
                                        (.delete, "/v1/subjects/C2", nil),
                                        (.post, "/v1/requests", #"{"type":"access","customer_id":"C2"}"#)] {
                let a = try await c.call(method, uri, as: "privacy_officer", body: body)
                #expect(a.status == .notFound, "\(uri)")
                #expect(a.error?.contains("erased on") == true && a.error?.contains(receipt) == true, "\(uri): \(a.text)")
            }
            let g = try await c.call(.get, "/v1/subjects/C2?purpose=customer_support", as: "support")
            #expect(g.status == .notFound && g.error?.contains(receipt) == true)
            // An unknown subject, an unknown request, a bad type, a role without the permission.
            let u = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"access","customer_id":"NOBODY-77"}"#)
            #expect(u.status == .notFound && u.error?.contains("NOBODY-77") == false)
            #expect(try await c.call(.post, "/v1/requests/req_0000000000000000/deny", as: "privacy_officer", body: #"{"reason":"x"}"#).status == .notFound)
            #expect(try await c.call(.post, "/v1/requests/whatever/deny", as: "privacy_officer", body: #"{"reason":"x"}"#).status == .notFound)
            let t = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"complaint","customer_id":"C1"}"#)
            #expect(t.status == .badRequest && t.error?.hasPrefix("type:") == true && t.error?.contains("complaint") == false)
            #expect(try await c.call(.get, "/v1/requests?status=late", as: "privacy_officer").status == .badRequest)
            #expect(try await c.call(.get, "/v1/requests", as: "support").status == .forbidden)
            #expect(try await c.call(.post, "/v1/requests", as: "trainer", body: #"{"type":"access","customer_id":"C1"}"#).status == .forbidden)
        }
    }
}
