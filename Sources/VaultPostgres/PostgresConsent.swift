import Foundation
import PostgresNIO
public import VaultAudit
import VaultCrypto
import VaultPolicy
public import VaultStore
import VaultValues

/// The consent ledger and state, consent-checked reads, the access export, the raw rows and a
/// subject's own items on PostgreSQL (issue 18), with the SQLite engine's signatures, results,
/// errors and audit entries (VaultStore's Privacy.swift, Reads.swift, DPSource.swift).
///
/// Tables (migration 4): `consent` is the append-only ledger (the service role holds SELECT,
/// INSERT and DELETE, the last for erasure; an UPDATE trigger refuses even the owner) and
/// `consent_state` the state it leads to, one row per (purpose, subject). Both reference
/// `subjects`, and erasure deletes them with the subject.
///
/// PostgreSQL's `text` cannot hold U+0000. A value with it that would be written (a purpose,
/// a source, a policy version, an actor) is refused (invalid input) before anything is read or
/// written, by the check both engines share (`StoredText`; SQLite would otherwise store its
/// prefix before the U+0000, as GRDB binds text up to its first NUL). A value only compared (a purpose or an event kind asked about) is compared as SQLite compares
/// it: its prefix before the first U+0000 (``compared(_:)``), so both engines answer alike.
extension PostgresProfiles {
    /// Advisory lock (namespace, key of the purpose): consent changes for one purpose run one
    /// at a time across nodes, so each reads the state the one before it left.
    static let lockNamespaceConsent: Int32 = 0x5056_4300   // "PVC"

    /// The lock key of a purpose: the first four bytes of its SHA-256 (two purposes sharing a
    /// key only wait for each other).
    static func consentLockKey(_ purpose: String) -> Int32 {
        let h = SHA256.hash(Array(purpose.utf8))
        return Int32(bitPattern: UInt32(h[0]) << 24 | UInt32(h[1]) << 16 | UInt32(h[2]) << 8 | UInt32(h[3]))
    }

    /// Whether PostgreSQL's `text` can hold `s` (it cannot hold U+0000).
    static func storable(_ s: String) -> Bool { !s.utf8.contains(0) }

    /// What SQLite compares a bound text as: its bytes up to the first U+0000.
    static func compared(_ s: String) -> String { String(decoding: s.utf8.prefix { $0 != 0 }, as: UTF8.self) }

    static let snapshot: PostgresQuery = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    /// ``profileSelect`` with `extra` columns after its own (what ``profile(_:pseudonym:fields:)``
    /// decodes is unchanged), and the index of the first of them.
    func profileSelect(adding extra: String) -> (sql: String, index: Int) {
        let sql = profileSelect.replacingOccurrences(of: " FROM profilevault.subjects s", with: ", \(extra) FROM profilevault.subjects s")
        return (sql, 3 + piiColumns.valueColumns.count + schema.attributeFields.count)
    }

    /// The row ids of the subjects with these pseudonyms, in statements of at most
    /// ``statementRows`` pseudonyms.
    func subjectIDs(_ conn: PostgresConnection, _ pseudonyms: [[UInt8]]) async throws -> [[UInt8]: Int64] {
        var out: [[UInt8]: Int64] = [:]
        var start = 0
        let distinct = Array(Set(pseudonyms))
        while start < distinct.count {
            let chunk = distinct[start..<min(start + Self.statementRows, distinct.count)].map(bytea)
            start += chunk.count
            for row in try await engine.rows(conn, "SELECT pseudonym, id FROM profilevault.subjects WHERE pseudonym = ANY(\(chunk)::bytea[])") {
                let (p, id) = try row.decode((ByteBuffer, Int64).self)
                out[p.bytes] = id
            }
        }
        return out
    }

    // MARK: - Consent

