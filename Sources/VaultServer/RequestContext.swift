public import Hummingbird
import Foundation
public import ProfileVault
import VaultValues

/// The request context of the service: Hummingbird's core storage plus the caller's identity
/// (resolved from the bearer token by ``ServiceMiddleware``) and a request id.
public struct VaultRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The token's identity; nil when the request carried no token or an unknown one.
    public var identity: TokenIdentity?
    /// Why `identity` is nil (for the 401 answer of a route that needs a token).
    public var authProblem: String = "missing bearer token (Authorization: Bearer TOKEN)"
    /// This request's id (the client's sane `x-request-id`, or a new one), also sent back as the
    /// `x-request-id` header and recorded in the request's audit entries.
    public var requestID: String = ""
    /// True when the request carried a bearer token but the tokens file is unusable right now
    /// (``ReloadingTokenFile`` fails closed): routes that need a token answer 503.
    public var tokensUnavailable = false

    /// The peer's IP address (nil when there is none, as in router tests): what failed
    /// authentications are counted under (``AuthFailureLimiter/clientKey(_:)``).
    public var clientAddress: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.identity = nil
        self.clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// Bodies are read with explicit per-route limits (``ServiceOptions``); this is the ceiling.
    public var maxUploadSize: Int { 64 << 20 }
}
