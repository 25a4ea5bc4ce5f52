public import DifferentialPrivacy
import Foundation
import PostgresNIO
import VaultPolicy
import VaultStore
import VaultValues

extension PostgresProfiles {
    /// The DP layer's view of this store: the exact bounded sums `Coordinate` documents,
    /// computed by PostgreSQL (as the SQLite engine's `aggregateSource` computes them in SQL).
    public var aggregateSource: any AggregateSource { PostgresAggregateSource(profiles: self) }
}

/// Exact integer sums of the per-subject vectors of `AggregateRequest`, on PostgreSQL, equal to
/// `ReferenceAggregateSource`'s (docs/differential-privacy.md, "The reference sums").
///
/// **How.** One statement per request. Every per-subject contribution is evaluated by the
/// server in IEEE double with the reference's operations in the reference's order
/// (`(clamp(x, lo, hi) - c) / g`, `(clamp(x) - lo) * (1 / (hi - lo))`, ...), rounded half away
/// from zero exactly (`trunc(e + 0.49999999999999994)` by magnitude, as on SQLite), converted
/// to `bigint` (a value that does not fit: SQLSTATE 22003) and summed as `numeric`; the sum is
/// converted back to `bigint`, so a sum beyond 64 bits is refused (invalid input), never
/// wrapped. Derived attributes add their events in ingest order (`sum(value ORDER BY id)`).
/// Item groupings stream one row per subject (its pseudonym, its distinct items and their last
/// times) into the engines' shared `ItemSums`, which applies the per-subject cap with the
/// reference's tie order (`ReferenceAggregateSource.itemTieBreak` of the pseudonym's tie key).
///
/// **Values.** Every constant (where constants, bounds, centres, grids, centroids, vocabularies,
/// event kinds, purposes, time windows) is a bound parameter; column names come from the
/// schema through ``PostgresProfiles/attributeColumn(_:)`` (validated and quoted); only
/// integers Swift computed (caps, bins, weights, indexes) are written into the text.
/// Comparisons are exact as the reference's: an integer column against a fractional or huge
/// constant, a double column against an integer beyond 2^53, text by its UTF-8 bytes
/// (`COLLATE "C"`); a text constant holding U+0000, which PostgreSQL cannot store, compares as
/// the text it would be against every stored value (nothing stored holds U+0000).
///
/// **Floating point.** PostgreSQL refuses a product or quotient of finite non-zero doubles
/// that underflows to zero, where IEEE (and the reference) gives 0; every such operation on a
/// stored value is guarded so that the answer is the reference's (a quotient whose magnitude
/// is below 1/4 rounds to 0 anyway; a unit below 2^-1000 is 0 for the cell and centroid keys).
///
/// **Deviations from the reference** (requests no part of the system builds): a coordinate,
/// feature or threshold naming a category or string attribute is refused (usage) whatever the
/// data, where the reference refuses it only when a subject of the population has a value;
/// nearest-centroid groupings need finite centroids within 16 of the unit cube and at most 256
/// features (usage error otherwise), so the keys fit 64-bit integers; a derived `sum` whose
/// running total overflows the double range is refused (invalid input) instead of clamped; a
/// sum whose total fits 64 bits is answered even where partial sums in the reference's order
/// would not (the reference refuses those).
public struct PostgresAggregateSource: AggregateSource {
    let profiles: PostgresProfiles

    /// Runs between the exclusion probe and the aggregate's statement; tests set it to commit a
    /// restriction or objection in that gap.
    package var afterExclusionProbe: (@Sendable () throws -> Void)? = nil

