import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultAudit
import VaultServer
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// Tokens, roles as a boundary, error bodies and metrics without personal data, body limits,
/// and `docs/openapi.yaml` kept true to the router.
@Suite struct SecurityTests {
    /// One request per v1 route, with a body good enough to pass parsing.
    static let v1Routes: [(HTTPRequest.Method, String, String?, String)] = [
        (.post, "/v1/profiles", ServiceFixture.profiles, "operator"),
        (.post, "/v1/events", #"[{"customer_id":"C1","kind":"purchase","item":"A","value":1,"time":"2026-10-01T00:00:00Z"}]"#, "operator"),
        (.get, "/v1/subjects/C1?purpose=customer_support", nil, "support"),
        (.post, "/v1/subjects/C1/consent", #"{"purpose":"analytics","granted":true}"#, "privacy_officer"),
        (.get, "/v1/subjects/C1/export", nil, "privacy_officer"),
        (.delete, "/v1/subjects/C1", nil, "privacy_officer"),
        (.post, "/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1}"#, "trainer"),
        (.get, "/v1/budget", nil, "trainer"),
        (.post, "/v1/jobs", #"{"job":"j","purpose":"model_training","model":"kmeans","features":["age"],"epsilon":0.1}"#, "trainer"),
        (.get, "/v1/audit", nil, "auditor"),
        (.get, "/v1/audit/report", nil, "auditor"),
        (.get, "/v1/audit/head", nil, "auditor"),
        (.post, "/v1/recommendations", #"{"model":{"model":"recommender"},"subject":"C1"}"#, "app"),
    ]

    @Test func noRoleReachesAnotherRolesRouteAndEveryRouteNeedsAToken() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            for (method, uri, body, owner) in Self.v1Routes {
                let none = try await c.call(method, uri, body: body)
                #expect(none.status == .unauthorized, "\(method) \(uri) without a token")
                #expect(none.error?.isEmpty == false)
                #expect(none.headers[.wwwAuthenticate] == "Bearer")
                #expect(try await c.call(method, uri, token: "x" + (c.tokens[owner] ?? ""), body: body).status == .unauthorized)
                for role in ServiceFixture.roles where role != owner {
                    let r = try await c.call(method, uri, as: role, body: body)
                    #expect(r.status == .forbidden, "\(role) on \(method) \(uri): \(r.status)")
                    #expect(r.error?.contains("role \(role)") == true, "\(r.text)")
                }
            }
        }
        // Every refusal is on the record as denied, under the token's actor.
        let out = f.dir + "/audit.jsonl"
        _ = try f.vault.acting(as: ProfileVault.Actor(name: "t", role: "auditor")).exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out)
        let text = try String(contentsOfFile: out, encoding: .utf8)
        let denied = text.split(separator: "\n").filter { $0.contains("\"actor.user.name\":\"test-support\"") && $0.contains("\"status\":\"denied\"") }
        #expect(denied.count >= 9, "\(denied.count) denied entries for test-support")
    }

    @Test func aWrongRoleIsRefusedBeforeTheBodyIsRead() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let r = try await c.call(.post, "/v1/queries", as: "support", body: "not json")
            #expect(r.status == .forbidden)
        }
    }

