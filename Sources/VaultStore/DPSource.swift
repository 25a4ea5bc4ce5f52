import Foundation
public import DifferentialPrivacy
public import GRDB
public import VaultAudit

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

    /// A budget accountant that appends `audit` (with the epsilon charged) in the same
    /// transaction as the charge.
    public func budgetAccountant(audit: AuditRecord) -> any BudgetAccountant {
        StoreBudgetAccountant(store: self, audit: audit)
    }

    /// Start of the current budget period: periods are consecutive windows of the purpose's
    /// period length, counted from the store's creation.
    func periodStart(periodSeconds: Int, now: Int64, _ db: Database) throws -> Int64 {
        let created = Int64(try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'created_at'") ?? "0") ?? 0
        let p = Int64(max(1, periodSeconds))
        return created + max(0, (now - created) / p) * p
    }

    /// Budget of a purpose in its current period (nothing spent yet: 0).
    public func budgetState(purpose: String, limit: Double, periodSeconds: Int) throws -> BudgetState {
        try pool.read { db in
            let start = try periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
            let units = try Int64.fetchOne(db, sql: "SELECT spent_units FROM budget WHERE purpose = ? AND period_start = ?", arguments: [purpose, start]) ?? 0
            return BudgetState(purpose: purpose, limit: limit, spent: Double(units) / Double(Epsilon.unitsPerOne), periodStart: start)
        }
    }
}

/// Check-and-spend in one IMMEDIATE transaction: SQLite's write lock serialises it across
/// threads and processes, so two queries can never both see the same remainder. The audit
/// entry of the query commits in the same transaction.
struct StoreBudgetAccountant: BudgetAccountant {
    let store: ProfileStore
    let audit: AuditRecord

    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
        let limitUnits = Int64((limit * Double(Epsilon.unitsPerOne)).rounded(.down))
        return try store.pool.writeWithoutTransaction { db -> BudgetState in
            var state: BudgetState?
            var exceeded: BudgetExceeded?
            try db.inTransaction(.immediate) {
                let start = try store.periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
                let spent = try Int64.fetchOne(db, sql: "SELECT spent_units FROM budget WHERE purpose = ? AND period_start = ?", arguments: [purpose, start]) ?? 0
                let after = spent + Int64(epsilon.chargeUnits)
                if after > limitUnits {
                    exceeded = BudgetExceeded(state: BudgetState(purpose: purpose, limit: limit, spent: Double(spent) / Double(Epsilon.unitsPerOne), periodStart: start),
                                              requested: epsilon.requested)
                    return .rollback
                }
                try db.execute(sql: "INSERT INTO budget(purpose, period_start, spent_units) VALUES (?, ?, ?) ON CONFLICT(purpose, period_start) DO UPDATE SET spent_units = excluded.spent_units",
                               arguments: [purpose, start, after])
                var record = audit
                record.epsilon = epsilon.requested
                try store.appendAudit(db, [record])
                state = BudgetState(purpose: purpose, limit: limit, spent: Double(after) / Double(Epsilon.unitsPerOne), periodStart: start)
                return .commit
            }
            if let exceeded { throw exceeded }
            return state!
        }
    }
}

/// Exact integer sums of the per-subject vectors `Coordinate` defines, in one SQL statement.
struct StoreAggregateSource: AggregateSource {
    let store: ProfileStore

    /// A REAL literal with full precision (Swift prints the shortest round-tripping form,
    /// always with a `.` or an exponent).
    static func literal(_ d: Double) -> String {
        precondition(d.isFinite, "bounds and grids are finite")
        return "\(d)"
    }

    /// The SQL for one subject value's contribution: round((clamp(x, lo, hi) - c) / g), written
    /// as cheaply as its inputs allow (this runs once per row of a million-row scan): integer
    /// literals and no rounding when everything is integral, `* (1/g)` (exact: g is a power of
    /// two), and `CAST(v + 0.5 AS INTEGER)` (round half up) when the value cannot be negative.
    /// Every form equals `CAST(round(...) AS INTEGER)`, SQLite's round-half-away-from-zero.
    ///
    /// `stored` is the range every stored value is known to lie in: the schema's bounds, which
    /// ingest enforces (values outside are rejected or clamped) and which cannot change under a
    /// store (they are part of its schema fingerprint). When it lies within [lo, hi], clamping
    /// is the identity on every stored value and is left out of the SQL.
    static func contribution(_ x: String, lower lo: Double, upper hi: Double, center c: Double, grid g: Double, integral: Bool,
                             stored: ClosedRange<Double>?) -> String {
        func lit(_ d: Double) -> String { integral && d == d.rounded() && abs(d) < 9e15 ? String(Int64(d)) : literal(d) }
        let exact = integral && g == 1 && c == c.rounded()
        var e: String
        if let stored, stored.lowerBound >= lo, stored.upperBound <= hi {
            e = x
        } else {
            // CASE compiles to comparisons in the VM; min()/max() are function calls, slower.
            // NULL falls through to ELSE and stays NULL (SUM skips it).
            e = "(CASE WHEN \(x) < \(lit(lo)) THEN \(lit(lo)) WHEN \(x) > \(lit(hi)) THEN \(lit(hi)) ELSE \(x) END)"
        }
        if c != 0 { e = "(\(e) - \(exact ? lit(c) : literal(c)))" }
        if g != 1 { e = "(\(e) * \(literal(1 / g)))" }
        if exact { return e }
        return lo - c >= 0 ? "CAST(\(e) + 0.5 AS INTEGER)" : "CAST(round(\(e)) AS INTEGER)"
    }

