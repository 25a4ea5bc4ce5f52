public import Hummingbird
public import Logging
public import ProfileVault
import DifferentialPrivacy
import Foundation
import VaultPolicy
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// Limits of the service.
public struct ServiceOptions: Sendable {
    /// Largest body of `POST /v1/profiles` and `POST /v1/events` (413 above it).
    public var maxIngestBodyBytes = 16 << 20
    /// Largest body of the other routes (413 above it).
    public var maxBodyBytes = 256 << 10
    /// Most records in one ingest body.
    public var maxRecords = 100_000
    /// No request writes a file (ingest bodies, jobs and audit exports stay in memory); this
    /// names where earlier versions staged request files in private directories, which the
    /// service sweeps at start-up when a dead process left one (`ScratchSpace`). Default:
    /// `/dev/shm` when it exists, else the temporary directory.
    public var scratchDirectory: String?
    /// Seconds before an idle connection is closed.
    public var idleTimeoutSeconds: Int64 = 60
    /// The time limit of one request, body included (`serve --request-timeout`): past it the
    /// answer is 503 `request timed out`, while work already handed to the store may still
    /// finish (docs/http.md). nil: no limit.
    public var requestTimeout: Duration? = .seconds(30)
    /// How often, at most, the tokens file is checked for a change (one `stat`); a changed file
    /// is reread before the next request's token is checked. Zero (the default): before every
    /// request, so a revocation written by any node is seen by the very next request.
    public var tokensCheckInterval: Duration = .zero
    /// Failed authentications (401) one client address may have within
    /// ``authFailureWindow`` before the routes that need a token answer it 429 for that long
    /// (`serve --auth-failure-limit`; ``AuthFailureLimiter``).
    public var authFailureLimit = AuthFailureLimiter.defaultLimit
    /// The window of ``authFailureLimit``, and how long an address over it is answered 429
    /// (`serve --auth-failure-window`).
    public var authFailureWindow: Duration = AuthFailureLimiter.defaultWindow
    /// Most client addresses the limiter remembers; failures from further addresses share one
    /// overflow count (memory and audit entries stay bounded; see ``AuthFailureLimiter``).
    public var authFailureAddresses = AuthFailureLimiter.defaultAddresses
    /// The console's session cookie carries `Secure` (`serve` sets it when it speaks TLS).
    public var consoleSecureCookies = false
    /// The console's sessions (in this process's memory; docs/console.md).
    public var consoleSessions = ConsoleSessions()

    public init() {}
}

