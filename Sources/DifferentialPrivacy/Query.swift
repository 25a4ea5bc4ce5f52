import Foundation

/// A condition of `--where`: an attribute compared with a constant.
public struct WhereCondition: Sendable, Equatable {
    public enum Op: String, Sendable, CaseIterable { case eq = "=", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">=" }
    public enum Value: Sendable, Equatable { case int(Int64), real(Double), text(String) }
    public var attribute: String
    public var op: Op
    public var value: Value
    public init(attribute: String, op: Op, value: Value) {
        self.attribute = attribute
        self.op = op
        self.value = value
    }
}

/// One coordinate of a subject's vector, as the aggregate source must compute it.
///
/// Every coordinate is an integer per subject, bounded in absolute value by `bound`; the
/// source sums it over the population exactly.
public enum Coordinate: Sendable, Equatable {
    /// 1 for every subject in the population (count of subjects).
    case subjects
    /// 1 for every subject whose attribute is not null.
    case nonNull(attribute: String)
    /// round((clamp(x, lower, upper) - center) / grid) for the subject's attribute x; 0 when null.
    case attribute(name: String, lower: Double, upper: Double, center: Double, grid: Double)
    /// The sum over the subject's at most `maxContributions` most recent events of this kind of
    /// round((clamp(v, lower, upper) - center) / grid).
    case events(kind: String, lower: Double, upper: Double, center: Double, grid: Double, maxContributions: Int)
    /// min(number of the subject's events of this kind, maxContributions).
    case eventCount(kind: String, maxContributions: Int)
    /// round(z(a) * z(b) / grid) with z(x) = 2 (clamp(x, lower, upper) - lower) / (upper - lower) - 1
    /// in [-1, 1] (`right` nil: z(a) alone). An entry of the sufficient statistics XᵀX, Xᵀy of
    /// a regression on features scaled to [-1, 1]. The population must exclude subjects with a
    /// null in either attribute (`AggregateRequest.nonNull`). Bound 1 / grid.
    case product(left: ScaledFeature, right: ScaledFeature?, grid: Double)
    /// Item grouping only (`Grouping.items`, `Grouping.segmentItems`): 1 for each of the subject's at most `maxItems`
    /// distinct items of this event kind (the most recently used first, ties broken by a fixed
    /// hash of subject and item, not by the item code), in that item's group; `since` (seconds
    /// since the epoch, inclusive) counts only events from then on.
    /// One subject touches at most `maxItems` groups, each by 1: L1 bound `maxItems` over all groups.
    case itemPresence(kind: String, maxItems: Int, since: Int64? = nil)
    /// Item-pair grouping only (`Grouping.itemPairs`): with n the number of the subject's distinct
    /// items of this kind in the vocabulary (at most `maxItems`, the most recent, ties as for
    /// `itemPresence`), every unordered
    /// pair of them gets floor(unit / (n - 1)). The n(n-1)/2 pairs sum to at most n * unit / 2:
    /// L1 bound floor(maxItems * unit / 2) over all groups.
    case itemPairWeight(kind: String, maxItems: Int, unit: Int)
    /// Item-set grouping only (`Grouping.itemSets`): with the subject's distinct items of this
    /// kind in the vocabulary capped at `maxItems` (the most recent, ties as for
    /// `itemPresence`), 1 for every set of `size` of them (its support). A subject holds at
    /// most C(maxItems, size) sets: L1 bound C(maxItems, size) over all groups.
    case itemSetPresence(kind: String, maxItems: Int, size: Int)