    /// Grants or revokes consent for `purpose`, as on SQLite: every ID is resolved before
    /// anything is written (the first unknown one refuses the whole call, naming its line);
    /// then, in transactions of 2,000 IDs, each subject whose state changes gets a ledger row
    /// and its new state, and each transaction appends its audit entry (naming the pseudonym
    /// when the call names one subject) before it commits. An ID named again sees the state
    /// its first mention left. Returns how many subjects' state changed.
    ///
    /// Each transaction holds the subjects lock shared (an erasure runs before or after it,
    /// never between its statements) and the purpose's consent lock; a subject erased by
    /// another node after the IDs were resolved refuses that transaction (not found).
    public func setConsent(_ ids: [(line: Int, id: String)], file: String?, purpose: String, granted: Bool,
                           source: String?, policyVersion: String, audit: AuditContext) throws -> Int {
        try StoredText.checkConsent(purpose: purpose, source: source, policyVersion: policyVersion, actor: audit.actor)
        let pseudonyms = try ids.map { try pseudonym(ofCustomerID: $0.id) }
        let (known, now) = try Self.wait("resolving subjects") { [self] in
            try await engine.transaction("resolving subjects") { conn in
                let known = try await subjectIDs(conn, pseudonyms)
                let now = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first?.decode(Int64.self) ?? AuditLog.nowMillis
                return (known, now)
            }
        }
        for ((line, _), p) in zip(ids, pseudonyms) where known[p] == nil {
            if let file { throw VaultError(.notFound, "\(file):\(line): no subject with this customer ID") }
            throw VaultError(.notFound, "no subject with this customer ID")
        }
        let single = pseudonyms.count == 1 ? pseudonyms.first : nil
        var changed = 0
        for start in stride(from: 0, to: pseudonyms.count, by: 2000) {
            let chunk = Array(pseudonyms[start..<min(start + 2000, pseudonyms.count)])
            changed += try Self.wait("setting consent") {
                try await self.writeConsent(chunk, purpose: purpose, granted: granted, source: source, policyVersion: policyVersion,
                                            now: now, single: single, audit: audit)
            }
        }
        return changed
    }

