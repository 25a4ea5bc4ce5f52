import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultServer
import VaultAudit

/// The console's completion (issue 21): rectification and objection from the browser, sign-in
/// and sign-out on the record, the shredded key of an erased subject, the audit page in pages,
/// an uploaded export verified from memory.
extension ConsoleRouteTests {
    /// A copy of the repository's policies with one `legitimate_interest` purpose added (the
    /// shipped policy has none, so no objection could be recorded).
    static func policyWithLegitimateInterest() throws -> String {
        let dir = NSTemporaryDirectory() + "pv-console-policy-" + UUID().uuidString
        try FileManager.default.copyItem(atPath: ServiceFixture.repoRoot + "/policies", toPath: dir)
        let path = dir + "/policy.yaml"
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let purpose = """
            purposes:
              fraud_checks:
                data_use: analytics.reporting
                legal_basis: legitimate_interest
                may_read: [user.location.imprecise, user.behavior]

            """
        guard let r = text.range(of: "purposes:\n") else { throw VaultError(.configuration, "policy.yaml has no purposes") }
        text.replaceSubrange(r, with: purpose)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return dir
    }

    static func requestID(in text: String) throws -> String {
        try #require(text.range(of: "Opened request ").map { String(text[$0.upperBound...].prefix(20)) })
    }

    static func entries(_ f: ServiceFixture, action: String) throws -> [JSONValue] {
        try f.auditEntries().filter { $0["api.operation"]?.stringValue == action }
    }

    // MARK: - Rectification

