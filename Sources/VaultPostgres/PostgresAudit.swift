import Foundation
import PostgresNIO
import Synchronization
public import VaultAudit
import VaultCrypto
import VaultStore

/// Group commit for audit entries without a data change of their own: callers that arrive while
/// this process has a commit in flight are written together in the next transaction (one head
/// lock, one signed checkpoint, one commit for all of them). Every caller returns only once its
/// own entries are committed. Leader/follower: the first caller with nothing in flight starts a
/// task that commits batches until the queue is empty.
final class AuditCommitQueue: Sendable {
    private struct State {
        var queue: [([AuditRecord], CheckedContinuation<Void, any Error>)] = []
        var leaderActive = false
    }
    private let state = Mutex(State())
    /// Entries and transactions committed (for tests and figures).
    let stats = Mutex<(entries: Int, transactions: Int)>((0, 0))

    /// Callers queued behind the commit in flight, and whether one is in flight (for tests).
    var pending: Int { state.withLock { $0.queue.count } }
    var inFlight: Bool { state.withLock { $0.leaderActive } }

    func append(_ records: [AuditRecord], commit: @escaping @Sendable ([AuditRecord]) async throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let lead = state.withLock { s -> Bool in
                s.queue.append((records, c))
                if s.leaderActive { return false }
                s.leaderActive = true
                return true
            }
            if lead { Task { await self.drain(commit) } }
        }
    }

    private func drain(_ commit: @Sendable ([AuditRecord]) async throws -> Void) async {
        while true {
            let batch = state.withLock { s -> [([AuditRecord], CheckedContinuation<Void, any Error>)]? in
                if s.queue.isEmpty { s.leaderActive = false; return nil }
                defer { s.queue.removeAll() }
                return s.queue
            }
            guard let batch else { return }
            do {
                let records = batch.flatMap(\.0)
                try await commit(records)
                stats.withLock { $0.entries += records.count; $0.transactions += 1 }
                for (_, c) in batch { c.resume() }
            } catch {
                for (_, c) in batch { c.resume(throwing: error) }
            }
        }
    }
}

extension PostgresEngine {
    /// The verified head of the chain, locked for this transaction.
    struct LockedHead {
        var sequence: Int64
        var hash: [UInt8]
        var checkpoint: AuditCheckpoint?
        /// The time new entries get: the server's clock, never before the head's.
        var now: Int64
    }

