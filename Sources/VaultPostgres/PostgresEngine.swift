import Foundation
public import Logging
import PostgresNIO
import Synchronization
import VaultAudit
public import VaultCrypto

/// The PostgreSQL storage engine's cluster-critical core (issue 18 §2): a connection pool, the
/// versioned schema with its least-privilege roles, the audit chain that every node appends to,
/// and the budget ledger that no node can overspend. Several processes (service nodes) each
/// open their own engine against one database; everything that must be right across them is
/// decided by PostgreSQL inside one transaction (a row lock on the audit head, a conditional
/// `UPDATE` of the budget row), never by a node's memory.
///
/// Every statement is a fixed text whose values are bound parameters (`PostgresQuery`
/// interpolation binds them); the only identifier ever spliced into SQL is the service role's
/// name in `GRANT`/`REVOKE`, which cannot be bound and is checked against
/// ``PostgresEngine/isPlainRoleName(_:)`` and quoted first.
///
/// The pool runs as a service: `PostgresClient.run()` in a task of the engine's own, cancelled
/// by ``close()``.
public final class PostgresEngine: Sendable {
    /// Every table lives in this schema (owned by the role that ran ``initialize(_:)``).
    public static let schema = "profilevault"

    public let location: PostgresLocation
    let client: PostgresClient
    /// The same settings for one connection outside the pool (``probe()``).
    let direct: PostgresConnection.Configuration
    let runner: Task<Void, Never>
    /// Opened by the runner task as it calls `client.run()`; ``transaction(_:begin:_:)`` waits
    /// for it before leasing a connection, so a command's first statement never races the
    /// pool's start (PostgresNIO logs a warning on stderr for a lease before `run()`).
    let running = RunGate()
    let logger: Logger
    let auditKey: Ed25519PrivateKey
    /// Digest of the newest checkpoint this process signed or verified: the hot path verifies a
    /// checkpoint's signature only when another node wrote the head (as the SQLite store does).
    let trustedCheckpoint = Mutex<[UInt8]?>(nil)
    let commits = AuditCommitQueue()
    /// The head this process's last group commit left (``audit(_:)``): the next one tries a
    /// single statement that appends on it only if it is still the cluster's head
    /// (``appendOnKnownHead(_:_:)``). Nil until the first append, and after any failed attempt.
    let knownHead = Mutex<KnownHead?>(nil)
    /// The server's clock minus this process's (milliseconds), measured by the last
    /// ``lockHead(_:)``: the time a single-statement append gives its entries.
    let serverClockOffset = Mutex<Int64>(0)
    /// Group commits written by that single statement (for tests and figures).
    let knownHeadAppends = Mutex(0)
    /// Group commits left that skip the single statement after it missed (``audit(_:)``).
    let knownHeadSkips = Mutex(0)
    /// Where signed heads are published once their transaction commits (`publishAuditHeads`).
    let headPublishing = HeadPublishing()
    /// The pool's size and how many of its connections are leased or waited for right now:
    /// ``poolState`` (the service's `/metrics`). Counting costs two atomic adds per lease.
    let maximumConnections: Int
    let leases = PoolLeases()

    /// The public half of the audit signing key: what verifies the chain's checkpoints.
    public var auditPublicKey: Ed25519PublicKey { auditKey.publicKey }

