import Foundation
public import DifferentialPrivacy
public import GRDB
public import VaultAudit
import VaultPolicy

extension ProfileStore {
    static func registerDPMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v4-dp") { db in
            try db.execute(sql: """
                CREATE TABLE budget(
                    purpose TEXT NOT NULL, period_start INTEGER NOT NULL, spent_units INTEGER NOT NULL,
                    PRIMARY KEY(purpose, period_start)) WITHOUT ROWID;
                """)
        }
    }

    /// The DP layer's view of this store: exact bounded sums computed in SQL.
    public var aggregateSource: any AggregateSource { StoreAggregateSource(store: self) }

    /// A budget accountant that appends `audit` (with the epsilon charged, and the delta when
    /// one is) in the same transaction as the charge. With `policy` (the SHA-256s the caller
    /// loaded), a charge is refused (configuration) when the policy the store records as in
    /// force is another: a process started under a superseded policy cannot spend under it.
    public func budgetAccountant(audit: AuditRecord, policy: (sha256: String, schemaSHA256: String)? = nil) -> any BudgetAccountant {
        StoreBudgetAccountant(store: self, audit: audit, policy: policy)
    }

    /// Start of the current budget window: windows are consecutive intervals of the purpose's
    /// period length, counted from the store's creation.
    func periodStart(periodSeconds: Int, now: Int64, _ db: Database) throws -> Int64 {
        let created = Int64(try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'created_at'") ?? "0") ?? 0
        let p = Int64(max(1, periodSeconds))
        // Checked arithmetic: a created_at far from now (a store edited by hand) must not trap.
        let (elapsed, o1) = now.subtractingReportingOverflow(created)
        guard !o1, elapsed >= 0 else { return min(created, now) }
        return created + (elapsed / p) * p
    }

    /// What the window [start, start + periodSeconds) has spent: every ledger row whose own
    /// window overlaps it counts in full, whatever period length that row was charged under
    /// (docs/differential-privacy.md, "Budget periods"). A row of length 0 (charged before
    /// period lengths were recorded, and not yet fixed by a policy record) counts as one of
    /// this period's length.
    static func windowSpent(_ db: Database, purpose: String, start: Int64, periodSeconds: Int) throws -> (epsilon: Int64, delta: Int64) {
        let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT COALESCE(SUM(spent_units), 0), COALESCE(SUM(spent_delta_units), 0) FROM budget
            WHERE purpose = ?1 AND period_start < ?2 + ?3
              AND period_start + (CASE period_seconds WHEN 0 THEN ?3 ELSE period_seconds END) > ?2
            """), arguments: [purpose, start, Int64(max(1, periodSeconds))])
        return (row?[0] ?? 0, row?[1] ?? 0)
    }

    /// Budget of a purpose in its current window (nothing spent yet: 0).
    public func budgetState(purpose: String, limit: Double, periodSeconds: Int) throws -> BudgetState {
        try budgetState(purpose: purpose, limit: limit, deltaLimit: 0, periodSeconds: periodSeconds)
    }

    /// Budget of a purpose in its current window, epsilon and delta.
    public func budgetState(purpose: String, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        try pool.read { db in
            let start = try periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
            let spent = try Self.windowSpent(db, purpose: purpose, start: start, periodSeconds: periodSeconds)
            return BudgetState(purpose: purpose, limit: limit, spent: Double(spent.epsilon) / Double(Epsilon.unitsPerOne), periodStart: start,
                               deltaLimit: deltaLimit, deltaSpent: DeltaUnits.value(spent.delta))
        }
    }
}

/// Delta is accounted in integer units of 10^-15, so sums are exact. A limit rounds down and a
/// charge rounds up, except that a value within 10^-3 of a unit (the floating-point error of a
/// decimal such as 1e-6) is that unit: deltas written with at most 15 decimals are exact.
public enum DeltaUnits {
    public static let perOne = 1e15

    static func units(_ d: Double, up: Bool) -> Int64? {
        guard d.isFinite, d >= 0, d <= 1 else { return nil }
        let x = d * perOne
        let r = x.rounded()
        if abs(x - r) < 1e-3 { return Int64(exactly: r) }
        return Int64(exactly: up ? x.rounded(.up) : x.rounded(.down))
    }
    /// A charge: nil for a delta outside [0, 1]. A positive delta below one unit is charged one
    /// unit: every delta a release uses is paid for, however small.
    public static func charge(_ d: Double) -> Int64? {
        guard let u = units(d, up: true) else { return nil }
        return d > 0 ? max(1, u) : u
    }
    /// A limit: nil for a delta outside [0, 1].
    public static func limit(_ d: Double) -> Int64? { units(d, up: false) }
    public static func value(_ u: Int64) -> Double { Double(u) / perOne }
}

/// Check-and-spend in one IMMEDIATE transaction: SQLite's write lock serialises it across
/// threads and processes, so two queries can never both see the same remainder, of epsilon or
/// of delta. The audit entry of the query commits in the same transaction.
struct StoreBudgetAccountant: BudgetAccountant {
    let store: ProfileStore
    let audit: AuditRecord
    var policy: (sha256: String, schemaSHA256: String)? = nil

    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
        try spend(purpose: purpose, epsilon: epsilon, delta: 0, limit: limit, deltaLimit: 0, periodSeconds: periodSeconds)
    }

    func spend(purpose: String, epsilon: Epsilon, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        // A policy limit beyond 2^40 epsilon is as good as unlimited; clamped, it cannot trap.
        let limitUnits = Int64((min(max(limit, 0), 0x1p40) * Double(Epsilon.unitsPerOne)).rounded(.down))
        guard let deltaCharge = DeltaUnits.charge(delta), let deltaLimitUnits = DeltaUnits.limit(deltaLimit) else {
            throw VaultError(.usage, "delta must be between 0 and 1")
        }
        guard periodSeconds >= 1 else { throw VaultError(.configuration, "a budget period must be longer than zero") }
        return try store.pool.writeWithoutTransaction { db -> BudgetState in
            var state: BudgetState?
            var exceeded: BudgetExceeded?
            try db.inTransaction(.immediate) {
                if let policy {
                    let inForce = try ProfileStore.latestPolicy(db)
                    guard inForce?.sha256 == policy.sha256, inForce?.schemaSHA256 == policy.schemaSHA256 else {
                        throw VaultError(.configuration, "the policy in force changed since this process loaded the policy files; restart it to charge budget under the policy in force")
                    }
                }
                let start = try store.periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
                let spent = try ProfileStore.windowSpent(db, purpose: purpose, start: start, periodSeconds: periodSeconds)
                let (after, afterOverflow) = spent.epsilon.addingReportingOverflow(Int64(clamping: epsilon.chargeUnits))
                let (deltaAfter, deltaOverflow) = spent.delta.addingReportingOverflow(deltaCharge)
                let current = BudgetState(purpose: purpose, limit: limit, spent: Double(spent.epsilon) / Double(Epsilon.unitsPerOne), periodStart: start,
                                          deltaLimit: deltaLimit, deltaSpent: DeltaUnits.value(spent.delta))
                if afterOverflow || after > limitUnits {
                    exceeded = BudgetExceeded(state: current, requested: epsilon.chargedValue, requestedDelta: delta, deltaExceeded: false)
                    return .rollback
                }
                if deltaOverflow || deltaAfter > deltaLimitUnits {
                    exceeded = BudgetExceeded(state: current, requested: epsilon.chargedValue, requestedDelta: delta, deltaExceeded: true)
                    return .rollback
                }
                try db.execute(sql: """
                    INSERT INTO budget(purpose, period_start, period_seconds, spent_units, spent_delta_units) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(purpose, period_start, period_seconds) DO UPDATE SET
                        spent_units = spent_units + excluded.spent_units, spent_delta_units = spent_delta_units + excluded.spent_delta_units
                    """, arguments: [purpose, start, Int64(periodSeconds), Int64(epsilon.chargeUnits), deltaCharge])
                var record = audit
                record.epsilon = epsilon.chargedValue   // what is charged, as results and artifacts report it
                if Rho.isLedgerKey(purpose) {   // a zCDP purpose's row: the charge is rho (Gaussian.swift)
                    record.epsilon = nil
                    record.detail = (record.detail.map { $0 + "; " } ?? "") + Rho.auditDetail(ofLedgerCharge: epsilon)
                }
                if delta > 0 { record.detail = (record.detail.map { $0 + "; " } ?? "") + "delta \(AuditLog.decimal(delta))" }
                try store.appendAudit(db, [record])
                state = BudgetState(purpose: purpose, limit: limit, spent: Double(after) / Double(Epsilon.unitsPerOne), periodStart: start,
                                    deltaLimit: deltaLimit, deltaSpent: DeltaUnits.value(deltaAfter))
                return .commit
            }
            if let exceeded { throw exceeded }
            guard let state else { throw VaultError(.internalFailure, "the budget transaction ended without a result") }
            return state
        }
    }
}

/// Exact integer sums of the per-subject vectors `Coordinate` defines, in one SQL statement.
struct StoreAggregateSource: AggregateSource {
    let store: ProfileStore
    /// Always use the SQL form (tests compare it with the Swift scan of `NearestScan.swift`).
    var forceSQL = false
    /// Sum attribute coordinates with the native aggregate `pv_grid_sum` (GridSumFunction.swift)
    /// where it applies; false: the SQL form only (tests compare the two).
    var nativeAggregate = true

    /// One exact sum of the statement, which must be an integer (never NULL, REAL or text: the
    /// SQL sums integer contributions). Anything else is an integrity failure whose message
    /// shows no value.
    /// The SQL condition true when a stored attribute of field `f` holds what ingest never
    /// writes: another storage class than the type's, or a number outside the declared bounds.
    ///
    /// It runs once per row of a million-row scan, so it leans on SQLite's order of storage
    /// classes (NULL, then numbers, then TEXT, then BLOB: sqlite.org/datatype3.html, section 4.1)
    /// instead of `typeof()`, a function call with string comparisons that cost more than the
    /// aggregate itself: with bounds, `x > hi` is true for any TEXT or BLOB value as for a
    /// number above them; a TEXT column's damage is a BLOB, `x >= X''` (the smallest BLOB).
    /// Only a REAL in an integer column needs `typeof`. NULL makes every comparison NULL
    /// (false), as `NOT IN (..., 'null')` did. Tested against the `typeof` forms on every
    /// storage class (`DamageConditionTests`).
    static func damageCondition(_ x: String, _ f: FieldSpec) -> String? {
        switch f.type {
        case .int, .date:
            guard let b = f.bounds else { return "(typeof(\(x)) NOT IN ('integer', 'null'))" }
            return "(\(x) < \(literal(b.lowerBound, integral: true)) OR \(x) > \(literal(b.upperBound, integral: true)) OR typeof(\(x)) = 'real')"
        case .bool:
            return "(\(x) NOT IN (0, 1) OR typeof(\(x)) = 'real')"
        case .float:
            guard let b = f.bounds else { return "(typeof(\(x)) NOT IN ('integer', 'real', 'null'))" }
            return "(\(x) < \(literal(b.lowerBound)) OR \(x) > \(literal(b.upperBound)))"
        case .category, .string:
            return "(\(x) >= X'')"
        }
    }

    /// `damageCondition(x, f)` on the rows that pass `given` (conditions on this attribute,
    /// `x op value`, bound as the aggregate's WHERE binds them), without the terms those
    /// conditions already make false on every such row; nil when none is left. It flags exactly
    /// the passing rows the full condition flags (`DamageConditionTests`):
    /// - a text field's `x >= X''` after `x = t`, `x < t` or `x <= t` for a text t: a BLOB sorts
    ///   after every TEXT (and never equals one), so no BLOB passes;
    /// - a numeric field's `x < lo` after `x >= v`, `x > v` or `x = v` with v >= lo, and its
    ///   `x > hi` after `x <= v`, `x < v` or `x = v` with v <= hi: a number that passes lies on
    ///   the right side of the bound, and TEXT or BLOB (after every number) passes neither
    ///   `x <= v`, `x < v` nor `x = v`, while it is never below `lo`. The REAL check stays.
    /// This is the per-row cost of a count with `--where` (the raw count has none of it).
    static func damageCondition(_ x: String, _ f: FieldSpec, given: [WhereCondition]) -> String? {
        guard !given.isEmpty else { return damageCondition(x, f) }
        /// The condition's value as a number compared exactly with the bounds, if it is one.
        func number(_ c: WhereCondition) -> Double? {
            switch c.value {
            case .int(let i): return abs(i) < (1 << 53) ? Double(i) : nil
            case .real(let d): return d.isFinite ? d : nil
            case .text: return nil
            }
        }
        switch f.type {
        case .category, .string:
            let noBlob = given.contains { c in
                if case .text = c.value { return c.op == .eq || c.op == .lt || c.op == .le }
                return false
            }
            return noBlob ? nil : damageCondition(x, f)
        case .int, .date, .float:
            guard let b = f.bounds else { return damageCondition(x, f) }
            let aboveLow = given.contains { c in
                guard let v = number(c) else { return false }
                return (c.op == .ge || c.op == .gt || c.op == .eq) && v >= b.lowerBound
            }
            let belowHigh = given.contains { c in
                guard let v = number(c) else { return false }
                return (c.op == .le || c.op == .lt || c.op == .eq) && v <= b.upperBound
            }
            let integral = f.type != .float
            var terms: [String] = []
            if !aboveLow { terms.append("\(x) < \(integral ? literal(b.lowerBound, integral: true) : literal(b.lowerBound))") }
            if !belowHigh { terms.append("\(x) > \(integral ? literal(b.upperBound, integral: true) : literal(b.upperBound))") }
            if integral { terms.append("typeof(\(x)) = 'real'") }
            return terms.isEmpty ? nil : "(" + terms.joined(separator: " OR ") + ")"
        case .bool:
            return damageCondition(x, f)
        }
    }

    /// The SQL condition true for an event row whose value or time is not what ingest writes:
    /// a value that is not a number or lies outside the kind's bounds, a time that is not an integer.
    static func eventDamageCondition(_ kind: EventKindSpec?) -> String {
        var c = "typeof(value) NOT IN ('integer', 'real') OR typeof(time) <> 'integer'"
        if let b = kind?.value.bounds { c += " OR value < \(literal(b.lowerBound)) OR value > \(literal(b.upperBound))" }
        return "(\(c))"
    }

    static func integerSum(_ v: DatabaseValue) throws -> Int64 {
        switch v.storage {
        case .int64(let i): return i
        case .double(let d): if let i = Int64(exactly: d) { return i }
        default: break
        }
        throw VaultError(.integrity, "an aggregate of the store is not an integer (the store may have been edited)")
    }

    /// A REAL expression SQLite reads as exactly `d`. Not the shortest decimal that round-trips
    /// (Swift's `"\(d)"`): SQLite's decimal conversion (3.40) reads about 3 in 1,000 of those one
    /// bit off (e.g. -518461.4920477173), which would move a bound, a centre or a tie of the
    /// rounding away from the reference's. Instead d = m · 2^s with m an odd integer below 2^53,
    /// written as `m.0` (read exactly: an integer below 2^53) times or divided by powers of two of
    /// at most 2^52 (each exact as an integer, each step exact in binary floating point); SQLite
    /// evaluates such a constant once per statement.
    static func literal(_ d: Double) -> String {
        // Bounds and grids are finite (checked where they are declared); should one not be, SQLite
        // reads 9e999 as an infinity, the value Swift would have computed.
        guard d.isFinite else { return d.isNaN ? "NULL" : (d > 0 ? "9e999" : "-9e999") }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        var m = d.exponentBitPattern == 0 ? d.significandBitPattern : d.significandBitPattern | (1 << 52)
        var s = d.exponentBitPattern == 0 ? -1074 : Int(d.exponentBitPattern) - 1075
        while m & 1 == 0 { m >>= 1; s += 1 }
        var out = (d.sign == .minus ? "-" : "") + "\(m).0"
        guard s != 0 else { return out }
        var k = abs(s)
        while k > 0 {
            let step = min(k, 52)
            out += (s > 0 ? " * " : " / ") + "\(UInt64(1) << UInt64(step)).0"
            k -= step
        }
        return "(" + out + ")"
    }

    /// An INTEGER literal for an integral value of an integral column (so its values stay
    /// integers), a REAL literal otherwise.
    static func literal(_ d: Double, integral: Bool) -> String {
        integral && d == d.rounded() && abs(d) < 9e15 ? String(Int64(d)) : literal(d)
    }

    /// The SQL for one subject value's contribution: round((clamp(x, lo, hi) - c) / g), written
    /// as cheaply as its inputs allow (this runs once per row of a million-row scan): integer
    /// literals and no rounding when everything is integral, `* (1/g)` (exact: g is a power of
    /// two), and `roundedInteger` (round half away from zero, exactly) otherwise.
    ///
    /// `stored` is the range every stored value is known to lie in: the schema's bounds, which
    /// ingest enforces (values outside are rejected or clamped) and which cannot change under a
    /// store (they are part of its schema fingerprint). When it lies within [lo, hi], clamping
    /// is the identity on every stored value and is left out of the SQL.
    static func contribution(_ x: String, lower lo: Double, upper hi: Double, center c: Double, grid g: Double, integral: Bool,
                             stored: ClosedRange<Double>?) -> String {
        func lit(_ d: Double) -> String { literal(d, integral: integral) }
        let exact = integral && g == 1 && c == c.rounded()
        var e: String
        if let stored, stored.lowerBound >= lo, stored.upperBound <= hi {
            e = x
        } else {
            // CASE compiles to comparisons in the VM; min()/max() are function calls, slower.
            // NULL falls through to ELSE and stays NULL (SUM skips it).
            e = "(CASE WHEN \(x) < \(lit(lo)) THEN \(lit(lo)) WHEN \(x) > \(lit(hi)) THEN \(lit(hi)) ELSE \(x) END)"
        }
        let value = e
        if c != 0 { e = "(\(e) - \(exact ? lit(c) : literal(c)))" }
        if g != 1 { e = "(\(e) * \(literal(1 / g)))" }
        if exact { return e }
        if lo - c >= 0 { return roundedInteger(e, nonNegative: true) }
        // Beyond 2^62 a sum of contributions overflows anyway; there the forms could differ by
        // SQLite's saturation of REAL to INTEGER at -2^63, so the signed form stays.
        guard max(abs(lo - c), abs(hi - c)) / g < 0x1p62 else { return roundedInteger(e, nonNegative: false) }
        // roundedInteger's signed form, with the sign read from the value before centring: e < 0
        // exactly when value < c (g > 0; a difference of doubles is 0 only when they are equal;
        // should e underflow to 0, both forms give 0), and CAST(e - h) = -CAST(h - e) (a
        // negated difference is exact; CAST truncates toward zero). `e` then appears once: the
        // column is compared with a constant instead of the expression computed twice.
        let h = "0.49999999999999994"
        return "CAST(\(e) + (CASE WHEN \(value) < \(literal(c)) THEN -\(h) ELSE \(h) END) AS INTEGER)"
    }

    /// The native aggregate (`GridSum`) for `COALESCE(SUM(contribution(x, ...)), 0)` over the
    /// column `x` of schema field `f`, with the same parameters and the same choice of form; nil
    /// where it does not apply (a text field, an integral field with bounds or centre that
    /// `contribution` writes as REAL literals, the signed form beyond 2^62), and the SQL stays.
    /// The function also refuses every value `damageCondition(x, f)` flags.
    static func gridSum(_ x: String, lower lo: Double, upper hi: Double, center c: Double, grid g: Double, integral: Bool, field f: FieldSpec) -> String? {
        let kind: Int
        switch f.type {
        case .int, .date: kind = 0
        case .bool: kind = 1
        case .float: kind = 2
        case .category, .string: return nil
        }
        guard integral == (kind != 2), lo.isFinite, hi.isFinite, c.isFinite, g.isFinite, g > 0, (1 / g).isFinite, lo <= hi else { return nil }
        let mode: Int
        if integral && g == 1 && c == c.rounded() {
            // The exact form: lit() writes these as INTEGER literals below 9e15 only.
            guard [lo, hi, c].allSatisfy({ $0 == $0.rounded() && abs($0) < 0x1p52 }) else { return nil }
            mode = 0
        } else if lo - c >= 0 {
            mode = 1
        } else if max(abs(lo - c), abs(hi - c)) / g < 0x1p62 {
            mode = 2
        } else {
            return nil
        }
        // A bool field's check is 0 or 1 (`damageCondition` ignores its bounds).
        let p = GridSum.parameters(mode: mode, kind: kind, lo: lo, hi: hi, c: c, invG: 1 / g, bounds: kind == 1 ? nil : f.bounds)
        return "\(GridSum.name)(\(x), \(p))"
    }

    /// round(e) half away from zero as an SQL integer, exact for every double e.
    ///
    /// Neither `CAST(e + 0.5 AS INTEGER)` nor SQLite's `round(e)` is: for e = ±0.49999999999999994
    /// (the double next to 1/2) both give ±1, as e + 0.5 rounds up to 1.0 in floating point;
    /// and e + 0.5 takes odd integers above 2^52 to their even neighbour.
    /// Adding h = 0.49999999999999994 (1/2 - 2^-54) instead and truncating is exact for every
    /// e >= 0: below a tie e + h stays under the next integer, and from a tie on it reaches it
    /// (docs/differential-privacy.md, "The reference sums"). A value that may be negative is
    /// rounded by its magnitude (`e` appears twice, so only there).
    static func roundedInteger(_ e: String, nonNegative: Bool) -> String {
        let h = "0.49999999999999994"
        if nonNegative { return "CAST(\(e) + \(h) AS INTEGER)" }
        return "(CASE WHEN \(e) < 0 THEN -CAST(\(h) - \(e) AS INTEGER) ELSE CAST(\(e) + \(h) AS INTEGER) END)"
    }

    /// z(x) = 2 (clamp(x) - lo) / (hi - lo) - 1 in SQL.
    static func signedUnit(_ x: String, _ f: ScaledFeature, stored: ClosedRange<Double>?) -> String {
        var e = x
        if !(stored.map { $0.lowerBound >= f.lower && $0.upperBound <= f.upper } ?? false) {
            e = "(CASE WHEN \(x) < \(literal(f.lower)) THEN \(literal(f.lower)) WHEN \(x) > \(literal(f.upper)) THEN \(literal(f.upper)) ELSE \(x) END)"
        }
        return "((\(e) - \(literal(f.lower))) * \(literal(2 / (f.upper - f.lower))) - 1.0)"
    }

    /// clamp(x) scaled to [0, 1] in SQL.
    static func unit(_ x: String, _ f: ScaledFeature, stored: ClosedRange<Double>?) -> String {
        var e = x
        if !(stored.map { $0.lowerBound >= f.lower && $0.upperBound <= f.upper } ?? false) {
            e = "(CASE WHEN \(x) < \(literal(f.lower)) THEN \(literal(f.lower)) WHEN \(x) > \(literal(f.upper)) THEN \(literal(f.upper)) ELSE \(x) END)"
        }
        return "((\(e) - \(literal(f.lower))) * \(literal(1 / (f.upper - f.lower))))"
    }

    /// The group key of `Grouping.nearest`: each squared distance is rounded down to a multiple
    /// of 2^-40, multiplied by 64 (k <= 64) plus the centroid's index, and SQLite's scalar
    /// min() picks the smallest: the nearest centroid, ties to the lowest index; `% 64` is the index.
    static func nearestKey(units: [String], centroids: [[Double]]) -> String {
        // Callers check 1...64 centroids; fewer than two: the one group there is.
        let terms = centroids.enumerated().map { (i, c) -> String in
            let d = zip(units, c).map { u, v in "(\(u) - \(literal(v))) * (\(u) - \(literal(v)))" }.joined(separator: " + ")
            return "CAST((\(d)) * 1099511627776.0 AS INTEGER) * 64 + \(i)"
        }
        if terms.count <= 1 { return "0" }
        return "(min(\(terms.joined(separator: ", "))) % 64)"
    }

    static func cellKey(units: [String], bins: Int) -> String {
        var parts: [String] = []
        var weight = 1
        for u in units {
            parts.append("min(\(bins - 1), CAST(\(u) * \(bins).0 AS INTEGER)) * \(weight)")
            weight *= bins
        }
        return "(" + parts.joined(separator: " + ") + ")"
    }

    /// Item groupings: one statement over the subjects' distinct items (`ItemSums` checks the
    /// request, caps each subject's sample and counts it).
    func itemSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        var sums = try ItemSums(r, schema: store.schema)
        var args: [any DatabaseValueConvertible] = [sums.kind]
        var filter = ""
        if let since = sums.since {
            filter += " AND time >= ?"
            args.append(since)
        }
        if let v = sums.vocabulary {
            let data = try JSONSerialization.data(withJSONObject: v)
            filter += " AND item IN (SELECT value FROM json_each(?))"
            args.append(String(decoding: data, as: UTF8.self))
        }
        var consent = ""
        if let p = r.consentPurpose {
            consent = " JOIN consent_state cs ON cs.subject_id = d.subject_id AND cs.purpose = ? AND cs.granted = 1"
            args.append(p)
        }
        // Segment by item: the subject's attribute value rides along on every row (NULL: no group).
        var segmentColumn = "NULL"
        if let attribute = sums.segmentAttribute {
            consent += " JOIN attributes a ON a.subject_id = d.subject_id"
            segmentColumn = "a.\(ProfileStore.quoted(attribute))"
        }
        // Every subject's distinct items with their last use, one subject's rows together; the
        // cap is applied in Swift (`ItemSums`).
        let from = """
            SELECT d.subject_id, d.item, d.t, \(segmentColumn), substr(s.pseudonym, 1, 8)
            FROM (SELECT subject_id, item, MAX(time) AS t FROM events WHERE kind = ?\(filter) GROUP BY subject_id, item) d
            JOIN subjects s ON s.id = d.subject_id\(consent)
            """
        let segmented = sums.segmentAttribute != nil
        return try store.pool.read { db in
            var statementSQL = from, statementArgs = args
            // Restricted and objecting subjects (Rights.swift): an anti-join only when there are any.
            if let x = try store.exclusion(db, alias: "d", objectionPurpose: r.objectionPurpose) {
                statementSQL += "\nWHERE \(x.sql)"
                statementArgs += x.args
            }
            statementSQL += "\nORDER BY d.subject_id"
            var current: Int64? = nil
            let cursor = try Row.fetchCursor(db, sql: statementSQL, arguments: StatementArguments(statementArgs.map { $0.databaseValue }))
            while let row = try cursor.next() {
                // Decoded by storage class: an edited events row is an integrity error, not a trap.
                guard let subject = Stored.int(row.stored(at: 0)) else {
                    throw VaultError(.integrity, "an event's subject column holds \(Stored.kind(row.stored(at: 0))), not a row id: the store was altered")
                }
                if subject != current {
                    current = subject
                    guard let p = Stored.blob(row.stored(at: 4)), p.count == 8 else {
                        throw Stored.damaged(subject: subject, "its pseudonym", row.stored(at: 4), expected: "a blob of 8 bytes")
                    }
                    var segment: String? = nil
                    if segmented {
                        let g = row.stored(at: 3)
                        if !g.isNull, Stored.text(g) == nil { throw Stored.damaged(subject: subject, "its segment attribute", g, expected: "text") }
                        segment = Stored.text(g)
                    }
                    sums.beginSubject(pseudonym: p, segment: segment)
                }
                guard let item = Stored.text(row.stored(at: 1)) else { throw Stored.damaged(subject: subject, "an event's item", row.stored(at: 1), expected: "text") }
                guard let t = Stored.int(row.stored(at: 2)) else { throw Stored.damaged(subject: subject, "an event's time", row.stored(at: 2), expected: "an integer") }
                sums.add(item: item, lastUsed: t)
            }
            return try sums.finish()
        }
    }

    func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        switch r.grouping {
        case .items?, .itemPairs?, .itemSets?, .segmentItems?: return try itemSums(r)
        case .nearest? where !forceSQL && nearestScanApplies(r): return try nearestSums(r)
        default: break
        }
        let schema = store.schema
        let attrNames = Set(schema.attributeFields.map(\.name))
        var integralAttrs = Set(schema.attributeFields.filter { [.int, .bool, .date].contains($0.type) }.map(\.name))
        var derivedByName: [String: DerivedAttribute] = [:]
        for d in r.derived {
            guard schema.field(named: d.name) == nil, derivedByName.updateValue(d, forKey: d.name) == nil else {
                throw VaultError(.usage, "derived attribute \(d.name) is defined twice or is a field of the schema")
            }
            guard d.lower < d.upper, d.lower.isFinite, d.upper.isFinite else { throw VaultError(.usage, "derived attribute \(d.name) needs finite bounds lower < upper") }
            if d.integral { integralAttrs.insert(d.name) }
        }
        // Derived attributes: one LEFT JOIN per event kind on a GROUP BY subject_id subquery with
        // one conditional aggregate per derived attribute, clamped there (once per subject).
        // Subjects with no such events get the clamped 0. Built after the rest of the statement
        // (only the names it uses), so they come last among the joins.
        var derivedKinds: [String] = []                       // join order
        var derivedColumns: [String: [DerivedAttribute]] = [:] // kind -> its used attributes, column order
        var usedAttributes: [String] = []
        func column(_ name: String) throws -> String {
            if attrNames.contains(name) {
                if !usedAttributes.contains(name) { usedAttributes.append(name) }
                return "a." + ProfileStore.quoted(name)
            }
            guard let d = derivedByName[name] else { throw VaultError(.usage, "\(name) is not an attribute of the schema") }
            if derivedColumns[d.eventKind] == nil { derivedKinds.append(d.eventKind) }
            var cols = derivedColumns[d.eventKind, default: []]
            if !cols.contains(d) { cols.append(d) }
            derivedColumns[d.eventKind] = cols
            let zero = Self.literal(min(d.upper, max(d.lower, 0)), integral: d.integral)
            return "COALESCE(d\(derivedKinds.firstIndex(of: d.eventKind)!).v\(cols.firstIndex(of: d)!), \(zero))"
        }
        /// The bounds every value of the column lies in: the schema's, which ingest enforces, or
        /// a derived attribute's declared bounds, which its subquery clamps to.
        func stored(_ name: String) -> ClosedRange<Double>? {
            if let d = derivedByName[name] { return d.lower...d.upper }
            return schema.field(named: name)?.numericBounds
        }
        var args: [any DatabaseValueConvertible] = []
        var joins: [String] = []
        if let p = r.consentPurpose {
            joins.append("JOIN consent_state cs ON cs.subject_id = a.subject_id AND cs.purpose = ? AND cs.granted = 1")
            args.append(p)
        }
        // One capped subquery per (event kind, cap): the subject's most recent events first.
        var eventJoins: [String: String] = [:]   // "kind|k" -> alias
        var selects: [String] = []
        // The statement with the native aggregate (`GridSum`) where it applies: select index ->
        // its column. `covered`: attributes whose every used row that aggregate checks.
        var fastSelects: [Int: String] = [:]
        var covered: Set<String> = []
        var joinArgs: [any DatabaseValueConvertible] = []
        func eventAlias(_ kind: String, _ k: Int, valueExpr: String?) -> String {
            let key = "\(kind)|\(k)|\(valueExpr ?? "")"
            if let a = eventJoins[key] { return a }
            let alias = "e\(eventJoins.count)"
            eventJoins[key] = alias
            let v = valueExpr.map { "SUM(\($0)) AS v" } ?? "0 AS v"
            // `bad`: a subject whose counted events hold what ingest never writes (checked below).
            joins.append("""
                LEFT JOIN (SELECT subject_id, \(v), COUNT(*) AS n, MIN(CASE WHEN \(Self.eventDamageCondition(schema.eventKind(named: kind))) THEN subject_id END) AS bad FROM (
                    SELECT subject_id, value, time, ROW_NUMBER() OVER (PARTITION BY subject_id ORDER BY time DESC, id DESC) AS rn
                    FROM events WHERE kind = ?) WHERE rn <= \(k) GROUP BY subject_id) \(alias) ON \(alias).subject_id = a.subject_id
                """)
            joinArgs.append(kind)
            return alias
        }
        for c in r.coordinates {
            switch c {
            case .subjects:
                selects.append("COUNT(*)")
            case .nonNull(let name):
                selects.append("COUNT(\(try column(name)))")
            case let .attribute(name, lo, hi, center, grid):
                let x = try column(name)
                let integral = integralAttrs.contains(name)
                selects.append("COALESCE(SUM(\(Self.contribution(x, lower: lo, upper: hi, center: center, grid: grid, integral: integral, stored: stored(name)))), 0)")
                if nativeAggregate, derivedByName[name] == nil, let f = schema.field(named: name),
                   let native = Self.gridSum(x, lower: lo, upper: hi, center: center, grid: grid, integral: integral, field: f) {
                    fastSelects[selects.count - 1] = native
                    covered.insert(name)
                }
            case let .events(kind, lo, hi, center, grid, k):
                // events.value is a REAL column whatever the kind's type: never the integer-only form.
                let expr = Self.contribution("value", lower: lo, upper: hi, center: center, grid: grid, integral: false,
                                             stored: schema.eventKind(named: kind)?.value.bounds)
                let alias = eventAlias(kind, k, valueExpr: expr)
                selects.append("COALESCE(SUM(\(alias).v), 0)")
            case let .eventCount(kind, k):
                let alias = eventAlias(kind, k, valueExpr: nil)
                selects.append("COALESCE(SUM(\(alias).n), 0)")
            case let .product(l, rr, grid):
                var e = Self.signedUnit(try column(l.name), l, stored: stored(l.name))
                if let rr { e = "(\(e) * \(Self.signedUnit(try column(rr.name), rr, stored: stored(rr.name))))" }
                selects.append("COALESCE(SUM(\(Self.roundedInteger("(\(e) * \(Self.literal(1 / grid)))", nonNegative: false))), 0)")
            case .itemPresence, .itemPairWeight, .itemSetPresence:
                throw VaultError(.usage, "item coordinates need an item grouping")
            }
        }
        var wheres: [String] = []
        var whereArgs: [any DatabaseValueConvertible] = []
        for p in r.predicates {
            wheres.append("\(try column(p.attribute)) \(p.op.rawValue) ?")
            // A number compares with a finite number, text with text (as the gate builds them);
            // SQLite would otherwise convert one to the other by column affinity.
            let textual = schema.field(named: p.attribute).map { $0.type == .category || $0.type == .string } ?? false
            switch p.value {
            case .text: guard textual else { throw VaultError(.usage, "condition on \(p.attribute): a number compares with a number") }
            case .int: guard !textual else { throw VaultError(.usage, "condition on \(p.attribute): text compares with text") }
            case .real(let d):
                guard !textual, d.isFinite else { throw VaultError(.usage, "condition on \(p.attribute): compares with a finite number") }
            }
            switch p.value {
            case .int(let i): whereArgs.append(i)
            case .real(let d): whereArgs.append(d)
            case .text(let t): whereArgs.append(t)
            }
        }
        for n in r.nonNull { wheres.append("\(try column(n)) IS NOT NULL") }
        var groupColumn: String?
        switch r.grouping {
        case let .attribute(name, _)?:
            // groups outside the domain (none can be stored: ingest checks the domain) are dropped below
            guard derivedByName[name] == nil else { throw VaultError(.usage, "derived attribute \(name) is numeric; it cannot group") }
            groupColumn = try column(name)
            // Group keys are text: a numeric attribute is refused here, whether or not a stored
            // value would reach the key check below.
            guard let f = schema.field(named: name), f.type == .category || f.type == .string else {
                throw VaultError(.usage, "\(name) is not a categorical attribute")
            }
        case let .nearest(features, centroids)?:
            guard !centroids.isEmpty, centroids.count <= 64, centroids.allSatisfy({ $0.count == features.count }) else {
                throw VaultError(.usage, "nearest-centroid grouping needs 1 to 64 centroids of the features' dimension")
            }
            let units = try features.map { Self.unit(try column($0.name), $0, stored: stored($0.name)) }
            for f in features { wheres.append("\(try column(f.name)) IS NOT NULL") }
            groupColumn = "CAST(\(Self.nearestKey(units: units, centroids: centroids)) AS TEXT)"
        case let .cell(features, bins)?:
            guard bins >= 1, Grouping.cellCount(dimensions: features.count, bins: bins) <= 1 << 20 else {
                throw VaultError(.usage, "grid grouping has too many cells")
            }
            let units = try features.map { Self.unit(try column($0.name), $0, stored: stored($0.name)) }
            for f in features { wheres.append("\(try column(f.name)) IS NOT NULL") }
            groupColumn = "CAST(\(Self.cellKey(units: units, bins: bins)) AS TEXT)"
        case let .thresholds(features, cuts)?:
            guard !features.isEmpty, features.count == cuts.count, features.count <= 16, cuts.allSatisfy(\.isFinite) else {
                throw VaultError(.usage, "tree grouping needs 1 to 16 levels, one finite cut per feature")
            }
            var bits: [String] = []
            for (l, (name, cut)) in zip(features, cuts).enumerated() {
                let c = try column(name)
                wheres.append("\(c) IS NOT NULL")
                bits.append("(CASE WHEN \(c) >= \(Self.literal(cut, integral: false)) THEN \(1 << l) ELSE 0 END)")
            }
            groupColumn = "CAST((" + bits.joined(separator: " + ") + ") AS TEXT)"
        default:
            break
        }
        var derivedArgs: [any DatabaseValueConvertible] = []
        for (i, kind) in derivedKinds.enumerated() {
            var aggregates: [String] = []
            for (j, d) in derivedColumns[kind, default: []].enumerated() {
                var window: [String] = []
                if let from = d.from { window.append("time >= ?"); derivedArgs.append(from) }
                if let before = d.before { window.append("time < ?"); derivedArgs.append(before) }
                let w = window.joined(separator: " AND ")
                let agg: String
                switch d.aggregate {
                case .sum: agg = w.isEmpty ? "TOTAL(value)" : "TOTAL(CASE WHEN \(w) THEN value END)"
                case .count: agg = w.isEmpty ? "COUNT(*)" : "COUNT(CASE WHEN \(w) THEN 1 END)"
                case .distinctItems: agg = w.isEmpty ? "COUNT(DISTINCT item)" : "COUNT(DISTINCT CASE WHEN \(w) THEN item END)"
                }
                // Scalar max/min: the aggregate appears once (its window parameters too).
                aggregates.append("max(\(Self.literal(d.lower, integral: d.integral)), min(\(Self.literal(d.upper, integral: d.integral)), \(agg))) AS v\(j)")
            }
            aggregates.append("MIN(CASE WHEN \(Self.eventDamageCondition(schema.eventKind(named: kind))) THEN subject_id END) AS bad")
            joins.append("LEFT JOIN (SELECT subject_id, \(aggregates.joined(separator: ", ")) FROM events WHERE kind = ? GROUP BY subject_id) d\(i) ON d\(i).subject_id = a.subject_id")
            derivedArgs.append(kind)
        }
        // One more column, computed in the same scan: the first subject row whose used attribute
        // holds what ingest never writes (text in a number, a number outside its bounds: an
        // edited store). Such a value would otherwise be counted by SQLite's conversions (text
        // as 0) or break the sensitivity the clamp elision relies on; it is an integrity error.
        // The event subqueries report theirs in their `bad` column.
        // With the native aggregate, an attribute it sums needs no check here (it refuses every
        // value the check flags), nor the group attribute of an attribute grouping: its damage
        // (a BLOB) shows in the group key, which the fast statement's caller checks below.
        var keyChecked = false
        if nativeAggregate, case let .attribute(name, _)? = r.grouping { keyChecked = true; covered.insert(name) }
        func checks(_ skip: Set<String>) -> [String] {
            var checks: [String] = []
            // Each attribute's check on the rows the WHERE lets through: the terms its conditions
            // already rule out are left out (`damageCondition(_:_:given:)`).
            let damage = usedAttributes.filter { !skip.contains($0) }.compactMap { name in
                schema.field(named: name).flatMap { Self.damageCondition("a." + ProfileStore.quoted(name), $0, given: r.predicates.filter { $0.attribute == name }) }
            }
            if !damage.isEmpty { checks.append("MIN(CASE WHEN \(damage.joined(separator: " OR ")) THEN a.subject_id END)") }
            for alias in Set(eventJoins.values).sorted() { checks.append("MIN(\(alias).bad)") }
            for i in derivedKinds.indices { checks.append("MIN(d\(i).bad)") }
            return checks
        }
        let sqlChecks = checks([])
        let fastChecks = checks(covered)
        let fastColumns = selects.indices.map { fastSelects[$0] ?? selects[$0] }
        let useFast = !fastSelects.isEmpty || fastChecks != sqlChecks
        func head(_ columns: [String], _ checks: [String]) -> String {
            "SELECT \(groupColumn.map { "\($0) AS g, " } ?? "")\((columns + checks).joined(separator: ", ")) FROM attributes a \(joins.joined(separator: " "))"
        }
        let offset = groupColumn == nil ? 0 : 1
        return try store.pool.read { db in
            var allWheres = wheres, allWhereArgs = whereArgs
            // Restricted and objecting subjects (Rights.swift): an anti-join only when there are any.
            if let x = try store.exclusion(db, alias: "a", objectionPurpose: r.objectionPurpose) {
                allWheres.append(x.sql)
                allWhereArgs += x.args
            }
            var tail = ""
            if !allWheres.isEmpty { tail += " WHERE " + allWheres.joined(separator: " AND ") }
            if groupColumn != nil { tail += " GROUP BY 1" }   // the first result column (an expression for the centroid and grid groupings)
            // Argument order follows the SQL text: consent join, event joins, derived joins, then WHERE.
            let allArgs = StatementArguments((args + joinArgs + derivedArgs + allWhereArgs).map { $0.databaseValue })
            var rows: [Row]? = nil
            var checkCount = fastChecks.count
            if useFast {
                do {
                    let fast = try Row.fetchAll(db, sql: head(fastColumns, fastChecks) + tail, arguments: allArgs)
                    // A group key the store never writes (not text): the SQL form reports it as today.
                    if !keyChecked || fast.allSatisfy({ $0.stored(at: 0).isNull || Stored.text($0.stored(at: 0)) != nil }) { rows = fast }
                } catch let error as DatabaseError where error.message == GridSum.fallbackMessage || error.message == "integer overflow" {
                    // A value outside the native aggregate's domain (damage, overflow, extremes),
                    // or another SUM of the statement overflowing: the SQL form computes, or
                    // refuses, exactly as without the native aggregate. Any other error (the
                    // function missing on this connection) is thrown.
                }
            }
            if rows == nil {
                checkCount = sqlChecks.count
                do {
                    rows = try Row.fetchAll(db, sql: head(selects, sqlChecks) + tail, arguments: allArgs)
                } catch let error as DatabaseError where error.message == "integer overflow" {
                    // SQLite's SUM refuses to wrap; the reference refuses the same sums.
                    throw VaultError(.invalidInput, "the aggregate overflows 64-bit integers")
                }
            }
            let found = rows ?? []
            var out: [String: [Int64]] = [:]
            if let domain = r.grouping?.domain {
                for key in domain { out[key] = [Int64](repeating: 0, count: r.coordinates.count) }
            } else {
                out[""] = [Int64](repeating: 0, count: r.coordinates.count)
            }
            for row in found {
                for c in 0..<checkCount {
                    if let id = Stored.int(row.stored(at: offset + r.coordinates.count + c)) {
                        throw VaultError(.integrity, "subject row \(id): an attribute or event holds a value of the wrong type or outside its bounds: the store was altered")
                    }
                }
            }
            for row in found {
                let g = groupColumn == nil ? DatabaseValue.null : row.stored(at: 0)
                if !g.isNull, Stored.text(g) == nil { throw VaultError(.integrity, "a group attribute of the store holds \(Stored.kind(g)), not text: the store was altered") }
                let key = Stored.text(g) ?? ""
                guard out[key] != nil else { continue }
                out[key] = try (0..<r.coordinates.count).map { try Self.integerSum(row[$0 + offset]) }
            }
            return out
        }
    }
}

// MARK: - A subject's own items (for `recommend`)

/// One subject's own interactions as `recommend` needs them: nothing is released to anyone
/// but the subject's own recommendation, and the caller checks consent and audits the read.
public struct SubjectItems: Sendable {
    public var customerID: String
    public var pseudonym: [UInt8]
    /// nil: no such subject.
    public var items: Set<String>?
    public var consent: Bool
    /// The subject's value of the requested segment attribute (nil: not asked, null or no consent).
    public var segment: String? = nil
}

extension ProfileStore {
    /// The distinct items of `kind` each subject has events for, with its consent for
    /// `purpose` (nil purpose: consent not needed, reported true), in one read transaction.
    public func subjectItems(customerIDs: [String], kind: String, consentPurpose: String?, segmentAttribute: String? = nil) throws -> [SubjectItems] {
        let pseudos = try customerIDs.map { try pseudonym(ofCustomerID: $0) }
        let segmentSQL = try segmentAttribute.map { name -> String in
            guard let f = schema.attributeFields.first(where: { $0.name == name }), f.type == .category else {
                throw VaultError(.usage, "\(name) is not a categorical attribute")
            }
            return "SELECT \(Self.quoted(f.name)) FROM attributes WHERE subject_id = ?"
        }
        return try pool.read { db in
            try zip(customerIDs, pseudos).map { id, pseudo in
                guard let s = try subjectRow(db, pseudonym: pseudo) else {
                    return SubjectItems(customerID: id, pseudonym: pseudo, items: nil, consent: false)
                }
                // A restricted subject (Art. 18) is served as one without consent.
                var consent = try !isRestricted(db, subjectID: s.id)
                if consent, let consentPurpose {
                    consent = try Bool.fetchOne(db, sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?", arguments: [consentPurpose, s.id]) ?? false
                }
                let items = consent ? Set(try String.fetchAll(db, sql: "SELECT DISTINCT item FROM events WHERE subject_id = ? AND kind = ?", arguments: [s.id, kind])) : []
                let segment = try segmentSQL.flatMap { consent ? try String.fetchOne(db, sql: $0, arguments: [s.id]) : nil }
                return SubjectItems(customerID: id, pseudonym: pseudo, items: items, consent: consent, segment: segment)
            }
        }
    }
}