    /// Locks the head row (`SELECT ... FOR UPDATE`: every node's append waits here for the one
    /// before it to commit) and checks it as the SQLite store checks its head: the head names
    /// the newest entry, whose hash matches its text and the newest checkpoint, whose signature
    /// verifies; nothing lies beyond it. A tampered chain fails the operation (integrity).
    func lockHead(_ conn: PostgresConnection) async throws -> LockedHead {
        guard let headRow = try await rows(conn, "SELECT seq, hash, time FROM profilevault.audit_head WHERE id = 1 FOR UPDATE").first else {
            throw PostgresStoreError(.integrity, "the audit head row is missing: the database was edited")
        }
        let (seq, hashBuffer, headTime) = try headRow.decode((Int64, ByteBuffer, Int64).self)
        let hash = hashBuffer.bytes
        // A second statement, so it reads what the append before this one committed (READ
        // COMMITTED takes a new snapshot per statement; the locking one saw the row only).
        guard let row = try await rows(conn, """
            SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint,
                   a.entry, a.prev_hash, a.hash,
                   c.seq, c.hash, c.signature, c.time, c.checkpoint_time, c.prev_seq, c.prev_digest,
                   (SELECT max(seq) FROM profilevault.audit_log), (SELECT max(seq) FROM profilevault.audit_checkpoints)
            FROM (SELECT 1) AS one
            LEFT JOIN profilevault.audit_log a ON a.seq = \(seq)
            LEFT JOIN profilevault.audit_checkpoints c ON c.seq = \(seq)
            """).first else {
            throw PostgresStoreError(.internalFailure, "reading the audit head returned no row")
        }
        let (serverNow, text, prev, entryHash, cpSeq, cpHash, cpSig, _, cpTime, cpPrevSeq, cpPrevDigest, maxEntry, maxCheckpoint) =
            try row.decode((Int64, String?, ByteBuffer?, ByteBuffer?, Int64?, ByteBuffer?, ByteBuffer?, Int64?, Int64?, Int64?, ByteBuffer?, Int64?, Int64?).self)
        let now = max(serverNow, headTime)
        serverClockOffset.withLock { $0 = serverNow - AuditLog.nowMillis }
        if let maxEntry, maxEntry > seq {
            throw PostgresStoreError(.integrity, "audit entries \(seq + 1) to \(maxEntry) lie beyond the audit head: they were inserted behind its back")
        }
        if let maxCheckpoint, maxCheckpoint > seq {
            throw PostgresStoreError(.integrity, "a checkpoint for entry \(maxCheckpoint) lies beyond the audit head at \(seq): the log was cut back")
        }
        if seq == 0 {
            guard hash == AuditLog.genesis, maxEntry == nil, maxCheckpoint == nil else {
                throw PostgresStoreError(.integrity, "the audit head says the log is empty but it is not: the head was rewound")
            }
            return LockedHead(sequence: 0, hash: AuditLog.genesis, checkpoint: nil, now: now)
        }
        guard let text, let prev, let entryHash else {
            throw PostgresStoreError(.integrity, "the audit head names entry \(seq), which is missing: entries were deleted from its tail")
        }
        guard entryHash.bytes == hash, SHA256.hash(prev.bytes, Array(text.utf8)) == hash else {
            throw PostgresStoreError(.integrity, "audit entry \(seq) does not match the audit head: it was rewritten")
        }
        guard cpSeq == seq, let cpHash, let cpSig else {
            throw PostgresStoreError(.integrity, "audit entry \(seq) is not covered by a signed checkpoint: it was inserted or its checkpoint deleted")
        }
        let cp = try Self.checkpoint(sequence: seq, hash: cpHash.bytes, signature: cpSig.bytes, time: cpTime, prevSeq: cpPrevSeq, prevDigest: cpPrevDigest?.bytes)
        guard cp.hash == hash else {
            throw PostgresStoreError(.integrity, "audit entry \(seq) does not match its signed checkpoint: it was rewritten")
        }
        let digest = cp.digest
        if trustedCheckpoint.withLock({ $0 }) != digest {
            guard cp.isValid(publicKey: auditPublicKey) else {
                throw PostgresStoreError(.integrity, "the audit checkpoint at entry \(seq) does not verify with the store's key: the log was rewritten")
            }
            trustedCheckpoint.withLock { $0 = digest }
        }
        return LockedHead(sequence: seq, hash: hash, checkpoint: cp, now: now)
    }

    /// A checkpoint from its columns: the three chain columns are all NULL (v1) or all set (v2).
    static func checkpoint(sequence: Int64, hash: [UInt8], signature: [UInt8], time: Int64?, prevSeq: Int64?, prevDigest: [UInt8]?) throws -> AuditCheckpoint {
        guard hash.count == 32 else {
            throw PostgresStoreError(.integrity, "the audit checkpoint at entry \(sequence) has no 32-byte hash: the database was edited")
        }
        switch (time, prevSeq, prevDigest) {
        case (nil, nil, nil):
            return AuditCheckpoint(sequence: sequence, hash: hash, signature: signature, timeMillis: nil, previousSequence: nil, previousDigest: nil)
        case let (t?, ps?, pd?) where pd.count == 32:
            return AuditCheckpoint(sequence: sequence, hash: hash, signature: signature, timeMillis: t, previousSequence: ps, previousDigest: pd)
        default:
            throw PostgresStoreError(.integrity, "the audit checkpoint at entry \(sequence) has a malformed link to the checkpoint before it: the database was edited")
        }
    }