    /// The largest absolute value one subject can contribute, in grid units. Saturates at
    /// `UInt64.max` (never traps) for bounds that do not fit, non-finite or non-positive grids
    /// and negative caps; `BoundedSum.release` refuses any bound above `BoundedSum.maxBound`.
    public var bound: UInt64 {
        func units(_ x: Double, _ g: Double) -> UInt64 {
            let u = (abs(x) / g).rounded(.toNearestOrAwayFromZero)
            guard g > 0, u >= 0, u < 18_446_744_073_709_551_616.0 else { return .max }   // NaN fails too
            return UInt64(u)
        }
        func count(_ k: Int) -> UInt64 { UInt64(exactly: k) ?? .max }
        func times(_ a: UInt64, _ b: UInt64) -> UInt64 {
            let (r, overflow) = a.multipliedReportingOverflow(by: b)
            return overflow ? .max : r
        }
        switch self {
        case .subjects, .nonNull: return 1
        case let .attribute(_, lo, hi, c, g): return max(units(lo - c, g), units(hi - c, g))
        case let .events(_, lo, hi, c, g, k): return times(count(k), max(units(lo - c, g), units(hi - c, g)))
        case let .eventCount(_, k): return count(k)
        case let .product(_, _, g): return units(1, g)
        case let .itemPresence(_, m, _): return count(m)
        case let .itemPairWeight(_, m, u): return times(count(m), count(u)) / 2
        case let .itemSetPresence(_, m, k): return Self.binomial(m, k)
        }
    }

    /// C(n, k), 0 when k < 0 or k > n, `UInt64.max` when it does not fit.
    public static func binomial(_ n: Int, _ k: Int) -> UInt64 {
        guard k >= 0, k <= n else { return 0 }
        var r: UInt64 = 1
        for i in 0..<min(k, n - k) {
            // r = C(n, i) -> C(n, i + 1) = r * (n - i) / (i + 1), exact, with a 128-bit product.
            let p = r.multipliedFullWidth(by: UInt64(n - i))
            let d = UInt64(i + 1)
            guard p.high < d else { return .max }
            r = d.dividingFullWidth(p).quotient
        }
        return r
    }

    /// The grid step of the released value (1 for counts).
    public var grid: Double {
        switch self {
        case let .attribute(_, _, _, _, g), let .events(_, _, _, _, g, _), let .product(_, _, g): return g
        case let .itemPairWeight(_, _, u): return 1 / Double(u)
        default: return 1
        }
    }
}

/// A numeric attribute with its public bounds, as models see it.
public struct ScaledFeature: Sendable, Equatable, Hashable, Codable {
    public var name: String
    public var lower: Double
    public var upper: Double
    public init(name: String, lower: Double, upper: Double) {
        self.name = name
        self.lower = lower
        self.upper = upper
    }
    /// clamp(x) mapped to [0, 1].
    public func unit(_ x: Double) -> Double { (min(upper, max(lower, x)) - lower) / (upper - lower) }
    /// A point of [0, 1] back in the attribute's units.
    public func value(unit u: Double) -> Double { lower + u * (upper - lower) }
}

/// A per-subject aggregate of the subject's own events, declared by a training job and used
/// where a numeric attribute is (SPEC §6: "a target may also be an event aggregate per
/// subject"). The subject's value is
///
///     clamp(aggregate over its events of `eventKind` with from <= time < before, lower, upper)
///
/// where the aggregate of no events is 0: never null, so every subject of the population has
/// one. Clamped to public bounds, it is bounded exactly like an attribute with schema bounds
/// [lower, upper], and the `Coordinate` bounds of a coordinate naming it hold unchanged.
public struct DerivedAttribute: Sendable, Equatable, Hashable {
    public enum Aggregate: String, Sendable, CaseIterable {
        /// The sum of the events' values.
        case sum
        /// The number of events.
        case count
        /// The number of distinct items among the events.
        case distinctItems = "distinct_items"
    }
    public var name: String
    public var eventKind: String
    public var aggregate: Aggregate
    /// Inclusive lower end of the time window (seconds since the epoch); nil: unbounded.
    public var from: Int64?
    /// Exclusive upper end of the time window (seconds since the epoch); nil: unbounded.
    public var before: Int64?
    public var lower: Double
    public var upper: Double