/// The routes of SPEC §8, as (method, path template); `docs/openapi.yaml` describes exactly
/// these (a test checks it).
public enum VaultRoutes {
    public static let all: [(method: String, path: String)] = [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/v1/profiles"),
        ("POST", "/v1/events"),
        ("GET", "/v1/subjects/{customer_id}"),
        ("POST", "/v1/subjects/{customer_id}/consent"),
        ("GET", "/v1/subjects/{customer_id}/export"),
        ("GET", "/v1/find"),
        ("POST", "/v1/retention"),
        ("DELETE", "/v1/subjects/{customer_id}"),
        ("POST", "/v1/queries"),
        ("GET", "/v1/budget"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/recommendations"),
        ("POST", "/v1/scores"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/subjects/{customer_id}/restriction"),
        ("DELETE", "/v1/subjects/{customer_id}/restriction"),
        ("POST", "/v1/consent/import"),
        ("POST", "/v1/subjects/{customer_id}/rectification"),
        ("POST", "/v1/requests"),
        ("GET", "/v1/requests"),
        ("POST", "/v1/requests/{request_id}/fulfil"),
        ("POST", "/v1/requests/{request_id}/extend"),
        ("POST", "/v1/requests/{request_id}/deny"),
        ("GET", "/v1/audit/report"),
        ("GET", "/v1/audit/head"),
        ("GET", "/v1/status"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys/rotate"),
        ("GET", "/v1/subjects/{customer_id}/consent"),
    ]

    /// The console's routes (HTML, not part of the JSON contract; Console.swift routes them),
    /// listed so a wrong method on one is answered 405 with `Allow` like the API's.
    public static let console: [(method: String, path: String)] = [
        ("GET", "/console"),
        ("GET", "/console/static/console.css"), ("GET", "/console/static/console.js"),
        ("GET", "/console/sign-in"), ("POST", "/console/sign-in"), ("POST", "/console/sign-out"),
        ("GET", "/console/requests"), ("POST", "/console/requests"),
        ("GET", "/console/requests/{request_id}"), ("GET", "/console/requests/{request_id}/receipt"),
        ("POST", "/console/requests/{request_id}/fulfil"), ("POST", "/console/requests/{request_id}/extend"),
        ("POST", "/console/requests/{request_id}/deny"),
        ("GET", "/console/subject"), ("POST", "/console/subject"), ("POST", "/console/subject/consent"),
        ("POST", "/console/subject/restriction"), ("POST", "/console/subject/export.html"), ("POST", "/console/subject/reveal"),
        ("POST", "/console/subject/objection"), ("POST", "/console/subject/rectify"),
        ("GET", "/console/budget"),
        ("GET", "/console/audit"), ("POST", "/console/audit/verify"), ("POST", "/console/audit/verify-export"),
        ("GET", "/console/audit/public-key.pem"), ("GET", "/console/audit/export"),
        ("GET", "/console/policy"),
        ("GET", "/console/keys"), ("POST", "/console/keys/rotate"), ("POST", "/console/keys/retire"),
    ]

    /// The methods routed on a request path (raw, as sent), by matching it against the
    /// templates (the API's and the console's): a `{name}` segment matches any one non-empty
    /// segment. Empty when no template matches (an unknown path: 404). ``MethodMiddleware``
    /// answers 405 (and `Allow`) from this.
    public static func methods(forPath path: String) -> Set<String> {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        var found: Set<String> = []
        for route in all + console {
            let template = route.path.split(separator: "/", omittingEmptySubsequences: true)
            guard template.count == parts.count else { continue }
            if zip(template, parts).allSatisfy({ t, p in t.hasPrefix("{") || t == p }) { found.insert(route.method) }
        }
        return found
    }
}

/// Builds the service's router: every route of SPEC §8 over one opened `Vault` (one store,
/// one `DatabasePool`). Each request acts through `vault.acting(as:)` with its token's actor
/// and role, so it passes the same gate, consent checks, budget and audit log as the CLI.
///
/// Tests call this and `app.test(.router)`; ``buildApplication(vault:tokens:host:port:options:metrics:logger:)`` adds the socket.
///
/// The tokens file is reread when it changes on disk (checked at most every
/// ``ServiceOptions/tokensCheckInterval``), starting from `tokens`.
public func buildRouter(vault: Vault, tokens: TokenFile, options: ServiceOptions = ServiceOptions(),
                        metrics: ServiceMetrics = ServiceMetrics(),
                        logger: Logger = Logger(label: "profilevault.http")) -> Router<VaultRequestContext> {
    buildRouter(vault: vault, tokens: ReloadingTokenFile(tokens, checkEvery: options.tokensCheckInterval, logger: logger),
                options: options, metrics: metrics, logger: logger)
}

/// As the `TokenFile` form, over a ``ReloadingTokenFile`` the caller keeps (e.g. to reload it
/// on SIGHUP).
public func buildRouter(vault: Vault, tokens: ReloadingTokenFile, options: ServiceOptions = ServiceOptions(),
                        metrics: ServiceMetrics = ServiceMetrics(),
                        logger: Logger = Logger(label: "profilevault.http")) -> Router<VaultRequestContext> {
    let service = VaultService(vault: vault, options: options, metrics: metrics, logger: logger)
    // HEAD wherever GET is: the GET route answers it, without the body.
    let router = Router(context: VaultRequestContext.self, options: .autoGenerateHeadEndpoints)
    // Middleware first: Hummingbird wraps each route with the middlewares added before it.
    // Client messages never show where the server keeps its files.
    let c = vault.configuration
    let serverPaths: [(path: String, replacement: String)] = [
        (vault.policy.file, "the policy"), (vault.schema.file, "the schema"), (c.policyDirectory, "the policy directory"),
        (c.storePath, "the store"), (c.keysPath, "the keyring"), (tokens.path, "the tokens file"),
    ]
    // Outermost: every HEAD answer without its body (also a 404 or 405 of no route).
    router.add(middleware: HeadMiddleware())
    // One limiter for the API's bearer tokens and the console's sign-in.
    let authFailures = AuthFailureGate(vault: vault, limiter: AuthFailureLimiter(
        limit: options.authFailureLimit, window: options.authFailureWindow, maxAddresses: options.authFailureAddresses))
    router.add(middleware: ServiceMiddleware(tokens: tokens, metrics: metrics, logger: logger,
                                             requestTimeout: options.requestTimeout, serverPaths: serverPaths,
                                             authFailures: authFailures))
    // Inside it (so its answers carry the request id and are logged): 405 with Allow for a
    // known path's wrong method.
    router.add(middleware: MethodMiddleware())

    router.get("/healthz") { _, _ in try await service.health() }
    router.get("/metrics") { _, _ in await service.metricsText() }

    // Ingest bodies are ingested from memory (the parsed array, record by record): no byte of
    // them is written anywhere but the store.
    router.post("/v1/profiles") { request, context -> Response in
        let v = try await service.vault(context, permission: "ingest", action: "ingest.profiles")
        let items = try await service.records(request, what: "profile")
        let report = try await redactingRecord(items) {
            try await blocking { try v.ingestProfiles(records: items) }
        }
        return json(JSONForms.ingest(report))
    }

    router.post("/v1/events") { request, context -> Response in
        let v = try await service.vault(context, permission: "ingest", action: "ingest.events")
        let items = try await service.records(request, what: "event")
        let report = try await redactingRecord(items) {
            try await blocking { try v.ingestEvents(records: items) }
        }
        return json(JSONForms.ingest(report))
    }

    router.get("/v1/subjects/{customer_id}") { request, context -> Response in
        let v = try await service.vault(context, permission: "get", action: "get", subjectID: try? customerID(context))
        let id = try customerID(context)
        guard let purpose = request.uri.queryParameters["purpose"].map(String.init), !purpose.isEmpty else {
            throw APIError.badRequest("query parameter purpose is required (a purpose that may read PII, e.g. customer_support)")
        }
        return json(try await redacting([id]) { try await blocking { JSONForms.profile(try v.get(customerID: id, purpose: purpose)) } })
    }

    router.post("/v1/subjects/{customer_id}/consent") { request, context -> Response in
        let v = try await service.vault(context, permission: "consent", action: "consent.change", subjectID: try? customerID(context))
        let id = try customerID(context)
        let body = try BodyFields(try await service.jsonBody(request), allowed: ["purpose", "granted", "source", "objection"])
        let purpose = try body.string("purpose", required: true)!
        // {"purpose", "objection": true}: an objection (Art. 21) to a legitimate_interest purpose.
        if try body.bool("objection") == true {
            guard try body.bool("granted") == nil, try body.string("source", required: false) == nil else {
                throw APIError.badRequest("objection: takes no granted or source (an objection is recorded with source objection)")
            }
            let n = try await redacting([id]) { try await blocking { try v.object(.one(id), purpose: purpose) } }
            return json(.object([("changed", .int(Int64(n))), ("purpose", .string(purpose)), ("objection", .bool(true))]))
        }
        guard let granted = try body.bool("granted") else { throw APIError.badRequest("granted: required (true or false)") }
        let source = try body.string("source", required: false)
        let n = try await redacting([id]) { try await blocking { try v.setConsent(.one(id), purpose: purpose, granted: granted, source: source) } }
        return json(.object([("changed", .int(Int64(n))), ("purpose", .string(purpose)), ("granted", .bool(granted))]))
    }

    // Restriction of processing (GDPR Art. 18): POST restricts, DELETE lifts it.
    for restricted in [true, false] {
        let handler: @Sendable (Request, VaultRequestContext) async throws -> Response = { _, context in
            let v = try await service.vault(context, permission: "restrict", action: restricted ? "restrict" : "unrestrict", subjectID: try? customerID(context))
            let id = try customerID(context)
            let changed = try await redacting([id]) { try await blocking { try v.setRestriction(customerID: id, restricted: restricted) } }
            return json(.object([("customer_id", .string(id)), ("changed", .bool(changed))]))
        }
        if restricted {
            router.post("/v1/subjects/{customer_id}/restriction", use: handler)
        } else {
            router.delete("/v1/subjects/{customer_id}/restriction", use: handler)
        }
    }

    // Rectification (GDPR Art. 16): {"set": {"field": "value", ...}}; values are text as in an
    // ingest file (numbers and booleans are taken as their text), null sets a field to null.
    router.post("/v1/subjects/{customer_id}/rectification") { request, context -> Response in
        let v = try await service.vault(context, permission: "rectify", action: "rectify", subjectID: try? customerID(context))
        let id = try customerID(context)
        let body = try BodyFields(try await service.jsonBody(request), allowed: ["set"])
        guard case .object(let pairs)? = body.pairs["set"], !pairs.isEmpty else {
            throw APIError.badRequest("set: required (an object of field: value, at least one)")
        }
        var assignments: [(field: String, value: String)] = []
        var values: [String] = [id]
        for (k, value) in pairs {
            switch value {
            case .string(let s): assignments.append((k, s)); values.append(s)
            case .null: assignments.append((k, ""))
            case .bool(let b): assignments.append((k, b ? "true" : "false"))
            case .int(let n): assignments.append((k, String(n)))
            case .double(let d): assignments.append((k, String(d)))
            default: throw APIError.badRequest("set: each value must be a string, a number, a boolean or null")
            }
        }
        let given = assignments
        let changed = try await redacting(values) { try await blocking { try v.rectify(customerID: id, set: given) } }
        return json(.object([("customer_id", .string(id)), ("changed", .array(changed.map { .string($0) }))]))
    }

    // Consent evidence kept elsewhere: {"rows": [{"customer_id","purpose","granted","time","source"}]},
    // all or nothing; errors name `record N` and the field.
    router.post("/v1/consent/import") { request, context -> Response in
        let v = try await service.vault(context, permission: "consent", action: "consent.import")
        let body = try BodyFields(try await service.jsonBody(request), allowed: ["rows"])
        guard case .array(let items)? = body.pairs["rows"] else { throw APIError.badRequest("rows: required (an array of objects)") }
        var rows: [Vault.ConsentImportInput] = []
        var ids: [String] = []
        for (i, item) in items.enumerated() {
            guard case .object(let pairs) = item else { throw APIError.badRequest("rows: record \(i + 1): expected an object") }
            var f: [String: String] = [:]
            for (k, value) in pairs {
                guard ["customer_id", "purpose", "granted", "time", "source"].contains(k) else {
                    throw APIError.badRequest("rows: record \(i + 1): unknown field \(String(k.prefix(64)).debugDescription)")
                }
                switch value {
                case .string(let s): f[k] = s
                case .bool(let b): f[k] = b ? "true" : "false"
                case .int(let n): f[k] = String(n)
                case .null: break
                default: throw APIError.badRequest("rows: record \(i + 1): \(k): expected a string, a boolean or an integer")
                }
            }
            if let id = f["customer_id"] { ids.append(id) }
            rows.append(Vault.ConsentImportInput(line: i + 1, customerID: f["customer_id"], purpose: f["purpose"], granted: f["granted"],
                                                 time: f["time"], source: f["source"]))
        }
        let records = rows
        let n = try await redacting(ids) { try await blocking { try v.importConsent(records: records) } }
        return json(.object([("changed", .int(Int64(n)))]))
    }

    // ?format=json (default) | html | portability, and csv=true with portability (Art. 20 as CSV).
    router.get("/v1/subjects/{customer_id}/export") { request, context -> Response in
        let v = try await service.vault(context, permission: "export", action: "export", subjectID: try? customerID(context))
        let id = try customerID(context)
        let formatText = request.uri.queryParameters["format"].map(String.init) ?? "json"
        guard let format = AccessExportFormat(rawValue: formatText) else {
            throw APIError.badRequest("query parameter format: json, html or portability")
        }
        let csvText = request.uri.queryParameters["csv"].map(String.init)
        guard csvText == nil || csvText == "true" || csvText == "false" else { throw APIError.badRequest("query parameter csv: true or false") }
        let csv = csvText == "true"
        if csv && format != .portability { throw APIError.badRequest("query parameter csv needs format=portability") }
        let report = try await redacting([id]) { try await blocking { try v.accessReport(customerID: id, format: format) } }
        switch format {
        case .json: return json(JSONForms.accessReport(report))
        case .html:
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8",
                                                   HTTPFields.Element.Name("content-security-policy")!: "default-src 'none'; style-src 'unsafe-inline'",
                                                   HTTPFields.Element.Name("x-content-type-options")!: "nosniff"],
                            body: .init(byteBuffer: ByteBuffer(string: AccessExportHTML.render(report))))
        case .portability:
            if csv {
                return Response(status: .ok, headers: [.contentType: "text/csv; charset=utf-8"],
                                body: .init(byteBuffer: ByteBuffer(string: JSONForms.portabilityCSV(report.export))))
            }
            return json(JSONForms.portability(report.export))
        }
    }

    // Blind-index lookup on any lookup field (role permission get).
    router.get("/v1/find") { request, context -> Response in
        let v = try await service.vault(context, permission: "get", action: "find")
        guard let field = request.uri.queryParameters["field"].map(String.init), !field.isEmpty else {
            throw APIError.badRequest("query parameter field is required (a lookup field of the schema)")
        }
        guard let value = request.uri.queryParameters["value"].map(String.init), !value.isEmpty else {
            throw APIError.badRequest("query parameter value is required")
        }
        let ids = try await redacting([value]) { try await blocking { try v.find(field: field, value: value) } }
        return json(.object([("customer_id", .string(ids[0])), ("matches", .array(ids.map { .string($0) }))]))
    }

    // A retention sweep, or with dry_run its plan (list: the customer IDs per rule).
    router.post("/v1/retention") { request, context -> Response in
        let v = try await service.vault(context, permission: "retention", action: "retention.apply")
        let body = try BodyFields(try await service.jsonBody(request), allowed: ["dry_run", "list", "as_of"])
        let dryRun = try body.bool("dry_run") ?? false
        let list = try body.bool("list") ?? false
        if list && !dryRun { throw APIError.badRequest("list needs dry_run: true") }
        let asOf: Int64?
        if let text = try body.string("as_of", required: false) {
            guard let t = DateParsing.unixSeconds(fromISO8601: Substring(text)) else {
                throw APIError.badRequest("as_of: not a date (YYYY-MM-DD) or ISO 8601 time")
            }
            asOf = t
        } else {
            asOf = nil
        }
        if dryRun {
            return json(JSONForms.retentionPlan(try await blocking { try v.retentionPlan(asOf: asOf, list: list) }))
        }
        let r = try await blocking { try v.applyRetention(asOf: asOf, dryRun: false) }
        return json(.object([("events_deleted", .int(Int64(r.eventsDeleted))), ("subjects_erased", .int(Int64(r.subjectsErased))),
                             ("dry_run", .bool(false))]))
    }

    router.delete("/v1/subjects/{customer_id}") { request, context -> Response in
        let v = try await service.vault(context, permission: "erase", action: "erase", subjectID: try? customerID(context))
        let id = try customerID(context)
        let given = request.uri.queryParameters["reason"].map(String.init) ?? ""
        guard given.count <= 200 else { throw APIError.badRequest("query parameter reason: at most 200 characters") }
        let reason = given.isEmpty ? "data-subject request" : given
        let receipts = try await redacting([id]) { try await blocking { try v.erase(.one(id), reason: reason) } }
        guard let r = receipts.first else { throw VaultError(.notFound, "no subject with this customer ID") }
        return json(JSONForms.receipt(r))
    }

    router.post("/v1/queries") { request, context -> Response in
        let v = try await service.vault(context, permission: "query", action: "query")
        let body = try await service.jsonBody(request)
        if case .string("quantile")? = body["kind"] {
            let r = try quantileRequest(body)
            return json(try await redacting(whereValues(r.whereClause)) { try await blocking { JSONForms.quantile(try v.quantile(r)) } })
        }
        if case .string("bounds")? = body["kind"] {
            let r = try boundsRequest(body)
            return json(try await redacting(whereValues(r.whereClause)) { try await blocking { JSONForms.bounds(try v.privateBounds(r)) } })
        }
        let q = try queryRequest(body)
        return json(try await redacting(whereValues(q.whereClause)) {
            try await blocking { q.dryRun ? JSONForms.queryQuote(try v.quoteQuery(q)) : JSONForms.query(try v.query(q)) }
        })
    }

    router.get("/v1/budget") { _, context -> Response in
        let v = try await service.vault(context, permission: "query", action: "budget.status")
        return json(try await blocking { JSONForms.budget(try v.budgetStatus()) })
    }

    router.post("/v1/jobs") { request, context -> Response in
        // `?dry_run=true`: the job's quote (Vault+TrainQuote.swift), nothing read or charged.
        let dryRunText = request.uri.queryParameters["dry_run"].map(String.init)
        guard dryRunText == nil || dryRunText == "true" || dryRunText == "false" else { throw APIError.badRequest("dry_run: true or false") }
        if dryRunText == "true" {
            let v = try await service.vault(context, permission: "train", action: "train.quote")
            let job = try jobDocument(try await service.jsonBody(request))
            return json(try await blocking { JSONForms.trainQuote(try v.quoteTrain(Result { try parseJobBody(job) })) })
        }
        let v = try await service.vault(context, permission: "train", action: "train")
        let job = try jobDocument(try await service.jsonBody(request))
        // Parsed in memory; a body that does not parse is audited by train like a bad job file.
        let artifact = try await blocking { try v.train(Result { try parseJobBody(job) }).json }
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: artifact)))
    }

    router.post("/v1/recommendations") { request, context -> Response in
        let v = try await service.vault(context, permission: "serve_recommendations", action: "recommend")
        let r = try recommendationRequest(try await service.jsonBody(request, limit: service.options.maxIngestBodyBytes))
        let ids: [String]
        switch r.selection {
        case .one(let id): ids = [id]
        case .list(let list): ids = list
        case .file: ids = []
        }
        let rows = try await redacting(ids) {
            try await blocking { try v.recommend(model: .body(r.model, label: "model"), r.selection, top: r.top) }
        }
        return json(.object([("recommendations", .array(rows.map { row in
            var fields: [(String, JSONValue)] = [("customer_id", .string(row.customerID)), ("items", .array(row.items.map { .string($0) }))]
            if let reason = row.reason { fields.append(("error", .string(reason))) }
            return .object(fields)
        }))]))
    }

    router.post("/v1/scores") { request, context -> Response in
        let v = try await service.vault(context, permission: "score", action: "score")
        let r = try scoreRequest(try await service.jsonBody(request, limit: service.options.maxIngestBodyBytes))
        var ids: [String] = []
        if case .subjects(let s) = r.selection {
            switch s {
            case .one(let id): ids = [id]
            case .list(let list): ids = list
            case .file: ids = []
            }
        }
        let rows = try await redacting(ids) {
            try await blocking { try v.score(model: .body(r.model, label: "model"), r.selection, top: r.top, minScore: r.minScore) }
        }
        return json(.object([("scores", .array(rows.map { row in
            var fields: [(String, JSONValue)] = [("customer_id", .string(row.customerID))]
            if let s = row.score { fields.append(("score", .double(s))) }
            if let k = row.segment { fields.append(("segment", .int(Int64(k)))) }
            if let reason = row.reason { fields.append(("error", .string(reason))) }
            return .object(fields)
        }))]))
    }

    router.get("/v1/audit") { request, context -> Response in
        let q = request.uri.queryParameters
        let subject = q["subject"].map(String.init)
        let v = try await service.vault(context, permission: "audit", action: "audit.export", subjectID: subject)
        let since = try q["since"].map { try timeMillis(String($0), parameter: "since") }
        let until = try q["until"].map { try timeMillis(String($0), parameter: "until") }
        let after = try q["after_seq"].map { text -> Int64 in
            guard let n = Int64(String(text)), n >= 0 else { throw APIError.badRequest("query parameter after_seq: a sequence number, 0 or more") }
            return n
        }
        let formatName = q["format"].map(String.init) ?? "jsonl"
        guard let format = AuditExportFormat(rawValue: formatName) else { throw APIError.badRequest("query parameter format: jsonl or csv") }
        let flat: Bool
        switch q["flat"].map(String.init) {
        case nil, "false"?, "0"?: flat = false
        case "true"?, "1"?, ""?: flat = true
        default: throw APIError.badRequest("query parameter flat: true or false")
        }
        if let subject, subject.isEmpty { throw APIError.badRequest("query parameter subject: a customer ID") }
        let request = Vault.AuditExportRequest(format: format, sinceMillis: since, untilMillis: until, afterSequence: after, subjectID: subject, flat: flat)
        let r = try await redacting(subject.map { [$0] } ?? []) { try await blocking { try v.exportAudit(request) } }
        return Response(status: .ok,
                        headers: [.contentType: format == .csv ? "text/csv; charset=utf-8" : "application/x-ndjson",
                                  HTTPFields.Element.Name("x-audit-entries")!: String(r.entries), HTTPFields.Element.Name("x-audit-head")!: r.head,
                                  HTTPFields.Element.Name("x-audit-last-sequence")!: String(r.lastSequence)],
                        body: .init(byteBuffer: ByteBuffer(bytes: r.bytes)))
    }

    router.get("/v1/audit/report") { request, context -> Response in
        let v = try await service.vault(context, permission: "audit", action: "audit.report")
        let since = try request.uri.queryParameters["since"].map { try timeMillis(String($0), parameter: "since") }
        let until = try request.uri.queryParameters["until"].map { try timeMillis(String($0), parameter: "until") }
        return json(JSONForms.auditReport(try await blocking { try v.auditReport(sinceMillis: since, untilMillis: until) }))
    }

    router.get("/v1/audit/head") { _, context -> Response in
        let v = try await service.vault(context, permission: "audit", action: "audit.head")
        guard let head = try await blocking({ try v.signedAuditHead() }) else {
            throw VaultError(.notFound, "the audit log is empty: there is no signed head yet")
        }
        return json(head.published)
    }

    addRequestRoutes(router, service)
    addOperationsRoutes(router, service)
    // The privacy console (HTML, docs/console.md): not part of the JSON contract.
    addConsoleRoutes(router, service, tokens: tokens, authFailures: authFailures, serverPaths: serverPaths, logger: logger)
    return router
}

