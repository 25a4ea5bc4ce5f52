import Foundation
public import GRDB
public import VaultAudit
public import VaultCrypto
public import VaultPolicy

/// One consent ledger entry.
public struct ConsentEntry: Sendable, Equatable {
    public var purpose: String
    public var granted: Bool
    public var timeMillis: Int64
    public var actor: String
    public var source: String?
    public var policyVersion: String
}

/// A subject's current consent for one purpose.
public struct ConsentState: Sendable, Equatable {
    public var granted: Bool
    public var sinceMillis: Int64?
    public init(granted: Bool, sinceMillis: Int64?) {
        self.granted = granted
        self.sinceMillis = sinceMillis
    }
}

/// What an erasure removed, and the receipt the data subject can keep.
public struct ErasureReceipt: Sendable {
    public var customerID: String
    public var erasedAtMillis: Int64
    public var reason: String
    public var removed: [(String, Int64)]
    /// Sequence number and hash (hex) of the audit entry that records the erasure: the
    /// receipt. Anyone can later check that this entry is in the signed log.
    public var auditSequence: Int64
    public var receipt: String
}

/// Everything the store holds about one subject, decrypted (GDPR art. 15 and 20).
public struct AccessExport: Sendable {
    public var customerID: String
    public var pseudonym: String
    public var createdAt: Int64
    public var updatedAt: Int64
    public var lastActivity: Int64
    public var profile: ProfileView
    public var events: [(kind: String, item: String, value: Double, time: Int64)]
    public var consent: [ConsentEntry]
    public var auditEntries: [String]
    /// The ingest run that created the subject and the last one that changed its profile (nil
    /// for subjects ingested before runs were recorded).
    public var createdBy: IngestBatchInfo? = nil
    public var updatedBy: IngestBatchInfo? = nil
}

/// Counts of a retention sweep.
public struct RetentionReport: Sendable {
    public var eventsDeleted: Int
    public var subjectsErased: Int
    public var dryRun: Bool
}

