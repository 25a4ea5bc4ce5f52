import Foundation
public import GRDB
public import VaultCrypto
public import VaultPolicy
import VaultAudit

/// A decrypted or plaintext value in a profile answer.
public enum ProfileValue: Sendable, Equatable {
    case null, int(Int64), float(Double), text(String), bool(Bool)
}

/// A subject's profile as one purpose may see it: fields in schema order.
public struct ProfileView: Sendable, Equatable {
    public var customerID: String
    public var fields: [(name: String, value: ProfileValue)]
    public static func == (a: ProfileView, b: ProfileView) -> Bool {
        a.customerID == b.customerID && a.fields.map(\.name) == b.fields.map(\.name) && a.fields.map(\.value) == b.fields.map(\.value)
    }
}

/// What one read of a subject's profile found (``ProfileStore/readProfile(pseudonym:fields:consentPurpose:)``).
public enum ProfileRead: Sendable, Equatable {
    /// No subject has this pseudonym.
    case notFound
    /// The subject exists but its consent for the purpose is not active; nothing was decrypted.
    case consentMissing
    /// The subject exists but its processing is restricted (GDPR Art. 18); nothing was decrypted.
    case restricted
    /// The decrypted profile.
    case found(ProfileView)
}

/// Store-wide counts.
public struct StoreStatus: Sendable {
    public var subjects: Int
    public var events: Int
    public var keyVersions: [UInt32]
    public var identityKeyVersion: UInt32
    public var schemaVersion: Int
    public var policyVersion: String
    public var fileBytes: Int64
    public var auditEntries: Int64
    /// Hash of the newest audit entry (hex); 64 zeros for an empty log.
    public var auditHead: String
    /// The policy in force (nil: none recorded yet, e.g. a store made by an older version).
    public var policy: PolicyRecord? = nil
}

/// What the database file holds for one subject, as raw bytes (for the demo and for audits of
/// the at-rest format): the pseudonym, the wrapped DEK and every PII ciphertext.
public struct RawSubjectRows: Sendable {
    public var pseudonymHex: String
    public var kekVersion: UInt32
    public var wrappedDEKHex: String
    public var pii: [(field: String, ciphertextHex: String)]
    public var blindIndex: [(field: String, macHex: String)]
    public var attributes: [(name: String, value: String)]
}


extension ProfileStore {
    /// The pseudonym of a customer ID under this store's identity key.
    ///
    /// Uses the store's shared, already keyed HMAC context pool: no algorithm fetch, context
    /// allocation or key setup per call. (It still `throws`, for source compatibility.)
    public func pseudonym(ofCustomerID id: String) throws -> [UInt8] {
        var norm = Normalization.customerID(id)
        let key = keys.pseudonymMAC
        return norm.withUTF8 { key.mac(UnsafeRawBufferPointer($0)) }
    }

    struct SubjectRow {
        var id: Int64
        var pseudonym: [UInt8]
        var kekVersion: UInt32
        var wrappedDEK: [UInt8]
        /// Set when the row's key version or wrapped DEK is not what the store writes (a
        /// negative or oversized version, an integer where the blob belongs): every read that
        /// needs the DEK fails with it as an integrity error. Erasure still works (it needs
        /// only the row id and the pseudonym).
        var keyDamage: VaultError? = nil

        /// Decodes the key columns of a subject row without trapping conversions.
        static func decode(id: Int64, pseudonym: [UInt8], kekVersion kv: DatabaseValue, wrappedDEK wv: DatabaseValue) -> SubjectRow {
            var damage: VaultError?
            var version: UInt32 = 0
            if let i = Stored.int(kv), let v = UInt32(exactly: i) {
                version = v
            } else if let i = Stored.int(kv) {
                damage = VaultError(.integrity, "subject row \(id): its key version \(i) is not a key version (0 to \(UInt32.max)): the store was altered")
            } else {
                damage = Stored.damaged(subject: id, "the key version column", kv, expected: "an integer")
            }
            let wrapped = Stored.blob(wv)
            if wrapped == nil, damage == nil { damage = Stored.damaged(subject: id, "the wrapped data key column", wv, expected: "a blob") }
            return SubjectRow(id: id, pseudonym: pseudonym, kekVersion: version, wrappedDEK: wrapped ?? [], keyDamage: damage)
        }

