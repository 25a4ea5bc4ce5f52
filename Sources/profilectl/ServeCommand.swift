import ArgumentParser
import Foundation
import Logging
import ProfileVault
import VaultServer
import VaultValues

/// `serve --listen HOST:PORT --tokens FILE`: the HTTP service (SPEC §8) over the store named by
/// the global options. Logs go to stderr; SIGTERM or SIGINT stops accepting connections, lets
/// in-flight requests finish and closes the store. The tokens file is reread when it changes
/// (checked before every request) and on SIGHUP.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP service (JSON over HTTP, bearer tokens mapped to actor and role).",
        discussion: "Routes and bodies: docs/http.md and docs/openapi.yaml. Create tokens with `profilectl tokens add`; the service rereads the tokens file when it changes (and on SIGHUP).")

    @OptionGroup var options: GlobalOptions
    @Option(help: "Address to listen on, HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080).") var listen = "127.0.0.1:8080"
    @Option(help: "The tokens file (from `profilectl tokens add`).") var tokens: String
    @Option(name: .customLong("publish-heads"), help: ArgumentHelp(
        "Append every new signed audit head, one JSON line each, to this file (keep it on another host; audit verify --expect-head FILE reads it).",
        valueName: "FILE")) var publishHeads: String?
    @Option(name: .customLong("audit-stream"), help: ArgumentHelp(
        "Append every audit entry this service commits, one JSON line each (nested OCSF, as audit export writes it), to this file, for a SIEM.",
        valueName: "FILE")) var auditStream: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
    @Option(name: .customLong("max-body-bytes"), help: "Largest ingest body in bytes (413 above it).") var maxBodyBytes = 16 << 20
    @Option(name: .customLong("request-timeout"), help: "Seconds a request may run before it is answered 503 (its work may still finish).") var requestTimeout: Double = 30
    @Option(name: .customLong("retention-every"), help: ArgumentHelp(
        "Apply policy.yaml's retention rules at start and then at this interval (e.g. 24h, 12h, 1d; at least 60s), audited as actor retention-scheduler.",
        valueName: "INTERVAL")) var retentionEvery: String?
    @Option(name: .customLong("auth-failure-limit"), help: ArgumentHelp(
        "Failed authentications one client address (an IPv6 one by its /64) may have within --auth-failure-window before routes that need a token answer it 429 (default 10; 1 to 100000).",
        valueName: "N")) var authFailureLimit = 10
    @Option(name: .customLong("auth-failure-window"), help: ArgumentHelp(
        "Seconds of that window, and of the 429 lockout that follows (default 60; 1 to 86400).",
        valueName: "SECONDS")) var authFailureWindow = 60

    func validate() throws {
        _ = try Self.parseListen(listen)
        if let logLevel, Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level \(logLevel): not a log level") }
        guard maxBodyBytes >= 1024 && maxBodyBytes <= 1 << 30 else { throw ValidationError("--max-body-bytes must be between 1024 and 1073741824") }
        guard requestTimeout.isFinite, requestTimeout >= 0.001, requestTimeout <= 86_400 else {
            throw ValidationError("--request-timeout must be between 0.001 and 86400 seconds")
        }
        if let retentionEvery { _ = try Self.parseInterval(retentionEvery) }
        guard (1...100_000).contains(authFailureLimit) else { throw ValidationError("--auth-failure-limit must be between 1 and 100000") }
        guard (1...86_400).contains(authFailureWindow) else { throw ValidationError("--auth-failure-window must be between 1 and 86400 seconds") }
    }

    /// `--retention-every`: a whole number with a unit s, m, h or d, from 60 s to 366 d.
    static func parseInterval(_ text: String) throws -> Double {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = text.last, let factor = units[unit], text.count >= 2, text.count <= 12,
              text.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(text.dropLast()),
              case (let seconds, false) = n.multipliedReportingOverflow(by: factor), seconds >= 60, seconds <= 366 * 86_400 else {
            throw ValidationError("--retention-every \(text): expected an interval such as 24h, 12h or 1d (from 60s to 366d)")
        }
        return Double(seconds)
    }

    static func parseListen(_ text: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":") else { throw ValidationError("--listen \(text): expected HOST:PORT") }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen \(text): expected HOST:PORT with a port from 0 to 65535")
        }
        return (host, port)
    }

    func run() throws {
        let (host, port) = try Self.parseListen(listen)
        var logger = Logger(label: "profilevault.http")
        logger.logLevel = logLevel.flatMap(Logger.Level.init(rawValue:))
            ?? ProcessInfo.processInfo.environment["PROFILEVAULT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        var serviceOptions = ServiceOptions()
        serviceOptions.maxIngestBodyBytes = maxBodyBytes
        serviceOptions.requestTimeout = .milliseconds(Int64((requestTimeout * 1000).rounded()))
        serviceOptions.authFailureLimit = authFailureLimit
        serviceOptions.authFailureWindow = .seconds(authFailureWindow)
        let keysPath = try options.keysPath()
        try options.checkExampleKeys(path: keysPath, refuse: true)
        let tokenFile = try ReloadingTokenFile(path: tokens, checkEvery: serviceOptions.tokensCheckInterval, logger: logger)
        var configuration = VaultConfiguration(storePath: try options.storePath(), keysPath: keysPath,
                                               policyDirectory: options.policyDirectory, actor: Actor(name: "serve", role: "none"))
        configuration.protectedFiles = [.tokens(tokens)]   // --publish-heads and --audit-stream may never be the tokens file
        let vault = try Vault.open(configuration)
        try vault.startBackgroundCheckpoints()
        if let publishHeads { try vault.publishAuditHeads(to: publishHeads) }
        // The stream first: the scheduler's first sweep runs at once, and its entries belong in it.
        if let auditStream { try vault.streamAudit(to: auditStream) }
        let retention = try retentionEvery.map { try RetentionScheduler(vault: vault, every: try Self.parseInterval($0), logger: logger) }
        retention?.start()
        // SIGHUP rereads the tokens file at once (it is also reread before the next request after a change).
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { tokenFile.reload() }
        hangup.resume()
        defer { hangup.cancel() }
        let app = buildApplication(vault: vault, tokens: tokenFile, host: host, port: port, options: serviceOptions, logger: logger)
        logger.info("serving", metadata: ["listen": .string("\(host):\(port)"), "tokens": .stringConvertible(tokenFile.current()?.identities.count ?? 0)])
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { try await app.runService() } catch { outcome.set(error) }
            done.signal()
        }
        done.wait()
        retention?.stop()
        do { try vault.close() } catch {
            logger.error("the store did not close cleanly")
        }
        logger.info("stopped")
        if let e = outcome.error { throw VaultError(.internalFailure, "the server stopped: \(e)") }
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
