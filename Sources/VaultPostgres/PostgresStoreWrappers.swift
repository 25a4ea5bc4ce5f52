import Foundation
public import DifferentialPrivacy
import PostgresNIO
import Synchronization
public import VaultAudit
public import VaultCrypto
public import VaultStore
import VaultValues

/// Where signed heads go once the transaction that wrote them commits (`publishAuditHeads`):
/// ``PostgresEngine/appendLocked(_:_:)`` notes the checkpoint it signed on the connection, and
/// ``PostgresEngine/transaction(_:begin:_:)`` publishes it after COMMIT (or drops it after a
/// rollback), so a file of published heads never names a head that is not in the log. Nothing
/// is noted while no publisher is set.
final class HeadPublishing: Sendable {
    private struct State {
        var publisher: HeadPublisher?
        var pending: [ObjectIdentifier: AuditCheckpoint] = [:]
        /// `serve --audit-stream`: the lines of each open transaction (with its first sequence
        /// number), and those committed but waiting for an earlier open one of this process.
        var stream: AuditStream?
        var streamPending: [ObjectIdentifier: (first: Int64, lines: [UInt8])] = [:]
        var streamCommitted: [(first: Int64, lines: [UInt8])] = []
    }
    private let state = Mutex(State())

    func start(_ publisher: HeadPublisher) { state.withLock { $0.publisher = publisher } }
    func startStream(_ stream: AuditStream) { state.withLock { $0.stream = stream } }
    var streaming: Bool { state.withLock { $0.stream != nil } }

    func appended(_ conn: PostgresConnection, _ cp: AuditCheckpoint) {
        state.withLock { s in if s.publisher != nil { s.pending[ObjectIdentifier(conn)] = cp } }
    }

    /// The stream lines of entries appended on `conn` (several appends in one transaction add up).
    func appendedLines(_ conn: PostgresConnection, first: Int64, _ lines: [UInt8]) {
        state.withLock { s in
            guard s.stream != nil else { return }
            let id = ObjectIdentifier(conn)
            if var p = s.streamPending[id] { p.lines += lines; s.streamPending[id] = p } else { s.streamPending[id] = (first, lines) }
        }
    }

    func committed(_ conn: PostgresConnection) {
        let (publisher, cp) = state.withLock { s in (s.publisher, s.pending.removeValue(forKey: ObjectIdentifier(conn))) }
        if let publisher, let cp { publisher.publish(cp) }
        state.withLock { s in
            if let p = s.streamPending.removeValue(forKey: ObjectIdentifier(conn)) { s.streamCommitted.append(p) }
            Self.flush(&s)
        }
    }

    func discard(_ conn: PostgresConnection) {
        state.withLock { s in
            _ = s.pending.removeValue(forKey: ObjectIdentifier(conn))
            _ = s.streamPending.removeValue(forKey: ObjectIdentifier(conn))
            Self.flush(&s)
        }
    }

    /// Writes the committed transactions that no open transaction of this process precedes,
    /// in sequence order (the head row lock orders the commits; a continuation may still run
    /// late, so the order is restored here).
    private static func flush(_ s: inout State) {
        guard let stream = s.stream, !s.streamCommitted.isEmpty else { return }
        let open = s.streamPending.values.map(\.first).min() ?? Int64.max
        s.streamCommitted.sort { $0.first < $1.first }
        while let next = s.streamCommitted.first, next.first < open {
            stream.write(next.lines)
            s.streamCommitted.removeFirst()
        }
    }
}

// MARK: - Life

extension PostgresProfiles {
    /// Closes the engine's connection pool: later operations fail (configuration: no connection).
    public func close() throws {
        try Self.wait("closing the PostgreSQL pool") { [engine] in await engine.close() }
    }

    /// Nothing to do on PostgreSQL: a commit is durable when it returns (the server's WAL and
    /// its own checkpoints are the server's business), so there is no buffer of this process's
    /// to move into a durable form, unlike SQLite's WAL file.
    public func checkpoint() throws {}

    /// Nothing to do on PostgreSQL (see ``checkpoint()``): the server checkpoints on its own.
    public func startBackgroundCheckpoints(every interval: Double) throws {}
}

// MARK: - The audit chain

extension PostgresProfiles {
    /// The public half of the audit signing key: what verifies the chain's checkpoints and
    /// the head record of an export.
    public var auditPublicKey: Ed25519PublicKey { engine.auditPublicKey }

