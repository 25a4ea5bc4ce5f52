import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultServer

/// The console's security pieces (issue 21): CSRF comparison, cookie parsing and flags, session
/// expiry, HTML escaping, role gating; and the console's routes over the router.
@Suite struct ConsoleSecurityTests {
    @Test func csrfComparisonIsExactAndLengthAware() {
        let t = ConsoleSessions.randomToken()
        #expect(ConsoleSecurity.constantTimeEqual(t, t))
        #expect(!ConsoleSecurity.constantTimeEqual(t, String(t.dropLast()) + (t.hasSuffix("A") ? "B" : "A")))
        #expect(!ConsoleSecurity.constantTimeEqual(t, String(t.dropLast())))
        #expect(!ConsoleSecurity.constantTimeEqual(t, t + "A"))
        #expect(!ConsoleSecurity.constantTimeEqual("", t))
        #expect(ConsoleSecurity.constantTimeEqual("", ""))
        #expect(ConsoleSecurity.csrfMatches(presented: t, session: t))
        #expect(!ConsoleSecurity.csrfMatches(presented: nil, session: t))
        #expect(!ConsoleSecurity.csrfMatches(presented: "", session: t))
        // Not well formed: refused before comparing, even when equal.
        #expect(!ConsoleSecurity.csrfMatches(presented: "short", session: "short"))
        #expect(!ConsoleSecurity.csrfMatches(presented: ConsoleSessions.randomToken(), session: t))
    }

    @Test func randomTokensAreWellFormedAndDistinct() {
        let a = ConsoleSessions.randomToken(), b = ConsoleSessions.randomToken()
        #expect(ConsoleSessions.isWellFormedToken(a) && ConsoleSessions.isWellFormedToken(b))
        #expect(a != b)   // 256 random bits each: equal with probability 2^-256
        #expect(!ConsoleSessions.isWellFormedToken(a + "x"))
        #expect(!ConsoleSessions.isWellFormedToken(String(a.dropLast()) + "="))
    }

