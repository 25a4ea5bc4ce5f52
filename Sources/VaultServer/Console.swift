public import Hummingbird
import Foundation
import Logging
import DifferentialPrivacy
import ProfileVault
import VaultValues

/// The privacy console (issue 21, docs/console.md): server-rendered HTML pages under
/// `/console/`, served by the same process over the same ``VaultService`` as the JSON API.
/// Each page acts through `service.vault(context, permission:action:)` with the session's
/// token identity, so it passes the same role checks, consent gate and audit log as the
/// routes of docs/http.md. The console's routes are HTML, not part of the JSON contract
/// (docs/openapi.yaml does not describe them).
final class Console: Sendable {
    let service: VaultService
    let tokens: ReloadingTokenFile
    let sessions: ConsoleSessions
    let secureCookies: Bool
    let authFailures: AuthFailureGate
    let logger: Logger

    init(service: VaultService, tokens: ReloadingTokenFile, sessions: ConsoleSessions, secureCookies: Bool,
         authFailures: AuthFailureGate, logger: Logger) {
        self.service = service
        self.tokens = tokens
        self.sessions = sessions
        self.secureCookies = secureCookies
        self.authFailures = authFailures
        self.logger = logger
    }

    /// The cookie that binds the sign-in form to the browser that loaded it (login CSRF).
    static let signinCookie = "pv_signin"

    /// What a page needs to know of the request's signed-in user.
    struct User {
        var session: ConsoleSessions.Session
        var actor: String
        var role: String
        var caps: ConsoleSecurity.Capabilities
    }

    // MARK: - Sessions

    /// The request's signed-in user: its session cookie names a live session whose token the
    /// tokens file still lists as valid now. Otherwise a redirect to the sign-in page (and a
    /// session whose token was revoked, expired or removed is ended, its failure counted and
    /// audited like a refused bearer token).
    func user(_ request: Request, _ context: inout VaultRequestContext) async throws -> User {
        let now = AuditLogClock.nowMillis
        guard let id = ConsoleSecurity.cookie(named: ConsoleSecurity.cookieName, in: request.headers[.cookie]),
              let session = sessions.lookup(id, now: now) else {
            throw ConsoleRedirect(location: "/console/sign-in", clearSession: true)
        }
        guard let file = tokens.current() else {
            throw APIError(.serviceUnavailable, "tokens cannot be checked right now; try again later")
        }
        switch file.check(tokenID: session.tokenID, nowMillis: now) {
        case .valid(let identity):
            context.identity = identity
            let v = service.base.acting(as: ProfileVault.Actor(name: identity.actor, role: identity.role), requestID: context.requestID)
            return User(session: session, actor: identity.actor, role: identity.role,
                        caps: ConsoleSecurity.Capabilities(permits: { v.permits($0) }))
        case .refused(let failure):
            sessions.endAll(tokenID: session.tokenID)
            _ = await authenticationFailed(failure, context: context)
            throw ConsoleRedirect(location: "/console/sign-in?ended=1", clearSession: true)
        }
    }

    /// Counts a failed authentication for the client address and, within the limit, audits it
    /// (`auth.failed`), as ``ServiceMiddleware`` does for a refused bearer token. Returns the
    /// `Retry-After` seconds when the address is over the limit.
    func authenticationFailed(_ failure: AuthenticationFailure, context: VaultRequestContext) async -> Int? {
        let client = AuthFailureLimiter.clientKey(context.clientAddress)
        switch authFailures.limiter.recordFailure(client) {
        case .limited(let seconds):
            return seconds
        case .counted:
            let gate = authFailures
            let requestID = context.requestID
            do {
                try await blocking { try gate.vault.recordAuthenticationFailure(failure, client: client, requestID: requestID) }
            } catch {
                logger.error("could not audit a failed authentication", metadata: ["request_id": .string(requestID)])
            }
            return nil
        }
    }

    /// A POST form's fields, after its CSRF token was checked against the session's (403 when
    /// missing or wrong).
    func form(_ request: Request, _ user: User, limit: Int? = nil) async throws -> [String: String] {
        let fields = try await formBody(request, limit: limit)
        guard ConsoleSecurity.csrfMatches(presented: fields["csrf"], session: user.session.csrf) else {
            throw APIError(.forbidden, "the form's CSRF token does not match this session: reload the page and try again")
        }
        return fields
    }

    func formBody(_ request: Request, limit: Int? = nil) async throws -> [String: String] {
        var request = request
        let buffer = try await request.collectBody(upTo: limit ?? service.options.maxBodyBytes)
        guard let text = String(bytes: buffer.readableBytesView, encoding: .utf8),
              let fields = ConsoleSecurity.formFields(text) else {
            throw APIError.badRequest("the form could not be read")
        }
        return fields
    }

    // MARK: - Rendering

    static let pages: [(key: String, href: String, label: String, about: String)] = [
        ("requests", "/console/requests", "Requests", "the data-subject request register: open, extend, fulfil, deny"),
        ("subject", "/console/subject", "Subject", "a subject's consent, restriction, retention and accesses"),
        ("budget", "/console/budget", "Budget", "differential-privacy budget per purpose, releases and refusals"),
        ("audit", "/console/audit", "Audit", "the chain head, verification, entries and exports"),
        ("policy", "/console/policy", "Policy", "the policy in force, its history and differences"),
        ("keys", "/console/keys", "Keys", "key versions, rotation and retirement"),
    ]

    static func allowed(_ key: String, _ caps: ConsoleSecurity.Capabilities) -> Bool {
        switch key {
        case "requests": caps.requests
        case "subject": caps.subject || caps.reveal
        case "budget": caps.budget
        case "audit": caps.audit
        case "policy": caps.policy
        case "keys": caps.keys
        default: false
        }
    }

    /// The context every page of a signed-in user gets: title, navigation (only the pages the
    /// role may use), the user, the CSRF token.
    func base(_ user: User, title: String, current: String?) -> [String: Any] {
        let nav: [[String: Any]] = Self.pages.filter { Self.allowed($0.key, user.caps) }.map {
            ["href": $0.href, "label": $0.label, "about": $0.about, "current": $0.key == current]
        }
        return ["title": title, "signedIn": true, "nav": nav, "actor": user.actor, "role": user.role, "csrf": user.session.csrf]
    }

