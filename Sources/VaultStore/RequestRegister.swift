import Foundation
public import GRDB
public import VaultAudit
public import VaultCrypto
import VaultValues

// The request register (issue 19): data-subject requests with their deadlines, as metadata in
// the clear and everything a person wrote or that names the customer sealed.
//
// What is stored in the clear: the request id (random), its type, the subject's pseudonym, the
// received / due / extended-due times, the channel, the status, the outcome (an erasure
// receipt's audit hash or an export's SHA-256), who opened and closed it, and when. What is
// sealed (AES-256-GCM under the register key, derived from the keyring's identity version like
// the pseudonym key; the associated data binds each value to its request, column and subject):
// the customer ID, the note, and the extension and denial reasons (free text that may name a
// person). Erasure of a subject deletes (sets NULL) the sealed columns of every request about
// it, in the erasure's transaction: the register then keeps the pseudonym and the metadata,
// like the suppression list and the audit log, and nothing that names the person.

/// What a data subject asked for (GDPR Art. 15-21).
public enum RequestType: String, CaseIterable, Sendable {
    case access, erasure, rectification, restriction, objection, portability
}

/// How the request arrived.
public enum RequestChannel: String, CaseIterable, Sendable {
    case web, email, letter, phone
}

/// Where a request stands: `open` until fulfilled (`done`) or refused (`denied`); a closed
/// request never changes again.
public enum RequestStatus: String, CaseIterable, Sendable {
    case open, done, denied
}

/// One request of the register, metadata only (nothing sealed is decrypted to list it).
public struct RegisterEntry: Sendable, Equatable {
    public var id: String
    public var type: RequestType
    public var pseudonym: [UInt8]
    public var receivedMillis: Int64
    /// `received + deadline` (the policy's `requests.deadline` when it was opened).
    public var dueMillis: Int64
    /// Set by the one extension a request may have: `due + extension`.
    public var extendedDueMillis: Int64?
    public var channel: RequestChannel?
    public var status: RequestStatus
    /// The fulfilment's result: `receipt:<audit hash>`, `sha256:<export digest>`, or `done`.
    public var outcome: String?
    public var openedAtMillis: Int64
    public var openedBy: String
    public var closedAtMillis: Int64?
    public var closedBy: String?

    package init(id: String, type: RequestType, pseudonym: [UInt8], receivedMillis: Int64, dueMillis: Int64, extendedDueMillis: Int64?,
                 channel: RequestChannel?, status: RequestStatus, outcome: String?, openedAtMillis: Int64, openedBy: String,
                 closedAtMillis: Int64?, closedBy: String?) {
        self.id = id
        self.type = type
        self.pseudonym = pseudonym
        self.receivedMillis = receivedMillis
        self.dueMillis = dueMillis
        self.extendedDueMillis = extendedDueMillis
        self.channel = channel
        self.status = status
        self.outcome = outcome
        self.openedAtMillis = openedAtMillis
        self.openedBy = openedBy
        self.closedAtMillis = closedAtMillis
        self.closedBy = closedBy
    }

    /// The due date in force: the extended one when there is one.
    public var currentDueMillis: Int64 { extendedDueMillis ?? dueMillis }

    /// Open and past its due date at `nowMillis`.
    public func isOverdue(nowMillis: Int64) -> Bool { status == .open && nowMillis > currentDueMillis }

    /// Whole days from `nowMillis` to the due date, rounded down: negative once overdue.
    public func daysLeft(nowMillis: Int64) -> Int64 {
        let (d, overflow) = currentDueMillis.subtractingReportingOverflow(nowMillis)
        if overflow { return currentDueMillis > nowMillis ? Int64.max / 86_400_000 : Int64.min / 86_400_000 }
        let day: Int64 = 86_400_000
        return d >= 0 ? d / day : -((-(d + 1)) / day) - 1
    }
}

/// A request to record (``StorageEngine/openRequest(_:audit:)``).
public struct NewRequest: Sendable {
    public var id: String
    public var type: RequestType
    public var customerID: String
    public var receivedMillis: Int64
    public var dueMillis: Int64
    public var channel: RequestChannel?
    public var note: String?
    public init(id: String, type: RequestType, customerID: String, receivedMillis: Int64, dueMillis: Int64,
                channel: RequestChannel?, note: String?) {
        self.id = id
        self.type = type
        self.customerID = customerID
        self.receivedMillis = receivedMillis
        self.dueMillis = dueMillis
        self.channel = channel
        self.note = note
    }
}