    /// Appends `records` inside the caller's transaction: locks and verifies the head, inserts
    /// the entries (the same canonical JSON and hash chain as the SQLite store), signs a
    /// checkpoint of the new head linked to the one before, and moves the head. Returns the new
    /// head; the caller commits.
    @discardableResult
    func appendLocked(_ conn: PostgresConnection, _ records: [AuditRecord]) async throws -> (sequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint?) {
        try await appendLockedWithEntries(conn, records).head
    }

    /// ``appendLocked(_:_:)`` that also returns each appended entry's sequence and hash, in
    /// the order of `records` (an erasure's receipt is its entry's hash).
    func appendLockedEntries(_ conn: PostgresConnection, _ records: [AuditRecord]) async throws -> [(sequence: Int64, hash: [UInt8])] {
        try await appendLockedWithEntries(conn, records).entries
    }

    private func appendLockedWithEntries(_ conn: PostgresConnection, _ records: [AuditRecord]) async throws
        -> (head: (sequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint?), entries: [(sequence: Int64, hash: [UInt8])]) {
        let head = try await lockHead(conn)
        guard !records.isEmpty else { return ((head.sequence, head.hash, head.checkpoint), []) }
        let b = try buildEntries(records, after: head.sequence, hash: head.hash, checkpoint: head.checkpoint, now: head.now)
        let (now, seq, prev, cp) = (b.now, b.sequence, b.hash, b.checkpoint)
        // The entries and their checkpoint in one statement (one round trip fewer per append);
        // the head moves in the next, whose trigger checks the entry it names exists.
        try await exec(conn, """
            WITH entries AS (
                INSERT INTO profilevault.audit_log(seq, time, entry, prev_hash, hash, subject)
                SELECT s, \(now), e, decode(p, 'hex'), decode(h, 'hex'), decode(NULLIF(sub, ''), 'hex')
                FROM unnest(\(b.seqs)::bigint[], \(b.texts)::text[], \(b.prevs)::text[], \(b.hashes)::text[], \(b.subjects)::text[]) AS t(s, e, p, h, sub))
            INSERT INTO profilevault.audit_checkpoints(seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest)
            VALUES (\(seq), \(bytea(prev)), \(bytea(cp.signature)), \(now), \(now), \(cp.previousSequence), \(cp.previousDigest.map(bytea)))
            """)
        try await exec(conn, "UPDATE profilevault.audit_head SET seq = \(seq), hash = \(bytea(prev)), time = \(now) WHERE id = 1")
        headPublishing.appended(conn, cp)
        if headPublishing.streaming { headPublishing.appendedLines(conn, first: head.sequence + 1, AuditStream.lines(b.streamed, checkpoint: cp)) }
        return ((seq, prev, cp), b.appended)
    }

    /// New entries for `records` on the head (`sequence`, `hash`, `checkpoint`), all at time
    /// `now`: the same canonical JSON and hash chain as the SQLite store, and the signed
    /// checkpoint of the new head, linked to `checkpoint`.
    struct BuiltEntries {
        var now: Int64, sequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint
        var seqs: [Int64], texts: [String], prevs: [String], hashes: [String], subjects: [String]
        var streamed: [(entry: JSONValue, previous: [UInt8], hash: [UInt8])]
        var appended: [(sequence: Int64, hash: [UInt8])]
    }

