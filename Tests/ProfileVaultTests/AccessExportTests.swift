import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import ProfileVault
@testable import VaultStore

/// A store with the repository's schema (or one edited by `schema`) and a policy whose
/// consent-based `newsletter` purpose names a recipient.
final class ExportFixture {
    let dir: String
    let keys: String
    let policies: String
    let storePath: String

    init(profiles: String? = nil, events: String? = nil, schema: (String) -> String = { $0 }) throws {
        dir = NSTemporaryDirectory() + "pv-export-" + UUID().uuidString
        policies = dir + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        let schemaText = try String(contentsOfFile: CLI.repoRoot + "/policies/schema.yaml", encoding: .utf8)
        try schema(schemaText).write(toFile: policies + "/schema.yaml", atomically: true, encoding: .utf8)
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "retention:\n", with: """
              newsletter:
                data_use: marketing.advertising.first_party
                legal_basis: consent
                may_read_pii: [user.contact.email]
                recipients: [email-service-provider, "Print & <Mail> Ltd"]
            retention:

            """)
        try policy.write(toFile: policies + "/policy.yaml", atomically: true, encoding: .utf8)
        keys = dir + "/keyring.json"
        try Keyring.generate(note: "test").write(to: keys)
        storePath = dir + "/store.sqlite"
        let v = try Vault.initialize(config("operator"))
        var o = IngestOptions()
        o.format = .csv
        _ = try v.ingestProfiles(path: write("p.csv", profiles ?? CLIStore.rows(20)), options: o)
        _ = try v.ingestEvents(path: write("e.csv", events ?? "customer_id,kind,item,value,time\nC1,purchase,SKU-1,10,2026-01-01T00:00:00Z\nC1,rating,SKU-1,5,2026-01-02T00:00:00Z\nC2,purchase,SKU-2,20,2026-01-03T00:00:00Z\n"), options: o)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ role: String) -> VaultConfiguration {
        VaultConfiguration(storePath: storePath, keysPath: keys, policyDirectory: policies, actor: Actor(name: "t-\(role)", role: role))
    }

    func vault(_ role: String) throws -> Vault { try Vault.open(config(role)) }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// A raw integer column of the subject with this customer ID.
    func raw(_ column: String, of id: String) throws -> Int64? {
        let v = try vault("operator")
        let p = try v.store.pseudonym(ofCustomerID: id)
        let q = try DatabaseQueue(path: storePath)
        return try q.read { db in try Int64.fetchOne(db, sql: "SELECT \(column) FROM subjects WHERE pseudonym = ?", arguments: [Data(p)]) }
    }

    func setRaw(_ sql: String, of id: String) throws {
        let v = try vault("operator")
        let p = try v.store.pseudonym(ofCustomerID: id)
        let q = try DatabaseQueue(path: storePath)
        try q.write { db in try db.execute(sql: sql + " WHERE pseudonym = ?", arguments: [Data(p)]) }
    }

    func ingest(_ name: String, _ csv: String) throws -> IngestReport {
        var o = IngestOptions()
        o.format = .csv
        return try vault("operator").ingestProfiles(path: write(name, csv), options: o)
    }
}

extension JSONValue {
    var items: [JSONValue] { if case .array(let a) = self { a } else { [] } }
    var text: String? { if case .string(let s) = self { s } else { nil } }
}

