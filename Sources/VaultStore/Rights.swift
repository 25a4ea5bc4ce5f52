import Foundation
public import GRDB
public import VaultAudit
public import VaultPolicy
public import VaultCrypto

/// The data subject's rights of issue 19 on the SQLite store: restriction of processing
/// (GDPR Art. 18) and objection (Art. 21).
///
/// - A restricted subject has a row in `restriction` (migration `v9-restriction`). It stays
///   stored (its export works) but is left out of every aggregate, job, recommendation and
///   read for a purpose.
/// - An objection to a `legitimate_interest` purpose is a consent-ledger entry with
///   `granted = 0` and source `objection`, and a `consent_state` row with `granted = 0`: every
///   aggregate, job, recommendation and read under that purpose leaves the subject out, as a
///   revoked consent does for a consent purpose.
///
/// **Cost when unused.** Each aggregate probes once, in its own read transaction, whether the
/// store holds any restriction (and, for a purpose with objections possible, any objection row
/// of that purpose: the partial index `consent_state_objection`); only then is an anti-join
/// added to its SQL (``exclusion(_:alias:objectionPurpose:)``). A store without them runs the
/// statements it ran before.
extension ProfileStore {
    /// The source a consent-ledger entry of an objection carries.
    package static let objectionSource = "objection"

    static func registerRightsMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v9-restriction") { db in
            try db.execute(sql: """
                CREATE TABLE restriction(subject_id INTEGER PRIMARY KEY, since INTEGER NOT NULL);
                CREATE INDEX consent_state_objection ON consent_state(purpose) WHERE granted = 0;
                """)
        }
    }

    /// The condition (for a WHERE clause, on `alias.subject_id`) that leaves out restricted
    /// subjects and, with `objectionPurpose`, the subjects objecting to it; nil when the store
    /// holds neither (the probe: one indexed lookup each), so the statement stays as it was.
    func exclusion(_ db: Database, alias: String, objectionPurpose: String?) throws -> (sql: String, args: [any DatabaseValueConvertible])? {
        var parts: [String] = []
        var args: [any DatabaseValueConvertible] = []
        if try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM restriction)")) ?? false {
            parts.append("\(alias).subject_id NOT IN (SELECT subject_id FROM restriction)")
        }
        if let p = objectionPurpose,
           try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM consent_state WHERE purpose = ? AND granted = 0)"), arguments: [p]) ?? false {
            parts.append("\(alias).subject_id NOT IN (SELECT subject_id FROM consent_state WHERE purpose = ? AND granted = 0)")
            args.append(p)
        }
        return parts.isEmpty ? nil : (parts.joined(separator: " AND "), args)
    }

    /// Whether the subject row is restricted (a primary-key lookup).
    func isRestricted(_ db: Database, subjectID: Int64) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM restriction WHERE subject_id = ?)"), arguments: [subjectID]) ?? false
    }

    // MARK: - Restriction (Art. 18)

    /// Restricts (or lifts the restriction of) one subject; returns whether its state changed.
    /// An unknown (or erased) subject is not found. The audit entry (`restrict` or
    /// `unrestrict`, naming the pseudonym) commits with the change, changed or not.
    public func setRestriction(customerID: String, restricted: Bool, audit: AuditContext) throws -> Bool {
        try StoredText.check(audit.actor, "actor")
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.write { db -> Bool in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { throw VaultError(.notFound, "no subject with this customer ID") }
            if restricted {
                try db.execute(sql: "INSERT OR IGNORE INTO restriction(subject_id, since) VALUES (?, ?)", arguments: [s.id, AuditLog.nowMillis])
            } else {
                try db.execute(sql: "DELETE FROM restriction WHERE subject_id = ?", arguments: [s.id])
            }
            let changed = db.changesCount > 0
            try appendAudit(db, [Self.restrictionRecord(audit, restricted: restricted, subject: pseudo, changed: changed)])
            if changed { try bumpPopulationEpoch(db) }
            return changed
        }
    }

    /// Whether the subject is restricted; nil for an unknown subject.
    public func restricted(customerID: String) throws -> Bool? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            return try isRestricted(db, subjectID: s.id)
        }
    }

    /// The pseudonyms among `pseudonyms` whose subject objects to `purpose` (its consent state
    /// for it is `granted = 0`). Unknown pseudonyms are not in the answer.
    public func objecting(pseudonyms: [[UInt8]], purpose: String) throws -> Set<[UInt8]> {
        try pool.read { db in
            guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS(SELECT 1 FROM consent_state WHERE purpose = ? AND granted = 0)"), arguments: [purpose]) ?? false else {
                return []
            }
            var out = Set<[UInt8]>()
            let statement = try db.cachedStatement(sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?")
            for p in Set(pseudonyms) {
                guard let s = try subjectRow(db, pseudonym: p) else { continue }
                if try Bool.fetchOne(statement, arguments: [purpose, s.id]) == false { out.insert(p) }
            }
            return out
        }
    }

    // MARK: - Consent import

    /// Appends consent evidence kept elsewhere (`consent import FILE`), all or nothing: every
    /// row's subject is resolved first (an unknown one refuses the import, naming its line);
    /// then one transaction appends every row to the ledger with its own time, actor and
    /// source, and moves a subject's state for the purpose to the row's value when the row is
    /// at least as recent as the state it finds. Returns how many ledger rows were written.
    public func importConsent(_ rows: [ConsentImportRow], file: String?, policyVersion: String, audit: AuditContext) throws -> Int {
        for r in rows {
            try StoredText.checkConsent(purpose: r.purpose, source: r.source, policyVersion: policyVersion, actor: audit.actor)
        }
        let resolved = try pool.read { db in try resolve(db, rows.map { (line: $0.line, id: $0.customerID) }, file: file) }
        return try pool.write { db -> Int in
            let current = try db.cachedStatement(sql: "SELECT since FROM consent_state WHERE purpose = ? AND subject_id = ?")
            let ledger = try db.cachedStatement(sql: "INSERT INTO consent(subject_id, purpose, granted, time, actor, source, policy_version) VALUES (?, ?, ?, ?, ?, ?, ?)")
            let state = try db.cachedStatement(sql: "INSERT OR REPLACE INTO consent_state(subject_id, purpose, granted, since) VALUES (?, ?, ?, ?)")
            for (r, (_, s)) in zip(rows, resolved) {
                try ledger.execute(arguments: [s.id, r.purpose, r.granted, r.timeMillis, audit.actor, r.source, policyVersion])
                let since = try Int64.fetchOne(current, arguments: [r.purpose, s.id])
                if since.map({ r.timeMillis >= $0 }) ?? true {
                    try state.execute(arguments: [s.id, r.purpose, r.granted, r.timeMillis])
                }
            }
            try appendAudit(db, [Self.consentImportRecord(audit, rows: rows, subject: Set(resolved.map(\.row.pseudonym)).count == 1 ? resolved.first?.row.pseudonym : nil)])
            if !rows.isEmpty { try bumpPopulationEpoch(db) }
            return rows.count
        }
    }
}

