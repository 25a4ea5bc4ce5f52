import Foundation
import PostgresNIO
import Synchronization
import VaultPolicy
import VaultStore

/// Rows in PostgreSQL's binary `COPY` format (the signature and an empty header, then per row
/// its field count and each field as a length and the bytes of the type's binary form, then the
/// trailer). Values travel as bytes, never as text: a ciphertext needs no escaping, and a text
/// value holding a tab, a newline, a backslash or `\.` is only bytes with a length in front.
struct BinaryCopyRows {
    private(set) var buffer: ByteBuffer

    /// A buffer that starts with the format's signature and header.
    init(capacity: Int = 1 << 20) {
        buffer = ByteBuffer()
        buffer.reserveCapacity(capacity)
        buffer.writeBytes([0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00])   // "PGCOPY\n\377\r\n\0"
        buffer.writeInteger(Int32(0))   // flags: no OIDs
        buffer.writeInteger(Int32(0))   // header extension length
    }

    mutating func row(fields: Int) { buffer.writeInteger(Int16(fields)) }
    mutating func null() { buffer.writeInteger(Int32(-1)) }

    mutating func int64(_ v: Int64) {
        buffer.writeInteger(Int32(8))
        buffer.writeInteger(v)
    }

    mutating func int32(_ v: Int32) {
        buffer.writeInteger(Int32(4))
        buffer.writeInteger(v)
    }

    mutating func double(_ v: Double) {
        buffer.writeInteger(Int32(8))
        buffer.writeInteger(v.bitPattern)
    }

    mutating func bool(_ v: Bool) {
        buffer.writeInteger(Int32(1))
        buffer.writeInteger(UInt8(v ? 1 : 0))
    }

    /// A `bytea` value from raw bytes (NULL: ``null()``).
    mutating func bytes(_ v: UnsafeRawBufferPointer) {
        buffer.writeInteger(Int32(v.count))
        buffer.writeBytes(v)
    }

    /// A `text` value: its UTF-8 bytes (the server checks the encoding as for a bound value).
    mutating func text(_ v: String) {
        let n = v.utf8.count
        buffer.writeInteger(Int32(n))
        buffer.writeString(v)
    }

    /// The bytes written so far; the buffer starts empty again (no header: one stream, many chunks).
    mutating func take() -> ByteBuffer {
        let out = buffer
        buffer = ByteBuffer()
        buffer.reserveCapacity(out.readableBytes)
        return out
    }

    /// The trailer (a field count of -1).
    mutating func finish() { buffer.writeInteger(Int16(-1)) }
}

extension PostgresEngine {
    /// Tables ``copyBinary(_:table:columns:count:row:)`` may write: only these names reach the
    /// statement.
    static let copyTables: Set<String> = ["subjects", "pii", "attributes"]

    /// `COPY profilevault.<table>(<columns>) FROM STDIN (FORMAT binary)` on `conn`, inside the
    /// caller's transaction, with `count` rows that `row` encodes (row `i` into the buffer;
    /// streamed to the server in chunks of about 1 MB). A failure anywhere (an error the row
    /// encoder throws, or the server's refusal of a row) ends the COPY with CopyFail or the
    /// server's error and is thrown; the transaction is then aborted and its caller rolls it
    /// back, so nothing of the COPY stays and the connection is usable again.
    ///
    /// The statement text is made of constants only: `table` one of ``copyTables`` and every
    /// column a plain identifier (the schema's validated names, quoted or not); anything else is
    /// refused before a byte is sent. PostgresNIO's `copyFrom` builds `COPY "<table>"(...) FROM
    /// STDIN WITH (FORMAT text)` and has no binary format nor a schema-qualified name; the
    /// name it is given here closes its quotes, names the schema and the columns, asks for the
    /// binary format and ends with a comment, so the statement the server parses is
    /// `COPY "profilevault"."<table>" (<columns>) FROM STDIN WITH (FORMAT binary)`. (Tested
    /// against the server: a text-format COPY would refuse the binary signature.)
    func copyBinary(_ conn: PostgresConnection, table: String, columns: [String], count: Int,
                    row: (Int, inout BinaryCopyRows) throws -> Void) async throws {
        guard Self.copyTables.contains(table), !columns.isEmpty, columns.allSatisfy(Self.isCopyColumn) else {
            throw PostgresStoreError(.internalFailure, "a COPY target that is not one of the store's tables and columns")
        }
        let target = "\(Self.schema)\".\"\(table)\" (\(columns.joined(separator: ", "))) FROM STDIN WITH (FORMAT binary) --"
        try await conn.copyFrom(table: target, format: .text(.init()), logger: logger) { writer in
            var rows = BinaryCopyRows()
            for i in 0..<count {
                try row(i, &rows)
                if rows.buffer.readableBytes >= 1 << 20 { try await writer.write(rows.take()) }
            }
            rows.finish()
            try await writer.write(rows.take())
        }
    }