@Suite struct Article15ExportTests {
    @Test func theExportSaysWhatArticle15Asks() throws {
        let f = try ExportFixture()
        let officer = try f.vault("privacy_officer")
        // Before consent: the consent-based purposes do not apply, so their recipients are not named.
        let before = JSONForms.accessReport(try officer.accessReport(customerID: "C1"))
        #expect(before["recipients"]?.items.isEmpty == true)
        #expect(try officer.setConsent(.one("C1"), purpose: "newsletter", granted: true, source: "web-form") == 1)
        // A denied attempt on C1's data, as the gate records it (the entry names the pseudonym).
        let pseudo = try officer.store.pseudonym(ofCustomerID: "C1")
        try officer.store.audit([AuditRecord(actor: "mallory", role: "support", action: "get", activity: .read, purpose: "newsletter",
                                             subject: pseudo, outcome: .denied, requestID: "r-denied", detail: "consent not active")])
        let doc = JSONForms.accessReport(try officer.accessReport(customerID: "C1"))
        let purposes = try #require(doc["purposes"]?.items)
        let newsletter = try #require(purposes.first { $0["purpose"]?.text == "newsletter" })
        #expect(newsletter["legal_basis"]?.text == "consent")
        #expect(newsletter["consent"]?["granted"] == .bool(true))
        #expect(newsletter["applies"] == .bool(true))
        #expect(newsletter["recipients"]?.items.compactMap(\.text) == ["email-service-provider", "Print & <Mail> Ltd"])
        let analytics = try #require(purposes.first { $0["purpose"]?.text == "analytics" })
        #expect(analytics["applies"] == .bool(false) && analytics["consent"] == .null)
        let support = try #require(purposes.first { $0["purpose"]?.text == "customer_support" })
        #expect(support["legal_basis"]?.text == "contract" && support["applies"] == .bool(true))
        #expect(doc["recipients"]?.items.compactMap { $0["recipient"]?.text } == ["email-service-provider", "Print & <Mail> Ltd"])
        // Categories of the data held.
        let categories = try #require(doc["categories"]?.items)
        #expect(categories.contains { $0["category"]?.text == "user.contact.email" && $0["fields"]?.items.compactMap(\.text) == ["email"] })
        #expect(categories.contains { $0["category"]?.text == "user.behavior" && $0["events"]?.items.compactMap(\.text) == ["rating"] })
        // Retention with the date each rule applies to this subject.
        let retention = try #require(doc["retention"]?.items)
        let events = try #require(retention.first { $0["after"]?.text == "event_time" })
        #expect(events["keep"]?.text == "730d")
        #expect(events["date"]?.text == DateParsing.iso8601(unixSeconds: 1_767_225_600 + 730 * 86_400))   // 2026-01-01 + 730 d
        let subject = try #require(retention.first { $0["after"]?.text == "last_activity" })
        let last = try #require(try f.raw("last_activity", of: "C1"))
        #expect(subject["date"]?.text == DateParsing.iso8601(unixSeconds: last + 1095 * 86_400))
        // The source: the ingest run that created it.
        let created = try #require(doc["sources"]?["created_by"])
        #expect(created["source"]?.text == "p.csv")   // the file name only, never its directories
        #expect(created["actor"]?.text == "t-operator")
        #expect(created["counts"]?["inserted"] == .int(20))
        // Who accessed it: the consent change, the first export, the denied attempt, this export.
        let accesses = try #require(doc["accesses"]?.items)
        #expect(accesses.contains { $0["actor"]?.text == "mallory" && $0["outcome"]?.text == "denied" && $0["role"]?.text == "support"
            && $0["purpose"]?.text == "newsletter" && $0["action"]?.text == "get" })
        #expect(accesses.filter { $0["action"]?.text == "export" && $0["outcome"]?.text == "ok" }.count == 2)
        #expect(accesses.contains { $0["action"]?.text == "consent.grant" })
    }

    @Test func theExportOfOneSubjectHoldsNothingOfAnother() throws {
        // Two subjects with overlapping data: the same name, country, item and event times.
        let profiles = CLIStore.header + "\nALPHA-7,alpha@example.com,Same Name,+49 30 1111,1980-01-01,40,female,DE,1000\nBRAVO-9,bravo@example.com,Same Name,+49 30 2222,1980-01-01,40,female,DE,1000\n"
        let events = "customer_id,kind,item,value,time\nALPHA-7,purchase,SKU-1,10,2026-01-01T00:00:00Z\nBRAVO-9,purchase,SKU-1,10,2026-01-01T00:00:00Z\nBRAVO-9,rating,SKU-ONLY-B,3,2026-02-01T00:00:00Z\n"
        let f = try ExportFixture(profiles: profiles, events: events)
        let officer = try f.vault("privacy_officer")
        _ = try officer.setConsent(.one("BRAVO-9"), purpose: "newsletter", granted: true, source: "bravo-source")
        _ = try officer.accessReport(customerID: "BRAVO-9")
        let b = try officer.store.pseudonym(ofCustomerID: "BRAVO-9")
        let r = try officer.accessReport(customerID: "ALPHA-7")
        let json = JSONForms.accessReport(r).rendered(pretty: true)
        let html = AccessExportHTML.render(r)
        for text in [json, html] {
            for secret in ["BRAVO-9", "bravo@example.com", "2222", "SKU-ONLY-B", "bravo-source", AuditLog.hex(b)] {
                #expect(!text.contains(secret), "\(secret)")
            }
        }
        #expect(r.export.events.count == 1)
        #expect(r.accesses.allSatisfy { $0.action == "export" })   // only its own export: no consent change, no other export
        #expect(r.accesses.count == 1)
    }

    @Test func theHTMLPageEscapesHostileValuesAndLoadsNothing() throws {
        let hostile = "<script>alert(1)</script>\"'&"
        let profiles = CLIStore.header + "\nC1,x@example.com,\"\(hostile.replacingOccurrences(of: "\"", with: "\"\""))\",+49 30 1,1980-01-01,40,female,DE,1000\n"
        let events = "customer_id,kind,item,value,time\nC1,purchase,<img src=x onerror=alert(2)>,10,2026-01-01T00:00:00Z\n"
        let f = try ExportFixture(profiles: profiles, events: events)
        let officer = try f.vault("privacy_officer")
        let html = AccessExportHTML.render(try officer.accessReport(customerID: "C1", format: .html))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"))
        #expect(html.contains("&lt;img src=x onerror=alert(2)&gt;"))
        #expect(html.contains("Print &amp; &lt;Mail&gt; Ltd") || !html.contains("Print"))   // recipients escaped (shown once consent applies)
        #expect(!html.lowercased().contains("<script"))
        #expect(!html.lowercased().contains("<img"))
        #expect(!html.contains("src=\"") && !html.contains("href=") && !html.contains("http://") && !html.contains("https://"))
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.contains("default-src 'none'"))
        // The export is audited with its format.
        let entries = try officer.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl)
        #expect(String(decoding: entries.bytes, as: UTF8.self).contains("format html"))
    }

    @Test func portabilityIsTheSubjectsOwnDataOnly() throws {
        let profiles = CLIStore.header + "\nC1,x@example.com,=HYPERLINK(1),+49 30 1,1980-01-01,40,female,DE,1000\n"
        let f = try ExportFixture(profiles: profiles, events: "customer_id,kind,item,value,time\nC1,purchase,SKU-1,10,2026-01-01T00:00:00Z\n")
        let officer = try f.vault("privacy_officer")
        let r = try officer.accessReport(customerID: "C1", format: .portability)
        let doc = JSONForms.portability(r.export)
        #expect(doc["customer_id"]?.text == "C1")
        #expect(doc["profile"]?["email"]?.text == "x@example.com")
        #expect(doc["events"]?.items.count == 1)
        for derived in ["access_log", "accesses", "consent", "purposes", "pseudonym", "retention", "sources"] { #expect(doc[derived] == nil) }
        let csv = JSONForms.portabilityCSV(r.export)
        let lines = csv.split(separator: "\n")
        #expect(lines.first == "record,name,value,item,time")
        #expect(lines.count == 1 + 1 + 8 + 1)   // header, customer_id, 8 fields, 1 event
        #expect(csv.contains("field,full_name,'=HYPERLINK(1),,"))   // formula-safe
        #expect(csv.contains("event,purchase,10.0,SKU-1,2026-01-01T00:00:00Z"))
    }

    @Test func anUnknownSubjectIsNotFoundAndExportNeedsTheRole() throws {
        let f = try ExportFixture()
        expectKind(.notFound) { _ = try f.vault("privacy_officer").accessReport(customerID: "nobody") }
        expectKind(.denied) { _ = try f.vault("support").accessReport(customerID: "C1") }
    }
}