/// One row of a consent import (`customer_id,purpose,granted,time,source`), validated.
public struct ConsentImportRow: Sendable, Equatable {
    public var line: Int
    public var customerID: String
    public var purpose: String
    public var granted: Bool
    public var timeMillis: Int64
    public var source: String?
    public init(line: Int, customerID: String, purpose: String, granted: Bool, timeMillis: Int64, source: String?) {
        self.line = line
        self.customerID = customerID
        self.purpose = purpose
        self.granted = granted
        self.timeMillis = timeMillis
        self.source = source
    }
}

extension ProfileStore {
    /// The entry of a restriction change (both engines).
    package static func restrictionRecord(_ audit: AuditContext, restricted: Bool, subject: [UInt8], changed: Bool) -> AuditRecord {
        audit.record(restricted ? "restrict" : "unrestrict", .update, subject: subject,
                     counts: [("changed", changed ? 1 : 0)])
    }

    /// The entry of a consent import (both engines): per purpose, the rows granted and revoked.
    package static func consentImportRecord(_ audit: AuditContext, rows: [ConsentImportRow], subject: [UInt8]?) -> AuditRecord {
        let purposes = Set(rows.map(\.purpose)).sorted()
        return audit.record("consent.import", .update, subject: subject, detail: "purposes \(purposes.joined(separator: ", "))",
                            counts: [("granted", Int64(rows.filter(\.granted).count)), ("revoked", Int64(rows.filter { !$0.granted }.count))])
    }
}

// MARK: - Rectification (Art. 16)

/// What a rectification writes for one field, computed by both engines from the subject's
/// current profile (decrypted inside the writing transaction) and the validated new values.
package struct RectifiedField {
    package var field: FieldSpec
    package var value: FieldValue
    /// PII: the new ciphertext (sealed with the subject's own DEK, a fresh nonce) or nil for null.
    package var ciphertext: [UInt8]?
    /// PII lookup fields: the new blind-index entry, or nil (null or empty after normalisation).
    package var mac: [UInt8]?
}

extension ProfileStore {
    /// A validated value as a read shows it (to tell a change from a value already held): PII
    /// as its plaintext read back, attributes as `profileValue(_:field:subject:)` reads them.
    package static func shownValue(_ v: FieldValue, field f: FieldSpec) -> ProfileValue {
        if case .null = v { return .null }
        if f.pii { return profileValue(FieldValue.plaintext(v), type: f.type) }
        switch v {
        case .null: return .null
        case .int(let i): return f.type == .float ? .float(Double(i)) : .int(i)
        case .float(let d): return .float(d)
        case .bool(let b): return .bool(b)
        case .date(let d): return .text(DateParsing.isoDate(days: d))
        case .text(let s): return .text(s)
        }
    }

