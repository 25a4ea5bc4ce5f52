import GRDB
import Testing
import DifferentialPrivacy
import VaultPolicy
@testable import VaultStore

/// `StoreAggregateSource.damageCondition` (the per-row check that an aggregate's attribute holds
/// what ingest writes) is written with comparisons instead of `typeof()`, for speed. It must
/// flag exactly the rows the plain `typeof` form flags, for every storage class an edited file
/// could hold, in columns of the store's own affinities.
@Suite struct DamageConditionTests {
    /// The check as it was written before, with `typeof`: the reference.
    static func reference(_ x: String, _ f: FieldSpec) -> String {
        func lit(_ d: Double, _ integral: Bool) -> String { StoreAggregateSource.literal(d, integral: integral) }
        switch f.type {
        case .int, .date:
            var c = "typeof(\(x)) NOT IN ('integer', 'null')"
            if let b = f.bounds { c += " OR \(x) < \(lit(b.lowerBound, true)) OR \(x) > \(lit(b.upperBound, true))" }
            return "(\(c))"
        case .bool:
            return "(typeof(\(x)) NOT IN ('integer', 'null') OR \(x) NOT IN (0, 1))"
        case .float:
            var c = "typeof(\(x)) NOT IN ('integer', 'real', 'null')"
            if let b = f.bounds { c += " OR \(x) < \(StoreAggregateSource.literal(b.lowerBound)) OR \(x) > \(StoreAggregateSource.literal(b.upperBound))" }
            return "(\(c))"
        case .category, .string:
            return "(typeof(\(x)) NOT IN ('text', 'null'))"
        }
    }

    /// Every storage class, in range and out, as SQL literals (what a crafted row could hold).
    static let values = ["NULL", "0", "1", "18", "17", "100", "101", "-5", "250000", "250001", "1e999", "-1e999", "0.5", "1.0", "30.5", "18.0",
                         "'abc'", "''", "'50'", "'1e3'", "' 42'", "'x1'", "X''", "X'00'", "X'ffff'", "9223372036854775807", "-9223372036854775808"]

    @Test func theFastFormFlagsExactlyWhatTheTypeofFormFlags() throws {
        let fields: [(FieldSpec, String)] = [
            (FieldSpec(name: "i", type: .int, category: "c", required: false, bounds: 18...100), "INTEGER"),
            (FieldSpec(name: "i", type: .int, category: "c", required: false), "INTEGER"),
            (FieldSpec(name: "d", type: .date, category: "c", required: false), "INTEGER"),
            (FieldSpec(name: "b", type: .bool, category: "c", required: false), "INTEGER"),
            (FieldSpec(name: "f", type: .float, category: "c", required: false, bounds: 0...250000), "REAL"),
            (FieldSpec(name: "f", type: .float, category: "c", required: false, bounds: -1.5...0.25), "REAL"),
            (FieldSpec(name: "f", type: .float, category: "c", required: false), "REAL"),
            (FieldSpec(name: "s", type: .category, category: "c", required: false), "TEXT"),
            (FieldSpec(name: "s", type: .string, category: "c", required: false), "TEXT"),
        ]
        let db = try DatabaseQueue()
        var checked = 0
        for (f, affinity) in fields {
            try db.write { db in
                try db.execute(sql: "DROP TABLE IF EXISTS t")
                try db.execute(sql: "CREATE TABLE t(id INTEGER PRIMARY KEY, x \(affinity))")
                for (i, v) in Self.values.enumerated() { try db.execute(sql: "INSERT INTO t(id, x) VALUES (\(i), \(v))") }
            }
            let fast = try #require(StoreAggregateSource.damageCondition("x", f))
            let slow = Self.reference("x", f)
            let rows = try db.read { db in
                try Row.fetchAll(db, sql: "SELECT id, quote(x), typeof(x), COALESCE(\(fast), 0), COALESCE(\(slow), 0) FROM t")
            }
            for r in rows {
                let (id, shown, kind, a, b): (Int64, String, String, Int64, Int64) = (r[0], r[1], r[2], r[3], r[4])
                #expect(a == b, "\(f.type) \(String(describing: f.bounds)) in a \(affinity) column: value \(shown) (\(kind)): fast \(a), typeof \(b) (row \(id))")
                checked += 1
            }
        }
        #expect(checked == fields.count * Self.values.count)
    }

