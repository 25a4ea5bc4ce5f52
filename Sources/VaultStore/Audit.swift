import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
public import GRDB
public import VaultAudit
public import VaultCrypto

/// Who acts, for the audit entries an operation writes inside its own transactions.
public struct AuditContext: Sendable {
    public var actor: String
    public var role: String
    public var requestID: String
    /// The version of the policy in force, recorded in every entry this context makes
    /// (`unmapped.policy_version`); nil records none.
    public var policyVersion: String?
    public init(actor: String, role: String, requestID: String, policyVersion: String? = nil) {
        self.actor = actor
        self.role = role
        self.requestID = requestID
        self.policyVersion = policyVersion
    }

    public func record(_ action: String, _ activity: AuditActivity, purpose: String? = nil, subject: [UInt8]? = nil,
                       fields: [String] = [], outcome: AuditOutcome = .ok, detail: String? = nil,
                       counts: [(String, Int64)] = []) -> AuditRecord {
        AuditRecord(actor: actor, role: role, action: action, activity: activity, purpose: purpose, subject: subject,
                    fields: fields, outcome: outcome, requestID: requestID, detail: detail, counts: counts,
                    policyVersion: policyVersion)
    }
}

/// What the store remembers about its audit head between operations: the digest of the last
/// checkpoint it signed or verified (so the hot path verifies a signature only when another
/// process wrote the head), and where to publish new heads (`serve --publish-heads`).
final class AuditHeadState: Sendable {
    let trusted = Mutex<[UInt8]?>(nil)
    let publisher = Mutex<HeadPublisher?>(nil)
    /// `serve --audit-stream`: where committed entries go, one JSON line each.
    let stream = Mutex<AuditStream?>(nil)
}

/// A file opened once for appending whole lines (O_APPEND, 0600 when created, never through a
/// symbolic link, a regular file, never one of the protected files: appending is on purpose,
/// so this is no `OutputFile`, but the keyring, the store or a policy file is refused all the
/// same, exit 73). What `serve --audit-stream` and `--publish-heads` write to.
package final class AppendOnlyFile: Sendable {
    let fd: Int32
    let path: String

    /// `what` names the file in errors ("the audit stream"); `openFailure` is the kind of an
    /// error opening it.
    package init(path: String, what: String, protecting: [ProtectedFile], openFailure: VaultError.Kind) throws {
        if let reason = OutputFile.protectedReason(path, protecting: protecting) {
            throw VaultError(.cannotCreate, "\(path): cannot use it as \(what): \(reason)")
        }
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VaultError(openFailure, "\(path): cannot open \(what) for appending") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw VaultError(openFailure, "\(path): \(what) is not a regular file")
        }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Appends `bytes` (whole lines), going on after a short write or an interrupt; a failure
    /// is dropped (the callers' entries are committed: see theirs).
    package func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count, let base = buffer.baseAddress {
                let n = Glibc.write(fd, base + offset, buffer.count - offset)
                if n < 0 { if errno == EINTR { continue }; return }
                if n == 0 { return }
                offset += n
            }
        }
    }
}

/// Appends each committed audit entry, one JSON line each (the export's line: the entry as
/// OCSF objects with `prev_hash`, `hash` and, on the last entry of a transaction, its
/// checkpoint), to an ``AppendOnlyFile``: `serve --audit-stream FILE`, for a SIEM. The engine
/// hands it the lines of a transaction only once that transaction committed, in sequence
/// order.
package final class AuditStream: Sendable {
    let file: AppendOnlyFile

    package init(path: String, protecting: [ProtectedFile]) throws {
        file = try AppendOnlyFile(path: path, what: "the audit stream", protecting: protecting, openFailure: .cannotCreate)
    }

    /// The lines of one transaction's entries (in order; the last one carries `checkpoint`).
    package static func lines(_ entries: [(entry: JSONValue, previous: [UInt8], hash: [UInt8])], checkpoint: AuditCheckpoint?) -> [UInt8] {
        var out = ""
        for (i, e) in entries.enumerated() {
            guard case .object(let pairs) = e.entry else { continue }
            let cp = i == entries.count - 1 ? checkpoint : nil
            out += AuditExportRenderer.line(entry: pairs, extra: AuditExportRenderer.chainFields(previous: e.previous, hash: e.hash, checkpoint: cp), nested: true)
            out += "\n"
        }
        return Array(out.utf8)
    }

    /// Appends `bytes` (whole lines). A failure is not the operation's (its entries are
    /// committed): the consumer catches up with `audit export --after-seq` from the last
    /// line it holds.
    package func write(_ bytes: [UInt8]) { file.append(bytes) }
}

