import Foundation
import PostgresNIO
public import VaultAudit
import VaultCrypto
public import VaultStore

extension PostgresEngine {
    /// Migration 13: the anchors of archived prefixes (``AuditArchiveAnchor``), as on SQLite
    /// (`v13-audit-archive`). The owner inserts them (`audit archive` runs as the owner); the
    /// service role may only read them. The audit tables' delete wall now lets through only
    /// rows an anchor covers (at or before its last entry); updates, other deletes and
    /// TRUNCATE stay refused for everyone, and the service role still holds no DELETE on them.
    static let auditArchiveMigration = PostgresMigration(version: 13, name: "audit-archive", statements: [
        """
        CREATE TABLE profilevault.audit_archive(
            last_seq bigint PRIMARY KEY CHECK (last_seq >= 1), first_seq bigint NOT NULL CHECK (first_seq >= 1),
            previous bytea NOT NULL CHECK (length(previous) = 32), hash bytea NOT NULL CHECK (length(hash) = 32),
            cp_signature bytea NOT NULL, cp_time bigint, cp_prev_seq bigint, cp_prev_digest bytea,
            time bigint NOT NULL, prev_anchor bytea NOT NULL CHECK (length(prev_anchor) = 32), signature bytea NOT NULL)
        """,
        """
        CREATE TRIGGER audit_archive_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_archive
            FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
        """,
        """
        CREATE TRIGGER audit_archive_no_truncate BEFORE TRUNCATE ON profilevault.audit_archive
            FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
        """,
        """
        CREATE FUNCTION profilevault.refuse_unarchived_change() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND OLD.seq <= (SELECT coalesce(max(last_seq), 0) FROM profilevault.audit_archive) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'the audit log is append-only';
        END $$
        """,
        "REVOKE ALL ON FUNCTION profilevault.refuse_unarchived_change() FROM PUBLIC",
        "DROP TRIGGER audit_log_append_only ON profilevault.audit_log",
        """
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_log
            FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_unarchived_change()
        """,
        "DROP TRIGGER audit_checkpoints_append_only ON profilevault.audit_checkpoints",
        """
        CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_checkpoints
            FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_unarchived_change()
        """,
    ])

    static let anchorColumns = "first_seq, previous, last_seq, hash, cp_signature, cp_time, cp_prev_seq, cp_prev_digest, time, prev_anchor, signature"

    /// Every archive anchor, oldest first (unverified: see ``AuditArchiveAnchor/verifyChain(_:publicKey:)``).
    func archiveAnchors(_ conn: PostgresConnection) async throws -> [AuditArchiveAnchor] {
        try await rows(conn, PostgresQuery(unsafeSQL: "SELECT \(Self.anchorColumns) FROM profilevault.audit_archive ORDER BY last_seq")).map { row in
            let (first, previous, last, hash, sig, cpTime, cpPrevSeq, cpPrevDigest, time, link, signature) =
                try row.decode((Int64, ByteBuffer, Int64, ByteBuffer, ByteBuffer, Int64?, Int64?, ByteBuffer?, Int64, ByteBuffer, ByteBuffer).self)
            let cp = try Self.checkpoint(sequence: last, hash: hash.bytes, signature: sig.bytes, time: cpTime, prevSeq: cpPrevSeq, prevDigest: cpPrevDigest?.bytes)
            return AuditArchiveAnchor(firstSequence: first, previous: previous.bytes, lastSequence: last, hash: hash.bytes, checkpoint: cp,
                                      timeMillis: time, previousAnchor: link.bytes, signature: signature.bytes)
        }
    }
}