    public init(name: String, eventKind: String, aggregate: Aggregate, from: Int64? = nil, before: Int64? = nil, lower: Double, upper: Double) {
        self.name = name
        self.eventKind = eventKind
        self.aggregate = aggregate
        self.from = from
        self.before = before
        self.lower = lower
        self.upper = upper
    }

    /// Whether every value is an integer (counts with integer bounds), for the exact grid.
    public var integral: Bool { aggregate != .sum && lower == lower.rounded() && upper == upper.rounded() }

    /// The feature as models see it: its name and declared bounds.
    public var feature: ScaledFeature { ScaledFeature(name: name, lower: lower, upper: upper) }

    /// Whether an event at `time` lies in the window.
    public func inWindow(_ time: Int64) -> Bool { (from.map { time >= $0 } ?? true) && (before.map { time < $0 } ?? true) }

    /// The documented map on one subject's events of any kind (the reference the store's SQL is
    /// tested against).
    public func value(of events: [(kind: String, item: String, value: Double, time: Int64)]) -> Double {
        let mine = events.filter { $0.kind == eventKind && inWindow($0.time) }
        let raw: Double
        switch aggregate {
        case .sum: raw = mine.reduce(0) { $0 + $1.value }
        case .count: raw = Double(mine.count)
        case .distinctItems: raw = Double(Set(mine.map(\.item)).count)
        }
        return min(upper, max(lower, raw))
    }
}

/// How subjects are grouped. Except for the item groupings, a subject belongs to at most one
/// group, so the concatenation of its vectors over all groups has the same L1 norm as its
/// vector: the coordinate bounds hold for the whole release.
public enum Grouping: Sendable, Equatable {
    /// By a categorical attribute, over exactly `domain` (null or outside: no group).
    case attribute(name: String, domain: [String])
    /// By the nearest of `centroids` (points of [0,1]^d, d = features.count) in squared Euclidean
    /// distance over the features scaled to [0, 1] (clamped to their bounds). Distances are
    /// compared after rounding down to multiples of 2^-40; ties go to the lowest index. Keys
    /// "0"..."k-1". Subjects with a null feature belong to no group.
    case nearest(features: [ScaledFeature], centroids: [[Double]])
    /// By the cell of a regular grid with `bins` cells per axis over the features scaled to
    /// [0, 1]: bin_j = min(bins - 1, floor(unit_j * bins)), key = sum_j bin_j * bins^j as text
    /// ("0"..."bins^d - 1"). Subjects with a null feature belong to no group.
    case cell(features: [ScaledFeature], bins: Int)
    /// By event item: one group per item of `vocabulary` (all present, zeros included); with a
    /// nil vocabulary, the groups are the items found in the data (only for private partition
    /// selection, `PrivateSession.releaseSelected`). Coordinate: `itemPresence` only.
    case items(vocabulary: [String]?)
    /// By unordered pair of vocabulary items, key "i|j" with i < j the items' indexes in
    /// `vocabulary`; only pairs found in the data are returned (absent pairs are exact zeros).
    /// Coordinate: `itemPairWeight` only.
    case itemPairs(vocabulary: [String])
    /// By set of `size` (2 or 3) vocabulary items, key "i|j" or "i|j|k" with i < j < k the
    /// items' indexes in `vocabulary`; every set is a key (zeros included). Coordinate:
    /// `itemSetPresence` only.
    case itemSets(vocabulary: [String], size: Int)
    /// By (segment, item): the segment is the subject's value of the categorical attribute
    /// `attribute` over exactly `domain` (null or outside: no group), the item one of
    /// `vocabulary`; key "s|i", the indexes in `domain` and `vocabulary`, every pair a key
    /// (zeros included). Coordinate: `itemPresence` only (with the cap applied to the subject's
    /// vocabulary items). A subject is in one segment, so its L1 bound is the coordinate's.
    case segmentItems(attribute: String, domain: [String], vocabulary: [String])
    /// By the leaf of an oblivious decision tree: level l tests `features[l] >= cuts[l]` (the
    /// attribute's stored value, in its own units), key = sum over levels of bit_l * 2^l as text
    /// ("0"..."2^d - 1"). The cuts are chosen without looking at the data (random forest), so
    /// the partition is public. Subjects with a null feature belong to no leaf.
    case thresholds(features: [String], cuts: [Double])