/// The request register (privacy_officer, permission `requests`), as `profilectl requests`.
/// The customer ID of a new request is redacted from any error (as path IDs are).
func addRequestRoutes(_ router: Router<VaultRequestContext>, _ service: VaultService) {
    router.post("/v1/requests") { request, context -> Response in
        let v = try await service.vault(context, permission: "requests", action: "requests.open")
        let body = try BodyFields(try await service.jsonBody(request), allowed: ["type", "customer_id", "received", "channel", "note"])
        let type = try body.string("type", required: true)!
        let id = try body.string("customer_id", required: true)!
        guard id.utf8.count <= 1024 else { throw APIError.badRequest("customer_id: at most 1024 bytes") }
        let received = try body.string("received", required: false)
        let channel = try body.string("channel", required: false)
        let note = try body.string("note", required: false)
        let e = try await redacting([id] + (note.map { [$0] } ?? [])) {
            try await blocking { try v.openRequest(type: type, customerID: id, received: received, channel: channel, note: note) }
        }
        return json(.object([("request", .string(e.id)), ("due", JSONForms.isoMillis(e.dueMillis)), ("type", .string(e.type.rawValue))]), status: .created)
    }

    router.get("/v1/requests") { request, context -> Response in
        let v = try await service.vault(context, permission: "requests", action: "requests.list")
        let filter = try request.uri.queryParameters["status"].map { try Vault.requestFilter(String($0)) }
        let (list, now) = try await blocking { try v.listRequests(filter) }
        return json(JSONForms.requests(list, nowMillis: now))
    }

    router.post("/v1/requests/{request_id}/fulfil") { request, context -> Response in
        let v = try await service.vault(context, permission: "requests", action: "requests.fulfil")
        let id = try requestID(context)
        var confirmed = false
        // The body is optional: read only when one is announced.
        if request.headers[.contentLength].map({ $0 != "0" }) ?? (request.headers[.transferEncoding] != nil) {
            let body = try BodyFields(try await service.jsonBody(request), allowed: ["done"])
            confirmed = try body.bool("done") ?? false
        }
        let done = confirmed
        let r = try await blocking { try v.fulfilRequest(id: id, confirmed: done) }
        return json(JSONForms.fulfilment(r, nowMillis: AuditLogClock.nowMillis, includeExport: true))
    }

    router.post("/v1/requests/{request_id}/extend") { request, context -> Response in
        let v = try await service.vault(context, permission: "requests", action: "requests.extend")
        let id = try requestID(context)
        let reason = try BodyFields(try await service.jsonBody(request), allowed: ["reason"]).string("reason", required: true)!
        let e = try await redacting([reason]) { try await blocking { try v.extendRequest(id: id, reason: reason) } }
        return json(JSONForms.request(e, nowMillis: AuditLogClock.nowMillis))
    }

    router.post("/v1/requests/{request_id}/deny") { request, context -> Response in
        let v = try await service.vault(context, permission: "requests", action: "requests.deny")
        let id = try requestID(context)
        let reason = try BodyFields(try await service.jsonBody(request), allowed: ["reason"]).string("reason", required: true)!
        let e = try await redacting([reason]) { try await blocking { try v.denyRequest(id: id, reason: reason) } }
        return json(JSONForms.request(e, nowMillis: AuditLogClock.nowMillis))
    }
}

