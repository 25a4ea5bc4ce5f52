import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ProfileVault
import Testing
import VaultAudit
import VaultCrypto
import VaultServer

/// A fresh store in its own temp directory, with the repository's policies, one token per role
/// (plus one for a role the policy does not define), and the service's router over it.
/// `@unchecked Sendable`: every stored property is set in `init` and never changed.
final class ServiceFixture: @unchecked Sendable {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let roles = ["operator", "support", "trainer", "app", "privacy_officer", "auditor", "nobody"]

    static let logger: Logger = {
        var l = Logger(label: "profilevault.http.test")
        l.logLevel = .warning
        return l
    }()

    let dir: String
    let vault: Vault
    let tokenFile: TokenFile
    let tokens: [String: String]
    let metrics = ServiceMetrics()
    let options: ServiceOptions

    /// The service's defaults, but with a failed-authentication limit no test reaches: router
    /// tests have no client address, so all their requests count as one client (tests of the
    /// limit set their own).
    static var defaultOptions: ServiceOptions {
        var o = ServiceOptions()
        o.authFailureLimit = 1_000_000
        return o
    }

    /// `policyDirectory`: another policy than the repository's (a test's copy).
    init(options: ServiceOptions = ServiceFixture.defaultOptions, policyDirectory: String? = nil) throws {
        dir = NSTemporaryDirectory() + "pv-http-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let keys = dir + "/keyring.json"
        _ = try Keyring.generate(note: "test").write(to: keys)
        vault = try Vault.initialize(VaultConfiguration(storePath: dir + "/store.sqlite", keysPath: keys,
                                                        policyDirectory: policyDirectory ?? Self.repoRoot + "/policies",
                                                        actor: ProfileVault.Actor(name: "setup", role: "operator")))
        var file = try TokenFile.loadOrEmpty(path: dir + "/tokens.json")
        var t: [String: String] = [:]
        for role in Self.roles { t[role] = file.add(actor: "test-\(role)", role: role) }
        try file.save()
        tokenFile = try TokenFile.load(path: dir + "/tokens.json")
        tokens = t
        var o = options
        // Scratch files (jobs, audit exports) go beside the store unless the test chose a place.
        if o.scratchDirectory == nil { o.scratchDirectory = dir }
        self.options = o
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// Every entry of the store's audit log, as exported to an auditor (JSON Lines, without the
    /// signed head record).
    func auditEntries() throws -> [JSONValue] {
        let out = dir + "/audit-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try vault.acting(as: ProfileVault.Actor(name: "fixture-auditor", role: "auditor"))
            .exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out)
        return try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").compactMap { line in
            let v = try JSONValue.parse(String(line))
            return v["head"] == nil ? v : nil
        }
    }

    var app: some ApplicationProtocol {
        Application(router: buildRouter(vault: vault, tokens: tokenFile, options: options, metrics: metrics, logger: Self.logger))
    }

    /// Runs `body` with a router test client (no socket).
    func test(_ body: @Sendable @escaping (Client) async throws -> Void) async throws {
        try await app.test(.router) { client in try await body(Client(client: client, tokens: tokens)) }
    }

    static let profiles = """
        [{"customer_id":"C1","email":"ada@example.com","full_name":"Ada Lovelace","phone":"+49 30 1001","birth_date":"1980-01-02","age":36,"gender":"female","country":"GB","annual_income":50000},
         {"customer_id":"C2","email":"bob@example.com","full_name":"Bob Secretname","phone":"+49 30 1002","birth_date":"1975-05-06","age":48,"gender":"male","country":"DE","annual_income":62000},
         {"customer_id":"C3","email":"cy@example.com","full_name":"Cy Young","phone":"+49 30 1003","birth_date":"1990-07-08","age":33,"gender":"other","country":"FR","annual_income":41000}]
        """
}

/// A test client that speaks JSON and knows the fixture's tokens.
struct Client: Sendable {
    let client: any TestClientProtocol
    let tokens: [String: String]

    struct Answer {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var text: String
        var json: JSONValue? { try? JSONValue.parse(text) }
        var error: String? { if case .string(let s)? = json?["error"] { s } else { nil } }
    }

    /// `as`: a role of the fixture (its token), nil for no token; `token` overrides.
    func call(_ method: HTTPRequest.Method, _ uri: String, as role: String? = nil, token: String? = nil, body: String? = nil,
              headers extra: HTTPFields = [:]) async throws -> Answer {
        var headers = extra
        if let t = token ?? role.flatMap({ tokens[$0] }) { headers[.authorization] = "Bearer \(t)" }
        if body != nil { headers[.contentType] = "application/json" }
        let r = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        return Answer(status: r.status, headers: r.headers, text: String(buffer: r.body))
    }

    /// Ingests the fixture's three profiles and grants C1 consent for analytics and model_training.
    func seed() async throws {
        let r = try await call(.post, "/v1/profiles", as: "operator", body: ServiceFixture.profiles)
        #expect(r.status == .ok, "\(r.text)")
        for id in ["C1", "C2", "C3"] {
            for p in ["analytics", "model_training"] {
                let c = try await call(.post, "/v1/subjects/\(id)/consent", as: "privacy_officer",
                                       body: #"{"purpose":"\#(p)","granted":true,"source":"test"}"#)
                #expect(c.status == .ok, "\(c.text)")
            }
        }
    }
}

extension JSONValue {
    var intValue: Int64? { if case .int(let i) = self { i } else if case .double(let d) = self { Int64(d) } else { nil } }
    var stringValue: String? { if case .string(let s) = self { s } else { nil } }
}