    /// Appends entries that record no data change of their own (reads, denials, errors), group
    /// committed with this process's concurrent callers; committed on the cluster's one chain
    /// when this returns.
    public func audit(_ records: [AuditRecord]) throws {
        guard !records.isEmpty else { return }
        try Self.wait("appending to the audit log") { [engine] in try await engine.audit(records) }
    }

    /// The newest signed head, verified as every append verifies it (the head names the newest
    /// entry, whose hash matches its text and a checkpoint whose signature verifies); nil for
    /// an empty log. A tampered chain is an integrity error.
    public func signedAuditHead() throws -> AuditCheckpoint? {
        try Self.wait("reading the signed audit head") { [engine] in
            let cp = try await engine.transaction("reading the signed audit head") { conn in
                try await engine.lockHead(conn).checkpoint
            }
            if let cp { engine.trustedCheckpoint.withLock { $0 = cp.digest } }
            return cp
        }
    }

    /// Appends every checkpoint this process signs from now on, one JSON line each, to `path`
    /// (created 0600 if absent; appended to otherwise; never one of `protecting`), starting
    /// with the current head, as on SQLite. Each node publishes the heads it signs; the
    /// heads of other nodes reach the file through the chain (each head covers all before it).
    public func publishAuditHeads(to path: String, protecting: [ProtectedFile]) throws {
        let publisher = try HeadPublisher(path: path, protecting: ownFiles + protecting)
        if let head = try signedAuditHead() { publisher.publish(head) }
        engine.headPublishing.start(publisher)
    }

    /// Verifies the whole chain (``PostgresEngine/verifyAudit(expectHead:)``: SQLite's verifier).
    public func verifyAudit(expectHead: String?) throws -> AuditVerification {
        try Self.wait("verifying the audit log") { [engine] in try await engine.verifyAudit(expectHead: expectHead) }
    }

    /// Counts of the entries between `since` and `until` (``AuditReport``), streamed from one
    /// READ ONLY snapshot: only the counts are kept in memory.
    public func auditReport(sinceMillis: Int64?, untilMillis: Int64?) throws -> AuditReport {
        try Self.wait("reporting on the audit log") { [engine] in
            try await engine.transaction("reporting on the audit log", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
                var builder = AuditReport.Builder(sinceMillis: sinceMillis, untilMillis: untilMillis)
                let since = sinceMillis ?? Int64.min, until = untilMillis ?? Int64.max
                let rows = try await conn.query("SELECT seq, entry FROM profilevault.audit_log WHERE time BETWEEN \(since) AND \(until) ORDER BY seq", logger: engine.logger)
                var failure: (any Error)?
                for try await row in rows {
                    if failure != nil { continue }   // drain the stream; the first failure stands
                    do {
                        let (seq, text) = try row.decode((Int64, String).self)
                        try builder.add(seq: seq, text: text)
                    } catch {
                        failure = error
                    }
                }
                if let failure {
                    throw PostgresStoreError(.integrity, (failure as? VaultError)?.message ?? "an audit entry could not be read: the database was edited (run audit verify)")
                }
                return builder.report
            }
        }
    }

    /// Appends every audit entry this process commits from now on to `path`, one JSON line
    /// each, after its commit and in sequence order (``HeadPublishing``); each node streams the
    /// entries it commits.
    public func streamAudit(to path: String, protecting: [ProtectedFile]) throws {
        let stream = try AuditStream(path: path, protecting: ownFiles + protecting)
        engine.headPublishing.startStream(stream)
    }

    /// The sink, handed to the pool's task that reads the snapshot. `@unchecked Sendable`: the
    /// calling thread is blocked in ``wait(_:_:)`` while the task writes, so one thread at a
    /// time touches it. The sink's own error (an `OutputFile` that cannot be written) is kept
    /// here and thrown as it is, not as a database failure.
    private final class SinkBox: @unchecked Sendable {
        let sink: any AuditExportSink
        var error: (any Error)?
        init(_ sink: any AuditExportSink) { self.sink = sink }
        func write(_ s: String) throws {
            do { try sink.write(s) } catch {
                self.error = error
                throw PostgresStoreError(.internalFailure, "writing the audit export failed")
            }
        }
    }