    /// With the WHERE's conditions on the attribute (`damageCondition(_:_:given:)`), the check
    /// flags exactly what the full check flags on every row that passes them: every storage
    /// class, in the store's affinity and in a column without one (where an edited file's TEXT
    /// '50' or REAL 18.0 stays as it is), for every operator and values below, on and above the
    /// bounds, bound as the aggregate binds them.
    @Test func theCheckGivenTheConditionsFlagsExactlyWhatTheFullCheckFlagsOnPassingRows() throws {
        let fields: [(FieldSpec, [String])] = [
            (FieldSpec(name: "i", type: .int, category: "c", required: false, bounds: 18...100), ["INTEGER", ""]),
            (FieldSpec(name: "i", type: .int, category: "c", required: false), ["INTEGER"]),
            (FieldSpec(name: "d", type: .date, category: "c", required: false, bounds: 0...40000), ["INTEGER", ""]),
            (FieldSpec(name: "b", type: .bool, category: "c", required: false), ["INTEGER"]),
            (FieldSpec(name: "f", type: .float, category: "c", required: false, bounds: 0...250000), ["REAL", ""]),
            (FieldSpec(name: "f", type: .float, category: "c", required: false, bounds: -1.5...0.25), ["REAL", ""]),
            (FieldSpec(name: "s", type: .category, category: "c", required: false), ["TEXT", ""]),
            (FieldSpec(name: "s", type: .string, category: "c", required: false), ["TEXT", ""]),
        ]
        let numbers: [WhereCondition.Value] = [.int(-5), .int(0), .int(17), .int(18), .int(30), .int(100), .int(101), .int(250000), .int(250001),
                                               .int(1 << 60), .real(-1.5), .real(0.25), .real(17.5), .real(18.0), .real(30.5), .real(100.0),
                                               .real(100.5), .real(-1e300), .real(1e300)]
        let texts: [WhereCondition.Value] = [.text("DE"), .text(""), .text("abc"), .text("50"), .text("zz")]
        let db = try DatabaseQueue()
        var compared = 0, elided = 0
        for (f, affinities) in fields {
            let textual = f.type == .category || f.type == .string
            for affinity in affinities {
                try db.write { db in
                    try db.execute(sql: "DROP TABLE IF EXISTS t")
                    try db.execute(sql: "CREATE TABLE t(id INTEGER PRIMARY KEY, x \(affinity))")
                    for (i, v) in Self.values.enumerated() { try db.execute(sql: "INSERT INTO t(id, x) VALUES (\(i), \(v))") }
                }
                let full = try #require(StoreAggregateSource.damageCondition("x", f))
                for op in WhereCondition.Op.allCases {
                    for value in textual ? texts : numbers {
                        let c = WhereCondition(attribute: f.name, op: op, value: value)
                        let given = StoreAggregateSource.damageCondition("x", f, given: [c])
                        if given != full { elided += 1 }
                        let argument: any DatabaseValueConvertible
                        switch value {
                        case .int(let i): argument = i
                        case .real(let d): argument = d
                        case .text(let t): argument = t
                        }
                        let rows = try db.read { db in
                            try Row.fetchAll(db, sql: "SELECT id, quote(x), COALESCE(\(given ?? "0"), 0), COALESCE(\(full), 0) FROM t WHERE x \(op.rawValue) ?",
                                             arguments: [argument])
                        }
                        for r in rows {
                            let (id, shown, a, b): (Int64, String, Int64, Int64) = (r[0], r[1], r[2], r[3])
                            #expect(a == b, "\(f.type) \(String(describing: f.bounds)) in a '\(affinity)' column, x \(op.rawValue) \(value): value \(shown) (row \(id)): given \(a), full \(b)")
                            compared += 1
                        }
                    }
                }
            }
        }
        // Not vacuous: many passing rows compared, and many checks shortened.
        #expect(compared > 5000 && elided > 100, "\(compared) rows, \(elided) shortened checks")
        // The bench's count --where country=DE,age>=30: no text check at all, no lower bound.
        let country = FieldSpec(name: "country", type: .category, category: "c", required: false)
        #expect(StoreAggregateSource.damageCondition("x", country, given: [WhereCondition(attribute: "country", op: .eq, value: .text("DE"))]) == nil)
        let age = FieldSpec(name: "age", type: .int, category: "c", required: false, bounds: 18...100)
        #expect(StoreAggregateSource.damageCondition("x", age, given: [WhereCondition(attribute: "age", op: .ge, value: .int(30))]) == "(x > 100 OR typeof(x) = 'real')")
        #expect(StoreAggregateSource.damageCondition("x", age, given: [WhereCondition(attribute: "age", op: .ge, value: .int(10))]) == StoreAggregateSource.damageCondition("x", age))
    }
}
