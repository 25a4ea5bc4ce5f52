import GRDB
import Testing
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
}