    /// Connects a pool of at most `maximumConnections` to `location`, authenticating with
    /// `password` (``PostgresLocation/password(environment:)`` finds it as libpq does; nil for
    /// trust or peer authentication). Nothing is sent to the server until the first operation.
    public init(location: PostgresLocation, password: String?, auditSigningKey: Ed25519PrivateKey,
                maximumConnections: Int = 8, logger: Logger = Logger(label: "profilevault.postgres")) throws(PostgresStoreError) {
        guard (1...1000).contains(maximumConnections) else {
            throw PostgresStoreError(.configuration, "the PostgreSQL pool size must be between 1 and 1000")
        }
        let tls = try Self.tls(location)
        var config: PostgresClient.Configuration
        var direct: PostgresConnection.Configuration
        switch location.endpoint {
        case .tcp(let host, let port):
            let clientTLS: PostgresClient.Configuration.TLS
            let connectionTLS: PostgresConnection.Configuration.TLS
            switch tls {
            case nil:
                clientTLS = .disable
                connectionTLS = .disable
            case let (required, settings)?:
                let context: NIOSSLContext
                do { context = try NIOSSLContext(configuration: settings) } catch {
                    throw PostgresStoreError(.configuration, "\(location.description): cannot set up TLS (is sslrootcert a readable PEM file?)")
                }
                clientTLS = required ? .require(settings) : .prefer(settings)
                connectionTLS = required ? .require(context) : .prefer(context)
            }
            config = .init(host: host, port: port, username: location.user, password: password, database: location.database, tls: clientTLS)
            direct = .init(host: host, port: port, username: location.user, password: password, database: location.database, tls: connectionTLS)
        case .unixSocket:
            // libpq never uses TLS on a unix socket; neither does PostgresNIO.
            let path = location.socketPath ?? ""
            config = .init(unixSocketPath: path, username: location.user, password: password, database: location.database)
            direct = .init(unixSocketPath: path, username: location.user, password: password, database: location.database)
        }
        config.options.maximumConnections = maximumConnections
        config.options.minimumConnections = 0
        // Every statement names its tables `profilevault.x`; the functions and operators it
        // calls resolve in pg_catalog only, so an object another role creates in `public` (or
        // any schema a login role's default search_path names) can never be picked instead.
        // And every statement run outside an explicit transaction (``single(_:_:)``) is READ
        // COMMITTED as the transactions are, whatever default a DBA set for the database.
        var startup: [(String, String)] = [("search_path", "pg_catalog"), ("default_transaction_isolation", "read committed")]
        if let name = location.applicationName { startup.append(("application_name", name)) }
        config.options.additionalStartupParameters = startup
        direct.options.additionalStartupParameters = startup
        self.location = location
        self.maximumConnections = maximumConnections
        self.auditKey = auditSigningKey
        self.logger = logger
        self.direct = direct
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        let running = self.running
        self.runner = Task {
            running.open()
            await client.run()
        }
    }

    /// Opens an engine for a service node: connects once directly, so a wrong location, password
    /// or certificate is refused at once with the server's reason (the pool would retry it for a
    /// minute and report only that it gave up), and checks the schema version (``checkSchema()``).
    /// With `leastPrivilege` (the default: every service node), it also refuses (configuration)
    /// a login role the grants do not restrain, as init refuses such a service role: the owner
    /// or a member of it, a superuser, CREATEROLE or bypassrls role or a member of one, a role
    /// holding UPDATE, DELETE or TRUNCATE on the audit tables through any membership (such as
    /// `pg_write_all_data`, granted after init), or one that may SET session_replication_role.
    /// A node running as such a role would make the REVOKE meaningless. Pass false only for the
    /// owner's own tools.
    public static func open(location: PostgresLocation, password: String?, auditSigningKey: Ed25519PrivateKey,
                            maximumConnections: Int = 8, leastPrivilege: Bool = true,
                            logger: Logger = Logger(label: "profilevault.postgres")) async throws -> PostgresEngine {
        let engine = try PostgresEngine(location: location, password: password, auditSigningKey: auditSigningKey,
                                        maximumConnections: maximumConnections, logger: logger)
        do {
            try await engine.probe()
            try await engine.checkSchema()
            if leastPrivilege {
                try await engine.transaction("checking the node's privileges") { conn in
                    try await engine.refuseUnrestrainable(conn, location.user, as: "the node's login role")
                }
            }
        } catch {
            await engine.close()
            throw error
        }
        return engine
    }

    /// One direct connection and `SELECT 1`: the server's answer to this location and password.
    public func probe() async throws {
        do {
            let conn = try await PostgresConnection.connect(configuration: direct, id: 0, logger: logger)
            do { _ = try await conn.query("SELECT 1", logger: logger).collect() } catch {
                try? await conn.close()
                throw error
            }
            try? await conn.close()
        } catch {
            throw PostgresStoreError.wrap(error, "connecting to \(location.description)")
        }
    }

