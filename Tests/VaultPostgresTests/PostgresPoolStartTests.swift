import Foundation
import Logging
import Synchronization
import Testing
@testable import VaultPostgres

/// Collects what a logger is given, to check what a command would print on stderr.
final class CapturedLog: Sendable {
    let lines = Mutex<[String]>([])
    func handler(label: String) -> some LogHandler { Handler(log: self) }
    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            log.lines.withLock { $0.append("\(level) \(message)") }
        }
    }
}

/// The pool's start: a command runs its first statement right after opening the engine. Every
/// `profilectl` command against PostgreSQL printed PostgresNIO's warning "Trying to lease
/// connection from `PostgresClient`, but `PostgresClient.run()` hasn't been called yet." on
/// stderr (the CLI shows warnings): the first lease raced the task that starts the pool.
@Suite(.serialized) struct PostgresPoolStartTests {
    @Test func theFirstStatementOfAFreshEngineLogsNoWarning() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let captured = CapturedLog()
            // Several fresh engines, each leasing at once (as a CLI command does).
            for _ in 0..<5 {
                let engine = try PostgresEngine(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey,
                                                maximumConnections: 2, logger: Logger(label: "test", factory: captured.handler))
                try await engine.checkSchema()
                await engine.close()
            }
            let warnings = captured.lines.withLock { $0 }.filter { $0.hasPrefix("warning") || $0.hasPrefix("error") || $0.hasPrefix("critical") }
            #expect(warnings.isEmpty, "\(warnings)")
        }
    }

    /// `poolState` (the service's /metrics): the size, the connections leased and the leases
    /// waiting, counted around every lease. One connection held in a transaction while two more
    /// ask for it: 1 leased, 2 waiting; afterwards all back.
    @Test func thePoolStateCountsLeasesAndWaiters() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let engine = try PostgresEngine(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey,
                                            maximumConnections: 1)
            try await engine.checkSchema()
            #expect(engine.poolState == (1, 0, 0))
            let holding = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            let holder = Task {
                try await engine.transaction("holding the only connection") { _ in
                    holding.continuation.yield()
                    for await _ in release.stream { break }
                }
            }
            for await _ in holding.stream { break }
            #expect(engine.poolState == (1, 1, 0))
            let waiters = (0..<2).map { _ in Task { try await engine.single("waiting") { _ in } } }
            // The waiters are counted once they asked (bounded wait: at most 10 s).
            var state = engine.poolState
            for _ in 0..<1000 where state.waiting < 2 {
                try await Task.sleep(for: .milliseconds(10))
                state = engine.poolState
            }
            #expect(state == (1, 1, 2))
            release.continuation.yield()
            try await holder.value
            for w in waiters { try await w.value }
            #expect(engine.poolState == (1, 0, 0))
            await engine.close()
        }
    }
}
