public import Hummingbird
import Foundation

/// 405 over the route table (``VaultRoutes/all``), once for every route: a request whose path
/// matches a route template but whose method none of them routes is answered 405 with an
/// `Allow` header (the routed methods, plus HEAD where GET is) and the JSON error body; the
/// method sent is not echoed (it may be any token). A path no template matches goes on to the
/// router, which answers 404.
///
/// Added inside ``ServiceMiddleware``, so the answer carries the request id and is logged and
/// counted like any other. HEAD is routed wherever GET is (the router's
/// `autoGenerateHeadEndpoints`: the GET route answers, its answer sent without the body).
public struct MethodMiddleware: RouterMiddleware {
    public typealias Context = VaultRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var allowed = VaultRoutes.methods(forPath: request.uri.path)
        if allowed.contains("GET") { allowed.insert("HEAD") }
        guard !allowed.isEmpty, !allowed.contains(request.method.rawValue) else { return try await next(request, context) }
        let allow = Self.allowHeader(allowed)
        var response = APIError(.methodNotAllowed, "method not allowed on this route (allowed: \(allow))").response(requestID: context.requestID)
        response.headers[.allow] = allow
        return response
    }

    /// The `Allow` value: the routed methods, HEAD beside GET, in a fixed order.
    static func allowHeader(_ methods: Set<String>) -> String {
        var all = methods
        if all.contains("GET") { all.insert("HEAD") }
        let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        return order.filter(all.contains).joined(separator: ", ")
    }
}

/// Every HEAD answer without its body, outermost: the router answers HEAD wherever GET is by the
/// GET route (`RouterOptions.autoGenerateHeadEndpoints`: the same token and role checks, audit
/// entries, status and headers); this also takes the body off the answers that do not come from
/// a route (a 404 for an unknown path, a 405), keeping their status and headers,
/// `Content-Length` included.
public struct HeadMiddleware: RouterMiddleware {
    public typealias Context = VaultRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method == .head else { return try await next(request, context) }
        return try await next(request, context).createHeadResponse()
    }
}