    func buildEntries(_ records: [AuditRecord], after sequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint?, now: Int64) throws -> BuiltEntries {
        guard sequence <= Int64.max - Int64(records.count) - 1 else {
            throw PostgresStoreError(.internalFailure, "the audit log has run out of sequence numbers")
        }
        var seq = sequence
        var prev = hash
        var seqs: [Int64] = [], texts: [String] = [], prevs: [String] = [], hashes: [String] = [], subjects: [String] = []
        let streaming = headPublishing.streaming
        var streamed: [(entry: JSONValue, previous: [UInt8], hash: [UInt8])] = []
        var appended: [(sequence: Int64, hash: [UInt8])] = []
        for r in records {
            seq += 1
            let entry = r.entry(sequence: seq, timeMillis: now)
            let canonical = entry.canonicalBytes()
            let h = SHA256.hash(prev, canonical)
            if streaming { streamed.append((entry, prev, h)) }
            seqs.append(seq)
            texts.append(String(decoding: canonical, as: UTF8.self))
            prevs.append(AuditLog.hex(prev))
            hashes.append(AuditLog.hex(h))
            subjects.append(r.subject.map(AuditLog.hex) ?? "")
            appended.append((seq, h))
            prev = h
        }
        let cp = try AuditCheckpoint.sign(sequence: seq, hash: prev, timeMillis: now, after: checkpoint, key: auditKey)
        return BuiltEntries(now: now, sequence: seq, hash: prev, checkpoint: cp, seqs: seqs, texts: texts, prevs: prevs, hashes: hashes,
                            subjects: subjects, streamed: streamed, appended: appended)
    }

    /// A head this process committed: its entry's sequence, hash and time, and its signed
    /// checkpoint (exactly as stored).
    /// How far (milliseconds) an entry time of the one-statement append may be from the
    /// server's clock when the statement runs.
    static let knownHeadClockTolerance: Int64 = 2_000

    struct KnownHead: Sendable {
        var sequence: Int64
        var hash: [UInt8]
        var time: Int64
        var checkpoint: AuditCheckpoint
    }

