import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import ProfileVault
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultServer
#if canImport(Glibc)
import Glibc
#endif

/// Token lifecycle over HTTP (issue 20): revocation and expiry refuse a token on the very next
/// request on every node sharing the tokens file; failed authentications are audited without
/// token material and rate-limited per client address.
@Suite struct TokenLifecycleTests {
    /// A second service over the same store and the same tokens file: another node.
    static func secondNode(_ f: ServiceFixture, options: ServiceOptions = ServiceFixture.defaultOptions) throws -> some ApplicationProtocol {
        let vault = try Vault.open(VaultConfiguration(storePath: f.dir + "/store.sqlite", keysPath: f.dir + "/keyring.json",
                                                      policyDirectory: ServiceFixture.repoRoot + "/policies",
                                                      actor: ProfileVault.Actor(name: "serve", role: "none")))
        let tokens = try ReloadingTokenFile(path: f.dir + "/tokens.json", checkEvery: options.tokensCheckInterval, logger: ServiceFixture.logger)
        return Application(router: buildRouter(vault: vault, tokens: tokens, options: options, logger: ServiceFixture.logger))
    }

    @Test func aRevokedTokenIsRefusedOnTheNextRequestOnBothNodesAndOtherTokensGoOn() async throws {
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        let node2 = try Self.secondNode(f)
        try await f.test { a in
            try await node2.test(.router) { client in
                let b = Client(client: client, tokens: f.tokens)
                for node in [a, b] {
                    #expect(try await node.call(.get, "/v1/budget", as: "trainer").status == .ok)
                }
                // Revoked by the CLI's code path, between two requests: no wait, no signal.
                var file = try TokenFile.load(path: path)
                let id = try #require(file.identities.first { $0.role == "trainer" }?.tokenID)
                #expect(try file.revoke(id: id))
                try file.save()
                for node in [a, b] {
                    let r = try await node.call(.get, "/v1/budget", as: "trainer")
                    #expect(r.status == .unauthorized && r.error == "token revoked", "\(r.text)")
                    #expect(r.headers[.wwwAuthenticate] == "Bearer")
                    // Another token of the same file still works, on both nodes.
                    #expect(try await node.call(.get, "/v1/audit/head", as: "auditor").status != .unauthorized)
                    #expect(try await node.call(.post, "/v1/queries", as: "trainer",
                                                body: #"{"kind":"count","purpose":"analytics","epsilon":0.1}"#).status == .unauthorized)
                }
            }
        }
        // The refusals are on the record (one per node), as denied auth.failed entries.
        let failed = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "auth.failed" }
        #expect(failed.count == 4, "\(failed.count)")
        #expect(failed.allSatisfy { $0["status"]?.stringValue == "denied" && $0["status_detail"]?.stringValue?.contains("revoked") == true })
    }

    @Test func anExpiredTokenIsRefusedAndOneNotYetExpiredWorks() async throws {
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        let now = TokenFile.nowMillis
        let (expired, live) = try await f.testReturning { c in
            // Added while the service runs.
            var file = try TokenFile.load(path: path)
            let expired = file.add(actor: "old", role: "trainer", expiresMillis: now - 1)
            let live = file.add(actor: "new", role: "trainer", expiresMillis: now + 3_600_000)
            try file.save()
            let r = try await c.call(.get, "/v1/budget", token: expired)
            #expect(r.status == .unauthorized && r.error == "token expired", "\(r.text)")
            #expect(try await c.call(.get, "/v1/budget", token: live).status == .ok)
            return (expired, live)
        }
        #expect(!expired.isEmpty)
        // Expiry is checked against the clock at each request, to the millisecond.
        let loaded = try TokenFile.load(path: path)
        let id = try #require(loaded.identities.first { $0.actor == "new" }?.tokenID)
        #expect(loaded.check(token: live, nowMillis: now + 3_599_999) == .valid(TokenIdentity(tokenID: id, actor: "new", role: "trainer")))
        #expect(loaded.check(token: live, nowMillis: now + 3_600_000) == .refused(.expired(tokenID: id)))
        #expect(loaded.check(token: live + "x", nowMillis: now) == .refused(.unknown))
        #expect(loaded.check(token: "a b", nowMillis: now) == .refused(.malformed))
        #expect(loaded.check(token: String(repeating: "a", count: 513), nowMillis: now) == .refused(.malformed))
    }

    @Test func aFileOfTheCurrentFormatStillLoadsAndKeepsItsVersionUntilALifecycleFieldIsSet() throws {
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        // The fixture's file is written as before (version 1, no expires/revoked).
        let v1 = try String(contentsOfFile: path, encoding: .utf8)
        #expect(v1.contains("\"version\": 1") && !v1.contains("expires") && !v1.contains("revoked"))
        var file = try TokenFile.load(path: path)
        #expect(file.listing.allSatisfy { $0.expiresMillis == nil && $0.revokedMillis == nil && $0.created.hasSuffix("Z") })
        #expect(file.identity(forToken: f.tokens["trainer"]!)?.role == "trainer")
        // An entry without `created` (as hand-made files may be) loads too.
        let bare = #"{"format":"profilevault-tokens","version":1,"tokens":[{"id":"ab","sha256":"\#(String(repeating: "0", count: 64))","actor":"a","role":"r"}]}"#
        try TokenFile.atomicWrite(Array(bare.utf8), to: f.dir + "/bare.json")
        #expect(try TokenFile.load(path: f.dir + "/bare.json").listing.first?.created == "")
        // Revoking writes version 2, which an older reader refuses instead of ignoring the key.
        try file.revoke(id: file.identities[0].tokenID)
        try file.save()
        let v2 = try String(contentsOfFile: path, encoding: .utf8)
        #expect(v2.contains("\"version\": 2") && v2.contains("\"revoked\": \""))
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try TokenFile.load(path: path).listing[0].revokedMillis != nil)
    }

    // MARK: - Failed authentications

    @Test func failedAuthenticationsAreAuditedWithoutTokenMaterial() async throws {
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        // An unknown token that is a real token's near miss, as an attacker would try.
        let auditor = f.tokens["auditor"]!
        let unknown = String(auditor.dropLast()) + (auditor.hasSuffix("A") ? "Q" : "A")
        let (revoked, expired) = try await f.testReturning { (c: Client) async throws -> (String, String) in
            // Changed while the service runs.
            var file = try TokenFile.load(path: path)
            let revoked = file.add(actor: "gone", role: "trainer")
            let expired = file.add(actor: "late", role: "trainer", expiresMillis: TokenFile.nowMillis - 1000)
            try file.revoke(id: file.identities.first { $0.actor == "gone" }!.tokenID)
            try file.save()
            #expect(try await c.call(.get, "/v1/budget").status == .unauthorized)                      // missing
            #expect(try await c.call(.get, "/v1/budget", headers: [.authorization: "Basic \(revoked)"]).status == .unauthorized)   // malformed
            #expect(try await c.call(.get, "/v1/budget", token: unknown).status == .unauthorized)      // unknown
            #expect(try await c.call(.get, "/v1/budget", token: revoked).status == .unauthorized)      // revoked
            #expect(try await c.call(.get, "/v1/budget", token: expired).status == .unauthorized)      // expired
            // A route that needs no token is no failure.
            #expect(try await c.call(.get, "/healthz", token: unknown).status == .ok)
            return (revoked, expired)
        }
        let entries = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "auth.failed" }
        let kinds = entries.compactMap { $0["status_detail"]?.stringValue }
        #expect(kinds.count == 5, "\(kinds)")
        for (i, kind) in ["missing", "malformed", "unknown", "revoked", "expired"].enumerated() where i < kinds.count {
            #expect(kinds[i].hasPrefix("authentication failed: \(kind)") && kinds[i].hasSuffix("; client unknown"), "\(kinds[i])")
        }
        #expect(entries.allSatisfy { $0["status"]?.stringValue == "denied" && $0["actor.user.name"]?.stringValue == "unauthenticated" })

        // The whole audit export, as an auditor gets it, holds no token material: not the
        // tokens, no 12-character piece of them (base64url), not their bytes in hex or standard
        // base64 (16-character pieces), not their SHA-256 (hex or base64). A chance match of a
        // random 12-character base64url piece (64^12 ≈ 4.7e21) or 16-hex-digit piece (≈1.8e19)
        // somewhere in a few hundred kB of export is below 1e-12.
        let export = try Self.exportText(f)
        for token in [revoked, expired, unknown, f.tokens["auditor"]!] {
            var pieces: [String] = []
            pieces += Self.windows(token, 12)
            let raw = Self.base64urlDecode(token)
            let hash = SHA256.hash(Array(token.utf8))
            for bytes in [raw, hash] {
                pieces += Self.windows(Self.hex(bytes), 16)
                pieces += Self.windows(Data(bytes).base64EncodedString(), 12)
            }
            #expect(!pieces.isEmpty)
            for piece in pieces { #expect(!export.contains(piece), "token material in the audit export: \(piece)") }
        }
    }

    @Test func overTheLimitAnAddressGets429WithRetryAfterWithoutItsTokenBeingChecked() async throws {
        var o = ServiceOptions()
        o.authFailureLimit = 3
        o.authFailureWindow = .seconds(3600)
        let f = try ServiceFixture(options: o)
        try await f.test { c in
            for _ in 0..<3 {
                let r = try await c.call(.get, "/v1/budget", token: "nope")
                #expect(r.status == .unauthorized, "\(r.text)")
            }
            // The fourth failure, and then every request that needs a token, valid or not.
            for token in ["nope", c.tokens["trainer"]!, "other"] {
                let r = try await c.call(.get, "/v1/budget", token: token)
                #expect(r.status == .tooManyRequests, "\(r.text)")
                let retry = try #require(r.headers[.retryAfter].flatMap { Int($0) })
                #expect(retry >= 1 && retry <= 3600)
                #expect(r.error?.hasPrefix("too many failed authentications") == true)
                #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
            }
            // Routes without a token go on.
            #expect(try await c.call(.get, "/healthz").status == .ok)
        }
        // Only the failures within the limit were audited: the lockout bounds the log.
        let failed = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "auth.failed" }
        #expect(failed.count == 3)
    }

    @Test func theLimitCountsPerAddressOnALiveServerAndAnotherAddressIsServed() async throws {
        var o = ServiceOptions()
        o.authFailureLimit = 2
        o.authFailureWindow = .seconds(3600)
        let f = try ServiceFixture(options: o)
        let trainer = f.tokens["trainer"]!
        let port = PortBox()
        let app = Application(router: buildRouter(vault: f.vault, tokens: f.tokenFile, options: f.options, logger: ServiceFixture.logger),
                              configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in port.set(channel.localAddress?.port ?? 0) },
                              logger: ServiceFixture.logger)
        let server = Task { try await app.runService(gracefulShutdownSignals: []) }
        let p = try await port.wait()
        let outcome = await Result { () async throws -> [Int] in
            guard p > 0 else { throw RawHTTP.Failure(description: "the server did not start") }
            return try await Self.sixRequests(port: p, trainer: trainer)
        }
        server.cancel()
        _ = await server.result
        let results = try outcome.get()
        #expect(results == [401, 401, 429, 200, 401, 200], "\(results)")
        let clients = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "auth.failed" }.compactMap { $0["status_detail"]?.stringValue }
        #expect(clients == ["authentication failed: unknown; client 127.0.0.1", "authentication failed: unknown; client 127.0.0.1",
                            "authentication failed: unknown; client 127.0.0.2"], "\(clients)")
    }

    static func sixRequests(port p: Int, trainer: String) async throws -> [Int] {
        try await onThread { () -> [Int] in
            var s: [Int] = []
            // 127.0.0.1 fails twice, then is locked out, even with a valid token.
            s.append(try RawHTTP.get(from: "127.0.0.1", port: p, path: "/v1/budget", token: "bad").status)
            s.append(try RawHTTP.get(from: "127.0.0.1", port: p, path: "/v1/budget", token: "bad").status)
            s.append(try RawHTTP.get(from: "127.0.0.1", port: p, path: "/v1/budget", token: trainer).status)
            // 127.0.0.2 (another loopback address) is served, and has its own count.
            s.append(try RawHTTP.get(from: "127.0.0.2", port: p, path: "/v1/budget", token: trainer).status)
            s.append(try RawHTTP.get(from: "127.0.0.2", port: p, path: "/v1/budget", token: "bad").status)
            s.append(try RawHTTP.get(from: "127.0.0.2", port: p, path: "/v1/budget", token: trainer).status)
            return s
        }
    }

    // MARK: - The limiter itself (an injected clock: no waiting)

    @Test func theLimiterLocksOutAfterTheLimitForTheWindowAndForgetsAfterIt() {
        let l = AuthFailureLimiter(limit: 3, window: .seconds(60), maxAddresses: 10)
        let t0 = ContinuousClock.now
        #expect(l.lockout("a", now: t0) == nil)
        #expect(l.recordFailure("a", now: t0) == .counted)
        #expect(l.recordFailure("a", now: t0 + .seconds(1)) == .counted)
        #expect(l.lockout("a", now: t0 + .seconds(2)) == nil)
        #expect(l.recordFailure("a", now: t0 + .seconds(2)) == .counted)   // the third: locks out
        #expect(l.lockout("a", now: t0 + .seconds(2)) == 60)
        #expect(l.lockout("a", now: t0 + .milliseconds(32_500)) == 30)      // rounded up
        #expect(l.recordFailure("a", now: t0 + .seconds(3)) == .limited(retryAfter: 59))
        #expect(l.lockout("b", now: t0 + .seconds(3)) == nil)               // per address
        #expect(l.lockout("a", now: t0 + .seconds(62)) == nil)              // lockout over
        #expect(l.recordFailure("a", now: t0 + .seconds(62)) == .counted)   // a fresh window
        // Failures further apart than the window never lock out.
        for i in 0..<10 { #expect(l.recordFailure("c", now: t0 + .seconds(61 * Int64(i))) == .counted) }
        #expect(l.lockout("c", now: t0 + .seconds(610)) == nil)
    }

    @Test func theTableIsBoundedAndNewAddressesShareOneOverflowCount() {
        let l = AuthFailureLimiter(limit: 2, window: .seconds(60), maxAddresses: 4)
        let t0 = ContinuousClock.now
        for i in 0..<4 { #expect(l.recordFailure("10.0.0.\(i)", now: t0) == .counted) }
        #expect(l.trackedAddresses == 4)
        // A fifth, sixth... address: counted together, never tracked, never locked out up front.
        #expect(l.recordFailure("10.0.1.1", now: t0) == .counted)
        #expect(l.recordFailure("10.0.1.2", now: t0) == .counted)
        #expect(l.recordFailure("10.0.1.3", now: t0) == .limited(retryAfter: 60))
        #expect(l.lockout("10.0.1.3", now: t0) == nil)
        #expect(l.trackedAddresses == 4)
        for i in 0..<10_000 { _ = l.recordFailure("10.1.\(i / 256).\(i % 256)", now: t0) }
        #expect(l.trackedAddresses == 4)
        // Once the tracked entries' windows pass, new addresses are tracked again.
        #expect(l.recordFailure("10.0.2.1", now: t0 + .seconds(61)) == .counted)
        #expect(l.trackedAddresses == 1)
    }

    @Test func clientAddressesAreKeyedByIPv4OrIPv6Slash64() {
        #expect(AuthFailureLimiter.clientKey("203.0.113.5") == "203.0.113.5")
        #expect(AuthFailureLimiter.clientKey("::ffff:203.0.113.5") == "203.0.113.5")
        #expect(AuthFailureLimiter.clientKey("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64")
        #expect(AuthFailureLimiter.clientKey("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64")
        #expect(AuthFailureLimiter.clientKey(nil) == "unknown")
        #expect(AuthFailureLimiter.clientKey("not an address") == "unknown")
        #expect(AuthFailureLimiter.clientKey(String(repeating: "1", count: 100)) == "unknown")
    }

    // MARK: - Helpers

    static func exportText(_ f: ServiceFixture) throws -> String {
        let out = f.dir + "/audit-scan-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try f.vault.acting(as: ProfileVault.Actor(name: "scan", role: "auditor")).exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out)
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    static func windows(_ s: String, _ n: Int) -> [String] {
        let c = Array(s)
        guard c.count >= n else { return c.isEmpty ? [] : [s] }
        return (0...(c.count - n)).map { String(c[$0..<($0 + n)]) }
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func base64urlDecode(_ s: String) -> [UInt8] {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t).map { Array($0) } ?? Array(s.utf8)
    }
}

extension ServiceFixture {
    /// ``test(_:)`` with a result.
    func testReturning<T: Sendable>(_ body: @Sendable @escaping (Client) async throws -> T) async throws -> T {
        let box = ResultBox<T>()
        try await test { c in box.set(try await body(c)) }
        return try #require(box.get())
    }
}

/// `@unchecked Sendable`: `value` is only touched under `lock`.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T? { lock.withLock { value } }
}

/// The port the live server bound, handed from its start-up callback to the test.
/// `@unchecked Sendable`: `value` is only touched under `lock`.
final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int?
    func set(_ p: Int) { lock.withLock { value = p } }
    /// Polls for the port (the server starts within milliseconds; gives up after 30 s).
    func wait() async throws -> Int {
        for _ in 0..<3000 {
            if let v = lock.withLock({ value }) { return v }
            try await Task.sleep(for: .milliseconds(10))
        }
        return 0
    }
}

/// Runs blocking socket work on a thread of its own (never on Swift's cooperative pool).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        let t = Thread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        t.start()
    }
}

/// A minimal HTTP/1.1 client over a socket bound to a chosen source address (the test client of
/// Hummingbird cannot choose one), so two loopback addresses can be two clients.
enum RawHTTP {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static func get(from source: String, port: Int, path: String, token: String) throws -> (status: Int, text: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func address(_ ip: String, _ port: Int) -> sockaddr_in {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port)).bigEndian
            inet_pton(AF_INET, ip, &a.sin_addr)
            return a
        }
        var local = address(source, 0)
        let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw Failure(description: "bind \(source): \(errno)") }
        var remote = address("127.0.0.1", port)
        let connected = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw Failure(description: "connect: \(errno)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, 0) }
            guard n > 0 else { throw Failure(description: "send: \(errno)") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        let parts = text.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "no status line: \(text.prefix(80))") }
        return (status, text)
    }
}

extension Result where Failure == any Error {
    /// The outcome of an async throwing body.
    init(_ body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
