import Foundation
import Logging
import PostgresNIO
public import VaultAudit
public import VaultCrypto
public import VaultPolicy
public import VaultStore
import VaultValues

/// What `profilectl migrate` copied, and what the copy's chain ends with.
public struct StoreMigrationReport: Sendable, Equatable {
    public var subjects: Int64
    public var events: Int64
    public var consentEntries: Int64
    public var consentStates: Int64
    public var suppressed: Int64
    public var budgetRows: Int64
    public var policies: Int64
    /// Audit entries copied from the source (its whole chain, as is).
    public var auditEntries: Int64
    /// The sequence number and hash of the migration's own entry, the new head.
    public var headSequence: Int64
    public var head: String
}

extension PostgresStore {
    /// Copies the SQLite store `source` into a new store at `url` (created here as the role the
    /// URL names, its owner), in ONE PostgreSQL transaction: nothing is left behind when
    /// anything fails. Ciphertexts, wrapped data keys, pseudonyms and blind-index entries are
    /// copied as stored (nothing is decrypted; the keyring is the source's), so are consent,
    /// suppression list (with its receipts), the request register (sealed columns as stored),
    /// budget ledger and policy ledger, and the whole audit chain entry for
    /// entry with its signed checkpoints; the chain then continues with a `store.migrate`
    /// entry. Subjects keep their row ids; the store keeps its id (model artifacts stay valid)
    /// and the time its budget periods count from.
    ///
    /// The target must hold no store yet, or an empty one (no subject, no audit entry, no
    /// policy): else a configuration error and nothing is written. Before the commit the copy
    /// is verified: the source's chain entry by entry as it is copied (``CopiedChainCheck``:
    /// hashes, links, every checkpoint's signature with the keyring's signing key), then, read
    /// back in the transaction, counts table by table and a digest of every subject's stored row
    /// computed on both sides. A source that fails any check, or holds a row PostgreSQL's
    /// constraints refuse, is an integrity error and nothing is committed. After the commit the
    /// whole chain is verified once more as a node will, ending at the migration entry.
    public static func migrate(from source: ProfileStore, to url: String, keyring: Keyring, schema: Schema,
                               serviceRole: String? = nil, audit: AuditContext, batch: Int = 2_048,
                               environment: [String: String]? = nil) throws -> StoreMigrationReport {
        let (location, password) = try parse(url, environment: environment, option: "--to")
        let place = location.description
        let batch = min(max(batch, 1), PostgresProfiles.statementRows)
        // The source's identity version signs the chain on both sides.
        let sourceMeta = try source.readSnapshot { try $0.meta }
        guard let identityText = sourceMeta["identity_key_version"], let identity = UInt32(identityText) else {
            throw VaultError(.integrity, "the source store records no identity key version: the file was altered")
        }
        let signing: Ed25519PrivateKey
        do { signing = try Ed25519PrivateKey(seed: keyring.derive(.auditSigning, version: identity)) } catch {
            throw VaultError(.configuration, "keyring \(keyring.path ?? "?"): cannot derive the audit signing key of version \(identity)")
        }
        let options = PostgresEngine.InitOptions(serviceRole: serviceRole ?? "profilevault_service",
                                                 schemaVersion: sourceMeta["schema_version"] ?? String(schema.version),
                                                 policyVersion: sourceMeta["policy_version"])
        let owner = try PostgresEngine(location: location, password: password, auditSigningKey: signing, maximumConnections: 2)
        defer { try? PostgresProfiles.wait("closing the connection pool") { await owner.close() } }
        let target: PostgresProfiles = try PostgresProfiles.wait("creating the store at \(place)") {
            try await owner.probe()
            try await PostgresProfiles.create(owner: owner, schema: schema, keyring: keyring, options: options)
            return try await PostgresProfiles.open(engine: owner, schema: schema, keyring: keyring)
        }
        let conn = try PostgresProfiles.wait("connecting to \(place)") { try await owner.connectDirect() }
        defer { try? PostgresProfiles.wait("closing the migration connection") { try await conn.close() } }
        // A row PostgreSQL's types or constraints refuse (a text holding U+0000, a negative
        // budget, an event of a subject that is not there, a pseudonym twice, ...) came from
        // the source: an integrity error (the file was altered), not a server failure.
        func run(_ what: String, _ body: @escaping @Sendable () async throws -> Void) throws {
            try PostgresProfiles.wait(what) {
                do { try await body() } catch {
                    let e = PostgresStoreError.wrap(error, what)
                    if let state = e.sqlState, state.hasPrefix("22") || state.hasPrefix("23") {
                        throw PostgresStoreError(.integrity, "\(e.message): the source holds a row PostgreSQL refuses, so the file was altered; nothing was copied")
                    }
                    throw e
                }
            }
        }
        var report = StoreMigrationReport(subjects: 0, events: 0, consentEntries: 0, consentStates: 0, suppressed: 0, budgetRows: 0,
                                          policies: 0, auditEntries: 0, headSequence: 0, head: "")
        var sourceDigest = SubjectDigest()
        var sourceCounts: [String: Int64] = [:]
        var committed = false
        try run("starting the migration") {
            try await owner.exec(conn, "BEGIN ISOLATION LEVEL READ COMMITTED")
            try await owner.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresEngine.lockNamespaceMigrations), 0)")
            try await owner.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresProfiles.lockNamespaceSubjects), 0)")
            // The head row, locked: no node appends while the chain is being copied.
            guard let head = try await owner.rows(conn, "SELECT seq FROM profilevault.audit_head WHERE id = 1 FOR UPDATE").first else {
                throw PostgresStoreError(.integrity, "\(place): the audit head row is missing: the database was edited")
            }
            let empty = try await owner.rows(conn, """
                SELECT (SELECT count(*) FROM profilevault.subjects) + (SELECT count(*) FROM profilevault.policy_history)
                     + (SELECT count(*) FROM profilevault.suppressed) + (SELECT count(*) FROM profilevault.dp_budget)
                     + (SELECT count(*) FROM profilevault.requests)
                """).first?.decode(Int64.self) ?? 1
            guard try head.decode(Int64.self) == 0, empty == 0 else {
                throw PostgresStoreError(.configuration, "\(place) already holds a store (subjects, policies, budget or audit entries): migrate only into a new database")
            }
        }
        do {
            try source.readSnapshot { r in
                let meta = try r.meta
                for t in ["subjects", "events", "consent", "consent_state", "suppressed", "budget", "policy_history", "audit", "audit_checkpoints"] {
                    sourceCounts[t] = try r.count(t)
                }
                // The store's identity: its id (model artifacts name it), when its budget
                // periods start, the key version that derives its pseudonyms and signing key.
                // The id and the period origin as the SQLite store reads them, present or not:
                // a store without `store_id` MACs its artifacts under "" and one without a
                // numeric `created_at` counts its periods from 0 (DPSource). The target's own
                // (made by init just now) would shift every budget window and orphan the
                // source's artifacts.
                var carriedPairs: [(String, String)] = [("identity_key_version", identityText),
                                                        ("store_id", meta["store_id"] ?? ""),
                                                        ("created_at", String(Int64(meta["created_at"] ?? "0") ?? 0))]
                for k in ["schema_version", "policy_version"] { if let v = meta[k] { carriedPairs.append((k, v)) } }
                let carried = carriedPairs
                let keyVersions = try r.keyVersions()
                try run("copying the store's metadata and key versions") {
                    for (k, v) in carried {
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.meta(key, value) VALUES (\(k), \(v)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                            """)
                    }
                    for kv in keyVersions {
                        let stored = try await owner.rows(conn, "SELECT key_check FROM profilevault.key_versions WHERE version = \(Int64(kv.version))")
                        if let row = stored.first {
                            guard constantTimeEqual(try row.decode(ByteBuffer.self).bytes, kv.keyCheck) else {
                                throw PostgresStoreError(.integrity, "the keyring does not match the source store: key version \(kv.version) fails its key check")
                            }
                            // A version is only ever added or retired (migration 5's trigger):
                            // the source's retirements carry over, its other columns stay the target's.
                            if kv.retired {
                                try await owner.exec(conn, "UPDATE profilevault.key_versions SET retired = true WHERE version = \(Int64(kv.version)) AND NOT retired")
                            }
                        } else {
                            try await owner.exec(conn, """
                                INSERT INTO profilevault.key_versions(version, key_check, added_at, retired)
                                VALUES (\(Int64(kv.version)), \(bytea(kv.keyCheck)), \(kv.addedAt), \(kv.retired))
                                """)
                        }
                    }
                }
                try r.subjects(batch: batch) { chunk in
                    // SQLite assigns row ids from 1 up; a copied id near the top of bigint
                    // would leave the identity sequence nothing to give the next subject (every
                    // later ingest of a new customer would fail), so such an id is damage.
                    for s in chunk where !(1...Self.largestCopiedSubjectID).contains(s.id) {
                        throw VaultError(.integrity, "the source's subject row \(s.id) has an id SQLite never assigns (1 to 2^62): the file was altered; nothing was copied")
                    }
                    for s in chunk { sourceDigest.add(s) }
                    report.subjects += Int64(chunk.count)
                    // As ingest does: a statement also stops at `statementBytes` of bound values
                    // (PII fields of up to 64 KiB each, 2,048 subjects a read, could pass
                    // PostgreSQL's 1 GB message limit).
                    var start = 0
                    while start < chunk.count {
                        var end = start, bytes = 0
                        while end < chunk.count, end == start || bytes + chunk[end].sealed.boundBytes <= PostgresProfiles.statementBytes {
                            bytes += chunk[end].sealed.boundBytes
                            end += 1
                        }
                        let part = Array(chunk[start..<end])
                        start = end
                        let ids = part.map(\.id)
                        try run("copying subjects") {
                            let pseudonyms = part.map { bytea($0.sealed.pseudonym) }
                            let versions = part.map { Int64($0.sealed.kekVersion) }
                            let wrapped = part.map { bytea($0.sealed.wrappedDEK) }
                            let created = part.map(\.createdAt), updated = part.map(\.updatedAt), last = part.map(\.lastActivity)
                            // Ingest runs (ids from 1; 0 stands for none) and record digests (empty: none).
                            let createdBy = part.map { $0.createdBatch ?? 0 }, updatedBy = part.map { $0.updatedBatch ?? 0 }
                            let digests = part.map { bytea($0.sealed.digest) }
                            try await owner.exec(conn, """
                                INSERT INTO profilevault.subjects(id, pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity,
                                                                  created_batch, updated_batch, record_digest)
                                OVERRIDING SYSTEM VALUE
                                SELECT i, p, k, w, c, u, l, NULLIF(cb, 0), NULLIF(ub, 0), NULLIF(d, ''::bytea)
                                FROM unnest(\(ids)::bigint[], \(pseudonyms)::bytea[], \(versions)::bigint[], \(wrapped)::bytea[],
                                            \(created)::bigint[], \(updated)::bigint[], \(last)::bigint[], \(createdBy)::bigint[],
                                            \(updatedBy)::bigint[], \(digests)::bytea[]) AS t(i, p, k, w, c, u, l, cb, ub, d)
                                """)
                            let packed = try PackedProfiles(part.map(\.sealed), piiWidth: target.piiColumns.valueColumns.count,
                                                            attributeCount: target.schema.attributeFields.count)
                            try await target.writePIIAndAttributes(conn, packed, 0..<packed.count, subjectIDs: ids, allNew: false)
                        }
                    }
                }
                // The ingest runs, ids kept (subjects name them).
                let batches = try r.ingestBatches()
                try run("copying the ingest runs") {
                    for b in batches where b.id >= 1 {
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.ingest_batches(id, kind, time, source, actor, inserted, updated, unchanged, rejected)
                            OVERRIDING SYSTEM VALUE
                            VALUES (\(b.id), \(b.kind), \(b.time), \(b.source), \(b.actor), \(b.inserted), \(b.updated), \(b.unchanged), \(b.rejected))
                            """)
                    }
                    try await owner.exec(conn, """
                        SELECT setval(pg_get_serial_sequence('profilevault.ingest_batches', 'id'),
                                      greatest(1, (SELECT coalesce(max(id), 0) FROM profilevault.ingest_batches)),
                                      (SELECT count(*) > 0 FROM profilevault.ingest_batches))
                        """)
                }
                try r.events(batch: batch) { chunk in
                    report.events += Int64(chunk.count)
                    try run("copying events") {
                        let hashes = chunk.map { bytea(SHA256.hash(Array($0.item.utf8))) }
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.events(subject_id, kind, item, item_hash, value, time)
                            SELECT s, k, i, h, v, t
                            FROM unnest(\(chunk.map(\.subjectID))::bigint[], \(chunk.map(\.kind))::text[], \(chunk.map(\.item))::text[],
                                        \(hashes)::bytea[], \(chunk.map(\.value))::float8[], \(chunk.map(\.time))::bigint[])
                                WITH ORDINALITY AS u(s, k, i, h, v, t, n) ORDER BY n
                            """)
                    }
                }
                let consent = try r.consent(), states = try r.consentState(), suppressed = try r.suppressed()
                let restrictions = try r.restrictions()
                guard Int64(restrictions.count) == (try r.count("restriction")) else {
                    throw VaultError(.integrity, "the source's restriction table could not be read in order: the file was altered; nothing was copied")
                }
                let budget = try r.budget(), policies = try r.policyHistory(), requests = try r.requests()
                guard try r.count("requests") == Int64(requests.count) else {
                    throw VaultError(.integrity, "the source's requests table could not be read in full: the file was altered; nothing was copied")
                }
                report.consentEntries = Int64(consent.count)
                report.consentStates = Int64(states.count)
                report.suppressed = Int64(suppressed.count)
                report.budgetRows = Int64(budget.count)
                report.policies = Int64(policies.count)
                try run("copying consent, the suppression list, the budget ledger and the policy ledger") {
                    for part in stride(from: 0, to: consent.count, by: batch) {
                        // A source travels with whether there is one (any text, U+0001 included,
                        // is a source; no sentinel value stands for "none").
                        let c = consent[part..<min(part + batch, consent.count)]
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.consent(subject_id, purpose, granted, time, actor, source, policy_version)
                            SELECT s, p, g, t, a, CASE WHEN hs THEN src END, v
                            FROM unnest(\(c.map(\.subjectID))::bigint[], \(c.map(\.purpose))::text[], \(c.map(\.granted))::boolean[],
                                        \(c.map(\.time))::bigint[], \(c.map(\.actor))::text[], \(c.map { $0.source ?? "" })::text[],
                                        \(c.map { $0.source != nil })::boolean[],
                                        \(c.map(\.policyVersion))::text[]) WITH ORDINALITY AS u(s, p, g, t, a, src, hs, v, n) ORDER BY n
                            """)
                    }
                    for part in stride(from: 0, to: states.count, by: batch) {
                        let c = states[part..<min(part + batch, states.count)]
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.consent_state(subject_id, purpose, granted, since)
                            SELECT * FROM unnest(\(c.map(\.subjectID))::bigint[], \(c.map(\.purpose))::text[], \(c.map(\.granted))::boolean[],
                                                 \(c.map(\.since))::bigint[])
                            """)
                    }
                    for part in stride(from: 0, to: restrictions.count, by: batch) {
                        let c = restrictions[part..<min(part + batch, restrictions.count)]
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.restriction(subject_id, since)
                            SELECT * FROM unnest(\(c.map(\.subjectID))::bigint[], \(c.map(\.since))::bigint[])
                            """)
                    }
                    for part in stride(from: 0, to: suppressed.count, by: batch) {
                        let c = suppressed[part..<min(part + batch, suppressed.count)]
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.suppressed(pseudonym, erased_at, reason, receipt_seq, receipt)
                            SELECT p, t, r, CASE WHEN hr THEN q END, CASE WHEN hr THEN h END
                            FROM unnest(\(c.map { bytea($0.pseudonym) })::bytea[], \(c.map(\.erasedAt))::bigint[], \(c.map(\.reason))::text[],
                                        \(c.map { $0.receiptSeq ?? 0 })::bigint[], \(c.map { $0.receipt ?? "" })::text[],
                                        \(c.map { $0.receipt != nil && $0.receiptSeq != nil })::boolean[]) AS u(p, t, r, q, h, hr)
                            """)
                    }
                    // The request register: metadata and sealed columns as stored (the register
                    // key is the keyring's, the associated data the request id and pseudonym).
                    for q in requests {
                        let e = q.entry
                        func blob(_ i: Int) -> ByteBuffer? { q.sealed.count > i ? q.sealed[i].map(bytea) : nil }
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.requests(id, type, pseudonym, customer_id_sealed, received, due, extended_due, channel,
                                note_sealed, status, outcome, extend_reason_sealed, deny_reason_sealed, opened_at, opened_by, closed_at, closed_by)
                            VALUES (\(e.id), \(e.type.rawValue), \(bytea(e.pseudonym)), \(blob(0)), \(e.receivedMillis), \(e.dueMillis),
                                    \(e.extendedDueMillis), \(e.channel?.rawValue), \(blob(1)), \(e.status.rawValue), \(e.outcome), \(blob(2)), \(blob(3)),
                                    \(e.openedAtMillis), \(e.openedBy), \(e.closedAtMillis), \(e.closedBy))
                            """)
                    }
                    if let copied = try await owner.rows(conn, "SELECT count(*) FROM profilevault.requests").first,
                       try copied.decode(Int64.self) != Int64(requests.count) {
                        throw PostgresStoreError(.integrity, "the copy's request register differs from the source's; nothing was copied")
                    }
                    for b in budget {
                        // A row charged before the ledger kept period lengths says 0; PostgreSQL
                        // requires a length: such a row counts under the policy's period (1 s
                        // would drop it from every window), so it is refused rather than guessed.
                        guard b.periodSeconds >= 1 else {
                            throw PostgresStoreError(.configuration, "the source's budget ledger has a row for purpose \(b.purpose) without its period length; run profilectl policy apply on the source first (it records the lengths), then migrate")
                        }
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.dp_budget(purpose, period_start, period_seconds, spent_units, delta_spent_units)
                            VALUES (\(b.purpose), \(b.periodStart), \(b.periodSeconds), \(b.spentUnits), \(b.deltaSpentUnits))
                            """)
                    }
                    // No cached release is copied, and the copy starts at a fresh random population
                    // epoch (as a restored store does): the source stays usable after a migration,
                    // and two stores counting their epochs up from one shared value would each hold
                    // releases of another population under the same (keyring, window, epoch), so a
                    // row copied from one to the other would open and be served. Each identical
                    // query pays once more on the copy.
                    try await owner.exec(conn, "UPDATE profilevault.population_epoch SET epoch = \(ReleaseSealing.restoredEpoch()) WHERE id = 1")
                    for p in policies {
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.policy_history(seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes)
                            VALUES (\(p.seq), \(p.version), \(p.sha256), \(p.schemaSHA256), \(p.appliedAt), \(p.actor), \(p.role), \(p.summary), \(p.changes))
                            """)
                    }
                }
                // The chain is verified as it is copied, before anything commits: an entry a
                // file-level attacker rewrote, a checkpoint whose signature fails, a row the
                // target's verifier would refuse stops the copy with nothing written.
                let checkpoints = try r.checkpoints()
                // An archived store: its anchors go with the live chain, which is checked from the newest.
                let anchors = try r.archiveAnchors()
                var chain = try CopiedChainCheck(publicKey: signing.publicKey, checkpoints: checkpoints, anchors: anchors)
                try run("copying the audit archive anchors") {
                    for a in anchors {
                        let cp = a.checkpoint
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.audit_archive(first_seq, previous, last_seq, hash, cp_signature, cp_time, cp_prev_seq, cp_prev_digest, time, prev_anchor, signature)
                            VALUES (\(a.firstSequence), \(bytea(a.previous)), \(a.lastSequence), \(bytea(a.hash)), \(bytea(cp.signature)), \(cp.timeMillis),
                                    \(cp.previousSequence), \(cp.previousDigest.map(bytea)), \(a.timeMillis), \(bytea(a.previousAnchor)), \(bytea(a.signature)))
                            """)
                    }
                }
                var last: SnapshotAuditEntry?
                try r.audit(batch: batch) { chunk in
                    for e in chunk { try chain.add(e) }
                    report.auditEntries += Int64(chunk.count)
                    last = chunk.last
                    try run("copying the audit chain") {
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.audit_log(seq, time, entry, prev_hash, hash, subject)
                            SELECT s, t, e, p, h, NULLIF(sub, ''::bytea)
                            FROM unnest(\(chunk.map(\.seq))::bigint[], \(chunk.map(\.time))::bigint[], \(chunk.map(\.entry))::text[],
                                        \(chunk.map { bytea($0.prevHash) })::bytea[], \(chunk.map { bytea($0.hash) })::bytea[],
                                        \(chunk.map { bytea($0.subject ?? []) })::bytea[]) AS u(s, t, e, p, h, sub)
                            """)
                    }
                }
                try chain.finish()
                let lastEntry = last
                try run("copying the audit checkpoints") {
                    for c in checkpoints {
                        try await owner.exec(conn, """
                            INSERT INTO profilevault.audit_checkpoints(seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest)
                            VALUES (\(c.seq), \(bytea(c.hash)), \(bytea(c.signature)), \(c.time), \(c.checkpointTime), \(c.prevSeq), \(c.prevDigest.map(bytea)))
                            """)
                    }
                    if let last = lastEntry {
                        try await owner.exec(conn, "UPDATE profilevault.audit_head SET seq = \(last.seq), hash = \(bytea(last.hash)), time = \(last.time) WHERE id = 1")
                    }
                    // New rows after the copied ones get ids past them.
                    try await owner.exec(conn, """
                        SELECT setval(pg_get_serial_sequence('profilevault.subjects', 'id'), greatest(1, (SELECT coalesce(max(id), 0) FROM profilevault.subjects)),
                                      (SELECT count(*) > 0 FROM profilevault.subjects))
                        """)
                }
            }
            let counts: [(String, Int64)] = [
                ("subjects", report.subjects), ("events", report.events), ("consent_entries", report.consentEntries),
                ("consent_states", report.consentStates), ("suppressed", report.suppressed), ("budget_rows", report.budgetRows),
                ("policies", report.policies), ("audit_entries", report.auditEntries),
            ]
            for (table, want) in [("subjects", report.subjects), ("events", report.events), ("consent", report.consentEntries),
                                  ("consent_state", report.consentStates), ("suppressed", report.suppressed), ("budget", report.budgetRows),
                                  ("policy_history", report.policies), ("audit", report.auditEntries)] {
                guard sourceCounts[table] == want else {
                    throw VaultError(.integrity, "the source's \(table) table holds \(sourceCounts[table] ?? -1) rows but \(want) could be read in order: the file was altered; nothing was copied")
                }
            }
            // The copy, read back inside the transaction (it commits only if it matches).
            let (reportSoFar, digest) = (report, sourceDigest.value)
            try run("verifying the copy") {
                try await checkCopy(target, conn, report: reportSoFar, sourceDigest: digest, batch: batch)
            }
            let record = audit.record("store.migrate", .create, detail: "copied from a SQLite store; ciphertexts and keys unchanged", counts: counts)
            let (seq, hash) = try PostgresProfiles.wait("recording the migration and committing") { () -> (Int64, [UInt8]) in
                let (seq, hash, _) = try await owner.appendLocked(conn, [record])
                try await owner.exec(conn, "COMMIT")
                return (seq, hash)
            }
            report.headSequence = seq
            report.head = AuditLog.hex(hash)
            committed = true
        } catch {
            if !committed { try? run("rolling back the migration") { try await owner.exec(conn, "ROLLBACK") } }
            throw error
        }
        // The committed chain, as any node will verify it, ending at the migration entry.
        let engine = target.engine, head = report.head
        let verification = try PostgresProfiles.wait("verifying the copied audit chain") { try await engine.verifyAudit(expectHead: head) }
        // After an archive the live chain starts after the anchor: the entries it verifies and
        // the archived ones together reach the migration entry.
        let (live, overflow) = Int64(verification.entries).addingReportingOverflow(verification.archivedThrough ?? 0)
        guard verification.ok, !overflow, live == report.headSequence, verification.head == report.head else {
            throw VaultError(.integrity, "the copied audit chain does not verify: \(verification.reason ?? "it ends before the migration entry")")
        }
        return report
    }

    /// The largest subject row id a migration copies: 2^62 leaves the copy's identity sequence
    /// as many ids again for the subjects ingested after it.
    static let largestCopiedSubjectID: Int64 = 1 << 62

    /// Reads the copy back on the migration's connection, before it commits: counts per table
    /// and the digest of every subject's stored row must be the source's.
    static func checkCopy(_ target: PostgresProfiles, _ conn: PostgresConnection, report: StoreMigrationReport, sourceDigest: [UInt8],
                          batch: Int) async throws {
        let engine = target.engine
        guard let row = try await engine.rows(conn, """
            SELECT (SELECT count(*) FROM profilevault.subjects), (SELECT count(*) FROM profilevault.events),
                   (SELECT count(*) FROM profilevault.consent), (SELECT count(*) FROM profilevault.consent_state),
                   (SELECT count(*) FROM profilevault.suppressed), (SELECT count(*) FROM profilevault.dp_budget),
                   (SELECT count(*) FROM profilevault.policy_history), (SELECT count(*) FROM profilevault.audit_log)
            """).first else { throw PostgresStoreError(.internalFailure, "counting returned no row") }
        let c = try row.decode((Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64).self)
        var d = SubjectDigest()
        var after: Int64 = Int64.min
        while true {
            let rows = try await engine.rows(conn, PostgresQuery(unsafeSQL: target.snapshotSelect + " WHERE s.id > $1 ORDER BY s.id LIMIT \(batch)",
                                                              binds: { var b = PostgresBindings(); b.append(after); return b }()))
            if rows.isEmpty { break }
            for row in rows {
                let s = try target.snapshotSubject(row)
                d.add(s)
                after = s.id
            }
        }
        let (counts, digest) = ([c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7], d.value)
        let want = [report.subjects, report.events, report.consentEntries, report.consentStates, report.suppressed, report.budgetRows,
                    report.policies, report.auditEntries]
        guard counts == want else {
            throw PostgresStoreError(.integrity, "the copy's row counts \(counts) differ from the source's \(want); nothing was copied")
        }
        guard constantTimeEqual(digest, sourceDigest) else {
            throw PostgresStoreError(.integrity, "the copy's subjects differ from the source's (stored rows digest mismatch); nothing was copied")
        }
    }
}