/// What the CLI's `status`, `keys status|rotate` and `consent status|history` show, over the same
/// `Vault` methods with the same permission checks and audit entries.
func addOperationsRoutes(_ router: Router<VaultRequestContext>, _ service: VaultService) {
    // Any token whose role the policy defines (the CLI's `status` needs no role: counts and
    // metadata, no personal data); an undefined role is refused and audited as denied.
    router.get("/v1/status") { _, context -> Response in
        let v = try await service.anyRole(context, action: "status")
        return json(try await blocking { JSONForms.storeStatus(try v.status()) })
    }

    router.get("/v1/keys") { _, context -> Response in
        let v = try await service.vault(context, permission: "keys", action: "keys.status")
        return json(try await blocking { JSONForms.keyStatus(try v.keyStatus(), rewrapped: 0) })
    }

    // Adds a KEK version and re-wraps every data key under it; `{"resume": true}` adds no
    // version and finishes an interrupted rotation. The body is optional.
    router.post("/v1/keys/rotate") { request, context -> Response in
        let v = try await service.vault(context, permission: "keys", action: "keys.rotate")
        var resume = false
        if request.headers[.contentLength].map({ $0 != "0" }) ?? (request.headers[.transferEncoding] != nil) {
            resume = try BodyFields(try await service.jsonBody(request), allowed: ["resume"]).bool("resume") ?? false
        }
        let again = resume
        return json(try await blocking {
            let r = try service.rotations.withLock { try v.rotateKeys(resume: again) }
            return JSONForms.keyStatus(try v.keyStatus(), rewrapped: r.rewrapped)
        })
    }

    // `consent status` and `consent history` in one answer (each audited as the CLI audits it).
    router.get("/v1/subjects/{customer_id}/consent") { _, context -> Response in
        let v = try await service.vault(context, permission: "consent", action: "consent.status", subjectID: try? customerID(context))
        let id = try customerID(context)
        let (states, entries) = try await redacting([id]) {
            try await blocking { (try v.consentStatus(customerID: id), try v.consentHistory(customerID: id)) }
        }
        return json(.object([("customer_id", .string(id)), ("purposes", JSONForms.consentPurposes(states)),
                             ("entries", .array(entries.map(JSONForms.consentEntry)))]))
    }
}