    /// The public key space (nil when keys come from the data).
    public var domain: [String]? {
        switch self {
        case let .attribute(_, d): return d
        case let .nearest(_, c): return c.indices.map(String.init)
        case let .cell(f, b): return (0..<min(Self.cellCount(dimensions: f.count, bins: b), 1 << 20)).map(String.init)   // the source refuses more cells
        case let .items(v): return v
        case let .itemPairs(v):
            var keys: [String] = []
            keys.reserveCapacity(v.count * (v.count - 1) / 2)
            for i in v.indices { for j in (i + 1)..<max(i + 1, v.count) { keys.append("\(i)|\(j)") } }
            return keys
        case let .itemSets(v, size):
            return Self.sets(count: v.count, size: size).map { $0.map(String.init).joined(separator: "|") }
        case let .segmentItems(_, d, v):
            return d.indices.flatMap { s in v.indices.map { "\(s)|\($0)" } }
        case let .thresholds(_, cuts):
            return (0..<(1 << min(cuts.count, 20))).map(String.init)
        }
    }

    /// Every set of `size` indexes below `count`, each ascending, in lexicographic order.
    public static func sets(count: Int, size: Int) -> [[Int]] {
        guard size >= 1, size <= count else { return [] }
        var out: [[Int]] = []
        var c = Array(0..<size)
        while true {
            out.append(c)
            var i = size - 1
            while i >= 0 && c[i] == count - size + i { i -= 1 }
            if i < 0 { return out }
            c[i] += 1
            for j in (i + 1)..<size { c[j] = c[j - 1] + 1 }
        }
    }

    /// bins^d, `Int.max` when it overflows (or for a negative count).
    public static func cellCount(dimensions d: Int, bins b: Int) -> Int {
        var n = 1
        for _ in 0..<max(0, d) {
            let (p, overflow) = n.multipliedReportingOverflow(by: b)
            if overflow || p < 0 { return .max }
            n = p
        }
        return n
    }
}

/// What the aggregate source must sum: the population (consent, predicates, non-null
/// attributes), an optional grouping, and the coordinates.
public struct AggregateRequest: Sendable, Equatable {
    /// Only subjects with active consent for this purpose (nil: no consent needed).
    public var consentPurpose: String?
    /// Leave out the subjects who objected (GDPR Art. 21) to this purpose (a
    /// `legitimate_interest` purpose; nil: none). Restricted subjects (Art. 18) are left out of
    /// every request, whatever this says.
    public var objectionPurpose: String? = nil
    public var predicates: [WhereCondition]
    /// Only subjects whose value of each of these attributes is not null.
    public var nonNull: [String]
    public var grouping: Grouping?
    public var coordinates: [Coordinate]
    /// Definitions of the derived attributes (per-subject event aggregates) the request may
    /// name wherever it names an attribute. A `PrivateSession` replaces them with the ones the
    /// gate granted.
    public var derived: [DerivedAttribute]

    /// Group by this categorical attribute, over exactly `domain` (subjects whose value is
    /// null or outside the domain belong to no group).
    public var groupBy: (attribute: String, domain: [String])? {
        get { if case let .attribute(n, d)? = grouping { return (n, d) } else { return nil } }
        set { grouping = newValue.map { .attribute(name: $0.attribute, domain: $0.domain) } }
    }