        /// Decodes a row of `SELECT id, pseudonym, kek_version, wrapped_dek` (by position, not by
        /// name: key rotation decodes every subject row of the store).
        static func decode(_ row: Row) throws -> SubjectRow {
            guard row.count == 4 else { throw VaultError(.internalFailure, "a subject row was read with \(row.count) columns, not 4") }
            let idValue = row.stored(at: 0)
            guard let id = Stored.int(idValue) else { throw VaultError(.integrity, "a subject row id holds \(Stored.kind(idValue)): the store was altered") }
            let p = row.stored(at: 1)
            guard let pseudonym = Stored.blob(p) else { throw Stored.damaged(subject: id, "the pseudonym column", p, expected: "a blob") }
            return decode(id: id, pseudonym: pseudonym, kekVersion: row.stored(at: 2), wrappedDEK: row.stored(at: 3))
        }
    }

    // The statements of the per-request reads are prepared once per connection
    // (`cachedStatement`): parsing SQL was a tenth of a GET's CPU time when they were not.

    func subjectRow(_ db: Database, pseudonym: [UInt8]) throws -> SubjectRow? {
        let statement = try db.cachedStatement(sql: "SELECT id, kek_version, wrapped_dek FROM subjects WHERE \(Self.pseudonymMatch)")
        guard let row = try Row.fetchOne(statement, arguments: [Data(pseudonym)]) else {
            return nil
        }
        let idValue = row.stored("id")
        guard let id = Stored.int(idValue) else { throw VaultError(.integrity, "a subject row id holds \(Stored.kind(idValue)): the store was altered") }
        return SubjectRow.decode(id: id, pseudonym: pseudonym, kekVersion: row.stored("kek_version"), wrappedDEK: row.stored("wrapped_dek"))
    }

    func subjectRow(_ db: Database, id: Int64) throws -> SubjectRow? {
        let statement = try db.cachedStatement(sql: "SELECT pseudonym, kek_version, wrapped_dek FROM subjects WHERE id = ?")
        guard let row = try Row.fetchOne(statement, arguments: [id]) else {
            return nil
        }
        let p = row.stored("pseudonym")
        guard let pseudonym = Stored.blob(p) else { throw Stored.damaged(subject: id, "the pseudonym column", p, expected: "a blob") }
        return SubjectRow.decode(id: id, pseudonym: pseudonym, kekVersion: row.stored("kek_version"), wrappedDEK: row.stored("wrapped_dek"))
    }

    /// Unwraps a subject's DEK; a wrong KEK or a modified blob is an integrity error.
    ///
    /// The KEK comes keyed from the store's pool (``SharedAESGCMKey``). The DEK's own key is
    /// owned by the returned instance alone (its contexts are freed and cleansed with it), so no
    /// subject's key schedule stays behind in a pooled context after the read.
    func dek(for s: SubjectRow) throws -> AESGCMKey {
        if let damage = s.keyDamage { throw damage }
        guard let kek = keyBox.kekCipher(s.kekVersion) else {
            throw VaultError(.integrity, "subject row \(s.id): its data key is wrapped with key version \(s.kekVersion), which the keyring does not hold (retired or missing)")
        }
        do {
            let dek = try kek.withKey { (k: AESGCMKey) throws(CryptoError) -> SecureBytes in
                try Envelope.unwrapDEK(s.wrappedDEK, subject: s.pseudonym, kekVersion: s.kekVersion, kek: k)
            }
            return try AESGCMKey(dek)
        } catch {
            throw VaultError(.integrity, "subject row \(s.id): the subject's wrapped data key does not verify (modified ciphertext or wrong keyring)")
        }
    }