    /// The fields whose value changes, in schema order, each with what to store: PII sealed
    /// under `dek` for the subject's pseudonym (a fresh nonce each), lookup fields with their new
    /// blind-index entry. `current` is the subject's profile with at least these fields.
    package static func rectification(_ values: [(FieldSpec, FieldValue)], current: ProfileView, pseudonym: [UInt8], dek: AESGCMKey,
                                      blindIndexMACs: [String: SharedHMACSHA256Key]) throws -> [RectifiedField] {
        var out: [RectifiedField] = []
        for (f, v) in values {
            let now = current.fields.first { $0.name == f.name }?.value ?? .null
            if now == shownValue(v, field: f) { continue }
            var r = RectifiedField(field: f, value: v, ciphertext: nil, mac: nil)
            if f.pii, v != .null {
                let text = FieldValue.plaintext(v)
                do {
                    r.ciphertext = try Envelope.sealField(Array(text.utf8), field: f.name, subject: pseudonym, dek: dek)
                } catch {
                    throw VaultError(.internalFailure, "field \(f.name): could not be sealed")
                }
                if f.lookup, let key = blindIndexMACs[f.name] {
                    var norm = Normalization.lookupValue(text, for: f)
                    if !norm.isEmpty { r.mac = blindIndexEntry(norm.withUTF8 { key.mac(UnsafeRawBufferPointer($0)) }) }
                }
            }
            out.append(r)
        }
        return out
    }

    /// The entry of a rectification: the field names changed, never a value.
    package static func rectifyRecord(_ audit: AuditContext, subject: [UInt8], changed: [String], asked: Int) -> AuditRecord {
        audit.record("rectify", .update, subject: subject, fields: changed,
                     counts: [("changed", Int64(changed.count)), ("unchanged", Int64(asked - changed.count))])
    }

    /// Rectifies one subject (Art. 16), all or nothing, in one write transaction: the subject's
    /// current values are decrypted, each changed PII field is sealed again with the subject's
    /// own DEK (a fresh nonce) and its blind-index entry replaced, each changed attribute
    /// written as ingest writes it; the audit entry (field names only) commits with them.
    /// Returns the names of the fields that changed. An unknown or erased subject is not found.
    public func rectify(customerID: String, values: [(FieldSpec, FieldValue)], audit: AuditContext) throws -> [String] {
        try StoredText.check(audit.actor, "actor")
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.write { db -> [String] in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { throw VaultError(.notFound, "no subject with this customer ID") }
            let current = try profile(db, subject: s, fields: Set(values.map(\.0.name)))
            let changes = try Self.rectification(values, current: current, pseudonym: s.pseudonym, dek: try dek(for: s),
                                                 blindIndexMACs: keys.blindIndexMACs)
            if !changes.isEmpty {
                var piiSets: [String] = [], piiArgs: [DatabaseValue] = []
                var attrSets: [String] = [], attrArgs: [DatabaseValue] = []
                for c in changes {
                    if c.field.pii {
                        guard let id = piiFieldIDs[c.field.name], let column = piiColumns.ciphertextColumn(id: id) else { continue }
                        piiSets.append("\(column) = ?")
                        piiArgs.append(c.ciphertext.map { Data($0).databaseValue } ?? .null)
                        if let m = piiColumns.macColumn(id: id) {
                            piiSets.append("\(m) = ?")
                            piiArgs.append(c.mac.map { Data($0).databaseValue } ?? .null)
                        }
                    } else {
                        attrSets.append("\(Self.quoted(c.field.name)) = ?")
                        attrArgs.append(c.value.databaseValue)
                    }
                }
                if !piiSets.isEmpty {
                    try db.execute(sql: "UPDATE pii SET \(piiSets.joined(separator: ", ")) WHERE subject_id = ?",
                                   arguments: StatementArguments(piiArgs + [s.id.databaseValue]))
                }
                if !attrSets.isEmpty {
                    try db.execute(sql: "UPDATE attributes SET \(attrSets.joined(separator: ", ")) WHERE subject_id = ?",
                                   arguments: StatementArguments(attrArgs + [s.id.databaseValue]))
                }
                try db.execute(sql: "UPDATE subjects SET updated_at = ? WHERE id = ?", arguments: [Int64(Date().timeIntervalSince1970), s.id])
            }
            let names = changes.map(\.field.name)
            try appendAudit(db, [Self.rectifyRecord(audit, subject: pseudo, changed: names, asked: values.count)])
            if !names.isEmpty { try bumpPopulationEpoch(db) }
            return names
        }
    }
}
