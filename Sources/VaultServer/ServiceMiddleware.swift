public import Hummingbird
public import Logging
import Foundation
public import ProfileVault
import VaultValues

/// The main middleware of the service, on every route (and on "no such route"), inside only
/// ``HeadMiddleware`` (and around ``MethodMiddleware``):
///
/// 1. gives the request an id: the client's `x-request-id` when it is sane (1 to 64 characters
///    of `A-Z a-z 0-9 . _ -`), else a new UUID; sent back as `x-request-id`, logged, and
///    recorded in every audit entry the request writes;
/// 2. resolves the bearer token, if any, to an identity (routes decide whether they need one)
///    against the tokens file as it is now (``ReloadingTokenFile``, looked at before every
///    request) and the clock (a revoked or expired token is refused), unless the client address
///    is locked out for too many failed authentications (``AuthFailureLimiter``): then the token
///    is not looked at, and a route that needs one answers 429 with `Retry-After`. Each 401 a
///    route answers is a failed authentication: counted for the client address and, within the
///    limit, audited through the vault (`auth.failed`: the reason and the address, never
///    token material); past the limit it is answered 429 instead and not audited;
/// 3. gives the rest of the request a time limit (``ServiceOptions/requestTimeout``): past it,
///    the answer is 503 `request timed out` (the work may still finish; see docs/http.md);
/// 4. turns every error into a JSON `{"error"}` answer (``APIError/from(_:)``), with the
///    server's own file paths (policy, schema, store, keyring) replaced by what they are;
/// 5. records the request in the metrics and writes one log line: method, route template,
///    status, duration, request id, actor. Never the path, query, body or a customer ID. With
///    `serve --log-format json` the line is one JSON object (``ServiceLog``): `request_id`,
///    `method`, `route`, `status` and `duration_ms` (numbers), `actor`, `role`.
public struct ServiceMiddleware: RouterMiddleware {
    public typealias Context = VaultRequestContext
    let tokens: ReloadingTokenFile
    let metrics: ServiceMetrics
    let logger: Logger
    let requestTimeout: Duration?
    /// (server path, what to say instead) pairs, longest path first.
    let serverPaths: [(path: String, replacement: String)]
    /// Counts and audits failed authentications; nil: neither (tests of other parts).
    let authFailures: AuthFailureGate?

    /// A middleware over a tokens file that is reread when it changes (looked at before every
    /// request), with no time limit, no server paths to hide and no failed-authentication limit.
    public init(tokens: TokenFile, metrics: ServiceMetrics, logger: Logger) {
        self.init(tokens: ReloadingTokenFile(tokens, logger: logger), metrics: metrics, logger: logger)
    }

    /// - Parameters:
    ///   - requestTimeout: the time limit of a request (nil: none).
    ///   - serverPaths: paths on the server that client messages must not show, each with what
    ///     to say instead (e.g. the policy file's path and `the policy`). Paths without a `/`
    ///     are ignored (too likely to be ordinary words).
    ///   - authFailures: where failed authentications are counted and audited (nil: nowhere).
    public init(tokens: ReloadingTokenFile, metrics: ServiceMetrics, logger: Logger, requestTimeout: Duration? = nil,
                serverPaths: [(path: String, replacement: String)] = [], authFailures: AuthFailureGate? = nil) {
        self.authFailures = authFailures
        self.tokens = tokens
        self.metrics = metrics
        self.logger = logger
        self.requestTimeout = requestTimeout
        self.serverPaths = serverPaths.filter { $0.path.contains("/") && $0.path.count >= 4 }
            .sorted { $0.path.count > $1.path.count }
    }

