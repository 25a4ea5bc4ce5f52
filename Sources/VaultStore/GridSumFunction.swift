import GRDB
import GRDBSQLite

/// `pv_grid_sum(x, parameters)`: a native SQLite aggregate that returns exactly what
/// `COALESCE(SUM(<StoreAggregateSource.contribution>), 0)` returns over the same rows, or
/// refuses (an SQL error with `GridSum.fallbackMessage`) so that the caller runs that SQL
/// instead. It is registered on every connection of a store's pool (`ProfileStore.makePool`);
/// on a connection without it the statement fails to prepare ("no such function"), never
/// computes anything else.
///
/// Per row it does the work the SQL form spreads over a CASE, arithmetic, a CAST, SUM and the
/// damage check's MIN(CASE ...): one call, no boxing (`DatabaseAggregate` boxes every value).
///
/// `parameters` (a BLOB constant, see `parameters(...)`) holds the SQL form's constants:
/// - `mode` 0: the exact form (integral column, g = 1, integral c): clamp(x) - c in 64-bit
///   integers; lo, hi and c are integers below 2^52.
/// - `mode` 1: CAST((clamp(x) - c) * (1/g) + h AS INTEGER), h = 1/2 - 2^-54 (values >= c).
/// - `mode` 2: the same with h negated where clamp(x) < c (`contribution`'s signed form).
/// - `kind` 0: an int or date column, 1: bool, 2: float; the schema's bounds, if it declares
///   any, as in `damageCondition`.
/// The doubles are passed by bit pattern: they are the values the SQL form's literals denote
/// (`StoreAggregateSource.literal` writes them in a form SQLite reads exactly).
///
/// It refuses, rather than computes, on everything outside the ordinary: a value that is not
/// clean for its field (what `damageCondition` flags, and more: a non-finite REAL, a magnitude
/// beyond 2^53), a contribution of 2^62 or more, and positive or negative contributions whose
/// total leaves 64 bits (then some order of the rows overflows SQLite's SUM). Each clean value
/// then goes through the same IEEE operations, in the same order, as the SQL: every integer
/// involved is below 2^53 so its conversion to double is exact, comparisons of such integers
/// with doubles agree with SQLite's exact ones, and truncation of a double below 2^62 is C's
/// (SQLite's CAST saturates only from 2^63). So the sum equals the SQL's, and a refusal hands
/// the rows to the SQL, which raises what it raises today (its damage check, its overflow).
enum GridSum {
    static let name = "pv_grid_sum"
    static let argumentCount: Int32 = 2
    static let fallbackMessage = "pv_grid_sum: outside its domain, use the SQL form"
    /// 1/2 - 2^-54, the `h` of `StoreAggregateSource.roundedInteger`.
    static let h: Double = 0x1.fffffffffffffp-2

    /// The second argument: the parameters as a BLOB literal of twelve 8-byte words in this
    /// process's byte order (mode, kind, whether the schema declares bounds, then lo, hi, c and
    /// 1/g as doubles, lo, hi and c as integers for mode 0, the schema's bounds as doubles).
    /// One constant instead of eight: SQLite evaluates an aggregate's arguments on every row.
    static func parameters(mode: Int, kind: Int, lo: Double, hi: Double, c: Double, invG: Double, bounds: ClosedRange<Double>?) -> String {
        func i(_ d: Double) -> Int64 { mode == 0 ? Int64(d) : 0 }
        let words: [UInt64] = [UInt64(mode), UInt64(kind), bounds == nil ? 0 : 1,
                               lo.bitPattern, hi.bitPattern, c.bitPattern, invG.bitPattern,
                               UInt64(bitPattern: i(lo)), UInt64(bitPattern: i(hi)), UInt64(bitPattern: i(c)),
                               (bounds?.lowerBound ?? 0).bitPattern, (bounds?.upperBound ?? 0).bitPattern]
        var hex = "X'"
        for w in words {
            withUnsafeBytes(of: w) { for b in $0 { hex += String(b >> 4, radix: 16) + String(b & 15, radix: 16) } }
        }
        return hex + "'"
    }

    /// Per-group state, in memory SQLite zeroes on first use (all-zero is the empty state).
    struct State {
        var started: Bool
        var refused: Bool
        var positive: Int64
        var negative: Int64
        var mode: Int32
        var kind: Int32
        var hasBounds: Bool
        var lo: Double, hi: Double, c: Double, invG: Double
        var loI: Int64, hiI: Int64, cI: Int64
        var blo: Double, bhi: Double
    }