    /// Appends `records` on `head` in one statement, run as a transaction of its own (one round
    /// trip, committed when it returns), if `head` is still the cluster's head exactly as this
    /// process committed it; returns nil, having written nothing, otherwise.
    ///
    /// The statement's `UPDATE` of the head row is the gate: it takes the row lock (waiting for
    /// any other node's append to commit, as `SELECT ... FOR UPDATE` does) and moves the head
    /// only if, in the row's newest version, the head is still `head` and, read in the
    /// statement's snapshot, the entry it names still hashes to it from its stored text and
    /// predecessor, its checkpoint is still the one this process signed, and no entry or
    /// checkpoint lies beyond it: the checks ``lockHead(_:)`` makes, by value against what this
    /// process wrote. The entries and the checkpoint are inserted only if the head moved (their
    /// `WHERE EXISTS`), all in the one statement; the head row's trigger (an AFTER trigger
    /// since migration 16, so it sees the entries inserted beside it) checks the new head names
    /// an entry of the log. Any difference (another node appended, the chain was edited) makes
    /// the caller take the locked path, which re-reads and verifies the head and reports what
    /// is wrong. The entries' time is this process's clock corrected by the offset to the
    /// server's clock measured at the last locked append, never before the head's time, and
    /// within ``knownHeadClockTolerance`` of the server's clock at the statement: a node whose
    /// clock jumped (a resumed VM, a bad NTP step) misses and takes the locked path, which
    /// stamps the server's clock, so no node's clock can push the cluster's entry times ahead.
    func appendOnKnownHead(_ records: [AuditRecord], _ head: KnownHead) async throws -> KnownHead? {
        let now = max(AuditLog.nowMillis + serverClockOffset.withLock { $0 }, head.time)
        let b = try buildEntries(records, after: head.sequence, hash: head.hash, checkpoint: head.checkpoint, now: now)
        let old = head.checkpoint, cp = b.checkpoint
        return try await single("appending to the audit log") { conn -> KnownHead? in
            let row = try await rows(conn, """
                WITH moved AS (
                    UPDATE profilevault.audit_head h SET seq = \(b.sequence), hash = \(bytea(b.hash)), time = \(now)
                    WHERE h.id = 1 AND h.seq = \(head.sequence) AND h.hash = \(bytea(head.hash)) AND h.time = \(head.time)
                      AND abs(\(now) - floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) <= \(Self.knownHeadClockTolerance)
                      AND EXISTS (SELECT 1 FROM profilevault.audit_log a
                                  WHERE a.seq = \(head.sequence) AND a.hash = \(bytea(head.hash))
                                    AND sha256(a.prev_hash || convert_to(a.entry, 'UTF8')) = a.hash)
                      AND EXISTS (SELECT 1 FROM profilevault.audit_checkpoints c
                                  WHERE c.seq = \(head.sequence) AND c.hash = \(bytea(old.hash)) AND c.signature = \(bytea(old.signature))
                                    AND c.checkpoint_time IS NOT DISTINCT FROM \(old.timeMillis)
                                    AND c.prev_seq IS NOT DISTINCT FROM \(old.previousSequence)
                                    AND c.prev_digest IS NOT DISTINCT FROM \(old.previousDigest.map(bytea)))
                      AND NOT EXISTS (SELECT 1 FROM profilevault.audit_log a WHERE a.seq > \(head.sequence))
                      AND NOT EXISTS (SELECT 1 FROM profilevault.audit_checkpoints c WHERE c.seq > \(head.sequence))
                    RETURNING 1),
                entries AS (
                    INSERT INTO profilevault.audit_log(seq, time, entry, prev_hash, hash, subject)
                    SELECT s, \(now), e, decode(p, 'hex'), decode(x, 'hex'), decode(NULLIF(sub, ''), 'hex')
                    FROM unnest(\(b.seqs)::bigint[], \(b.texts)::text[], \(b.prevs)::text[], \(b.hashes)::text[], \(b.subjects)::text[]) AS t(s, e, p, x, sub)
                    WHERE EXISTS (SELECT 1 FROM moved)
                    RETURNING 1),
                checkpoint AS (
                    INSERT INTO profilevault.audit_checkpoints(seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest)
                    SELECT \(b.sequence), \(bytea(b.hash)), \(bytea(cp.signature)), \(now), \(now), \(cp.previousSequence), \(cp.previousDigest.map(bytea))
                    WHERE EXISTS (SELECT 1 FROM moved)
                    RETURNING 1)
                SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM entries), (SELECT count(*) FROM checkpoint)
                """).first
            guard let row else { throw PostgresStoreError(.internalFailure, "the audit append returned no row") }
            let (moved, entries, checkpoints) = try row.decode((Int64, Int64, Int64).self)
            guard moved == 1 else { return nil }
            guard entries == Int64(records.count), checkpoints == 1 else {
                throw PostgresStoreError(.internalFailure, "the audit append wrote \(entries) entries and \(checkpoints) checkpoints for \(records.count) records")
            }
            // Committed: the statement was its own transaction.
            headPublishing.appended(conn, cp)
            if headPublishing.streaming { headPublishing.appendedLines(conn, first: head.sequence + 1, AuditStream.lines(b.streamed, checkpoint: cp)) }
            headPublishing.committed(conn)
            return KnownHead(sequence: b.sequence, hash: b.hash, time: now, checkpoint: cp)
        }
    }

    /// Appends entries that record no data change of their own (reads, denials, errors), group
    /// committed with this process's concurrent callers; committed when this returns. All nodes
    /// append to the one chain: the head row lock orders them.
    public func audit(_ records: [AuditRecord]) async throws {
        guard !records.isEmpty else { return }
        try await commits.append(records) { [self] batch in
            // The head this process committed last, if it is still the head: one round trip.
            // After a miss (another process appended meanwhile: several nodes busy at once),
            // the next few group commits go straight to the locked path rather than pay a
            // round trip that would likely miss again.
            let known = knownHead.withLock { h -> KnownHead? in defer { h = nil }; return h }
            let skip = knownHeadSkips.withLock { n -> Bool in defer { n = max(0, n - 1) }; return n > 0 }
            if let known, !skip {
                if let next = try await appendOnKnownHead(batch, known) {
                    trustedCheckpoint.withLock { $0 = next.checkpoint.digest }
                    knownHead.withLock { $0 = next }
                    knownHeadAppends.withLock { $0 += 1 }
                    return
                }
                knownHeadSkips.withLock { $0 = 8 }
            }
            // Otherwise lock and verify the head (BEGIN, two reads, the writes, COMMIT).
            let next = try await transaction("appending to the audit log") { conn -> KnownHead? in
                let (seq, hash, cp) = try await appendLocked(conn, batch)
                guard let cp, let time = cp.timeMillis else { return nil }
                return KnownHead(sequence: seq, hash: hash, time: time, checkpoint: cp)
            }
            if let next {
                trustedCheckpoint.withLock { $0 = next.checkpoint.digest }
                knownHead.withLock { $0 = next }
            }
        }
    }

