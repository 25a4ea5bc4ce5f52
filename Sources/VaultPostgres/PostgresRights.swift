import Foundation
import PostgresNIO
public import VaultAudit
import VaultCrypto
public import VaultPolicy
public import VaultStore
import VaultValues

/// Restriction (GDPR Art. 18), objection (Art. 21) and consent import on PostgreSQL, with the
/// SQLite engine's results, errors and audit entries (VaultStore's Rights.swift).
///
/// `restriction` (migration 7) holds one row per restricted subject; erasure deletes it with
/// the subject. An objection is a consent-ledger row (granted false, source `objection`) and a
/// `consent_state` row with `granted = false` (the partial index `consent_state_objection`
/// answers the probe). Aggregates probe once whether any restriction, or any objection to the
/// request's objection purpose, exists (``exclusionProbe(objectionPurpose:)``) and add an
/// anti-join only then; the aggregate's own snapshot is probed again after it
/// (`PostgresAggregateSource.read`), so one that committed in between is still honoured.
extension PostgresProfiles {
    /// Whether the store holds any restriction, and any objection to `objectionPurpose`: one
    /// statement, two index probes.
    func exclusionProbe(objectionPurpose: String?) throws -> (restricted: Bool, objections: Bool) {
        let query = Self.exclusionProbeQuery(objectionPurpose: objectionPurpose)
        return try Self.wait("probing restrictions") { [engine] in
            try await engine.single("probing restrictions") { conn in
                guard let row = try await engine.rows(conn, query).first else { return (false, false) }
                let (r, o) = try row.decode((Bool, Bool).self)
                return (r, o)
            }
        }
    }

    /// The probe's statement: whether any subject is restricted, and whether any objects to
    /// `objectionPurpose` (false without one).
    static func exclusionProbeQuery(objectionPurpose: String?) -> PostgresQuery {
        if let purpose = objectionPurpose.map(Self.compared) {
            return """
                SELECT EXISTS(SELECT 1 FROM profilevault.restriction),
                       EXISTS(SELECT 1 FROM profilevault.consent_state WHERE purpose = \(purpose) AND NOT granted)
                """
        }
        return "SELECT EXISTS(SELECT 1 FROM profilevault.restriction), false"
    }

    // MARK: - Restriction

    /// Restricts (or lifts the restriction of) one subject; whether its state changed. The
    /// audit entry commits with the change (under the subjects lock, shared: an erasure runs
    /// before or after it).
    public func setRestriction(customerID: String, restricted: Bool, audit: AuditContext) throws -> Bool {
        try StoredText.check(audit.actor, "actor")
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("restricting a subject") { [self] in
            try await engine.transaction("restricting a subject") { conn in
                try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
                guard let id = try await engine.rows(conn, "SELECT id FROM profilevault.subjects WHERE pseudonym = \(bytea(p))").first?.decode(Int64.self) else {
                    throw PostgresStoreError(.notFound, "no subject with this customer ID")
                }
                let changed: Bool
                if restricted {
                    let now = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first?.decode(Int64.self) ?? AuditLog.nowMillis
                    changed = !(try await engine.rows(conn, """
                        INSERT INTO profilevault.restriction(subject_id, since) VALUES (\(id), \(now)) ON CONFLICT (subject_id) DO NOTHING RETURNING 1
                        """).isEmpty)
                } else {
                    changed = !(try await engine.rows(conn, "DELETE FROM profilevault.restriction WHERE subject_id = \(id) RETURNING 1").isEmpty)
                }
                try await engine.appendLocked(conn, [ProfileStore.restrictionRecord(audit, restricted: restricted, subject: p, changed: changed)])
                if changed { try await engine.bumpPopulationEpoch(conn) }
                return changed
            }
        }
    }

    /// Whether the subject is restricted; nil for an unknown subject.
    public func restricted(customerID: String) throws -> Bool? {
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("reading a restriction") { [engine] in
            try await engine.single("reading a restriction") { conn in
                try await engine.rows(conn, """
                    SELECT EXISTS(SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id) FROM profilevault.subjects s WHERE s.pseudonym = \(bytea(p))
                    """).first?.decode(Bool.self)
            }
        }
    }