@Suite struct DataStaysTrueTests {
    @Test func reingestingTheSameFileIsUnchangedAndKeepsTheLastActivity() throws {
        let f = try ExportFixture()
        try f.setRaw("UPDATE subjects SET last_activity = 1000, updated_at = 1000", of: "C3")
        let same = try f.ingest("again.csv", CLIStore.rows(20))
        #expect(same.inserted == 0 && same.updated == 0 && same.unchanged == 20, "\(same)")
        #expect(try f.raw("last_activity", of: "C3") == 1000)
        #expect(try f.raw("updated_at", of: "C3") == 1000)
        // One changed field: updated, and its last activity moves on.
        let changed = CLIStore.rows(20).replacingOccurrences(of: "Test Person 3,", with: "Another Person 3,")
        let r = try f.ingest("changed.csv", changed)
        #expect(r.updated == 1 && r.unchanged == 19 && r.inserted == 0, "\(r)")
        #expect(try #require(try f.raw("last_activity", of: "C3")) > 1000)
        // The source now names the run that changed it; the unchanged run is not named.
        let e = try f.vault("privacy_officer").accessReport(customerID: "C3").export
        #expect(e.updatedBy?.source == "changed.csv")
        #expect(e.createdBy?.source == "p.csv")
    }

    static func lastLoginSchema(_ s: String) -> String {
        s.replacingOccurrences(of: "events:\n", with: "  last_login:    { type: date,     category: user.behavior,              required: false }\nlast_activity: last_login\nevents:\n")
    }