    public func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        // The probe (are there any restricted or objecting subjects?) runs before the statement
        // is built, outside its snapshot. The statement's transaction probes again in its own
        // snapshot when the statement left an anti-join out; should a restriction or objection
        // have committed in between, the sums are dropped and computed once more with both
        // anti-joins, which need no probe.
        do {
            return try sums(r, exclusions: nil)
        } catch is ExclusionsAppeared {
            return try sums(r, exclusions: Exclusions(restricted: true, objections: true))
        }
    }

    func sums(_ r: AggregateRequest, exclusions: Exclusions?) throws -> [String: [Int64]] {
        switch r.grouping {
        case .items?, .itemPairs?, .itemSets?, .segmentItems?: return try itemSums(r, exclusions: exclusions)
        default: return try subjectSums(r, exclusions: exclusions)
        }
    }

    /// Whether a statement must exclude restricted subjects and objecting ones.
    struct Exclusions: Sendable {
        var restricted: Bool
        var objections: Bool
    }

    /// A restriction or objection the statement's snapshot holds but its probe did not see.
    struct ExclusionsAppeared: Error {}

    /// The exclusions a request needs: `given`, or the probe's.
    func exclusions(_ given: Exclusions?, _ r: AggregateRequest) throws -> Exclusions {
        if let given { return given }
        let probe = try profiles.exclusionProbe(objectionPurpose: r.objectionPurpose)
        try afterExclusionProbe?()
        return Exclusions(restricted: probe.restricted, objections: probe.objections)
    }

    /// The refusal of a sum beyond 64 bits (a `PostgresStoreError`: thrown inside a
    /// transaction, it comes out unchanged, as the same `VaultError`).
    static func overflow() -> PostgresStoreError { PostgresStoreError(.invalidInput, "the aggregate overflows 64-bit integers") }

    /// PostgreSQL's "value out of range" (a contribution or sum beyond 64 bits, a double beyond
    /// its range) and "division by zero" (a zero grid) are the reference's refused sums.
    static func mapped(_ error: any Error) -> any Error {
        let state = (error as? PSQLError)?.serverInfo?[.sqlState] ?? (error as? PostgresStoreError)?.sqlState
        if state == "22003" || state == "22012" { return overflow().vaultError }
        return error
    }

    /// Runs one read-only statement (a consistent snapshot) and hands its rows to `body` as they
    /// arrive. When the statement left out an anti-join (`exclusions`), the same snapshot is
    /// probed after it: a restriction or objection there throws `ExclusionsAppeared`.
    func read<T: Sendable>(_ sql: String, _ q: Bindings, exclusions: Exclusions, objectionPurpose: String?,
                           _ body: @escaping @Sendable (PostgresRowSequence) async throws -> T) throws -> T {
        let engine = profiles.engine
        let query = PostgresQuery(unsafeSQL: sql, binds: q.binds)
        let recheck: PostgresQuery? = if !exclusions.restricted || (!exclusions.objections && objectionPurpose != nil) {
            PostgresProfiles.exclusionProbeQuery(objectionPurpose: objectionPurpose)
        } else {
            nil
        }
        let (result, appeared) = try PostgresProfiles.wait("computing an aggregate") {
            do {
                return try await engine.transaction("computing an aggregate", begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { conn in
                    let result = try await body(try await conn.query(query, logger: engine.logger))
                    if let recheck, let row = try await engine.rows(conn, recheck).first {
                        let (restricted, objections) = try row.decode((Bool, Bool).self)
                        return (result, (restricted && !exclusions.restricted) || (objections && !exclusions.objections))
                    }
                    return (result, false)
                }
            } catch {
                throw Self.mapped(error)
            }
        }
        if appeared { throw ExclusionsAppeared() }
        return result
    }

    // MARK: - Parameters

    /// The bound parameters of one statement, each numbered in the order bound (the text may
    /// use them in any order). Equal doubles share one parameter.
    struct Bindings {
        var binds = PostgresBindings()
        var count = 0
        var doubles: [UInt64: String] = [:]

        mutating func next() -> Int { count += 1; return count }
        mutating func int(_ v: Int64) -> String { binds.append(v); return "$\(next())::int8" }
        mutating func double(_ v: Double) -> String {
            if let p = doubles[v.bitPattern] { return p }
            binds.append(v)
            let p = "$\(next())::float8"
            doubles[v.bitPattern] = p
            return p
        }
        /// nil for text PostgreSQL cannot hold (U+0000): no stored value equals it.
        mutating func text(_ v: String) -> String? {
            guard !v.utf8.contains(0) else { return nil }
            binds.append(v)
            return "$\(next())::text"
        }
        /// The elements PostgreSQL can hold (the others match no stored value).
        mutating func texts(_ v: [String]) -> String {
            binds.append(v.filter { !$0.utf8.contains(0) })
            return "$\(next())::text[]"
        }
    }

    // MARK: - Expressions (the reference's operations, in its order)

    /// min(hi, max(lo, x)) as the reference computes it; NULL stays NULL.
    static func clamp(_ x: String, _ lo: Double, _ hi: Double, _ q: inout Bindings) -> String {
        guard lo <= hi else { return "(CASE WHEN \(x) IS NULL THEN NULL ELSE \(q.double(hi)) END)" }   // max(lo, x) >= lo > hi
        let (l, h) = (q.double(lo), q.double(hi))
        return "(CASE WHEN \(x) < \(l) THEN \(l) WHEN \(x) > \(h) THEN \(h) ELSE \(x) END)"
    }

    /// e * k for a constant k, guarded where PostgreSQL would refuse an underflow: when
    /// |k| < 1, an |e| below 2^-1002 / |k| (a product below 2^-1000) gives 0.
    static func times(_ e: String, _ k: Double, _ q: inout Bindings) -> String {
        guard k.isFinite, abs(k) < 1, k != 0 else { return "(\(e) * \(q.double(k)))" }
        return "(CASE WHEN abs(\(e)) < \(q.double(0x1p-1002 / abs(k))) THEN \(q.double(0)) ELSE \(e) * \(q.double(k)) END)"
    }

    /// e / g for a constant g, for a value that is then rounded: when |g| > 1, an |e| below
    /// |g| / 4 has a quotient below 1/4, which rounds to 0 (and PostgreSQL would refuse the
    /// underflow of a tiny e).
    static func over(_ e: String, _ g: Double, _ q: inout Bindings) -> String {
        guard abs(g) > 1 else { return "(\(e) / \(q.double(g)))" }
        return "(CASE WHEN abs(\(e)) < \(q.double(abs(g) / 4)) THEN \(q.double(0)) ELSE \(e) / \(q.double(g)) END)"
    }

    /// round(e) half away from zero as a bigint, exactly (docs/differential-privacy.md): the
    /// magnitude plus 1/2 - 2^-54, truncated. A value beyond 64 bits (or NaN) fails with 22003.
    static func rounded(_ e: String, _ q: inout Bindings) -> String {
        let h = q.double(0.49999999999999994)
        return "(CASE WHEN \(e) < 0 THEN -trunc(\(h) - \(e)) ELSE trunc(\(e) + \(h)) END)::int8"
    }

    /// `Coordinate.attribute` of a double expression: round((clamp(x, lo, hi) - c) / g).
    static func contribution(_ x: String, lower lo: Double, upper hi: Double, center c: Double, grid g: Double, _ q: inout Bindings) -> String {
        rounded(over("(\(clamp(x, lo, hi, &q)) - \(q.double(c)))", g, &q), &q)
    }

    /// A feature in [0, 1]: (clamp(x, lo, hi) - lo) * (1 / (hi - lo)).
    static func unit(_ x: String, _ f: ScaledFeature, _ q: inout Bindings) -> String {
        times("(\(clamp(x, f.lower, f.upper, &q)) - \(q.double(f.lower)))", 1 / (f.upper - f.lower), &q)
    }

    /// z(x) = (clamp(x, lo, hi) - lo) * (2 / (hi - lo)) - 1.
    static func signedUnit(_ x: String, _ f: ScaledFeature, _ q: inout Bindings) -> String {
        "(\(times("(\(clamp(x, f.lower, f.upper, &q)) - \(q.double(f.lower)))", 2 / (f.upper - f.lower), &q)) - \(q.double(1)))"
    }

    /// t * t, with 0 for |t| < 2^-500 (where PostgreSQL could refuse the underflow; such a
    /// term does not change a sum of squares truncated to multiples of 2^-40).
    static func square(_ t: String, _ q: inout Bindings) -> String {
        "(CASE WHEN abs(\(t)) < \(q.double(0x1p-500)) THEN \(q.double(0)) ELSE \(t) * \(t) END)"
    }

    /// The kinds of value a column holds, for exact comparisons.
    enum ValueKind { case integer, real, text }

    /// `x op value` exactly as the reference compares (`ReferenceAggregateSource.compare`); a
    /// null x is never selected.
    static func comparison(_ x: String, _ kind: ValueKind, _ op: WhereCondition.Op, _ value: WhereCondition.Value, _ q: inout Bindings) -> String {
        let notNull = "(\(x) IS NOT NULL)"
        /// The outcome for a value that differs from every x: x < v for all x, or x > v for all x.
        func always(below: Bool) -> String {
            switch op {
            case .eq: return "FALSE"
            case .ne: return notNull
            case .lt, .le: return below ? notNull : "FALSE"
            case .gt, .ge: return below ? "FALSE" : notNull
            }
        }
        switch (kind, value) {
        case let (.text, .text(t)):
            if let p = q.text(t) { return "(\(x) COLLATE \"C\" \(op.rawValue) \(p))" }
            // t holds U+0000 (no stored text does): with t0 its bytes before the first one,
            // x < t exactly when x <= t0, x > t when x > t0, never equal.
            let t0 = String(decoding: t.utf8.prefix { $0 != 0 }, as: UTF8.self)
            let p = q.text(t0) ?? "''"
            switch op {
            case .eq: return "FALSE"
            case .ne: return notNull
            case .lt, .le: return "(\(x) COLLATE \"C\" <= \(p))"
            case .gt, .ge: return "(\(x) COLLATE \"C\" > \(p))"
            }
        case let (.integer, .int(i)):
            return "(\(x) \(op.rawValue) \(q.int(i)))"
        case let (.integer, .real(d)):
            if d >= 9_223_372_036_854_775_808.0 { return always(below: true) }
            if d < -9_223_372_036_854_775_808.0 { return always(below: false) }
            let f = d.rounded(.down)
            let fi = Int64(f)   // exact: integral and within range
            if f == d { return "(\(x) \(op.rawValue) \(q.int(fi)))" }
            // floor(d) < d < floor(d) + 1: no integer equals d.
            switch op {
            case .eq: return "FALSE"
            case .ne: return notNull
            case .lt, .le: return "(\(x) <= \(q.int(fi)))"
            case .gt, .ge: return "(\(x) > \(q.int(fi)))"
            }
        case let (.real, .real(d)):
            return "(\(x) \(op.rawValue) \(q.double(d)))"
        case let (.real, .int(i)):
            let r = Double(i)
            let exact = r < 9_223_372_036_854_775_808.0 && Int64(r) == i
            if exact { return "(\(x) \(op.rawValue) \(q.double(r)))" }
            // No double equals i: the doubles below it are <= lo, those above it >= hi.
            let above = r >= 9_223_372_036_854_775_808.0 || Int64(r) > i
            let (lo, hi) = above ? (r.nextDown, r) : (r, r.nextUp)
            switch op {
            case .eq: return "FALSE"
            case .ne: return notNull
            case .lt, .le: return "(\(x) <= \(q.double(lo)))"
            case .gt, .ge: return "(\(x) >= \(q.double(hi)))"
            }
        default:
            return "FALSE"   // not reached: callers check the constant's type first
        }
    }

    /// The condition true for a stored event value ingest never writes (NaN, an infinity, a
    /// value outside the kind's bounds).
    static func eventDamage(_ kind: EventKindSpec?, _ q: inout Bindings) -> String {
        var c = "NOT (value > \(q.double(-.infinity)) AND value < \(q.double(.infinity)))"
        if let b = kind?.value.bounds { c += " OR value < \(q.double(b.lowerBound)) OR value > \(q.double(b.upperBound))" }
        return "(\(c))"
    }

    // MARK: - Subject sums

    /// Every grouping but the item groupings: one statement over `attributes`, one row per group.
    func subjectSums(_ r: AggregateRequest, exclusions given: Exclusions?) throws -> [String: [Int64]] {
        let schema = profiles.schema
        var fields: [String: FieldSpec] = [:]
        for f in schema.attributeFields where fields[f.name] == nil { fields[f.name] = f }
        var derivedByName: [String: DerivedAttribute] = [:]
        for d in r.derived {
            guard schema.field(named: d.name) == nil, derivedByName.updateValue(d, forKey: d.name) == nil else {
                throw VaultError(.usage, "derived attribute \(d.name) is defined twice or is a field of the schema")
            }
            guard d.lower < d.upper, d.lower.isFinite, d.upper.isFinite else { throw VaultError(.usage, "derived attribute \(d.name) needs finite bounds lower < upper") }
        }
        var q = Bindings()
        var derivedKinds: [String] = []                        // join order
        var derivedColumns: [String: [DerivedAttribute]] = [:]  // kind -> its used attributes, column order
        var usedAttributes: [String] = []

        /// A name's column: a schema attribute (`a."name"`) or a derived attribute (never null).
        enum Column { case attribute(FieldSpec, String), derived(String) }
        func column(_ name: String) throws -> Column {
            if let f = fields[name] {
                if !usedAttributes.contains(name) { usedAttributes.append(name) }
                return .attribute(f, "a." + (try PostgresProfiles.attributeColumn(name)))
            }
            guard let d = derivedByName[name] else { throw VaultError(.usage, "\(name) is not an attribute of the schema") }
            if derivedColumns[d.eventKind] == nil { derivedKinds.append(d.eventKind) }
            var cols = derivedColumns[d.eventKind, default: []]
            if !cols.contains(d) { cols.append(d) }
            derivedColumns[d.eventKind] = cols
            let k = derivedKinds.firstIndex(of: d.eventKind) ?? 0, j = cols.firstIndex(of: d) ?? 0
            return .derived("COALESCE(d\(k).v\(j), \(q.double(min(d.upper, max(d.lower, 0)))))")
        }
        /// A column as the reference compares it (the kind of its stored value).
        func comparable(_ name: String) throws -> (String, ValueKind) {
            switch try column(name) {
            case let .attribute(f, c):
                switch f.type {
                case .int, .date: return (c, .integer)
                case .bool: return ("(\(c))::int", .integer)
                case .float: return (c, .real)
                case .category, .string: return (c, .text)
                }
            case let .derived(e): return (e, .real)
            }
        }
        /// A column as a double, for arithmetic (Double(x) for integers, as the reference).
        func number(_ name: String) throws -> String {
            let (c, kind) = try comparable(name)
            switch kind {
            case .integer: return "(\(c))::float8"
            case .real: return c
            case .text: throw VaultError(.usage, "\(name) is not numeric")
            }
        }
        func notNull(_ name: String) throws -> String {
            switch try column(name) {
            case let .attribute(_, c): return "\(c) IS NOT NULL"
            case .derived: return "TRUE"
            }
        }

        var joins: [String] = []
        if let p = r.consentPurpose {
            joins.append("JOIN profilevault.consent_state cs ON cs.subject_id = a.subject_id AND cs.purpose = \(q.text(p) ?? "NULL") AND cs.granted")
        }
        // One capped subquery per (event kind, cap, contribution): the subject's most recent
        // events first (by time, then the later ingested: events.id follows ingest order).
        var eventJoins: [String: String] = [:]
        var eventAliases: [String] = []
        func eventAlias(_ kind: String, _ k: Int, key parameters: String, value: (inout Bindings) -> String?) -> String {
            let key = "\(kind)|\(k)|\(parameters)"
            if let a = eventJoins[key] { return a }
            let alias = "e\(eventJoins.count)"
            eventJoins[key] = alias
            eventAliases.append(alias)
            let v = value(&q).map { "sum(\($0)) AS v" } ?? "0 AS v"
            let kindParam = q.text(kind)
            joins.append("""
                LEFT JOIN (SELECT subject_id, \(v), count(*) AS n, min(CASE WHEN \(Self.eventDamage(schema.eventKind(named: kind), &q)) THEN subject_id END) AS bad FROM (
                    SELECT subject_id, value, row_number() OVER (PARTITION BY subject_id ORDER BY time DESC, id DESC) AS rn
                    FROM profilevault.events WHERE \(kindParam.map { "kind = \($0)" } ?? "FALSE")) x
                  WHERE rn <= \(k) GROUP BY subject_id) \(alias) ON \(alias).subject_id = a.subject_id
                """)
            return alias
        }

        var selects: [String] = []
        for c in r.coordinates {
            switch c {
            case .subjects:
                selects.append("count(*)")
            case .nonNull(let name):
                switch try column(name) {
                case let .attribute(_, col): selects.append("count(\(col))")
                case .derived: selects.append("count(*)")
                }
            case let .attribute(name, lo, hi, center, grid):
                let x = try number(name)
                selects.append("COALESCE(sum(\(Self.contribution(x, lower: lo, upper: hi, center: center, grid: grid, &q))), 0)")
            case let .events(kind, lo, hi, center, grid, k):
                let alias = eventAlias(kind, k, key: "\(lo.bitPattern) \(hi.bitPattern) \(center.bitPattern) \(grid.bitPattern)") { b in Self.contribution("value", lower: lo, upper: hi, center: center, grid: grid, &b) }
                selects.append("COALESCE(sum(\(alias).v), 0)")
            case let .eventCount(kind, k):
                let alias = eventAlias(kind, k, key: "count") { _ in nil }
                selects.append("COALESCE(sum(\(alias).n), 0)")
            case let .product(l, rr, grid):
                // round(z(a) * z(b) / g); 0 when a value is null (NULL, skipped by sum) or z is
                // NaN (a feature with lower == upper: 0 * 2/0).
                var z = Self.signedUnit(try number(l.name), l, &q)
                var mayBeNaN = !(2 / (l.upper - l.lower)).isFinite
                if let rr {
                    z = "(\(z) * \(Self.signedUnit(try number(rr.name), rr, &q)))"
                    mayBeNaN = mayBeNaN || !(2 / (rr.upper - rr.lower)).isFinite
                }
                var e = Self.rounded(Self.over(z, grid, &q), &q)
                if mayBeNaN { e = "(CASE WHEN \(z) = \(q.double(.nan)) THEN 0 ELSE \(e) END)" }
                selects.append("COALESCE(sum(\(e)), 0)")
            case .itemPresence, .itemPairWeight, .itemSetPresence:
                throw VaultError(.usage, "item coordinates need an item grouping")
            }
        }
        var wheres: [String] = []
        // Restricted and objecting subjects (PostgresRights.swift): an anti-join only when there are any.
        let probe = try exclusions(given, r)
        if probe.restricted {
            wheres.append("NOT EXISTS (SELECT 1 FROM profilevault.restriction rx WHERE rx.subject_id = a.subject_id)")
        }
        if probe.objections, let p = r.objectionPurpose {
            wheres.append("NOT EXISTS (SELECT 1 FROM profilevault.consent_state ox WHERE ox.subject_id = a.subject_id AND ox.purpose = \(q.text(p) ?? "NULL") AND NOT ox.granted)")
        }
        for p in r.predicates {
            let (x, kind) = try comparable(p.attribute)
            // A number compares with a finite number, text with text (as the gate builds them).
            switch p.value {
            case .text: guard kind == .text else { throw VaultError(.usage, "condition on \(p.attribute): a number compares with a number") }
            case .int: guard kind != .text else { throw VaultError(.usage, "condition on \(p.attribute): text compares with text") }
            case .real(let d):
                guard kind != .text, d.isFinite else { throw VaultError(.usage, "condition on \(p.attribute): compares with a finite number") }
            }
            wheres.append(Self.comparison(x, kind, p.op, p.value, &q))
        }
        for n in r.nonNull { wheres.append(try notNull(n)) }
        var groupKey: String?
        var lateral: String?
        switch r.grouping {
        case let .attribute(name, _)?:
            guard derivedByName[name] == nil else { throw VaultError(.usage, "derived attribute \(name) is numeric; it cannot group") }
            guard case let .attribute(f, c) = try column(name), f.type == .category || f.type == .string else {
                throw VaultError(.usage, "\(name) is not a categorical attribute")
            }
            groupKey = c
        case let .nearest(features, centroids)?:
            guard !centroids.isEmpty, centroids.count <= 64, centroids.allSatisfy({ $0.count == features.count }) else {
                throw VaultError(.usage, "nearest-centroid grouping needs 1 to 64 centroids of the features' dimension")
            }
            // Keys as 64-bit integers (truncated distance * 64 + index): distances must stay
            // below 2^16, so centroids within 16 of the unit cube and at most 256 features.
            guard features.count <= 256, centroids.allSatisfy({ $0.allSatisfy { $0.isFinite && abs($0) <= 16 } }) else {
                throw VaultError(.usage, "nearest-centroid grouping needs at most 256 features and finite centroids within 16 of the unit cube")
            }
            var units: [String] = []
            for f in features {
                units.append(Self.unit(try number(f.name), f, &q))
                wheres.append(try notNull(f.name))
            }
            if features.isEmpty {
                groupKey = "'0'"   // every distance is 0: the first centroid
            } else if features.contains(where: { !(1 / ($0.upper - $0.lower)).isFinite }) {
                // A feature without a unit (lower == upper: 0 * 1/0 = NaN; a range below the
                // double's reciprocal: an infinity): a NaN unit puts the subject in no group,
                // otherwise every distance is infinite and the first centroid is the nearest.
                groupKey = "(CASE WHEN " + units.map { "\($0) = \(q.double(.nan))" }.joined(separator: " OR ") + " THEN NULL ELSE 0 END)::text"
            } else {
                lateral = "CROSS JOIN LATERAL (SELECT " + units.enumerated().map { "\($1) AS u\($0)" }.joined(separator: ", ") + ") un"
                let terms = centroids.enumerated().map { (i, c) -> String in
                    let d = c.enumerated().map { j, v in Self.square("(un.u\(j) - \(q.double(v)))", &q) }.joined(separator: " + ")
                    return "trunc((\(d)) * \(q.double(1_099_511_627_776.0)))::int8 * 64 + \(i)"
                }
                groupKey = terms.count == 1 ? "'0'" : "(least(\(terms.joined(separator: ", "))) % 64)::text"
            }
        case let .cell(features, bins)?:
            guard bins >= 1, Grouping.cellCount(dimensions: features.count, bins: bins) <= 1 << 20 else {
                throw VaultError(.usage, "grid grouping has too many cells")
            }
            var parts: [String] = []
            var weight = 1
            for f in features {
                let u = Self.unit(try number(f.name), f, &q)
                wheres.append(try notNull(f.name))
                parts.append("least(\(bins - 1), trunc(\(u) * \(q.double(Double(bins))))::int8) * \(weight)")
                weight *= bins
            }
            if features.contains(where: { !(1 / ($0.upper - $0.lower)).isFinite }) {
                groupKey = "NULL::text"   // a unit that is NaN or infinite: no cell (the reference's)
            } else {
                groupKey = "(" + (parts.isEmpty ? "0" : parts.joined(separator: " + ")) + ")::text"
            }
        case let .thresholds(features, cuts)?:
            guard !features.isEmpty, features.count == cuts.count, features.count <= 16, cuts.allSatisfy(\.isFinite) else {
                throw VaultError(.usage, "tree grouping needs 1 to 16 levels, one finite cut per feature")
            }
            var bits: [String] = []
            for (l, (name, cut)) in zip(features, cuts).enumerated() {
                let (x, kind) = try comparable(name)
                guard kind != .text else { throw VaultError(.usage, "\(name) is not numeric") }
                wheres.append(try notNull(name))
                bits.append("(CASE WHEN \(Self.comparison(x, kind, .ge, .real(cut), &q)) THEN \(1 << l) ELSE 0 END)")
            }
            groupKey = "(" + bits.joined(separator: " + ") + ")::text"
        case nil:
            break
        case .items?, .itemPairs?, .itemSets?, .segmentItems?:
            throw VaultError(.usage, "an item grouping takes an item coordinate")
        }
        // Derived attributes: one LEFT JOIN per event kind on a GROUP BY subject_id subquery, one
        // clamped aggregate per derived attribute (the sum adds the values in ingest order).
        for (i, kind) in derivedKinds.enumerated() {
            var aggregates: [String] = []
            for (j, d) in derivedColumns[kind, default: []].enumerated() {
                var window: [String] = []
                if let from = d.from { window.append("time >= \(q.int(from))") }
                if let before = d.before { window.append("time < \(q.int(before))") }
                let filter = window.isEmpty ? "" : " FILTER (WHERE \(window.joined(separator: " AND ")))"
                let agg: String
                switch d.aggregate {
                case .sum: agg = "COALESCE(sum(value ORDER BY id)\(filter), \(q.double(0)))"
                case .count: agg = "(count(*)\(filter))::float8"
                case .distinctItems: agg = "(count(DISTINCT item)\(filter))::float8"
                }
                aggregates.append("\(Self.clamp(agg, d.lower, d.upper, &q)) AS v\(j)")
            }
            aggregates.append("min(CASE WHEN \(Self.eventDamage(schema.eventKind(named: kind), &q)) THEN subject_id END) AS bad")
            let kindParam = q.text(kind)
            joins.append("LEFT JOIN (SELECT subject_id, \(aggregates.joined(separator: ", ")) FROM profilevault.events WHERE \(kindParam.map { "kind = \($0)" } ?? "FALSE") GROUP BY subject_id) d\(i) ON d\(i).subject_id = a.subject_id")
        }
        // The first subject whose used attribute holds what ingest never writes (a number
        // outside its declared bounds, a NaN or infinite double: an edited database), and the
        // event subqueries' own: an integrity error, as on SQLite.
        var checks: [String] = []
        var damage: [String] = []
        for name in usedAttributes {
            guard let f = fields[name] else { continue }
            let c = "a." + (try PostgresProfiles.attributeColumn(name))
            switch f.type {
            case .float:
                damage.append("NOT (\(c) > \(q.double(-.infinity)) AND \(c) < \(q.double(.infinity)))")
                if let b = f.bounds { damage.append("\(c) < \(q.double(b.lowerBound)) OR \(c) > \(q.double(b.upperBound))") }
            case .int, .date:
                if let b = f.bounds { damage.append("(\(c))::float8 < \(q.double(b.lowerBound)) OR (\(c))::float8 > \(q.double(b.upperBound))") }
            default:
                break
            }
        }
        if !damage.isEmpty { checks.append("min(CASE WHEN \(damage.map { "(\($0))" }.joined(separator: " OR ")) THEN a.subject_id END)") }
        for alias in eventAliases { checks.append("min(\(alias).bad)") }
        for i in derivedKinds.indices { checks.append("min(d\(i).bad)") }

        var sql = "SELECT \(groupKey.map { "\($0) AS g, " } ?? "")"
            + (selects.map { "(\($0))::int8" } + checks.map { "(\($0))::int8" }).joined(separator: ", ")
            + " FROM profilevault.attributes a " + joins.joined(separator: " ")
        if let lateral { sql += " " + lateral }
        if !wheres.isEmpty { sql += " WHERE " + wheres.joined(separator: " AND ") }
        if groupKey != nil { sql += " GROUP BY 1" }

        let width = r.coordinates.count, checkCount = checks.count, grouped = groupKey != nil
        let rows: [(String?, [Int64], [Int64?])] = try read(sql, q, exclusions: probe, objectionPurpose: r.objectionPurpose) { sequence in
            var out: [(String?, [Int64], [Int64?])] = []
            for try await row in sequence {
                let cells = PostgresRandomAccessRow(row)
                let offset = grouped ? 1 : 0
                let key = grouped ? try cells[0].decode(String?.self) : ""
                let sums = try (0..<width).map { try cells[offset + $0].decode(Int64.self) }
                let bad = try (0..<checkCount).map { try cells[offset + width + $0].decode(Int64?.self) }
                out.append((key, sums, bad))
            }
            return out
        }
        for (_, _, bad) in rows {
            if let id = bad.compactMap({ $0 }).first {
                throw VaultError(.integrity, "subject row \(id): an attribute or event holds a value of the wrong type or outside its bounds: the store was altered")
            }
        }
        var out: [String: [Int64]] = [:]
        if let domain = r.grouping?.domain {
            for key in domain { out[key] = [Int64](repeating: 0, count: width) }
        } else {
            out[""] = [Int64](repeating: 0, count: width)
        }
        for (key, sums, _) in rows {
            guard let key, out[key] != nil else { continue }   // no group, or outside the domain
            out[key] = sums
        }
        return out
    }

    // MARK: - Item sums

    /// Item groupings: the subjects' distinct items of the kind with their last use, streamed one
    /// subject per row into `ItemSums` (which checks the request, caps each subject's sample and
    /// counts it in the item, pair, set or (segment, item) groups).
    func itemSums(_ r: AggregateRequest, exclusions given: Exclusions?) throws -> [String: [Int64]] {
        let sums = try ItemSums(r, schema: profiles.schema)
        var q = Bindings()
        var filter = q.text(sums.kind).map { "kind = \($0)" } ?? "FALSE"
        if let since = sums.since { filter += " AND time >= \(q.int(since))" }
        if let vocabulary = sums.vocabulary { filter += " AND item = ANY(\(q.texts(vocabulary)))" }
        var joins = " JOIN profilevault.subjects s ON s.id = d.subject_id"
        if let p = r.consentPurpose {
            joins += " JOIN profilevault.consent_state cs ON cs.subject_id = d.subject_id AND cs.purpose = \(q.text(p) ?? "NULL") AND cs.granted"
        }
        var segmentColumn = "NULL::text"
        if let attribute = sums.segmentAttribute {
            joins += " JOIN profilevault.attributes a ON a.subject_id = d.subject_id"
            segmentColumn = "a." + (try PostgresProfiles.attributeColumn(attribute))
        }
        // Restricted and objecting subjects (PostgresRights.swift): an anti-join only when there are any.
        var exclusions: [String] = []
        let probe = try self.exclusions(given, r)
        if probe.restricted {
            exclusions.append("NOT EXISTS (SELECT 1 FROM profilevault.restriction rx WHERE rx.subject_id = d.subject_id)")
        }
        if probe.objections, let p = r.objectionPurpose {
            exclusions.append("NOT EXISTS (SELECT 1 FROM profilevault.consent_state ox WHERE ox.subject_id = d.subject_id AND ox.purpose = \(q.text(p) ?? "NULL") AND NOT ox.granted)")
        }
        if !exclusions.isEmpty { joins += " WHERE " + exclusions.joined(separator: " AND ") }
        // One row per subject: its distinct items and their last times as two arrays (rows
        // decoded one by one cost about 60 µs each in a debug build; a subject's row holds its
        // few items).
        let sql = """
            SELECT s.pseudonym, min(\(segmentColumn)), array_agg(d.item), array_agg(d.t)
            FROM (SELECT subject_id, item, max(time) AS t FROM profilevault.events WHERE \(filter) GROUP BY subject_id, item) d\(joins)
            GROUP BY d.subject_id, s.pseudonym
            """
        var counted = try read(sql, q, exclusions: probe, objectionPurpose: r.objectionPurpose) { [sums] sequence in
            var acc = sums
            for try await row in sequence {
                let (pseudonym, value, items, times) = try row.decode((ByteBuffer, String?, [String], [Int64]).self)
                guard items.count == times.count else {
                    throw PostgresStoreError(.internalFailure, "an item grouping's arrays differ in length")
                }
                acc.beginSubject(pseudonym: pseudonym.readableBytesView, segment: value)
                for (item, t) in zip(items, times) { acc.add(item: item, lastUsed: t) }
            }
            return acc
        }
        // Outside the transaction: a refused sum comes out as the same `VaultError` as the reference's.
        return try counted.finish()
    }
}