    func openPII(_ blob: [UInt8], field: String, subject: SubjectRow, dek: AESGCMKey) throws -> String {
        do {
            let bytes = try Envelope.openField(blob, field: field, subject: subject.pseudonym, dek: dek)
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw VaultError(.integrity, "subject row \(subject.id): field \(field): decrypted value is not UTF-8")
            }
            return s
        } catch let e as VaultError {
            throw e
        } catch {
            throw VaultError(.integrity, "subject row \(subject.id): field \(field): ciphertext does not verify (modified, moved from another subject or field, or wrong keyring)")
        }
    }

    package static func profileValue(_ text: String, type: FieldType) -> ProfileValue {
        switch type {
        case .int: Int64(text).map(ProfileValue.int) ?? .text(text)
        case .float: Double(text).map(ProfileValue.float) ?? .text(text)
        case .bool: .bool(text == "true")
        default: .text(text)
        }
    }

    /// A stored attribute as its field's type. A value of another storage class than ingest
    /// writes for the type (text in an int column, a blob anywhere, a real in a bool) is an
    /// integrity error naming the subject's row and the field, never the value.
    static func profileValue(_ dbv: DatabaseValue, field f: FieldSpec, subject id: Int64) throws -> ProfileValue {
        switch (dbv.storage, f.type) {
        case (.null, _): return .null
        case (.int64(let i), .date):
            guard let days = Int32(exactly: i) else { throw Stored.damaged(subject: id, "field \(f.name)", dbv, expected: "a day number") }
            return .text(DateParsing.isoDate(days: days))
        case (.int64(let i), .bool):
            guard i == 0 || i == 1 else { throw Stored.damaged(subject: id, "field \(f.name)", dbv, expected: "0 or 1") }
            return .bool(i != 0)
        case (.int64(let i), .float): return .float(Double(i))
        case (.int64(let i), .int): return .int(i)
        case (.double(let d), .float): return .float(d)
        case (.string(let s), .category), (.string(let s), .string): return .text(s)
        default:
            throw Stored.damaged(subject: id, "field \(f.name)", dbv, expected: "a \(f.type.rawValue) value")
        }
    }

    /// The decrypted profile of one subject, restricted to `fields` (schema field names).
    /// Returns nil when no subject has this customer ID.
    public func profile(customerID: String, fields wanted: Set<String>) throws -> ProfileView? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db -> ProfileView? in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            return try profile(db, subject: s, fields: wanted)
        }
    }

    /// One subject's profile in one read transaction: whether the subject exists, then (with
    /// `consentPurpose`) whether its consent for that purpose is active now, and only then the
    /// decryption. The caller computes the pseudonym once and passes it (and reuses it, e.g. for
    /// the audit entry).
    public func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, consentPurpose: String?) throws -> ProfileRead {
        try pool.read { db -> ProfileRead in
            guard let s = try subjectRow(db, pseudonym: pseudonym) else { return .notFound }
            if try isRestricted(db, subjectID: s.id) { return .restricted }
            if let consentPurpose {
                let statement = try db.cachedStatement(sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?")
                guard try Bool.fetchOne(statement, arguments: [consentPurpose, s.id]) ?? false else { return .consentMissing }
            }
            return .found(try profile(db, subject: s, fields: wanted))
        }
    }

    func profile(_ db: Database, subject s: SubjectRow, fields wanted: Set<String>) throws -> ProfileView {
        let dek = try dek(for: s)
        var blobs: [Int: [UInt8]] = [:]
        let piiRow = try db.cachedStatement(sql: "SELECT \(piiColumns.ciphertext.map(\.column).joined(separator: ", ")) FROM pii WHERE subject_id = ?")
        if let row = try Row.fetchOne(piiRow, arguments: [s.id]) {
            for (i, c) in piiColumns.ciphertext.enumerated() {
                let v = row.stored(at: i)
                if v.isNull { continue }
                guard let d = Stored.blob(v) else { throw Stored.damaged(subject: s.id, "the ciphertext of field \(c.field)", v, expected: "a blob") }
                blobs[c.id] = d
            }
        }
        guard let idBlob = blobs[piiFieldIDs[schema.subjectIDField] ?? 0] else {
            throw VaultError(.integrity, "subject row \(s.id): subject has no stored customer ID (row missing)")
        }
        let customerID = try openPII(idBlob, field: schema.subjectIDField, subject: s, dek: dek)
        let attrNames = schema.attributeFields.filter { wanted.contains($0.name) }
        var attrRow: Row?
        if !attrNames.isEmpty {
            let cols = attrNames.map { ProfileStore.quoted($0.name) }.joined(separator: ", ")
            // One statement per purpose's column list: few distinct texts, each prepared once.
            attrRow = try Row.fetchOne(try db.cachedStatement(sql: "SELECT \(cols) FROM attributes WHERE subject_id = ?"), arguments: [s.id])
        }
        var out: [(String, ProfileValue)] = []
        for f in schema.fields where wanted.contains(f.name) {
            if f.pii {
                guard let fid = piiFieldIDs[f.name], let blob = blobs[fid] else {
                    // Ingest refuses a record without a required field: its absence is damage.
                    if f.required { throw VaultError(.integrity, "subject row \(s.id): required field \(f.name) has no stored ciphertext: the store was altered") }
                    out.append((f.name, .null))
                    continue
                }
                out.append((f.name, ProfileStore.profileValue(try openPII(blob, field: f.name, subject: s, dek: dek), type: f.type)))
            } else {
                let dbv: DatabaseValue = attrRow?[f.name] ?? .null
                out.append((f.name, try ProfileStore.profileValue(dbv, field: f, subject: s.id)))
            }
        }
        return ProfileView(customerID: customerID, fields: out)
    }

    /// Blind-index lookup: the customer IDs of subjects whose lookup field `field` equals `value`
    /// after normalisation. Never scans plaintext; the store holds none.
    public func find(field: String, value: String) throws -> [String] {
        guard let spec = schema.field(named: field), spec.pii, spec.lookup, let mac = keys.blindIndexMACs[field], let fid = piiFieldIDs[field],
              let macColumn = piiColumns.macColumn(id: fid), let valueColumn = piiColumns.ciphertextColumn(id: fid),
              let idColumn = piiColumns.ciphertextColumn(id: piiFieldIDs[schema.subjectIDField] ?? 0) else {
            throw VaultError(.configuration, "field \(field) is not a lookup field of the schema")
        }
        var norm = Normalization.lookupValue(value, for: spec)
        if norm.isEmpty { return [] }
        let digest = ProfileStore.blindIndexEntry(norm.withUTF8 { mac.mac(UnsafeRawBufferPointer($0)) })
        return try pool.read { db in
            let ids = try Int64.fetchAll(db, sql: "SELECT subject_id FROM pii WHERE \(macColumn) = ? ORDER BY subject_id", arguments: [Data(digest)])
            var out: [String] = []
            for id in ids {
                guard let s = try subjectRow(db, id: id),
                      let row = try Row.fetchOne(db, sql: "SELECT \(valueColumn), \(idColumn) FROM pii WHERE subject_id = ?", arguments: [id]) else { continue }
                // A blind-index entry without its ciphertext, or a non-blob, is damage.
                guard let stored = Stored.blob(row.stored(at: 0)) else {
                    throw Stored.damaged(subject: id, "the ciphertext of field \(field)", row.stored(at: 0), expected: "a blob")
                }
                guard let idBlob = Stored.blob(row.stored(at: 1)) else {
                    throw Stored.damaged(subject: id, "the ciphertext of field \(schema.subjectIDField)", row.stored(at: 1), expected: "a blob")
                }
                let dek = try dek(for: s)
                // Confirm the match on the decrypted value (the index holds truncated MACs).
                guard Normalization.lookupValue(try openPII([UInt8](stored), field: field, subject: s, dek: dek), for: spec) == norm else { continue }
                out.append(try openPII([UInt8](idBlob), field: schema.subjectIDField, subject: s, dek: dek))
            }
            return out
        }
    }

    /// A blind-index entry: the HMAC truncated to 64 bits. Every match is confirmed by
    /// decrypting the field, so a collision (about n^2 / 2^65 for n values: 3e-8 at a million)
    /// costs one decryption and never a wrong answer; the short key keeps the index small, which
    /// is what bulk ingest pays for (docs/benchmarks.md).
    package static let blindIndexBytes = 8
    package static func blindIndexEntry(_ mac: [UInt8]) -> [UInt8] { Array(mac.prefix(blindIndexBytes)) }

    /// The lookup field of a data category (`user.contact.email`, `user.contact.phone_number`).
    public func lookupField(category: String) -> FieldSpec? {
        schema.fields.first { $0.pii && $0.lookup && Taxonomy.covers(category, $0.category) }
    }

    public func status() throws -> StoreStatus { try Self.status(pool) }

    /// Counts and metadata, readable without the keyring.
    public static func status(path: String) throws -> StoreStatus {
        let pool = try openPool(path: path)
        defer { try? pool.close() }
        return try status(pool)
    }

    static func status(_ pool: DatabasePool) throws -> StoreStatus {
        try pool.read { db in
            let subjects = try Int.fetchOne(db, sql: "SELECT count(*) FROM subjects") ?? 0
            let events = try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0
            let versions = try Int64.fetchAll(db, sql: "SELECT version FROM key_versions WHERE retired = 0 ORDER BY version").map {
                guard let v = UInt32(exactly: $0) else { throw VaultError(.integrity, "the key_versions table holds key version \($0): the file was edited") }
                return v
            }
            let meta = try ProfileStore.readMeta(db)
            var auditEntries: Int64 = 0
            var auditHead = AuditLog.hex(AuditLog.genesis)
            if try db.tableExists("audit"), let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") {
                auditEntries = row["seq"]
                // A non-blob hash (an edited log) shows as no head; `audit verify` names the damage.
                auditHead = row.auditBlob("hash").map(AuditLog.hex) ?? ""
            }
            let pageCount = try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0
            let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 0
            return StoreStatus(subjects: subjects, events: events, keyVersions: versions,
                               identityKeyVersion: UInt32(meta["identity_key_version"] ?? "0") ?? 0,
                               schemaVersion: Int(meta["schema_version"] ?? "0") ?? 0,
                               policyVersion: meta["policy_version"] ?? "", fileBytes: pageCount * pageSize,
                               auditEntries: auditEntries, auditHead: auditHead, policy: try latestPolicy(db))
        }
    }

    /// The raw rows for one subject, without decrypting anything.
    public func rawRows(customerID: String) throws -> RawSubjectRows? {
        let pseudo = try pseudonym(ofCustomerID: customerID)
        return try pool.read { db -> RawSubjectRows? in
            guard let s = try subjectRow(db, pseudonym: pseudo) else { return nil }
            if let damage = s.keyDamage { throw damage }
            var pii: [(String, String)] = []
            var blind: [(String, String)] = []
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM pii WHERE subject_id = ?", arguments: [s.id]) {
                for c in piiColumns.ciphertext { if let d = Stored.blob(row.stored(c.column)) { pii.append((c.field, AuditLog.hex(d))) } }
                for c in piiColumns.macs { if let d = Stored.blob(row.stored(c.column)) { blind.append((c.field, AuditLog.hex(d))) } }
            }
            var attrs: [(String, String)] = []
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM attributes WHERE subject_id = ?", arguments: [s.id]) {
                for f in schema.attributeFields {
                    let v: DatabaseValue = row[f.name] ?? .null
                    attrs.append((f.name, v.isNull ? "NULL" : "\(v)"))
                }
            }
            return RawSubjectRows(pseudonymHex: AuditLog.hex(s.pseudonym), kekVersion: s.kekVersion, wrappedDEKHex: AuditLog.hex(s.wrappedDEK), pii: pii, blindIndex: blind, attributes: attrs)
        }
    }
}