extension PostgresProfiles {
    /// `audit archive` on PostgreSQL: the SQLite store's ``ProfileStore/archiveAudit(before:to:audit:)``
    /// (same slice, same file, same anchor, same entry). Only the role that owns the schema may
    /// record an anchor and delete archived rows: run as the service role it is refused
    /// (configuration, 78) before anything is written.
    public func archiveAudit(before: Int64, to file: OutputFile, audit: AuditContext) throws -> AuditArchiveResult {
        let publicKey = auditPublicKey
        let plan: AuditArchivePlan
        do {
            plan = try Self.wait("planning the audit archive") { [engine] in
                try await engine.transaction("planning the audit archive", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
                    guard let may = try await engine.rows(conn, """
                        SELECT has_table_privilege('profilevault.audit_archive', 'INSERT') AND has_table_privilege('profilevault.audit_log', 'DELETE')
                        """).first, try may.decode(Bool.self) else {
                        throw PostgresStoreError(.configuration, "audit archive on PostgreSQL runs as the role that owns the schema (\(engine.location.description) connects as \(engine.location.user), which may not record an archive anchor nor delete audit entries: the service role never may); run it with the owner's location, as init")
                    }
                    let anchor: AuditArchiveAnchor?
                    switch AuditArchiveAnchor.verifyChain(try await engine.archiveAnchors(conn), publicKey: publicKey) {
                    case .success(let a): anchor = a
                    case .failure(let f): throw PostgresStoreError(.integrity, "\(f.reason); nothing was archived (run audit verify)")
                    }
                    let first = (anchor?.lastSequence ?? 0) + 1
                    let firstRow = try await engine.rows(conn, "SELECT seq, time FROM profilevault.audit_log ORDER BY seq LIMIT 1").first
                    let firstLive = try firstRow.map { try $0.decode((Int64, Int64).self) }
                    if let live = firstLive, let gap = ProfileStore.archiveGap(firstLive: live.0, anchor: anchor) {
                        throw PostgresStoreError(.integrity, "\(gap.reason); nothing was archived (run audit verify)")
                    }
                    let stop = try await engine.rows(conn, "SELECT min(seq) FROM profilevault.audit_log WHERE seq >= \(first) AND time >= \(before)")
                        .first?.decode(Int64?.self) ?? nil
                    let candidate = try await engine.rows(conn, "SELECT max(seq) FROM profilevault.audit_checkpoints WHERE seq >= \(first) AND seq < \(stop ?? Int64.max)")
                        .first?.decode(Int64?.self) ?? nil
                    if let refusal = AuditArchivePlan.refusal(before: before, firstLive: firstLive.map { (seq: $0.0, time: $0.1) }, candidate: candidate, anchor: anchor) {
                        throw PostgresStoreError(.invalidInput, refusal.message)
                    }
                    guard let last = candidate else { throw PostgresStoreError(.internalFailure, "no archive candidate") }
                    return AuditArchivePlan(first: first, last: last, anchor: anchor)
                }
            }
        } catch {
            file.discard()
            throw error
        }
        let head = try writeArchiveSlice(plan, to: file)
        let path = file.path
        let record = AuditArchivePlan.record(audit, first: plan.first, last: plan.last, head: head, before: before)
        return try Self.wait("archiving the audit log") { [engine] in
            let (result, cp) = try await engine.transaction("archiving the audit log") { conn -> (AuditArchiveResult, AuditCheckpoint?) in
                // The head lock first: appends and other archives wait here (every node's).
                let appended = try await engine.appendLocked(conn, [record])
                guard try await engine.archiveAnchors(conn).last == plan.anchor else {
                    throw PostgresStoreError(.integrity, "another audit archive ran meanwhile; nothing was archived by this one (\(path) holds entries archived already: remove it)")
                }
                guard let row = try await engine.rows(conn, """
                    SELECT c.hash, c.signature, c.checkpoint_time, c.prev_seq, c.prev_digest, a.prev_hash
                    FROM profilevault.audit_checkpoints c, profilevault.audit_log a WHERE c.seq = \(plan.last) AND a.seq = \(plan.first)
                    """).first else {
                    throw PostgresStoreError(.integrity, "the archived entries left the store while the archive was written; nothing was archived (run audit verify)")
                }
                let (cpHash, cpSig, cpTime, cpPrevSeq, cpPrevDigest, previous) = try row.decode((ByteBuffer, ByteBuffer, Int64?, Int64?, ByteBuffer?, ByteBuffer).self)
                let cp = try PostgresEngine.checkpoint(sequence: plan.last, hash: cpHash.bytes, signature: cpSig.bytes, time: cpTime, prevSeq: cpPrevSeq, prevDigest: cpPrevDigest?.bytes)
                guard cp.hash == head, cp.isValid(publicKey: publicKey) else {
                    throw PostgresStoreError(.integrity, "the checkpoint at entry \(plan.last) no longer matches the archive written; nothing was archived (run audit verify)")
                }
                let anchor = try AuditArchiveAnchor.sign(first: plan.first, previousHash: previous.bytes, checkpoint: cp, timeMillis: AuditLog.nowMillis,
                                                         after: plan.anchor, key: engine.auditKey)
                try await engine.exec(conn, """
                    INSERT INTO profilevault.audit_archive(first_seq, previous, last_seq, hash, cp_signature, cp_time, cp_prev_seq, cp_prev_digest, time, prev_anchor, signature)
                    VALUES (\(anchor.firstSequence), \(bytea(anchor.previous)), \(anchor.lastSequence), \(bytea(anchor.hash)), \(bytea(cp.signature)),
                            \(cp.timeMillis), \(cp.previousSequence), \(cp.previousDigest.map(bytea)), \(anchor.timeMillis), \(bytea(anchor.previousAnchor)),
                            \(bytea(anchor.signature)))
                    """)
                try await engine.exec(conn, "DELETE FROM profilevault.audit_checkpoints WHERE seq <= \(plan.last)")
                try await engine.exec(conn, "DELETE FROM profilevault.audit_log WHERE seq <= \(plan.last)")
                return (AuditArchiveResult(firstSequence: plan.first, lastSequence: plan.last, entries: Int(plan.last - plan.first + 1), head: AuditLog.hex(head),
                                           recordSequence: appended.sequence), appended.checkpoint)
            }
            if let cp { engine.trustedCheckpoint.withLock { $0 = cp.digest } }
            return result
        }
    }

    /// The newest archive anchor's last entry (nil: nothing archived).
    public func archivedThrough() throws -> Int64? {
        try Self.wait("reading the audit archive anchors") { [engine] in
            try await engine.transaction("reading the audit archive anchors") { conn in
                try await engine.rows(conn, "SELECT max(last_seq) FROM profilevault.audit_archive").first?.decode(Int64?.self) ?? nil
            }
        }
    }
}