    @Test func officerRectifiesFromTheConsoleAndTheValueIsNeverEchoedOrRecorded() async throws {
        let f = try ServiceFixture()
        let newEmail = "corrected.address.4711@example.org"
        let hostile = "<b>not-a-number-9931</b>"
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            let csrf = try await b.csrf("/console/requests")
            let opened = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "rectification"), ("customer_id", "C1")])
            let id = try Self.requestID(in: opened.text)
            // The request page sends the officer to the subject page; fulfilling without the
            // confirmation is refused.
            let page = try await b.go(.get, "/console/requests/\(id)")
            #expect(page.text.contains("id=\"to-subject\""))
            let early = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf)])
            #expect(early.status == .badRequest)
            // The subject page offers the rectify form to the officer (permission rectify).
            let subject = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C1")])
            #expect(subject.text.contains("action=\"/console/subject/rectify\""))
            let done = try await b.go(.post, "/console/subject/rectify", form: [("csrf", csrf), ("customer_id", "C1"),
                                                                                 ("field1", "email"), ("value1", newEmail)])
            #expect(done.status == .ok, "\(done.text)")
            #expect(done.text.contains("Rectified: email changed."))
            #expect(!done.text.contains(newEmail) && !done.text.contains("4711"))
            // An invalid value: refused (400), nothing written, the value not shown, even escaped.
            let bad = try await b.go(.post, "/console/subject/rectify", form: [("csrf", csrf), ("customer_id", "C1"),
                                                                                ("field1", "age"), ("value1", hostile)])
            #expect(bad.status == .badRequest, "\(bad.status)")
            #expect(bad.text.contains("age") && !bad.text.contains("not-a-number-9931"))
            let unknownField = try await b.go(.post, "/console/subject/rectify", form: [("csrf", csrf), ("customer_id", "C1"),
                                                                                         ("field1", "shoe_size"), ("value1", "44")])
            #expect(unknownField.status == .badRequest)
            let nothing = try await b.go(.post, "/console/subject/rectify", form: [("csrf", csrf), ("customer_id", "C1")])
            #expect(nothing.status == .badRequest)
            // Forged CSRF: 403, nothing changed.
            let forged = try await b.go(.post, "/console/subject/rectify", form: [("csrf", ConsoleSessions.randomToken()), ("customer_id", "C1"),
                                                                                   ("field1", "email"), ("value1", "forged@example.org")])
            #expect(forged.status == .forbidden)
            // Confirm and close the request from the console.
            let closed = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf), ("done", "true")])
            #expect(closed.status == .ok, "\(closed.text)")
            #expect(closed.text.contains("id=\"request-status\">done<"))
            // A role without `rectify` gets no form and a 403 on a direct POST (audited).
            var support = Browser(client: client)
            _ = try await support.signIn(f.tokens["support"]!)
            let sCSRF = try await support.csrf("/console/subject")
            let sPage = try await support.go(.post, "/console/subject", form: [("csrf", sCSRF), ("customer_id", "C1")])
            #expect(!sPage.text.contains("/console/subject/rectify"))
            let refused = try await support.go(.post, "/console/subject/rectify", form: [("csrf", sCSRF), ("customer_id", "C1"),
                                                                                          ("field1", "email"), ("value1", "x@example.org")])
            #expect(refused.status == .forbidden)
        }
        let support = f.vault.acting(as: ProfileVault.Actor(name: "t", role: "support"))
        let profile = JSONForms.profile(try support.get(customerID: "C1", purpose: "customer_support")).rendered(pretty: false)
        #expect(profile.contains(newEmail) && !profile.contains("forged@example.org") && !profile.contains("x@example.org"))
        let all = try f.auditEntries()
        let rectified = all.filter { $0["api.operation"]?.stringValue == "rectify" }
        #expect(rectified.contains { $0["status"]?.stringValue == "ok" && $0["actor.user.name"]?.stringValue == "test-privacy_officer" })
        #expect(rectified.contains { $0["status"]?.stringValue == "denied" })
        // No audit entry holds a submitted value.
        for e in all {
            let text = e.rendered(pretty: false)
            #expect(!text.contains(newEmail) && !text.contains("not-a-number-9931") && !text.contains("forged@example.org"))
        }
    }

    // MARK: - Objection

    @Test func officerRecordsAnObjectionAndClosesTheRequestFromTheConsole() async throws {
        let policy = try Self.policyWithLegitimateInterest()
        defer { try? FileManager.default.removeItem(atPath: policy) }
        let f = try ServiceFixture(policyDirectory: policy)
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            let csrf = try await b.csrf("/console/requests")
            let opened = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "objection"), ("customer_id", "C2")])
            let id = try Self.requestID(in: opened.text)
            // Before the objection is recorded, fulfilling is refused on the request's page.
            let early = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf)])
            #expect(early.status == .badRequest && early.text.contains("objects to no legitimate_interest purpose"))
            // The subject page offers "Record objection" for the legitimate-interest purpose only.
            let subject = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C2")])
            #expect(subject.text.contains("id=\"object-fraud_checks\""))
            #expect(!subject.text.contains("id=\"object-analytics\""))
            // Forged CSRF: refused, nothing recorded.
            let forged = try await b.go(.post, "/console/subject/objection", form: [("csrf", ConsoleSessions.randomToken()), ("customer_id", "C2"),
                                                                                     ("purpose", "fraud_checks")])
            #expect(forged.status == .forbidden)
            // A consent-basis purpose: refused by the vault (400), shown on the subject page.
            let wrong = try await b.go(.post, "/console/subject/objection", form: [("csrf", csrf), ("customer_id", "C2"), ("purpose", "analytics")])
            #expect(wrong.status == .badRequest && wrong.text.contains("legitimate_interest"))
            let objected = try await b.go(.post, "/console/subject/objection", form: [("csrf", csrf), ("customer_id", "C2"), ("purpose", "fraud_checks")])
            #expect(objected.status == .ok, "\(objected.text)")
            #expect(objected.text.contains("Objection to fraud_checks recorded."))
            #expect(objected.text.contains("(objection)") && !objected.text.contains("id=\"object-fraud_checks\""))
            let closed = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf)])
            #expect(closed.status == .ok, "\(closed.text)")
            #expect(closed.text.contains("objection:fraud_checks"))
            // A role without `consent` (the trainer): 403 on a direct POST.
            var trainer = Browser(client: client)
            _ = try await trainer.signIn(f.tokens["trainer"]!)
            let tCSRF = try await trainer.csrf("/console/budget")
            let refused = try await trainer.go(.post, "/console/subject/objection", form: [("csrf", tCSRF), ("customer_id", "C1"), ("purpose", "fraud_checks")])
            #expect(refused.status == .forbidden)
        }
        let officer = f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer"))
        #expect(try officer.accessReport(customerID: "C2").purposes.first { $0.name == "fraud_checks" }?.objection == true)
        // The trainer's refused POST recorded nothing for C1.
        #expect(try officer.accessReport(customerID: "C1").purposes.first { $0.name == "fraud_checks" }?.objection == false)
        let objections = try Self.entries(f, action: "consent.object")
        #expect(objections.filter { $0["status"]?.stringValue == "ok" }.count == 1)
    }

    // MARK: - Sign-in and sign-out on the record

    @Test func signInAndSignOutAreAuditedWithoutTokenOrCookie() async throws {
        let f = try ServiceFixture()
        let token = f.tokens["auditor"]!
        let sessionBox = SessionBox()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            _ = try await b.signIn("wrong-token")
            _ = try await b.signIn(token)
            sessionBox.value = try #require(b.cookies["pv_console"])
            let audit = try await b.go(.get, "/console/audit")
            // The auditor sees its own sign-in on the audit page.
            #expect(audit.text.contains("auth.sign_in"))
            let csrf = try #require(audit.formValue("csrf"))
            let out = try await b.go(.post, "/console/sign-out", form: [("csrf", csrf)])
            #expect(out.status == .seeOther)
            // A sign-out with a forged CSRF token is refused and not recorded.
            _ = try await b.signIn(token)
            let forged = try await b.go(.post, "/console/sign-out", form: [("csrf", ConsoleSessions.randomToken())])
            #expect(forged.status == .forbidden)
        }
        let session = sessionBox.value
        #expect(!session.isEmpty)
        let tokenID = try #require(f.tokenFile.identities.first { $0.role == "auditor" }).tokenID
        let all = try f.auditEntries()
        let ins = all.filter { $0["api.operation"]?.stringValue == "auth.sign_in" }
        let outs = all.filter { $0["api.operation"]?.stringValue == "auth.sign_out" }
        #expect(ins.count == 2 && outs.count == 1)
        for e in ins + outs {
            #expect(e["actor.user.name"]?.stringValue == "test-auditor")
            #expect(e["status"]?.stringValue == "ok")
            #expect(e.rendered(pretty: false).contains("token \(tokenID)"))
        }
        // The failed attempt stays `auth.failed`, never a sign-in.
        #expect(all.contains { $0["api.operation"]?.stringValue == "auth.failed" })
        // No entry holds the token, a part of it, or the session cookie.
        for e in all {
            let text = e.rendered(pretty: false)
            #expect(!text.contains(token) && !text.contains(String(token.suffix(16))) && !text.contains(session))
        }
    }

    // MARK: - An erased subject's shredded key

    @Test func anErasedSubjectShowsItsShreddedKeyAndNothingElse() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            let csrf = try await b.csrf("/console/requests")
            let live = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C3")])
            #expect(live.text.contains("id=\"key-state\">active<"))
            let opened = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "erasure"), ("customer_id", "C3")])
            let id = try Self.requestID(in: opened.text)
            let erased = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf)])
            #expect(erased.status == .ok, "\(erased.text)")
            let outcome = try #require(erased.text.range(of: "id=\"outcome\">receipt:").map { String(erased.text[$0.upperBound...].prefix { $0 != "<" }) })
            let page = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C3")])
            #expect(page.status == .ok, "\(page.text)")
            #expect(page.text.contains("id=\"key-state\">shredded<"))
            #expect(page.text.contains("id=\"erasure-receipt\">\(outcome)<"))
            #expect(page.text.contains("id=\"erased-at\">"))
            // Nothing else: no purposes, retention, accesses, no data, no forms on the subject.
            for absent in ["id=\"purposes\"", "id=\"accesses\"", "id=\"retention\"", "cy@example.com", "Cy Young", "/console/subject/rectify",
                           "/console/subject/restriction", "reason"] {
                #expect(!page.text.contains(absent), "\(absent)")
            }
            // A subject never known is still not found.
            let unknown = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C404")])
            #expect(unknown.status == .notFound && !unknown.text.contains("shredded"))
            // A role without `export` cannot look the erased subject up (403).
            var trainer = Browser(client: client)
            _ = try await trainer.signIn(f.tokens["trainer"]!)
            let tCSRF = try await trainer.csrf("/console/budget")
            let refused = try await trainer.go(.post, "/console/subject", form: [("csrf", tCSRF), ("customer_id", "C3")])
            #expect(refused.status == .forbidden && !refused.text.contains("shredded"))
        }
        let looked = try Self.entries(f, action: "subject.erased")
        #expect(looked.count == 1 && looked[0]["status"]?.stringValue == "ok")
        // The Vault method itself: nil for a live or unknown subject, refused without `export`.
        let officer = f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer"))
        #expect(try officer.erasedSubject(customerID: "C1") == nil)
        #expect(try officer.erasedSubject(customerID: "C404") == nil)
        #expect(try officer.erasedSubject(customerID: "C3")?.receipt != nil)
        #expect(throws: VaultError.self) { try f.vault.acting(as: ProfileVault.Actor(name: "t", role: "trainer")).erasedSubject(customerID: "C3") }
    }

    // MARK: - The audit page in pages

    /// Rows of the entries table: their sequence numbers, in page order.
    static func sequences(_ text: String) -> [Int64] {
        guard let start = text.range(of: "<table id=\"entries\">"), let end = text.range(of: "</table>", range: start.upperBound..<text.endIndex) else { return [] }
        return text[start.upperBound..<end.lowerBound].components(separatedBy: "<tr><td>").dropFirst().compactMap { Int64($0.prefix { $0.isNumber }) }
    }

    static func link(_ text: String, _ id: String) -> String? {
        guard let r = text.range(of: "id=\"\(id)\" href=\"") else { return nil }
        return String(text[r.upperBound...].prefix { $0 != "\"" }).replacingOccurrences(of: "&amp;", with: "&")
    }

    @Test func theAuditPageIsPagedByCursorWithFiltersKept() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["auditor"]!)
            let first = try await b.go(.get, "/console/audit?size=5")
            #expect(first.status == .ok)
            let s1 = Self.sequences(first.text)
            #expect(s1.count == 5 && s1 == s1.sorted(by: >), "\(s1)")
            #expect(Self.link(first.text, "page-newer") == nil)
            let older = try #require(Self.link(first.text, "page-older"))
            #expect(older.contains("before=\(s1.last!)") && older.contains("size=5"))
            let second = try await b.go(.get, older)
            let s2 = Self.sequences(second.text)
            #expect(s2.count == 5 && s2.allSatisfy { $0 < s1.last! } && s2.first == s1.last! - 1, "\(s2)")
            // Back: the newer page shows the entries just above this one.
            let newer = try #require(Self.link(second.text, "page-newer"))
            let back = try await b.go(.get, newer)
            let s3 = Self.sequences(back.text)
            #expect(s3.count == 5 && s3.last == s2.first! + 1, "\(s3)")
            // Walking older reaches the first entry and stops.
            var path = older
            var seen = Set(s1)
            for _ in 0..<200 {
                let p = try await b.go(.get, path)
                let s = Self.sequences(p.text)
                #expect(seen.isDisjoint(with: s))
                seen.formUnion(s)
                guard let next = Self.link(p.text, "page-older") else { break }
                path = next
            }
            #expect(seen.contains(1))
            // Filters stay in the links and apply on each page.
            let filtered = try await b.go(.get, "/console/audit?size=2&action=consent.")
            let fs = Self.sequences(filtered.text)
            #expect(fs.count == 2)
            let fOlder = try #require(Self.link(filtered.text, "page-older"))
            #expect(fOlder.contains("action=consent"))
            let fPage = try await b.go(.get, fOlder)
            #expect(!fPage.text.contains("<td>audit.export</td>") && fPage.text.contains("<td>consent.grant</td>"))
            // A bounded page size, well-formed cursors.
            for bad in ["size=201", "size=0", "size=x", "before=0", "before=x", "after=-1", "before=5&after=2"] {
                let p = try await b.go(.get, "/console/audit?\(bad)")
                #expect(p.status == .badRequest, "\(bad): \(p.status)")
            }
            let beyond = try await b.go(.get, "/console/audit?after=999999999")
            #expect(beyond.status == .badRequest)
        }
    }

    // MARK: - Export verification from memory

    @Test func anUploadedExportIsVerifiedFromMemory() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["auditor"]!)
            let csrf = try await b.csrf("/console/audit")
            let export = try await b.go(.get, "/console/audit/export?format=jsonl")
            let pem = try await b.go(.get, "/console/audit/public-key.pem")
            let ok = try await b.go(.post, "/console/audit/verify-export", form: [("csrf", csrf), ("export", export.text), ("public_key", pem.text)])
            #expect(ok.text.contains("The export verifies"), "\(ok.text)")
            let tampered = export.text.replacingOccurrences(of: "test-privacy_officer", with: "someone-else")
            let bad = try await b.go(.post, "/console/audit/verify-export", form: [("csrf", csrf), ("export", tampered), ("public_key", pem.text)])
            #expect(bad.text.contains("does NOT verify: first bad entry"))
            let notKey = try await b.go(.post, "/console/audit/verify-export", form: [("csrf", csrf), ("export", export.text), ("public_key", "nope")])
            #expect(notKey.text.contains("could not be verified"))
        }
        // Nothing was written to the scratch directory (the fixture's directory).
        let names = try FileManager.default.contentsOfDirectory(atPath: f.dir)
        #expect(!names.contains { $0.contains("scratch") }, "\(names)")
    }
}

