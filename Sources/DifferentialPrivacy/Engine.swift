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
        var counts: [NoisyValue] = []
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
            // The noisy count of the answer (a count's value, a mean's denominator), for the
            // "almost nobody" warning.
            switch plan[twoParts ? 1 : 0].0 {
            case .subjects, .nonNull, .eventCount: counts.append(noisy[twoParts ? 1 : 0])
            default: break
            }
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
        var result = QueryResult(value: grouped ? nil : released.first?.1, groups: grouped ? released : [],
                                 epsilon: q.epsilon.requested, scale: mainScale, budget: budget, contributionBounds: bounds)
        if !counts.isEmpty {
            result.noisyCount = counts.reduce(0) { $0 + $1.value }
            result.noisyCountScale = counts.reduce(0) { $0 + $1.scale * $1.scale }.squareRoot()
        }
        return result
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

// MARK: - Training sessions

/// A privacy budget charged once (for a whole training job) and spent by a model in several
/// releases. Every release is `BoundedSum.release` with the coordinates' documented L1 bounds;
/// the session adds up the noise epsilon of every release (sequential composition) and
/// refuses a release that would take the total past the charged epsilon. The population is
/// fixed by the session (consent purpose), and only the attributes, event kinds and derived
/// attributes (job-declared per-subject event aggregates, whose definitions the session supplies
/// to every request: a model cannot define its own) the gate granted can be named. Used from
/// one thread.
public final class PrivateSession {
    public let epsilon: Epsilon
    public let delta: Double
    let source: any AggregateSource
    let consentPurpose: String?
    let attributes: Set<String>
    let eventKinds: Set<String>
    let derived: [String: DerivedAttribute]
    private var usedUnits: UInt64 = 0
    private var usedDelta: Double = 0
    private var rng = CSPRNGWords()
    /// One line per release, for the record: what was released and with which epsilon.
    /// One entry per release: what, its total noise epsilon (sum of its coordinates' shares),
    /// and each coordinate's per-subject L1 bound in the coordinate's units.
    public private(set) var ledger: [(what: String, epsilon: Double, bounds: [Double])] = []
    /// The noisy subject counts the releases made, derived without extra budget: for each
    /// release with a `subjects` coordinate over a partition (no grouping, or an attribute,
    /// nearest-centroid, cell or threshold grouping: a subject is in at most one group), the sum
    /// of that coordinate over the groups, and its noise scale sqrt(sum of the groups' b^2).
    public private(set) var subjectCounts: [NoisyCount] = []
    /// The noisy event counts: for each release of `itemPresence` (catalog, segment or selected
    /// items), the sum over the released items (the subjects' distinct items, each subject's
    /// capped at maxItems), with its noise scale as above.
    public private(set) var eventCounts: [NoisyCount] = []

    /// A noisy count derived from a release: value and noise scale (Laplace b, or the root sum
    /// of squares of the summed values' b).
    public struct NoisyCount: Sendable, Equatable {
        public var value: Double
        public var scale: Double
        public var release: String
    }

    /// `epsilon` must already be charged (see `QueryEngine.openSession`); `delta` is the total
    /// delta the model may use for private partition selection (0: none). `derived`: the granted
    /// derived attributes (their names are granted with them; their event kinds must be in
    /// `eventKinds`, or a request naming them is refused).
    public init(source: any AggregateSource, consentPurpose: String?, epsilon: Epsilon, delta: Double = 0,
                attributes: Set<String>, eventKinds: Set<String>, derived: [DerivedAttribute] = []) {
        self.source = source
        self.consentPurpose = consentPurpose
        self.epsilon = epsilon
        self.delta = delta
        self.attributes = attributes
        self.eventKinds = eventKinds
        var d: [String: DerivedAttribute] = [:]
        for a in derived { d[a.name] = a }
        self.derived = d
    }

    /// Noise units not yet spent.
    public var remaining: Epsilon? { epsilon.share(Double(epsilon.noiseUnits - usedUnits) / Double(epsilon.noiseUnits)) }
    public var spentValue: Double { Double(usedUnits) / Double(Epsilon.unitsPerOne) }

    /// A share of the session's whole epsilon (fraction of the total).
    public func share(_ fraction: Double) throws -> Epsilon {
        guard let e = epsilon.share(fraction) else { throw SessionError("epsilon share \(fraction) of \(epsilon) is below the 2^-20 resolution") }
        return e
    }

    /// The request as the source gets it: the session's population, and the granted definitions
    /// of the derived attributes it names (any the model supplied are dropped). Throws when it
    /// names an attribute, derived attribute or event kind the gate did not grant.
    func prepared(_ request: AggregateRequest) throws -> AggregateRequest {
        var r = request
        r.consentPurpose = consentPurpose
        r.derived = []
        var (names, kinds) = r.names
        for n in names where !attributes.contains(n) {
            guard let d = derived[n] else { throw SessionError("the job was not granted attribute \(n)") }
            if !r.derived.contains(d) { r.derived.append(d) }
            kinds.append(d.eventKind)
        }
        for k in kinds where !eventKinds.contains(k) { throw SessionError("the job was not granted events \(k)") }
        return r
    }

    func take(_ shares: [Epsilon]) throws {
        let units = shares.reduce(UInt64(0)) { $0 + $1.noiseUnits }
        guard usedUnits + units <= epsilon.noiseUnits else {
            throw SessionError("the model asked for more epsilon than the job was granted (\(epsilon))")
        }
        usedUnits += units
    }