    /// An audit row, its columns checked as SQLite's `StoredEntry` checks them.
    private struct Entry {
        var seq: Int64, time: Int64, text: String, previous: [UInt8], hash: [UInt8]
        /// From the first five columns of `row` (seq, time, entry, prev_hash, hash).
        init(_ row: PostgresRow) throws {
            let cells = PostgresRandomAccessRow(row)
            let seq = try cells[0].decode(Int64.self), time = try cells[1].decode(Int64.self), text = try cells[2].decode(String.self)
            let prev = try cells[3].decode(ByteBuffer.self), hash = try cells[4].decode(ByteBuffer.self)
            guard prev.readableBytes == 32, hash.readableBytes == 32 else {
                throw PostgresStoreError(.integrity, "audit entry \(seq) has a column of the wrong type: the database was edited")
            }
            self.seq = seq
            self.time = time
            self.text = text
            self.previous = prev.bytes
            self.hash = hash.bytes
        }
    }

    private static func checkpoint(_ row: PostgresRow, at column: Int = 0) throws -> AuditCheckpoint {
        let cells = PostgresRandomAccessRow(row)
        let seq = try cells[column].decode(Int64.self)
        let hash = try cells[column + 1].decode(ByteBuffer.self)
        let sig = try cells[column + 2].decode(ByteBuffer.self)
        let time = try cells[column + 3].decode(Int64?.self)
        let prevSeq = try cells[column + 4].decode(Int64?.self)
        let prevDigest = try cells[column + 5].decode(ByteBuffer?.self)
        return try PostgresEngine.checkpoint(sequence: seq, hash: hash.bytes, signature: sig.bytes, time: time, prevSeq: prevSeq, prevDigest: prevDigest?.bytes)
    }