    public init(consentPurpose: String?, predicates: [WhereCondition], groupBy: (attribute: String, domain: [String])?, coordinates: [Coordinate]) {
        self.consentPurpose = consentPurpose
        self.predicates = predicates
        self.nonNull = []
        self.grouping = groupBy.map { .attribute(name: $0.attribute, domain: $0.domain) }
        self.coordinates = coordinates
        self.derived = []
    }

    public init(consentPurpose: String?, predicates: [WhereCondition] = [], nonNull: [String] = [], grouping: Grouping?, coordinates: [Coordinate],
                derived: [DerivedAttribute] = []) {
        self.consentPurpose = consentPurpose
        self.predicates = predicates
        self.nonNull = nonNull
        self.grouping = grouping
        self.coordinates = coordinates
        self.derived = derived
    }

    /// Every attribute (or derived attribute) name the request uses, and every event kind its
    /// coordinates read directly.
    public var names: (attributes: [String], eventKinds: [String]) {
        var names = nonNull + predicates.map(\.attribute)
        var kinds: [String] = []
        switch grouping {
        case let .attribute(n, _)?: names.append(n)
        case let .nearest(f, _)?, let .cell(f, _)?: names += f.map(\.name)
        default: break
        }
        for c in coordinates {
            switch c {
            case .subjects: break
            case let .nonNull(n), let .attribute(n, _, _, _, _): names.append(n)
            case let .events(k, _, _, _, _, _), let .eventCount(k, _), let .itemPresence(k, _, _), let .itemPairWeight(k, _, _), let .itemSetPresence(k, _, _): kinds.append(k)
            case let .product(l, r, _): names.append(l.name); if let r { names.append(r.name) }
            }
        }
        return (names, kinds)
    }
}

/// Computes exact integer sums of per-subject vectors. The store implements it in SQL; the
/// privacy proof relies on it computing exactly the map `Coordinate` documents.
public protocol AggregateSource: Sendable {
    /// Sums per group key ("" when not grouped), one integer per coordinate. Groups of the
    /// domain with no subject must be present with zeros.
    func boundedSums(_ request: AggregateRequest) throws -> [String: [Int64]]
}

/// The budget of one purpose in its current period.
public struct BudgetState: Sendable, Equatable {
    public var purpose: String
    public var limit: Double
    public var spent: Double
    public var periodStart: Int64
    public var left: Double { max(0, limit - spent) }
    /// The purpose's delta per period (0: pure DP only) and what this period has spent of it.
    public var deltaLimit: Double
    public var deltaSpent: Double
    public var deltaLeft: Double { max(0, deltaLimit - deltaSpent) }
    /// A zCDP purpose: `limit`, `spent` and `left` are rho (see `asRho`), shown as (epsilon,
    /// delta) at `conversionDelta`.
    public var zcdp = false
    public var conversionDelta: Double = 0
    public init(purpose: String, limit: Double, spent: Double, periodStart: Int64, deltaLimit: Double = 0, deltaSpent: Double = 0) {
        self.purpose = purpose
        self.limit = limit
        self.spent = spent
        self.periodStart = periodStart
        self.deltaLimit = deltaLimit
        self.deltaSpent = deltaSpent
    }
}