    /// Releases every coordinate of the request (coordinate i with epsilon `shares[i]`) for
    /// every key of the grouping's public domain ("" when ungrouped), in domain order.
    public func release(_ request: AggregateRequest, shares: [Epsilon], label: String) throws -> [(key: String, values: [NoisyValue])] {
        precondition(shares.count == request.coordinates.count, "one epsilon share per coordinate")
        let r = try prepared(request)
        let keys: [String]
        if let g = r.grouping {
            guard let d = g.domain else { throw SessionError("a grouping with keys from the data needs releaseSelected") }
            keys = d
        } else {
            keys = [""]
        }
        try take(shares)
        let sums = try source.boundedSums(r)
        var out: [(key: String, values: [NoisyValue])] = []
        out.reserveCapacity(keys.count)
        for key in keys {
            let exact = sums[key] ?? [Int64](repeating: 0, count: r.coordinates.count)
            var values: [NoisyValue] = []
            for (i, c) in r.coordinates.enumerated() {
                values += BoundedSum.release(sums: [exact[i]], bound: c.bound, epsilon: shares[i], grid: c.grid, using: &rng)
            }
            out.append((key, values))
        }
        ledger.append(("\(label) (\(keys.count) groups)", shares.reduce(0) { $0 + $1.noiseValue }, r.coordinates.map { Double($0.bound) * $0.grid }))
        recordCounts(r, out.map(\.values), label: label)
        return out
    }

    /// Adds the release's derivable subject and event counts (see ``subjectCounts``).
    func recordCounts(_ r: AggregateRequest, _ values: [[NoisyValue]], label: String) {
        let partition: Bool
        switch r.grouping {
        case nil, .attribute?, .nearest?, .cell?, .thresholds?: partition = true
        default: partition = false
        }
        for (i, c) in r.coordinates.enumerated() {
            let column = values.compactMap { i < $0.count ? $0[i] : nil }
            let total = NoisyCount(value: column.reduce(0) { $0 + $1.value },
                                   scale: column.reduce(0) { $0 + $1.scale * $1.scale }.squareRoot(), release: label)
            switch c {
            case .subjects where partition: subjectCounts.append(total)
            case .itemPresence: eventCounts.append(total)
            default: break
            }
        }
    }

    /// Private partition selection (for groupings whose keys come from the data, e.g. the
    /// items of events): one coordinate, each key present in the data gets its noisy sum,
    /// and only keys whose noisy value exceeds
    /// `threshold = 1 + b * ln(m / (2 delta))` (b = bound / epsilon the noise scale,
    /// m = bound, the number of keys one subject can touch, each by at most 1) are released.
    /// A key only one subject holds is released with probability at most
    /// (1/2) exp(-(threshold - 1) / b) = delta / m; a subject holds at most m keys, so the
    /// release is (epsilon, delta)-DP (Korolova et al. 2009; Desfontaines et al. 2022).
    public func releaseSelected(_ request: AggregateRequest, epsilon share: Epsilon, delta: Double, label: String) throws -> (released: [(key: String, value: NoisyValue)], threshold: Double) {
        precondition(request.coordinates.count == 1)
        guard case .itemPresence? = request.coordinates.first else { throw SessionError("partition selection counts item presence only") }
        guard delta > 0, usedDelta + delta <= self.delta * (1 + 1e-9) else { throw SessionError("the model asked for more delta than the job allows (\(self.delta))") }
        var r = try prepared(request)
        if case .items? = r.grouping { r.grouping = .items(vocabulary: nil) } else { throw SessionError("partition selection needs an item grouping") }
        try take([share])
        usedDelta += delta
        let c = r.coordinates[0]
        let m = Double(c.bound)
        let b = m * Double(Epsilon.unitsPerOne) / Double(share.noiseUnits)
        let threshold = 1 + b * log(m / (2 * delta))
        let sums = try source.boundedSums(r)
        var out: [(key: String, value: NoisyValue)] = []
        for key in sums.keys.sorted() {
            guard let exact = sums[key]?.first, exact > 0 else { continue }
            let v = BoundedSum.release(sums: [exact], bound: c.bound, epsilon: share, grid: 1, using: &rng)[0]
            if v.value > threshold { out.append((key, v)) }
        }
        ledger.append(("\(label) (partition selection, delta \(delta), threshold \(String(format: "%.1f", threshold)))", share.noiseValue, [m]))
        // The released items only: nothing released counts 0 events, with one item's noise scale.
        eventCounts.append(NoisyCount(value: out.reduce(0) { $0 + $1.value.value },
                                      scale: max(b, out.reduce(0) { $0 + $1.value.scale * $1.value.scale }.squareRoot()), release: label))
        return (out, threshold)
    }
}

public struct SessionError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

extension QueryEngine {
    /// Charges `epsilon` and `delta` once for a whole training job (check-and-spend with the
    /// job's audit entry; `BudgetExceeded` when either does not fit, `deltaLimit` being the
    /// purpose's delta per period) and opens the session the model spends them in.
    public func openSession(purpose: String, consentPurpose: String?, epsilon: Epsilon, delta: Double = 0, limit: Double,
                            deltaLimit: Double = 0, periodSeconds: Int,
                            attributes: Set<String>, eventKinds: Set<String>, derived: [DerivedAttribute] = []) throws -> (PrivateSession, BudgetState) {
        let budget = try accountant.spend(purpose: purpose, epsilon: epsilon, delta: delta, limit: limit, deltaLimit: deltaLimit,
                                          periodSeconds: periodSeconds)
        return (PrivateSession(source: source, consentPurpose: consentPurpose, epsilon: epsilon, delta: delta,
                               attributes: attributes, eventKinds: eventKinds, derived: derived), budget)
    }
}