    static func page(_ template: String, _ context: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        guard let html = ConsoleTemplates.render(template, context) else {
            return Response(status: .internalServerError, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: "the console's templates did not load\n")))
        }
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static func errorPage(status: HTTPResponse.Status, message: String, signedIn: [String: Any]? = nil) -> Response {
        var c = signedIn ?? ["title": "Error"]
        c["title"] = "\(status.code) \(status.reasonPhrase)"
        c["error"] = message
        return page("error", c, status: status)
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }

    static func download(_ bytes: [UInt8], type: String, filename: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .contentDisposition: "attachment; filename=\"\(filename)\""],
                 body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// How many field/value rows the subject page's rectify form offers.
    static let rectifyRows = 3

    static func day(_ ms: Int64) -> String { String(Vault.isoTime(millis: ms).prefix(10)) }
    static func minute(_ ms: Int64) -> String { String(Vault.isoTime(millis: ms).prefix(16)).replacingOccurrences(of: "T", with: " ") }
    /// Unix seconds as a day / a minute (a value too large for milliseconds: "-").
    static func daySeconds(_ s: Int64) -> String {
        let (ms, overflow) = s.multipliedReportingOverflow(by: 1000)
        return overflow ? "-" : day(ms)
    }
    static func minuteSeconds(_ s: Int64) -> String {
        let (ms, overflow) = s.multipliedReportingOverflow(by: 1000)
        return overflow ? "-" : minute(ms)
    }

    /// A number of epsilon as text: up to 6 significant decimals, no exponent for the usual range.
    static func eps(_ x: Double) -> String {
        guard x.isFinite else { return "-" }
        var s = String(format: "%.6f", x)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
}

extension Console {
    /// Per purpose, the epsilon left after each release of this period (successful `query.*`
    /// and `train` entries of the audit log, with their epsilon), as an SVG polyline's points:
    /// x from the period's start (40) to now (540), y from the limit (10) to 0 (150).
    static func burndown(_ states: [BudgetState], entries: [[String: String]], nowMillis: Int64) -> [[String: Any]] {
        states.compactMap { s -> [String: Any]? in
            guard s.limit > 0 else { return nil }
            let (start, overflow) = s.periodStart.multipliedReportingOverflow(by: 1000)
            guard !overflow, nowMillis > start else { return nil }
            let span = Double(nowMillis - start)
            func x(_ t: Int64) -> Int { 40 + Int((500 * min(1, max(0, Double(t - start) / span))).rounded()) }
            func y(_ left: Double) -> Int { 150 - Int((140 * min(1, max(0, left / s.limit))).rounded()) }
            var left = s.limit
            var points = ["40,10"]
            var count = 0
            for e in entries {
                let action = e["api.operation"] ?? ""
                // A zCDP purpose's charges are rho, recorded in the entry's detail, not as epsilon.
                guard action.hasPrefix("query.") || action == "train", e["status"] == "ok", e["unmapped.purpose"] == s.purpose,
                      let eps = s.zcdp ? Rho.charged(action: action, auditDetail: e["status_detail"]) : e["unmapped.epsilon"].flatMap(Double.init), eps.isFinite,
                      let t = e["time"].flatMap({ Int64($0) }), t >= start else { continue }
                points.append("\(x(t)),\(y(left))")
                left -= eps
                points.append("\(x(t)),\(y(left))")
                count += 1
            }
            points.append("540,\(y(left))")
            return ["purpose": s.purpose, "points": points.joined(separator: " "), "limitText": Console.eps(s.limit), "count": count,
                    "from": Console.day(start), "unitText": s.zcdp ? "rho" : "epsilon", "unitTitle": s.zcdp ? "Rho" : "Epsilon"]
        }
    }
}

/// Sent to the sign-in page (or elsewhere) instead of a page.
struct ConsoleRedirect: Error {
    var location: String
    var clearSession = false
}

/// Every console answer carries the security headers (CSP without inline script or style,
/// no framing, no referrer, no caching); errors become HTML pages (never the JSON of the API),
/// a missing session a redirect to the sign-in page.
struct ConsoleMiddleware: RouterMiddleware {
    typealias Context = VaultRequestContext
    let secureCookies: Bool
    let serverPaths: [(path: String, replacement: String)]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let r as ConsoleRedirect {
            response = Console.redirect(r.location)
            if r.clearSession {
                response.headers.append(HTTPFields.Element(name: .setCookie, value: ConsoleSecurity.clearedCookie(secure: secureCookies)))
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as APIError where e.status == .serviceUnavailable && e.message == ServiceMiddleware.timedOutMessage {
            throw e
        } catch {
            var e = APIError.from(error)
            if e.status.code >= 500 {
                e.message = "the console could not complete this request (see the service log, request \(context.requestID))"
            } else {
                for (path, replacement) in serverPaths where e.message.contains(path) {
                    e.message = e.message.replacingOccurrences(of: path, with: replacement)
                }
            }
            response = Console.errorPage(status: e.status, message: e.message)
        }
        for (name, value) in ConsoleSecurity.headers {
            if let n = HTTPFields.Element.Name(name) { response.headers[n] = value }
        }
        return response
    }
}

// MARK: - Routes

func addConsoleRoutes(_ router: Router<VaultRequestContext>, _ service: VaultService, tokens: ReloadingTokenFile,
                      authFailures: AuthFailureGate, serverPaths: [(path: String, replacement: String)], logger: Logger) {
    let options = service.options
    let console = Console(service: service, tokens: tokens, sessions: options.consoleSessions, secureCookies: options.consoleSecureCookies,
                          authFailures: authFailures, logger: logger)
    let group = router.group("console")
    group.add(middleware: ConsoleMiddleware(secureCookies: options.consoleSecureCookies,
                                            serverPaths: serverPaths.filter { $0.path.contains("/") && $0.path.count >= 4 }
                                                .sorted { $0.path.count > $1.path.count }))

    group.get("static/console.css") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: ConsoleStatic.css)))
    }
    group.get("static/console.js") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: ConsoleStatic.js)))
    }

    // Sign-in: the form carries a random value also set as a short-lived cookie; the POST must
    // bring both, equal (a page of another site cannot sign the browser in as someone else).
    group.get("sign-in") { request, _ -> Response in
        let nonce = ConsoleSessions.randomToken()
        var c: [String: Any] = ["title": "Sign in", "signinCSRF": nonce]
        if request.uri.queryParameters["ended"] != nil { c["error"] = "Your session ended: sign in again." }
        var response = Console.page("signin", c)
        response.headers.append(HTTPFields.Element(name: .setCookie, value: "\(Console.signinCookie)=\(nonce); Path=\(ConsoleSecurity.cookiePath); Max-Age=900; HttpOnly; SameSite=Strict" + (console.secureCookies ? "; Secure" : "")))
        return response
    }

    group.post("sign-in") { request, context -> Response in
        let fields = try await console.formBody(request)
        let cookie = ConsoleSecurity.cookie(named: Console.signinCookie, in: request.headers[.cookie])
        guard let cookie, ConsoleSecurity.csrfMatches(presented: fields["csrf"], session: cookie) else {
            throw APIError(.forbidden, "the sign-in form expired or did not come from this console: load the sign-in page again")
        }
        func again(_ status: HTTPResponse.Status, _ message: String) -> Response {
            let nonce = ConsoleSessions.randomToken()
            var response = Console.page("signin", ["title": "Sign in", "signinCSRF": nonce, "error": message], status: status)
            response.headers.append(HTTPFields.Element(name: .setCookie, value: "\(Console.signinCookie)=\(nonce); Path=\(ConsoleSecurity.cookiePath); Max-Age=900; HttpOnly; SameSite=Strict" + (console.secureCookies ? "; Secure" : "")))
            return response
        }
        let client = AuthFailureLimiter.clientKey(context.clientAddress)
        if let seconds = console.authFailures.limiter.lockout(client) {
            var r = again(.tooManyRequests, ServiceMiddleware.lockedOutMessage + "; retry after \(seconds) s")
            r.headers[.retryAfter] = String(seconds)
            return r
        }
        guard let file = console.tokens.current() else {
            return again(.serviceUnavailable, "tokens cannot be checked right now; try again later")
        }
        let token = (fields["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let failure: AuthenticationFailure
        if token.isEmpty {
            failure = .missing
        } else {
            switch file.check(token: token, nowMillis: AuditLogClock.nowMillis) {
            case .valid(let id):
                guard let session = console.sessions.create(tokenID: id.tokenID, now: AuditLogClock.nowMillis) else {
                    return again(.serviceUnavailable, "too many console sessions are open on this node; try again later")
                }
                // The sign-in is on the record (`auth.sign_in`) or it does not happen.
                let signedIn = service.base.acting(as: ProfileVault.Actor(name: id.actor, role: id.role), requestID: context.requestID)
                do {
                    try await blocking { try signedIn.recordConsoleSession(signedIn: true, tokenID: id.tokenID, client: client) }
                } catch {
                    console.sessions.end(session.id)
                    console.logger.error("could not audit a console sign-in", metadata: ["request_id": .string(context.requestID)])
                    return again(.serviceUnavailable, "the sign-in could not be recorded in the audit log; try again later")
                }
                var response = Console.redirect("/console/")
                response.headers.append(HTTPFields.Element(name: .setCookie, value: ConsoleSecurity.sessionCookie(
                    session.id, maxAge: console.sessions.cookieMaxAge, secure: console.secureCookies)))
                response.headers.append(HTTPFields.Element(name: .setCookie, value: "\(Console.signinCookie)=; Path=\(ConsoleSecurity.cookiePath); Max-Age=0; HttpOnly; SameSite=Strict" + (console.secureCookies ? "; Secure" : "")))
                return response
            case .refused(let f):
                failure = f
            }
        }
        if let seconds = await console.authenticationFailed(failure, context: context) {
            var r = again(.tooManyRequests, ServiceMiddleware.lockedOutMessage + "; retry after \(seconds) s")
            r.headers[.retryAfter] = String(seconds)
            return r
        }
        let message = failure == .missing ? "enter your bearer token" : "sign-in failed: \(failure.message)"
        return again(.unauthorized, message)
    }

    group.post("sign-out") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        _ = try await console.form(request, user)
        console.sessions.end(user.session.id)
        // `auth.sign_out`; the session ends even when the entry cannot be written (logged).
        let v = service.base.acting(as: ProfileVault.Actor(name: user.actor, role: user.role), requestID: context.requestID)
        let client = AuthFailureLimiter.clientKey(context.clientAddress), tokenID = user.session.tokenID
        do {
            try await blocking { try v.recordConsoleSession(signedIn: false, tokenID: tokenID, client: client) }
        } catch {
            console.logger.error("could not audit a console sign-out", metadata: ["request_id": .string(context.requestID)])
        }
        var response = Console.redirect("/console/sign-in")
        response.headers.append(HTTPFields.Element(name: .setCookie, value: ConsoleSecurity.clearedCookie(secure: console.secureCookies)))
        return response
    }

    group.get("/") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        var c = console.base(user, title: "Console", current: nil)
        c["nav"] = (c["nav"] as? [[String: Any]]) ?? []
        return Console.page("home", c)
    }

    addConsoleRequestRoutes(group, console)
    addConsoleSubjectRoutes(group, console)
    addConsoleReviewRoutes(group, console)
}