/// The source's audit chain checked entry by entry as it is copied, with the checks the
/// target's own verifier (``PostgresEngine/verifyAudit(expectHead:)``) applies: every entry's
/// sequence, time and subject columns against its text, its text in canonical form (the
/// target hashes the stored bytes), its hash and link, every checkpoint's signature (the
/// store's key) and link, and nothing beyond the newest checkpoint. SQLite's own verifier
/// re-encodes an entry before hashing it, so a source that verifies there may still hold a
/// reformatted entry; it is refused here rather than copied into a chain that fails.
struct CopiedChainCheck {
    private var verifier: ChainVerifier
    private let checkpoints: [Int64: AuditCheckpoint]

    private let anchor: AuditArchiveAnchor?

    init(publicKey: Ed25519PublicKey, checkpoints rows: [SnapshotCheckpoint], anchors: [AuditArchiveAnchor] = []) throws {
        switch AuditArchiveAnchor.verifyChain(anchors, publicKey: publicKey) {
        case .success(let a): anchor = a
        case .failure(let f): throw Self.refused(f.sequence, f.reason)
        }
        verifier = anchor.map { ChainVerifier(publicKey: publicKey, anchor: $0) }
            ?? ChainVerifier(publicKey: publicKey, startingAfter: AuditLog.genesis, sequence: 0, wholeLog: true)
        var checkpoints: [Int64: AuditCheckpoint] = [:]
        for c in rows where c.seq > (anchor?.lastSequence ?? Int64.min) {
            guard c.seq >= 1 else { throw Self.refused(1, "a checkpoint for entry \(c.seq), which no entry can have") }
            do {
                checkpoints[c.seq] = try PostgresEngine.checkpoint(sequence: c.seq, hash: c.hash, signature: c.signature, time: c.checkpointTime,
                                                                   prevSeq: c.prevSeq, prevDigest: c.prevDigest)
            } catch let e as PostgresStoreError { throw Self.refused(c.seq, e.message) }
        }
        self.checkpoints = checkpoints
    }

