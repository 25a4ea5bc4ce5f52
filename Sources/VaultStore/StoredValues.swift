import GRDB

/// Reading columns of the data tables (subjects, pii, attributes, events) without GRDB's
/// trapping conversions (`row["x"] as Data` traps on an integer): the store is a file an
/// attacker may edit, and a value of the wrong storage class must read as an integrity error
/// naming the subject's row, never as a crash, a silent null or a number counted by accident.
///
/// The helpers are `@inline(never)`: inlined into their callers, the switch over
/// `DatabaseValue.storage` crashed the Swift 6.3.1 optimiser (CopyPropagation, "Found ownership
/// error") in release builds.
enum Stored {
    /// The storage class of a value, for messages (never the value itself).
    @inline(never) static func kind(_ v: DatabaseValue) -> String {
        switch v.storage {
        case .null: "NULL"
        case .int64: "an integer"
        case .double: "a real number"
        case .string: "text"
        case .blob: "a blob"
        }
    }

    @inline(never) static func blob(_ v: DatabaseValue) -> [UInt8]? {
        if case .blob(let d) = v.storage { return [UInt8](d) }
        return nil
    }

    @inline(never) static func int(_ v: DatabaseValue) -> Int64? {
        if case .int64(let i) = v.storage { return i }
        return nil
    }

    @inline(never) static func text(_ v: DatabaseValue) -> String? {
        if case .string(let s) = v.storage { return s }
        return nil
    }

    /// An integer or a real number, as a Double.
    @inline(never) static func number(_ v: DatabaseValue) -> Double? {
        switch v.storage {
        case .int64(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }

    /// The integrity error for a column of a subject's row that holds the wrong kind of value.
    @inline(never) static func damaged(subject id: Int64, _ what: String, _ v: DatabaseValue, expected: String) -> VaultError {
        VaultError(.integrity, "subject row \(id): \(what) holds \(kind(v)), not \(expected): the store was altered")
    }
}

extension Row {
    /// A column's value as stored (reading a `DatabaseValue` never converts, so never traps).
    func stored(_ column: String) -> DatabaseValue { self[column] ?? .null }
    func stored(at index: Int) -> DatabaseValue { self[index] }
}