/// A change of an open request.
public enum RequestChange: Sendable {
    /// The one extension: the due date moves by `extensionMillis`; the reason is sealed.
    case extend(extensionMillis: Int64, reason: String)
    /// Refused (e.g. identity not verified); the reason is sealed.
    case deny(reason: String)
    /// Fulfilled, with the outcome to attach (a receipt or a digest: no personal data).
    case fulfil(outcome: String)
}

/// What the suppression list keeps about an erased subject: when, why, and the erasure's
/// receipt (the audit entry's sequence number and hash; nil for erasures recorded before the
/// register existed).
public struct ErasureRecord: Sendable, Equatable {
    public var erasedAtMillis: Int64
    public var reason: String
    public var auditSequence: Int64?
    public var receipt: String?
    public init(erasedAtMillis: Int64, reason: String, auditSequence: Int64?, receipt: String?) {
        self.erasedAtMillis = erasedAtMillis
        self.reason = reason
        self.auditSequence = auditSequence
        self.receipt = receipt
    }
}

/// The register's rules, shared by every engine: ids, sealing, the changes a request allows,
/// and its audit entries.
package enum RequestRegister {
    /// `req_` and 16 lower-case hex digits (64 random bits).
    package static func newID() -> String { "req_" + AuditLog.hex(SecureRandom.bytes(8)) }

    package static func isID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 20, s.hasPrefix("req_") else { return false }
        return u[4...].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// The sealed columns; erasure sets every one of them NULL.
    package static let sealedColumns = ["customer_id_sealed", "note_sealed", "extend_reason_sealed", "deny_reason_sealed"]

    /// Seals `text` for `column` of request `id` about `pseudonym`: the associated data binds
    /// all three, so a ciphertext moved to another request, column or subject does not open.
    package static func seal(_ text: String, column: String, requestID: String, pseudonym: [UInt8], key: SharedAESGCMKey) throws -> [UInt8] {
        do {
            return try key.withKey { (k: AESGCMKey) throws(CryptoError) -> [UInt8] in
                try Envelope.sealField(Array(text.utf8), field: "request:\(requestID):\(column)", subject: pseudonym, dek: k)
            }
        } catch {
            throw VaultError(.internalFailure, "request \(requestID): sealing \(column) failed")
        }
    }

    package static func open(_ blob: [UInt8], column: String, requestID: String, pseudonym: [UInt8], key: SharedAESGCMKey) throws -> String {
        let bytes: [UInt8]
        do {
            bytes = try key.withKey { (k: AESGCMKey) throws(CryptoError) -> [UInt8] in
                try Envelope.openField(blob, field: "request:\(requestID):\(column)", subject: pseudonym, dek: k)
            }
        } catch {
            throw VaultError(.integrity, "request \(requestID): \(column) does not verify (modified, moved from another request, or wrong keyring)")
        }
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw VaultError(.integrity, "request \(requestID): \(column) is not UTF-8 once decrypted")
        }
        return s
    }

    /// The refusal for an unknown request id (66); the id is not echoed.
    package static func unknown() -> VaultError { VaultError(.notFound, "no request with this id in the register") }

    /// What both engines check before a change touches the register: a well-formed id (66
    /// otherwise, not echoed) and storable text (a reason, the outcome, the actor).
    package static func checkChange(id: String, _ change: RequestChange, actor: String) throws {
        guard isID(id) else { throw unknown() }
        switch change {
        case .extend(_, let reason), .deny(let reason): try checkText(reason, "reason")
        case .fulfil(let outcome): try StoredText.check(outcome, "outcome")
        }
        try StoredText.check(actor, "actor")
    }

    /// What `change` makes of `entry` at `now` by `actor`, with the sealed column and text it
    /// writes; refused (65) on a closed request and on a second extension.
    package static func apply(_ change: RequestChange, to entry: RegisterEntry, now: Int64, actor: String)
        throws -> (entry: RegisterEntry, column: String?, text: String?) {
        guard entry.status == .open else {
            throw VaultError(.invalidInput, "request \(entry.id) is \(entry.status.rawValue): a closed request cannot be changed")
        }
        var e = entry
        switch change {
        case .extend(let by, let reason):
            guard entry.extendedDueMillis == nil else {
                throw VaultError(.invalidInput, "request \(entry.id) was already extended: a request is extended once")
            }
            let (due, overflow) = entry.dueMillis.addingReportingOverflow(by)
            guard !overflow else { throw VaultError(.invalidInput, "request \(entry.id): the extended due date is out of range") }
            e.extendedDueMillis = due
            return (e, "extend_reason_sealed", reason)
        case .deny(let reason):
            e.status = .denied
            e.closedAtMillis = now
            e.closedBy = actor
            return (e, "deny_reason_sealed", reason)
        case .fulfil(let outcome):
            e.status = .done
            e.outcome = outcome
            e.closedAtMillis = now
            e.closedBy = actor
            return (e, nil, nil)
        }
    }

    /// The audit action of a change.
    package static func action(_ change: RequestChange) -> String {
        switch change {
        case .extend: "requests.extend"
        case .deny: "requests.deny"
        case .fulfil: "requests.fulfil"
        }
    }

    package static func openRecord(_ audit: AuditContext, _ r: NewRequest, pseudonym: [UInt8]) -> AuditRecord {
        audit.record("requests.open", .create, subject: pseudonym,
                     detail: "request \(r.id) type \(r.type.rawValue)\(r.channel.map { " channel \($0.rawValue)" } ?? "")\(r.note == nil ? "" : " with a sealed note")")
    }

    package static func changeRecord(_ audit: AuditContext, _ change: RequestChange, _ e: RegisterEntry) -> AuditRecord {
        var detail = "request \(e.id) type \(e.type.rawValue)"
        switch change {
        case .extend: detail += " extended (reason sealed)"
        case .deny: detail += " denied (reason sealed)"
        case .fulfil(let outcome): detail += " fulfilled: \(outcome)"
        }
        return audit.record(action(change), .update, subject: e.pseudonym, detail: detail)
    }

    /// Checks the texts a request stores (no U+0000, which PostgreSQL's text refuses; at most
    /// 4096 bytes), before anything is read or written.
    package static func checkText(_ value: String?, _ what: String) throws {
        try StoredText.check(value, what)
        if let value, value.utf8.count > 4096 {
            throw VaultError(.invalidInput, "\(what): at most 4096 bytes")
        }
    }

    /// Decodes the metadata columns of a register row (any engine), refusing a value outside
    /// the register's vocabulary as an integrity error (never a trap).
    package static func entry(id: String, type: String, pseudonym: [UInt8], received: Int64, due: Int64, extendedDue: Int64?,
                              channel: String?, status: String, outcome: String?, openedAt: Int64, openedBy: String,
                              closedAt: Int64?, closedBy: String?) throws -> RegisterEntry {
        guard let t = RequestType(rawValue: type), let s = RequestStatus(rawValue: status) else {
            throw VaultError(.integrity, "request \(isID(id) ? id : "row"): its type or status is not one the register writes: the store was altered")
        }
        var c: RequestChannel?
        if let channel {
            guard let v = RequestChannel(rawValue: channel) else {
                throw VaultError(.integrity, "request \(isID(id) ? id : "row"): its channel is not one the register writes: the store was altered")
            }
            c = v
        }
        return RegisterEntry(id: id, type: t, pseudonym: pseudonym, receivedMillis: received, dueMillis: due, extendedDueMillis: extendedDue,
                             channel: c, status: s, outcome: outcome, openedAtMillis: openedAt, openedBy: openedBy,
                             closedAtMillis: closedAt, closedBy: closedBy)
    }
}