    mutating func add(_ e: SnapshotAuditEntry) throws {
        guard let entry = try? JSONValue.parse(e.entry), case .int(let stated)? = entry["metadata.sequence"], stated == e.seq else {
            throw Self.refused(e.seq, "the row does not hold entry \(e.seq)")
        }
        guard case .int(e.time)? = entry["time"] else { throw Self.refused(e.seq, "its time column disagrees with the entry") }
        let statedSubject = entry["unmapped.subject"].flatMap { if case .string(let s) = $0 { s } else { nil } }
        guard e.subject.map(AuditLog.hex) == statedSubject else { throw Self.refused(e.seq, "its subject column disagrees with the entry") }
        guard Array(e.entry.utf8) == entry.canonicalBytes() else { throw Self.refused(e.seq, "it is not in canonical form") }
        let cp = checkpoints[e.seq]
        if let cp, cp.hash != e.hash { throw Self.refused(e.seq, "its checkpoint records another hash") }
        guard verifier.add(entry: entry, statedPrevious: e.prevHash, statedHash: e.hash, checkpoint: cp) else {
            throw Self.refused(verifier.failure?.sequence ?? e.seq, verifier.failure?.reason ?? "it does not verify")
        }
    }

    /// After the last entry: no checkpoint beyond it, every entry under a signed checkpoint.
    func finish() throws {
        if let f = verifier.failure { throw Self.refused(f.sequence, f.reason) }
        if let anchor, verifier.entries == 0 {
            throw Self.refused(anchor.lastSequence + 1, "no entry follows its archive anchor")
        }
        let last = verifier.last ?? 0
        if let beyond = checkpoints.keys.filter({ $0 > last }).min() {
            throw Self.refused(last + 1, "a signed checkpoint exists for entry \(beyond) but the log ends at \(last)")
        }
        if last > verifier.lastCheckpoint {
            throw Self.refused(verifier.lastCheckpoint + 1, "entries after \(verifier.lastCheckpoint) are not covered by a signed checkpoint")
        }
    }