    @Test func errorBodiesAreJSONAndCarryNoPersonalDataFromTheRequest() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let secret = "jane.secret@example.com"
            let cases: [(HTTPRequest.Method, String, String?, String)] = [
                (.post, "/v1/profiles", #"[{"customer_id":"C7","email":"\#(secret)","age":"old","gender":"female","country":"DE"}]"#, "operator"),
                (.post, "/v1/profiles", #"[{"customer_id":"C7","email":"\#(secret)","gender":"\#(secret)","country":"DE"}]"#, "operator"),
                (.get, "/v1/subjects/\(secret)?purpose=customer_support", nil, "support"),
                (.post, "/v1/subjects/\(secret)/consent", #"{"purpose":"analytics","granted":true}"#, "privacy_officer"),
                (.delete, "/v1/subjects/\(secret)", nil, "privacy_officer"),
                (.post, "/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"country=\#(secret)"}"#, "trainer"),
                (.post, "/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"email=\#(secret)"}"#, "trainer"),
                (.get, "/v1/nothing/\(secret)", nil, "trainer"),
            ]
            for (method, uri, body, role) in cases {
                let r = try await c.call(method, uri, as: role, body: body)
                #expect([400, 403, 404].contains(r.status.code), "\(method) \(uri): \(r.status)")
                #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
                #expect(r.error?.isEmpty == false, "\(r.text)")
                #expect(!r.text.contains("jane.secret"), "\(method) \(uri) echoed: \(r.text)")
                #expect(!r.text.contains("Error(") && !r.text.contains(".swift"))
            }
        }
    }

    @Test func metricsCountRoutesByTemplateAndHoldNoPersonalData() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            _ = try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support")
            _ = try await c.call(.get, "/v1/subjects/ada@example.com?purpose=customer_support", as: "support")
            _ = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":0.25}"#)
            _ = try await c.call(.get, "/v1/unknown/ada@example.com")
            let m = try await c.call(.get, "/metrics")
            #expect(m.status == .ok)
            #expect(m.headers[.contentType]?.hasPrefix("text/plain") == true)
            #expect(m.text.contains(#"profilevault_http_requests_total{route="/v1/subjects/{customer_id}",method="GET",status="200"} 1"#), "\(m.text)")
            #expect(m.text.contains(#"status="404""#))
            #expect(m.text.contains(#"route="unmatched""#))
            #expect(m.text.contains("profilevault_http_request_duration_seconds_bucket"))
            #expect(m.text.contains(#"profilevault_budget_spent_epsilon{purpose="analytics"} 0.25"#), "\(m.text)")
            for pii in ["ada@example.com", "Ada", "C1\"", "C2", "Lovelace", "+49"] { #expect(!m.text.contains(pii), "metrics contain \(pii)") }
        }
    }

    @Test func bodiesOverTheLimitAre413() async throws {
        var o = ServiceOptions()
        o.maxBodyBytes = 1024
        o.maxIngestBodyBytes = 2048
        let f = try ServiceFixture(options: o)
        try await f.test { c in
            let big = #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":""# + String(repeating: "a", count: 2000) + #""}"#
            let r = try await c.call(.post, "/v1/queries", as: "trainer", body: big)
            #expect(r.status == .contentTooLarge)
            #expect(r.error != nil)
            let many = "[" + Array(repeating: #"{"customer_id":"C1","country":"DE"}"#, count: 100).joined(separator: ",") + "]"
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: many).status == .contentTooLarge)
        }
    }

    @Test func aTokensFileOwnedByAnotherUserIsRefused() throws {
        guard geteuid() == 0 else {
            print("SKIP aTokensFileOwnedByAnotherUserIsRefused: needs root to chown a file to another uid (SecretFile.problem is unit-tested in KeyringTests)")
            return
        }
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        #expect(chown(path, 65534, 65534) == 0)
        do {
            _ = try TokenFile.load(path: path)
            Issue.record("a tokens file owned by uid 65534 was loaded")
        } catch let e as VaultError {
            #expect(e.kind == .configuration)
            #expect(e.message == "tokens file \(path): is owned by uid 65534, not by the user running this (uid 0); run: chown 0 \(path) (or run as its owner)")
        }
        #expect(chown(path, 0, 0) == 0)
        #expect(try TokenFile.load(path: path).identities.count == ServiceFixture.roles.count)
    }

    @Test func aTokensFileReadableByOthersIsRefused() throws {
        let f = try ServiceFixture()
        let path = f.dir + "/tokens.json"
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        chmod(path, 0o644)
        #expect(throws: VaultError.self) { _ = try TokenFile.load(path: path) }
        do {
            _ = try TokenFile.load(path: path)
        } catch let e as VaultError {
            #expect(e.kind == .configuration)
            #expect(e.message.contains("readable by group or others"))
        }
        #expect(throws: VaultError.self) { _ = try TokenFile.loadOrEmpty(path: path) }
        chmod(path, 0o600)
        #expect(try TokenFile.load(path: path).identities.count == ServiceFixture.roles.count)
    }

    @Test func theTokensFileHoldsOnlyHashesAndMapsTokensToIdentities() throws {
        let f = try ServiceFixture()
        let text = try String(contentsOfFile: f.dir + "/tokens.json", encoding: .utf8)
        for (_, token) in f.tokens {
            #expect(!text.contains(token))
            #expect(token.count == 43 && !token.contains("=") && !token.contains("+") && !token.contains("/"))
        }
        #expect(f.tokenFile.identity(forToken: f.tokens["trainer"]!)?.role == "trainer")
        #expect(f.tokenFile.identity(forToken: f.tokens["trainer"]!)?.actor == "test-trainer")
        #expect(f.tokenFile.identity(forToken: String(f.tokens["trainer"]!.dropLast())) == nil)
        #expect(f.tokenFile.identity(forToken: "") == nil)
    }

    @Test func theOpenAPIDocumentDescribesExactlyTheRoutes() throws {
        let text = try String(contentsOfFile: ServiceFixture.repoRoot + "/docs/openapi.yaml", encoding: .utf8)
        var documented: Set<String> = []
        var path: String?
        var inPaths = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("paths:") { inPaths = true; continue }
            if inPaths, let first = line.first, first != " ", first != "#" { inPaths = false }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()); continue }
            let t = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("    "), !line.hasPrefix("     "), let p = path,
               ["get:", "post:", "put:", "delete:", "patch:"].contains(t) {
                documented.insert(t.dropLast().uppercased() + " " + p)
            }
        }
        let routed = Set(VaultRoutes.all.map { "\($0.method) \($0.path)" })
        #expect(documented == routed, "documented only: \(documented.subtracting(routed)); routed only: \(routed.subtracting(documented))")
    }

    @Test func theRouterServesExactlyTheListedRoutes() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            for r in VaultRoutes.all {
                let uri = r.path.replacingOccurrences(of: "{customer_id}", with: "C1").replacingOccurrences(of: "{request_id}", with: "req_0123456789abcdef")
                let a = try await c.call(HTTPRequest.Method(r.method)!, uri)
                #expect(a.error != "no such route", "\(r.method) \(r.path) is not routed")
            }
        }
    }

    @Test func aLiveServerOnLoopbackAnswers() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.live) { client in
            let h = try await client.execute(uri: "/healthz", method: .get)
            #expect(h.status == .ok)
            let b = try await client.execute(uri: "/v1/budget", method: .get, headers: [.authorization: "Bearer \(f.tokens["trainer"]!)"])
            #expect(b.status == .ok)
            #expect(String(buffer: b.body).contains("purposes"))
        }
    }
}
