public import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
public import ProfileVault
import Foundation
import VaultValues

/// The TLS settings of `serve --tls-cert PEM --tls-key PEM`: the certificate chain and its
/// private key, checked at start-up (exit 78 naming the file, never a byte of the key).
public struct ServiceTLS: Sendable {
    let configuration: TLSConfiguration
    /// The leaf certificate's end of validity (seconds since the epoch).
    public let notValidAfter: Int

    /// Reads and checks the files:
    /// - the key file must be the service user's own and grant nothing to group or others (the
    ///   keyring's rule), and hold one PEM private key;
    /// - the certificate file must hold a PEM chain, leaf first, whose leaf is the key's
    ///   (a mismatch is refused here, not at the first handshake).
    public init(certificatePath: String, keyPath: String) throws {
        let certBytes = try ConfigurationFile.contents(of: certificatePath, what: "--tls-cert", secret: false)
        let keyBytes = try ConfigurationFile.contents(of: keyPath, what: "--tls-key", secret: true)
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMBytes(certBytes) } catch {
            throw VaultError(.configuration, "--tls-cert \(certificatePath): not a PEM certificate chain")
        }
        guard let leaf = chain.first else {
            throw VaultError(.configuration, "--tls-cert \(certificatePath): no certificate in the file (expected PEM, leaf first)")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem) } catch {
            throw VaultError(.configuration, "--tls-key \(keyPath): not a PEM private key (or an encrypted one: the service cannot ask for a passphrase)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        // HTTP/2 first, then HTTP/1.1, by ALPN (the HTTP/2 upgrade channel sets the same list).
        tls.applicationProtocols = ["h2", "http/1.1"]
        do { _ = try NIOSSLContext(configuration: tls) } catch {
            throw VaultError(.configuration, "--tls-key \(keyPath): does not match the certificate in --tls-cert \(certificatePath) (or the key type is not supported)")
        }
        self.configuration = tls
        self.notValidAfter = Int(leaf.notValidAfter)
    }
}

/// Where `serve` listens, and whether that is this machine only.
public struct ListenAddress: Sendable, Equatable {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `HOST:PORT` or `[IPv6]:PORT`, port 0 to 65535 (0: any free port); nil when it is not.
    public static func parse(_ text: String) -> ListenAddress? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let portText = text[text.index(after: colon)...]
        guard !host.isEmpty, !portText.isEmpty, portText.utf8.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = Int(portText), (0...65535).contains(port) else { return nil }
        return ListenAddress(host: host, port: port)
    }

    /// True for an address only this machine reaches: `localhost`, 127.0.0.0/8 and `::1`
    /// (also written in full). Anything else, a name or a wildcard (`0.0.0.0`, `::`), may be
    /// reached from the network.
    public var isLoopback: Bool {
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
        }
        return false
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The service's socket: plain HTTP/1.1, or with `tls` HTTP/1.1 and HTTP/2 over TLS (ALPN
/// chooses). `onRunning` is called once the port is bound (with the address actually bound: a
/// port of 0 becomes the port the system chose); `serve` prints `serving on ...` from it.
public func buildServingApplication(vault: Vault, tokens: ReloadingTokenFile, listen: ListenAddress, tls: ServiceTLS?,
                                    options: ServiceOptions = ServiceOptions(), metrics: ServiceMetrics = ServiceMetrics(),
                                    logger: Logger = Logger(label: "profilevault.http"),
                                    onRunning: @escaping @Sendable (ListenAddress) -> Void) throws -> some ApplicationProtocol {
    let router = buildRouter(vault: vault, tokens: tokens, options: options, metrics: metrics, logger: logger)
    let server: HTTPServerBuilder
    if let tls {
        let idle = Duration.seconds(options.idleTimeoutSeconds)
        server = try .http2Upgrade(tlsConfiguration: tls.configuration,
                                   configuration: .init(idleTimeout: idle,
                                                        streamConfiguration: .init(idleTimeout: .seconds(options.idleTimeoutSeconds))))
    } else {
        server = .http1(configuration: .init(idleTimeout: .seconds(options.idleTimeoutSeconds)))
    }
    // Hummingbird's own "Server started" line would repeat `serving on` (and come in another
    // form): its logger shows notices and up only.
    var frameworkLogger = logger
    if frameworkLogger.logLevel < .notice { frameworkLogger.logLevel = .notice }
    return Application(
        router: router,
        server: server,
        configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: nil),
        onServerRunning: { channel in
            onRunning(ListenAddress(host: listen.host, port: channel.localAddress?.port ?? listen.port))
        },
        logger: frameworkLogger
    )
}

/// What a failure to start serving means, in one line (nil: not a socket error). A busy port,
/// an address this machine does not have, or a port that needs privileges.
public func listenFailure(_ error: any Error, listen: ListenAddress) -> String? {
    if error is SocketAddressError { return "cannot listen on \(listen.description): the host name does not resolve to an address" }
    guard let io = error as? IOError else { return nil }
    switch io.errnoCode {
    case EADDRINUSE: return "cannot listen on \(listen.description): the port is in use (another serve, or another program)"
    case EADDRNOTAVAIL: return "cannot listen on \(listen.description): this machine has no such address"
    case EACCES: return "cannot listen on \(listen.description): permission denied (ports below 1024 need privileges)"
    default: return "cannot listen on \(listen.description): \(String(cString: strerror(io.errnoCode)))"
    }
}