    /// The TLS settings of `sslmode` (nil: no TLS), and whether TLS is required.
    static func tls(_ location: PostgresLocation) throws(PostgresStoreError) -> (required: Bool, TLSConfiguration)? {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let root = location.sslRootCert { tls.trustRoots = .file(root) }
        switch location.sslMode {
        case .disable:
            return nil
        case .prefer:
            // As libpq: encrypt when the server offers it, without checking who it is.
            tls.certificateVerification = .none
            return (false, tls)
        case .require:
            // As libpq: encryption required, the certificate not checked (use verify-full).
            tls.certificateVerification = .none
            return (true, tls)
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
            return (true, tls)
        case .verifyFull:
            tls.certificateVerification = .fullVerification
            return (true, tls)
        }
    }

    /// The pool right now: its size, the connections leased to a statement or transaction, and
    /// the leases still waiting for a connection. A snapshot of two counters (no round trip).
    public var poolState: (maximum: Int, inUse: Int, waiting: Int) {
        let requested = leases.requested.load(ordering: .relaxed)
        let leased = leases.leased.load(ordering: .relaxed)
        return (maximumConnections, leased, max(0, requested - leased))
    }

    /// Stops the pool: its connections close and later operations fail.
    public func close() async {
        runner.cancel()
        await runner.value
    }

    deinit { runner.cancel() }

    // MARK: - Statements and transactions

    /// Runs one statement and reads all of its rows.
    func rows(_ conn: PostgresConnection, _ query: PostgresQuery) async throws -> [PostgresRow] {
        try await conn.query(query, logger: logger).collect()
    }

    /// Runs one statement, discarding its rows.
    func exec(_ conn: PostgresConnection, _ query: PostgresQuery) async throws {
        _ = try await conn.query(query, logger: logger).collect()
    }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    /// READ COMMITTED, named rather than left to the server's default (a DBA's
    /// `default_transaction_isolation = serializable` would make every concurrent append fail
    /// on the head row instead of waiting for it), unless `begin` says otherwise. Errors come
    /// out as ``PostgresStoreError`` naming `what`.
    func transaction<T: Sendable>(_ what: String, begin: PostgresQuery = "BEGIN ISOLATION LEVEL READ COMMITTED",
                                  _ body: (PostgresConnection) async throws -> T) async throws -> T {
        await running.wait()
        do {
            leases.requested.add(1, ordering: .relaxed)
            defer { leases.requested.subtract(1, ordering: .relaxed) }
            return try await client.withConnection { conn -> T in
                leases.leased.add(1, ordering: .relaxed)
                defer { leases.leased.subtract(1, ordering: .relaxed) }
                try await exec(conn, begin)
                do {
                    let value = try await body(conn)
                    try await exec(conn, "COMMIT")
                    headPublishing.committed(conn)
                    return value
                } catch {
                    headPublishing.discard(conn)
                    // A connection whose ROLLBACK failed may still be inside the transaction; it
                    // is closed, never handed back to the pool, where the next lone statement
                    // (a one-statement audit append, which counts as committed when it returns)
                    // would run inside it.
                    do { try await exec(conn, "ROLLBACK") } catch { try? await conn.close() }
                    throw error
                }
            }
        } catch {
            throw PostgresStoreError.wrap(error, what)
        }
    }

    /// Runs one read-only statement (what `body` runs) on a pooled connection outside any
    /// explicit transaction: PostgreSQL runs a lone statement in a transaction of its own, with
    /// one snapshot, at READ COMMITTED (the connection's default, set at start-up), so this is
    /// what `transaction` gives a single read, without the round trips of `BEGIN` and `COMMIT`
    /// (two of an audited get's nine).
    func single<T: Sendable>(_ what: String, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        await running.wait()
        do {
            leases.requested.add(1, ordering: .relaxed)
            defer { leases.requested.subtract(1, ordering: .relaxed) }
            return try await client.withConnection { conn in
                leases.leased.add(1, ordering: .relaxed)
                defer { leases.leased.subtract(1, ordering: .relaxed) }
                return try await body(conn)
            }
        } catch {
            throw PostgresStoreError.wrap(error, what)
        }
    }

