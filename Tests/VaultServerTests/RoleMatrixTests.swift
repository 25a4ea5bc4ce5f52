import Foundation
import Hummingbird
import HummingbirdTesting
@testable import ProfileVault
import Testing
import VaultServer

/// Every route for every role of the default policy (SPEC §12, issue 20 part 1): a valid
/// request is answered 2xx exactly when the role's permissions allow the route, 403 otherwise,
/// 401 without a token or with an unknown one. The permission of each route is written here,
/// from SPEC §8/§12 and docs/http.md, not read from the code; the roles' permissions come from
/// the policy. A route the router serves but this table lacks fails the test.
/// Then the methods: 405 with `Allow` for a wrong method on a known path, HEAD wherever GET is.
@Suite struct RoleMatrixTests {
    /// One route's valid request: `permission` nil means any role the policy defines.
    struct Case {
        var method: String
        var path: String
        var permission: String?
        var uri: String
        var body: String?
    }

    /// In order: the destructive ones (key rotation, restriction, erasure) last, and each on a
    /// subject no later case needs.
    static func cases(model: String, requests: [String], scoreModel: String = "{}") -> [Case] {
        [
            Case(method: "GET", path: "/v1/status", permission: nil, uri: "/v1/status"),
            Case(method: "POST", path: "/v1/profiles", permission: "ingest", uri: "/v1/profiles", body: ServiceFixture.profiles),
            Case(method: "POST", path: "/v1/events", permission: "ingest", uri: "/v1/events",
                 body: #"[{"customer_id":"C1","kind":"purchase","item":"SKU-1","value":5,"time":"2026-10-01T12:00:00Z"}]"#),
            Case(method: "GET", path: "/v1/subjects/{customer_id}", permission: "get", uri: "/v1/subjects/C1?purpose=customer_support"),
            Case(method: "GET", path: "/v1/find", permission: "get", uri: "/v1/find?field=email&value=ada%40example.com"),
            Case(method: "POST", path: "/v1/subjects/{customer_id}/consent", permission: "consent", uri: "/v1/subjects/C1/consent",
                 body: #"{"purpose":"analytics","granted":true,"source":"matrix"}"#),
            Case(method: "GET", path: "/v1/subjects/{customer_id}/consent", permission: "consent", uri: "/v1/subjects/C1/consent"),
            Case(method: "POST", path: "/v1/consent/import", permission: "consent", uri: "/v1/consent/import",
                 body: #"{"rows":[{"customer_id":"C1","purpose":"analytics","granted":true,"time":"2026-01-01T00:00:00Z","source":"matrix"}]}"#),
            Case(method: "POST", path: "/v1/subjects/{customer_id}/rectification", permission: "rectify", uri: "/v1/subjects/C1/rectification",
                 body: #"{"set":{"full_name":"Ada King"}}"#),
            Case(method: "GET", path: "/v1/subjects/{customer_id}/export", permission: "export", uri: "/v1/subjects/C1/export"),
            Case(method: "POST", path: "/v1/queries", permission: "query", uri: "/v1/queries",
                 body: #"{"kind":"count","purpose":"analytics","epsilon":0.1}"#),
            Case(method: "GET", path: "/v1/budget", permission: "query", uri: "/v1/budget"),
            Case(method: "POST", path: "/v1/jobs", permission: "train", uri: "/v1/jobs",
                 body: #"{"job":"km","purpose":"model_training","model":"kmeans","features":["age"],"params":{"k":2},"epsilon":0.5}"#),
            Case(method: "POST", path: "/v1/recommendations", permission: "serve_recommendations", uri: "/v1/recommendations",
                 body: #"{"model":\#(model),"subject":"C1","top":5}"#),
            Case(method: "POST", path: "/v1/scores", permission: "score", uri: "/v1/scores",
                 body: #"{"model":\#(scoreModel),"subject":"C1","top":5}"#),
            Case(method: "GET", path: "/v1/audit", permission: "audit", uri: "/v1/audit"),
            Case(method: "GET", path: "/v1/audit/report", permission: "audit", uri: "/v1/audit/report"),
            Case(method: "GET", path: "/v1/audit/head", permission: "audit", uri: "/v1/audit/head"),
            Case(method: "POST", path: "/v1/requests", permission: "requests", uri: "/v1/requests", body: #"{"type":"access","customer_id":"C1"}"#),
            Case(method: "GET", path: "/v1/requests", permission: "requests", uri: "/v1/requests"),
            Case(method: "POST", path: "/v1/requests/{request_id}/fulfil", permission: "requests", uri: "/v1/requests/\(requests[0])/fulfil"),
            Case(method: "POST", path: "/v1/requests/{request_id}/extend", permission: "requests", uri: "/v1/requests/\(requests[1])/extend",
                 body: #"{"reason":"complex request"}"#),
            Case(method: "POST", path: "/v1/requests/{request_id}/deny", permission: "requests", uri: "/v1/requests/\(requests[2])/deny",
                 body: #"{"reason":"manifestly unfounded"}"#),
            Case(method: "POST", path: "/v1/retention", permission: "retention", uri: "/v1/retention", body: #"{"dry_run":true}"#),
            Case(method: "GET", path: "/v1/keys", permission: "keys", uri: "/v1/keys"),
            Case(method: "POST", path: "/v1/keys/rotate", permission: "keys", uri: "/v1/keys/rotate"),
            Case(method: "POST", path: "/v1/subjects/{customer_id}/restriction", permission: "restrict", uri: "/v1/subjects/C2/restriction"),
            Case(method: "DELETE", path: "/v1/subjects/{customer_id}/restriction", permission: "restrict", uri: "/v1/subjects/C2/restriction"),
            Case(method: "DELETE", path: "/v1/subjects/{customer_id}", permission: "erase", uri: "/v1/subjects/C3?reason=matrix"),
        ]
    }

    @Test func eachRouteIs2xxExactlyForTheRolesItsPermissionAllows() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let model = try await RecommendationRouteTests().model(f, c)   // seeds C1..C3, consent, purchases
            var requests: [String] = []
            for type in ["access", "access", "access"] {
                let r = try await c.call(.post, "/v1/requests", as: "privacy_officer", body: #"{"type":"\#(type)","customer_id":"C2"}"#)
                guard r.status == .created, let id = r.json?["request"]?.stringValue else { Issue.record("\(r.text)"); return }
                requests.append(id)
            }
            // A model POST /v1/scores scores (issue 24), trained by the trainer.
            let lin = try await c.call(.post, "/v1/jobs", as: "trainer",
                                       body: #"{"job":"lin","purpose":"model_training","model":"linear_regression","derived":{"spend":{"events":"purchase","aggregate":"sum","bounds":[0,100]}},"features":["age","annual_income"],"target":"spend","epsilon":0.5}"#)
            #expect(lin.status == .ok, "\(lin.text)")
            let all = Self.cases(model: model, requests: requests, scoreModel: lin.text)
            let covered = Set(all.map { "\($0.method) \($0.path)" })
            let routed = Set(VaultRoutes.all.map { "\($0.method) \($0.path)" }).subtracting(["GET /healthz", "GET /metrics"])
            #expect(covered == routed, "routes without a case: \(routed.subtracting(covered)); cases without a route: \(covered.subtracting(routed))")
            let policy = f.vault.policy
            var allowedSomewhere = 0
            for k in all {
                let method = HTTPRequest.Method(k.method)!
                let none = try await c.call(method, k.uri, body: k.body)
                #expect(none.status == .unauthorized, "\(k.method) \(k.path) without a token: \(none.status) \(none.text)")
                #expect(none.headers[.wwwAuthenticate] == "Bearer")
                let bad = try await c.call(method, k.uri, token: String(repeating: "A", count: 43), body: k.body)
                #expect(bad.status == .unauthorized, "\(k.method) \(k.path) with an unknown token: \(bad.status)")
                // Refused roles first: a refusal changes nothing, so the allowed role then meets
                // the state the case was written for.
                let roles = ServiceFixture.roles.sorted { a, b in
                    Self.allows(policy.roles[a], k.permission) == Self.allows(policy.roles[b], k.permission) ? a < b : !Self.allows(policy.roles[a], k.permission)
                }
                for role in roles {
                    let allowed = Self.allows(policy.roles[role], k.permission)
                    let r = try await c.call(method, k.uri, as: role, body: k.body)
                    if allowed {
                        allowedSomewhere += 1
                        #expect((200..<300).contains(Int(r.status.code)), "\(k.method) \(k.path) as \(role): \(r.status) \(r.text.prefix(300))")
                    } else {
                        #expect(r.status == .forbidden, "\(k.method) \(k.path) as \(role) (not allowed): \(r.status) \(r.text.prefix(300))")
                        #expect(r.json?["error"] != nil)
                    }
                }
            }
            // Every case is allowed for at least one role (no route nobody may call), and the
            // role the policy does not define is never allowed.
            #expect(allowedSomewhere >= all.count)
        }
    }

    static func allows(_ permissions: Set<String>?, _ permission: String?) -> Bool {
        guard let permissions else { return false }   // a role the policy does not define
        guard let permission else { return true }
        return permissions.contains(permission)
    }

    /// The new routes answer what the CLI answers and are audited as the CLI audits them.
    @Test func theOperationsRoutesAnswerTheCLIFormsAndAreAudited() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let s = try await c.call(.get, "/v1/status", as: "app")
            #expect(s.status == .ok)
            #expect(s.json == JSONForms.storeStatus(try f.vault.status()) || s.json?["subjects"]?.intValue == 3, "\(s.text)")
            #expect(s.json?["subjects"]?.intValue == 3)
            // The undefined role is refused, and the refusal is audited.
            let nobody = try await c.call(.get, "/v1/status", as: "nobody", headers: [HTTPFields.Element.Name("x-request-id")!: "status-nobody"])
            #expect(nobody.status == .forbidden, "\(nobody.text)")

            let k = try await c.call(.get, "/v1/keys", as: "privacy_officer")
            #expect(k.status == .ok && k.json?["active"]?.intValue == 1 && k.json?["rewrapped"]?.intValue == 0, "\(k.text)")
            let rot = try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer", headers: [HTTPFields.Element.Name("x-request-id")!: "rotate-1"])
            #expect(rot.status == .ok && rot.json?["active"]?.intValue == 2 && rot.json?["rewrapped"]?.intValue == 3, "\(rot.text)")
            if case .array(let vs)? = rot.json?["versions"] { #expect(vs.count == 2) } else { Issue.record("\(rot.text)") }
            // resume adds no version; an unknown key is 400.
            let resume = try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer", body: #"{"resume":true}"#)
            #expect(resume.status == .ok && resume.json?["active"]?.intValue == 2, "\(resume.text)")
            #expect(try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer", body: #"{"resume":1}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer", body: #"{"version":3}"#).status == .badRequest)
            #expect(try await c.call(.post, "/v1/keys/rotate", as: "trainer").status == .forbidden)
            // Data still reads after the rotation.
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support").status == .ok)

            #expect(try await c.call(.post, "/v1/subjects/C1/consent", as: "privacy_officer",
                                     body: #"{"purpose":"analytics","granted":false,"source":"web"}"#).status == .ok)
            let consent = try await c.call(.get, "/v1/subjects/C1/consent", as: "privacy_officer", headers: [HTTPFields.Element.Name("x-request-id")!: "consent-1"])
            #expect(consent.status == .ok, "\(consent.text)")
            #expect(consent.json?["customer_id"]?.stringValue == "C1")
            #expect(consent.json?["purposes"]?["analytics"]?["granted"] == .bool(false))
            #expect(consent.json?["purposes"]?["model_training"]?["granted"] == .bool(true))
            #expect(consent.json?["purposes"]?["customer_support"]?["consent_required"] == .bool(false))
            if case .array(let es)? = consent.json?["entries"] {
                #expect(es.count == 3, "\(es)")   // grant analytics, grant model_training, revoke analytics
                #expect(es.last?["source"]?.stringValue == "web" && es.last?["granted"] == .bool(false))
            } else { Issue.record("\(consent.text)") }
            // Unknown subject: 404 without the ID; another role: 403.
            let unknown = try await c.call(.get, "/v1/subjects/NOBODY-SECRET/consent", as: "privacy_officer")
            #expect(unknown.status == .notFound && !unknown.text.contains("NOBODY-SECRET"), "\(unknown.text)")
            #expect(try await c.call(.get, "/v1/subjects/C1/consent", as: "support").status == .forbidden)

            let entries = try f.auditEntries()
            func ops(_ uid: String) -> [String] {
                entries.filter { $0["api.request.uid"]?.stringValue == uid }.compactMap { e in
                    guard let op = e["api.operation"]?.stringValue, let st = e["status"]?.stringValue else { return nil }
                    return "\(op):\(st)"
                }
            }
            #expect(ops("consent-1").contains("consent.status:ok") && ops("consent-1").contains("consent.history:ok"), "\(ops("consent-1"))")
            #expect(ops("rotate-1").contains("keys.rotate:ok"), "\(ops("rotate-1"))")
            #expect(ops("status-nobody") == ["status:denied"], "\(ops("status-nobody"))")
        }
    }

    /// 405 with Allow (and the JSON error and the request id) for a wrong method on every known
    /// path; HEAD answered like GET without the body; unknown paths stay 404.
    @Test func wrongMethodsAre405WithAllowAndHeadIsGetWithoutBody() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            var byPath: [String: Set<String>] = [:]
            for r in VaultRoutes.all { byPath[r.path, default: []].insert(r.method) }
            for (path, methods) in byPath {
                let uri = path.replacingOccurrences(of: "{customer_id}", with: "C1").replacingOccurrences(of: "{request_id}", with: "req_0123456789abcdef")
                var allow = methods
                if methods.contains("GET") { allow.insert("HEAD") }
                for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] where !allow.contains(m) {
                    let r = try await c.call(HTTPRequest.Method(m)!, uri, as: "privacy_officer")
                    #expect(r.status == .methodNotAllowed, "\(m) \(path): \(r.status) \(r.text)")
                    let listed = Set((r.headers[.allow] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                    #expect(listed == allow, "\(m) \(path): Allow \(r.headers[.allow] ?? "none"), expected \(allow.sorted())")
                    #expect(r.error?.contains("not allowed") == true && r.headers[HTTPFields.Element.Name("x-request-id")!] != nil, "\(r.text)")
                    #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
                }
            }
            // A made-up method is not echoed.
            let odd = try await c.call(HTTPRequest.Method("BREW")!, "/v1/budget", as: "trainer")
            #expect(odd.status == .methodNotAllowed && !odd.text.contains("BREW"))

            // HEAD: the GET route's status and headers, no body.
            let get = try await c.call(.get, "/healthz")
            let head = try await c.call(.head, "/healthz")
            #expect(head.status == .ok && head.text.isEmpty, "\(head.status) \(head.text)")
            #expect(head.headers[.contentType] == get.headers[.contentType])
            #expect(head.headers[.contentLength] == get.headers[.contentLength] && get.headers[.contentLength] != nil)
            let b = try await c.call(.head, "/v1/budget", as: "trainer")
            #expect(b.status == .ok && b.text.isEmpty && b.headers[.contentType]?.hasPrefix("application/json") == true)
            // HEAD passes the same checks as GET: no token 401, a wrong role 403 (both bodiless).
            let noToken = try await c.call(.head, "/v1/budget")
            #expect(noToken.status == .unauthorized && noToken.text.isEmpty && noToken.headers[.wwwAuthenticate] == "Bearer")
            let wrongRole = try await c.call(.head, "/v1/subjects/C1?purpose=customer_support", as: "trainer")
            #expect(wrongRole.status == .forbidden && wrongRole.text.isEmpty)
            #expect(try await c.call(.head, "/v1/subjects/C1?purpose=customer_support", as: "support").status == .ok)
            #expect(try await c.call(.head, "/metrics").status == .ok)
            // HEAD where there is no GET: 405.
            let q = try await c.call(.head, "/v1/queries", as: "trainer")
            #expect(q.status == .methodNotAllowed && q.headers[.allow] == "POST")

            // Unknown paths stay 404, whatever the method.
            for m in [HTTPRequest.Method.get, .post, .delete, .head] {
                for uri in ["/v1/nothing", "/v1/subjects/C1/nothing", "/v1/budget/extra", "/"] {
                    let r = try await c.call(m, uri, as: "trainer")
                    #expect(r.status == .notFound, "\(m) \(uri): \(r.status)")
                }
            }
        }
    }

    @Test func aLiveServerAnswersHeadAnd405() async throws {
        let f = try ServiceFixture()
        try await f.app.test(.live) { client in
            let h = try await client.execute(uri: "/healthz", method: .head)
            #expect(h.status == .ok && h.body.readableBytes == 0)
            let p = try await client.execute(uri: "/healthz", method: .post)
            #expect(p.status == .methodNotAllowed && p.headers[.allow] == "GET, HEAD")
            // The connection still serves after a bodiless HEAD answer with a Content-Length.
            let g = try await client.execute(uri: "/healthz", method: .get)
            #expect(g.status == .ok && String(buffer: g.body).contains("ok"))
        }
    }
}
