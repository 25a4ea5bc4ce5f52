import DifferentialPrivacy
import Foundation
import GRDB
import GRDBSQLite

/// The nearest-centroid grouping (DP Lloyd steps of k-means) computed in Swift over one plain
/// scan, instead of in SQL.
///
/// In SQL the key is k squared distances of d scaled features per row, evaluated by SQLite's
/// bytecode interpreter, then a GROUP BY on that expression: about 9 s per step for 1,000,000
/// subjects x 8 features, k = 8. Here SQLite only reads the columns (`sqlite3_column_double`)
/// and Swift computes the same documented map (`Grouping.nearest`, `Coordinate.attribute`) with
/// the same floating-point operations in the same order as the SQL form: units
/// `(clamp(x) - lower) * (1 / (upper - lower))`, squared distances summed left to right,
/// truncated to multiples of 2^-40, ties to the lowest index; contributions
/// round((clamp(x, lo, hi) - c) * (1 / g)) rounded half away from zero. A test checks both paths
/// give the same sums.
extension StoreAggregateSource {
    /// Whether `nearestSums` can answer the request: nearest grouping; count, non-null and
    /// attribute coordinates on schema attributes; no predicates, non-null filters or derived
    /// attributes.
    func nearestScanApplies(_ r: AggregateRequest) -> Bool {
        guard case let .nearest(features, centroids)? = r.grouping, !centroids.isEmpty, centroids.count <= 64,
              centroids.allSatisfy({ $0.count == features.count }),
              r.predicates.isEmpty, r.nonNull.isEmpty, r.derived.isEmpty else { return false }
        let attrs = Set(store.schema.attributeFields.filter { [.int, .float, .bool, .date].contains($0.type) }.map(\.name))
        guard features.allSatisfy({ attrs.contains($0.name) }) else { return false }
        for c in r.coordinates {
            switch c {
            case .subjects: continue
            case let .nonNull(n), let .attribute(n, _, _, _, _): if !attrs.contains(n) { return false }
            default: return false
            }
        }
        return true
    }

    func nearestSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        guard case let .nearest(features, centroids)? = r.grouping else { throw VaultError(.usage, "a nearest-centroid scan needs a nearest grouping") }
        // Columns to read: the features (each once), then every other attribute a coordinate names.
        var columns: [String] = []
        for f in features where !columns.contains(f.name) { columns.append(f.name) }
        for c in r.coordinates {
            if case let .nonNull(n) = c, !columns.contains(n) { columns.append(n) }
            if case let .attribute(n, _, _, _, _) = c, !columns.contains(n) { columns.append(n) }
        }
        let index = Dictionary(uniqueKeysWithValues: columns.enumerated().map { ($1, $0) })
        // Columns read as numbers (features, attribute coordinates): a stored value of another
        // storage class (text or a blob, from an edited store) is an integrity error, never read
        // by SQLite's text-to-number conversion as 0.
        var numeric = [Bool](repeating: false, count: columns.count)
        for f in features { if let i = index[f.name] { numeric[i] = true } }
        for c in r.coordinates { if case let .attribute(n, _, _, _, _) = c, let i = index[n] { numeric[i] = true } }
        let featureColumn = features.map { index[$0.name] ?? 0 }
        var sql = "SELECT " + columns.map { "a." + ProfileStore.quoted($0) }.joined(separator: ", ") + " FROM attributes a"
        var args: [any DatabaseValueConvertible] = []
        if let p = r.consentPurpose {
            sql += " JOIN consent_state cs ON cs.subject_id = a.subject_id AND cs.purpose = ? AND cs.granted = 1"
            args.append(p)
        }
        sql += " WHERE " + features.map { "a." + ProfileStore.quoted($0.name) + " IS NOT NULL" }.joined(separator: " AND ")
        let plainSQL = sql, plainArgs = args