    /// The pseudonyms among `pseudonyms` whose subject objects to `purpose`.
    public func objecting(pseudonyms: [[UInt8]], purpose: String) throws -> Set<[UInt8]> {
        let purpose = Self.compared(purpose)
        let distinct = Array(Set(pseudonyms))
        return try Self.wait("reading objections") { [self] in
            try await engine.transaction("reading objections", begin: Self.snapshot) { conn in
                var out = Set<[UInt8]>()
                guard try await engine.rows(conn, """
                    SELECT EXISTS(SELECT 1 FROM profilevault.consent_state WHERE purpose = \(purpose) AND NOT granted)
                    """).first?.decode(Bool.self) ?? false else { return out }
                var start = 0
                while start < distinct.count {
                    let chunk = distinct[start..<min(start + Self.statementRows, distinct.count)].map(bytea)
                    start += chunk.count
                    for row in try await engine.rows(conn, """
                        SELECT s.pseudonym FROM profilevault.subjects s
                        JOIN profilevault.consent_state cs ON cs.subject_id = s.id AND cs.purpose = \(purpose) AND NOT cs.granted
                        WHERE s.pseudonym = ANY(\(chunk)::bytea[])
                        """) {
                        out.insert(try row.decode(ByteBuffer.self).bytes)
                    }
                }
                return out
            }
        }
    }

    // MARK: - Consent import

    /// Appends imported consent evidence, all or nothing, as on SQLite: every subject resolved
    /// first (an unknown one refuses the import naming its line), then one transaction appends
    /// every row with its own time and moves the state when the row is at least as recent.
    public func importConsent(_ rows: [ConsentImportRow], file: String?, policyVersion: String, audit: AuditContext) throws -> Int {
        for r in rows {
            try StoredText.checkConsent(purpose: r.purpose, source: r.source, policyVersion: policyVersion, actor: audit.actor)
        }
        let pseudonyms = try rows.map { try pseudonym(ofCustomerID: $0.customerID) }
        let known = try Self.wait("resolving subjects") { [self] in
            try await engine.transaction("resolving subjects") { conn in try await subjectIDs(conn, pseudonyms) }
        }
        for (r, p) in zip(rows, pseudonyms) where known[p] == nil {
            if let file { throw VaultError(.notFound, "\(file):\(r.line): no subject with this customer ID") }
            throw VaultError(.notFound, "no subject with this customer ID")
        }
        let single = Set(pseudonyms).count == 1 ? pseudonyms.first : nil
        return try Self.wait("importing consent") { [self] in
            try await engine.transaction("importing consent") { conn in
                try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
                for purpose in Set(rows.map(\.purpose)).sorted() {
                    try await engine.exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceConsent), \(Self.consentLockKey(purpose)))")
                }
                let ids = try await subjectIDs(conn, pseudonyms)
                for (r, p) in zip(rows, pseudonyms) {
                    guard let id = ids[p] else {
                        throw PostgresStoreError(.notFound, "a subject was erased by another node meanwhile; no consent was imported")
                    }
                    try await engine.exec(conn, """
                        INSERT INTO profilevault.consent(subject_id, purpose, granted, time, actor, source, policy_version)
                        VALUES (\(id), \(r.purpose), \(r.granted), \(r.timeMillis), \(audit.actor), \(r.source), \(policyVersion))
                        """)
                    try await engine.exec(conn, """
                        INSERT INTO profilevault.consent_state(subject_id, purpose, granted, since)
                        VALUES (\(id), \(r.purpose), \(r.granted), \(r.timeMillis))
                        ON CONFLICT (purpose, subject_id) DO UPDATE SET granted = EXCLUDED.granted, since = EXCLUDED.since
                        WHERE profilevault.consent_state.since <= EXCLUDED.since
                        """)
                }
                try await engine.appendLocked(conn, [ProfileStore.consentImportRecord(audit, rows: rows, subject: single)])
                if !rows.isEmpty { try await engine.bumpPopulationEpoch(conn) }
                return rows.count
            }
        }
    }
}

// MARK: - Rectification (Art. 16)

