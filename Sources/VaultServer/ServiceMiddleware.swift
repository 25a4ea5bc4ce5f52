public import Hummingbird
public import Logging
import Foundation
import VaultStore

/// The one middleware of the service, outermost on every route (and on "no such route"):
///
/// 1. gives the request an id (`x-request-id` on the answer);
/// 2. resolves the bearer token, if any, to an identity (routes decide whether they need one);
/// 3. turns every error into a JSON `{"error"}` answer (``APIError/from(_:)``);
/// 4. records the request in the metrics and writes one log line: method, route template,
///    status, duration, request id, actor. Never the path, query, body or a customer ID.
public struct ServiceMiddleware: RouterMiddleware {
    public typealias Context = VaultRequestContext
    let tokens: TokenFile
    let metrics: ServiceMetrics
    let logger: Logger

    public init(tokens: TokenFile, metrics: ServiceMetrics, logger: Logger) {
        self.tokens = tokens
        self.metrics = metrics
        self.logger = logger
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let start = clock.now
        var context = context
        let requestID = UUID().uuidString.lowercased()
        context.requestID = requestID
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                if let id = tokens.identity(forToken: parts[1].trimmingCharacters(in: .whitespaces)) {
                    context.identity = id
                } else {
                    context.authProblem = "unknown token"
                }
            } else {
                context.authProblem = "the Authorization header is not of the form: Bearer TOKEN"
            }
        }
        var response: Response
        var failure: APIError?
        do {
            response = try await next(request, context)
        } catch {
            let e = APIError.from(error)
            failure = e
            response = e.response(requestID: requestID)
            if e.status.code >= 500 {
                // The error's kind only: messages of lower layers are not vetted for the log.
                var kind = String(describing: type(of: error))
                if let v = error as? VaultError { kind = "VaultError." + v.kind.rawValue }
                logger.error("request failed", metadata: ["request_id": .string(requestID), "error_type": .string(kind)])
            }
        }
        response.headers[HTTPFields.Element.Name("x-request-id")!] = requestID
        let elapsed = clock.now - start
        let route = Self.routeLabel(context.endpointPath)
        metrics.record(route: route, method: request.method.rawValue, status: Int(response.status.code), duration: elapsed)
        var metadata: Logger.Metadata = [
            "method": .string(request.method.rawValue),
            "route": .string(route),
            "status": .stringConvertible(response.status.code),
            "duration_ms": .string(String(format: "%.2f", Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)),
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

    /// The route template, or `unmatched`: never the request's own path, which may carry a
    /// customer ID.
    static func routeLabel(_ endpoint: String?) -> String {
        guard let endpoint, endpoint != "NotFound" else { return "unmatched" }
        return endpoint
    }
}