        // Per feature: the SQL form's clamp (left out when the stored bounds lie inside) and scale.
        let schema = store.schema
        struct Unit { let lower, upper, inverse: Double; let clamp: Bool }
        let units = features.map { f -> Unit in
            let stored = schema.field(named: f.name)?.numericBounds
            let inside = stored.map { $0.lowerBound >= f.lower && $0.upperBound <= f.upper } ?? false
            return Unit(lower: f.lower, upper: f.upper, inverse: 1 / (f.upper - f.lower), clamp: !inside)
        }
        enum Contribution { case one, nonNull(Int), attribute(column: Int, lo: Double, hi: Double, c: Double, inverseGrid: Double) }
        let contributions = r.coordinates.map { c -> Contribution in
            switch c {
            case .subjects: return .one
            case let .nonNull(n): return .nonNull(index[n] ?? 0)
            case let .attribute(n, lo, hi, c, g): return .attribute(column: index[n] ?? 0, lo: lo, hi: hi, c: c, inverseGrid: 1 / g)
            default: return .one   // not reached: nearestScanApplies admits only the three cases above
            }
        }
        let k = centroids.count, d = features.count, m = r.coordinates.count
        var sums = [Int64](repeating: 0, count: k * m)
        var x = [Double](repeating: 0, count: columns.count)
        var present = [Bool](repeating: false, count: columns.count)
        var u = [Double](repeating: 0, count: d)
        let flat = centroids.flatMap { $0 }
        try store.pool.read { db in
            var sql = plainSQL, args = plainArgs
            // Restricted and objecting subjects (Rights.swift): an anti-join only when there are any.
            if let x = try store.exclusion(db, alias: "a", objectionPurpose: r.objectionPurpose) {
                sql += " AND " + x.sql
                args += x.args
            }
            let statement = try db.makeStatement(sql: sql)
            try statement.setArguments(StatementArguments(args.map { $0.databaseValue }))
            let s = statement.sqliteStatement
            defer { sqlite3_reset(s) }
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else {
                    throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                }
                for i in 0..<columns.count {
                    let type = sqlite3_column_type(s, Int32(i))
                    if numeric[i], type != SQLITE_NULL, type != SQLITE_INTEGER, type != SQLITE_FLOAT {
                        throw VaultError(.integrity, "attribute \(columns[i]) of a subject holds text or a blob, not a number: the store was altered")
                    }
                    present[i] = type != SQLITE_NULL
                    x[i] = present[i] ? sqlite3_column_double(s, Int32(i)) : 0
                }
                for j in 0..<d {
                    let f = units[j]
                    var v = x[featureColumn[j]]
                    if f.clamp { v = v < f.lower ? f.lower : (v > f.upper ? f.upper : v) }
                    u[j] = (v - f.lower) * f.inverse
                }
                var best = Int64.max
                var noGroup = false
                for c in 0..<k {
                    var dist = 0.0
                    for j in 0..<d { let t = u[j] - flat[c * d + j]; dist += t * t }
                    // NaN only for a feature with lower == upper (0 * 1/0): no group, as the SQL
                    // form's NULL key and the reference.
                    if dist.isNaN { noGroup = true; break }
                    // dist <= d for values in their bounds; a value outside them (a store written
                    // around the ingest checks) must not trap the conversion.
                    let q = dist * 1_099_511_627_776.0
                    let key = (q < 0x1p56 ? Int64(q) : Int64(1) << 56) * 64 + Int64(c)
                    if key < best { best = key }
                }
                if noGroup { continue }
                let g = Int(best % 64) * m
                for (i, c) in contributions.enumerated() {
                    var add: Int64 = 0
                    switch c {
                    case .one: add = 1
                    case let .nonNull(col): add = present[col] ? 1 : 0
                    case let .attribute(col, lo, hi, ctr, ig):
                        guard present[col] else { continue }
                        let v = min(hi, max(lo, x[col]))
                        let units = ((v - ctr) * ig).rounded(.toNearestOrAwayFromZero)
                        guard let n = Int64(exactly: units) else { throw VaultError(.integrity, "a stored value does not fit the aggregate's grid") }
                        add = n
                    }
                    let (sum, overflow) = sums[g + i].addingReportingOverflow(add)
                    guard !overflow else { throw VaultError(.invalidInput, "the aggregate overflows 64-bit integers") }
                    sums[g + i] = sum
                }
            }
        }
        var out: [String: [Int64]] = [:]
        for c in 0..<k { out[String(c)] = Array(sums[(c * m)..<((c + 1) * m)]) }
        return out
    }
}