    func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        let schema = store.schema
        let attrNames = Set(schema.attributeFields.map(\.name))
        let integralAttrs = Set(schema.attributeFields.filter { [.int, .bool, .date].contains($0.type) }.map(\.name))
        func column(_ name: String) throws -> String {
            guard attrNames.contains(name) else { throw VaultError(.usage, "\(name) is not an attribute of the schema") }
            return "a." + ProfileStore.quoted(name)
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
        var joinArgs: [any DatabaseValueConvertible] = []
        func eventAlias(_ kind: String, _ k: Int, valueExpr: String?) -> String {
            let key = "\(kind)|\(k)|\(valueExpr ?? "")"
            if let a = eventJoins[key] { return a }
            let alias = "e\(eventJoins.count)"
            eventJoins[key] = alias
            let v = valueExpr.map { "SUM(\($0)) AS v" } ?? "0 AS v"
            joins.append("""
                LEFT JOIN (SELECT subject_id, \(v), COUNT(*) AS n FROM (
                    SELECT subject_id, value, ROW_NUMBER() OVER (PARTITION BY subject_id ORDER BY time DESC, id DESC) AS rn
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
                selects.append("COALESCE(SUM(\(Self.contribution(x, lower: lo, upper: hi, center: center, grid: grid, integral: integralAttrs.contains(name), stored: schema.field(named: name)?.numericBounds))), 0)")
            case let .events(kind, lo, hi, center, grid, k):
                // events.value is a REAL column whatever the kind's type: never the integer-only form.
                let expr = Self.contribution("value", lower: lo, upper: hi, center: center, grid: grid, integral: false,
                                             stored: schema.eventKind(named: kind)?.value.bounds)
                let alias = eventAlias(kind, k, valueExpr: expr)
                selects.append("COALESCE(SUM(\(alias).v), 0)")
            case let .eventCount(kind, k):
                let alias = eventAlias(kind, k, valueExpr: nil)
                selects.append("COALESCE(SUM(\(alias).n), 0)")
            }
        }
        var wheres: [String] = []
        var whereArgs: [any DatabaseValueConvertible] = []
        for p in r.predicates {
            wheres.append("\(try column(p.attribute)) \(p.op.rawValue) ?")
            switch p.value {
            case .int(let i): whereArgs.append(i)
            case .real(let d): whereArgs.append(d)
            case .text(let t): whereArgs.append(t)
            }
        }
        var groupColumn: String?
        if let g = r.groupBy {
            let col = try column(g.attribute)
            groupColumn = col
            _ = g   // groups outside the domain (none can be stored: ingest checks the domain) are dropped below
        }
        var sql = "SELECT \(groupColumn.map { "\($0) AS g, " } ?? "")\(selects.joined(separator: ", ")) FROM attributes a \(joins.joined(separator: " "))"
        if !wheres.isEmpty { sql += " WHERE " + wheres.joined(separator: " AND ") }
        if let groupColumn { sql += " GROUP BY \(groupColumn)" }
        // Argument order follows the SQL text: consent join, event joins, then WHERE.
        let allArgs = args + joinArgs + whereArgs
        let offset = groupColumn == nil ? 0 : 1
        return try store.pool.read { db in
            var out: [String: [Int64]] = [:]
            if let g = r.groupBy {
                for key in g.domain { out[key] = [Int64](repeating: 0, count: r.coordinates.count) }
            } else {
                out[""] = [Int64](repeating: 0, count: r.coordinates.count)
            }
            for row in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(allArgs.map { $0.databaseValue })) {
                let key: String = groupColumn == nil ? "" : (row[0] as String?) ?? ""
                guard out[key] != nil else { continue }
                out[key] = (0..<r.coordinates.count).map { row[$0 + offset] as Int64 }
            }
            return out
        }
    }
}