    /// Entries and transactions the group commit has written in this process.
    public var auditCommitStats: (entries: Int, transactions: Int) { commits.stats.withLock { $0 } }

    /// Sequence number and hash (hex) of the newest entry, as the head row says.
    public func auditHead() async throws -> (entries: Int64, head: String) {
        try await transaction("reading the audit head") { conn in
            guard let row = try await rows(conn, "SELECT seq, hash FROM profilevault.audit_head WHERE id = 1").first else {
                throw PostgresStoreError(.integrity, "the audit head row is missing: the database was edited")
            }
            let (seq, hash) = try row.decode((Int64, ByteBuffer).self)
            return (seq, AuditLog.hex(hash.bytes))
        }
    }

    /// Verifies the whole chain with the same ``ChainVerifier`` as the SQLite store and the
    /// export verifier: every entry's hash and link, every checkpoint's signature and link, the
    /// time and subject columns against the entry, nothing beyond the newest checkpoint, and the
    /// head row naming the last entry. Reads one snapshot (REPEATABLE READ), so nodes appending
    /// meanwhile do not disturb it. `expectHead`: as `audit verify --expect-head`.
    public func verifyAudit(expectHead: String? = nil) async throws -> AuditVerification {
        let publicKey = auditPublicKey
        var expected: AuditExpectation?
        if let expectHead {
            do { expected = try AuditExpectation.parse(expectHead, publicKey: publicKey) } catch {
                throw PostgresStoreError(.usage, error.description)
            }
        }
        let expectation = expected
        return try await transaction("verifying the audit log", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
            // After an archive the chain starts from the newest signed anchor, as on SQLite.
            var anchor: AuditArchiveAnchor?
            var anchorFailure: AuditArchiveAnchor.AnchorFailure?
            var anchors: [AuditArchiveAnchor] = []
            do {
                anchors = try await archiveAnchors(conn)
                switch AuditArchiveAnchor.verifyChain(anchors, publicKey: publicKey) {
                case .success(let a): anchor = a
                case .failure(let f): anchorFailure = f
                }
            } catch let e as PostgresStoreError {
                anchorFailure = .init(sequence: 1, reason: e.message)
            }
            var v = anchor.map { ChainVerifier(publicKey: publicKey, anchor: $0, expecting: expectation) }
                ?? ChainVerifier(publicKey: publicKey, startingAfter: AuditLog.genesis, sequence: 0, expecting: expectation, wholeLog: true)
            v.archiveRanges = Set(anchors.map { [$0.firstSequence, $0.lastSequence] })
            func result() -> AuditVerification {
                AuditVerification(ok: v.failure == nil, entries: v.entries, firstBad: v.failure?.sequence,
                                  reason: v.failure?.reason, head: AuditLog.hex(v.head), archivedThrough: anchor?.lastSequence)
            }
            if let anchorFailure {
                v.fail(anchorFailure.sequence, anchorFailure.reason)
                return result()
            }
            let firstLive = try await rows(conn, "SELECT min(seq) FROM profilevault.audit_log").first?.decode(Int64?.self) ?? nil
            if let gap = ProfileStore.archiveGap(firstLive: firstLive, anchor: anchor) {
                v.fail(gap.sequence, gap.reason)
                return result()
            }
            var checkpoints: [Int64: AuditCheckpoint] = [:]
            for row in try await rows(conn, "SELECT seq, hash, signature, checkpoint_time, prev_seq, prev_digest FROM profilevault.audit_checkpoints WHERE seq > \(anchor?.lastSequence ?? Int64.min) ORDER BY seq") {
                let (seq, hash, sig, time, prevSeq, prevDigest) = try row.decode((Int64, ByteBuffer, ByteBuffer, Int64?, Int64?, ByteBuffer?).self)
                do {
                    checkpoints[seq] = try Self.checkpoint(sequence: seq, hash: hash.bytes, signature: sig.bytes, time: time, prevSeq: prevSeq, prevDigest: prevDigest?.bytes)
                } catch let e as PostgresStoreError {
                    v.fail(max(1, seq), e.message)
                    return result()
                }
            }
            let entries = try await conn.query("SELECT seq, time, entry, prev_hash, hash, subject FROM profilevault.audit_log ORDER BY seq", logger: logger)
            for try await row in entries {
                let (seq, time, text, prevBuffer, hashBuffer, subject) = try row.decode((Int64, Int64, String, ByteBuffer, ByteBuffer, ByteBuffer?).self)
                if v.failure != nil { continue }   // drain the rows; the first failure stands
                guard let entry = try? JSONValue.parse(text), case .int(let stated)? = entry["metadata.sequence"] else {
                    v.fail(seq, "entry \(seq) is not a valid audit entry: it was modified")
                    continue
                }
                if stated != seq {
                    v.fail(min(seq, stated), "row \(seq) holds entry \(stated): entries were reordered or moved")
                    continue
                }
                guard case .int(time)? = entry["time"] else {
                    v.fail(seq, "the time column of entry \(seq) disagrees with the entry: it was altered")
                    continue
                }
                let column = subject.map { AuditLog.hex($0.bytes) }
                let statedSubject = entry["unmapped.subject"].flatMap { if case .string(let s) = $0 { s } else { nil } }
                if column != statedSubject {
                    v.fail(seq, "the subject index of entry \(seq) disagrees with the entry: it was altered")
                    continue
                }
                let hash = hashBuffer.bytes
                let cp = checkpoints[seq]
                if let cp, cp.hash != hash {
                    v.fail(seq, "checkpoint \(seq) records another head than the entry's hash: the entry was rewritten")
                    continue
                }
                // The stored text is what the hash covers: a text that parses to the same
                // entry but differs in bytes is a modification too.
                if Array(text.utf8) != entry.canonicalBytes() {
                    v.fail(seq, "entry \(seq) is not in canonical form: it was modified")
                    continue
                }
                v.add(entry: entry, statedPrevious: prevBuffer.bytes, statedHash: hash, checkpoint: cp)
            }
            let last = v.last ?? 0
            if v.failure == nil, let beyond = checkpoints.keys.filter({ $0 > last }).min() {
                v.fail(last + 1, "a signed checkpoint exists for entry \(beyond) but the log ends at \(last): entries were deleted from the tail")
            }
            if v.failure == nil, last > v.lastCheckpoint {
                v.fail(v.lastCheckpoint + 1, "entries after \(v.lastCheckpoint) are not covered by a signed checkpoint: they were inserted or their checkpoint deleted")
            }
            if v.failure == nil {
                let head = try await rows(conn, "SELECT seq, hash FROM profilevault.audit_head WHERE id = 1").first
                if let head {
                    let (seq, hash) = try head.decode((Int64, ByteBuffer).self)
                    if seq != last || hash.bytes != v.head {
                        v.fail(min(seq, last) + 1, "the audit head names entry \(seq) but the log ends at \(last): the head was moved")
                    }
                } else {
                    v.fail(last + 1, "the audit head row is missing: the database was edited")
                }
            }
            v.finishExpectation()
            return result()
        }
    }
}