    static func refused(_ seq: Int64, _ why: String) -> VaultError {
        VaultError(.integrity, "the source's audit chain does not verify at entry \(seq) (\(why)): the file was altered; nothing was copied")
    }
}

/// A hash chain over every subject's stored row in row-id order (length-prefixed fields):
/// the same on both sides of a migration exactly when every row is.
struct SubjectDigest {
    private(set) var value = [UInt8](repeating: 0, count: 32)
    mutating func add(_ s: SnapshotSubject) {
        var bytes: [UInt8] = []
        func put(_ b: [UInt8]?) {
            guard let b else { bytes += [0xFF, 0xFF, 0xFF, 0xFF]; return }
            let n = UInt32(truncatingIfNeeded: b.count)
            bytes += [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
            bytes += b
        }
        put(Array(String(s.id).utf8))
        put(s.sealed.pseudonym)
        put(Array(String(s.sealed.kekVersion).utf8))
        put(s.sealed.wrappedDEK)
        for t in [s.createdAt, s.updatedAt, s.lastActivity] { put(Array(String(t).utf8)) }
        for c in s.sealed.piiRow { put(c) }
        for v in s.sealed.attributes { put(Array(String(describing: v).utf8)) }
        for b in [s.createdBatch, s.updatedBatch] { put(b.map { Array(String($0).utf8) }) }
        put(s.sealed.digest)
        value = SHA256.hash(value, bytes)
    }
}

extension PostgresEngine {
    /// One connection outside the pool, for a transaction that spans several waits (migrate).
    func connectDirect() async throws -> PostgresConnection {
        do { return try await PostgresConnection.connect(configuration: direct, id: 1, logger: logger) } catch {
            throw PostgresStoreError.wrap(error, "connecting to \(location.description)")
        }
    }
}

extension PostgresProfiles {
    /// Every stored column of a subject, for reading a copy back (`snapshotSubject`).
    var snapshotSelect: String {
        let pcols = piiColumns.valueColumns.map { "p." + $0.column }
        let attrs = (try? schema.attributeFields.map { f throws(PostgresStoreError) in "a." + (try Self.attributeColumn(f.name)) }) ?? []
        return """
            SELECT s.id, s.pseudonym, s.kek_version, s.wrapped_dek, s.created_at, s.updated_at, s.last_activity\
            \((pcols + attrs).map { ", " + $0 }.joined()), s.created_batch, s.updated_batch, s.record_digest
            FROM profilevault.subjects s
            LEFT JOIN profilevault.pii p ON p.subject_id = s.id LEFT JOIN profilevault.attributes a ON a.subject_id = s.id
            """
    }