// MARK: - Requests

func addConsoleRequestRoutes(_ group: RouterGroup<VaultRequestContext>, _ console: Console) {
    let service = console.service

    @Sendable func row(_ e: RegisterEntry, now: Int64) -> [String: Any] {
        let pseudonym = Vault.hex(e.pseudonym)
        var r: [String: Any] = [
            "id": e.id, "type": e.type.rawValue, "pseudonym": pseudonym, "pseudonymShort": String(pseudonym.prefix(12)) + "…",
            "received": Console.day(e.receivedMillis), "due": Console.day(e.currentDueMillis), "extended": e.extendedDueMillis != nil,
            "daysLeft": e.status == .open ? String(e.daysLeft(nowMillis: now)) : "-", "overdue": e.isOverdue(nowMillis: now),
            "status": e.status.rawValue, "open": e.status == .open, "openedBy": e.openedBy,
        ]
        if let o = e.outcome {
            r["outcome"] = o
            if e.type == .erasure, o.hasPrefix("receipt:") || o.hasPrefix("erased:") { r["receipt"] = true }
        }
        return r
    }

    @Sendable func registerPage(_ user: Console.User, _ v: Vault, filter: Vault.RequestFilter?, flash: String? = nil, error: String? = nil,
                      status: HTTPResponse.Status = .ok) async throws -> Response {
        let (list, now) = try await blocking { try v.listRequests(filter) }
        // Overdue first (most overdue first), then by due date.
        let sorted = list.sorted { a, b in
            let ao = a.isOverdue(nowMillis: now), bo = b.isOverdue(nowMillis: now)
            if ao != bo { return ao }
            return a.currentDueMillis < b.currentDueMillis
        }
        var c = console.base(user, title: "Requests", current: "requests")
        c["rows"] = sorted.map { row($0, now: now) }
        c["filters"] = ([("", "all")] + Vault.RequestFilter.allCases.map { ($0.rawValue, $0.rawValue) }).map { value, label in
            ["value": value, "label": label, "selected": (filter?.rawValue ?? "") == value] as [String: Any]
        }
        c["types"] = RequestType.allCases.map(\.rawValue)
        c["channels"] = ["web", "email", "letter", "phone"]
        if let flash { c["flash"] = flash }
        if let error { c["error"] = error }
        return Console.page("requests", c, status: status)
    }

    group.get("requests") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "requests", action: "requests.list")
        let filter = try request.uri.queryParameters["status"].flatMap { s -> Vault.RequestFilter? in
            s.isEmpty ? nil : try Vault.requestFilter(String(s))
        }
        return try await registerPage(user, v, filter: filter)
    }

    group.post("requests") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "requests", action: "requests.open")
        let f = try await console.form(request, user)
        let type = f["type"] ?? ""
        let id = (f["customer_id"] ?? "").trimmingCharacters(in: .whitespaces)
        guard !id.isEmpty, id.utf8.count <= 1024 else { throw APIError.badRequest("customer ID: required (at most 1024 bytes)") }
        func given(_ k: String) -> String? { f[k].flatMap { $0.isEmpty ? nil : $0 } }
        let received = given("received"), channel = given("channel"), note = given("note")
        do {
            let e = try await redacting([id] + (note.map { [$0] } ?? [])) {
                try await blocking { try v.openRequest(type: type, customerID: id, received: received, channel: channel, note: note) }
            }
            return try await registerPage(user, v, filter: nil, flash: "Opened request \(e.id) (\(e.type.rawValue)), due \(Console.day(e.dueMillis)).")
        } catch let e as VaultError where e.kind != .internalFailure && e.kind != .integrity {
            return try await registerPage(user, v, filter: nil, error: e.message, status: APIError.from(e).status)
        }
    }

    /// The register entry `request_id` (404 when none).
    @Sendable func entry(_ v: Vault, _ context: VaultRequestContext) async throws -> (RegisterEntry, Int64) {
        let id = try requestID(context)
        let (list, now) = try await blocking { try v.listRequests(nil) }
        guard let e = list.first(where: { $0.id == id }) else { throw VaultError(.notFound, "no request with this id in the register") }
        return (e, now)
    }

    @Sendable func requestPage(_ user: Console.User, _ e: RegisterEntry, now: Int64, error: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        var c = console.base(user, title: "Request \(e.id)", current: "requests")
        var r = row(e, now: now)
        r["needsDone"] = e.type == .rectification
        r["needsSubjectPage"] = e.type == .rectification || e.type == .objection
        let help: String = switch e.type {
        case .access: "Fulfilling prepares the Art. 15 access export; its SHA-256 is recorded in the register."
        case .portability: "Fulfilling prepares the subject's own data, machine-readable (Art. 20); its SHA-256 is recorded."
        case .erasure: "Fulfilling erases the subject (its key is shredded) and attaches the erasure receipt."
        case .restriction: "Fulfilling restricts the subject's processing (Art. 18)."
        case .objection: "First record the objection on the Subject page (look the subject up, then \"Record objection\" for the legitimate-interest purpose); fulfilling checks it and attaches the purposes."
        case .rectification: "First make the correction on the Subject page (look the subject up, then Rectify with the corrected values); then tick the confirmation here and fulfil."
        }
        r["fulfilHelp"] = help
        c["r"] = r
        if let error { c["error"] = error }
        return Console.page("request", c, status: status)
    }

    group.get("requests/{request_id}") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "requests", action: "requests.list")
        let (e, now) = try await entry(v, context)
        return requestPage(user, e, now: now)
    }

    group.get("requests/{request_id}/receipt") { request, context -> Response in
        var context = context
        _ = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "requests", action: "requests.list")
        let (e, _) = try await entry(v, context)
        guard e.type == .erasure, let outcome = e.outcome, outcome.hasPrefix("receipt:") || outcome.hasPrefix("erased:") else {
            throw VaultError(.notFound, "request \(e.id) has no erasure receipt")
        }
        let doc = JSONValue.object([
            ("request", .string(e.id)), ("type", .string(e.type.rawValue)), ("subject", .string(Vault.hex(e.pseudonym))),
            ("received", .string(Vault.isoTime(millis: e.receivedMillis))),
            ("closed_at", e.closedAtMillis.map { .string(Vault.isoTime(millis: $0)) } ?? .null),
            ("closed_by", e.closedBy.map(JSONValue.string) ?? .null), ("outcome", .string(outcome)),
        ])
        return Console.download(Array((doc.rendered(pretty: true) + "\n").utf8), type: "application/json; charset=utf-8",
                                filename: "erasure-receipt-\(e.id).json")
    }

    for action in ["fulfil", "extend", "deny"] {
        group.post("requests/{request_id}/\(action)") { request, context -> Response in
            var context = context
            let user = try await console.user(request, &context)
            let v = try await service.vault(context, permission: "requests", action: "requests.\(action)")
            let f = try await console.form(request, user)
            let id = try requestID(context)
            do {
                switch action {
                case "fulfil":
                    let done = f["done"] == "true"
                    let r = try await blocking { try v.fulfilRequest(id: id, confirmed: done) }
                    var c = console.base(user, title: "Request \(id) fulfilled", current: "requests")
                    c["id"] = r.request.id
                    c["type"] = r.request.type.rawValue
                    c["status"] = r.request.status.rawValue
                    if let o = r.request.outcome { c["outcome"] = o }
                    if let d = r.exportSHA256 { c["exportSHA256"] = d }
                    if let x = r.export { c["export"] = x.rendered(pretty: true) }
                    if r.request.type == .erasure { c["receipt"] = true }
                    c["flash"] = "Request \(id) is \(r.request.status.rawValue)."
                    return Console.page("fulfilled", c)
                default:
                    let reason = (f["reason"] ?? "").trimmingCharacters(in: .whitespaces)
                    guard !reason.isEmpty, reason.utf8.count <= 4096 else { throw APIError.badRequest("reason: required (at most 4096 bytes)") }
                    let e = try await redacting([reason]) {
                        try await blocking {
                            if action == "extend" { return try v.extendRequest(id: id, reason: reason) }
                            return try v.denyRequest(id: id, reason: reason)
                        }
                    }
                    return try await registerPage(user, v, filter: nil, flash: "Request \(e.id) \(action == "extend" ? "extended to \(Console.day(e.currentDueMillis))" : "denied").")
                }
            } catch let e as VaultError where e.kind == .invalidInput || e.kind == .usage || e.kind == .denied {
                // Shown on the request's page (e.g. an objection not yet recorded).
                let (current, now) = try await entry(v, context)
                return requestPage(user, current, now: now, error: e.message, status: APIError.from(e).status)
            }
        }
    }
}

