import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ProfileVault
import Testing
import VaultAudit
import VaultServer

/// Issue 19 parts 2 and 4 over HTTP: the access export's formats, `GET /v1/find` on any lookup
/// field, `POST /v1/retention` with its dry run, and the service's retention scheduler.
@Suite struct PrivacyRouteTests {
    @Test func theExportRouteAnswersEachFormat() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let j = try await c.call(.get, "/v1/subjects/C1/export", as: "privacy_officer")
            #expect(j.status == .ok, "\(j.text)")
            for key in ["purposes", "categories", "recipients", "retention", "sources", "accesses"] { #expect(j.json?[key] != nil, "\(key)") }
            #expect(j.json?["sources"]?["created_by"]?["source"]?.stringValue == "request body")
            #expect(j.json?["sources"]?["created_by"]?["actor"]?.stringValue == "test-operator")
            let h = try await c.call(.get, "/v1/subjects/C1/export?format=html", as: "privacy_officer")
            #expect(h.status == .ok)
            #expect(h.headers[.contentType]?.hasPrefix("text/html") == true)
            #expect(h.headers[HTTPFields.Element.Name("content-security-policy")!] == "default-src 'none'; style-src 'unsafe-inline'")
            #expect(h.text.contains("Ada Lovelace") && !h.text.lowercased().contains("<script"))
            let p = try await c.call(.get, "/v1/subjects/C1/export?format=portability", as: "privacy_officer")
            #expect(p.json?["profile"]?["email"]?.stringValue == "ada@example.com" && p.json?["accesses"] == nil)
            let csv = try await c.call(.get, "/v1/subjects/C1/export?format=portability&csv=true", as: "privacy_officer")
            #expect(csv.headers[.contentType]?.hasPrefix("text/csv") == true)
            #expect(csv.text.hasPrefix("record,name,value,item,time\n") && csv.text.contains("field,email,ada@example.com"))
            #expect(try await c.call(.get, "/v1/subjects/C1/export?format=xml", as: "privacy_officer").status == .badRequest)
            #expect(try await c.call(.get, "/v1/subjects/C1/export?csv=true", as: "privacy_officer").status == .badRequest)
            #expect(try await c.call(.get, "/v1/subjects/C1/export?format=html", as: "support").status == .forbidden)
        }
    }

    @Test func findSearchesAnyLookupFieldForSupport() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let r = try await c.call(.get, "/v1/find?field=email&value=ADA@example.com", as: "support")
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.json?["customer_id"]?.stringValue == "C1")
            let phone = try await c.call(.get, "/v1/find?field=phone&value=%2B49%2030%201002", as: "support")
            #expect(phone.json?["customer_id"]?.stringValue == "C2", "\(phone.text)")
            let notLookup = try await c.call(.get, "/v1/find?field=full_name&value=Bob%20Secretname", as: "support")
            #expect(notLookup.status == .badRequest && !notLookup.text.contains("Secretname"), "\(notLookup.text)")
            let none = try await c.call(.get, "/v1/find?field=email&value=secret-nobody@example.com", as: "support")
            #expect(none.status == .notFound && !none.text.contains("secret-nobody"))
            #expect(try await c.call(.get, "/v1/find?field=email", as: "support").status == .badRequest)
            #expect(try await c.call(.get, "/v1/find?field=email&value=x", as: "trainer").status == .forbidden)
        }
    }

    @Test func retentionRouteRunsTheDryRunAndTheSweep() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let ev = #"[{"customer_id":"C1","kind":"purchase","item":"SKU-1","value":12.5,"time":"2020-10-01T12:00:00Z"}]"#
            #expect(try await c.call(.post, "/v1/events", as: "operator", body: ev).status == .ok)
            let dry = try await c.call(.post, "/v1/retention", as: "privacy_officer", body: #"{"dry_run":true,"list":true}"#)
            #expect(dry.status == .ok, "\(dry.text)")
            #expect(dry.json?["events_deleted"]?.intValue == 1 && dry.json?["dry_run"] == .bool(true))
            guard case .array(let rules)? = dry.json?["rules"] else { Issue.record("no rules: \(dry.text)"); return }
            let events = rules.first { $0["after"]?.stringValue == "event_time" }
            #expect(events?["customer_ids"] == .array([.string("C1")]))
            #expect(try await c.call(.post, "/v1/retention", as: "privacy_officer", body: #"{"list":true}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/retention", as: "privacy_officer", body: #"{"dry_run":true,"as_of":"soon"}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/retention", as: "support", body: #"{"dry_run":true}"#).status == .forbidden)
            let sweep = try await c.call(.post, "/v1/retention", as: "privacy_officer", body: #"{}"#)
            #expect(sweep.status == .ok && sweep.json?["events_deleted"]?.intValue == 1, "\(sweep.text)")
        }
    }

    @Test func theSchedulerSweepsAsItsOwnActor() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let ev = #"[{"customer_id":"C2","kind":"purchase","item":"SKU-1","value":1,"time":"2019-10-01T12:00:00Z"}]"#
            #expect(try await c.call(.post, "/v1/events", as: "operator", body: ev).status == .ok)
        }
        let scheduler = try RetentionScheduler(vault: f.vault, every: 86_400, logger: ServiceFixture.logger)
        let r = try #require(scheduler.sweep())
        #expect(r.eventsDeleted == 1 && r.subjectsErased == 0)
        let entries = try f.auditEntries()
        #expect(entries.contains { $0["api.operation"]?.stringValue == "retention.events" && $0["actor.user.name"]?.stringValue == "retention-scheduler" })
        #expect(throws: VaultError.self) { _ = try RetentionScheduler(vault: f.vault, every: 10, logger: ServiceFixture.logger) }
    }
}
