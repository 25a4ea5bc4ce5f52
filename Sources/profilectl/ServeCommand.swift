import ArgumentParser
import Foundation
import Logging
import ProfileVault
import VaultServer
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// `serve --listen HOST:PORT --tokens FILE`: the HTTP service (SPEC §8) over the store named by
/// the global options. Logs go to stderr (text, or one JSON object a line with `--log-format
/// json`); `serving on ...` is written once the port is bound. SIGTERM or SIGINT stops
/// accepting connections, lets in-flight requests finish and closes the store. The tokens file
/// is reread when it changes (checked before every request) and on SIGHUP.
///
/// `--tls-cert`/`--tls-key` serve HTTP/1.1 and HTTP/2 over TLS. Plain HTTP on an address other
/// than loopback is refused unless `--insecure-http`. `--config FILE` reads the same options
/// from a YAML file; flags win over it.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP service (JSON over HTTP or HTTPS, bearer tokens mapped to actor and role).",
        discussion: "Routes and bodies: docs/http.md and docs/openapi.yaml; installation: docs/deployment.md. Create tokens with `profilectl tokens add`; the service rereads the tokens file when it changes (and on SIGHUP).")

    @OptionGroup var options: GlobalOptions
    @Option(name: .customLong("config"), help: ArgumentHelp(
        "Read serve's options from this YAML file (keys as the flags: listen, tokens, tls-cert, ...); flags given here win.",
        valueName: "FILE")) var config: String?
    @Option(help: "Address to listen on, HOST:PORT (default 127.0.0.1:8080; [::1]:8080 for IPv6; port 0: any free port).") var listen: String?
    @Option(help: "The tokens file (from `profilectl tokens add`).") var tokens: String?
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp(
        "Serve HTTPS (HTTP/1.1 and HTTP/2) with this PEM certificate chain, leaf first (needs --tls-key).", valueName: "PEM")) var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: ArgumentHelp(
        "The PEM private key of --tls-cert (mode 0600, owned by the service user, unencrypted).", valueName: "PEM")) var tlsKey: String?
    @Flag(name: .customLong("insecure-http"), help: "Allow plain HTTP on an address other than loopback (tokens and data then cross the network unencrypted).")
    var insecureHTTP = false
    @Option(name: .customLong("publish-heads"), help: ArgumentHelp(
        "Append every new signed audit head, one JSON line each, to this file (keep it on another host; audit verify --expect-head FILE reads it).",
        valueName: "FILE")) var publishHeads: String?
    @Option(name: .customLong("audit-stream"), help: ArgumentHelp(
        "Append every audit entry this service commits, one JSON line each (nested OCSF, as audit export writes it), to this file, for a SIEM.",
        valueName: "FILE")) var auditStream: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
    @Option(name: .customLong("log-format"), help: "text (default) or json: one JSON object a line (time, level, msg, request_id, route, status, duration_ms, actor).")
    var logFormat: String?
    @Option(name: .customLong("max-body-bytes"), help: "Largest ingest body in bytes (413 above it; default 16777216).") var maxBodyBytes: Int?
    @Option(name: .customLong("request-timeout"), help: "Seconds a request may run before it is answered 503 (its work may still finish; default 30).") var requestTimeout: Double?
    @Option(name: .customLong("retention-every"), help: ArgumentHelp(
        "Apply policy.yaml's retention rules at start and then at this interval (e.g. 24h, 12h, 1d; at least 60s), audited as actor retention-scheduler.",
        valueName: "INTERVAL")) var retentionEvery: String?
    @Option(name: .customLong("auth-failure-limit"), help: ArgumentHelp(
        "Failed authentications one client address (an IPv6 one by its /64) may have within --auth-failure-window before routes that need a token answer it 429 (default 10; 1 to 100000).",
        valueName: "N")) var authFailureLimit = 10
    @Option(name: .customLong("auth-failure-window"), help: ArgumentHelp(
        "Seconds of that window, and of the 429 lockout that follows (default 60; 1 to 86400).",
        valueName: "SECONDS")) var authFailureWindow = 60

    /// The options in force: the flags, else the config file, else the defaults.
    struct Settings {
        var listen: ListenAddress
        var tokens: String
        var tls: (cert: String, key: String)?
        var insecureHTTP: Bool
        var logFormat: LogFormat
        var logLevel: Logger.Level?
        var publishHeads: String?
        var auditStream: String?
        var retentionEvery: Double?
        var maxBodyBytes: Int
        var requestTimeout: Double
        var options: GlobalOptions
    }

    func validate() throws {
        // What the flags alone say; the merged settings are checked again in `settings()`.
        if let listen { _ = try Self.parseListen(listen) }
        if let logLevel { _ = try Self.parseLevel(logLevel) }
        if let logFormat { _ = try Self.parseFormat(logFormat) }
        if let maxBodyBytes { try Self.checkBodyBytes(maxBodyBytes) }
        if let requestTimeout { try Self.checkTimeout(requestTimeout) }
        if let retentionEvery { _ = try Self.parseInterval(retentionEvery) }
        guard (1...100_000).contains(authFailureLimit) else { throw ValidationError("--auth-failure-limit must be between 1 and 100000") }
        guard (1...86_400).contains(authFailureWindow) else { throw ValidationError("--auth-failure-window must be between 1 and 86400 seconds") }
    }

    /// Merges the flags over the config file and checks the result. A value from the file
    /// that fails a check is a configuration error (78) naming the file and the key; a flag's
    /// is a usage error (64).
    func settings() throws -> Settings {
        let file = try config.map { try ServeConfigFile.load(path: $0) } ?? ServeConfigFile()
        func fromFile<T>(_ key: String, _ check: () throws -> T) throws -> T {
            do { return try check() } catch let e as ValidationError {
                let line = file.lines[key].map { ":\($0)" } ?? ""
                throw VaultError(.configuration, "--config \(config ?? "")\(line): key \(key): \(e.message)")
            }
        }
        var options = self.options
        if options.store == nil { options.store = file.store }
        if options.keys == nil { options.keys = file.keys }
        if options.hsm == nil { options.hsm = file.hsm }
        if options.policy == nil { options.policy = file.policy }
        if !options.allowExampleKeys { options.allowExampleKeys = file.allowExampleKeys ?? false }
        let listenAddress = try listen.map { try Self.parseListen($0) }
            ?? (try file.listen.map { text in try fromFile("listen") { try Self.parseListen(text) } })
            ?? ListenAddress(host: "127.0.0.1", port: 8080)
        guard let tokens = tokens ?? file.tokens else {
            throw VaultError(.usage, "no tokens file given: pass --tokens FILE (or tokens: in the --config file)")
        }
        let cert = tlsCert ?? file.tlsCert
        let key = tlsKey ?? file.tlsKey
        let tls: (cert: String, key: String)?
        switch (cert, key) {
        case let (c?, k?): tls = (c, k)
        case (nil, nil): tls = nil
        case (_?, nil): throw VaultError(.usage, "--tls-cert needs --tls-key (the certificate's private key)")
        case (nil, _?): throw VaultError(.usage, "--tls-key needs --tls-cert (the certificate chain)")
        }
        let insecure = insecureHTTP || (file.insecureHTTP ?? false)
        if insecure && tls != nil {
            throw VaultError(.usage, "--insecure-http and --tls-cert exclude each other: choose HTTPS or plain HTTP")
        }
        let format = try logFormat.map { try Self.parseFormat($0) }
            ?? (try file.logFormat.map { text in try fromFile("log-format") { try Self.parseFormat(text) } }) ?? .text
        let level = try logLevel.map { try Self.parseLevel($0) }
            ?? (try file.logLevel.map { text in try fromFile("log-level") { try Self.parseLevel(text) } })
        let body = maxBodyBytes ?? file.maxBodyBytes ?? 16 << 20
        if maxBodyBytes == nil { try fromFile("max-body-bytes") { try Self.checkBodyBytes(body) } }
        let timeout = requestTimeout ?? file.requestTimeout ?? 30
        if requestTimeout == nil { try fromFile("request-timeout") { try Self.checkTimeout(timeout) } }
        let every = try retentionEvery.map { try Self.parseInterval($0) }
            ?? (try file.retentionEvery.map { text in try fromFile("retention-every") { try Self.parseInterval(text) } })
        return Settings(listen: listenAddress, tokens: tokens, tls: tls, insecureHTTP: insecure, logFormat: format, logLevel: level,
                        publishHeads: publishHeads ?? file.publishHeads, auditStream: auditStream ?? file.auditStream,
                        retentionEvery: every, maxBodyBytes: body, requestTimeout: timeout, options: options)
    }

    static func parseLevel(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text) else {
            throw ValidationError("--log-level: expected trace, debug, info, notice, warning, error or critical")
        }
        return level
    }

    static func parseFormat(_ text: String) throws -> LogFormat {
        guard let format = LogFormat(rawValue: text) else { throw ValidationError("--log-format: expected text or json") }
        return format
    }

    static func checkBodyBytes(_ n: Int) throws {
        guard n >= 1024 && n <= 1 << 30 else { throw ValidationError("--max-body-bytes must be between 1024 and 1073741824") }
    }

    static func checkTimeout(_ t: Double) throws {
        guard t.isFinite, t >= 0.001, t <= 86_400 else {
            throw ValidationError("--request-timeout must be between 0.001 and 86400 seconds")
        }
    }

    /// `--retention-every`: a whole number with a unit s, m, h or d, from 60 s to 366 d.
    static func parseInterval(_ text: String) throws -> Double {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = text.last, let factor = units[unit], text.count >= 2, text.count <= 12,
              text.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(text.dropLast()),
              case (let seconds, false) = n.multipliedReportingOverflow(by: factor), seconds >= 60, seconds <= 366 * 86_400 else {
            throw ValidationError("--retention-every: expected an interval such as 24h, 12h or 1d (from 60s to 366d)")
        }
        return Double(seconds)
    }

    static func parseListen(_ text: String) throws -> ListenAddress {
        guard let address = ListenAddress.parse(text) else {
            throw ValidationError("--listen: expected HOST:PORT with a port from 0 to 65535 (IPv6 as [::1]:8080)")
        }
        return address
    }

    func run() throws {
        let s = try settings()
        let options = s.options
        // Every line from here on (the stores', Hummingbird's, the final error) in this format.
        ServiceLog.format = s.logFormat
        var logger = Logger(label: "profilevault.http")
        logger.logLevel = s.logLevel
            ?? ProcessInfo.processInfo.environment["PROFILEVAULT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        // Plain HTTP beyond this machine: refused, or allowed with a warning.
        if s.tls == nil && !s.listen.isLoopback {
            guard s.insecureHTTP else {
                throw VaultError(.usage, "--listen \(s.listen.description) is reachable from the network: serve it over TLS (--tls-cert PEM --tls-key PEM), or pass --insecure-http to send tokens and data in clear text")
            }
            ServiceLog.announce("--insecure-http: serving plain HTTP on \(s.listen.description): bearer tokens, personal data and answers cross the network unencrypted, readable and changeable by anyone on the path; use --tls-cert and --tls-key, or a TLS proxy on this host",
                                level: .warning, textPrefix: "warning: ", label: logger.label)
        }
        let tls = try s.tls.map { try ServiceTLS(certificatePath: $0.cert, keyPath: $0.key) }
        if let tls, Double(tls.notValidAfter) < Date().timeIntervalSince1970 {
            logger.warning("the TLS certificate has expired: clients that check it will refuse the service", metadata: ["tls_cert": .string(s.tls?.cert ?? "")])
        }
        var serviceOptions = ServiceOptions()
        serviceOptions.maxIngestBodyBytes = s.maxBodyBytes
        serviceOptions.requestTimeout = .milliseconds(Int64((s.requestTimeout * 1000).rounded()))
        serviceOptions.authFailureLimit = authFailureLimit
        serviceOptions.authFailureWindow = .seconds(authFailureWindow)
        serviceOptions.consoleSecureCookies = tls != nil
        let keysPath = try options.keysPath()
        try options.checkExampleKeys(path: keysPath, refuse: true)
        let tokenFile = try ReloadingTokenFile(path: s.tokens, checkEvery: serviceOptions.tokensCheckInterval, logger: logger)
        var configuration = VaultConfiguration(storePath: try options.storePath(), keysPath: keysPath,
                                               policyDirectory: options.policyDirectory, actor: Actor(name: "serve", role: "none"))
        configuration.hsmURI = options.hsmURI
        configuration.protectedFiles = [.tokens(s.tokens)]   // --publish-heads and --audit-stream may never be the tokens file
        let vault = try Vault.open(configuration)
        try vault.startBackgroundCheckpoints()
        if let publishHeads = s.publishHeads { try vault.publishAuditHeads(to: publishHeads) }
        // The stream first: the scheduler's first sweep runs at once, and its entries belong in it.
        if let auditStream = s.auditStream { try vault.streamAudit(to: auditStream) }
        let retention = try s.retentionEvery.map { try RetentionScheduler(vault: vault, every: $0, logger: logger) }
        retention?.start()
        // A keyring rotated on another node (or copied here) is adopted without a restart.
        let keyringWatcher = KeyringWatcher(vault: vault, logger: logger)
        keyringWatcher.start()
        // SIGHUP rereads the tokens file at once (it is also reread before the next request after a change).
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { tokenFile.reload(); keyringWatcher.check() }
        hangup.resume()
        defer { hangup.cancel() }
        let scheme = tls == nil ? "http" : "https"
        let tokenCount = tokenFile.current()?.identities.count ?? 0
        let announcer = logger
        let app = try buildServingApplication(vault: vault, tokens: tokenFile, listen: s.listen, tls: tls, options: serviceOptions,
                                              logger: logger) { bound in
            // Only now is the port ours: a busy port never prints this line.
            ServiceLog.announce("serving on \(scheme)://\(bound.description) (profilectl \(ProductVersion.current), \(tokenCount) tokens\(tls == nil ? "" : ", HTTP/1.1 and HTTP/2"))",
                                level: .notice, label: announcer.label)
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { try await app.runService() } catch { outcome.set(error) }
            done.signal()
        }
        done.wait()
        retention?.stop()
        keyringWatcher.stop()
        do { try vault.close() } catch {
            logger.error("the store did not close cleanly")
        }
        if let e = outcome.error {
            if let line = listenFailure(e, listen: s.listen) { throw VaultError(.internalFailure, line) }
            throw VaultError(.internalFailure, "the server stopped: \(e)")
        }
        logger.info("stopped")
    }
}

/// The server task's failure, handed to the waiting main thread.
/// `@unchecked Sendable`: `error` is only touched under `lock`.
final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (any Error)?
    func set(_ e: any Error) { lock.lock(); stored = e; lock.unlock() }
    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
}
