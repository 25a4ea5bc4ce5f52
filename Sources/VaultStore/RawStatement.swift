public import GRDB
import GRDBSQLite
public import VaultPolicy

/// Binds and steps a GRDB-prepared statement through the SQLite C API, for the ingest hot
/// loop: GRDB's `execute(arguments:)` boxes every value into a `DatabaseValue` (and every blob
/// into a `Data`), which costs more than the insert itself at a million rows.
///
/// Only used inside a `write` closure, on statements of that database, and always reset before
/// binding, so GRDB's own use of the same cached statement is unaffected.
public struct RawStatement {
    let statement: OpaquePointer
    let connection: OpaquePointer

    public init(_ s: Statement, _ db: Database) {
        statement = s.sqliteStatement
        connection = db.sqliteConnection!
    }

    /// SQLite copies the bytes (SQLITE_TRANSIENT), so the buffer need not outlive the call.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    public func reset() { sqlite3_reset(statement) }

    public func bind(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(statement, i, v) }

    public func bind(_ i: Int32, _ v: Double) { sqlite3_bind_double(statement, i, v) }

    public func bind(_ i: Int32, blob: [UInt8]) {
        blob.withUnsafeBytes { sqlite3_bind_blob(statement, i, $0.baseAddress, Int32($0.count), Self.transient) }
    }

    public func bind(_ i: Int32, text: String) {
        var t = text
        t.withUTF8 { sqlite3_bind_text(statement, i, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), Int32($0.count), Self.transient) }
    }

    public func bindNull(_ i: Int32) { sqlite3_bind_null(statement, i) }

    public func bind(_ i: Int32, _ v: FieldValue) {
        switch v {
        case .null: bindNull(i)
        case .int(let x): bind(i, x)
        case .float(let x): bind(i, x)
        case .text(let x): bind(i, text: x)
        case .date(let x): bind(i, Int64(x))
        case .bool(let x): bind(i, Int64(x ? 1 : 0))
        }
    }

    /// Runs the statement to completion; returns the first column of the first row, if any.
    @discardableResult
    public func step() throws -> Int64? {
        var rc = sqlite3_step(statement)
        var first: Int64?
        while rc == SQLITE_ROW {
            if first == nil { first = sqlite3_column_int64(statement, 0) }
            rc = sqlite3_step(statement)
        }
        guard rc == SQLITE_DONE else {
            let message = String(cString: sqlite3_errmsg(connection))
            sqlite3_reset(statement)
            throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: message)
        }
        sqlite3_reset(statement)
        return first
    }

    /// Runs the statement to completion; returns the first row's first column (an integer)
    /// and second column (a blob, nil when NULL or not a blob), if any.
    public func stepWithBlob() throws -> (Int64, [UInt8]?)? {
        var rc = sqlite3_step(statement)
        var first: (Int64, [UInt8]?)?
        while rc == SQLITE_ROW {
            if first == nil {
                var blob: [UInt8]?
                if sqlite3_column_type(statement, 1) == SQLITE_BLOB {
                    let n = Int(sqlite3_column_bytes(statement, 1))
                    if let p = sqlite3_column_blob(statement, 1), n > 0 {
                        blob = Array(UnsafeRawBufferPointer(start: p, count: n))
                    } else {
                        blob = []
                    }
                }
                first = (sqlite3_column_int64(statement, 0), blob)
            }
            rc = sqlite3_step(statement)
        }
        guard rc == SQLITE_DONE else {
            let message = String(cString: sqlite3_errmsg(connection))
            sqlite3_reset(statement)
            throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: message)
        }
        sqlite3_reset(statement)
        return first
    }

    public var changes: Int { Int(sqlite3_changes(connection)) }
}