/// What `audit export` selects and how it writes it.
public struct AuditExportOptions: Sendable {
    public var format: AuditExportFormat
    /// Entries at or after / at or before these times (unix milliseconds).
    public var sinceMillis: Int64?
    public var untilMillis: Int64?
    /// Only entries with a sequence number above this (incremental shipping).
    public var afterSequence: Int64?
    /// Only the entries naming this pseudonym (a subject's selection).
    public var subject: [UInt8]?
    /// Entries as OCSF objects (JSON Lines); false: the stored flat keys.
    public var nested: Bool
    /// Only entries with a sequence number at or below this (`audit archive`'s slice).
    public var throughSequence: Int64?
    public init(format: AuditExportFormat = .jsonl, sinceMillis: Int64? = nil, untilMillis: Int64? = nil,
                afterSequence: Int64? = nil, subject: [UInt8]? = nil, nested: Bool = false, throughSequence: Int64? = nil) {
        self.throughSequence = throughSequence
        self.format = format
        self.sinceMillis = sinceMillis
        self.untilMillis = untilMillis
        self.afterSequence = afterSequence
        self.subject = subject
        self.nested = nested
    }
}

/// Appends published heads, one JSON line each, to an ``AppendOnlyFile``.
package final class HeadPublisher: Sendable {
    let file: AppendOnlyFile

    package init(path: String, protecting: [ProtectedFile]) throws {
        file = try AppendOnlyFile(path: path, what: "the published-heads file", protecting: protecting, openFailure: .configuration)
    }

    /// Writes one line; a failure is not the operation's (its entries are committed): the next
    /// head published covers this one through the chain.
    package func publish(_ cp: AuditCheckpoint) {
        file.append(Array((cp.published.canonicalString() + "\n").utf8))
    }
}

public enum AuditExportFormat: String, Sendable, CaseIterable {
    case jsonl, csv
}