    @Test func theSchemasLastActivityFieldSetsTheLastActivity() throws {
        let header = CLIStore.header + ",last_login"
        let rows = header + "\nA1,a@example.com,A,+49 30 1,1980-01-01,40,female,DE,1000,2020-03-01\nA2,b@example.com,B,+49 30 2,1980-01-01,40,female,DE,1000,\n"
        let f = try ExportFixture(profiles: rows, events: "customer_id,kind,item,value,time\n", schema: Self.lastLoginSchema)
        #expect(try f.raw("last_activity", of: "A1") == 1_583_020_800)   // 2020-03-01
        #expect(try #require(try f.raw("last_activity", of: "A2")) > 1_700_000_000)   // no value: the ingest time
        // The nightly sync brings a later login: the last activity follows it.
        let later = rows.replacingOccurrences(of: "2020-03-01", with: "2021-03-01")
        #expect(try f.ingest("sync.csv", later).updated == 1)
        #expect(try f.raw("last_activity", of: "A1") == 1_614_556_800)
        // Inactivity retention sees it: A1 (login 2021) goes at 2021 + 1095 d, A2 does not.
        let plan = try f.vault("privacy_officer").retentionPlan(asOf: 1_614_556_800 + 1096 * 86_400, list: true)
        #expect(plan.rules.first { $0.after == "last_activity" }?.customerIDs == ["A1"])
    }

    @Test func aLastActivityFieldThatIsMissingOrNotADateIsRefusedWithItsLine() throws {
        let base = try String(contentsOfFile: CLI.repoRoot + "/policies/schema.yaml", encoding: .utf8)
        for (value, fragment) in [("last_seen", "not a field"), ("age", "type int"), ("birth_date", "PII")] {
            let text = base + "last_activity: \(value)\n"
            let line = text.split(separator: "\n", omittingEmptySubsequences: false).count - 1
            do {
                _ = try PolicyLoader.parseSchema(yaml: text, file: "schema.yaml")
                Issue.record("accepted last_activity: \(value)")
            } catch {
                #expect(error.file == "schema.yaml" && error.field == "last_activity" && error.line == line, "\(error)")
                #expect(error.reason.contains(fragment), "\(error.reason)")
            }
        }
    }