// MARK: - Subject

func addConsoleSubjectRoutes(_ group: RouterGroup<VaultRequestContext>, _ console: Console) {
    let service = console.service

    /// The subject page's vault: `export` (the access report), else `get` (reveal only).
    @Sendable func subjectVault(_ user: Console.User, _ context: VaultRequestContext, action: String) async throws -> Vault {
        try await service.vault(context, permission: user.caps.subject || !user.caps.reveal ? "export" : "get", action: action)
    }

    @Sendable func subjectPage(_ user: Console.User, _ v: Vault, customerID: String?, flash: String? = nil, error: String? = nil,
                     revealed: (purpose: String, fields: [[String: Any]])? = nil, status: HTTPResponse.Status = .ok) async throws -> Response {
        var c = console.base(user, title: "Subject", current: "subject")
        c["canReveal"] = user.caps.reveal
        c["canConsent"] = user.caps.consent
        c["canRestrict"] = user.caps.restrict
        c["canRectify"] = user.caps.rectify
        c["purposeNames"] = v.policy.purposeOrder
        c["rectifyRows"] = (1...Console.rectifyRows).map { i -> [String: Any] in
            ["n": i, "fields": v.schema.fields.map(\.name).filter { $0 != v.schema.subjectIDField }]
        }
        if let flash { c["flash"] = flash }
        if let error { c["error"] = error }
        if let revealed {
            c["revealedPurpose"] = revealed.purpose
            c["revealed"] = revealed.fields
            c["hasRevealed"] = true
        }
        guard let id = customerID else { return Console.page("subject", c, status: status) }
        c["customerID"] = id
        if user.caps.subject {
            let found = try await redacting([id]) { () async throws -> (report: SubjectAccessReport?, erased: Vault.ErasedSubject?) in
                do {
                    return (try await blocking { try v.accessReport(customerID: id, format: .json) }, nil)
                } catch let e as VaultError where e.kind == .notFound {
                    // An erased subject: the suppression list's record (pseudonym, date, receipt).
                    guard let erased = try await blocking({ try v.erasedSubject(customerID: id) }) else { throw e }
                    return (nil, erased)
                }
            }
            if let erased = found.erased {
                c["erased"] = ["pseudonym": erased.pseudonym, "erasedAt": Console.minute(erased.erasedAtMillis),
                               "receipt": erased.receipt ?? "(none: erased before receipts were kept)"]
                return Console.page("subject", c, status: status)
            }
            guard let report = found.report else { throw VaultError(.internalFailure, "no access report") }
            var timeline: [[String: Any]] = []
            if user.caps.consent {
                let entries = try await redacting([id]) { try await blocking { try v.consentHistory(customerID: id) } }
                timeline = entries.map {
                    ["time": Console.minute($0.timeMillis), "purpose": $0.purpose, "granted": $0.granted ? "granted" : "withdrawn",
                     "actor": $0.actor, "source": $0.source ?? "", "policy": $0.policyVersion]
                }
            }
            c["hasTimeline"] = user.caps.consent
            c["timeline"] = timeline
            c["restrictTo"] = report.restricted ? "false" : "true"
            c["restrictLabel"] = report.restricted ? "Lift the restriction" : "Restrict processing"
            c["report"] = [
                "pseudonym": report.export.pseudonym,
                "restricted": report.restricted,
                "purposes": report.purposes.map { p -> [String: Any] in
                    let granted = p.consent?.granted
                    return ["name": p.name, "legalBasis": p.legalBasis, "consentRequired": p.consentRequired,
                            "consent": granted.map { $0 ? "granted" : "withdrawn" } ?? "never recorded",
                            "since": p.consent?.sinceMillis.map(Console.minute) ?? "", "applies": p.applies, "objection": p.objection,
                            "grantTo": granted == true ? "false" : "true", "actionLabel": granted == true ? "Withdraw consent" : "Record consent",
                            "canObject": p.legalBasis == "legitimate_interest" && !p.objection]
                },
                "retention": report.retention.map { r -> [String: Any] in
                    ["category": r.category, "keep": r.keep, "after": r.after, "date": r.date.map(Console.daySeconds) ?? "nothing covered yet"]
                },
                "accesses": report.accesses.reversed().map { a -> [String: Any] in
                    ["time": String(a.time.prefix(19)).replacingOccurrences(of: "T", with: " "), "actor": a.actor, "role": a.role,
                     "action": a.action, "purpose": a.purpose ?? "", "outcome": a.outcome]
                },
            ] as [String: Any]
        }
        return Console.page("subject", c, status: status)
    }

    group.get("subject") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await subjectVault(user, context, action: "export")
        return try await subjectPage(user, v, customerID: nil)
    }

    @Sendable func customer(_ f: [String: String]) throws -> String {
        let id = (f["customer_id"] ?? "").trimmingCharacters(in: .whitespaces)
        guard !id.isEmpty, id.utf8.count <= 1024 else { throw APIError.badRequest("customer ID: required (at most 1024 bytes)") }
        return id
    }

    /// Runs a subject action; a refusal of the store (unknown subject, consent not given, ...)
    /// is shown on the subject page rather than as an error page.
    @Sendable func onSubjectPage(_ user: Console.User, _ v: Vault, _ id: String, redacting more: [String] = [],
                       _ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let e as VaultError where e.kind == .notFound || e.kind == .invalidInput || e.kind == .usage {
            let status = APIError.from(e).status
            let message = e.removing(values: [id] + more.filter { !$0.isEmpty }).message
            if e.kind == .notFound { return try await subjectPage(user, v, customerID: nil, error: message, status: status) }
            return try await subjectPage(user, v, customerID: id, error: message, status: status)
        }
    }

    group.post("subject") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await subjectVault(user, context, action: "export")
        let id = try customer(try await console.form(request, user))
        return try await onSubjectPage(user, v, id) { try await subjectPage(user, v, customerID: id) }
    }

    group.post("subject/consent") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "consent", action: "consent.change")
        let f = try await console.form(request, user)
        let id = try customer(f)
        let purpose = f["purpose"] ?? ""
        guard let grantedText = f["granted"], grantedText == "true" || grantedText == "false" else {
            throw APIError.badRequest("granted: true or false")
        }
        let granted = grantedText == "true"
        return try await onSubjectPage(user, v, id) {
            _ = try await redacting([id]) { try await blocking { try v.setConsent(.one(id), purpose: purpose, granted: granted, source: "console") } }
            return try await subjectPage(user, v, customerID: id, flash: "Consent for \(purpose) \(granted ? "recorded" : "withdrawn").")
        }
    }

    group.post("subject/restriction") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let f = try await console.form(request, user)
        let restricted = f["restricted"] == "true"
        let v = try await service.vault(context, permission: "restrict", action: restricted ? "restrict" : "unrestrict")
        let id = try customer(f)
        return try await onSubjectPage(user, v, id) {
            _ = try await redacting([id]) { try await blocking { try v.setRestriction(customerID: id, restricted: restricted) } }
            return try await subjectPage(user, v, customerID: id, flash: restricted ? "Processing restricted." : "Restriction lifted.")
        }
    }

    // Objection (Art. 21) to a legitimate-interest purpose: the same `object` call as
    // POST /v1/subjects/{id}/consent with {"purpose", "objection": true} (audited `consent.object`).
    group.post("subject/objection") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "consent", action: "consent.change")
        let f = try await console.form(request, user)
        let id = try customer(f)
        let purpose = f["purpose"] ?? ""
        guard !purpose.isEmpty else { throw APIError.badRequest("purpose: required") }
        return try await onSubjectPage(user, v, id) {
            let n = try await redacting([id]) { try await blocking { try v.object(.one(id), purpose: purpose) } }
            return try await subjectPage(user, v, customerID: id, flash: n > 0 ? "Objection to \(purpose) recorded." : "The subject already objects to \(purpose).")
        }
    }

    // Rectification (Art. 16): the same `rectify` call as POST /v1/subjects/{id}/rectification
    // (audited `rectify`, naming the fields changed). The values are never shown back (the
    // form is rendered empty again, messages name fields only) and never logged.
    group.post("subject/rectify") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "rectify", action: "rectify")
        let f = try await console.form(request, user)
        let id = try customer(f)
        var assignments: [(field: String, value: String)] = []
        var values: [String] = []
        for i in 1...Console.rectifyRows {
            guard let field = f["field\(i)"], !field.isEmpty else { continue }
            let value = f["value\(i)"] ?? ""
            guard value.utf8.count <= 4096 else { throw APIError.badRequest("value \(i): at most 4096 bytes") }
            assignments.append((field, value))
            values.append(value)
        }
        guard !assignments.isEmpty else { throw APIError.badRequest("choose at least one field to rectify") }
        let given = assignments
        return try await onSubjectPage(user, v, id, redacting: values) {
            let changed = try await redacting([id] + values) { try await blocking { try v.rectify(customerID: id, set: given) } }
            return try await subjectPage(user, v, customerID: id,
                                         flash: changed.isEmpty ? "Rectified: no value changed." : "Rectified: \(changed.joined(separator: ", ")) changed.")
        }
    }

    // The issue-14 HTML access export, as a download (it is a self-contained document for the
    // data subject, with its own styles: not shown inside the console's origin).
    group.post("subject/export.html") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "export", action: "export")
        let id = try customer(try await console.form(request, user))
        return try await onSubjectPage(user, v, id) {
            let report = try await redacting([id]) { try await blocking { try v.accessReport(customerID: id, format: .html) } }
            return Console.download(Array(AccessExportHTML.render(report).utf8), type: "text/html; charset=utf-8", filename: "access-export.html")
        }
    }

    // Reveal: the decrypted profile for one purpose (permission `get`; audited as `get`).
    group.post("subject/reveal") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "get", action: "get")
        let f = try await console.form(request, user)
        let id = try customer(f)
        let purpose = f["purpose"] ?? ""
        guard !purpose.isEmpty else { throw APIError.badRequest("purpose: required") }
        var pageVault = v
        if user.caps.subject { pageVault = try await subjectVault(user, context, action: "export") }
        let shown = pageVault
        return try await onSubjectPage(user, shown, id) {
            let view = try await redacting([id]) { try await blocking { try v.get(customerID: id, purpose: purpose) } }
            guard case .object(let pairs) = JSONForms.profile(view) else { throw VaultError(.internalFailure, "profile form") }
            let fields: [[String: Any]] = pairs.map { name, value in
                var text = value.rendered(pretty: false)
                if case .string(let s) = value { text = s }
                return ["name": name, "value": text]
            }
            return try await subjectPage(user, shown, customerID: id, revealed: (purpose, fields))
        }
    }
}