extension ProfileStore {
    static func registerAuditMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v2-audit") { db in
            try db.execute(sql: """
                CREATE TABLE audit(
                    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, entry TEXT NOT NULL,
                    prev_hash BLOB NOT NULL, hash BLOB NOT NULL, subject BLOB);
                CREATE INDEX audit_time ON audit(time);
                CREATE INDEX audit_subject ON audit(subject) WHERE subject IS NOT NULL;
                CREATE TABLE audit_checkpoints(
                    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, signature BLOB NOT NULL, time INTEGER NOT NULL);
                CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                """)
        }
    }

    /// The public half of the audit signing key (Ed25519, derived from the identity version).
    public var auditPublicKey: Ed25519PublicKey { keys.auditSigning.publicKey }

    static func registerAuditChainMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v7-audit-checkpoint-chain") { db in
            // v2 checkpoints link to the checkpoint before them (AuditCheckpoint); rows written
            // before this migration keep NULL here and stay v1 checkpoints.
            try db.execute(sql: """
                ALTER TABLE audit_checkpoints ADD COLUMN checkpoint_time INTEGER;
                ALTER TABLE audit_checkpoints ADD COLUMN prev_seq INTEGER;
                ALTER TABLE audit_checkpoints ADD COLUMN prev_digest BLOB;
                """)
        }
    }

    static let checkpointColumns = "seq, hash, signature, checkpoint_time, prev_seq, prev_digest"

    /// A checkpoint row, decoded without trapping: a column of the wrong type (an edited file)
    /// is an integrity error. The three chain columns are all NULL (v1) or all set (v2).
    static func checkpoint(_ row: Row, seqColumn: String = "seq", hashColumn: String = "hash", signatureColumn: String = "signature",
                           chainColumns: (String, String, String) = ("checkpoint_time", "prev_seq", "prev_digest")) throws -> AuditCheckpoint {
        let seq = row.auditInt(seqColumn) ?? 0
        func bad(_ what: String) -> VaultError {
            VaultError(.integrity, "the audit checkpoint at entry \(seq) has \(what): the file was edited")
        }
        guard let seq = row.auditInt(seqColumn) else { throw bad("no integer sequence number") }
        guard let hash = row.auditBlob(hashColumn), hash.count == 32 else { throw bad("no 32-byte hash") }
        guard let signature = row.auditBlob(signatureColumn) else { throw bad("no signature") }
        let nulls = [chainColumns.0, chainColumns.1, chainColumns.2].filter { row.auditIsNull($0) }.count
        if nulls == 3 {
            return AuditCheckpoint(sequence: seq, hash: hash, signature: signature, timeMillis: nil, previousSequence: nil, previousDigest: nil)
        }
        guard nulls == 0, let time = row.auditInt(chainColumns.0), let prevSeq = row.auditInt(chainColumns.1),
              let prevDigest = row.auditBlob(chainColumns.2), prevDigest.count == 32 else {
            throw bad("a malformed link to the checkpoint before it")
        }
        return AuditCheckpoint(sequence: seq, hash: hash, signature: signature, timeMillis: time, previousSequence: prevSeq, previousDigest: prevDigest)
    }

    /// An audit row's columns, decoded without trapping (integrity error otherwise).
    struct StoredEntry {
        var seq: Int64
        var time: Int64
        var text: String
        var previous: [UInt8]
        var hash: [UInt8]

        init(_ row: Row) throws {
            let seq = row.auditInt("seq") ?? 0
            guard let s = row.auditInt("seq"), let time = row.auditInt("time"), let text = row.auditText("entry"),
                  let previous = row.auditBlob("prev_hash"), previous.count == 32,
                  let hash = row.auditBlob("hash"), hash.count == 32 else {
                throw VaultError(.integrity, "audit entry \(seq) has a column of the wrong type: the file was edited")
            }
            self.seq = s
            self.time = time
            self.text = text
            self.previous = previous
            self.hash = hash
        }
    }

    /// The verified head of the log: the newest entry, which must be exactly the newest
    /// checkpoint's entry, with a signature that verifies and a hash that matches the entry's
    /// text. Every append signs a checkpoint of its new head in the same transaction, so in a
    /// log nobody tampered with the head is always covered; entries after the newest
    /// checkpoint, a head that differs from it, or a checkpoint past the end mean the file was
    /// edited, and nothing may be signed over them (an integrity error; the caller's
    /// transaction rolls back). Cheap on the hot path: the signature is verified once per
    /// checkpoint this process did not sign or verify before (``AuditHeadState``).
    func verifiedHead(_ db: Database) throws -> (sequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint?) {
        let cpRow = try Row.fetchOne(try db.cachedStatement(sql: "SELECT \(Self.checkpointColumns) FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"))
        let row = try Row.fetchOne(try db.cachedStatement(sql: "SELECT seq, time, entry, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1"))
        guard let row else {
            if cpRow != nil {
                throw VaultError(.integrity, "the audit log is empty but holds signed checkpoints: its entries were deleted")
            }
            // An archive always leaves its own entry: an empty log with an anchor lost its tail.
            if let anchor = try Int64.fetchOne(db, sql: "SELECT max(last_seq) FROM audit_archive") {
                throw VaultError(.integrity, "the audit log is empty but entries up to \(anchor) were archived: the entries after them were deleted")
            }
            return (0, AuditLog.genesis, nil)
        }
        let stored = try StoredEntry(row)
        let seq = stored.seq
        guard let cpRow else {
            throw VaultError(.integrity, "audit entries up to \(seq) are not covered by a signed checkpoint: they were inserted or their checkpoints deleted")
        }
        let cp = try Self.checkpoint(cpRow)
        if seq > cp.sequence {
            throw VaultError(.integrity, "audit entries \(cp.sequence + 1) to \(seq) are not covered by a signed checkpoint: they were inserted or rewritten, or their checkpoints deleted")
        }
        if seq < cp.sequence {
            throw VaultError(.integrity, "the audit log ends at entry \(seq) but a checkpoint signs entry \(cp.sequence): entries were deleted from its tail")
        }
        let hash = stored.hash
        guard cp.hash == hash, SHA256.hash(stored.previous, Array(stored.text.utf8)) == hash else {
            throw VaultError(.integrity, "audit entry \(seq) does not match its signed checkpoint: it was rewritten")
        }
        let digest = cp.digest
        if auditHeads.trusted.withLock({ $0 }) != digest {
            guard cp.isValid(publicKey: auditPublicKey) else {
                throw VaultError(.integrity, "the audit checkpoint at entry \(seq) does not verify with the store's key: the log was rewritten")
            }
            auditHeads.trusted.withLock { $0 = digest }
        }
        return (seq, hash, cp)
    }

    /// Appends entries inside the caller's transaction and signs a checkpoint of the new head,
    /// so the data change and its audit entries commit or roll back together. The head it
    /// builds on is verified first (``verifiedHead(_:)``): a tampered log fails the operation.
    @discardableResult
    func appendAudit(_ db: Database, _ records: [AuditRecord]) throws -> (sequence: Int64, hash: [UInt8]) {
        guard !records.isEmpty else {
            let head = try verifiedHead(db)
            return (head.sequence, head.hash)
        }
        var last: (sequence: Int64, hash: [UInt8]) = (0, [])
        try appendAudit(db, records, each: { last = ($0, $1) })
        return last
    }

    /// ``appendAudit(_:_:)`` for several entries that each need their own sequence number and
    /// hash (the receipts of a batch of erasures): `each` is called with each, in order. One
    /// signed checkpoint covers them all.
    func appendAudit(_ db: Database, _ records: [AuditRecord], each: (_ sequence: Int64, _ hash: [UInt8]) throws -> Void) throws {
        let head = try verifiedHead(db)
        guard !records.isEmpty else { return }
        var seq = head.sequence
        var prev = head.hash
        let now = AuditLog.nowMillis
        let insert = try db.cachedStatement(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (?, ?, ?, ?, ?, ?)")
        let streaming = auditHeads.stream.withLock { $0 != nil }
        var streamed: [(entry: JSONValue, previous: [UInt8], hash: [UInt8])] = []
        for r in records {
            seq += 1
            let entry = r.entry(sequence: seq, timeMillis: now)
            let canonical = entry.canonicalBytes()
            let h = SHA256.hash(prev, canonical)
            try insert.execute(arguments: [seq, now, String(decoding: canonical, as: UTF8.self), Data(prev), Data(h), r.subject.map { Data($0) }])
            if streaming { streamed.append((entry, prev, h)) }
            prev = h
            try each(seq, h)
        }
        let cp = try AuditCheckpoint.sign(sequence: seq, hash: prev, timeMillis: now, after: head.checkpoint, key: keys.auditSigning)
        // The writer's commits are serialised and this runs right after each, so the stream
        // gets whole transactions in sequence order, and never one that rolled back.
        let lines = streaming ? AuditStream.lines(streamed, checkpoint: cp) : []
        try db.cachedStatement(sql: "INSERT INTO audit_checkpoints(seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .execute(arguments: [seq, Data(prev), Data(cp.signature), now, now, cp.previousSequence, cp.previousDigest.map { Data($0) }])
        let digest = cp.digest
        let heads = auditHeads
        db.afterNextTransaction(onCommit: { _ in
            heads.trusted.withLock { $0 = digest }
            heads.publisher.withLock { $0?.publish(cp) }
            if !lines.isEmpty { heads.stream.withLock { $0?.write(lines) } }
        })
    }

    /// The newest signed head, verified (``verifiedHead(_:)``); nil for an empty log.
    public func signedAuditHead() throws -> AuditCheckpoint? {
        try pool.read { db in try verifiedHead(db).checkpoint }
    }

    /// Appends every checkpoint this store signs from now on, one JSON line each, to `path`
    /// (created 0600 if absent; appended to otherwise), starting with the current head: an
    /// auditor keeps that file on another host and checks the store against it later
    /// (`audit verify --expect-head FILE`), which detects a tail truncated back to an older
    /// checkpoint, or a store rolled back to an older copy.
    public func publishAuditHeads(to path: String, protecting: [ProtectedFile] = []) throws {
        let publisher = try HeadPublisher(path: path, protecting: ownFiles + protecting)
        if let head = try signedAuditHead() { publisher.publish(head) }
        auditHeads.publisher.withLock { $0 = publisher }
    }

    /// Appends every audit entry this store commits from now on, one JSON line each, to `path`
    /// (`serve --audit-stream`; created 0600 if absent, appended to otherwise; never one of
    /// the store's files or `protecting`): ``AuditStream``.
    public func streamAudit(to path: String, protecting: [ProtectedFile] = []) throws {
        let stream = try AuditStream(path: path, protecting: ownFiles + protecting)
        auditHeads.stream.withLock { $0 = stream }
    }

    /// Appends entries that record no data change of their own (reads, denials, errors):
    /// group-committed with those of concurrent callers, and durable when this returns.
    public func audit(_ records: [AuditRecord]) throws {
        try auditCommits.append(records) { batch in
            try pool.write { db in _ = try appendAudit(db, batch) }
        }
    }

    /// Sequence number and hash (hex) of the newest entry; (0, zeros) for an empty log.
    public func auditHead() throws -> (entries: Int64, head: String) {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") else {
                return (0, AuditLog.hex(AuditLog.genesis))
            }
            guard let seq = row.auditInt("seq"), let hash = row.auditBlob("hash") else {
                throw VaultError(.integrity, "the newest audit entry has a column of the wrong type: the file was edited")
            }
            return (seq, AuditLog.hex(hash))
        }
    }

    /// Writes the entries between `since` and `until` (unix milliseconds, inclusive) as JSON
    /// Lines or CSV, ending with a head record signed now. The slice is contiguous in sequence
    /// numbers (from the first entry at or after `since` to the last at or before `until`).
    ///
    /// Nothing unverified is signed: every exported entry's hash is recomputed, every checkpoint
    /// in the slice must match its entry and link to the one before it, and the chain is
    /// followed past the slice's end to the first checkpoint at or after it, whose signature
    /// must verify. Otherwise the export fails with an integrity error and its file is removed.
    ///
    /// The file is an ``OutputFile``: new (0600) unless `force`, and never one of the store's
    /// own files or `protecting` (exit 73 otherwise, before anything is read).
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat, to path: String,
                            force: Bool = false, protecting: [ProtectedFile] = []) throws -> (entries: Int, head: String) {
        let file = try OutputFile(path: path, force: force, protecting: ownFiles + protecting, what: "the audit export")
        return try exportAudit(sinceMillis: sinceMillis, untilMillis: untilMillis, format: format, to: file)
    }

    /// The export itself (``StorageEngine/writeAuditExport(_:to:)``), from one read snapshot.
    public func writeAuditExport(_ options: AuditExportOptions, to out: any AuditExportSink) throws -> AuditExportResult {
        let signer = keys.auditSigning
        let publicKey = auditPublicKey
        let format = options.format
        return try pool.read { db in
            // A `since` after the newest entry selects nothing: the slice starts after the end.
            let newest = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit") ?? 0
            var lo = try Int64.fetchOne(db, sql: "SELECT min(seq) FROM audit WHERE time >= ?", arguments: [options.sinceMillis ?? Int64.min])
                ?? (newest + 1)
            var hi = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit WHERE time <= ?", arguments: [options.untilMillis ?? Int64.max]) ?? 0
            if let after = options.afterSequence {
                try AuditSelection.checkAfter(after, newest: newest,
                                              archivedThrough: try Int64.fetchOne(db, sql: "SELECT max(last_seq) FROM audit_archive"))
                lo = max(lo, after + 1)
            }
            if let through = options.throughSequence { hi = min(hi, through) }
            if let subject = options.subject, lo <= hi {
                // The subject index finds the run holding the subject's entries; every entry of
                // the run is checked, only the subject's are written.
                let range = try Row.fetchOne(db, sql: "SELECT min(seq) AS lo, max(seq) AS hi FROM audit WHERE subject = ? AND seq BETWEEN ? AND ?",
                                             arguments: [Data(subject), lo, hi])
                if let a = range?.auditInt("lo"), let b = range?.auditInt("hi") { (lo, hi) = (a, b) } else { lo = hi + 1 }
            }
            var previous = AuditLog.genesis
            if let p = try Data.fetchOne(db, sql: "SELECT prev_hash FROM audit WHERE seq = ?", arguments: [lo]) {
                previous = [UInt8](p)
            } else if lo > 1, let h = try Data.fetchOne(db, sql: "SELECT hash FROM audit WHERE seq = ?", arguments: [lo - 1]) {
                previous = [UInt8](h)   // an empty slice after the end continues from the head
            }
            // The checkpoint before the slice (the first one inside links to it): after an
            // archive, the one its anchor keeps when none before the slice is left.
            let lastCheckpoint = try Row.fetchOne(db, sql: "SELECT \(Self.checkpointColumns) FROM audit_checkpoints WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                                                  arguments: [lo]).map { try Self.checkpoint($0) }
                ?? (try newestArchiveAnchor(db)).flatMap { $0.lastSequence < lo ? $0.checkpoint : nil }
            var checkpoints: [Int64: AuditCheckpoint] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT \(Self.checkpointColumns) FROM audit_checkpoints WHERE seq BETWEEN ? AND ?", arguments: [lo, hi]) {
                let cp = try Self.checkpoint(row)
                checkpoints[cp.sequence] = cp
            }
            // The slice is chosen by the `time` column, which no hash covers: the entries on
            // either side of it must agree with their own (hashed) time, or an edited column
            // could move an entry out of the slice unnoticed. (Checked again for each exported
            // entry below.)
            for neighbour in [lo - 1, hi + 1] where neighbour >= 1 {
                guard let row = try Row.fetchOne(db, sql: "SELECT seq, time, entry, prev_hash, hash FROM audit WHERE seq = ?", arguments: [neighbour]) else { continue }
                let e = try StoredEntry(row)
                guard case .int(e.time)? = (try? JSONValue.parse(e.text))?["time"] else {
                    throw VaultError(.integrity, "audit entry \(neighbour): its time column differs from the entry's time: the file was edited; nothing was exported (run audit verify)")
                }
            }
            var renderer = AuditExportRenderer(format: format, first: lo, previous: previous, checkpointBefore: lastCheckpoint, checkpoints: checkpoints,
                                               nested: options.nested, subject: options.subject.map(AuditLog.hex))
            do {
                let rows = try Row.fetchCursor(db, sql: "SELECT seq, time, entry, prev_hash, hash FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", arguments: [lo, hi])
                while let row = try rows.next() {
                    let stored = try StoredEntry(row)
                    try renderer.add(seq: stored.seq, time: stored.time, text: stored.text, previous: stored.previous, hash: stored.hash)
                    if let chunk = renderer.takeChunk() { try out.write(chunk) }
                }
                // The slice must end under a checkpoint whose signature verifies: follow the chain
                // to the first checkpoint at or after its last entry.
                if renderer.needsCover {
                    renderer.beginCover()
                    if !renderer.isCovered {
                        let tail = try Row.fetchCursor(db, sql: """
                            SELECT a.seq, a.time, a.entry, a.prev_hash, a.hash, c.seq AS cseq, c.hash AS chash, c.signature, c.checkpoint_time, c.prev_seq, c.prev_digest
                            FROM audit a LEFT JOIN audit_checkpoints c ON c.seq = a.seq WHERE a.seq >= ? ORDER BY a.seq
                            """, arguments: [max(renderer.nextSequence, 1)])
                        while !renderer.isCovered, let row = try tail.next() {
                            let stored = try StoredEntry(row)
                            try renderer.follow(seq: stored.seq, text: stored.text, previous: stored.previous, hash: stored.hash)
                            if !row.auditIsNull("cseq") { try renderer.cover(by: try Self.checkpoint(row, seqColumn: "cseq", hashColumn: "chash")) }
                        }
                    }
                    try renderer.checkCovered(publicKey: publicKey)
                }
            } catch let refusal as AuditExportRefusal {
                throw VaultError(.integrity, refusal.message)
            }
            try out.write(try renderer.finish(signer: signer))
            return AuditExportResult(entries: renderer.rendered, head: AuditLog.hex(renderer.head), lastSequence: renderer.last)
        }
    }

    /// Counts of the entries between `since` and `until` (``AuditReport``), read with a cursor
    /// (the log can hold millions of entries: nothing but the counts is kept in memory).
    public func auditReport(sinceMillis: Int64?, untilMillis: Int64?) throws -> AuditReport {
        try pool.read { db in
            var builder = AuditReport.Builder(sinceMillis: sinceMillis, untilMillis: untilMillis)
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, entry FROM audit WHERE time BETWEEN ? AND ? ORDER BY seq",
                                           arguments: [sinceMillis ?? Int64.min, untilMillis ?? Int64.max])
            while let row = try rows.next() {
                guard let seq = row.auditInt("seq"), let text = row.auditText("entry") else {
                    throw VaultError(.integrity, "an audit entry has a column of the wrong type: the file was edited (run audit verify)")
                }
                try builder.add(seq: seq, text: text)
            }
            return builder.report
        }
    }

    package static func csvRow(_ v: JSONValue) -> String {
        AuditLog.csvColumns.map { key -> String in
            let cell: String
            switch v[key] {
            case nil, .null?: cell = ""
            case .string(let s)?: cell = s
            case .int(let i)?: cell = String(i)
            case .array(let items)?: cell = items.map { if case .string(let s) = $0 { s } else { $0.canonicalString() } }.joined(separator: ";")
            case let other?: cell = other.canonicalString()
            }
            // Formula-safe (a leading = + - @ is neutralised) and control characters escaped.
            return CSVCell.field(cell)
        }.joined(separator: ",")
    }

    /// Verifies the whole log in the store: every entry's hash, every link, every checkpoint
    /// signature and its link to the checkpoint before, and (with `expectHead`: a head hash or
    /// a file of published heads) that what an auditor saw earlier is still in the log.
    public func verifyAudit(expectHead: String?) throws -> AuditVerification {
        let publicKey = auditPublicKey
        var expected: AuditExpectation?
        if let expectHead {
            do { expected = try AuditExpectation.parse(expectHead, publicKey: publicKey) } catch {
                throw VaultError(.usage, error.description)
            }
        }
        return try pool.read { db in
            // After an archive the chain starts from the newest signed anchor (every anchor
            // verified and linked first); without one, from the first entry.
            var anchor: AuditArchiveAnchor?
            var anchorFailure: AuditArchiveAnchor.AnchorFailure?
            var anchors: [AuditArchiveAnchor] = []
            do {
                anchors = try archiveAnchors(db)
                switch AuditArchiveAnchor.verifyChain(anchors, publicKey: publicKey) {
                case .success(let a): anchor = a
                case .failure(let f): anchorFailure = f
                }
            } catch let e as VaultError {
                anchorFailure = .init(sequence: 1, reason: e.message)
            }
            var v = anchor.map { ChainVerifier(publicKey: publicKey, anchor: $0, expecting: expected) }
                ?? ChainVerifier(publicKey: publicKey, startingAfter: AuditLog.genesis, sequence: 0, expecting: expected, wholeLog: true)
            v.archiveRanges = Set(anchors.map { [$0.firstSequence, $0.lastSequence] })
            func result() -> AuditVerification {
                AuditVerification(ok: v.failure == nil, entries: v.entries, firstBad: v.failure?.sequence,
                                  reason: v.failure?.reason, head: AuditLog.hex(v.head), archivedThrough: anchor?.lastSequence)
            }
            if let anchorFailure {
                v.fail(anchorFailure.sequence, anchorFailure.reason)
                return result()
            }
            if let gap = Self.archiveGap(firstLive: try Int64.fetchOne(db, sql: "SELECT min(seq) FROM audit"), anchor: anchor) {
                v.fail(gap.sequence, gap.reason)
                return result()
            }
            var checkpoints: [Int64: AuditCheckpoint] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT \(Self.checkpointColumns) FROM audit_checkpoints WHERE seq > ? ORDER BY seq",
                                        arguments: [anchor?.lastSequence ?? Int64.min]) {
                do {
                    let cp = try Self.checkpoint(row)
                    guard cp.sequence >= 1 else {
                        v.fail(1, "a checkpoint for entry \(cp.sequence), which no entry can have: it was inserted")
                        return result()
                    }
                    checkpoints[cp.sequence] = cp
                } catch let e as VaultError {
                    v.fail(max(1, row.auditInt("seq") ?? 1), e.message)
                    return result()
                }
            }
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, time, entry, prev_hash, hash, subject FROM audit ORDER BY seq")
            while let row = try rows.next() {
                let stored: StoredEntry
                do { stored = try StoredEntry(row) } catch let e as VaultError {
                    v.fail(max(1, row.auditInt("seq") ?? 1), e.message)
                    break
                }
                let seq = stored.seq
                let text = stored.text
                guard let entry = try? JSONValue.parse(text), case .int(let stated)? = entry["metadata.sequence"] else {
                    v.fail(seq, "entry \(seq) is not a valid audit entry: it was modified")
                    break
                }
                if stated != seq {
                    v.fail(min(seq, stated), "row \(seq) holds entry \(stated): entries were reordered or moved")
                    break
                }
                // The time column (which selects export slices) must agree with the entry.
                guard case .int(stored.time)? = entry["time"] else {
                    v.fail(seq, "the time column of entry \(seq) disagrees with the entry: it was altered")
                    break
                }
                // The subject column (an index for access exports) must agree with the entry.
                if !row.auditIsNull("subject") && row.auditBlob("subject") == nil {
                    v.fail(seq, "the subject index of entry \(seq) is not a pseudonym: it was altered")
                    break
                }
                let column = row.auditBlob("subject").map { AuditLog.hex($0) }
                let statedSubject = entry["unmapped.subject"].flatMap { if case .string(let s) = $0 { s } else { nil } }
                if column != statedSubject {
                    v.fail(seq, "the subject index of entry \(seq) disagrees with the entry: it was altered")
                    break
                }
                let hash = stored.hash
                let cp = checkpoints[seq]
                if let cp, cp.hash != hash {
                    v.fail(seq, "checkpoint \(seq) records another head than the entry's hash: the entry was rewritten")
                    break
                }
                if !v.add(entry: entry, statedPrevious: stored.previous, statedHash: hash, checkpoint: cp) { break }
            }
            let last = v.last ?? 0
            if v.failure == nil, let beyond = checkpoints.keys.filter({ $0 > last }).min() {
                v.fail(last + 1, "a signed checkpoint exists for entry \(beyond) but the log ends at \(last): entries were deleted from the tail")
            }
            if v.failure == nil, last > v.lastCheckpoint {
                v.fail(v.lastCheckpoint + 1, "entries after \(v.lastCheckpoint) are not covered by a signed checkpoint: they were inserted or their checkpoint deleted")
            }
            v.finishExpectation()
            return result()
        }
    }
}

