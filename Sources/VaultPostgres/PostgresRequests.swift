import Foundation
import PostgresNIO
public import VaultAudit
import VaultCrypto
public import VaultStore
import VaultValues

// The request register on PostgreSQL, as on SQLite (VaultStore/RequestRegister.swift): the
// same columns, the same sealing (the register key, the same associated data), the same
// refusals and audit entries. Every value is bound.

extension PostgresProfiles {
    /// A refusal of the register's shared rules, thrown inside a transaction (which passes a
    /// ``PostgresStoreError`` through unchanged): same kind, same message.
    static func storeError(_ e: VaultError) -> PostgresStoreError {
        let k: PostgresStoreError.Kind = switch e.kind {
        case .usage: .usage
        case .invalidInput: .invalidInput
        case .notFound: .notFound
        case .denied: .denied
        case .configuration: .configuration
        case .integrity: .integrity
        default: .internalFailure
        }
        return PostgresStoreError(k, e.message)
    }

    static let requestColumns = "id, type, pseudonym, received, due, extended_due, channel, status, outcome, opened_at, opened_by, closed_at, closed_by"

    static func registerEntry(_ row: PostgresRow) throws -> RegisterEntry {
        do { return try decodeEntry(row) } catch let v as VaultError { throw storeError(v) }
    }

    static func decodeEntry(_ row: PostgresRow) throws -> RegisterEntry {
        let cells = PostgresRandomAccessRow(row)
        let id = try cells[0].decode(String.self)
        let type = try cells[1].decode(String.self)
        let p = try cells[2].decode(ByteBuffer.self)
        let received = try cells[3].decode(Int64.self)
        let due = try cells[4].decode(Int64.self)
        let extended = try cells[5].decode(Int64?.self)
        let channel = try cells[6].decode(String?.self)
        let status = try cells[7].decode(String.self)
        let outcome = try cells[8].decode(String?.self)
        let openedAt = try cells[9].decode(Int64.self)
        let openedBy = try cells[10].decode(String.self)
        let closedAt = try cells[11].decode(Int64?.self)
        let closedBy = try cells[12].decode(String?.self)
        return try RequestRegister.entry(id: id, type: type, pseudonym: p.bytes, received: received, due: due, extendedDue: extended,
                                         channel: channel, status: status, outcome: outcome, openedAt: openedAt, openedBy: openedBy,
                                         closedAt: closedAt, closedBy: closedBy)
    }

    public func openRequest(_ r: NewRequest, audit: AuditContext) throws -> RegisterEntry {
        try RequestRegister.checkText(r.note, "note")
        try StoredText.check(audit.actor, "actor")
        let pseudo = try pseudonym(ofCustomerID: r.customerID)
        let key = keys.requestRegister
        let sealedID = try RequestRegister.seal(r.customerID, column: "customer_id_sealed", requestID: r.id, pseudonym: pseudo, key: key)
        let sealedNote = try r.note.map { try RequestRegister.seal($0, column: "note_sealed", requestID: r.id, pseudonym: pseudo, key: key) }
        let record = RequestRegister.openRecord(audit, r, pseudonym: pseudo)
        return try Self.wait("opening a request") { [engine] in
            try await engine.transaction("opening a request") { conn in
                let now = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first?.decode(Int64.self) ?? AuditLog.nowMillis
                // Shared: erasure (exclusive) cannot remove the subject before this commits.
                try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
                guard try await !engine.rows(conn, "SELECT 1 FROM profilevault.subjects WHERE pseudonym = \(bytea(pseudo))").isEmpty else {
                    throw PostgresStoreError(.notFound, "no subject with this customer ID")
                }
                try await engine.exec(conn, """
                    INSERT INTO profilevault.requests(id, type, pseudonym, customer_id_sealed, received, due, channel, note_sealed, status, opened_at, opened_by)
                    VALUES (\(r.id), \(r.type.rawValue), \(bytea(pseudo)), \(bytea(sealedID)), \(r.receivedMillis), \(r.dueMillis), \(r.channel?.rawValue),
                            \(sealedNote.map(bytea)), 'open', \(now), \(audit.actor))
                    """)
                _ = try await engine.appendLocked(conn, [record])
                return RegisterEntry(id: r.id, type: r.type, pseudonym: pseudo, receivedMillis: r.receivedMillis, dueMillis: r.dueMillis,
                                     extendedDueMillis: nil, channel: r.channel, status: .open, outcome: nil, openedAtMillis: now,
                                     openedBy: audit.actor, closedAtMillis: nil, closedBy: nil)
            }
        }
    }