/// The `{request_id}` path parameter; anything that is not a register id is 404 (not echoed).
func requestID(_ context: VaultRequestContext) throws -> String {
    let raw = try context.parameters.require("request_id")
    guard raw.utf8.count == 20, raw.hasPrefix("req_") else { throw VaultError(.notFound, "no request with this id in the register") }
    return raw
}

enum AuditLogClock {
    static var nowMillis: Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
}

/// The router plus a socket: an HTTP/1.1 server on `host:port`. `runService()` on it serves
/// until SIGTERM or SIGINT, then lets in-flight requests finish.
public func buildApplication(vault: Vault, tokens: TokenFile, host: String, port: Int, options: ServiceOptions = ServiceOptions(),
                             metrics: ServiceMetrics = ServiceMetrics(),
                             logger: Logger = Logger(label: "profilevault.http")) -> some ApplicationProtocol {
    buildApplication(vault: vault, tokens: ReloadingTokenFile(tokens, checkEvery: options.tokensCheckInterval, logger: logger),
                     host: host, port: port, options: options, metrics: metrics, logger: logger)
}

/// As the `TokenFile` form, over a ``ReloadingTokenFile`` the caller keeps (`serve` rereads it
/// on SIGHUP).
public func buildApplication(vault: Vault, tokens: ReloadingTokenFile, host: String, port: Int, options: ServiceOptions = ServiceOptions(),
                             metrics: ServiceMetrics = ServiceMetrics(),
                             logger: Logger = Logger(label: "profilevault.http")) -> some ApplicationProtocol {
    let router = buildRouter(vault: vault, tokens: tokens, options: options, metrics: metrics, logger: logger)
    return Application(
        router: router,
        server: .http1(configuration: .init(idleTimeout: .seconds(options.idleTimeoutSeconds))),
        configuration: .init(address: .hostname(host, port: port), serverName: nil),
        logger: logger
    )
}

// MARK: - The service's helpers

/// The opened vault, the limits and the metrics shared by every route.
final class VaultService: Sendable {
    let base: Vault
    let options: ServiceOptions
    let metrics: ServiceMetrics
    /// One key rotation at a time per process: each rewrites the keyring file.
    let rotations = NSLock()

    /// Sweeps the stale scratch directories a dead process left (``ScratchSpace/sweep(roots:logger:)``).
    init(vault: Vault, options: ServiceOptions, metrics: ServiceMetrics, logger: Logger? = nil) {
        self.base = vault
        self.options = options
        self.metrics = metrics
        ScratchSpace.sweep(roots: ScratchSpace.sweepRoots(configured: options.scratchDirectory), logger: logger)
    }

    /// The request's vault: 401 without a valid token (503 while the tokens file is unusable);
    /// 403 (audited as denied) when the token's role lacks `permission`. The vault checks the
    /// permission again in each operation. Its audit entries carry the request's id.
    /// `subjectID`: the customer the request names, whose pseudonym a refusal records.
    func vault(_ context: VaultRequestContext, permission: String, action: String, subjectID: String? = nil) async throws -> Vault {
        guard let id = context.identity else {
            if context.tokensUnavailable { throw APIError(.serviceUnavailable, "tokens cannot be checked right now; try again later") }
            throw APIError(.unauthorized, context.authProblem)
        }
        let v = base.acting(as: ProfileVault.Actor(name: id.actor, role: id.role), requestID: context.requestID)
        if !v.permits(permission) {
            try await blocking { try v.authorize(permission, action: action, subjectID: subjectID) }
            throw VaultError(.denied, "role \(id.role) may not \(permission)")   // authorize always throws here
        }
        return v
    }

    /// As ``vault(_:permission:action:subjectID:)`` for a route open to every role the policy
    /// defines: 401 without a valid token; 403 (audited as denied) for a role it does not define.
    func anyRole(_ context: VaultRequestContext, action: String) async throws -> Vault {
        guard let id = context.identity else {
            if context.tokensUnavailable { throw APIError(.serviceUnavailable, "tokens cannot be checked right now; try again later") }
            throw APIError(.unauthorized, context.authProblem)
        }
        let v = base.acting(as: ProfileVault.Actor(name: id.actor, role: id.role), requestID: context.requestID)
        if v.policy.roles[id.role] == nil {
            try await blocking { try v.authorize("status", action: action) }   // throws: the role is not defined
            throw VaultError(.denied, "role \(id.role) is not defined in the policy")
        }
        return v
    }

    func health() async throws -> Response {
        do {
            try await blocking { try self.base.healthProbe() }
        } catch {
            throw APIError(.serviceUnavailable, "store unreachable")
        }
        // A log whose head no valid checkpoint covers fails every audited operation: say so.
        if let problem = try? await blocking({ self.base.auditHeadProblem() }) {
            _ = problem   // the reason stays in the server (audit verify names the entry)
            var response = json(.object([("status", .string("degraded")), ("audit", .string("integrity failure"))]))
            response.status = .serviceUnavailable
            return response
        }
        // A sealed keyring: whether its HSM token is there. Without it the service goes on from
        // the keys in memory (200, degraded); rotation and keyring adoption answer 503.
        if let available = try? await blocking({ self.base.keyCustodyAvailable() }) {
            return json(.object([("status", .string(available ? "ok" : "degraded")),
                                 ("key_custody", .string(available ? "available" : "unavailable"))]))
        }
        return json(.object([("status", .string("ok"))]))
    }

    func metricsText() async -> Response {
        _ = try? await blocking { try self.metrics.refreshBudget(vault: self.base) }
        _ = try? await blocking { try self.metrics.refreshStore(vault: self.base) }
        metrics.refreshProcess()
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }

    /// The body as one JSON document (400 when it is not; 413 above the limit).
    func jsonBody(_ request: Request, limit: Int? = nil) async throws -> JSONValue {
        var request = request
        let buffer = try await request.collectBody(upTo: limit ?? options.maxBodyBytes)
        let bytes = Array(buffer.readableBytesView)
        guard !bytes.isEmpty else { throw APIError.badRequest("request body: expected a JSON document") }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw APIError.badRequest("request body: not valid JSON (\(error.description))")
        }
    }

    /// An ingest body: a non-empty JSON array of objects, one per record, for the ingest parser
    /// (which validates every record before writing any: the request is all or nothing).
    func records(_ request: Request, what: String) async throws -> [JSONValue] {
        let body = try await jsonBody(request, limit: options.maxIngestBodyBytes)
        guard case .array(let items) = body, !items.isEmpty else {
            throw APIError.badRequest("request body: expected a non-empty JSON array of \(what) objects")
        }
        guard items.count <= options.maxRecords else {
            throw APIError.badRequest("request body: \(items.count) records; at most \(options.maxRecords) per request")
        }
        for (i, item) in items.enumerated() {
            guard case .object = item else { throw APIError.badRequest("record \(i + 1): expected a JSON object") }
        }
        return items
    }

}

/// Runs `body`; a `VaultError` it throws has each of `values` (request input that may be personal
/// data, e.g. a `where` value) replaced by `(value)` in its message. Values shorter than four
/// characters are left alone (they would garble the message and identify no one).
func redacting<T>(_ values: [String], _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let e as VaultError {
        throw e.removing(values: values + values.filter { $0.count > 40 }.map { String($0.prefix(40)) })
    }
}

/// Like ``redacting(_:_:)`` for an ingest: when the error names `record N`, that record's string
/// values are taken out of the message.
func redactingRecord<T>(_ items: [JSONValue], _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let e as VaultError {
        guard e.message.hasPrefix("record "),
              let n = Int(e.message.dropFirst(7).prefix { $0.isASCII && $0.isNumber }), items.indices.contains(n - 1),
              case .object(let pairs) = items[n - 1] else { throw e }
        let values = pairs.compactMap { pair -> String? in if case .string(let s) = pair.1 { s } else { nil } }
        return try await redacting(values) { throw e }
    }
}

/// The values of a `where` text's conditions (what follows each operator).
func whereValues(_ text: String?) -> [String] {
    guard let text else { return [] }
    return text.split(separator: ",").compactMap { cond in
        guard let i = cond.lastIndex(where: { "=<>".contains($0) }) else { return nil }
        let v = cond[cond.index(after: i)...].trimmingCharacters(in: .whitespaces)
        return v.isEmpty ? nil : v
    }
}

/// Runs blocking store work (SQLite, OpenSSL, the PostgreSQL engine) on ``BlockingPool/shared``,
/// off the concurrency pool's threads and libdispatch's.
///
/// When the calling task is cancelled (its request's time limit passed), this returns at once
/// with `CancellationError`; `body`, once started, still runs to its end on its queue (a store
/// operation is not interrupted half-way), and its result is dropped. A body not yet started
/// when the task is cancelled is not started.
func blocking<T: Sendable>(on pool: BlockingPool = .shared, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    let once = ResumeOnce<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            guard once.attach(continuation) else { return }   // already cancelled: resumed with CancellationError
            pool.submit {
                guard once.isPending else { return }
                once.resume(with: Result { try body() })
            }
        }
    } onCancel: {
        once.resume(with: .failure(CancellationError()))
    }
}

/// A continuation resumed exactly once, by whichever comes first: the work's result or the
/// task's cancellation.
/// `@unchecked Sendable`: every stored property is only touched under `lock`.
final class ResumeOnce<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?
    private var early: Result<T, any Error>?
    private var finished = false

    /// Attaches the continuation; false (and resumed at once) when a result came first.
    func attach(_ c: CheckedContinuation<T, any Error>) -> Bool {
        lock.lock()
        if let early {
            finished = true
            lock.unlock()
            c.resume(with: early)
            return false
        }
        continuation = c
        lock.unlock()
        return true
    }

    var isPending: Bool { lock.withLock { !finished } }

    func resume(with result: Result<T, any Error>) {
        lock.lock()
        guard !finished else { lock.unlock(); return }
        guard let c = continuation else {
            if early == nil { early = result }   // cancelled before the continuation existed
            lock.unlock()
            return
        }
        finished = true
        continuation = nil
        lock.unlock()
        c.resume(with: result)
    }
}

func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
             body: .init(byteBuffer: ByteBuffer(string: value.rendered(pretty: false) + "\n")))
}

/// The `{customer_id}` path parameter, percent-decoded.
func customerID(_ context: VaultRequestContext) throws -> String {
    let raw = try context.parameters.require("customer_id")
    guard let id = raw.removingPercentEncoding, !id.isEmpty, id.utf8.count <= 1024 else {
        throw APIError.badRequest("path parameter customer_id: not a valid percent-encoded ID")
    }
    return id
}

