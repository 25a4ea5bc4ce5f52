import GRDB
import GRDBSQLite

/// `pv_grid_sum(x, lo, hi, c, inv_g, mode, kind, blo, bhi)`: a native SQLite aggregate that
/// returns exactly what `COALESCE(SUM(<StoreAggregateSource.contribution>), 0)` returns over
/// the same rows, or refuses (an SQL error with `GridSum.fallbackMessage`) so that the caller
/// runs that SQL instead. It is registered on every connection of a store's pool
/// (`ProfileStore.makePool`); on a connection without it the statement fails to prepare
/// ("no such function"), never computes anything else.
///
/// Per row it does the work the SQL form spreads over a CASE, arithmetic, a CAST, SUM and the
/// damage check's MIN(CASE ...): one call, no boxing (`DatabaseAggregate` boxes every value).
///
/// Arguments after x are constants of the statement:
/// - `mode` 0: the exact form (integral column, g = 1, integral c): clamp(x) - c in 64-bit
///   integers; lo, hi and c are integer literals below 2^52.
/// - `mode` 1: CAST(clamp(x) - c) * inv_g + h AS INTEGER), h = 1/2 - 2^-54 (values >= c).
/// - `mode` 2: the same with h negated where clamp(x) < c (`contribution`'s signed form).
/// - `kind` 0: an int or date column, 1: bool, 2: float; `blo`, `bhi`: the schema's bounds (NULL
///   when it declares none), as in `damageCondition`.
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
    static let argumentCount: Int32 = 9
    static let fallbackMessage = "pv_grid_sum: outside its domain, use the SQL form"
    /// 1/2 - 2^-54, the `h` of `StoreAggregateSource.roundedInteger`.
    static let h: Double = 0x1.fffffffffffffp-2

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
            // The parameters: constants of the statement, read once per group.
            let mode = sqlite3_value_int(argv[5]), kind = sqlite3_value_int(argv[6])
            guard (0...2).contains(mode), (0...2).contains(kind) else { s.pointee.refused = true; return }
            s.pointee.mode = mode
            s.pointee.kind = kind
            if mode == 0 {
                for i in 1...3 where sqlite3_value_type(argv[i]) != SQLITE_INTEGER { s.pointee.refused = true; return }
                s.pointee.loI = sqlite3_value_int64(argv[1])
                s.pointee.hiI = sqlite3_value_int64(argv[2])
                s.pointee.cI = sqlite3_value_int64(argv[3])
                let limit: Int64 = 1 << 52
                func small(_ i: Int64) -> Bool { i > -limit && i < limit }
                guard small(s.pointee.loI), small(s.pointee.hiI), small(s.pointee.cI), s.pointee.loI <= s.pointee.hiI else {
                    s.pointee.refused = true; return
                }
            } else {
                for i in 1...4 {
                    let t = sqlite3_value_type(argv[i])
                    guard t == SQLITE_INTEGER || t == SQLITE_FLOAT else { s.pointee.refused = true; return }
                }
                s.pointee.lo = sqlite3_value_double(argv[1])
                s.pointee.hi = sqlite3_value_double(argv[2])
                s.pointee.c = sqlite3_value_double(argv[3])
                s.pointee.invG = sqlite3_value_double(argv[4])
                guard s.pointee.lo.isFinite, s.pointee.hi.isFinite, s.pointee.c.isFinite, s.pointee.invG.isFinite, s.pointee.lo <= s.pointee.hi else {
                    s.pointee.refused = true; return
                }
            }
            let tl = sqlite3_value_type(argv[7]), th = sqlite3_value_type(argv[8])
            if tl == SQLITE_NULL && th == SQLITE_NULL {
                s.pointee.hasBounds = false
            } else if (tl == SQLITE_INTEGER || tl == SQLITE_FLOAT) && (th == SQLITE_INTEGER || th == SQLITE_FLOAT) {
                s.pointee.hasBounds = true
                s.pointee.blo = sqlite3_value_double(argv[7])
                s.pointee.bhi = sqlite3_value_double(argv[8])
                // Bounds beyond 2^53 (the test below converts them) or not finite: the SQL decides.
                guard abs(s.pointee.blo) <= 0x1p53, abs(s.pointee.bhi) <= 0x1p53 else { s.pointee.refused = true; return }
            } else {
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
