import Foundation
public import ProfileVault

/// The console's sessions (docs/console.md): one sign-in with a bearer token gives a session,
/// kept here in the process's memory, named by a random id the browser holds in an `HttpOnly`,
/// `SameSite=Strict` cookie (`Secure` when the service speaks TLS).
///
/// A session remembers its token's **id** (never the token): before every console request the
/// tokens file as it is now (``ReloadingTokenFile``, reread when it changed) must still list that
/// id, unrevoked and unexpired, and the session acts as the actor and role the file gives it
/// now. So `profilectl tokens revoke` (or the token's expiry, or removing it) ends its sessions
/// on their next request. Sessions also end after ``lifetime`` (absolute) or ``idle`` without a
/// request, on sign-out, and when the process stops. Each node keeps its own sessions: behind a
/// load balancer a browser must stay on one node (sticky sessions) or sign in on each.
///
/// Memory is bounded: at most ``maxSessions`` in all and ``maxPerToken`` per token. A token's
/// new sign-in past its own limit ends that token's oldest session (never another token's);
/// when the whole table is full, expired sessions are dropped and, if it is still full, the
/// sign-in is refused (503) rather than signing anyone else out: one token's holder, of any
/// role, cannot end the other users' sessions by signing in again and again.
///
/// `@unchecked Sendable`: `sessions` is only touched under `lock`.
public final class ConsoleSessions: @unchecked Sendable {
    public struct Session: Sendable, Equatable {
        public var id: String
        public var tokenID: String
        /// The per-session CSRF token every POST form carries.
        public var csrf: String
        public var createdMillis: Int64
        public var lastSeenMillis: Int64
    }

    public static let defaultLifetime: Int64 = 8 * 3_600_000
    public static let defaultIdle: Int64 = 30 * 60_000
    public static let defaultMaxSessions = 10_000
    public static let defaultMaxPerToken = 16

    /// Milliseconds a session lives at most, and without a request.
    public let lifetime: Int64
    public let idle: Int64
    public let maxSessions: Int
    public let maxPerToken: Int
    private let lock = NSLock()
    private var sessions: [String: Session] = [:]

    public init(lifetime: Int64 = defaultLifetime, idle: Int64 = defaultIdle, maxSessions: Int = defaultMaxSessions,
                maxPerToken: Int = defaultMaxPerToken) {
        self.lifetime = max(60_000, lifetime)
        self.idle = max(60_000, min(idle, self.lifetime))
        self.maxSessions = max(1, maxSessions)
        self.maxPerToken = max(1, maxPerToken)
    }

    public var count: Int { lock.withLock { sessions.count } }

    /// A new session for `tokenID`, starting at `now`; nil when the table is full of other
    /// tokens' live sessions (the caller answers 503).
    public func create(tokenID: String, now: Int64) -> Session? {
        let s = Session(id: Self.randomToken(), tokenID: tokenID, csrf: Self.randomToken(), createdMillis: now, lastSeenMillis: now)
        return lock.withLock { () -> Session? in
            let own = sessions.values.filter { $0.tokenID == tokenID }
            if own.count >= maxPerToken {
                for old in own.sorted(by: { $0.createdMillis < $1.createdMillis }).prefix(own.count - maxPerToken + 1) {
                    sessions[old.id] = nil
                }
            }
            if sessions.count >= maxSessions {
                sessions = sessions.filter { !isExpired($0.value, now: now) }
                if sessions.count >= maxSessions { return nil }
            }
            sessions[s.id] = s
            return s
        }
    }

    /// The live session named `id` at `now` (its idle time restarts), or nil: unknown, or
    /// expired (then dropped).
    public func lookup(_ id: String, now: Int64) -> Session? {
        guard Self.isWellFormedToken(id) else { return nil }
        return lock.withLock {
            guard var s = sessions[id] else { return nil }
            if isExpired(s, now: now) {
                sessions[id] = nil
                return nil
            }
            s.lastSeenMillis = now
            sessions[id] = s
            return s
        }
    }

    /// Ends one session (sign-out, or its token no longer valid).
    public func end(_ id: String) { lock.withLock { sessions[id] = nil } }

    /// Ends every session of a token; returns how many.
    @discardableResult
    public func endAll(tokenID: String) -> Int {
        lock.withLock {
            let before = sessions.count
            sessions = sessions.filter { $0.value.tokenID != tokenID }
            return before - sessions.count
        }
    }

    func isExpired(_ s: Session, now: Int64) -> Bool {
        now - s.createdMillis >= lifetime || now - s.lastSeenMillis >= idle || now < s.createdMillis
    }

    /// Seconds the cookie may live (its `Max-Age`): the absolute lifetime.
    public var cookieMaxAge: Int64 { lifetime / 1000 }

    /// 32 random bytes as base64url without padding (43 characters), from the system's
    /// cryptographic generator (`getrandom` on Linux).
    public static func randomToken() -> String {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// 43 characters of the base64url alphabet: what ``randomToken()`` makes.
    public static func isWellFormedToken(_ s: String) -> Bool {
        s.utf8.count == 43 && s.utf8.allSatisfy { b in
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"): true
            default: false
            }
        }
    }
}