    static let requestIDHeader = HTTPFields.Element.Name("x-request-id")!
    static let timedOutMessage = "request timed out"

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let start = clock.now
        var context = context
        let requestID = Self.requestID(fromHeader: request.headers[Self.requestIDHeader])
        context.requestID = requestID
        // A locked-out address's token is not looked at (a route that needs one answers 429).
        let client = AuthFailureLimiter.clientKey(context.clientAddress)
        let lockedOut = authFailures?.limiter.lockout(client)
        var authFailure = AuthenticationFailure.missing
        if lockedOut != nil {
            context.authProblem = Self.lockedOutMessage
        } else if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                if let file = tokens.current() {
                    // Revocation and expiry are checked now, against the file as it is now.
                    switch file.check(token: parts[1].trimmingCharacters(in: .whitespaces), nowMillis: AuditLogClock.nowMillis) {
                    case .valid(let id): context.identity = id
                    case .refused(let failure):
                        authFailure = failure
                        context.authProblem = failure.message
                    }
                } else {
                    context.tokensUnavailable = true
                }
            } else {
                authFailure = .malformed
                context.authProblem = AuthenticationFailure.malformed.message
            }
        }
        var response: Response
        var failure: APIError?
        do {
            if let requestTimeout {
                let routeContext = context
                response = try await withTimeLimit(requestTimeout) { try await next(request, routeContext) }
            } else {
                response = try await next(request, context)
            }
        } catch {
            var e = APIError.from(error)
            if e.status.code < 500 { e.message = withoutServerPaths(e.message) }
            var retryAfter: Int?
            if e.status == .unauthorized, let authFailures {
                retryAfter = await authenticationFailed(authFailure, client: client, lockedOut: lockedOut, requestID: requestID, gate: authFailures)
                if let retryAfter { e = APIError(.tooManyRequests, Self.lockedOutMessage + "; retry after \(retryAfter) s") }
            }
            failure = e
            response = e.response(requestID: requestID)
            if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
            if e.status == .serviceUnavailable, e.message == Self.timedOutMessage {
                logger.warning("request timed out; its work may still complete", metadata: ["request_id": .string(requestID)])
            } else if e.status.code >= 500 {
                // The error's kind only: messages of lower layers are not vetted for the log.
                var kind = String(describing: type(of: error))
                if let v = error as? VaultError { kind = "VaultError." + v.kind.rawValue }
                logger.error("request failed", metadata: ["request_id": .string(requestID), "error_type": .string(kind)])
            }
        }
        response.headers[Self.requestIDHeader] = requestID
        let elapsed = clock.now - start
        let route = Self.routeLabel(context.endpointPath)
        let method = Self.methodLabel(request.method.rawValue)
        metrics.record(route: route, method: method, status: Int(response.status.code), duration: elapsed)
        var metadata: Logger.Metadata = [
            "method": .string(method),
            "route": .string(route),
            "status": .stringConvertible(response.status.code),
            // A number (JSON logs keep it one), to 0.01 ms.
            "duration_ms": .stringConvertible(((Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000) * 100).rounded() / 100),
            "request_id": .string(requestID),
        ]
        if let id = context.identity {
            metadata["actor"] = .string(id.actor)
            metadata["role"] = .string(id.role)
        }
        if let failure, failure.status.code < 500 { metadata["error_status"] = .stringConvertible(failure.status.code) }
        logger.info("request", metadata: metadata)
        return response
    }

    static let lockedOutMessage = "too many failed authentications from this address"

    /// A route answered 401: counts the failure for `client` and audits it (within the limit);
    /// returns the `Retry-After` seconds when the answer is 429 instead (the address was locked
    /// out before the request, or this failure is over the limit: neither is audited).
    func authenticationFailed(_ failure: AuthenticationFailure, client: String, lockedOut: Int?, requestID: String,
                              gate: AuthFailureGate) async -> Int? {
        if let lockedOut { return lockedOut }
        switch gate.limiter.recordFailure(client) {
        case .limited(let seconds):
            return seconds
        case .counted:
            do {
                try await blocking { try gate.vault.recordAuthenticationFailure(failure, client: client, requestID: requestID) }
            } catch {
                logger.error("could not audit a failed authentication", metadata: ["request_id": .string(requestID)])
            }
            return nil
        }
    }

    /// The client's request id when it is sane (1 to 64 characters, each `A-Z a-z 0-9 . _ -`),
    /// else a new random one (a lowercase UUID). Anything else in the header is ignored: it
    /// goes into logs and the audit log, so it may not carry spaces, quotes or control bytes.
    static func requestID(fromHeader value: String?) -> String {
        if let value, isSaneRequestID(value) { return value }
        return UUID().uuidString.lowercased()
    }

    static func isSaneRequestID(_ value: String) -> Bool {
        let bytes = value.utf8
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }

    /// `message` with each of the server's paths replaced by what it is.
    func withoutServerPaths(_ message: String) -> String {
        var m = message
        for (path, replacement) in serverPaths where m.contains(path) {
            m = m.replacingOccurrences(of: path, with: replacement)
        }
        return m
    }

    /// The request's method when it is a standard one, else `other`: a client's made-up method
    /// (any token) never becomes a metrics label or log value.
    static func methodLabel(_ method: String) -> String {
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"].contains(method) ? method : "other"
    }

    /// The route template, or `unmatched`: never the request's own path, which may carry a
    /// customer ID.
    static func routeLabel(_ endpoint: String?) -> String {
        guard let endpoint, endpoint != "NotFound" else { return "unmatched" }
        return endpoint
    }
}

/// Runs `operation` under a time limit: its answer when it finishes within `limit`, else
/// `APIError(503, "request timed out")` as soon as the limit passes.
///
/// The operation runs in a child task that is cancelled at the limit. Work it handed to
/// ``blocking(on:_:)`` (store and crypto work on the service's own threads) is not interrupted: that child
/// returns at once, and the work finishes in the background, its result discarded. So a
/// timed-out request may still have taken effect (docs/http.md, "Time limit").
func withTimeLimit<T: Sendable>(_ limit: Duration, _ operation: () async throws -> T) async throws -> T {
    try await withoutActuallyEscaping(operation) { escapable in
        let box = UncheckedSendableOperation(escapable)
        return try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await box.operation() }
            group.addTask {
                try await Task.sleep(for: limit)
                throw APIError(.serviceUnavailable, ServiceMiddleware.timedOutMessage)
            }
            // Whichever finishes first decides; the other is cancelled, and the group waits for it
            // (briefly: both children return promptly when cancelled) before the closure escapes.
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

/// Carries the route's closure into the time limit's child task.
/// `@unchecked Sendable`: the closure is called once, by that one child task, while the task
/// that owns it waits for the group; it does not outlive `withTimeLimit` (checked at run time
/// by `withoutActuallyEscaping`).
struct UncheckedSendableOperation<T>: @unchecked Sendable {
    let operation: () async throws -> T
    init(_ operation: @escaping () async throws -> T) { self.operation = operation }
}
