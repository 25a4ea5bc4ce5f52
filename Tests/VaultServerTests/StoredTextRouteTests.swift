import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import VaultAudit

/// Issue 18: U+0000 in free text the store would keep (a consent source, an erasure reason) is
/// refused at the gate, whatever the engine (PostgreSQL's text cannot hold it; SQLite stored the
/// text cut at it): 400 naming the field, never the value, and nothing changes.
@Suite struct StoredTextRouteTests {
    @Test func aNulInASourceOrAReasonIsRefusedAndChangesNothing() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let consent = try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer",
                                           body: #"{"purpose":"analytics","granted":false,"source":"web\u0000SECRET-SRC"}"#)
            #expect(consent.status == .badRequest, "\(consent.text)")
            #expect(consent.text.contains("the consent source contains the control character U+0000"), "\(consent.text)")
            #expect(!consent.text.contains("SECRET"))
            // The refused revocation changed nothing: the next one changes C2's state.
            let revoke = try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer",
                                          body: #"{"purpose":"analytics","granted":false,"source":"web"}"#)
            #expect(revoke.json?["changed"]?.intValue == 1, "\(revoke.text)")

            let erase = try await c.call(.delete, "/v1/subjects/C3?reason=request%00SECRET-RSN", as: "privacy_officer")
            #expect(erase.status == .badRequest, "\(erase.text)")
            #expect(erase.text.contains("the erasure reason contains the control character U+0000"), "\(erase.text)")
            #expect(!erase.text.contains("SECRET"))
            // C3 is still there: a later erasure finds it.
            let again = try await c.call(.delete, "/v1/subjects/C3?reason=request", as: "privacy_officer")
            #expect(again.status == .ok, "\(again.text)")
            #expect(again.json?["reason"]?.stringValue == "request")

            let recorded = try f.auditEntries().map { "\($0["status_detail"]?.stringValue ?? "")" }.joined(separator: "\n")
            #expect(!recorded.contains("SECRET"), "\(recorded)")
            #expect(recorded.contains("the consent source contains the control character U+0000"), "\(recorded)")
            #expect(recorded.contains("the erasure reason contains the control character U+0000"), "\(recorded)")
        }
    }
}