// MARK: - SQLite

extension ProfileStore {
    static func registerRequestMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v10-requests") { db in
            // The suppression list names the erasure's receipt (NULL for erasures before v10).
            try db.execute(sql: """
                CREATE TABLE requests(
                    id TEXT PRIMARY KEY, type TEXT NOT NULL, pseudonym BLOB NOT NULL,
                    customer_id_sealed BLOB, received INTEGER NOT NULL, due INTEGER NOT NULL, extended_due INTEGER,
                    channel TEXT, note_sealed BLOB, status TEXT NOT NULL, outcome TEXT,
                    extend_reason_sealed BLOB, deny_reason_sealed BLOB,
                    opened_at INTEGER NOT NULL, opened_by TEXT NOT NULL, closed_at INTEGER, closed_by TEXT) WITHOUT ROWID;
                CREATE INDEX requests_pseudonym ON requests(pseudonym);
                CREATE INDEX requests_status ON requests(status, due);
                ALTER TABLE suppressed ADD COLUMN receipt_seq INTEGER;
                ALTER TABLE suppressed ADD COLUMN receipt TEXT;
                """)
        }
    }

    static let requestColumns = "id, type, pseudonym, received, due, extended_due, channel, status, outcome, opened_at, opened_by, closed_at, closed_by"

    static func registerEntry(_ row: Row) throws -> RegisterEntry {
        func optInt(_ c: String) throws -> Int64? {
            let v = row.stored(c)
            if v.isNull { return nil }
            guard let i = Stored.int(v) else { throw VaultError(.integrity, "the requests table: \(c) holds \(Stored.kind(v)): the store was altered") }
            return i
        }
        func optText(_ c: String) throws -> String? {
            let v = row.stored(c)
            if v.isNull { return nil }
            guard let s = Stored.text(v) else { throw VaultError(.integrity, "the requests table: \(c) holds \(Stored.kind(v)): the store was altered") }
            return s
        }
        guard let id = try optText("id"), let type = try optText("type"), let p = Stored.blob(row.stored("pseudonym")),
              let received = try optInt("received"), let due = try optInt("due"), let status = try optText("status"),
              let openedAt = try optInt("opened_at"), let openedBy = try optText("opened_by") else {
            throw VaultError(.integrity, "the requests table holds a row with a missing value: the store was altered")
        }
        return try RequestRegister.entry(id: id, type: type, pseudonym: p, received: received, due: due, extendedDue: try optInt("extended_due"),
                                         channel: try optText("channel"), status: status, outcome: try optText("outcome"),
                                         openedAt: openedAt, openedBy: openedBy, closedAt: try optInt("closed_at"), closedBy: try optText("closed_by"))
    }

    /// Records a request about an existing subject (notFound otherwise), its customer ID and
    /// note sealed, with its `requests.open` audit entry in the same transaction.
    public func openRequest(_ r: NewRequest, audit: AuditContext) throws -> RegisterEntry {
        try RequestRegister.checkText(r.note, "note")
        try StoredText.check(audit.actor, "actor")
        let pseudo = try pseudonym(ofCustomerID: r.customerID)
        let key = keys.requestRegister
        let sealedID = try RequestRegister.seal(r.customerID, column: "customer_id_sealed", requestID: r.id, pseudonym: pseudo, key: key)
        let sealedNote = try r.note.map { try RequestRegister.seal($0, column: "note_sealed", requestID: r.id, pseudonym: pseudo, key: key) }
        let now = AuditLog.nowMillis
        return try pool.write { db in
            guard try subjectRow(db, pseudonym: pseudo) != nil else { throw VaultError(.notFound, "no subject with this customer ID") }
            try db.execute(sql: """
                INSERT INTO requests(id, type, pseudonym, customer_id_sealed, received, due, channel, note_sealed, status, opened_at, opened_by)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)
                """, arguments: [r.id, r.type.rawValue, Data(pseudo), Data(sealedID), r.receivedMillis, r.dueMillis, r.channel?.rawValue,
                                 sealedNote.map { Data($0) }, now, audit.actor])
            try appendAudit(db, [RequestRegister.openRecord(audit, r, pseudonym: pseudo)])
            return RegisterEntry(id: r.id, type: r.type, pseudonym: pseudo, receivedMillis: r.receivedMillis, dueMillis: r.dueMillis,
                                 extendedDueMillis: nil, channel: r.channel, status: .open, outcome: nil, openedAtMillis: now,
                                 openedBy: audit.actor, closedAtMillis: nil, closedBy: nil)
        }
    }

    /// The register, oldest due date first (`status` nil: every request).
    public func requests(status: RequestStatus?) throws -> [RegisterEntry] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.requestColumns) FROM requests WHERE ?1 IS NULL OR status = ?1 ORDER BY coalesce(extended_due, due), id",
                             arguments: [status?.rawValue]).map(Self.registerEntry)
        }
    }

    public func request(id: String) throws -> RegisterEntry? {
        guard RequestRegister.isID(id) else { return nil }
        return try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.requestColumns) FROM requests WHERE id = ?", arguments: [id]).map(Self.registerEntry)
        }
    }

    /// The request's customer ID, decrypted; nil once the subject was erased (the sealed
    /// columns are gone) or for an unknown id.
    public func requestCustomerID(id: String) throws -> String? {
        guard RequestRegister.isID(id) else { return nil }
        return try pool.read { db -> String? in
            guard let row = try Row.fetchOne(db, sql: "SELECT pseudonym, customer_id_sealed FROM requests WHERE id = ?", arguments: [id]) else { return nil }
            let sealed = row.stored("customer_id_sealed")
            if sealed.isNull { return nil }
            guard let p = Stored.blob(row.stored("pseudonym")), let blob = Stored.blob(sealed) else {
                throw VaultError(.integrity, "request \(id): a sealed column holds a value of the wrong type: the store was altered")
            }
            return try RequestRegister.open(blob, column: "customer_id_sealed", requestID: id, pseudonym: p, key: keys.requestRegister)
        }
    }

    /// Extends, denies or fulfils an open request, with its audit entry, in one transaction.
    public func changeRequest(id: String, _ change: RequestChange, audit: AuditContext) throws -> RegisterEntry {
        try RequestRegister.checkChange(id: id, change, actor: audit.actor)
        let now = AuditLog.nowMillis
        return try pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT \(Self.requestColumns) FROM requests WHERE id = ?", arguments: [id]) else {
                throw RequestRegister.unknown()
            }
            let (e, column, text) = try RequestRegister.apply(change, to: try Self.registerEntry(row), now: now, actor: audit.actor)
            try db.execute(sql: "UPDATE requests SET extended_due = ?, status = ?, outcome = ?, closed_at = ?, closed_by = ? WHERE id = ?",
                           arguments: [e.extendedDueMillis, e.status.rawValue, e.outcome, e.closedAtMillis, e.closedBy, id])
            if let column, let text {
                // `column` is one of RequestRegister.sealedColumns, never input.
                let sealed = try RequestRegister.seal(text, column: column, requestID: id, pseudonym: e.pseudonym, key: keys.requestRegister)
                try db.execute(sql: "UPDATE requests SET \(column) = ? WHERE id = ?", arguments: [Data(sealed), id])
            }
            try appendAudit(db, [RequestRegister.changeRecord(audit, change, e)])
            return e
        }
    }

    /// The suppression list's record of an erased subject, nil when it was never erased.
    public func erasure(pseudonym pseudo: [UInt8]) throws -> ErasureRecord? {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT erased_at, reason, receipt_seq, receipt FROM suppressed WHERE pseudonym = ?",
                                             arguments: [Data(pseudo)]) else { return nil }
            guard let at = Stored.int(row.stored("erased_at")), let reason = Stored.text(row.stored("reason")) else {
                throw VaultError(.integrity, "the suppression list holds a value of the wrong type: the store was altered")
            }
            let seq = row.stored("receipt_seq"), receipt = row.stored("receipt")
            return ErasureRecord(erasedAtMillis: at, reason: reason, auditSequence: Stored.int(seq), receipt: Stored.text(receipt))
        }
    }

    /// Inside an erasure's transaction: the subject's sealed register columns go (the register
    /// keeps the pseudonym and the metadata).
    func shredRequests(_ db: Database, pseudonym: [UInt8]) throws {
        try db.cachedStatement(sql: "UPDATE requests SET \(RequestRegister.sealedColumns.map { "\($0) = NULL" }.joined(separator: ", ")) WHERE pseudonym = ?")
            .execute(arguments: [Data(pseudonym)])
    }
}