    /// The SQLite store's `writeAuditExport` on one REPEATABLE READ snapshot of the cluster's
    /// chain (nodes appending meanwhile do not disturb it): the same slice, the same checks,
    /// the same bytes.
    public func writeAuditExport(_ options: AuditExportOptions, to out: any AuditExportSink) throws -> AuditExportResult {
        let (sinceMillis, untilMillis, format) = (options.sinceMillis, options.untilMillis, options.format)
        let signer = engine.auditKey
        let publicKey = auditPublicKey
        let box = SinkBox(out)
        let cpColumns = "seq, hash, signature, checkpoint_time, prev_seq, prev_digest"
        do {
            return try Self.wait("exporting the audit log") { [engine] in
                try await engine.transaction("exporting the audit log", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
                    func int(_ q: PostgresQuery) async throws -> Int64? {
                        guard let row = try await engine.rows(conn, q).first else { return nil }
                        return try row.decode(Int64?.self)
                    }
                    // A `since` after the newest entry selects nothing: the slice starts after the end.
                    let since = sinceMillis ?? Int64.min, until = untilMillis ?? Int64.max
                    var lo: Int64
                    if let first = try await int("SELECT min(seq) FROM profilevault.audit_log WHERE time >= \(since)") {
                        lo = first
                    } else {
                        let (next, overflow) = (try await int("SELECT max(seq) FROM profilevault.audit_log") ?? 0).addingReportingOverflow(1)
                        guard !overflow else { throw PostgresStoreError(.integrity, "the audit log's sequence numbers are out of range: the database was edited") }
                        lo = next
                    }
                    var hi = try await int("SELECT max(seq) FROM profilevault.audit_log WHERE time <= \(until)") ?? 0
                    if let after = options.afterSequence {
                        let newest = try await int("SELECT max(seq) FROM profilevault.audit_log") ?? 0
                        let archived = try await int("SELECT max(last_seq) FROM profilevault.audit_archive")
                        if let problem = AuditSelection.afterProblem(after, newest: newest, archivedThrough: archived) {
                            throw PostgresStoreError(problem.kind == .usage ? .usage : .invalidInput, problem.message)
                        }
                        lo = max(lo, after + 1)
                    }
                    if let through = options.throughSequence { hi = min(hi, through) }
                    if let subject = options.subject, lo <= hi {
                        // The subject index finds the run holding the subject's entries; every
                        // entry of the run is checked, only the subject's are written.
                        let range = try await engine.rows(conn, "SELECT min(seq), max(seq) FROM profilevault.audit_log WHERE subject = \(bytea(subject)) AND seq BETWEEN \(lo) AND \(hi)").first
                        if let (a, b) = try range?.decode((Int64?, Int64?).self), let a, let b { (lo, hi) = (a, b) } else { lo = hi + 1 }
                    }
                    var previous = AuditLog.genesis
                    if let p = try await engine.rows(conn, "SELECT prev_hash FROM profilevault.audit_log WHERE seq = \(lo)").first {
                        previous = try p.decode(ByteBuffer.self).bytes
                    } else if lo > 1, let h = try await engine.rows(conn, "SELECT hash FROM profilevault.audit_log WHERE seq = \(lo - 1)").first {
                        previous = try h.decode(ByteBuffer.self).bytes   // an empty slice after the end continues from the head
                    }
                    // The checkpoint before the slice (the first one inside links to it).
                    var lastCheckpoint = try await engine.rows(conn, PostgresQuery(unsafeSQL: """
                        SELECT \(cpColumns) FROM profilevault.audit_checkpoints WHERE seq < $1 ORDER BY seq DESC LIMIT 1
                        """, binds: { var b = PostgresBindings(); b.append(lo); return b }())).first.map { try Self.checkpoint($0) }
                    // After an archive: the checkpoint its anchor keeps, when none before the slice is left.
                    if lastCheckpoint == nil, let anchor = try await engine.archiveAnchors(conn).last, anchor.lastSequence < lo {
                        lastCheckpoint = anchor.checkpoint
                    }
                    var checkpoints: [Int64: AuditCheckpoint] = [:]
                    for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: """
                        SELECT \(cpColumns) FROM profilevault.audit_checkpoints WHERE seq BETWEEN $1 AND $2
                        """, binds: { var b = PostgresBindings(); b.append(lo); b.append(hi); return b }())) {
                        let cp = try Self.checkpoint(row)
                        checkpoints[cp.sequence] = cp
                    }
                    // The slice is chosen by the `time` column, which no hash covers: the entries
                    // on either side must agree with their own (hashed) time.
                    for neighbour in [lo - 1, hi &+ 1] where neighbour >= 1 {
                        guard let row = try await engine.rows(conn, "SELECT seq, time, entry, prev_hash, hash FROM profilevault.audit_log WHERE seq = \(neighbour)").first else { continue }
                        let e = try Entry(row)
                        guard case .int(e.time)? = (try? JSONValue.parse(e.text))?["time"] else {
                            throw PostgresStoreError(.integrity, "audit entry \(neighbour): its time column differs from the entry's time: the database was edited; nothing was exported (run audit verify)")
                        }
                    }
                    func refused(_ r: AuditExportRefusal) -> PostgresStoreError { PostgresStoreError(.integrity, r.message) }
                    var renderer = AuditExportRenderer(format: format, first: lo, previous: previous, checkpointBefore: lastCheckpoint, checkpoints: checkpoints,
                                                       nested: options.nested, subject: options.subject.map(AuditLog.hex))
                    // Every row is read (the stream is drained); the first failure stands.
                    var failure: PostgresStoreError?
                    let rows = try await conn.query(PostgresQuery(unsafeSQL: """
                        SELECT seq, time, entry, prev_hash, hash FROM profilevault.audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq
                        """, binds: { var b = PostgresBindings(); b.append(lo); b.append(hi); return b }()), logger: engine.logger)
                    for try await row in rows {
                        if failure != nil { continue }
                        do {
                            let stored = try Entry(row)
                            try renderer.add(seq: stored.seq, time: stored.time, text: stored.text, previous: stored.previous, hash: stored.hash)
                            if let chunk = renderer.takeChunk() { try box.write(chunk) }
                        } catch let e as PostgresStoreError {
                            failure = e
                        } catch let r as AuditExportRefusal {
                            failure = refused(r)
                        }
                    }
                    if let failure { throw failure }
                    // The slice must end under a checkpoint whose signature verifies: follow the
                    // chain to the first checkpoint at or after its last entry.
                    do {
                        if renderer.needsCover {
                            renderer.beginCover()
                            // In pages (a checkpoint follows within one group commit's entries).
                            while !renderer.isCovered {
                                let page = try await engine.rows(conn, """
                                    SELECT a.seq, a.time, a.entry, a.prev_hash, a.hash,
                                           c.seq, c.hash, c.signature, c.checkpoint_time, c.prev_seq, c.prev_digest
                                    FROM profilevault.audit_log a LEFT JOIN profilevault.audit_checkpoints c ON c.seq = a.seq
                                    WHERE a.seq >= \(max(renderer.nextSequence, 1)) ORDER BY a.seq LIMIT 1000
                                    """)
                                if page.isEmpty { break }
                                for row in page where !renderer.isCovered {
                                    let stored = try Entry(row)
                                    try renderer.follow(seq: stored.seq, text: stored.text, previous: stored.previous, hash: stored.hash)
                                    if try PostgresRandomAccessRow(row)[5].decode(Int64?.self) != nil {
                                        try renderer.cover(by: try Self.checkpoint(row, at: 5))
                                    }
                                }
                            }
                            try renderer.checkCovered(publicKey: publicKey)
                        }
                    } catch let r as AuditExportRefusal {
                        throw refused(r)
                    }
                    try box.write(try renderer.finish(signer: signer))
                    return AuditExportResult(entries: renderer.rendered, head: AuditLog.hex(renderer.head), lastSequence: renderer.last)
                }
            }
        } catch {
            if let own = box.error { throw own }
            throw error
        }
    }
}