extension ProfileStore {
    static func registerPrivacyMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v3-privacy") { db in
            try db.execute(sql: """
                CREATE TABLE consent(
                    id INTEGER PRIMARY KEY, subject_id INTEGER NOT NULL, purpose TEXT NOT NULL,
                    granted INTEGER NOT NULL, time INTEGER NOT NULL, actor TEXT NOT NULL,
                    source TEXT, policy_version TEXT NOT NULL);
                CREATE INDEX consent_subject ON consent(subject_id, purpose, id);
                CREATE TRIGGER consent_no_update BEFORE UPDATE ON consent
                    BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END;
                CREATE TABLE consent_state(
                    subject_id INTEGER NOT NULL, purpose TEXT NOT NULL, granted INTEGER NOT NULL, since INTEGER NOT NULL,
                    PRIMARY KEY(purpose, subject_id)) WITHOUT ROWID;
                CREATE INDEX consent_state_subject ON consent_state(subject_id);
                CREATE TABLE suppressed(pseudonym BLOB PRIMARY KEY, erased_at INTEGER NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;
                """)
        }
    }

    /// Reads a `--subjects FILE`: one customer ID per line, blank lines skipped.
    public static func readSubjectList(path: String) throws -> [(line: Int, id: String)] {
        // Read through a file handle, so pipes and process substitutions work too.
        guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() ?? Data() else {
            throw VaultError(.notFound, "\(path): no such file")
        }
        try? handle.close()
        guard let text = String(data: data, encoding: .utf8) else {
            throw VaultError(.invalidInput, "\(path): not UTF-8 text")
        }
        var out: [(Int, String)] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let id = Normalization.customerID(String(raw))
            if !id.isEmpty { out.append((i + 1, id)) }
        }
        return out
    }

    /// Resolves customer IDs to subject rows; an unknown ID is `notFound` naming its line.
    func resolve(_ db: Database, _ ids: [(line: Int, id: String)], file: String?) throws -> [(id: String, row: SubjectRow)] {
        var out: [(String, SubjectRow)] = []
        out.reserveCapacity(ids.count)
        for (line, id) in ids {
            guard let row = try subjectRow(db, pseudonym: try pseudonym(ofCustomerID: id)) else {
                if let file { throw VaultError(.notFound, "\(file):\(line): no subject with this customer ID") }
                throw VaultError(.notFound, "no subject with this customer ID")
            }
            out.append((id, row))
        }
        return out
    }

    // MARK: - Consent

    /// Grants or revokes consent for `purpose`. All IDs are resolved before anything is written
    /// (an unknown one refuses the whole call); changes are written in batches, each with its
    /// audit entry. Returns how many subjects' state changed.
    public func setConsent(_ ids: [(line: Int, id: String)], file: String?, purpose: String, granted: Bool,
                           source: String?, policyVersion: String, audit: AuditContext) throws -> Int {
        try StoredText.checkConsent(purpose: purpose, source: source, policyVersion: policyVersion, actor: audit.actor)
        let resolved = try pool.read { db in try resolve(db, ids, file: file) }
        var changed = 0
        let now = AuditLog.nowMillis
        for chunk in stride(from: 0, to: resolved.count, by: 2000).map({ resolved[$0..<min($0 + 2000, resolved.count)] }) {
            changed += try pool.write { db -> Int in
                let current = try db.cachedStatement(sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?")
                let ledger = try db.cachedStatement(sql: "INSERT INTO consent(subject_id, purpose, granted, time, actor, source, policy_version) VALUES (?, ?, ?, ?, ?, ?, ?)")
                let state = try db.cachedStatement(sql: "INSERT OR REPLACE INTO consent_state(subject_id, purpose, granted, since) VALUES (?, ?, ?, ?)")
                var n = 0
                for (_, row) in chunk {
                    let was = try Bool.fetchOne(current, arguments: [purpose, row.id])
                    // No change: nothing to record. An objection (Art. 21) is recorded even where no
                    // state was: it is a "no" the subject said, not the absence of a "yes".
                    if was == granted || (was == nil && !granted && source != Self.objectionSource) { continue }
                    try ledger.execute(arguments: [row.id, purpose, granted, now, audit.actor, source, policyVersion])
                    try state.execute(arguments: [row.id, purpose, granted, now])
                    n += 1
                }
                // One subject: an entry naming its pseudonym. A bulk change: one entry per batch
                // with its counts (the ledger holds the per-subject detail).
                let single = resolved.count == 1 ? chunk.first?.row.pseudonym : nil
                try appendAudit(db, [Self.consentRecord(audit, purpose: purpose, granted: granted, subject: single, source: source,
                                                        changed: n, unchanged: chunk.count - n)])
                if n > 0 { try bumpPopulationEpoch(db) }
                return n
            }
        }
        return changed
    }

    /// Whether a subject's consent for `purpose` is active now.
    public func hasConsent(customerID: String, purpose: String) throws -> Bool {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return false }
            return try Bool.fetchOne(db, sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?", arguments: [purpose, s.id]) ?? false
        }
    }

    public func consentState(customerID: String) throws -> [String: ConsentState]? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            var out: [String: ConsentState] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT purpose, granted, since FROM consent_state WHERE subject_id = ?", arguments: [s.id]) {
                // Decoded without traps: a value of the wrong type is an integrity error.
                guard let purpose = row.auditText("purpose"), let granted = row.auditInt("granted"), granted == 0 || granted == 1,
                      let since = row.auditInt("since") else {
                    throw VaultError(.integrity, "subject row \(s.id): its consent state holds a value of the wrong type: the file was edited")
                }
                out[purpose] = ConsentState(granted: granted == 1, sinceMillis: since)
            }
            return out
        }
    }

    public func consentHistory(customerID: String) throws -> [ConsentEntry]? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            return try consentHistory(db, subjectID: s.id)
        }
    }

    func consentHistory(_ db: Database, subjectID: Int64) throws -> [ConsentEntry] {
        try Row.fetchAll(db, sql: "SELECT purpose, granted, time, actor, source, policy_version FROM consent WHERE subject_id = ? ORDER BY id", arguments: [subjectID]).map {
            guard let purpose = $0.auditText("purpose"), let granted = $0.auditInt("granted"), granted == 0 || granted == 1,
                  let time = $0.auditInt("time"), let actor = $0.auditText("actor"), let version = $0.auditText("policy_version"),
                  $0.auditIsNull("source") || $0.auditText("source") != nil else {
                throw VaultError(.integrity, "subject row \(subjectID): its consent ledger holds a value of the wrong type: the file was edited")
            }
            return ConsentEntry(purpose: purpose, granted: granted == 1, timeMillis: time, actor: actor, source: $0.auditText("source"), policyVersion: version)
        }
    }

    // MARK: - Access export

    /// Whether a subject with this customer ID is in the store (a pseudonym lookup, no decryption).
    public func exists(customerID: String) throws -> Bool {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in try subjectRow(db, pseudonym: pseudo) != nil }
    }

    /// Everything held about one subject, decrypted. Nil for an unknown (or erased) subject.
    public func accessExport(customerID: String) throws -> AccessExport? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db -> AccessExport? in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            let view = try profile(db, subject: s, fields: Set(schema.fields.map(\.name)))
            guard let times = try Row.fetchOne(db, sql: "SELECT created_at, updated_at, last_activity, created_batch, updated_batch FROM subjects WHERE id = ?", arguments: [s.id]) else { return nil }
            func batch(_ column: String) throws -> IngestBatchInfo? {
                let v = times.stored(column)
                if v.isNull { return nil }
                guard let id = Stored.int(v) else { throw Stored.damaged(subject: s.id, "the \(column) column", v, expected: "an integer") }
                return try ingestBatch(db, id: id)
            }
            func time(_ column: String) throws -> Int64 {
                let v = times.stored(column)
                guard let t = Stored.int(v) else { throw Stored.damaged(subject: s.id, "the \(column) column", v, expected: "an integer") }
                return t
            }
            let (createdAt, updatedAt, lastActivity) = (try time("created_at"), try time("updated_at"), try time("last_activity"))
            // Every column decoded by its storage class: an edited row is an integrity error, not a trap.
            let events = try Row.fetchAll(db, sql: "SELECT kind, item, value, time FROM events WHERE subject_id = ? ORDER BY time, id", arguments: [s.id]).map {
                row -> (kind: String, item: String, value: Double, time: Int64) in
                let k = row.stored("kind"), i = row.stored("item"), v = row.stored("value"), t = row.stored("time")
                guard let kind = Stored.text(k) else { throw Stored.damaged(subject: s.id, "an event's kind", k, expected: "text") }
                guard let item = Stored.text(i) else { throw Stored.damaged(subject: s.id, "an event's item", i, expected: "text") }
                guard let value = Stored.number(v) else { throw Stored.damaged(subject: s.id, "an event's value", v, expected: "a number") }
                guard let time = Stored.int(t) else { throw Stored.damaged(subject: s.id, "an event's time", t, expected: "an integer") }
                return (kind, item, value, time)
            }
            let audit = try String.fetchAll(db, sql: "SELECT entry FROM audit WHERE subject = ? ORDER BY seq", arguments: [Data(pseudo)])
            return AccessExport(customerID: view.customerID, pseudonym: AuditLog.hex(pseudo), createdAt: createdAt,
                                updatedAt: updatedAt, lastActivity: lastActivity, profile: view,
                                events: events, consent: try consentHistory(db, subjectID: s.id), auditEntries: audit,
                                createdBy: try batch("created_batch"), updatedBy: try batch("updated_batch"))
        }
    }

    // MARK: - Erasure

    /// Crypto-shredding erasure of resolved subjects, in transactions of `batchSize`: the
    /// wrapped DEK and every row of the subject are deleted, the pseudonym goes on the
    /// suppression list naming its receipt, and the audit entries commit in the same
    /// transaction: one entry per subject, appended together under one signed checkpoint per
    /// batch, as on PostgreSQL (a checkpoint is an Ed25519 signature, and the append after it
    /// verifies it: per subject, they would cost more than the rest of the erasure). A failure
    /// anywhere rolls the whole batch back. The WAL is checkpointed (TRUNCATE) after each batch
    /// so no frame of the subjects' data is left in it.
    func erase(_ subjects: [(id: String, row: SubjectRow)], reason: String, audit: AuditContext, batchSize: Int = 500) throws -> [ErasureReceipt] {
        var receipts: [ErasureReceipt] = []
        receipts.reserveCapacity(subjects.count)
        let fields = [schema.subjectIDField] + schema.fields.map(\.name)
        for start in stride(from: 0, to: subjects.count, by: batchSize) {
            let chunk = Array(subjects[start..<min(start + batchSize, subjects.count)])
            let now = AuditLog.nowMillis
            let batch = try pool.write { db -> [ErasureReceipt] in
                var removed: [[(String, Int64)]] = []
                removed.reserveCapacity(chunk.count)
                for (_, s) in chunk { removed.append(try shredSubject(db, s)) }
                let records = chunk.indices.map {
                    audit.record("erase", .delete, subject: chunk[$0].row.pseudonym, fields: fields, detail: "reason \(reason)", counts: removed[$0])
                }
                // The suppression list names the receipt, so a later request for this ID can
                // say when it was erased and under which receipt.
                let suppress = try db.cachedStatement(sql: "INSERT OR REPLACE INTO suppressed(pseudonym, erased_at, reason, receipt_seq, receipt) VALUES (?, ?, ?, ?, ?)")
                var out: [ErasureReceipt] = []
                out.reserveCapacity(chunk.count)
                try appendAudit(db, records, each: { seq, hash in
                    let i = out.count
                    let receipt = AuditLog.hex(hash)
                    try suppress.execute(arguments: [Data(chunk[i].row.pseudonym), now, reason, seq, receipt])
                    out.append(ErasureReceipt(customerID: chunk[i].id, erasedAtMillis: now, reason: reason, removed: removed[i],
                                              auditSequence: seq, receipt: receipt))
                })
                try bumpPopulationEpoch(db)
                return out
            }
            receipts += batch
            try checkpoint()
        }
        return receipts
    }

    /// Deletes one subject's wrapped DEK and every row of it, and the sealed texts of its
    /// register requests (the register keeps the pseudonym and metadata), inside the caller's
    /// transaction; returns the counts a receipt shows. `erase` and `restore` (re-applying the
    /// erasure journal) share it.
    func shredSubject(_ db: Database, _ s: SubjectRow) throws -> [(String, Int64)] {
        var removed: [(String, Int64)] = []
        // The subject's `pii` row holds its encrypted fields and its blind-index entries.
        // Prepared once per connection (`cachedStatement`): a bulk erasure runs these per subject.
        let (fieldCount, macCount) = piiColumns.storedCountExpressions
        let stored = try Row.fetchOne(db.cachedStatement(sql: "SELECT \(fieldCount), \(macCount) FROM pii WHERE subject_id = ?"), arguments: [s.id])
        removed.append(("pii_fields", stored?[0] ?? 0))
        removed.append(("blind_index_entries", stored?[1] ?? 0))
        let tables: [(String, String?)] = [("pii", nil), ("attributes", "attribute_rows"), ("events", "events"),
                                           ("consent", "consent_entries"), ("consent_state", "consent_states"),
                                           ("restriction", nil)]
        for (table, label) in tables {
            try db.cachedStatement(sql: "DELETE FROM \(table) WHERE subject_id = ?").execute(arguments: [s.id])
            if let label { removed.append((label, Int64(db.changesCount))) }
        }
        try db.cachedStatement(sql: "DELETE FROM subjects WHERE id = ?").execute(arguments: [s.id])
        removed.append(("wrapped_data_key", Int64(db.changesCount)))
        try shredRequests(db, pseudonym: s.pseudonym)
        return removed
    }

    /// Erases subjects by customer ID. All IDs must exist (an unknown one refuses the call
    /// before anything is erased); a reason holding U+0000 is refused first (`StoredText`).
    public func erase(customerIDs: [(line: Int, id: String)], file: String?, reason: String, audit: AuditContext) throws -> [ErasureReceipt] {
        try StoredText.check(reason, "erasure reason")
        let resolved = try pool.read { db in try resolve(db, customerIDs, file: file) }
        return try erase(resolved, reason: reason, audit: audit)
    }

    /// When the subject with this customer ID was erased, if it was.
    public func erasedAt(customerID: String) throws -> Int64? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT erased_at FROM suppressed WHERE pseudonym = ?", arguments: [Data(pseudo)])
        }
    }

    // MARK: - Retention

    /// Applies the policy's retention rules as of `asOf` (unix seconds). Events whose kind's
    /// category a rule covers and whose time is older than the rule's period are deleted;
    /// subjects whose last activity is older than a `last_activity` rule's period are erased
    /// (reason `retention`), except restricted ones: a restriction (Art. 18) keeps the data
    /// stored until it is lifted (it is often asked for instead of erasure). When several rules
    /// cover the same data, the shortest period wins.
    public func applyRetention(_ rules: [RetentionRule], asOf: Int64, dryRun: Bool, audit: AuditContext) throws -> RetentionReport {
        let (eventCutoffs, subjectCutoff) = Self.retentionCutoffs(rules, schema: schema, asOf: asOf)
        var eventsDeleted = 0
        for (kind, cutoff) in eventCutoffs.sorted(by: { $0.key < $1.key }) {
            if dryRun {
                eventsDeleted += try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM events WHERE kind = ? AND time < ? AND subject_id NOT IN (SELECT subject_id FROM restriction)", arguments: [kind, cutoff]) ?? 0 }
            } else {
                eventsDeleted += try pool.write { db -> Int in
                    try db.execute(sql: "DELETE FROM events WHERE kind = ? AND time < ? AND subject_id NOT IN (SELECT subject_id FROM restriction)", arguments: [kind, cutoff])
                    let n = db.changesCount
                    try appendAudit(db, [Self.retentionEventsRecord(audit, kind: kind, cutoff: cutoff, deleted: n)])
                    if n > 0 { try bumpPopulationEpoch(db) }
                    return n
                }
            }
        }
        var subjectsErased = 0
        if let cutoff = subjectCutoff {
            let victims = try pool.read { db in
                // Erasure needs only the row id and the pseudonym: a damaged key column does not stop it.
                try Row.fetchAll(db, sql: "SELECT id, pseudonym, kek_version, wrapped_dek FROM subjects WHERE last_activity < ? AND id NOT IN (SELECT subject_id FROM restriction) ORDER BY id", arguments: [cutoff]).map { row -> SubjectRow in
                    try SubjectRow.decode(row)
                }
            }
            subjectsErased = victims.count
            if !dryRun, !victims.isEmpty {
                // Receipts name the customer ID; retention erases without decrypting it.
                _ = try erase(victims.map { (id: "", row: $0) }, reason: "retention", audit: audit)
            }
        }
        if dryRun {
            try self.audit([Self.retentionDryRunRecord(audit, asOf: asOf, eventsDeleted: eventsDeleted, subjectsErased: subjectsErased)])
        }
        return RetentionReport(eventsDeleted: eventsDeleted, subjectsErased: subjectsErased, dryRun: dryRun)
    }
}