extension PostgresProfiles {
    /// Rectifies one subject, all or nothing, as on SQLite: in one transaction (the subject's
    /// row locked), the current values decrypted, each changed PII field sealed again with the
    /// subject's own DEK and its blind-index entry replaced, each changed attribute written;
    /// the audit entry (field names only) commits with them. Returns the changed field names.
    public func rectify(customerID: String, values: [(FieldSpec, FieldValue)], audit: AuditContext) throws -> [String] {
        try StoredText.check(audit.actor, "actor")
        let p = try pseudonym(ofCustomerID: customerID)
        for (f, v) in values {
            if case .text(let s) = v, !Self.storable(s) { throw VaultError(.invalidInput, "field \(f.name): holds U+0000") }
        }
        // Columns from the schema: ids (c<id>, m<id>) and validated attribute names.
        var piiColumnsOf: [String: (c: String, m: String?)] = [:]
        for (f, _) in values where f.pii {
            guard let id = piiFieldIDs[f.name], let c = piiColumns.ciphertextColumn(id: id) else { continue }
            piiColumnsOf[f.name] = (c, piiColumns.macColumn(id: id))
        }
        var attributeColumns: [String: String] = [:]
        for (f, _) in values where !f.pii { attributeColumns[f.name] = try Self.attributeColumn(f.name) }
        let select = profileSelect + " WHERE s.pseudonym = $1 FOR UPDATE OF s"
        let macs = keys.blindIndexMACs
        let (piiCols, attrCols) = (piiColumnsOf, attributeColumns)
        let sendableValues = values.map { (name: $0.0.name, value: $0.1) }
        return try Self.wait("rectifying a subject") { [self] in
            try await engine.transaction("rectifying a subject") { conn in
                try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
                var binds = PostgresBindings()
                binds.append(bytea(p))
                guard let row = try await engine.rows(conn, PostgresQuery(unsafeSQL: select, binds: binds)).first else {
                    throw PostgresStoreError(.notFound, "no subject with this customer ID")
                }
                let fields = sendableValues.compactMap { v in schema.field(named: v.name).map { ($0, v.value) } }
                let changes: [RectifiedField]
                do {
                    let (id, kek, wrapped) = try row.decode((Int64, Int64, ByteBuffer).self)
                    let s = Subject(id: id, pseudonym: p, kekVersion: kek, wrappedDEK: wrapped.bytes)
                    let current = try profile(row, pseudonym: p, fields: Set(fields.map(\.0.name)))
                    changes = try ProfileStore.rectification(fields, current: current, pseudonym: p, dek: try dek(s), blindIndexMACs: macs)
                } catch {
                    throw PostgresStoreError.vaultError(error, "rectifying a subject")
                }
                let id = try row.decode((Int64, Int64, ByteBuffer).self).0
                if !changes.isEmpty {
                    var piiSets: [String] = [], attrSets: [String] = []
                    var piiBinds = PostgresBindings(), attrBinds = PostgresBindings()
                    for c in changes {
                        if c.field.pii {
                            guard let cols = piiCols[c.field.name] else { continue }
                            piiSets.append("\(cols.c) = $\(piiSets.count + 1)")
                            if let b = c.ciphertext { piiBinds.append(bytea(b)) } else { piiBinds.appendNull() }
                            if let m = cols.m {
                                piiSets.append("\(m) = $\(piiSets.count + 1)")
                                if let b = c.mac { piiBinds.append(bytea(b)) } else { piiBinds.appendNull() }
                            }
                        } else if let col = attrCols[c.field.name] {
                            attrSets.append("\(col) = $\(attrSets.count + 1)")
                            switch c.value {
                            case .null: attrBinds.appendNull()
                            case .int(let i): if c.field.type == .float { attrBinds.append(Double(i)) } else { attrBinds.append(i) }
                            case .float(let d): attrBinds.append(d)
                            case .bool(let b): attrBinds.append(b)
                            case .date(let d): attrBinds.append(d)
                            case .text(let s): attrBinds.append(s)
                            }
                        }
                    }
                    if !piiSets.isEmpty {
                        piiBinds.append(id)
                        try await engine.exec(conn, PostgresQuery(unsafeSQL: "UPDATE profilevault.pii SET \(piiSets.joined(separator: ", ")) WHERE subject_id = $\(piiSets.count + 1)", binds: piiBinds))
                    }
                    if !attrSets.isEmpty {
                        attrBinds.append(id)
                        try await engine.exec(conn, PostgresQuery(unsafeSQL: "UPDATE profilevault.attributes SET \(attrSets.joined(separator: ", ")) WHERE subject_id = $\(attrSets.count + 1)", binds: attrBinds))
                    }
                    try await engine.exec(conn, "UPDATE profilevault.subjects SET updated_at = \(Int64(Date().timeIntervalSince1970)) WHERE id = \(id)")
                }
                let names = changes.map(\.field.name)
                try await engine.appendLocked(conn, [ProfileStore.rectifyRecord(audit, subject: p, changed: names, asked: sendableValues.count)])
                if !names.isEmpty { try await engine.bumpPopulationEpoch(conn) }
                return names
            }
        }
    }
}
