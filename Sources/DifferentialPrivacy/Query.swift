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

    /// The largest absolute value one subject can contribute, in grid units.
    public var bound: UInt64 {
        func units(_ x: Double, _ g: Double) -> UInt64 { UInt64((abs(x) / g).rounded(.toNearestOrAwayFromZero)) }
        switch self {
        case .subjects, .nonNull: return 1
        case let .attribute(_, lo, hi, c, g): return max(units(lo - c, g), units(hi - c, g))
        case let .events(_, lo, hi, c, g, k): return UInt64(k) * max(units(lo - c, g), units(hi - c, g))
        case let .eventCount(_, k): return UInt64(k)
        }
    }
}

/// What the aggregate source must sum: the population (consent, predicates), an optional
/// grouping over a public domain, and the coordinates.
public struct AggregateRequest: Sendable, Equatable {
    /// Only subjects with active consent for this purpose (nil: no consent needed).
    public var consentPurpose: String?
    public var predicates: [WhereCondition]
    /// Group by this categorical attribute, over exactly `domain` (subjects whose value is
    /// null or outside the domain belong to no group).
    public var groupBy: (attribute: String, domain: [String])?
    public var coordinates: [Coordinate]

    public init(consentPurpose: String?, predicates: [WhereCondition], groupBy: (attribute: String, domain: [String])?, coordinates: [Coordinate]) {
        self.consentPurpose = consentPurpose
        self.predicates = predicates
        self.groupBy = groupBy
        self.coordinates = coordinates
    }

    public static func == (a: AggregateRequest, b: AggregateRequest) -> Bool {
        a.consentPurpose == b.consentPurpose && a.predicates == b.predicates && a.coordinates == b.coordinates
            && a.groupBy?.attribute == b.groupBy?.attribute && a.groupBy?.domain == b.groupBy?.domain
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
    public init(purpose: String, limit: Double, spent: Double, periodStart: Int64) {
        self.purpose = purpose
        self.limit = limit
        self.spent = spent
        self.periodStart = periodStart
    }
}

/// Sequential composition per purpose and period, persisted. `spend` must check and spend in
/// one atomic step (so concurrent queries cannot overspend) and throw `BudgetExceeded` without
/// spending anything when the charge does not fit.
public protocol BudgetAccountant: Sendable {
    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState
}

public struct BudgetExceeded: Error, Sendable, CustomStringConvertible {
    public var state: BudgetState
    public var requested: Double
    public var description: String {
        "purpose \(state.purpose) has \(Self.fmt(state.left)) of its epsilon \(Self.fmt(state.limit)) left in this period; the query asks for \(Self.fmt(requested))"
    }
    static func fmt(_ d: Double) -> String { String(format: "%.4g", d) }
    public init(state: BudgetState, requested: Double) {
        self.state = state
        self.requested = requested
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
    public var predicates: [WhereCondition]
    public var groupBy: (attribute: String, domain: [String])?
    public var epsilon: Epsilon

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

/// One released number with its 95% interval.
public struct ReleasedValue: Sendable, Equatable {
    public var value: Double
    public var ci95: (Double, Double)
    public static func == (a: ReleasedValue, b: ReleasedValue) -> Bool { a.value == b.value && a.ci95 == b.ci95 }
}

/// The answer of a DP query (SPEC §5: value, epsilon, scale, 95% interval, budget left).
public struct QueryResult: Sendable {
    /// The ungrouped value (nil for grouped queries and histograms).
    public var value: ReleasedValue?
    /// Per group key, for grouped queries and histograms, in domain order.
    public var groups: [(key: String, value: ReleasedValue)]
    public var epsilon: Double
    /// Noise scale (Laplace b) of the main released coordinate, in the measure's units.
    public var scale: Double
    public var budget: BudgetState
    /// Per-subject contribution bounds, for the record.
    public var contributionBounds: [String: Double]
}