    /// Registers the function on `db`'s connection; throws if SQLite refuses.
    static func register(_ db: Database) throws {
        let code = sqlite3_create_function_v2(db.sqliteConnection, name, argumentCount,
                                              SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nil, nil,
                                              { ctx, argc, argv in GridSum.step(ctx, argc, argv) },
                                              { ctx in GridSum.final(ctx) }, nil)
        guard code == SQLITE_OK else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "cannot register \(name)")
        }
    }

    private static func step(_ ctx: OpaquePointer?, _ argc: Int32, _ argv: UnsafeMutablePointer<OpaquePointer?>?) {
        guard let raw = sqlite3_aggregate_context(ctx, Int32(MemoryLayout<State>.stride)) else {
            sqlite3_result_error_nomem(ctx)
            return
        }
        let s = raw.bindMemory(to: State.self, capacity: 1)
        if s.pointee.refused { return }
        guard argc == GridSum.argumentCount, let argv else { s.pointee.refused = true; return }
        if !s.pointee.started {
            s.pointee.started = true
            // The parameters: a constant of the statement (`parameters`), read once per group.
            guard sqlite3_value_type(argv[1]) == SQLITE_BLOB, sqlite3_value_bytes(argv[1]) == 8 * 12,
                  let p = sqlite3_value_blob(argv[1]) else { s.pointee.refused = true; return }
            func int(_ i: Int) -> Int64 { p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self) }
            func double(_ i: Int) -> Double { Double(bitPattern: UInt64(bitPattern: int(i))) }
            let mode = int(0), kind = int(1), hasBounds = int(2)
            guard (0...2).contains(mode), (0...2).contains(kind), (0...1).contains(hasBounds) else { s.pointee.refused = true; return }
            s.pointee.mode = Int32(mode)
            s.pointee.kind = Int32(kind)
            s.pointee.hasBounds = hasBounds == 1
            s.pointee.lo = double(3); s.pointee.hi = double(4); s.pointee.c = double(5); s.pointee.invG = double(6)
            s.pointee.loI = int(7); s.pointee.hiI = int(8); s.pointee.cI = int(9)
            s.pointee.blo = double(10); s.pointee.bhi = double(11)
            let limit: Int64 = 1 << 52
            func small(_ i: Int64) -> Bool { i > -limit && i < limit }
            guard small(s.pointee.loI), small(s.pointee.hiI), small(s.pointee.cI), s.pointee.loI <= s.pointee.hiI,
                  s.pointee.lo.isFinite, s.pointee.hi.isFinite, s.pointee.c.isFinite, s.pointee.invG.isFinite, s.pointee.lo <= s.pointee.hi,
                  !s.pointee.blo.isNaN, !s.pointee.bhi.isNaN else {
                s.pointee.refused = true; return
            }
        }
        let v = argv[0]
        let type = sqlite3_value_type(v)
        if type == SQLITE_NULL { return }   // SUM skips NULL; damageCondition flags no NULL
        // The value as a double, exact: every accepted integer is below 2^53 in magnitude.
        let x: Double
        var xi: Int64 = 0
        switch type {
        case SQLITE_INTEGER:
            xi = sqlite3_value_int64(v)
            guard xi >= -(1 << 53), xi <= 1 << 53 else { s.pointee.refused = true; return }
            x = Double(xi)
        case SQLITE_FLOAT:
            // REAL in an integral column is damage (`damageCondition`'s typeof(x) = 'real').
            guard s.pointee.kind == 2 else { s.pointee.refused = true; return }
            x = sqlite3_value_double(v)
            guard x.isFinite, abs(x) <= 0x1p53 else { s.pointee.refused = true; return }
        default:   // TEXT, BLOB
            s.pointee.refused = true; return
        }
        if s.pointee.kind == 1 {
            guard xi == 0 || xi == 1 else { s.pointee.refused = true; return }
        } else if s.pointee.hasBounds {
            guard x >= s.pointee.blo, x <= s.pointee.bhi else { s.pointee.refused = true; return }
        }
        let contribution: Int64
        if s.pointee.mode == 0 {
            guard type == SQLITE_INTEGER else { s.pointee.refused = true; return }
            // Integers below 2^53 after the clamp, c below 2^52: no overflow.
            var e = xi < s.pointee.loI ? s.pointee.loI : (xi > s.pointee.hiI ? s.pointee.hiI : xi)
            if s.pointee.cI != 0 { e -= s.pointee.cI }
            contribution = e
        } else {
            let value = x < s.pointee.lo ? s.pointee.lo : (x > s.pointee.hi ? s.pointee.hi : x)
            var e = value
            if s.pointee.c != 0 { e = e - s.pointee.c }
            e = e * s.pointee.invG
            let r = e + (s.pointee.mode == 2 && value < s.pointee.c ? -GridSum.h : GridSum.h)
            guard abs(r) < 0x1p62 else { s.pointee.refused = true; return }
            contribution = Int64(r)   // truncation toward zero, as C's (i64) cast in SQLite's CAST
        }
        if contribution >= 0 {
            let (t, o) = s.pointee.positive.addingReportingOverflow(contribution)
            if o { s.pointee.refused = true; return }
            s.pointee.positive = t
        } else {
            let (t, o) = s.pointee.negative.addingReportingOverflow(contribution)
            if o { s.pointee.refused = true; return }
            s.pointee.negative = t
        }
    }

    private static func final(_ ctx: OpaquePointer?) {
        // No row at all: COALESCE(SUM(...), 0).
        guard let raw = sqlite3_aggregate_context(ctx, 0) else { sqlite3_result_int64(ctx, 0); return }
        let s = raw.bindMemory(to: State.self, capacity: 1)
        if s.pointee.refused {
            sqlite3_result_error(ctx, GridSum.fallbackMessage, -1)
            return
        }
        // positive >= 0 >= negative: the sum fits.
        sqlite3_result_int64(ctx, s.pointee.positive + s.pointee.negative)
    }
}
