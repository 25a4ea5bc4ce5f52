import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultAudit
import VaultServer

/// Every route of SPEC §8 through Hummingbird's router test client (no socket): its happy path
/// with the CLI's JSON shape, and its 401 / 403 / 404 / 400 answers.
@Suite struct RouteTests {
    @Test func healthzAnswersWithoutAToken() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let r = try await c.call(.get, "/healthz")
            #expect(r.status == .ok)
            #expect(r.json?["status"]?.stringValue == "ok")
            #expect(r.headers[HTTPFields.Element.Name("x-request-id")!] != nil)
        }
    }

    @Test func profilesAreIngestedAtomicallyByTheOperator() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let r = try await c.call(.post, "/v1/profiles", as: "operator", body: ServiceFixture.profiles)
            #expect(r.status == .ok)
            #expect(r.json?["inserted"]?.intValue == 3)
            #expect(r.json?["rejected"]?.intValue == 0)

            // One bad record refuses the whole body: C9 is not written either.
            let bad = #"[{"customer_id":"C9","email":"nine@example.com","full_name":"Nine","phone":"+49 30 9","birth_date":"1980-01-02","age":36,"gender":"female","country":"DE","annual_income":1},{"customer_id":"C10","email":"ten@example.com","full_name":"Ten Secretname","phone":"+49 30 10","birth_date":"1980-01-02","age":150,"gender":"female","country":"DE","annual_income":1}]"#
            let b = try await c.call(.post, "/v1/profiles", as: "operator", body: bad)
            #expect(b.status == .badRequest)
            #expect(b.error?.contains("record 2") == true, "\(b.text)")
            #expect(b.error?.contains("age") == true)
            #expect(!b.text.contains("ten@example.com") && !b.text.contains("Secretname"))
            #expect(!b.text.contains("/dev/shm") && !b.text.contains(f.dir))
            let g = try await c.call(.get, "/v1/subjects/C9?purpose=customer_support", as: "support")
            #expect(g.status == .notFound)

            #expect(try await c.call(.post, "/v1/profiles", body: ServiceFixture.profiles).status == .unauthorized)
            #expect(try await c.call(.post, "/v1/profiles", token: "not-a-token", body: ServiceFixture.profiles).status == .unauthorized)
            #expect(try await c.call(.post, "/v1/profiles", as: "support", body: ServiceFixture.profiles).status == .forbidden)
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: #"{"customer_id":"C1"}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: "[1,2").status == .badRequest)
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: "[]").status == .badRequest)
        }
    }

    @Test func eventsAreIngestedByTheOperator() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let ev = #"[{"customer_id":"C1","kind":"purchase","item":"SKU-1","value":12.5,"time":"2026-10-01T12:00:00Z"},{"customer_id":"C2","kind":"rating","item":"SKU-2","value":4,"time":"2026-10-02T12:00:00Z"}]"#
            let r = try await c.call(.post, "/v1/events", as: "operator", body: ev)
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.json?["inserted"]?.intValue == 2)
            let unknown = #"[{"customer_id":"C404","kind":"purchase","item":"SKU-1","value":1,"time":"2026-10-01T12:00:00Z"}]"#
            let u = try await c.call(.post, "/v1/events", as: "operator", body: unknown)
            #expect(u.status == .badRequest, "\(u.text)")
            #expect(u.json?["error"] != nil && !u.text.contains("C404"))
            #expect(try await c.call(.post, "/v1/events", as: "trainer", body: ev).status == .forbidden)
            #expect(try await c.call(.post, "/v1/events", body: ev).status == .unauthorized)
        }
    }

    @Test func supportReadsADecryptedProfileForAPurposeThatMayReadPII() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let r = try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support")
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.json?["customer_id"]?.stringValue == "C1")
            #expect(r.json?["email"]?.stringValue == "ada@example.com")
            #expect(r.json?["age"] == nil)   // customer_support has no may_read

            let missing = try await c.call(.get, "/v1/subjects/Secret-Customer-77?purpose=customer_support", as: "support")
            #expect(missing.status == .notFound)
            #expect(missing.error != nil && !missing.text.contains("Secret-Customer-77"))
            #expect(try await c.call(.get, "/v1/subjects/C1", as: "support").status == .badRequest)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=analytics", as: "support").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=marketing", as: "support").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "trainer").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "nobody").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support").status == .unauthorized)
        }
    }

    @Test func thePrivacyOfficerChangesConsentExportsAndErases() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let revoke = try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer",
                                          body: #"{"purpose":"analytics","granted":false,"source":"web-form"}"#)
            #expect(revoke.status == .ok, "\(revoke.text)")
            #expect(revoke.json?["changed"]?.intValue == 1)
            #expect(revoke.json?["granted"] == .bool(false))
            #expect(try await c.call(.post, "/v1/subjects/C404/consent", as: "privacy_officer", body: #"{"purpose":"analytics","granted":true}"#).status == .notFound)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer", body: #"{"purpose":"analytics"}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer", body: #"{"purpose":"analytics","granted":"yes"}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer", body: #"{"purpose":"analytics","granted":true,"extra":1}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "privacy_officer", body: #"{"purpose":"marketing","granted":true}"#).status == .forbidden)
            #expect(try await c.call(.post, "/v1/subjects/C2/consent", as: "support", body: #"{"purpose":"analytics","granted":true}"#).status == .forbidden)

            let export = try await c.call(.get, "/v1/subjects/C2/export", as: "privacy_officer")
            #expect(export.status == .ok)
            #expect(export.json?["customer_id"]?.stringValue == "C2")
            #expect(export.json?["full_name"]?.stringValue == "Bob Secretname")
            if case .array(let consent)? = export.json?["consent"] { #expect(consent.count == 3) } else { Issue.record("no consent array") }
            #expect(try await c.call(.get, "/v1/subjects/C404/export", as: "privacy_officer").status == .notFound)
            #expect(try await c.call(.get, "/v1/subjects/C2/export", as: "auditor").status == .forbidden)

            let erase = try await c.call(.delete, "/v1/subjects/C2?reason=test%20request", as: "privacy_officer")
            #expect(erase.status == .ok, "\(erase.text)")
            #expect(erase.json?["customer_id"]?.stringValue == "C2")
            #expect(erase.json?["receipt"]?.stringValue?.count == 64)
            #expect(erase.json?["reason"]?.stringValue == "test request")
            #expect(try await c.call(.get, "/v1/subjects/C2/export", as: "privacy_officer").status == .notFound)
            #expect(try await c.call(.delete, "/v1/subjects/C2", as: "privacy_officer").status == .notFound)
            #expect(try await c.call(.delete, "/v1/subjects/C1", as: "operator").status == .forbidden)
            #expect(try await c.call(.delete, "/v1/subjects/C1").status == .unauthorized)
        }
    }

    @Test func theTrainerRunsDPQueriesUnderTheBudget() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let r = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":0.5,"where":"age>=30"}"#)
            #expect(r.status == .ok, "\(r.text)")
            for k in ["value", "epsilon", "scale", "ci95", "budget_left"] { #expect(r.json?[k] != nil, "missing \(k)") }
            let h = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"histogram","purpose":"analytics","epsilon":0.5,"attribute":"country"}"#)
            #expect(h.status == .ok)
            #expect(h.json?["groups"]?["DE"] != nil)
            let g = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"mean","purpose":"analytics","epsilon":0.5,"attribute":"age","group_by":"gender","where":["country!=US"]}"#)
            #expect(g.status == .ok, "\(g.text)")

            let budget = try await c.call(.get, "/v1/budget", as: "trainer")
            #expect(budget.status == .ok)
            if case .double(let spent)? = budget.json?["purposes"]?["analytics"]?["spent"] { #expect(abs(spent - 1.5) < 1e-9) } else { Issue.record("\(budget.text)") }
            #expect(try await c.call(.get, "/v1/budget", as: "support").status == .forbidden)
            #expect(try await c.call(.get, "/v1/budget").status == .unauthorized)

            let over = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":3.0}"#)
            #expect(over.status == .forbidden)
            #expect(over.error?.contains("budget") == true)
            #expect(try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"median","purpose":"analytics","epsilon":0.5}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":-1}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"age>>3"}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"sum","purpose":"analytics","epsilon":0.1,"attribute":"email"}"#).status == .forbidden)
            #expect(try await c.call(.post, "/v1/queries", as: "operator", body: #"{"kind":"count","purpose":"analytics","epsilon":0.1}"#).status == .forbidden)
        }
    }

    @Test func theTrainerRunsAJobAndGetsTheArtifact() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let job = #"{"job":"seg","purpose":"model_training","model":"segments","features":["age"],"params":{"by":"country"},"epsilon":1.0}"#
            let r = try await c.call(.post, "/v1/jobs", as: "trainer", body: job)
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.json?["model"]?.stringValue == "segments")
            #expect(r.json?["privacy"]?["job"]?.stringValue == "seg")

            let pii = try await c.call(.post, "/v1/jobs", as: "trainer", body: job.replacingOccurrences(of: #"["age"]"#, with: #"["birth_date"]"#))
            #expect(pii.status == .forbidden)
            #expect(pii.error?.contains("PII") == true)
            let unknownKey = try await c.call(.post, "/v1/jobs", as: "trainer", body: #"{"job":"x","purpose":"model_training","model":"kmeans","features":["age"],"epsilon":1,"colour":"red"}"#)
            #expect(unknownKey.status == .badRequest)
            #expect(unknownKey.error?.contains("colour") == true)
            #expect(unknownKey.error?.contains(f.dir) == false)
            #expect(unknownKey.error?.hasPrefix("request body: ") == true, "\(unknownKey.text)")
            #expect(try await c.call(.post, "/v1/jobs", as: "trainer", body: #"{"job":"r","purpose":"model_training","model":"recommender","events":"purchase","items_from":"/etc/passwd","epsilon":1}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/jobs", as: "support", body: job).status == .forbidden)
            #expect(try await c.call(.post, "/v1/jobs", body: job).status == .unauthorized)
        }
    }

    @Test func theAuditorExportsJSONLinesEndingWithTheSignedHead() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let r = try await c.call(.get, "/v1/audit?since=2020-01-01", as: "auditor")
            #expect(r.status == .ok)
            #expect(r.headers[.contentType] == "application/x-ndjson")
            let lines = r.text.split(separator: "\n")
            #expect(lines.count > 3)
            let head = try JSONValue.parse(String(lines.last!))
            #expect(head["head"]?["signature"] != nil)
            #expect(r.headers[HTTPFields.Element.Name("x-audit-head")!] == head["head"]?["hash"]?.stringValue)
            #expect(!r.text.contains("ada@example.com") && !r.text.contains("\"C1\""))
            #expect(try await c.call(.get, "/v1/audit?since=yesterday", as: "auditor").status == .badRequest)
            #expect(try await c.call(.get, "/v1/audit", as: "trainer").status == .forbidden)
            #expect(try await c.call(.get, "/v1/audit").status == .unauthorized)
        }
    }
}