    /// Runs `transaction` again (at most 3 attempts in all) when PostgreSQL aborted it to break
    /// a deadlock (40P01): an ingest batch locks many subjects, and two nodes ingesting the same
    /// customers can each hold one the other needs. The aborted attempt was rolled back whole
    /// (its rows and its audit entry), so running it again is safe; the transaction must be
    /// self-contained (no state outside it that an attempt changes).
    func retryingDeadlocks<T: Sendable>(_ transaction: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do { return try await transaction() } catch let e as PostgresStoreError where e.sqlState == "40P01" && attempt < 3 {
                attempt += 1
                logger.notice("a transaction was aborted to break a deadlock; running it again", metadata: ["attempt": "\(attempt)"])
            }
        }
    }

    /// Row ids for `lines.count` rows of `table` (`subjects` or `events`), from the table's own
    /// identity sequence, handed out so that they ascend in line order: element i is the id of
    /// the record at `lines[i]`. A batch is written in lock order (by pseudonym), not in file
    /// order; its ids still follow the file, as on SQLite, so every engine lists a batch's
    /// subjects and same-time events in the order they were ingested. Ids a record does not use
    /// (it updated a stored row, or was a duplicate) are skipped, as a failed insert skips them.
    func freshIDs(_ conn: PostgresConnection, table: String, inLineOrder lines: [Int]) async throws -> [Int64] {
        guard !lines.isEmpty else { return [] }
        let sequence: String
        switch table {
        case "subjects": sequence = "profilevault.subjects"
        case "events": sequence = "profilevault.events"
        default: throw PostgresStoreError(.internalFailure, "no identity sequence for \(table)")
        }
        // The sequence is looked up once (MATERIALIZED: inlined, the lookup ran for every id,
        // ten times the cost of drawing them), and the ids come back as one array, not a row each.
        guard let row = try await rows(conn, """
            WITH q AS MATERIALIZED (SELECT pg_get_serial_sequence(\(sequence), 'id')::regclass AS r)
            SELECT array_agg(nextval(q.r)) FROM q, generate_series(1, \(Int64(lines.count)))
            """).first else { throw PostgresStoreError(.internalFailure, "the sequence returned no ids") }
        let values = try row.decode([Int64].self).sorted()
        guard values.count == lines.count else { throw PostgresStoreError(.internalFailure, "the sequence returned \(values.count) ids for \(lines.count) rows") }
        var out = [Int64](repeating: 0, count: lines.count)
        for (k, i) in lines.indices.sorted(by: { lines[$0] != lines[$1] ? lines[$0] < lines[$1] : $0 < $1 }).enumerated() { out[i] = values[k] }
        return out
    }

    /// A role name that may be spliced into `GRANT`/`REVOKE` (which take no parameters): 1 to
    /// 63 lower-case letters, digits and `_`, starting with a letter or `_`, not `pg_...` (names
    /// PostgreSQL reserves) and not `public`.
    public static func isPlainRoleName(_ name: String) -> Bool {
        let u = Array(name.utf8)
        guard (1...63).contains(u.count), !name.hasPrefix("pg_"), name != "public" else { return false }
        guard let first = u.first, (0x61...0x7A).contains(first) || first == 0x5F else { return false }
        return u.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }
}

/// Bytes as PostgreSQL's `bytea` parameter.
func bytea(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }

extension ByteBuffer {
    var bytes: [UInt8] { Array(readableBytesView) }
}

/// A one-way gate: closed until ``open()``, then every ``wait()`` returns at once.
final class RunGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        if state.withLock({ $0.open }) { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let already = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if already { continuation.resume() }
        }
    }
}

/// The counters behind ``PostgresEngine/poolState``: leases asked for (waiting or leased) and
/// leases holding a connection.
final class PoolLeases: Sendable {
    let requested = Atomic<Int>(0)
    let leased = Atomic<Int>(0)
}