// MARK: - Budget, audit, policy, keys

func addConsoleReviewRoutes(_ group: RouterGroup<VaultRequestContext>, _ console: Console) {
    let service = console.service

    /// Audit entries (flat JSON Lines) as rows, parsed from an export.
    @Sendable func entries(_ bytes: [UInt8]) -> [[String: String]] {
        var out: [[String: String]] = []
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            guard case .object(let pairs)? = try? JSONValue.parse(Array(line)) else { continue }
            var row: [String: String] = [:]
            for (k, v) in pairs {
                switch v {
                case .string(let s): row[k] = s
                case .int(let n): row[k] = String(n)
                default: break
                }
            }
            guard row["metadata.sequence"] != nil else { continue }   // the head record
            out.append(row)
        }
        return out
    }

    @Sendable func view(_ e: [String: String]) -> [String: Any] {
        ["seq": e["metadata.sequence"] ?? "", "time": String((e["time_dt"] ?? "").prefix(19)).replacingOccurrences(of: "T", with: " "),
         "actor": e["actor.user.name"] ?? "", "role": e["unmapped.role"] ?? "", "action": e["api.operation"] ?? "",
         "purpose": e["unmapped.purpose"] ?? "", "outcome": e["status"] ?? "",
         "subject": e["unmapped.subject"].map { String($0.prefix(12)) + "…" } ?? "",
         "detail": [e["unmapped.epsilon"].map { "epsilon \($0)" }, e["status_detail"]].compactMap { $0 }.joined(separator: "; ")]
    }

    group.get("budget") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let states: [BudgetState]
        var snapshot = false
        if user.caps.budget && !user.caps.query {
            // audit or policy: the figures only, as /metrics shows them (no personal data).
            let v = try await service.vault(context, permission: user.caps.audit ? "audit" : "policy", action: "budget.status")
            states = try await blocking { try v.budgetSnapshot() }
            snapshot = true
        } else {
            let v = try await service.vault(context, permission: "query", action: "budget.status")
            states = try await blocking { try v.budgetStatus() }
        }
        var c = console.base(user, title: "Budget", current: "budget")
        c["snapshot"] = snapshot
        c["rows"] = states.map { s -> [String: Any] in
            ["purpose": s.purpose, "unit": s.zcdp ? "rho (zCDP)" : "epsilon", "periodStart": Console.minuteSeconds(s.periodStart), "limit": Console.eps(s.limit),
             "spent": Console.eps(s.spent), "left": Console.eps(s.left), "deltaLeft": Console.eps(s.deltaLeft)]
        }
        if !states.isEmpty {
            let labelWidth = 170, barWidth = 360
            let bars = states.enumerated().map { i, s -> [String: Any] in
                let share = s.limit > 0 ? min(1, max(0, s.left / s.limit)) : 0
                let y = 10 + i * 30
                return ["purpose": s.purpose, "x": labelWidth, "y": y, "textY": y + 14, "full": barWidth,
                        "leftWidth": Int((Double(barWidth) * share).rounded()), "valueX": labelWidth + barWidth + 8,
                        "leftText": Console.eps(s.left), "limitText": Console.eps(s.limit), "unitText": s.zcdp ? "rho" : "epsilon"]
            }
            c["chart"] = ["width": labelWidth + barWidth + 180, "height": 20 + states.count * 30, "bars": bars] as [String: Any]
        }
        if user.caps.audit {
            let v = try await service.vault(context, permission: "audit", action: "audit.export")
            let since = states.map(\.periodStart).min().flatMap { s -> Int64? in
                let (ms, overflow) = s.multipliedReportingOverflow(by: 1000)
                return overflow ? nil : ms
            }
            let request = Vault.AuditExportRequest(format: .jsonl, sinceMillis: since, untilMillis: nil, afterSequence: nil, subjectID: nil, flat: true)
            let r = try await blocking { try v.exportAudit(request) }
            let releases = entries(r.bytes).filter { e in
                let a = e["api.operation"] ?? ""
                return a.hasPrefix("query.") || a == "train" || a == "recommend"
            }.suffix(100).reversed().map(view)
            c["canReleases"] = true
            c["releases"] = Array(releases)
            c["burndown"] = Console.burndown(states, entries: entries(r.bytes), nowMillis: AuditLogClock.nowMillis)
        }
        return Console.page("budget", c)
    }

    struct AuditFilters {
        var actor = "", action = "", purpose = "", outcome = "", since = "", until = ""
        var sinceMillis: Int64?, untilMillis: Int64?

        init(_ q: [String: String]) throws {
            func take(_ k: String) -> String { String((q[k] ?? "").prefix(200)) }
            actor = take("actor"); action = take("action"); purpose = take("purpose"); outcome = take("outcome")
            since = take("since"); until = take("until")
            sinceMillis = since.isEmpty ? nil : try timeMillis(since, parameter: "since")
            untilMillis = until.isEmpty ? nil : try timeMillis(until, parameter: "until")
        }

        func matches(_ e: [String: String]) -> Bool {
            (actor.isEmpty || e["actor.user.name"] == actor) && (action.isEmpty || (e["api.operation"] ?? "").hasPrefix(action))
                && (purpose.isEmpty || e["unmapped.purpose"] == purpose) && (outcome.isEmpty || e["status"] == outcome)
        }

        var context: [String: Any] {
            ["actor": actor, "action": action, "purpose": purpose, "outcome": outcome, "since": since, "until": until]
        }

        var query: String {
            var s = ""
            for (k, v) in [("since", since), ("until", until)] where !v.isEmpty {
                s += "&\(k)=" + (v.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
            }
            return s
        }

        /// Every filter, for the page links (`&actor=...&since=...`).
        var pageQuery: String {
            var s = ""
            for (k, v) in [("actor", actor), ("action", action), ("purpose", purpose), ("outcome", outcome), ("since", since), ("until", until)]
            where !v.isEmpty {
                s += "&\(k)=" + (v.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
            }
            return s
        }
    }

    /// Where a page of the audit page starts: the newest entries (neither given), the entries
    /// before sequence number `before` (older pages) or after `after` (newer pages), `size`
    /// matching entries at most. One page reads at most ``scan`` entries of the log (plus those
    /// after the signed head on the newest page), whatever the filters select: a page may show
    /// fewer than `size` entries and still link to the next.
    struct AuditCursor {
        static let defaultSize = 50, maxSize = 200
        static let scan: Int64 = 2000
        var before: Int64?, after: Int64?
        var size = defaultSize

        init() {}

        init(_ q: [String: String]) throws {
            func number(_ k: String, min: Int64) throws -> Int64? {
                guard let text = q[k], !text.isEmpty else { return nil }
                guard let n = Int64(text), n >= min else { throw APIError.badRequest("\(k): a sequence number (\(min) or more)") }
                return n
            }
            before = try number("before", min: 1)
            after = try number("after", min: 0)
            guard before == nil || after == nil else { throw APIError.badRequest("before and after: give one of them") }
            if let text = q["size"], !text.isEmpty {
                guard let n = Int(text), n >= 1, n <= Self.maxSize else { throw APIError.badRequest("size: 1 to \(Self.maxSize) entries") }
                size = n
            }
        }

        var sizeQuery: String { size == Self.defaultSize ? "" : "&size=\(size)" }
    }

    @Sendable func queryDictionary(_ request: Request) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in request.uri.queryParameters { out[String(k)] = String(v) }
        return out
    }

    @Sendable func auditPage(_ user: Console.User, _ v: Vault, filters: AuditFilters, cursor: AuditCursor = AuditCursor(),
                             verification: AuditVerification? = nil,
                   exportResult: (ok: Bool, summary: String)? = nil, status: HTTPResponse.Status = .ok) async throws -> Response {
        var c = console.base(user, title: "Audit", current: "audit")
        let signedHead = try await blocking { try v.signedAuditHead() }
        if let head = signedHead {
            c["head"] = ["sequence": String(head.sequence), "hash": Vault.hex(head.hash),
                         "time": head.timeMillis.map { Vault.isoTime(millis: $0) } ?? "(not signed: a v1 checkpoint)"] as [String: Any]
        }
        if let verification {
            let summary = verification.ok
                ? "The audit log verifies: \(verification.entries) entries, head \(verification.head ?? "-")."
                : "The audit log does NOT verify: first bad entry \(verification.firstBad.map(String.init) ?? "?"): \(verification.reason ?? "")"
            c["verification"] = ["ok": verification.ok, "summary": summary] as [String: Any]
        }
        if let exportResult { c["exportResult"] = ["ok": exportResult.ok, "summary": exportResult.summary] as [String: Any] }
        // The slice of the log this page reads: (afterSeq, through], at most AuditCursor.scan
        // entries (to the live end on the newest page and on a newer page that reaches it).
        let floor = try await blocking { try v.auditArchivedThrough() } ?? 0
        // Every transaction signs a checkpoint of its new head: the signed head is the live one.
        let headSequence = signedHead?.sequence ?? 0
        let scan = AuditCursor.scan
        var afterSeq: Int64, through: Int64?
        if let before = cursor.before {
            through = before - 1
            afterSeq = max(floor, before - 1 - scan)
        } else if let after = cursor.after {
            afterSeq = max(floor, after)
            let (end, overflow) = afterSeq.addingReportingOverflow(scan)
            through = overflow || end >= headSequence ? nil : end
        } else {
            afterSeq = max(floor, headSequence - scan)
            through = nil
        }
        var rows: [[String: String]] = []
        var lastRead = afterSeq
        if through.map({ $0 > afterSeq }) ?? true {
            let request = Vault.AuditExportRequest(format: .jsonl, sinceMillis: filters.sinceMillis, untilMillis: filters.untilMillis,
                                                   afterSequence: afterSeq, subjectID: nil, flat: true, throughSequence: through)
            let r: (bytes: [UInt8], entries: Int, head: String, lastSequence: Int64)
            do {
                r = try await blocking { try v.exportAudit(request) }
            } catch let e as VaultError where e.kind == .invalidInput || e.kind == .usage {
                throw APIError.badRequest("this page is outside the live audit log (entries after \(floor)): start again from the newest entries")
            }
            rows = entries(r.bytes).filter(filters.matches)
            lastRead = through ?? max(r.lastSequence, afterSeq)
        }
        func seq(_ e: [String: String]?) -> Int64? { e.flatMap { $0["metadata.sequence"] }.flatMap { Int64($0) } }
        let page: [[String: String]]
        var older: Int64?, newer: Int64?
        if cursor.after != nil {
            // Oldest first from `after`: the older link starts below this page.
            page = Array(rows.prefix(cursor.size))
            if rows.count > cursor.size { newer = seq(page.last) } else if through != nil { newer = lastRead }
            if let first = seq(page.first) {
                if first > floor + 1 { older = first }
            } else if afterSeq > floor {
                older = afterSeq + 1
            }
        } else {
            // Newest first: the older link continues below the last entry shown, or below the
            // slice read when it held no more matches.
            page = Array(rows.suffix(cursor.size))
            if rows.count > cursor.size { older = seq(page.first) } else if afterSeq > floor { older = afterSeq + 1 }
            if cursor.before != nil { newer = seq(page.last) ?? lastRead }
        }
        let shown = page.reversed().map(view)
        c["entries"] = Array(shown)
        c["shown"] = shown.count
        c["readFrom"] = String(afterSeq + 1)
        c["readTo"] = String(lastRead)
        c["f"] = filters.context
        c["query"] = filters.query
        let links = filters.pageQuery + cursor.sizeQuery
        if let older { c["older"] = "/console/audit?before=\(older)" + links }
        if let newer { c["newer"] = "/console/audit?after=\(newer)" + links }
        if cursor.before != nil || cursor.after != nil { c["newest"] = "/console/audit?" + String(links.dropFirst()) }
        return Console.page("audit", c, status: status)
    }

    group.get("audit") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "audit", action: "audit.export")
        let q = queryDictionary(request)
        return try await auditPage(user, v, filters: try AuditFilters(q), cursor: try AuditCursor(q))
    }

    group.post("audit/verify") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "audit", action: "audit.verify")
        _ = try await console.form(request, user)
        let result = try await blocking { try v.verifyAudit(expectHead: nil) }
        return try await auditPage(user, v, filters: try AuditFilters([:]), verification: result)
    }

    // An uploaded export and public key, verified as `audit verify --file F --public-key K`
    // does, from memory: nothing is written to disk.
    group.post("audit/verify-export") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "audit", action: "audit.verify")
        let f = try await console.form(request, user, limit: service.options.maxIngestBodyBytes)
        let export = f["export"] ?? "", key = f["public_key"] ?? ""
        guard !export.isEmpty, !key.isEmpty else { throw APIError.badRequest("export and public key: both required") }
        let result: (ok: Bool, summary: String)
        do {
            let verification = try await blocking {
                try Vault.verifyAuditExport(bytes: Array(export.utf8), name: "the export", publicKeyPEM: key, keyName: "the public key", expectHead: nil)
            }
            result = verification.ok
                ? (true, "The export verifies: \(verification.entries) entries, head \(verification.head ?? "-").")
                : (false, "The export does NOT verify: first bad entry \(verification.firstBad.map(String.init) ?? "?"): \(verification.reason ?? "")")
        } catch let e as VaultError where e.kind != .internalFailure {
            result = (false, "The export could not be verified: \(e.message)")
        }
        return try await auditPage(user, v, filters: try AuditFilters([:]), exportResult: result)
    }

    group.get("audit/public-key.pem") { request, context -> Response in
        var context = context
        _ = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "audit", action: "audit.head")
        return Console.download(Array(v.auditPublicKeyPEM.utf8), type: "application/x-pem-file", filename: "audit-public-key.pem")
    }

    group.get("audit/export") { request, context -> Response in
        var context = context
        _ = try await console.user(request, &context)
        let q = queryDictionary(request)
        let v = try await service.vault(context, permission: "audit", action: "audit.export")
        let filters = try AuditFilters(q)
        guard let format = AuditExportFormat(rawValue: q["format"] ?? "jsonl") else { throw APIError.badRequest("format: jsonl or csv") }
        let r = try await blocking {
            try v.exportAudit(Vault.AuditExportRequest(format: format, sinceMillis: filters.sinceMillis, untilMillis: filters.untilMillis,
                                                       afterSequence: nil, subjectID: nil, flat: false))
        }
        return Console.download(r.bytes, type: format == .csv ? "text/csv; charset=utf-8" : "application/x-ndjson",
                                filename: format == .csv ? "audit.csv" : "audit.jsonl")
    }

    group.get("policy") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        // The ledger holds no personal data; read by `policy` (the officer) and `audit` roles.
        let v = try await service.vault(context, permission: user.caps.audit ? "audit" : "policy", action: "policy.history")
        let history = try await blocking { try Vault.policyHistory(storePath: v.storePath) }
        var c = console.base(user, title: "Policy", current: "policy")
        if let last = history.last {
            var summary = last.summary
            if let parsed = try? JSONValue.parse(summary) { summary = parsed.rendered(pretty: true) }
            c["inForce"] = ["version": last.version, "applied": Console.minute(last.appliedAtMillis), "actor": last.actor, "role": last.role,
                            "sha256": last.sha256, "summary": summary] as [String: Any]
        }
        c["history"] = history.map { r -> [String: Any] in
            ["sequence": String(r.sequence), "version": r.version, "applied": Console.minute(r.appliedAtMillis), "actor": r.actor,
             "changeCount": String(Vault.changes(of: r).count)]
        }
        let q = queryDictionary(request)
        let last = history.last?.sequence ?? 0
        let to = q["to"].flatMap { Int64($0) } ?? last
        let from = q["from"].flatMap { Int64($0) } ?? max(history.first?.sequence ?? 0, to &- 1)
        c["fromOptions"] = history.map { ["sequence": String($0.sequence), "version": $0.version, "selected": $0.sequence == from] as [String: Any] }
        c["toOptions"] = history.map { ["sequence": String($0.sequence), "version": $0.version, "selected": $0.sequence == to] as [String: Any] }
        // The changes recorded by each version after `from` up to `to`: the diff between them.
        let (lo, hi) = from <= to ? (from, to) : (to, from)
        c["changes"] = history.filter { $0.sequence > lo && $0.sequence <= hi }.flatMap { r in
            Vault.changes(of: r).map { ["sequence": String(r.sequence), "text": $0.text] as [String: Any] }
        }
        return Console.page("policy", c)
    }

    @Sendable func keysPage(_ user: Console.User, _ v: Vault, flash: String? = nil, error: String? = nil, status: HTTPResponse.Status = .ok) async throws -> Response {
        let k = try await blocking { try v.keyStatus() }
        var c = console.base(user, title: "Keys", current: "keys")
        c["active"] = String(k.active)
        c["identity"] = String(k.identityVersion)
        c["versions"] = (k.versions + k.retired.filter { !k.versions.contains($0) }).sorted().map { ver -> [String: Any] in
            let retired = k.retired.contains(ver)
            let subjects = k.subjectsPerVersion[ver] ?? 0
            return ["version": String(ver), "state": ver == k.active ? "active" : (retired ? "retired" : "kept (older)"),
                    "subjects": String(subjects), "retirable": !retired && ver != k.active && ver != k.identityVersion && subjects == 0]
        }
        if let flash { c["flash"] = flash }
        if let error { c["error"] = error }
        return Console.page("keys", c, status: status)
    }

    group.get("keys") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "keys", action: "keys.status")
        return try await keysPage(user, v)
    }

    group.post("keys/rotate") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "keys", action: "keys.rotate")
        let f = try await console.form(request, user)
        guard f["confirm"] == "yes" else { return try await keysPage(user, v, error: "Tick the confirmation to rotate.", status: .badRequest) }
        let r = try await blocking { try service.rotations.withLock { try v.rotateKeys(resume: false) } }
        return try await keysPage(user, v, flash: "Rotated: version \(r.active) is active; \(r.rewrapped) data keys re-wrapped.")
    }

    group.post("keys/retire") { request, context -> Response in
        var context = context
        let user = try await console.user(request, &context)
        let v = try await service.vault(context, permission: "keys", action: "keys.retire")
        let f = try await console.form(request, user)
        guard f["confirm"] == "yes" else { return try await keysPage(user, v, error: "Tick the confirmation to retire a version.", status: .badRequest) }
        guard let text = f["version"], let version = UInt32(text) else { throw APIError.badRequest("version: a key version number") }
        do {
            _ = try await blocking { try service.rotations.withLock { try v.retireKey(version: version) } }
        } catch let e as VaultError where e.kind == .invalidInput || e.kind == .notFound {
            return try await keysPage(user, v, error: e.message, status: APIError.from(e).status)
        }
        return try await keysPage(user, v, flash: "Key version \(version) retired.")
    }
}
