import Foundation
public import GRDB
public import VaultAudit
import VaultCrypto

/// What `audit archive` moved out of the store.
public struct AuditArchiveResult: Sendable, Equatable {
    /// The archived slice: its first and last sequence numbers and the number of entries.
    public var firstSequence: Int64
    public var lastSequence: Int64
    public var entries: Int
    /// The hash of the last archived entry (the archive's signed head), hex.
    public var head: String
    /// The sequence number of the `audit.archive` entry recording it in the live chain.
    public var recordSequence: Int64
    public init(firstSequence: Int64, lastSequence: Int64, entries: Int, head: String, recordSequence: Int64) {
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
        self.entries = entries
        self.head = head
        self.recordSequence = recordSequence
    }
}

extension StorageEngine {
    /// Writes the plan's entries (with their checkpoints) to `file` as a nested JSON Lines
    /// export, checks that exactly that slice was written, commits the file (fsync, rename) and
    /// returns the export's head hash: the step both engines take before their transaction
    /// deletes the slice. `file` is discarded on any failure.
    package func writeArchiveSlice(_ plan: AuditArchivePlan, to file: OutputFile) throws -> [UInt8] {
        let written: AuditExportResult
        do {
            written = try writeAuditExport(AuditExportOptions(format: .jsonl, afterSequence: plan.first - 1, nested: true, throughSequence: plan.last), to: file)
            guard written.entries == Int(plan.last - plan.first + 1), written.lastSequence == plan.last else {
                throw VaultError(.integrity, "the audit log changed while the archive was written (another archive ran?); nothing was archived")
            }
            try file.commit()
        } catch {
            file.discard()
            throw error
        }
        guard let head = AuditLog.unhex(written.head) else { throw VaultError(.internalFailure, "the export's head is not hex") }
        return head
    }
}

/// What an archive covers, chosen from the live chain (shared by the engines).
package struct AuditArchivePlan: Sendable {
    package var first: Int64
    package var last: Int64
    package var anchor: AuditArchiveAnchor?
    package init(first: Int64, last: Int64, anchor: AuditArchiveAnchor?) {
        self.first = first
        self.last = last
        self.anchor = anchor
    }

    /// Why nothing can be archived before `before` (invalid input, 65). `firstLive`: the first
    /// live entry and its time; `candidate`: the newest checkpoint whose entries all lie
    /// before `before` (the slice must end under one: a transaction is never split).
    package static func refusal(before: Int64, firstLive: (seq: Int64, time: Int64)?, candidate: Int64?, anchor: AuditArchiveAnchor?) -> VaultError? {
        let date = AuditLog.isoMillis(before)
        let archived = anchor.map { " (entries up to \($0.lastSequence) are archived already)" } ?? ""
        guard let firstLive else {
            return VaultError(.invalidInput, "nothing to archive: the audit log holds no entry\(archived)")
        }
        guard firstLive.time < before else {
            return VaultError(.invalidInput, "nothing to archive before \(date): the first \(anchor == nil ? "" : "live ")audit entry (\(firstLive.seq)) is from \(AuditLog.isoMillis(firstLive.time))\(archived)")
        }
        guard candidate != nil else {
            return VaultError(.invalidInput, "nothing to archive before \(date): no transaction of the audit log ends under a signed checkpoint before it\(archived)")
        }
        return nil
    }

    /// The `audit.archive` entry: the range, the number of entries and the archive's head.
    package static func record(_ audit: AuditContext, first: Int64, last: Int64, head: [UInt8], before: Int64) -> AuditRecord {
        audit.record("audit.archive", .delete, detail: "entries \(first) to \(last) (before \(AuditLog.isoMillis(before))) moved to an audit archive with head \(AuditLog.hex(head)); the store keeps its signed anchor",
                     counts: [("first_sequence", first), ("last_sequence", last), ("entries", last - first + 1)])
    }
}