    @Test func cookieParsing() {
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: "a=1; pv_console=abc; b=2") == "abc")
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: "pv_console=\"abc\"") == "abc")
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: "pv_console2=abc; xpv_console=d") == nil)
        // Twice: neither is taken (a cookie planted beside the real one cannot choose the session).
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: "pv_console=abc; pv_console=def") == nil)
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: nil) == nil)
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: "pv_console") == nil)
        #expect(ConsoleSecurity.cookie(named: "pv_console", in: String(repeating: "a", count: 9000)) == nil)
    }

    @Test func cookieFlags() {
        let plain = ConsoleSecurity.sessionCookie("ID", maxAge: 28800, secure: false)
        #expect(plain.hasPrefix("pv_console=ID;"))
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/console/", "Max-Age=28800"] { #expect(plain.contains(flag)) }
        #expect(!plain.contains("Secure"))
        #expect(ConsoleSecurity.sessionCookie("ID", maxAge: 1, secure: true).hasSuffix("; Secure"))
        let cleared = ConsoleSecurity.clearedCookie(secure: true)
        #expect(cleared.contains("Max-Age=0") && cleared.contains("HttpOnly") && cleared.contains("Secure"))
    }

    @Test func sessionsExpireByLifetimeAndIdleTime() throws {
        let s = ConsoleSessions(lifetime: 3_600_000, idle: 600_000)
        let a = try #require(s.create(tokenID: "t1", now: 1_000_000))
        #expect(s.lookup(a.id, now: 1_000_000 + 599_999)?.tokenID == "t1")
        // Idle restarts at each lookup: still alive 599 999 ms after the last one.
        #expect(s.lookup(a.id, now: 1_000_000 + 1_199_000) != nil)
        // Idle for 10 minutes: gone, and stays gone.
        #expect(s.lookup(a.id, now: 1_000_000 + 1_199_000 + 600_000) == nil)
        #expect(s.lookup(a.id, now: 1_000_000 + 1_199_001) == nil)
        // The absolute lifetime ends a session kept busy.
        let b = try #require(s.create(tokenID: "t2", now: 0))
        var t: Int64 = 0
        while t < 3_600_000 - 300_000 { t += 300_000; #expect(s.lookup(b.id, now: t) != nil) }
        #expect(s.lookup(b.id, now: 3_600_000) == nil)
        // A clock that went backwards does not extend a session.
        let c = try #require(s.create(tokenID: "t3", now: 5_000_000))
        #expect(s.lookup(c.id, now: 4_000_000) == nil)
        // Unknown and malformed ids.
        #expect(s.lookup(ConsoleSessions.randomToken(), now: 0) == nil)
        #expect(s.lookup("not-a-session", now: 0) == nil)
    }

    @Test func sessionsEndPerTokenAndStayBounded() throws {
        let s = ConsoleSessions(maxSessions: 3)
        let a = try #require(s.create(tokenID: "t1", now: 0)), b = try #require(s.create(tokenID: "t1", now: 1))
        let c = try #require(s.create(tokenID: "t2", now: 2))
        #expect(s.endAll(tokenID: "t1") == 2)
        #expect(s.lookup(a.id, now: 3) == nil && s.lookup(b.id, now: 3) == nil && s.lookup(c.id, now: 3) != nil)
        for i in 0..<10 { _ = s.create(tokenID: "x", now: Int64(10 + i)) }
        #expect(s.count <= 3)
        // Each session has its own CSRF token.
        #expect(a.csrf != b.csrf && a.csrf != a.id)
    }

    /// One token signing in again and again (any role) never ends another token's session: past
    /// its own limit it replaces its own oldest; with the table full of others' live sessions
    /// the sign-in is refused instead.
    @Test func oneTokenCannotSignOthersOut() throws {
        let s = ConsoleSessions(maxSessions: 20, maxPerToken: 4)
        let officer = try #require(s.create(tokenID: "officer", now: 0))
        var flooder: [ConsoleSessions.Session] = []
        for i in 0..<1_000 { if let x = s.create(tokenID: "flood", now: Int64(1 + i)) { flooder.append(x) } }
        #expect(s.lookup(officer.id, now: 2_000) != nil)
        #expect(flooder.count == 1_000 && s.count == 5)
        #expect(s.lookup(flooder[0].id, now: 2_000) == nil && s.lookup(flooder[999].id, now: 2_000) != nil)
        // A full table of live sessions of other tokens: refused, nobody signed out.
        let full = ConsoleSessions(maxSessions: 3, maxPerToken: 4)
        let live = try (0..<3).map { try #require(full.create(tokenID: "t\($0)", now: 0)) }
        #expect(full.create(tokenID: "late", now: 1) == nil)
        for l in live { #expect(full.lookup(l.id, now: 2) != nil) }
        // Once they expire there is room again.
        #expect(full.create(tokenID: "late", now: full.lifetime + 1) != nil)
    }

    @Test func formFields() {
        #expect(ConsoleSecurity.formFields("a=1&b=x+y%21&c=")! == ["a": "1", "b": "x y!", "c": ""])
        #expect(ConsoleSecurity.formFields("csrf=a&csrf=b") == nil)   // smuggled second value
        #expect(ConsoleSecurity.formFields("a=%zz") == nil)
        #expect(ConsoleSecurity.formFields("=x") == nil)
        #expect(ConsoleSecurity.formFields("")! == [:])
    }

    @Test func capabilitiesFollowThePolicyRoles() throws {
        let f = try ServiceFixture()
        func caps(_ role: String) -> ConsoleSecurity.Capabilities {
            let v = f.vault.acting(as: ProfileVault.Actor(name: "x", role: role))
            return ConsoleSecurity.Capabilities(permits: { v.permits($0) })
        }
        let auditor = caps("auditor"), trainer = caps("trainer"), officer = caps("privacy_officer"), support = caps("support")
        #expect(!auditor.reveal && !auditor.requests && auditor.audit && auditor.budget && auditor.policy && !auditor.keys)
        #expect(!trainer.requests && trainer.budget && !trainer.audit && !trainer.reveal && !trainer.subject)
        #expect(officer.requests && officer.subject && officer.consent && officer.keys && !officer.reveal && officer.policy)
        #expect(support.reveal && !support.subject && !support.requests)
        let nobody = caps("nobody")
        #expect(nobody == ConsoleSecurity.Capabilities(permits: { _ in false }))
    }
}

/// The console over the service's router: sign-in, sessions, CSRF, headers, role gating and
/// escaping, as a browser would meet them (the browser test, scripts/console-browser-test.py,
/// walks the same in Chromium).
@Suite struct ConsoleRouteTests {
    /// A browser's cookie jar, by hand.
    struct Browser: Sendable {
        let client: any TestClientProtocol
        var cookies: [String: String] = [:]

        struct Page {
            var status: HTTPResponse.Status
            var headers: HTTPFields
            var text: String
            func formValue(_ name: String) -> String? {
                guard let r = text.range(of: "name=\"\(name)\" value=\"") else { return nil }
                return String(text[r.upperBound...].prefix { $0 != "\"" })
            }
        }

        mutating func go(_ method: HTTPRequest.Method, _ uri: String, form: [(String, String)]? = nil, extraCookie: String? = nil) async throws -> Page {
            var headers: HTTPFields = [:]
            var jar = cookies.map { "\($0.key)=\($0.value)" }
            if let extraCookie { jar.append(extraCookie) }
            if !jar.isEmpty { headers[.cookie] = jar.joined(separator: "; ") }
            var body: ByteBuffer?
            if let form {
                headers[.contentType] = "application/x-www-form-urlencoded"
                body = ByteBuffer(string: form.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" }.joined(separator: "&"))
            }
            let r = try await client.execute(uri: uri, method: method, headers: headers, body: body)
            for field in r.headers where field.name == .setCookie {
                let pair = field.value.split(separator: ";")[0].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(pair[0]), value = pair.count > 1 ? String(pair[1]) : ""
                if value.isEmpty || field.value.contains("Max-Age=0") { cookies[name] = nil } else { cookies[name] = value }
            }
            return Page(status: r.status, headers: r.headers, text: String(buffer: r.body))
        }

        /// Signs in with `token`; the answer to the sign-in POST.
        mutating func signIn(_ token: String) async throws -> Page {
            let form = try await go(.get, "/console/sign-in")
            let nonce = try #require(form.formValue("csrf"))
            return try await go(.post, "/console/sign-in", form: [("csrf", nonce), ("token", token)])
        }

        mutating func csrf(_ page: String) async throws -> String {
            let p = try await go(.get, page)
            return try #require(p.formValue("csrf"))
        }
    }

    @Test func withoutASessionEveryPageRedirectsToSignIn() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            for path in ["/console/", "/console/requests", "/console/audit", "/console/keys", "/console/subject"] {
                let p = try await b.go(.get, path)
                #expect(p.status == .seeOther, "\(path)")
                #expect(p.headers[.location] == "/console/sign-in")
            }
            // A bearer token is not a console session.
            var headers: HTTPFields = [:]
            headers[.authorization] = "Bearer \(f.tokens["privacy_officer"]!)"
            let r = try await client.execute(uri: "/console/requests", method: .get, headers: headers)
            #expect(r.status == .seeOther)
            // A forged session cookie neither.
            let forged = try await b.go(.get, "/console/requests", extraCookie: "pv_console=\(ConsoleSessions.randomToken())")
            #expect(forged.status == .seeOther)
        }
    }

    @Test func signInGivesAFlaggedSessionCookieAndSecurityHeaders() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            let signIn = try await b.go(.get, "/console/sign-in")
            #expect(signIn.status == .ok)
            let p = try await b.signIn(f.tokens["privacy_officer"]!)
            #expect(p.status == .seeOther)
            let cookie = try #require(p.headers[values: .setCookie].first { $0.hasPrefix("pv_console=") })
            for flag in ["HttpOnly", "SameSite=Strict", "Path=/console/", "Max-Age="] { #expect(cookie.contains(flag)) }
            #expect(!cookie.contains("Secure"))   // no TLS in this test
            let page = try await b.go(.get, "/console/requests")
            #expect(page.status == .ok)
            #expect(page.text.contains("<h1>Requests</h1>"))
            let csp = try #require(page.headers[HTTPFields.Element.Name("content-security-policy")!])
            #expect(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"))
            #expect(page.headers[HTTPFields.Element.Name("x-frame-options")!] == "DENY")
            #expect(page.headers[HTTPFields.Element.Name("referrer-policy")!] == "no-referrer")
            #expect(page.headers[.cacheControl] == "no-store")
            // No inline script or style in the page.
            #expect(!page.text.contains("<script>") && !page.text.contains("<style") && !page.text.contains(" style=\""))
        }
    }

    @Test func secureFlagWhenTLS() async throws {
        var o = ServiceFixture.defaultOptions
        o.consoleSecureCookies = true
        let f = try ServiceFixture(options: o)
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            let p = try await b.signIn(f.tokens["auditor"]!)
            let cookie = try #require(p.headers[values: .setCookie].first { $0.hasPrefix("pv_console=") })
            #expect(cookie.contains("; Secure"))
        }
    }

    /// A wrong method on a console route is 405 with `Allow` (SPEC §8), as on the API; every
    /// listed console route is routed, and nothing happens on the refused method.
    @Test func aWrongMethodOnAConsoleRouteIs405WithAllow() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            for (method, path, allow) in [(HTTPRequest.Method.put, "/console/requests", "GET, HEAD, POST"),
                                          (.get, "/console/keys/rotate", "POST"), (.delete, "/console/sign-in", "GET, HEAD, POST"),
                                          (.post, "/console/budget", "GET, HEAD"), (.patch, "/console/requests/req_0123456789abcdef/fulfil", "POST")] {
                let p = try await b.go(method, path)
                #expect(p.status == .methodNotAllowed, "\(method) \(path)")
                #expect(p.headers[.allow] == allow, "\(method) \(path): \(p.headers[.allow] ?? "none")")
            }
            // (A route with a request id may answer 404 for an unknown request: left out.)
            for r in VaultRoutes.console where !r.path.contains("{") && r.path != "/console/sign-out" {
                let p = try await b.go(HTTPRequest.Method(r.method)!, r.path)
                #expect(p.status != .notFound && p.status != .methodNotAllowed, "\(r.method) \(r.path): \(p.status)")
            }
        }
    }

    @Test func forgedOrMissingCSRFIsRefused() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            let csrf = try await b.csrf("/console/keys")
            let officer = f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer"))
            let before = try officer.keyStatus().active
            for token in [nil, ConsoleSessions.randomToken(), "x"] {
                var form = [("confirm", "yes")]
                if let token { form.append(("csrf", token)) }
                let p = try await b.go(.post, "/console/keys/rotate", form: form)
                #expect(p.status == .forbidden)
            }
            #expect(try officer.keyStatus().active == before)
            // Another session's CSRF token is not this session's.
            var other = Browser(client: client)
            _ = try await other.signIn(f.tokens["privacy_officer"]!)
            let p = try await other.go(.post, "/console/keys/rotate", form: [("csrf", csrf), ("confirm", "yes")])
            #expect(p.status == .forbidden)
            // The right one works.
            let ok = try await b.go(.post, "/console/keys/rotate", form: [("csrf", csrf), ("confirm", "yes")])
            #expect(ok.status == .ok, "\(ok.text)")
            #expect(try officer.keyStatus().active != before)
            // The sign-in form without its cookie (a form posted from another site).
            var fresh = Browser(client: client)
            let signin = try await fresh.go(.get, "/console/sign-in")
            let nonce = try #require(signin.formValue("csrf"))
            fresh.cookies = [:]
            let refused = try await fresh.go(.post, "/console/sign-in", form: [("csrf", nonce), ("token", f.tokens["auditor"]!)])
            #expect(refused.status == .forbidden)
            #expect(fresh.cookies["pv_console"] == nil)
        }
    }

    @Test func failedSignInIsCountedAndAudited() async throws {
        var o = ServiceFixture.defaultOptions
        o.authFailureLimit = 3
        let f = try ServiceFixture(options: o)
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            let first = try await b.signIn("not-a-token")
            #expect(first.status == .unauthorized)
            #expect(first.text.contains("unknown token"))
            #expect(b.cookies["pv_console"] == nil)
            _ = try await b.signIn("not-a-token-either")
            _ = try await b.signIn("still-not")
            // Over the limit: 429, even with a valid token (the address is locked out).
            let locked = try await b.signIn(f.tokens["auditor"]!)
            #expect(locked.status == .tooManyRequests)
            #expect(locked.headers[.retryAfter] != nil)
        }
        let failed = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "auth.failed" }
        #expect(failed.count == 3)
    }

    @Test func revokedTokenEndsItsSessions() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["auditor"]!)
            let r1 = try await b.go(.get, "/console/audit")

            #expect(r1.status == .ok)
            var file = try TokenFile.load(path: f.dir + "/tokens.json")
            let id = try #require(file.identities.first { $0.role == "auditor" }).tokenID
            #expect(try file.revoke(id: id))
            try file.save()
            let p = try await b.go(.get, "/console/audit")
            #expect(p.status == .seeOther)
            #expect(p.headers[.location] == "/console/sign-in?ended=1")
            #expect(b.cookies["pv_console"] == nil)
            // Signing in again with the revoked token fails.
            let r2 = try await b.signIn(f.tokens["auditor"]!)

            #expect(r2.status == .unauthorized)
        }
        #expect(try f.auditEntries().contains { $0["api.operation"]?.stringValue == "auth.failed" })
    }

    @Test func signOutEndsTheSession() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["auditor"]!)
            let session = try #require(b.cookies["pv_console"])
            let csrf = try await b.csrf("/console/audit")
            let r3 = try await b.go(.post, "/console/sign-out", form: [("csrf", csrf)])

            #expect(r3.status == .seeOther)
            // The old cookie no longer works, even if the browser kept it.
            let p = try await b.go(.get, "/console/audit", extraCookie: "pv_console=\(session)")
            #expect(p.status == .seeOther)
        }
    }

    @Test func rolesSeeOnlyTheirPagesAndAreRefusedTheOthers() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            var auditor = Browser(client: client)
            _ = try await auditor.signIn(f.tokens["auditor"]!)
            let home = try await auditor.go(.get, "/console/")
            #expect(home.status == .ok)
            #expect(home.text.contains("href=\"/console/audit\"") && !home.text.contains("href=\"/console/requests\""))
            let r4 = try await auditor.go(.get, "/console/requests")

            #expect(r4.status == .forbidden)
            let r5 = try await auditor.go(.get, "/console/keys")

            #expect(r5.status == .forbidden)
            let r6 = try await auditor.go(.get, "/console/budget")

            #expect(r6.status == .ok)
            let r7 = try await auditor.go(.get, "/console/policy")

            #expect(r7.status == .ok)
            // No "reveal" for an auditor, even by posting the form.
            let csrf = try await auditor.csrf("/console/audit")
            let reveal = try await auditor.go(.post, "/console/subject/reveal", form: [("csrf", csrf), ("customer_id", "C1"), ("purpose", "customer_support")])
            #expect(reveal.status == .forbidden)
            var trainer = Browser(client: client)
            _ = try await trainer.signIn(f.tokens["trainer"]!)
            let t = try await trainer.go(.get, "/console/")
            #expect(!t.text.contains("href=\"/console/requests\"") && t.text.contains("href=\"/console/budget\""))
            let r8 = try await trainer.go(.get, "/console/requests")

            #expect(r8.status == .forbidden)
            let r9 = try await trainer.go(.get, "/console/budget")

            #expect(r9.status == .ok)
        }
        // The refusals are audited as denied, as the JSON API's are.
        let denied = try f.auditEntries().filter { $0["status"]?.stringValue == "denied" && $0["api.operation"]?.stringValue == "requests.list" }
        #expect(denied.count >= 2)
    }

    @Test func hostileValuesAreEscaped() async throws {
        let f = try ServiceFixture()
        let hostile = "<script>alert(1)</script>\"'&"
        try await f.app.test(.router) { client in
            // Added once the service runs: it rereads the changed tokens file.
            var file = try TokenFile.load(path: f.dir + "/tokens.json")
            let token = file.add(actor: hostile, role: "privacy_officer")
            try file.save()
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(token)
            let home = try await b.go(.get, "/console/requests")
            #expect(!home.text.contains("<script>alert(1)"))
            #expect(home.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"))
            let csrf = try #require(home.formValue("csrf"))
            // A hostile reason and note go through forms; what the pages echo stays escaped.
            let opened = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "access"), ("customer_id", "C1"),
                                                                           ("note", hostile)])
            #expect(opened.status == .ok, "\(opened.text)")
            #expect(!opened.text.contains("<script>alert(1)"))
            let unknown = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "<img src=x onerror=alert(1)>"), ("customer_id", "C1")])
            #expect(!unknown.text.contains("<img src=x"))
        }
    }

    @Test func officerOpensAndFulfilsAnAccessRequestAndRevokesConsent() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.router) { client in
            try await Client(client: client, tokens: f.tokens).seed()
            var b = Browser(client: client)
            _ = try await b.signIn(f.tokens["privacy_officer"]!)
            let csrf = try await b.csrf("/console/requests")
            let opened = try await b.go(.post, "/console/requests", form: [("csrf", csrf), ("type", "access"), ("customer_id", "C2")])
            #expect(opened.status == .ok)
            let id = try #require(opened.text.range(of: "Opened request ").map { String(opened.text[$0.upperBound...].prefix(20)) })
            #expect(!opened.text.contains("C2\""))   // the customer ID is not echoed in the register
            let fulfilled = try await b.go(.post, "/console/requests/\(id)/fulfil", form: [("csrf", csrf)])
            #expect(fulfilled.status == .ok, "\(fulfilled.text)")
            #expect(fulfilled.text.contains("id=\"export-sha256\""))
            #expect(fulfilled.text.contains("id=\"request-status\">done<"))
            // Consent withdrawn from the subject page goes through the vault (and its ledger).
            let subject = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "C1")])
            #expect(subject.status == .ok)
            #expect(subject.text.contains("data-purpose=\"analytics\""))
            let revoked = try await b.go(.post, "/console/subject/consent", form: [("csrf", csrf), ("customer_id", "C1"), ("purpose", "analytics"), ("granted", "false")])
            #expect(revoked.status == .ok, "\(revoked.text)")
            let states = try f.vault.acting(as: ProfileVault.Actor(name: "t", role: "privacy_officer")).consentStatus(customerID: "C1")
            #expect(states.first { $0.purpose == "analytics" }?.state.granted == false)
            // An unknown subject is a page with the error, never the ID echoed back unescaped.
            let unknown = try await b.go(.post, "/console/subject", form: [("csrf", csrf), ("customer_id", "<b>nobody</b>")])
            #expect(unknown.status == .notFound)
            #expect(!unknown.text.contains("<b>nobody"))
        }
    }

    @Test func templatesAllParseAndNeverRenderUnescaped() throws {
        #expect(ConsoleTemplatesProbe.allParse)
        #expect(ConsoleTemplatesProbe.unescapedUses.isEmpty, "\(ConsoleTemplatesProbe.unescapedUses)")
    }
}
