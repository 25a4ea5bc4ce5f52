import Foundation
public import ProfileVault
#if canImport(Glibc)
import Glibc
#endif

/// Counts failed authentications (401 answers) per client address and says when an address is
/// over the limit: `limit` failures within `window` put the address in a lockout of `window`,
/// during which the routes that need a token answer it 429 with `Retry-After`, without looking
/// at the token it sent. Successful requests are not counted and do not reset the count.
///
/// Memory is bounded: at most `maxAddresses` addresses are tracked (an IPv6 client by its /64,
/// which one subscriber usually holds whole); an address's entry is dropped once its window
/// and lockout have passed. When the table is full and nothing in it has expired, the failures
/// of addresses not in it share one overflow entry with the same limit, so a client with many
/// addresses gains nothing; such addresses are never locked out before their token is checked
/// (a valid token from a new address always works), only their failures are answered 429 once
/// the overflow entry is over the limit.
///
/// What it bounds: each tracked address, and the overflow entry, records at most `limit`
/// failures per `window` (the lockout starts at the `limit`-th); only those are audited. So
/// the audit log gains at most `(maxAddresses + 1) × limit` `auth.failed` entries per `window`,
/// whatever the attacker does (with the defaults, 1025 × 10 per minute).
///
/// The clock is passed in (`now`), so tests need no waiting. Per process: nodes do not share
/// counts (each node bounds its own share).
///
/// `@unchecked Sendable`: `entries`, `overflow` and `lastPrune` are only touched under `lock`.
public final class AuthFailureLimiter: @unchecked Sendable {
    public static let defaultLimit = 10
    public static let defaultWindow: Duration = .seconds(60)
    public static let defaultAddresses = 1024

    struct Entry {
        var failures: Int
        var windowStart: ContinuousClock.Instant
        var lockedUntil: ContinuousClock.Instant?
    }

    /// What a failure comes to.
    public enum Verdict: Equatable, Sendable {
        /// Within the limit: answer 401 and audit it.
        case counted
        /// Over the limit: answer 429 (`retryAfter` whole seconds, at least 1), not audited.
        case limited(retryAfter: Int)
    }

    public let limit: Int
    public let window: Duration
    public let maxAddresses: Int
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var overflow: Entry?
    private var lastPrune: ContinuousClock.Instant?

    /// Values out of range are clamped: `limit` 1...1_000_000, `window` 1 s...1 day,
    /// `maxAddresses` 1...1_000_000.
    public init(limit: Int = defaultLimit, window: Duration = defaultWindow, maxAddresses: Int = defaultAddresses) {
        self.limit = min(max(limit, 1), 1_000_000)
        self.window = min(max(window, .seconds(1)), .seconds(86_400))
        self.maxAddresses = min(max(maxAddresses, 1), 1_000_000)
    }

    /// The number of addresses tracked now (for tests: it never exceeds `maxAddresses`).
    public var trackedAddresses: Int { lock.withLock { entries.count } }

    /// Seconds until `client`'s lockout ends, when it is locked out at `now`; nil otherwise.
    /// Called before the token is looked at. Never locks out an untracked address.
    public func lockout(_ client: String, now: ContinuousClock.Instant = .now) -> Int? {
        lock.withLock {
            guard let until = entries[client]?.lockedUntil, until > now else { return nil }
            return Self.seconds(until - now)
        }
    }

    /// Records one failed authentication of `client` at `now`.
    public func recordFailure(_ client: String, now: ContinuousClock.Instant = .now) -> Verdict {
        lock.withLock {
            if var e = entries[client] {
                let verdict = Self.count(&e, now: now, limit: limit, window: window)
                entries[client] = e
                return verdict
            }
            if entries.count >= maxAddresses { prune(now) }
            if entries.count < maxAddresses {
                var e = Entry(failures: 0, windowStart: now, lockedUntil: nil)
                let verdict = Self.count(&e, now: now, limit: limit, window: window)
                entries[client] = e
                return verdict
            }
            var e = overflow ?? Entry(failures: 0, windowStart: now, lockedUntil: nil)
            let verdict = Self.count(&e, now: now, limit: limit, window: window)
            overflow = e
            return verdict
        }
    }

    static func count(_ e: inout Entry, now: ContinuousClock.Instant, limit: Int, window: Duration) -> Verdict {
        if let until = e.lockedUntil {
            if until > now { return .limited(retryAfter: seconds(until - now)) }
            e = Entry(failures: 0, windowStart: now, lockedUntil: nil)
        } else if now - e.windowStart >= window {
            e = Entry(failures: 0, windowStart: now, lockedUntil: nil)
        }
        e.failures += 1
        if e.failures >= limit { e.lockedUntil = now + window }
        return .counted
    }

    /// Drops the entries whose window and lockout have passed; at most once a second (a full
    /// table of live entries is not rescanned for every failure).
    private func prune(_ now: ContinuousClock.Instant) {
        if let lastPrune, now - lastPrune < .seconds(1) { return }
        lastPrune = now
        entries = entries.filter { _, e in
            if let until = e.lockedUntil { return until > now }
            return now - e.windowStart < window
        }
    }

    /// Whole seconds, rounded up, at least 1.
    static func seconds(_ d: Duration) -> Int {
        let (s, atto) = d.components
        let whole = atto > 0 ? s + 1 : s
        return Int(max(1, min(whole, 86_400)))
    }

    /// The key a client address is counted under, and the text the audit entry records: an
    /// IPv4 address as it is (an IPv4-mapped IPv6 address as its IPv4 form), an IPv6 address by
    /// its /64 prefix (`2001:db8:1:2::/64`); `unknown` when there is none (not a TCP peer).
    public static func clientKey(_ address: String?) -> String {
        guard let address, !address.isEmpty, address.utf8.count <= 64 else { return "unknown" }
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return address }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return "unknown" }
        var bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            return "\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])"
        }
        for i in 8..<16 { bytes[i] = 0 }
        var prefix = in6_addr()
        withUnsafeMutableBytes(of: &prefix) { $0.copyBytes(from: bytes) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        guard inet_ntop(AF_INET6, &prefix, &text, socklen_t(text.count)) != nil else { return "unknown" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/64"
    }
}

/// What the service does with a failed authentication: counts it (``AuthFailureLimiter``) and,
/// within the limit, records it in the audit log through the vault (`auth.failed`, denied,
/// with the reason and the client address; never token material).
public struct AuthFailureGate: Sendable {
    let vault: Vault
    public let limiter: AuthFailureLimiter

    public init(vault: Vault, limiter: AuthFailureLimiter) {
        self.vault = vault
        self.limiter = limiter
    }
}