    @Test func aRetentionDryRunWritesNoDataAndListsTheRightIDs() throws {
        let f = try ExportFixture()
        try f.setRaw("UPDATE subjects SET last_activity = 1000", of: "C3")
        try f.setRaw("UPDATE subjects SET last_activity = 2000", of: "C5")
        let officer = try f.vault("privacy_officer")
        let before = try officer.store.status()
        let raw = try officer.store.rawRows(customerID: "C1")
        let asOf: Int64 = 1_843_430_400   // 2028-06-01: C1's and C2's 2026 events are older than 730 d
        let plan = try officer.retentionPlan(asOf: asOf, list: true)
        let events = try #require(plan.rules.first { $0.after == "event_time" })
        #expect(events.events == 3 && events.subjects == 2 && events.customerIDs == ["C1", "C2"])
        let subjects = try #require(plan.rules.first { $0.after == "last_activity" })
        #expect(subjects.subjects == 2 && subjects.customerIDs == ["C3", "C5"])
        #expect(plan.report.eventsDeleted == 3 && plan.report.subjectsErased == 2)
        // Nothing but audit entries was written.
        let after = try officer.store.status()
        #expect(after.subjects == before.subjects && after.events == before.events)
        #expect(try officer.store.rawRows(customerID: "C1")?.wrappedDEKHex == raw?.wrappedDEKHex)
        #expect(try officer.store.exists(customerID: "C3"))
        // Each listed ID was resolved on the record, naming its pseudonym.
        let log = String(decoding: try officer.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl).bytes, as: UTF8.self)
        for id in ["C1", "C2", "C3", "C5"] {
            let p = AuditLog.hex(try officer.store.pseudonym(ofCustomerID: id))
            #expect(log.split(separator: "\n").contains { $0.contains("retention.list") && $0.contains(p) }, "\(id)")
        }
        // Without --list: the counts, no IDs and no resolution.
        let counts = try officer.retentionPlan(asOf: asOf, list: false)
        #expect(counts.rules.allSatisfy { $0.customerIDs == nil })
        expectKind(.denied) { _ = try f.vault("support").retentionPlan(asOf: asOf, list: true) }
    }

    @Test func everyLookupFieldCanBeSearchedAndOthersAreRefused() throws {
        let f = try ExportFixture()
        let support = try f.vault("support")
        #expect(try support.find(field: "email", value: "  USER3@example.com ") == ["C3"])
        #expect(try support.find(field: "phone", value: "+49 30 1004") == ["C4"])
        expectKind(.invalidInput, "not a lookup field") { _ = try support.find(field: "full_name", value: "Test Person 3") }
        expectKind(.invalidInput, "not a lookup field") { _ = try support.find(field: "age", value: "30") }
        expectKind(.invalidInput, "not a field") { _ = try support.find(field: "nope", value: "x") }
        expectKind(.notFound) { _ = try support.find(field: "email", value: "nobody@example.com") }
        expectKind(.denied) { _ = try f.vault("trainer").find(field: "email", value: "user3@example.com") }
        let log = String(decoding: try f.vault("auditor").store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl).bytes, as: UTF8.self)
        let p = AuditLog.hex(try support.store.pseudonym(ofCustomerID: "C3"))
        #expect(log.split(separator: "\n").contains { $0.contains("\"find\"") && $0.contains(p) })
        #expect(!log.contains("user3@example.com") && !log.contains("USER3"))
    }
}

@Suite struct RecipientsPolicyTests {
    @Test func badRecipientsAreRefusedWithTheirEntry() throws {
        let schema = try PolicyLoader.loadSchema(path: CLI.repoRoot + "/policies/schema.yaml")
        let base = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        for (list, fragment) in [("[esp, esp]", "listed twice"), ("[\"\"]", "expected a string"), ("[\"\(String(repeating: "x", count: 201))\"]", "1 to 200 characters"), ("[\"tab\\there\"]", "control characters")] {
            let text = base.replacingOccurrences(of: "    legal_basis: contract\n", with: "    legal_basis: contract\n    recipients: \(list)\n")
            do {
                _ = try PolicyLoader.parsePolicy(yaml: text, file: "policy.yaml", schema: schema)
                Issue.record("accepted recipients \(list)")
            } catch {
                #expect(error.field?.hasPrefix("purposes.customer_support.recipients[") == true && error.reason.contains(fragment), "\(error)")
            }
        }
    }