// MARK: - The budget ledger

/// The DP layer's accountant on PostgreSQL: each charge is one transaction of
/// ``PostgresEngine/charge(purpose:epsilon:delta:limit:deltaLimit:periodSeconds:audit:policy:recordRefusal:)``
/// (a conditional `UPDATE` of the window row and the audit entry), so across every node the
/// ledger is never overspent. As the SQLite accountant: the entry is `audit` with the epsilon
/// charged (and `delta D` in its detail when delta is charged); with `policy`, a charge under a
/// policy other than the one in force is refused (configuration); a refusal throws
/// `BudgetExceeded` and writes no entry (the Vault records the refusal, as on SQLite).
///
/// Synchronous, as the protocol is: call it from a plain thread (see ``PostgresProfiles``).
struct PostgresBudgetAccountant: BudgetAccountant {
    let engine: PostgresEngine
    let audit: AuditRecord
    let policy: (sha256: String, schemaSHA256: String)?

    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
        try spend(purpose: purpose, epsilon: epsilon, delta: 0, limit: limit, deltaLimit: 0, periodSeconds: periodSeconds)
    }

    func spend(purpose: String, epsilon: Epsilon, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        // SQLite's checks and messages first (before anything is read or written).
        guard DeltaUnits.charge(delta) != nil, DeltaUnits.limit(deltaLimit) != nil else {
            throw VaultError(.usage, "delta must be between 0 and 1")
        }
        guard periodSeconds >= 1 else { throw VaultError(.configuration, "a budget period must be longer than zero") }
        // The epsilon charged is `epsilon.chargeUnits`: `Epsilon(value)` of the charged value
        // has exactly those units (a multiple of 2^-20 is exact in a Double).
        let charged = epsilon.chargedValue
        // A negative limit is none at all and one beyond 2^40 as good as unlimited, as SQLite
        // clamps it (the engine's charge refuses what is not a finite limit of at least 0).
        let clamped = limit.isNaN ? 0 : min(max(limit, 0), 0x1p40)
        let (engine, audit, policy) = (self.engine, self.audit, self.policy)
        let outcome: Result<BudgetState, BudgetExceeded> = try PostgresProfiles.wait("charging the privacy budget") {
            do {
                return .success(try await engine.charge(purpose: purpose, epsilon: charged, delta: delta, limit: clamped, deltaLimit: deltaLimit,
                                                        periodSeconds: periodSeconds, audit: audit, policy: policy, recordRefusal: false))
            } catch let e as BudgetExceeded {
                return .failure(e)
            }
        }
        // The states carry the limit as the caller gave it (as SQLite reports it), not the clamped one.
        switch outcome {
        case .success(var state):
            state.limit = limit
            return state
        case .failure(var exceeded):
            exceeded.state.limit = limit
            throw exceeded
        }
    }
}

extension PostgresProfiles {
    /// A budget accountant that appends `audit` (with the epsilon charged, and the delta when
    /// one is) in the same transaction as the charge, on the cluster's ledger. With `policy`
    /// (the SHA-256s the caller loaded), a charge is refused (configuration) when the policy
    /// the store records as in force is another.
    public func budgetAccountant(audit: AuditRecord, policy: (sha256: String, schemaSHA256: String)?) -> any BudgetAccountant {
        PostgresBudgetAccountant(engine: engine, audit: audit, policy: policy)
    }

    /// Budget of a purpose in its current window (nothing spent yet: 0).
    public func budgetState(purpose: String, limit: Double, periodSeconds: Int) throws -> BudgetState {
        try budgetState(purpose: purpose, limit: limit, deltaLimit: 0, periodSeconds: periodSeconds)
    }

    /// Budget of a purpose in its current window, epsilon and delta (the server's clock and the
    /// store's creation time decide the window, as for a charge).
    public func budgetState(purpose: String, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        try Self.wait("reading the privacy budget") { [engine] in
            try await engine.budgetState(purpose: purpose, limit: limit, deltaLimit: deltaLimit, periodSeconds: periodSeconds)
        }
    }
}