/// `since` / `until`: ISO 8601 date or time, or unix milliseconds.
func timeMillis(_ text: String, parameter: String) throws -> Int64 {
    if let ms = Int64(text) { return ms }
    let f = ISO8601DateFormatter()
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate]] {
        f.formatOptions = options
        if let d = f.date(from: text) { return Int64((d.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
    throw APIError.badRequest("query parameter \(parameter): not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z) or unix milliseconds")
}

/// The fields of a JSON object body, with the checks every body gets: an object, no unknown
/// keys, each value of the expected type. Errors name the field, never its value.
struct BodyFields {
    let pairs: [String: JSONValue]

    init(_ value: JSONValue, allowed: Set<String>) throws {
        guard case .object(let list) = value else { throw APIError.badRequest("request body: expected a JSON object") }
        var out: [String: JSONValue] = [:]
        for (k, v) in list {
            guard allowed.contains(k) else {
                throw APIError.badRequest("request body: unknown field \(String(k.prefix(64)).debugDescription) (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            out[k] = v
        }
        pairs = out
    }

    func string(_ key: String, required: Bool) throws -> String? {
        switch pairs[key] {
        case nil, .null?:
            if required { throw APIError.badRequest("\(key): required") }
            return nil
        case .string(let s)?:
            guard !s.isEmpty else { throw APIError.badRequest("\(key): must not be empty") }
            guard s.utf8.count <= 4096 else { throw APIError.badRequest("\(key): longer than 4096 bytes") }
            return s
        default:
            throw APIError.badRequest("\(key): expected a string")
        }
    }

    func bool(_ key: String) throws -> Bool? {
        switch pairs[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        default: throw APIError.badRequest("\(key): expected true or false")
        }
    }

    func number(_ key: String) throws -> Double? {
        switch pairs[key] {
        case nil, .null?: return nil
        case .int(let i)?: return Double(i)
        case .double(let d)?: return d
        default: throw APIError.badRequest("\(key): expected a number")
        }
    }
}

/// `POST /v1/queries`: `{"kind","purpose","epsilon","attribute","events","where","group_by","max_contributions",
/// "accuracy","confidence","bounds","dry_run","fresh","report_clamped","clamped_epsilon"}` (`epsilon` or `accuracy`, one of them).
/// `where` is the CLI's `--where` text (`country=DE,age>=30`) or an array of its conditions.
func queryRequest(_ body: JSONValue) throws -> Vault.QueryRequest {
    let f = try BodyFields(body, allowed: ["kind", "purpose", "epsilon", "attribute", "events", "where", "group_by", "max_contributions",
                                           "accuracy", "confidence", "bounds", "dry_run", "rho", "fresh", "report_clamped", "clamped_epsilon"])
    let kindText = try f.string("kind", required: true)!
    guard let kind = QueryKind(rawValue: kindText) else {
        throw APIError.badRequest("kind: expected one of \(QueryKind.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    let purpose = try f.string("purpose", required: true)!
    let epsilon = try f.number("epsilon")
    let accuracy = try f.number("accuracy")
    let rho = try f.number("rho")   // zCDP purposes only (Vault+ZCDP.swift)
    switch [epsilon != nil, accuracy != nil, rho != nil].filter({ $0 }).count {
    case 0: throw APIError.badRequest("epsilon: required (a positive number), or accuracy (or rho under a zCDP purpose)")
    case 1: break
    default: throw APIError.badRequest("epsilon, accuracy, rho: give one of them")
    }
    if let rho { guard rho.isFinite, rho > 0 else { throw APIError.badRequest("rho: must be a positive number") } }
    if let epsilon { guard epsilon.isFinite, epsilon > 0 else { throw APIError.badRequest("epsilon: must be a positive number") } }
    if let accuracy { guard accuracy.isFinite, accuracy > 0 else { throw APIError.badRequest("accuracy: must be a positive number") } }
    let confidence = try f.number("confidence")
    if let confidence { guard confidence >= 0.5, confidence <= 0.999999 else { throw APIError.badRequest("confidence: a number from 0.5 to 0.999999") } }
    var bounds: (lower: Double, upper: Double)?
    switch f.pairs["bounds"] {
    case nil, .null?: bounds = nil
    case .array(let items)? where items.count == 2:
        func value(_ v: JSONValue) -> Double? {
            switch v { case .int(let i): return Double(i); case .double(let d): return d; default: return nil }
        }
        guard let lo = value(items[0]), let hi = value(items[1]), lo.isFinite, hi.isFinite, lo <= hi else {
            throw APIError.badRequest("bounds: expected [LO, HI], two finite numbers with LO <= HI")
        }
        bounds = (lo, hi)
    default: throw APIError.badRequest("bounds: expected [LO, HI], two finite numbers with LO <= HI")
    }
    let attribute = try f.string("attribute", required: false)
    let events = try f.string("events", required: false)
    if attribute != nil && events != nil { throw APIError.badRequest("attribute, events: give one, not both") }
    var whereClause: String?
    switch f.pairs["where"] {
    case nil, .null?: whereClause = nil
    case .array(let items)?:
        var conds: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item, !s.isEmpty, !s.contains(",") else {
                throw APIError.badRequest("where[\(i)]: expected a condition such as age>=30")
            }
            conds.append(s)
        }
        whereClause = conds.isEmpty ? nil : conds.joined(separator: ",")
    default:
        whereClause = try f.string("where", required: false)
    }
    var maxContributions = Vault.defaultMaxContributions
    if let m = try f.number("max_contributions") {
        guard m == m.rounded(), m >= 1, m <= 10_000 else { throw APIError.badRequest("max_contributions: an integer between 1 and 10000") }
        maxContributions = Int(m)
    }
    var q = Vault.QueryRequest(kind: kind, purpose: purpose, epsilon: epsilon, attribute: attribute, events: events,
                               whereClause: whereClause, groupBy: try f.string("group_by", required: false),
                               maxContributions: maxContributions)
    q.accuracy = accuracy
    q.confidence = confidence
    q.bounds = bounds
    q.dryRun = try f.bool("dry_run") ?? false
    q.rho = rho
    q.fresh = try f.bool("fresh") ?? false
    let clampedEpsilon = try f.number("clamped_epsilon")
    if let c = clampedEpsilon { guard c.isFinite, c > 0 else { throw APIError.badRequest("clamped_epsilon: must be a positive number") } }
    if try f.bool("report_clamped") ?? false {
        q.reportClamped = clampedEpsilon ?? Vault.defaultClampedEpsilon
    } else if clampedEpsilon != nil {
        throw APIError.badRequest("clamped_epsilon: needs \"report_clamped\": true")
    }
    return q
}

/// `POST /v1/queries` with `"kind": "quantile"`: `{"kind","purpose","epsilon" (or "rho" under a zCDP purpose),"attribute","q","where",
/// "group_by","bounds","dry_run"}`; `q` a number or an array of numbers from 0 to 1.
func quantileRequest(_ body: JSONValue) throws -> Vault.QuantileRequest {
    let f = try BodyFields(body, allowed: ["kind", "purpose", "epsilon", "rho", "attribute", "q", "where", "group_by", "bounds", "dry_run", "fresh"])
    let purpose = try f.string("purpose", required: true)!
    let (epsilon, rho) = try quantileCost(f)
    guard let attribute = try f.string("attribute", required: true) else { throw APIError.badRequest("attribute: required") }
    func number(_ v: JSONValue) -> Double? {
        switch v { case .int(let i): return Double(i); case .double(let d): return d; default: return nil }
    }
    var qs: [Double] = []
    switch f.pairs["q"] {
    case .array(let items)?:
        for (i, item) in items.enumerated() {
            guard let x = number(item), x.isFinite, x >= 0, x <= 1 else { throw APIError.badRequest("q[\(i)]: a number from 0 to 1") }
            qs.append(x)
        }
    case let v?:
        guard let x = number(v), x.isFinite, x >= 0, x <= 1 else { throw APIError.badRequest("q: a number from 0 to 1, or an array of them") }
        qs = [x]
    case nil: throw APIError.badRequest("q: required (a number from 0 to 1, or an array of them)")
    }
    guard !qs.isEmpty, qs.count <= Vault.maxQuantiles else { throw APIError.badRequest("q: 1 to \(Vault.maxQuantiles) quantiles") }
    // where and bounds as for the other kinds (one parser).
    var probe: [(String, JSONValue)] = [("kind", .string("sum")), ("purpose", .string(purpose)), ("epsilon", .double(1))]
    for k in ["where", "bounds"] { if let v = f.pairs[k] { probe.append((k, v)) } }
    let parsed = try queryRequest(.object(probe))
    var r = Vault.QuantileRequest(purpose: purpose, epsilon: epsilon, attribute: attribute, quantiles: qs, whereClause: parsed.whereClause,
                                  groupBy: try f.string("group_by", required: false), bounds: parsed.bounds)
    r.rho = rho
    r.dryRun = try f.bool("dry_run") ?? false
    r.fresh = try f.bool("fresh") ?? false
    return r
}

/// The cost of a quantile or bounds request: `epsilon` (a positive number) or, under a zCDP
/// purpose, `rho` (checked by the Vault: one of the two, in range), at least one given.
func quantileCost(_ f: BodyFields) throws -> (epsilon: Double?, rho: Double?) {
    let epsilon = try f.number("epsilon"), rho = try f.number("rho")
    if let e = epsilon, !(e.isFinite && e > 0) { throw APIError.badRequest("epsilon: a positive number") }
    guard epsilon != nil || rho != nil else { throw APIError.badRequest("epsilon: required (a positive number), or rho under a zCDP purpose") }
    return (epsilon, rho)
}

/// `POST /v1/queries` with `"kind": "bounds"`: `{"kind","purpose","epsilon" (or "rho"),"attribute","where","low","high",
/// "dry_run","fresh"}`; `low` and `high` the quantiles (default 0.05 and 0.95).
func boundsRequest(_ body: JSONValue) throws -> Vault.BoundsRequest {
    let f = try BodyFields(body, allowed: ["kind", "purpose", "epsilon", "rho", "attribute", "where", "low", "high", "dry_run", "fresh"])
    let purpose = try f.string("purpose", required: true)!
    let (epsilon, rho) = try quantileCost(f)
    guard let attribute = try f.string("attribute", required: true) else { throw APIError.badRequest("attribute: required") }
    let low = try f.number("low") ?? 0.05, high = try f.number("high") ?? 0.95
    guard low.isFinite, high.isFinite, low >= 0, high <= 1, low < high else {
        throw APIError.badRequest("low, high: two quantiles with 0 <= low < high <= 1")
    }
    var probe: [(String, JSONValue)] = [("kind", .string("sum")), ("purpose", .string(purpose)), ("epsilon", .double(1))]
    if let w = f.pairs["where"] { probe.append(("where", w)) }
    let parsed = try queryRequest(.object(probe))
    var r = Vault.BoundsRequest(purpose: purpose, epsilon: epsilon, attribute: attribute, whereClause: parsed.whereClause)
    r.rho = rho
    r.low = low
    r.high = high
    r.dryRun = try f.bool("dry_run") ?? false
    r.fresh = try f.bool("fresh") ?? false
    return r
}

/// `POST /v1/jobs`: the JSON form of a job file. Keys that name files on the server
/// (`items_from`, `params.from_model`) are refused: a client may not make the server read its
/// files.
///
func jobDocument(_ body: JSONValue) throws -> JSONValue {
    guard case .object(let pairs) = body else { throw APIError.badRequest("request body: expected a JSON object (a training job)") }
    for (k, v) in pairs {
        if k == "items_from" { throw APIError.badRequest("items_from: not accepted over HTTP (it names a file on the server)") }
        if k == "params", case .object(let ps) = v, ps.contains(where: { $0.0 == "from_model" }) {
            throw APIError.badRequest("params.from_model: not accepted over HTTP (it names a file on the server)")
        }
    }
    return body
}

/// A job body parsed as `train` parses a job file, after checking the JSON types of its
/// top-level keys: the job parser reads the body as YAML, where a JSON `null`, `true` or `12`
/// is a scalar like any text (`"job": null` would name a job `null`, `"epsilon": "0.5"` would
/// be a number). Names are strings, `epsilon` and `delta` numbers, `features` an array of
/// strings, `params` and `derived` objects; otherwise 400 naming the field, never the value
/// (audited by `train` as a job that does not parse).
func parseJobBody(_ body: JSONValue) throws -> TrainingJob {
    guard case .object(let pairs) = body else { return try Vault.parseJob(json: body) }
    func wrong(_ key: String, _ what: String) -> VaultError {
        VaultError(.invalidInput, "request body: \(key): expected \(what)", reason: "expected \(what)",
                   at: VaultError.Location(file: nil, line: nil, field: key))
    }
    for (k, v) in pairs {
        switch (k, v) {
        case ("job", .string), ("purpose", .string), ("model", .string), ("target", .string), ("events", .string), ("events_since", .string),
             ("epsilon", .int), ("epsilon", .double), ("delta", .int), ("delta", .double), ("params", .object), ("derived", .object):
            continue
        case ("job", _), ("purpose", _), ("model", _), ("target", _), ("events", _), ("events_since", _):
            throw wrong(k, "a string")
        case ("epsilon", _), ("delta", _):
            throw wrong(k, "a number")
        case ("params", _), ("derived", _):
            throw wrong(k, "an object")
        case ("features", .array(let items)):
            guard items.allSatisfy({ if case .string = $0 { true } else { false } }) else { throw wrong(k, "an array of strings") }
        case ("features", _):
            throw wrong(k, "an array of strings")
        default:
            continue   // unknown keys: the job parser names them
        }
    }
    return try Vault.parseJob(json: body)
}

/// `POST /v1/recommendations`: `{"model": <the artifact JSON train wrote>, "subject": ID}` or
/// `{"model", "subjects": [ID, ...]}`, optional `"top"`. The model travels in the body (the
/// server reads no file a client names); its MAC must verify under the store's keyring.
func recommendationRequest(_ body: JSONValue) throws -> (model: JSONValue, selection: Vault.SubjectSelection, top: Int?) {
    let f = try BodyFields(body, allowed: ["model", "subject", "subjects", "top"])
    guard let model = f.pairs["model"], model != .null else { throw APIError.badRequest("model: required (the model artifact JSON that train wrote)") }
    guard case .object = model else { throw APIError.badRequest("model: expected a JSON object (a model artifact)") }
    let subject = try f.string("subject", required: false)
    var selection: Vault.SubjectSelection
    switch f.pairs["subjects"] {
    case nil, .null?:
        guard let subject else { throw APIError.badRequest("subject, subjects: give one (a customer ID, or an array of them)") }
        selection = .one(subject)
    case .array(let items)?:
        guard subject == nil else { throw APIError.badRequest("subject, subjects: give one, not both") }
        guard !items.isEmpty, items.count <= 1000 else { throw APIError.badRequest("subjects: expected 1 to 1000 customer IDs") }
        var ids: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item, !s.isEmpty, s.utf8.count <= 1024 else {
                throw APIError.badRequest("subjects[\(i)]: expected a non-empty customer ID (a string of at most 1024 bytes)")
            }
            ids.append(s)
        }
        selection = .list(ids)
    default:
        throw APIError.badRequest("subjects: expected an array of customer IDs")
    }
    var top: Int?
    if let t = try f.number("top") {
        guard t == t.rounded(), t >= 1, t <= Double(Vault.maxRecommendations) else {
            throw APIError.badRequest("top: an integer between 1 and \(Vault.maxRecommendations)")
        }
        top = Int(t)
    }
    return (model, selection, top)
}

/// `POST /v1/scores`: `{"model": <the artifact JSON train wrote>}` with one of `"subject": ID`,
/// `"subjects": [ID, ...]` (1 to 1000) or `"all": true` (needs `"top"`), optional `"top"`
/// (1 to 10000) and `"min_score"` (finite). The options are checked before anything is read.
func scoreRequest(_ body: JSONValue) throws -> (model: JSONValue, selection: Vault.ScoreSelection, top: Int?, minScore: Double?) {
    let f = try BodyFields(body, allowed: ["model", "subject", "subjects", "all", "top", "min_score"])
    let all = try f.bool("all") ?? false
    var top: Int?
    if let t = try f.number("top") {
        guard t == t.rounded(), t >= 1, t <= Double(Vault.maxScoreTop) else {
            throw APIError.badRequest("top: an integer between 1 and \(Vault.maxScoreTop)")
        }
        top = Int(t)
    }
    let minScore = try f.number("min_score")
    do {
        try Vault.checkScoreOptions(top: top, minScore: minScore, all: all, names: ("top", "min_score", "all"))
    } catch let e as VaultError {
        throw APIError.badRequest(e.message)
    }
    if all {
        guard f.pairs["subject"] == nil || f.pairs["subject"] == .null, f.pairs["subjects"] == nil || f.pairs["subjects"] == .null else {
            throw APIError.badRequest("all, subject, subjects: give one")
        }
        guard let model = f.pairs["model"], model != .null else { throw APIError.badRequest("model: required (the model artifact JSON that train wrote)") }
        guard case .object = model else { throw APIError.badRequest("model: expected a JSON object (a model artifact)") }
        return (model, .all, top, minScore)
    }
    // The selection as `POST /v1/recommendations` reads it (its top is not used: checked above).
    let (model, selection, _) = try recommendationRequest(.object(["model", "subject", "subjects"].compactMap { k in f.pairs[k].map { (k, $0) } }))
    return (model, .subjects(selection), top, minScore)
}