/// Sequential composition per purpose and period, persisted. `spend` must check and spend in
/// one atomic step (so concurrent queries cannot overspend) and throw `BudgetExceeded` without
/// spending anything when the charge does not fit.
public protocol BudgetAccountant: Sendable {
    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState
    /// Charges epsilon and delta together (basic composition: both add up within a period),
    /// checked against both limits in the same atomic step. The default implementation is for
    /// accountants that do not keep delta: it grants only `delta == 0`.
    func spend(purpose: String, epsilon: Epsilon, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState
}

extension BudgetAccountant {
    public func spend(purpose: String, epsilon: Epsilon, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        guard delta == 0 else {
            throw BudgetExceeded(state: BudgetState(purpose: purpose, limit: limit, spent: 0, periodStart: 0), requested: epsilon.chargedValue,
                                 requestedDelta: delta)
        }
        return try spend(purpose: purpose, epsilon: epsilon, limit: limit, periodSeconds: periodSeconds)
    }
}

public struct BudgetExceeded: Error, Sendable, CustomStringConvertible {
    public var state: BudgetState
    public var requested: Double
    /// The delta the refused charge asked for (0: none).
    public var requestedDelta: Double
    /// True when delta, not epsilon, did not fit.
    public var deltaExceeded: Bool
    public var description: String {
        if deltaExceeded {
            if state.deltaLimit == 0 {
                return "purpose \(state.purpose) allows pure DP only (dp_budget.delta 0); this asks for delta \(Self.fmt(requestedDelta))"
            }
            return "purpose \(state.purpose) has \(Self.fmt(state.deltaLeft)) of its delta \(Self.fmt(state.deltaLimit)) left in this period; this asks for delta \(Self.fmt(requestedDelta))"
        }
        return "purpose \(state.purpose) has \(Self.fmt(state.left)) of its epsilon \(Self.fmt(state.limit)) left in this period; the query asks for \(Self.fmt(requested))"
    }
    static func fmt(_ d: Double) -> String { String(format: "%.4g", d) }
    public init(state: BudgetState, requested: Double, requestedDelta: Double = 0) {
        self.state = state
        self.requested = requested
        self.requestedDelta = requestedDelta
        self.deltaExceeded = requestedDelta > state.deltaLeft
    }
    public init(state: BudgetState, requested: Double, requestedDelta: Double, deltaExceeded: Bool) {
        self.state = state
        self.requested = requested
        self.requestedDelta = requestedDelta
        self.deltaExceeded = deltaExceeded
    }
}

/// The DP query kinds of SPEC §5.
public enum QueryKind: String, Sendable, CaseIterable { case count, sum, mean, histogram }

/// What a query measures, with its public bounds.
public enum Measure: Sendable, Equatable {
    case subjects
    case attribute(name: String, lower: Double, upper: Double, integral: Bool)
    case events(kind: String, lower: Double, upper: Double, integral: Bool, maxContributions: Int)
}

/// A DP query, already checked against the schema and policy by the caller.
public struct DPQuery: Sendable {
    public var kind: QueryKind
    public var measure: Measure
    public var consentPurpose: String?
    /// Subjects who objected to this purpose are left out (see `AggregateRequest`).
    public var objectionPurpose: String? = nil
    public var predicates: [WhereCondition]
    public var groupBy: (attribute: String, domain: [String])?
    public var epsilon: Epsilon
    /// The level of the result's `interval` (its `ci95` stays at 95%); in [0.5, 1 - 2^-20].
    public var confidence: Double = 0.95