extension ProfileStore {
    static func registerAuditArchiveMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v13-audit-archive") { db in
            // The anchors of archived prefixes (AuditArchiveAnchor), append-only. The audit
            // tables' delete triggers now let through only entries and checkpoints an anchor
            // covers (at or before its last entry); everything else stays append-only.
            try db.execute(sql: """
                CREATE TABLE audit_archive(
                    last_seq INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL, previous BLOB NOT NULL, hash BLOB NOT NULL,
                    cp_signature BLOB NOT NULL, cp_time INTEGER, cp_prev_seq INTEGER, cp_prev_digest BLOB,
                    time INTEGER NOT NULL, prev_anchor BLOB NOT NULL, signature BLOB NOT NULL);
                CREATE TRIGGER audit_archive_no_update BEFORE UPDATE ON audit_archive
                    BEGIN SELECT RAISE(ABORT, 'the audit archive anchors are append-only'); END;
                CREATE TRIGGER audit_archive_no_delete BEFORE DELETE ON audit_archive
                    BEGIN SELECT RAISE(ABORT, 'the audit archive anchors are append-only'); END;
                DROP TRIGGER audit_no_delete;
                CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                    WHEN OLD.seq > (SELECT coalesce(max(last_seq), 0) FROM audit_archive)
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                DROP TRIGGER audit_checkpoints_no_delete;
                CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
                    WHEN OLD.seq > (SELECT coalesce(max(last_seq), 0) FROM audit_archive)
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                """)
        }
    }

    static let anchorColumns = "first_seq, previous, last_seq, hash, cp_signature, cp_time, cp_prev_seq, cp_prev_digest, time, prev_anchor, signature"

    /// An anchor row, decoded without trapping (integrity error for a column of the wrong type).
    static func archiveAnchor(_ row: Row) throws -> AuditArchiveAnchor {
        let last = row.auditInt("last_seq") ?? 0
        guard let first = row.auditInt("first_seq"), let previous = row.auditBlob("previous"), let lastSeq = row.auditInt("last_seq"),
              let hash = row.auditBlob("hash"), let time = row.auditInt("time"), let link = row.auditBlob("prev_anchor"),
              let signature = row.auditBlob("signature") else {
            throw VaultError(.integrity, "the audit archive anchor at entry \(last) has a column of the wrong type: the file was edited")
        }
        let cp = try checkpoint(row, seqColumn: "last_seq", hashColumn: "hash", signatureColumn: "cp_signature",
                                chainColumns: ("cp_time", "cp_prev_seq", "cp_prev_digest"))
        return AuditArchiveAnchor(firstSequence: first, previous: previous, lastSequence: lastSeq, hash: hash, checkpoint: cp,
                                  timeMillis: time, previousAnchor: link, signature: signature)
    }

    /// Every archive anchor, oldest first.
    func archiveAnchors(_ db: Database) throws -> [AuditArchiveAnchor] {
        try Row.fetchAll(db, sql: "SELECT \(Self.anchorColumns) FROM audit_archive ORDER BY last_seq").map(Self.archiveAnchor)
    }

    /// The newest anchor (unverified: the verifier and the archive check the chain of them).
    func newestArchiveAnchor(_ db: Database) throws -> AuditArchiveAnchor? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT \(Self.anchorColumns) FROM audit_archive ORDER BY last_seq DESC LIMIT 1")).map(Self.archiveAnchor)
    }

    /// Why the first live entry does not start where the anchors say (nil: it does): after
    /// anchor `S` the live chain starts at `S + 1`, without one at 1. Shared by the engines.
    package static func archiveGap(firstLive: Int64?, anchor: AuditArchiveAnchor?) -> (sequence: Int64, reason: String)? {
        guard let anchor else {
            if let first = firstLive, first > 1 {
                return (1, "entries 1 to \(first - 1) are missing and no signed archive anchor covers them: they were deleted")
            }
            return nil
        }
        let s = anchor.lastSequence
        guard let first = firstLive else {
            return (s + 1, "the audit log holds no entry after its archive anchor (entries up to \(s)), not even the archive's own entry: entries were deleted")
        }
        if first <= s {
            return (first, "entry \(first) lies in the archived range (entries up to \(s)) but is still in the store: it was inserted")
        }
        if first > s + 1 {
            return (s + 1, "entries \(s + 1) to \(first - 1) are missing after the archive anchor (entries up to \(s)): they were deleted")
        }
        return nil
    }

    /// `audit archive`: moves every entry before `before` (unix ms) that ends under a signed
    /// checkpoint (the longest such prefix of the live chain) into `file`, an ordinary signed
    /// export of that slice (``writeAuditExport(_:to:)``: every entry and checkpoint checked),
    /// committed (fsynced) before anything is deleted. Then, in one write transaction, it
    /// checks that the chain still holds that slice under the same newest anchor, appends the
    /// `audit.archive` entry (signed checkpoint and all), records the signed anchor and deletes
    /// the slice's entries and checkpoints. A failure before that transaction commits leaves
    /// the entries in the store (the file, if committed, is a valid export; run again with a
    /// new file). `file` is discarded on a failure before it is committed.
    public func archiveAudit(before: Int64, to file: OutputFile, audit: AuditContext) throws -> AuditArchiveResult {
        let publicKey = auditPublicKey
        let plan: AuditArchivePlan
        do { plan = try archivePlan(before: before, publicKey: publicKey) } catch {
            file.discard()
            throw error
        }
        let head = try writeArchiveSlice(plan, to: file)
        let signer = keys.auditSigning
        return try pool.write { db in
            // The store must still hold exactly the slice written, under the same newest anchor.
            guard try newestArchiveAnchor(db) == plan.anchor else {
                throw VaultError(.integrity, "another audit archive ran meanwhile; nothing was archived by this one (\(file.path) holds entries archived already: remove it)")
            }
            guard let cpRow = try Row.fetchOne(db, sql: "SELECT \(Self.checkpointColumns) FROM audit_checkpoints WHERE seq = ?", arguments: [plan.last]),
                  let firstRow = try Row.fetchOne(db, sql: "SELECT prev_hash FROM audit WHERE seq = ?", arguments: [plan.first]),
                  let previous = firstRow.auditBlob("prev_hash") else {
                throw VaultError(.integrity, "the archived entries left the store while the archive was written; nothing was archived (run audit verify)")
            }
            let cp = try Self.checkpoint(cpRow)
            guard cp.hash == head, cp.isValid(publicKey: publicKey) else {
                throw VaultError(.integrity, "the checkpoint at entry \(plan.last) no longer matches the archive written; nothing was archived (run audit verify)")
            }
            let appended = try appendAudit(db, [AuditArchivePlan.record(audit, first: plan.first, last: plan.last, head: head, before: before)])
            let anchor = try AuditArchiveAnchor.sign(first: plan.first, previousHash: previous, checkpoint: cp, timeMillis: AuditLog.nowMillis,
                                                     after: plan.anchor, key: signer)
            try db.execute(sql: "INSERT INTO audit_archive(\(Self.anchorColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", arguments: [
                anchor.firstSequence, Data(anchor.previous), anchor.lastSequence, Data(anchor.hash), Data(cp.signature),
                cp.timeMillis, cp.previousSequence, cp.previousDigest.map { Data($0) }, anchor.timeMillis, Data(anchor.previousAnchor),
                Data(anchor.signature),
            ])
            try db.execute(sql: "DELETE FROM audit_checkpoints WHERE seq <= ?", arguments: [plan.last])
            try db.execute(sql: "DELETE FROM audit WHERE seq <= ?", arguments: [plan.last])
            return AuditArchiveResult(firstSequence: plan.first, lastSequence: plan.last, entries: Int(plan.last - plan.first + 1), head: AuditLog.hex(head),
                                      recordSequence: appended.sequence)
        }
    }

    /// The slice an archive before `before` covers, from one read snapshot.
    func archivePlan(before: Int64, publicKey: Ed25519PublicKey) throws -> AuditArchivePlan {
        try pool.read { db in
            let anchor: AuditArchiveAnchor?
            switch AuditArchiveAnchor.verifyChain(try archiveAnchors(db), publicKey: publicKey) {
            case .success(let a): anchor = a
            case .failure(let f): throw VaultError(.integrity, "\(f.reason); nothing was archived (run audit verify)")
            }
            let first = (anchor?.lastSequence ?? 0) + 1
            let firstRow = try Row.fetchOne(db, sql: "SELECT seq, time FROM audit ORDER BY seq LIMIT 1")
            let firstLive = firstRow.flatMap { r in r.auditInt("seq").flatMap { s in r.auditInt("time").map { (s, $0) } } }
            if let gap = Self.archiveGap(firstLive: firstLive?.0, anchor: anchor), firstLive != nil {
                throw VaultError(.integrity, "\(gap.reason); nothing was archived (run audit verify)")
            }
            // The slice ends before the first entry at or after `before`, under a checkpoint.
            let stop = try Int64.fetchOne(db, sql: "SELECT min(seq) FROM audit WHERE seq >= ? AND time >= ?", arguments: [first, before])
            let candidate = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit_checkpoints WHERE seq >= ? AND seq < ?",
                                               arguments: [first, stop ?? Int64.max])
            if let refusal = AuditArchivePlan.refusal(before: before, firstLive: firstLive.map { (seq: $0.0, time: $0.1) }, candidate: candidate, anchor: anchor) { throw refusal }
            guard let last = candidate else { throw VaultError(.internalFailure, "no archive candidate") }
            return AuditArchivePlan(first: first, last: last, anchor: anchor)
        }
    }

    /// The newest archive anchor's last entry (nil: nothing archived); read by the reports
    /// that say older entries are in an archive.
    public func archivedThrough() throws -> Int64? {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT max(last_seq) FROM audit_archive") }
    }
}