    public func requests(status: RequestStatus?) throws -> [RegisterEntry] {
        let s = status?.rawValue
        return try Self.wait("reading the request register") { [engine] in
            try await engine.single("reading the request register") { conn in
                try await engine.rows(conn, PostgresQuery(unsafeSQL: """
                    SELECT \(Self.requestColumns) FROM profilevault.requests WHERE $1::text IS NULL OR status = $1::text
                    ORDER BY coalesce(extended_due, due), id
                    """, binds: { var b = PostgresBindings(); b.append(s); return b }())).map(Self.registerEntry)
            }
        }
    }

    public func request(id: String) throws -> RegisterEntry? {
        guard RequestRegister.isID(id) else { return nil }
        return try Self.wait("reading the request register") { [engine] in
            try await engine.single("reading the request register") { conn in
                try await engine.rows(conn, PostgresQuery(unsafeSQL: "SELECT \(Self.requestColumns) FROM profilevault.requests WHERE id = $1",
                                                          binds: { var b = PostgresBindings(); b.append(id); return b }())).first.map(Self.registerEntry)
            }
        }
    }

    public func requestCustomerID(id: String) throws -> String? {
        guard RequestRegister.isID(id) else { return nil }
        let found = try Self.wait("reading the request register") { [engine] in
            try await engine.single("reading the request register") { conn -> ([UInt8], [UInt8]?)? in
                guard let row = try await engine.rows(conn, "SELECT pseudonym, customer_id_sealed FROM profilevault.requests WHERE id = \(id)").first else {
                    return nil
                }
                let (p, sealed) = try row.decode((ByteBuffer, ByteBuffer?).self)
                return (p.bytes, sealed?.bytes)
            }
        }
        guard let (p, sealed) = found, let blob = sealed else { return nil }
        return try RequestRegister.open(blob, column: "customer_id_sealed", requestID: id, pseudonym: p, key: keys.requestRegister)
    }

    public func changeRequest(id: String, _ change: RequestChange, audit: AuditContext) throws -> RegisterEntry {
        try RequestRegister.checkChange(id: id, change, actor: audit.actor)
        let key = keys.requestRegister
        return try Self.wait("changing a request") { [engine] in
            try await engine.transaction("changing a request") { conn in
                let now = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first?.decode(Int64.self) ?? AuditLog.nowMillis
                // Locked: two officers changing one request at once are serialised, and the second
                // sees the first's change (a closed request, an extension already made).
                guard let row = try await engine.rows(conn, PostgresQuery(unsafeSQL: "SELECT \(Self.requestColumns) FROM profilevault.requests WHERE id = $1 FOR UPDATE",
                                                                          binds: { var b = PostgresBindings(); b.append(id); return b }())).first else {
                    throw Self.storeError(RequestRegister.unknown())
                }
                let (e, column, text): (RegisterEntry, String?, String?)
                do { (e, column, text) = try RequestRegister.apply(change, to: try Self.registerEntry(row), now: now, actor: audit.actor) } catch let v as VaultError {
                    throw Self.storeError(v)
                }
                try await engine.exec(conn, """
                    UPDATE profilevault.requests SET extended_due = \(e.extendedDueMillis), status = \(e.status.rawValue), outcome = \(e.outcome),
                        closed_at = \(e.closedAtMillis), closed_by = \(e.closedBy) WHERE id = \(id)
                    """)
                if let column, let text, RequestRegister.sealedColumns.contains(column) {
                    let sealed = try RequestRegister.seal(text, column: column, requestID: id, pseudonym: e.pseudonym, key: key)
                    // `column` is one of RequestRegister.sealedColumns (checked), never input.
                    try await engine.exec(conn, PostgresQuery(unsafeSQL: "UPDATE profilevault.requests SET \(column) = $1 WHERE id = $2",
                                                              binds: { var b = PostgresBindings(); b.append(bytea(sealed)); b.append(id); return b }()))
                }
                _ = try await engine.appendLocked(conn, [RequestRegister.changeRecord(audit, change, e)])
                return e
            }
        }
    }

    public func erasure(pseudonym p: [UInt8]) throws -> ErasureRecord? {
        try Self.wait("reading the suppression list") { [engine] in
            try await engine.single("reading the suppression list") { conn in
                guard let row = try await engine.rows(conn, "SELECT erased_at, reason, receipt_seq, receipt FROM profilevault.suppressed WHERE pseudonym = \(bytea(p))").first else {
                    return nil
                }
                let (at, reason, seq, receipt) = try row.decode((Int64, String, Int64?, String?).self)
                return ErasureRecord(erasedAtMillis: at, reason: reason, auditSequence: seq, receipt: receipt)
            }
        }
    }
}