extension Row {
    /// A column's value without GRDB's trapping conversions: the audit tables are read back
    /// from a file an attacker may have edited, and a wrong type must be an integrity error.
    @inline(never) func auditValue(_ column: String) -> DatabaseValue { self[column] ?? .null }
    @inline(never) func auditIsNull(_ column: String) -> Bool { auditValue(column).isNull }
    @inline(never) func auditInt(_ column: String) -> Int64? {
        if case .int64(let i) = auditValue(column).storage { return i }
        return nil
    }
    @inline(never) func auditBlob(_ column: String) -> [UInt8]? {
        if case .blob(let d) = auditValue(column).storage { return [UInt8](d) }
        return nil
    }
    @inline(never) func auditText(_ column: String) -> String? {
        if case .string(let s) = auditValue(column).storage { return s }
        return nil
    }
}

/// Where an audit export goes: a new output file, or memory.
public protocol AuditExportSink: AnyObject {
    func write(_ text: String) throws
}

extension OutputFile: AuditExportSink {
    /// Runs `write` into this file (every engine's export to a file): committed on success,
    /// discarded (only what it created is removed) on any failure.
    package func committing<R>(_ write: (OutputFile) throws -> R) throws -> R {
        do {
            let r = try write(self)
            try commit()
            return r
        } catch {
            discard()
            throw error
        }
    }
}

/// An export held in memory.
package final class MemoryExportSink: AuditExportSink {
    package private(set) var bytes: [UInt8] = []
    package init() {}
    package func write(_ text: String) throws { bytes.append(contentsOf: text.utf8) }

    /// Every engine's export to memory: what `write` wrote to a new sink, with its result.
    package static func export(_ write: (MemoryExportSink) throws -> (entries: Int, head: String)) throws -> (bytes: [UInt8], entries: Int, head: String) {
        let sink = MemoryExportSink()
        let r = try write(sink)
        return (sink.bytes, r.entries, r.head)
    }
}