    /// A row of `snapshotSelect` as a migration snapshot.
    func snapshotSubject(_ row: PostgresRow) throws -> SnapshotSubject {
        let cells = PostgresRandomAccessRow(row)
        let (id, pseudonym, kek, wrapped, created, updated, last) = try row.decode((Int64, ByteBuffer, Int64, ByteBuffer, Int64, Int64, Int64).self)
        guard let version = UInt32(exactly: kek) else { throw PostgresStoreError(.integrity, "subject row \(id): key version \(kek) is out of range") }
        var pii: [[UInt8]?] = []
        for i in piiColumns.valueColumns.indices { pii.append(try cells[7 + i].decode(ByteBuffer?.self)?.bytes) }
        let base = 7 + piiColumns.valueColumns.count
        var values: [FieldValue] = []
        for (i, f) in schema.attributeFields.enumerated() {
            let cell = cells[base + i]
            switch f.type {
            case .int: values.append(try cell.decode(Int64?.self).map(FieldValue.int) ?? .null)
            case .float: values.append(try cell.decode(Double?.self).map(FieldValue.float) ?? .null)
            case .date: values.append(try cell.decode(Int32?.self).map(FieldValue.date) ?? .null)
            case .bool: values.append(try cell.decode(Bool?.self).map(FieldValue.bool) ?? .null)
            case .string, .category: values.append(try cell.decode(String?.self).map(FieldValue.text) ?? .null)
            }
        }
        let tail = base + schema.attributeFields.count
        let (createdBatch, updatedBatch) = (try cells[tail].decode(Int64?.self), try cells[tail + 1].decode(Int64?.self))
        let digest = try cells[tail + 2].decode(ByteBuffer?.self)?.bytes ?? []
        return SnapshotSubject(id: id, sealed: SealedProfile(line: 0, pseudonym: pseudonym.bytes, kekVersion: version, wrappedDEK: wrapped.bytes,
                                                             piiRow: pii, attributes: values, digest: digest),
                               createdAt: created, updatedAt: updated, lastActivity: last, createdBatch: createdBatch, updatedBatch: updatedBatch)
    }
}
