import Foundation

/// Compiles DP queries to bounded sums, charges the budget, asks the source for exact sums,
/// and releases them with noise. The only path from data to an analyst.
public struct QueryEngine: Sendable {
    public let source: any AggregateSource
    public let accountant: any BudgetAccountant

    public init(source: any AggregateSource, accountant: any BudgetAccountant) {
        self.source = source
        self.accountant = accountant
    }

    /// The coordinates a query needs and the epsilon share of each.
    ///
    /// - count / histogram: one coordinate, 1 per subject (bound 1), all of epsilon.
    /// - sum: one coordinate, the clamped value (bound max(|lower|, |upper|), times
    ///   `maxContributions` for events), all of epsilon.
    /// - mean: two coordinates released separately with epsilon/2 each: the sum of values
    ///   centred on the middle of the bounds (bound (upper - lower) / 2, times the cap for events)
    ///   and the number of contributing values (bound 1, or the cap); mean = centre + sum / count.
    public static func plan(_ q: DPQuery) -> [(Coordinate, Epsilon)] {
        switch (q.kind, q.measure) {
        case (.count, _), (.histogram, _):
            switch q.measure {
            case .events(let kind, _, _, _, let k): return [(.eventCount(kind: kind, maxContributions: k), q.epsilon)]
            default: return [(.subjects, q.epsilon)]
            }
        case (.sum, .subjects), (.mean, .subjects):
            return [(.subjects, q.epsilon)]
        case (.sum, let .attribute(name, lo, hi, integral)):
            let g = BoundedSum.grid(forBound: max(abs(lo), abs(hi)), integral: integral)
            return [(.attribute(name: name, lower: lo, upper: hi, center: 0, grid: g), q.epsilon)]
        case (.sum, let .events(kind, lo, hi, integral, k)):
            let g = BoundedSum.grid(forBound: max(abs(lo), abs(hi)), integral: integral)
            return [(.events(kind: kind, lower: lo, upper: hi, center: 0, grid: g, maxContributions: k), q.epsilon)]
        case (.mean, let .attribute(name, lo, hi, integral)):
            let c = (lo + hi) / 2
            let g = BoundedSum.grid(forBound: (hi - lo) / 2, integral: integral && (hi - lo).truncatingRemainder(dividingBy: 2) == 0)
            let half = q.epsilon.split(2)
            return [(.attribute(name: name, lower: lo, upper: hi, center: c, grid: g), half), (.nonNull(attribute: name), half)]
        case (.mean, let .events(kind, lo, hi, integral, k)):
            let c = (lo + hi) / 2
            let g = BoundedSum.grid(forBound: (hi - lo) / 2, integral: integral && (hi - lo).truncatingRemainder(dividingBy: 2) == 0)
            let half = q.epsilon.split(2)
            return [(.events(kind: kind, lower: lo, upper: hi, center: c, grid: g, maxContributions: k), half),
                    (.eventCount(kind: kind, maxContributions: k), half)]
        }
    }

    /// Runs a query: budget first (a refused charge throws `BudgetExceeded` and nothing is
    /// computed), then exact sums, then noise. `onCharged` runs right after the charge.
    public func run(_ q: DPQuery, purpose: String, limit: Double, periodSeconds: Int) throws -> QueryResult {
        let plan = Self.plan(q)
        let budget = try accountant.spend(purpose: purpose, epsilon: q.epsilon, limit: limit, periodSeconds: periodSeconds)
        let request = AggregateRequest(consentPurpose: q.consentPurpose, predicates: q.predicates, groupBy: q.groupBy, coordinates: plan.map(\.0))
        let sums = try source.boundedSums(request)
        var rng = CSPRNGWords()
        let keys: [String] = q.groupBy?.domain ?? [""]
        let twoParts = plan.count == 2
        let alpha = twoParts ? 0.025 : 0.05     // Bonferroni: the ratio's interval holds with >= 95%
        var released: [(String, ReleasedValue)] = []
        var mainScale = 0.0
        for key in keys {
            let exact = sums[key] ?? [Int64](repeating: 0, count: plan.count)
            var noisy: [NoisyValue] = []
            for (i, (coordinate, eps)) in plan.enumerated() {
                let grid: Double
                switch coordinate {
                case let .attribute(_, _, _, _, g), let .events(_, _, _, _, g, _): grid = g
                default: grid = 1
                }
                noisy += BoundedSum.release(sums: [exact[i]], bound: coordinate.bound, epsilon: eps, grid: grid, alpha: alpha, using: &rng)
            }
            mainScale = noisy[0].scale
            if twoParts {
                switch plan[0].0 {
                case let .attribute(_, lo, hi, c, _), let .events(_, lo, hi, c, _, _):
                    released.append((key, Self.mean(sum: noisy[0], count: noisy[1], center: c, lower: lo, upper: hi)))
                default:
                    preconditionFailure("a two-part plan is always a mean")
                }
            } else {
                let n = noisy[0]
                released.append((key, ReleasedValue(value: n.value, ci95: (n.value - n.halfWidth, n.value + n.halfWidth))))
            }
        }
        var bounds: [String: Double] = [:]
        for (i, (c, _)) in plan.enumerated() {
            let g: Double
            switch c {
            case let .attribute(_, _, _, _, gg), let .events(_, _, _, _, gg, _): g = gg
            default: g = 1
            }
            bounds["coordinate_\(i)"] = Double(c.bound) * g
        }
        let grouped = q.groupBy != nil
        return QueryResult(value: grouped ? nil : released.first?.1, groups: grouped ? released : [],
                           epsilon: q.epsilon.requested, scale: mainScale, budget: budget, contributionBounds: bounds)
    }

    /// mean = centre + S / C, clamped to the bounds; the interval takes the extremes of S and C
    /// over their 97.5% intervals (so it holds with probability >= 95%).
    static func mean(sum s: NoisyValue, count c: NoisyValue, center: Double, lower: Double, upper: Double) -> ReleasedValue {
        func clamp(_ x: Double) -> Double { min(upper, max(lower, x)) }
        let count = max(c.value, 1)
        let value = clamp(center + s.value / count)
        let cLo = c.value - c.halfWidth, cHi = c.value + c.halfWidth
        guard cLo > 0 else { return ReleasedValue(value: value, ci95: (lower, upper)) }
        let candidates = [(s.value - s.halfWidth) / cLo, (s.value - s.halfWidth) / cHi, (s.value + s.halfWidth) / cLo, (s.value + s.halfWidth) / cHi]
        return ReleasedValue(value: value, ci95: (clamp(center + candidates.min()!), clamp(center + candidates.max()!)))
    }
}