    /// One transaction of consent changes with its audit entry.
    func writeConsent(_ pseudonyms: [[UInt8]], purpose: String, granted: Bool, source: String?, policyVersion: String, now: Int64,
                      single: [UInt8]?, audit: AuditContext) async throws -> Int {
        try await engine.transaction("setting consent") { conn in
            try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
            try await engine.exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceConsent), \(Self.consentLockKey(purpose)))")
            let ids = try await subjectIDs(conn, pseudonyms)
            var state: [Int64: Bool] = [:]
            let distinct = Array(Set(ids.values))
            for row in try await engine.rows(conn, """
                SELECT subject_id, granted FROM profilevault.consent_state WHERE purpose = \(purpose) AND subject_id = ANY(\(distinct)::bigint[])
                """) {
                let (id, g) = try row.decode((Int64, Bool).self)
                state[id] = g
            }
            var changes: [Int64] = []
            for p in pseudonyms {
                guard let id = ids[p] else {
                    throw PostgresStoreError(.notFound, "a subject was erased by another node meanwhile; consent for this batch was not changed")
                }
                let was = state[id]
                // No change: nothing to record. An objection (Art. 21) is recorded even where no
                // state was, as on SQLite.
                if was == granted || (was == nil && !granted && source != ProfileStore.objectionSource) { continue }
                changes.append(id)
                state[id] = granted
            }
            if !changes.isEmpty {
                try await engine.exec(conn, """
                    INSERT INTO profilevault.consent(subject_id, purpose, granted, time, actor, source, policy_version)
                    SELECT s, \(purpose), \(granted), \(now), \(audit.actor), \(source), \(policyVersion)
                    FROM unnest(\(changes)::bigint[]) WITH ORDINALITY AS t(s, n) ORDER BY n
                    """)
                try await engine.exec(conn, """
                    INSERT INTO profilevault.consent_state(subject_id, purpose, granted, since)
                    SELECT s, \(purpose), \(granted), \(now) FROM unnest(\(changes)::bigint[]) AS t(s)
                    ON CONFLICT (purpose, subject_id) DO UPDATE SET granted = EXCLUDED.granted, since = EXCLUDED.since
                    """)
            }
            try await engine.appendLocked(conn, [ProfileStore.consentRecord(audit, purpose: purpose, granted: granted, subject: single,
                                                                           source: source, changed: changes.count,
                                                                           unchanged: pseudonyms.count - changes.count)])
            if !changes.isEmpty { try await engine.bumpPopulationEpoch(conn) }
            return changes.count
        }
    }

    /// Whether a subject's consent for `purpose` is active now (false for an unknown subject).
    public func hasConsent(customerID: String, purpose: String) throws -> Bool {
        let p = try pseudonym(ofCustomerID: customerID)
        let purpose = Self.compared(purpose)
        return try Self.wait("reading consent") { [engine] in
            try await engine.transaction("reading consent") { conn in
                try await engine.rows(conn, """
                    SELECT cs.granted FROM profilevault.subjects s
                    JOIN profilevault.consent_state cs ON cs.subject_id = s.id AND cs.purpose = \(purpose)
                    WHERE s.pseudonym = \(bytea(p))
                    """).first?.decode(Bool.self) ?? false
            }
        }
    }

    /// A subject's current consent per purpose it has a state for; nil for an unknown subject.
    public func consentState(customerID: String) throws -> [String: ConsentState]? {
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("reading consent") { [engine] in
            try await engine.transaction("reading consent") { conn -> [String: ConsentState]? in
                let rows = try await engine.rows(conn, """
                    SELECT cs.purpose, cs.granted, cs.since FROM profilevault.subjects s
                    LEFT JOIN profilevault.consent_state cs ON cs.subject_id = s.id
                    WHERE s.pseudonym = \(bytea(p))
                    """)
                guard !rows.isEmpty else { return nil }
                var out: [String: ConsentState] = [:]
                for row in rows {
                    let (purpose, granted, since) = try row.decode((String?, Bool?, Int64?).self)
                    guard let purpose, let granted, let since else { continue }   // the subject, without any state
                    out[purpose] = ConsentState(granted: granted, sinceMillis: since)
                }
                return out
            }
        }
    }

    /// A subject's consent ledger, oldest first; nil for an unknown subject.
    public func consentHistory(customerID: String) throws -> [ConsentEntry]? {
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("reading consent") { [self] in
            try await engine.transaction("reading consent", begin: Self.snapshot) { conn -> [ConsentEntry]? in
                guard let id = try await engine.rows(conn, "SELECT id FROM profilevault.subjects WHERE pseudonym = \(bytea(p))").first?.decode(Int64.self) else {
                    return nil
                }
                return try await consentHistory(conn, subjectID: id)
            }
        }
    }

    func consentHistory(_ conn: PostgresConnection, subjectID: Int64) async throws -> [ConsentEntry] {
        try await engine.rows(conn, """
            SELECT purpose, granted, time, actor, source, policy_version FROM profilevault.consent WHERE subject_id = \(subjectID) ORDER BY id
            """).map { row in
            let (purpose, granted, time, actor, source, version) = try row.decode((String, Bool, Int64, String, String?, String).self)
            return ConsentEntry.make(purpose: purpose, granted: granted, timeMillis: time, actor: actor, source: source, policyVersion: version)
        }
    }

    // MARK: - Consent-checked reads

    /// One subject's profile with its consent for `purpose` checked in the same statement:
    /// not found, consent missing (nothing decrypted), or the decrypted profile.
    func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, checkingConsentFor purpose: String) throws -> ProfileRead {
        let purpose = Self.compared(purpose)
        let (select, grantedIndex) = profileSelect(adding: "(SELECT cs.granted FROM profilevault.consent_state cs WHERE cs.purpose = $2 AND cs.subject_id = s.id), "
                                                   + "EXISTS(SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id)")
        let sql = select + " WHERE s.pseudonym = $1"
        let row = try Self.wait("reading a profile") { [engine] in
            try await engine.single("reading a profile") { conn in
                var binds = PostgresBindings()
                binds.append(bytea(pseudonym))
                binds.append(purpose)
                return try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)).first
            }
        }
        guard let row else { return .notFound }
        do {
            if try PostgresRandomAccessRow(row)[grantedIndex + 1].decode(Bool.self) { return .restricted }
            guard try PostgresRandomAccessRow(row)[grantedIndex].decode(Bool?.self) == true else { return .consentMissing }
            return .found(try profile(row, pseudonym: pseudonym, fields: wanted))
        } catch {
            throw PostgresStoreError.vaultError(error, "reading a profile")
        }
    }

    // MARK: - Access export

    /// Everything held about one subject, decrypted (as on SQLite): the profile, the times, the
    /// events (by time), the consent ledger and the audit entries naming the subject, from one
    /// snapshot. Nil for an unknown (or erased) subject.
    public func accessExport(customerID: String) throws -> AccessExport? {
        let p = try pseudonym(ofCustomerID: customerID)
        let (select, timesBase) = profileSelect(adding: "s.created_at, s.updated_at, s.last_activity, s.created_batch, s.updated_batch")
        let sql = select + " WHERE s.pseudonym = $1"
        let found = try Self.wait("exporting a subject") { [self] in
            try await engine.transaction("exporting a subject", begin: Self.snapshot) {
                conn -> (PostgresRow, [(kind: String, item: String, value: Double, time: Int64)], [ConsentEntry], [String], [IngestBatchInfo])? in
                var binds = PostgresBindings()
                binds.append(bytea(p))
                guard let row = try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)).first else { return nil }
                let id = try row.decode(Int64.self)
                let events = try await engine.rows(conn, "SELECT kind, item, value, time FROM profilevault.events WHERE subject_id = \(id) ORDER BY time, id").map {
                    row -> (kind: String, item: String, value: Double, time: Int64) in
                    let (k, i, v, t) = try row.decode((String, String, Double, Int64).self)
                    return (k, i, v, t)
                }
                let consent = try await consentHistory(conn, subjectID: id)
                let audit = try await engine.rows(conn, "SELECT entry FROM profilevault.audit_log WHERE subject = \(bytea(p)) ORDER BY seq").map {
                    try $0.decode(String.self)
                }
                let batches = try await engine.rows(conn, """
                    SELECT b.id, b.kind, b.time, b.source, b.actor, b.inserted, b.updated, b.unchanged, b.rejected
                    FROM profilevault.ingest_batches b JOIN profilevault.subjects s ON b.id IN (s.created_batch, s.updated_batch)
                    WHERE s.id = \(id)
                    """).map { row -> IngestBatchInfo in
                    let c = try row.decode((Int64, String, Int64, String, String, Int64, Int64, Int64, Int64).self)
                    return IngestBatchInfo(id: c.0, kind: c.1, time: c.2, source: c.3, actor: c.4, inserted: c.5,
                                           updated: c.6, unchanged: c.7, rejected: c.8)
                }
                return (row, events, consent, audit, batches)
            }
        }
        guard let found else { return nil }
        let (row, events, consent, audit, batches) = found
        do {
            let view = try profile(row, pseudonym: p, fields: Set(schema.fields.map(\.name)))
            let cells = PostgresRandomAccessRow(row)
            let (created, updated, last) = (try cells[timesBase].decode(Int64.self), try cells[timesBase + 1].decode(Int64.self),
                                            try cells[timesBase + 2].decode(Int64.self))
            let (createdBatch, updatedBatch) = (try cells[timesBase + 3].decode(Int64?.self), try cells[timesBase + 4].decode(Int64?.self))
            return AccessExport.make(customerID: view.customerID, pseudonym: AuditLog.hex(p), createdAt: created, updatedAt: updated,
                                     lastActivity: last, profile: view, events: events, consent: consent, auditEntries: audit,
                                     createdBy: batches.first { $0.id == createdBatch }, updatedBy: batches.first { $0.id == updatedBatch })
        } catch {
            throw PostgresStoreError.vaultError(error, "exporting a subject")
        }
    }

    // MARK: - Raw rows

    /// The raw rows for one subject, without decrypting anything (as on SQLite): the
    /// pseudonym, the key version, the wrapped data key and every stored ciphertext and MAC as
    /// hex, and the plaintext attributes rendered as SQLite renders its values (text quoted,
    /// dates as day numbers, booleans as 0 or 1, `NULL`). Nil for an unknown subject.
    public func rawRows(customerID: String) throws -> RawSubjectRows? {
        let p = try pseudonym(ofCustomerID: customerID)
        let sql = profileSelect + " WHERE s.pseudonym = $1"
        let row = try Self.wait("reading a subject's rows") { [engine] in
            try await engine.transaction("reading a subject's rows") { conn in
                var binds = PostgresBindings()
                binds.append(bytea(p))
                return try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)).first
            }
        }
        guard let row else { return nil }
        do {
            let cells = PostgresRandomAccessRow(row)
            let (id, kek, wrapped) = try row.decode((Int64, Int64, ByteBuffer).self)
            guard let version = UInt32(exactly: kek) else {
                throw VaultError(.integrity, "subject row \(id): its key version \(kek) is not a key version (0 to \(UInt32.max)): the store was altered")
            }
            var index: [String: Int] = [:]
            for (i, c) in piiColumns.valueColumns.enumerated() { index[c.column] = 3 + i }
            func hex(_ c: PIIColumns.Column) throws -> String? {
                guard let i = index[c.column] else { return nil }
                return try cells[i].decode(ByteBuffer?.self).map { AuditLog.hex($0.bytes) }
            }
            let pii = try piiColumns.ciphertext.compactMap { c in try hex(c).map { (field: c.field, ciphertextHex: $0) } }
            let blind = try piiColumns.macs.compactMap { c in try hex(c).map { (field: c.field, macHex: $0) } }
            let attrBase = 3 + piiColumns.valueColumns.count
            var attrs: [(name: String, value: String)] = []
            for (i, f) in schema.attributeFields.enumerated() {
                let cell = cells[attrBase + i]
                let text: String? = switch f.type {
                case .int: try cell.decode(Int64?.self).map { String($0) }
                case .float: try cell.decode(Double?.self).map { String($0) }
                case .date: try cell.decode(Int32?.self).map { String($0) }
                case .bool: try cell.decode(Bool?.self).map { $0 ? "1" : "0" }
                case .string, .category: try cell.decode(String?.self).map { String(reflecting: $0) }
                }
                attrs.append((f.name, text ?? "NULL"))
            }
            return RawSubjectRows.make(pseudonymHex: AuditLog.hex(p), kekVersion: version, wrappedDEKHex: AuditLog.hex(wrapped.bytes),
                                       pii: pii, blindIndex: blind, attributes: attrs)
        } catch {
            throw PostgresStoreError.vaultError(error, "reading a subject's rows")
        }
    }

    // MARK: - A subject's own items

    /// The distinct items of `kind` each subject has events for, with its consent for
    /// `consentPurpose` (nil: consent not needed, reported true) and, when asked, its value of
    /// a categorical attribute, from one snapshot (as on SQLite). An unknown subject has nil
    /// items; a subject without consent has no items and no segment.
    public func subjectItems(customerIDs: [String], kind: String, consentPurpose: String?, segmentAttribute: String? = nil) throws -> [SubjectItems] {
        let pseudonyms = try customerIDs.map { try pseudonym(ofCustomerID: $0) }
        let kind = Self.compared(kind), consentPurpose = consentPurpose.map(Self.compared)
        let segmentSQL = try segmentAttribute.map { name -> String in
            guard let f = schema.attributeFields.first(where: { $0.name == name }), f.type == .category else {
                throw VaultError(.usage, "\(name) is not a categorical attribute")
            }
            let column = try Self.attributeColumn(f.name)
            return "SELECT subject_id, \(column) FROM profilevault.attributes WHERE subject_id = ANY($1::bigint[])"
        }
        let (ids, consenting, items, segments) = try Self.wait("reading subjects' items") { [self] in
            try await engine.transaction("reading subjects' items", begin: Self.snapshot) { conn in
                let ids = try await subjectIDs(conn, pseudonyms)
                let all = Array(Set(ids.values)).sorted()
                var consenting = Set<Int64>()
                if let consentPurpose {
                    for chunk in Self.chunks(all) {
                        for row in try await engine.rows(conn, """
                            SELECT subject_id FROM profilevault.consent_state
                            WHERE purpose = \(consentPurpose) AND granted AND subject_id = ANY(\(chunk)::bigint[])
                            """) {
                            consenting.insert(try row.decode(Int64.self))
                        }
                    }
                } else {
                    consenting = Set(all)
                }
                // A restricted subject (Art. 18) is served as one without consent.
                for chunk in Self.chunks(all) {
                    for row in try await engine.rows(conn, "SELECT subject_id FROM profilevault.restriction WHERE subject_id = ANY(\(chunk)::bigint[])") {
                        consenting.remove(try row.decode(Int64.self))
                    }
                }
                let served = consenting.sorted()
                var items: [Int64: Set<String>] = [:]
                for chunk in Self.chunks(served) {
                    for row in try await engine.rows(conn, """
                        SELECT DISTINCT subject_id, item FROM profilevault.events WHERE kind = \(kind) AND subject_id = ANY(\(chunk)::bigint[])
                        """) {
                        let (id, item) = try row.decode((Int64, String).self)
                        items[id, default: []].insert(item)
                    }
                }
                var segments: [Int64: String] = [:]
                if let segmentSQL {
                    for chunk in Self.chunks(served) {
                        var binds = PostgresBindings()
                        try binds.append(chunk)
                        for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: segmentSQL, binds: binds)) {
                            let (id, value) = try row.decode((Int64, String?).self)
                            if let value { segments[id] = value }
                        }
                    }
                }
                return (ids, consenting, items, segments)
            }
        }
        return zip(customerIDs, pseudonyms).map { id, p in
            guard let sid = ids[p] else { return SubjectItems.make(customerID: id, pseudonym: p, items: nil, consent: false) }
            let consent = consenting.contains(sid)
            return SubjectItems.make(customerID: id, pseudonym: p, items: consent ? items[sid] ?? [] : [], consent: consent,
                                     segment: consent ? segments[sid] : nil)
        }
    }

    /// `values` in slices of at most ``statementRows`` (one bound array each).
    static func chunks(_ values: [Int64]) -> [[Int64]] {
        stride(from: 0, to: values.count, by: statementRows).map { Array(values[$0..<min($0 + statementRows, values.count)]) }
    }
}