/// The session cookie seen inside a router test, read after it (`@unchecked Sendable`: written
/// once inside the test body, read after it returned).
final class SessionBox: @unchecked Sendable {
    var value = ""
}

extension ConsoleSecurityTests {
    @Test func rectifyCapabilityFollowsThePolicyRoles() throws {
        let f = try ServiceFixture()
        func caps(_ role: String) -> ConsoleSecurity.Capabilities {
            let v = f.vault.acting(as: ProfileVault.Actor(name: "x", role: role))
            return ConsoleSecurity.Capabilities(permits: { v.permits($0) })
        }
        #expect(caps("privacy_officer").rectify)
        for role in ["auditor", "support", "trainer", "operator", "nobody"] { #expect(!caps(role).rectify, "\(role)") }
    }

    /// The in-memory verifier gives what the file verifier gives, for a good export and for
    /// every single-line tampering of it.
    @Test func verifyingFromMemoryMatchesTheFileVerifier() throws {
        let f = try ServiceFixture()
        let auditor = f.vault.acting(as: ProfileVault.Actor(name: "a", role: "auditor"))
        let export = try auditor.exportAudit(Vault.AuditExportRequest(format: .jsonl)).bytes
        let pem = auditor.auditPublicKeyPEM
        let path = f.dir + "/export.jsonl"
        var lines = String(decoding: export, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var variants = [lines.joined(separator: "\n")]
        for i in lines.indices where !lines[i].isEmpty {
            let saved = lines[i]
            lines[i] = saved.replacingOccurrences(of: "a", with: "b")
            variants.append(lines.joined(separator: "\n"))
            lines[i] = saved
        }
        variants.append("")
        for text in variants {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let fromFile = try Vault.verifyAuditExport(path: path, publicKeyPEM: pem, keyName: "k", expectHead: nil)
            let fromMemory = try Vault.verifyAuditExport(bytes: Array(text.utf8), name: path, publicKeyPEM: pem, keyName: "k", expectHead: nil)
            #expect(fromFile.ok == fromMemory.ok && fromFile.firstBad == fromMemory.firstBad && fromFile.reason == fromMemory.reason
                    && fromFile.entries == fromMemory.entries && fromFile.head == fromMemory.head)
        }
        #expect(try Vault.verifyAuditExport(bytes: export, name: "x", publicKeyPEM: pem, keyName: "k", expectHead: nil).ok)
        #expect(throws: VaultError.self) { try Vault.verifyAuditExport(bytes: export, name: "x", publicKeyPEM: "nope", keyName: "k", expectHead: nil) }
    }
}

extension ConsoleRouteTests {
    /// A purpose that accounts in zCDP shows its budget in rho, and its burn-down counts the rho
    /// of its releases (their audit entries carry no epsilon): without that, the page showed the
    /// rho limit as epsilon and a flat line however much was spent.
    @Test func aZCDPPurposeIsShownInRhoWithItsBurnDown() async throws {
        let policy = NSTemporaryDirectory() + "pv-console-zcdp-" + UUID().uuidString
        try FileManager.default.copyItem(atPath: ServiceFixture.repoRoot + "/policies", toPath: policy)
        defer { try? FileManager.default.removeItem(atPath: policy) }
        var text = try String(contentsOfFile: policy + "/policy.yaml", encoding: .utf8)
        let epsilonBudget = "    dp_budget: { epsilon: 4.0, period: 30d }"
        #expect(text.contains(epsilonBudget))
        text = text.replacingOccurrences(of: epsilonBudget, with: "    dp_budget: { rho: 0.5, period: 30d }")
        try text.write(toFile: policy + "/policy.yaml", atomically: true, encoding: .utf8)
        let f = try ServiceFixture(policyDirectory: policy)
        try await f.app.test(.router) { client in
            let c = Client(client: client, tokens: f.tokens)
            try await c.seed()
            for _ in 0..<2 {
                let q = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","rho":0.1,"fresh":true}"#)
                #expect(q.status == .ok, "\(q.text)")
            }
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["auditor"]!)
            let page = try await b.go(.get, "/console/budget")
            #expect(page.status == .ok)
            #expect(page.text.contains("<tr data-purpose=\"analytics\"><td>analytics</td><td class=\"unit\">rho (zCDP)</td>"), "\(page.text)")
            #expect(page.text.contains("<td>model_training</td><td class=\"unit\">epsilon</td>"))
            #expect(page.text.contains("of 0.5 rho left"))
            #expect(page.text.contains("analytics: rho left after each of this period's 2 releases."), "\(page.text)")
            #expect(page.text.contains("Rho left of analytics"))
        }
        // The audit report sums the same rho, apart from epsilon.
        let report = try f.vault.acting(as: ProfileVault.Actor(name: "a", role: "auditor")).auditReport(sinceMillis: nil, untilMillis: nil)
        #expect(abs((report.rhoByPurpose["analytics"] ?? 0) - 0.2) < 1e-9 && report.epsilonByPurpose["analytics"] == nil)
    }
}