/// The console's small security pieces, pure functions (unit-tested in ConsoleSecurityTests).
public enum ConsoleSecurity {
    /// The session cookie's name.
    public static let cookieName = "pv_console"
    /// The path the cookie is sent for.
    public static let cookiePath = "/console/"

    /// Compares two strings in time that depends only on their lengths (no early exit on the
    /// first differing byte): how a presented CSRF token is checked.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
        if x.count != y.count { diff |= 1 }
        let n = min(x.count, y.count)
        for i in 0..<n { diff |= x[i] ^ y[i] }
        return diff == 0
    }

    /// Whether a presented CSRF token matches the session's: present, well formed, equal.
    public static func csrfMatches(presented: String?, session: String) -> Bool {
        guard let presented, ConsoleSessions.isWellFormedToken(presented) else { return false }
        return constantTimeEqual(presented, session)
    }

    /// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), or nil. When the header
    /// names it more than once, nil (a cookie planted beside the real one by a sibling host
    /// cannot pick the session).
    public static func cookie(named name: String, in header: String?) -> String? {
        guard let header, header.utf8.count <= 8192 else { return nil }
        var found: String?
        var seen = 0
        for part in header.split(separator: ";") {
            let pair = part.trimmingCharacters(in: .whitespaces)
            guard let eq = pair.firstIndex(of: "=") else { continue }
            if pair[..<eq] == name {
                seen += 1
                var value = String(pair[pair.index(after: eq)...])
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                found = value
            }
        }
        return seen == 1 ? found : nil
    }

    /// The `Set-Cookie` value that gives the browser session `id`.
    public static func sessionCookie(_ id: String, maxAge: Int64, secure: Bool) -> String {
        "\(cookieName)=\(id); Path=\(cookiePath); Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// The `Set-Cookie` value that removes the session cookie.
    public static func clearedCookie(secure: Bool) -> String {
        "\(cookieName)=; Path=\(cookiePath); Max-Age=0; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// The headers every console answer carries.
    public static let headers: [(String, String)] = [
        ("content-security-policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ]

    /// An `application/x-www-form-urlencoded` body as name → value. Nil when it is not one:
    /// a pair that does not decode, or a name given twice (a smuggled second `csrf` or `reason`
    /// is refused, not silently chosen between).
    public static func formFields(_ body: String) -> [String: String]? {
        var out: [String: String] = [:]
        for pair in body.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let name = decode(parts[0]), !name.isEmpty else { return nil }
            let value = parts.count > 1 ? decode(parts[1]) : ""
            guard let value, out[name] == nil else { return nil }
            out[name] = value
        }
        return out
    }

    /// What a role may see in the console: the pages, each gated by the same role permissions
    /// as the JSON routes that read the same data.
    public struct Capabilities: Sendable, Equatable {
        public var requests: Bool
        /// The subject page (the access report: permission `export`).
        public var subject: Bool
        /// Consent changes on the subject page (`consent`).
        public var consent: Bool
        /// "Reveal" of a subject's decrypted profile for a purpose (`get`).
        public var reveal: Bool
        /// Budget figures: `query` (as `GET /v1/budget`), or `audit` / `policy` (figures only,
        /// no personal data, as `/metrics` shows them).
        public var budget: Bool
        /// `query`: budget figures through `budgetStatus` (audited as `GET /v1/budget` is).
        public var query: Bool
        public var audit: Bool
        /// The policy ledger: `policy` or `audit`.
        public var policy: Bool
        public var keys: Bool
        /// Restriction on the subject page (`restrict`).
        public var restrict: Bool
        /// Rectification on the subject page (`rectify`).
        public var rectify: Bool

        public init(permits: (String) -> Bool) {
            requests = permits("requests")
            subject = permits("export")
            consent = permits("consent")
            reveal = permits("get")
            budget = permits("query") || permits("audit") || permits("policy")
            query = permits("query")
            audit = permits("audit")
            policy = permits("policy") || permits("audit")
            keys = permits("keys")
            restrict = permits("restrict")
            rectify = permits("rectify")
        }
    }
}

extension TokenFile {
    /// The identity the entry `tokenID` gives now, or why it gives none (removed, revoked,
    /// expired): how a console session is checked before each request without keeping its token.
    public func check(tokenID: String, nowMillis: Int64) -> TokenCheck {
        guard let entry = listing.first(where: { $0.tokenID == tokenID }) else { return .refused(.unknown) }
        if entry.revokedMillis != nil { return .refused(.revoked(tokenID: tokenID)) }
        if let expires = entry.expiresMillis, nowMillis >= expires { return .refused(.expired(tokenID: tokenID)) }
        guard let id = identities.first(where: { $0.tokenID == tokenID }) else { return .refused(.unknown) }
        return .valid(id)
    }
}