    public init(kind: QueryKind, measure: Measure, consentPurpose: String?, predicates: [WhereCondition],
                groupBy: (attribute: String, domain: [String])?, epsilon: Epsilon) {
        self.kind = kind
        self.measure = measure
        self.consentPurpose = consentPurpose
        self.predicates = predicates
        self.groupBy = groupBy
        self.epsilon = epsilon
    }
}

/// One released number with its 95% interval and its interval at the query's confidence.
public struct ReleasedValue: Sendable, Equatable {
    public var value: Double
    public var ci95: (Double, Double)
    /// The interval at the query's `confidence` (equal to `ci95` at 95%; nil when not computed).
    public var interval: (Double, Double)? = nil
    public init(value: Double, ci95: (Double, Double), interval: (Double, Double)? = nil) {
        self.value = value
        self.ci95 = ci95
        self.interval = interval
    }
    public static func == (a: ReleasedValue, b: ReleasedValue) -> Bool { a.value == b.value && a.ci95 == b.ci95 }
}

/// `--report-clamped` (issue 23): how many of the counted values lay outside the query's
/// bounds (and were clamped), released privately with its own epsilon, and their share of the
/// noisy count of values, each with an interval at 95% or more (docs/differential-privacy.md).
public struct ClampedReport: Sendable, Equatable {
    /// The extra epsilon asked for (under a zCDP purpose: the epsilon whose epsilon²/2 is `rho`).
    public var epsilon: Double
    /// zCDP: the rho the three counts were charged (discrete Gaussian), nil under an epsilon purpose.
    public var rho: Double? = nil
    public var count: Double
    public var countInterval: (Double, Double)
    public var share: Double
    public var shareInterval: (Double, Double)
    public init(epsilon: Double, count: Double, countInterval: (Double, Double), share: Double, shareInterval: (Double, Double)) {
        self.epsilon = epsilon
        self.count = count
        self.countInterval = countInterval
        self.share = share
        self.shareInterval = shareInterval
    }
    public static func == (a: ClampedReport, b: ClampedReport) -> Bool {
        a.epsilon == b.epsilon && a.rho == b.rho && a.count == b.count && a.countInterval == b.countInterval && a.share == b.share && a.shareInterval == b.shareInterval
    }
}

/// The answer of a DP query (SPEC §5: value, epsilon, scale, 95% interval, budget left).
public struct QueryResult: Sendable {
    /// The ungrouped value (nil for grouped queries and histograms).
    public var value: ReleasedValue?
    /// Per group key, for grouped queries and histograms, in domain order.
    public var groups: [(key: String, value: ReleasedValue)]
    /// The epsilon charged (`Epsilon.chargedValue`: the asked-for epsilon rounded down to 2^-20).
    public var epsilon: Double
    /// Noise scale (Laplace b) of the main released coordinate, in the measure's units.
    public var scale: Double
    public var budget: BudgetState
    /// Per-subject contribution bounds, for the record.
    public var contributionBounds: [String: Double]
    /// The noisy count behind the answer (a count's value, a mean's denominator; summed over the
    /// groups) and its noise scale (root sum of the groups' squared scales); nil for a sum.
    public var noisyCount: Double? = nil
    public var noisyCountScale: Double? = nil
    /// The level of every value's `interval`.
    public var confidence: Double = 0.95
    /// The public bounds each value was clamped to (per-query `--bounds`, or the schema's), and
    /// whether they were the query's own.
    public var clampBounds: (lower: Double, upper: Double)? = nil
    public var boundsFromQuery = false
    /// The share of the counted values at a bound, when measured (nil: "not measured"; a
    /// count of subjects clamps nothing and reports 0).
    public var clampedShare: Double? = nil
    /// The answer is a stored release returned again at no cost.
    public var cached = false
    /// For a cached answer: when the stored release was made (ms since the epoch).
    public var releasedAtMillis: Int64? = nil
    /// `--report-clamped`: the private count and share of values the bounds clamped.
    public var clamped: ClampedReport? = nil
    /// The accuracy asked for (`--accuracy`), and for a mean the epsilon its first count
    /// release charged (included in `epsilon`).
    public var accuracy: Double? = nil
    public var accuracyCountEpsilon: Double? = nil
    /// zCDP: the rho of an accuracy-first mean's first count release (included in `rho`).
    public var accuracyCountRho: Double? = nil
    /// zCDP: the rho charged (then `epsilon` is its (epsilon, delta) form at `conversionDelta`
    /// and the noise is the discrete Gaussian, `scale` its sigma).
    public var rho: Double? = nil
    public var conversionDelta: Double? = nil

    /// The fields every answer has (the release cache rebuilds answers with it).
    public init(value: ReleasedValue?, groups: [(key: String, value: ReleasedValue)], epsilon: Double, scale: Double, budget: BudgetState,
                contributionBounds: [String: Double]) {
        self.value = value
        self.groups = groups
        self.epsilon = epsilon
        self.scale = scale
        self.budget = budget
        self.contributionBounds = contributionBounds
    }
}