    /// A column name ``copyBinary(_:table:columns:count:row:)`` accepts: letters, digits and
    /// `_`, starting with a letter or `_`, at most 63, optionally in double quotes.
    static func isCopyColumn(_ name: String) -> Bool {
        var u = Array(name.utf8)
        if u.count >= 2, u.first == 0x22, u.last == 0x22 { u = Array(u.dropFirst().dropLast()) }
        guard (1...63).contains(u.count), let first = u.first else { return false }
        func letter(_ b: UInt8) -> Bool { (0x61...0x7A).contains(b) || (0x41...0x5A).contains(b) || b == 0x5F }
        return letter(first) && u.allSatisfy { letter($0) || (0x30...0x39).contains($0) }
    }
}

extension PostgresProfiles {
    /// Writes a transaction's profiles with three binary `COPY`s (`subjects`, `pii`,
    /// `attributes`) when every one of them is a new subject: the bulk case, where the
    /// upsert's conflict handling has nothing to do. Returns false, having written nothing,
    /// when that is not so (the caller then takes the upsert path):
    ///
    /// - a customer appears twice in the transaction (adjacent in lock order): decided here,
    ///   before anything is sent;
    /// - a pseudonym is already stored (or another node's transaction stored it first and
    ///   committed): the `subjects` COPY fails on the pseudonym's unique index, and the
    ///   savepoint taken before it is rolled back.
    ///
    /// Rows go in lock order (by pseudonym), as the upsert writes them, so two nodes ingesting
    /// the same customers wait for each other rather than deadlock; ids are `fresh`, from the
    /// identity sequence in file order (COPY writes an identity column's given values, as
    /// INSERT ... OVERRIDING SYSTEM VALUE). The rows are the upsert's exactly: the same columns,
    /// the same values (an empty `pii` value is NULL; an absent attribute is NULL; a record
    /// without a last activity gets `now`). Any other failure (a `pii` row already holding a
    /// fresh id, a value the server refuses) is thrown and aborts the whole transaction.
    func copyNewProfiles(_ conn: PostgresConnection, _ profiles: PackedProfiles, _ order: [Int], ids fresh: [Int64], now: Int64,
                         batch: Int64) async throws -> Bool {
        guard !order.isEmpty, bulkCopy.withLock({ $0.enabled }) else { return false }
        for k in order.indices.dropFirst() where profiles.samePseudonym(order[k], order[k - 1]) { return false }
        let subjectColumns = ["id", "pseudonym", "kek_version", "wrapped_dek", "created_at", "updated_at", "last_activity",
                              "record_digest", "created_batch", "updated_batch"]
        try await engine.exec(conn, "SAVEPOINT profilevault_copy")
        do {
            try await engine.copyBinary(conn, table: "subjects", columns: subjectColumns, count: order.count) { k, out in
                let i = order[k]
                out.row(fields: 10)
                out.int64(fresh[k])
                profiles.writeValue(i, 0, into: &out)
                out.int64(Int64(profiles.kekVersions[i]))
                profiles.writeValue(i, 1, into: &out)
                out.int64(now)
                out.int64(now)
                out.int64(profiles.hasLastActivity[i] ? profiles.lastActivities[i] : now)
                profiles.writeValue(i, 2 + profiles.piiWidth, into: &out)
                out.int64(batch)
                out.int64(batch)
            }
        } catch let e as PSQLError where e.serverInfo?[.sqlState] == "23505" && e.serverInfo?[.tableName] == "subjects" {
            // A unique violation on `subjects`: a stored pseudonym (ids come from the sequence),
            // whatever its index is named; should it be anything else, the upserts meet it too.
            try await engine.exec(conn, "ROLLBACK TO SAVEPOINT profilevault_copy")
            try await engine.exec(conn, "RELEASE SAVEPOINT profilevault_copy")
            return false
        }
        try await engine.exec(conn, "RELEASE SAVEPOINT profilevault_copy")
        let width = piiColumns.valueColumns.count
        try await engine.copyBinary(conn, table: "pii", columns: ["subject_id"] + piiColumns.valueColumns.map(\.column),
                                    count: order.count) { k, out in
            let i = order[k]
            out.row(fields: 1 + width)
            out.int64(fresh[k])
            for c in 0..<width { profiles.writeValue(i, 2 + c, emptyIsNull: true, into: &out) }
        }
        let fields = schema.attributeFields
        let attributeColumns = try fields.map { f throws(PostgresStoreError) in try Self.attributeColumn(f.name) }
        try await engine.copyBinary(conn, table: "attributes", columns: ["subject_id"] + attributeColumns, count: order.count) { k, out in
            let i = order[k]
            out.row(fields: 1 + fields.count)
            out.int64(fresh[k])
            for (a, f) in fields.enumerated() {
                let v = profiles.attribute(i, a)
                if v == .null { out.null(); continue }
                switch (f.type, v) {
                case (.int, .int(let x)): out.int64(x)
                case (.float, .float(let x)): out.double(x)
                case (.float, .int(let x)): out.double(Double(x))
                case (.date, .date(let x)): out.int32(x)
                case (.bool, .bool(let x)): out.bool(x)
                case (.string, .text(let x)), (.category, .text(let x)): out.text(x)
                default: throw Self.mistyped(f)
                }
            }
        }
        return true
    }
}