    @Test func aRecipientsChangeIsAPolicyChange() throws {
        let f = try ExportFixture()
        let path = f.policies + "/policy.yaml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "recipients: [email-service-provider, \"Print & <Mail> Ltd\"]", with: "recipients: [email-service-provider]")
            .write(toFile: path, atomically: true, encoding: .utf8)
        // Refused until applied (exit 78), then the diff names the change.
        expectKind(.configuration, "policy apply") { _ = try f.vault("privacy_officer") }
        let officer = try Vault.open(f.config("privacy_officer"), checkPolicy: false)
        let applied = try officer.applyPolicy()
        #expect(applied.changes.contains { $0.kind == "purpose" && $0.name == "newsletter" && $0.field == "recipients"
            && $0.to == "[email-service-provider]" }, "\(applied.changes)")
        let doc = JSONForms.accessReport(try f.vault("privacy_officer").accessReport(customerID: "C1"))
        let newsletter = doc["purposes"]?.items.first { $0["purpose"]?.text == "newsletter" }
        #expect(newsletter?["recipients"]?.items.compactMap(\.text) == ["email-service-provider"])
    }
}

/// The CLI forms of parts 2 and 4, with their exit statuses.
@Suite struct PrivacyCLITests {
    @Test func exportFindAndRetentionFromTheCommandLine() throws {
        let s = try CLIStore()
        let p = try s.write("p.csv", CLIStore.header + "\nC1,a@example.com,<i>Ann</i>,+49 30 1,1980-01-01,40,female,DE,1000\n")
        #expect(try s.run(["ingest", "profiles", p, "--role", "operator"]).status == 0)
        let again = try s.run(["ingest", "profiles", p, "--role", "operator", "--json"])
        #expect(again.json?["unchanged"] as? Int == 1 && again.json?["updated"] as? Int == 0, "\(again.stdout)")
        let found = try s.run(["find", "--field", "email", "--value", "A@example.com", "--role", "support", "--json"])
        #expect(found.status == 0 && found.json?["customer_id"] as? String == "C1")
        let notLookup = try s.run(["find", "--field", "full_name", "--value", "<i>Ann</i>", "--role", "support"])
        #expect(notLookup.status == 65 && !notLookup.stderr.contains("Ann"), "\(notLookup.stderr)")
        #expect(try s.run(["find", "--field", "email", "--role", "support"]).status == 64)
        #expect(try s.run(["export", "--subject", "C1", "--csv", "--role", "privacy_officer"]).status == 64)
        #expect(try s.run(["export", "--subject", "C1", "--format", "xml", "--role", "privacy_officer"]).status == 64)
        let out = s.dir + "/c1.html"
        let html = try s.run(["export", "--subject", "C1", "--format", "html", "--out", out, "--role", "privacy_officer"])
        #expect(html.status == 0, "\(html.stderr)")
        let page = try String(contentsOfFile: out, encoding: .utf8)
        #expect(page.contains("&lt;i&gt;Ann&lt;/i&gt;") && !page.contains("<i>Ann"))
        let mode = (try FileManager.default.attributesOfItem(atPath: out)[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        #expect(try s.run(["export", "--subject", "C1", "--format", "html", "--out", out, "--role", "privacy_officer"]).status == 73)
        let csv = try s.run(["export", "--subject", "C1", "--format", "portability", "--csv", "--role", "privacy_officer"])
        #expect(csv.status == 0 && csv.stdout.hasPrefix("record,name,value,item,time\n"))
        let dry = try s.run(["retention", "apply", "--dry-run", "--list", "--as-of", "2035-01-01", "--role", "privacy_officer", "--json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        let rules = dry.json?["rules"] as? [[String: Any]] ?? []
        #expect(rules.first { $0["after"] as? String == "last_activity" }?["customer_ids"] as? [String] == ["C1"])
        #expect(try s.run(["retention", "apply", "--list", "--role", "privacy_officer"]).status == 64)
        #expect(try s.run(["export", "--subject", "C1", "--role", "privacy_officer"]).status == 0)   // the dry run erased nothing
    }
}
