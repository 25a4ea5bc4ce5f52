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
    ///
    /// Throws `DPParameterError` for a query that cannot be released (bounds that are not finite
    /// numbers lower <= upper within +/-2^53, a cap below 1, a mean whose epsilon/2 is below
    /// 2^-20, a coordinate bound above `BoundedSum.maxBound`). `run` plans before it charges.
    public static func plan(_ q: DPQuery) throws -> [(Coordinate, Epsilon)] {
        switch q.measure {
        case .subjects: break
        case let .attribute(_, lo, hi, _): try BoundedSum.checkBounds(lower: lo, upper: hi)
        case let .events(_, lo, hi, _, k):
            try BoundedSum.checkBounds(lower: lo, upper: hi)
            guard k >= 1 else { throw DPParameterError("max_contributions", "must be at least 1") }
        }
        func halves() throws -> Epsilon {
            guard let half = q.epsilon.split(2) else {
                throw DPParameterError("epsilon", "a mean releases a sum and a count with epsilon/2 each, and each needs at least 2^-20: epsilon must be at least 2^-19")
            }
            return half
        }
        let plan: [(Coordinate, Epsilon)]
        switch (q.kind, q.measure) {
        case (.count, _), (.histogram, _):
            switch q.measure {
            case .events(let kind, _, _, _, let k): plan = [(.eventCount(kind: kind, maxContributions: k), q.epsilon)]
            default: plan = [(.subjects, q.epsilon)]
            }
        case (.sum, .subjects), (.mean, .subjects):
            plan = [(.subjects, q.epsilon)]
        case (.sum, let .attribute(name, lo, hi, integral)):
            let g = BoundedSum.grid(forBound: max(abs(lo), abs(hi)), integral: integral)
            plan = [(.attribute(name: name, lower: lo, upper: hi, center: 0, grid: g), q.epsilon)]
        case (.sum, let .events(kind, lo, hi, integral, k)):
            let g = BoundedSum.grid(forBound: max(abs(lo), abs(hi)), integral: integral)
            plan = [(.events(kind: kind, lower: lo, upper: hi, center: 0, grid: g, maxContributions: k), q.epsilon)]
        case (.mean, let .attribute(name, lo, hi, integral)):
            let c = (lo + hi) / 2
            let g = BoundedSum.grid(forBound: (hi - lo) / 2, integral: integral && (hi - lo).truncatingRemainder(dividingBy: 2) == 0)
            let half = try halves()
            plan = [(.attribute(name: name, lower: lo, upper: hi, center: c, grid: g), half), (.nonNull(attribute: name), half)]
        case (.mean, let .events(kind, lo, hi, integral, k)):
            let c = (lo + hi) / 2
            let g = BoundedSum.grid(forBound: (hi - lo) / 2, integral: integral && (hi - lo).truncatingRemainder(dividingBy: 2) == 0)
            let half = try halves()
            plan = [(.events(kind: kind, lower: lo, upper: hi, center: c, grid: g, maxContributions: k), half),
                    (.eventCount(kind: kind, maxContributions: k), half)]
        }
        for (c, _) in plan { _ = try BoundedSum.scaleNumerator(bound: c.bound) }
        return plan
    }

    /// Runs a query: plan first (a query that cannot be released throws `DPParameterError`
    /// and nothing is charged), then the budget (a refused charge throws `BudgetExceeded` and
    /// nothing is computed), then exact sums, then noise. The result reports the epsilon
    /// charged (`Epsilon.chargedValue`).
    public func run(_ q: DPQuery, purpose: String, limit: Double, periodSeconds: Int) throws -> QueryResult {
        let plan = try Self.plan(q)
        let budget = try accountant.spend(purpose: purpose, epsilon: q.epsilon, limit: limit, periodSeconds: periodSeconds)
        var request = AggregateRequest(consentPurpose: q.consentPurpose, predicates: q.predicates, groupBy: q.groupBy, coordinates: plan.map(\.0))
        request.objectionPurpose = q.objectionPurpose
        let sums = try source.boundedSums(request)
        var rng = CSPRNGWords()
        return try Self.release(q, plan: plan, sums: sums, budget: budget, using: &rng)
    }

    /// The noisy answer of a planned query from its exact sums (the second half of `run`, with
    /// the random source given: tests pass a seeded one). Every value gets its 95% interval
    /// (`ci95`) and its interval at `q.confidence` (`interval`); a mean's intervals are joint
    /// (`JointInterval`).
    public static func release<R: RandomWords>(_ q: DPQuery, plan: [(Coordinate, Epsilon)], sums: [String: [Int64]], budget: BudgetState,
                                               using rng: inout R) throws -> QueryResult {
        let keys: [String] = q.groupBy?.domain ?? [""]
        let twoParts = plan.count == 2
        let alpha = 1 - q.confidence
        var released: [(String, ReleasedValue)] = []
        var mainScale = 0.0
        var counts: [NoisyValue] = []
        // Half-widths at the asked-for confidence (the released values carry the 95% ones).
        var wanted: [Double] = []
        for (c, eps) in plan {
            let t = try BoundedSum.scaleNumerator(bound: c.bound)
            wanted.append(Double(BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: eps.noiseUnits, alpha: alpha)) * c.grid)
        }
        for key in keys {
            var exact = sums[key] ?? []
            if exact.count != plan.count { exact = [Int64](repeating: 0, count: plan.count) }   // a source's missing group is zeros
            var noisy: [NoisyValue] = []
            for (i, (coordinate, eps)) in plan.enumerated() {
                noisy += try BoundedSum.release(sums: [exact[i]], bound: coordinate.bound, epsilon: eps, grid: coordinate.grid, alpha: 0.05, using: &rng)
            }
            mainScale = noisy[0].scale
            // The noisy count of the answer (a count's value, a mean's denominator), for the
            // "almost nobody" warning.
            switch plan[twoParts ? 1 : 0].0 {
            case .subjects, .nonNull, .eventCount: counts.append(noisy[twoParts ? 1 : 0])
            default: break
            }
            switch (twoParts, plan[0].0) {
            case let (true, .attribute(_, lo, hi, c, _)), let (true, .events(_, lo, hi, c, _, _)):
                var v = Self.mean(sum: noisy[0], count: noisy[1], center: c, lower: lo, upper: hi, alpha: 0.05)
                v.interval = abs(alpha - 0.05) < 1e-12 ? v.ci95 : Self.mean(sum: noisy[0], count: noisy[1], center: c, lower: lo, upper: hi, alpha: alpha).ci95
                released.append((key, v))
            default:   // one part (a two-part plan is always a mean of the two cases above)
                let n = noisy[0]
                released.append((key, ReleasedValue(value: n.value, ci95: (n.value - n.halfWidth, n.value + n.halfWidth),
                                                    interval: (n.value - wanted[0], n.value + wanted[0]))))
            }
        }
        var bounds: [String: Double] = [:]
        for (i, (c, _)) in plan.enumerated() {
            bounds["coordinate_\(i)"] = Double(c.bound) * c.grid
        }
        let grouped = q.groupBy != nil
        var result = QueryResult(value: grouped ? nil : released.first?.1, groups: grouped ? released : [],
                                 epsilon: q.epsilon.chargedValue, scale: mainScale, budget: budget, contributionBounds: bounds)
        result.confidence = q.confidence
        if !counts.isEmpty {
            result.noisyCount = counts.reduce(0) { $0 + $1.value }
            result.noisyCountScale = counts.reduce(0) { $0 + $1.scale * $1.scale }.squareRoot()
        }
        return result
    }

    /// mean = centre + S / C, clamped to the bounds. Its interval at 1 - `alpha` is the joint
    /// one (`JointInterval`): every mean m in [lower, upper] the two releases do not reject
    /// together, in the measure's units; the whole bounds when none is left.
    static func mean(sum s: NoisyValue, count c: NoisyValue, center: Double, lower: Double, upper: Double, alpha: Double = 0.05) -> ReleasedValue {
        func clamp(_ x: Double) -> Double { min(upper, max(lower, x)) }
        let count = max(c.value, 1)
        let value = clamp(center + s.value / count)
        // In the measure's units: Ŝ = s.value (centred), Ĉ = c.value, scales s.scale and c.scale,
        // |m| <= (upper - lower) / 2. The count's units are events or subjects; the sum's the measure's.
        let r = (upper - lower) / 2
        guard let (lo, hi) = JointInterval.interval(sum: s.value, count: c.value, a: s.scale, b: c.scale, r: r, alpha: alpha) else {
            return ReleasedValue(value: value, ci95: (lower, upper))
        }
        return ReleasedValue(value: value, ci95: (clamp(center + lo), clamp(center + hi)))
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
    /// Every request of the session leaves out the subjects who objected to this purpose.
    public var objectionPurpose: String? = nil
    let attributes: Set<String>
    let eventKinds: Set<String>
    let derived: [String: DerivedAttribute]
    /// A dry run reads nothing and samples nothing: every release checks and spends the
    /// session's epsilon exactly as a real one would and returns zeros (partition selection
    /// selects nothing). The gate dry-runs a model before it charges the job, so a job whose
    /// epsilon cannot be split as the model splits it is refused before anything is charged.
    public let dryRun: Bool
    /// zCDP mode (a job under a zCDP purpose): the job's charged rho. Every `release` then adds
    /// discrete Gaussian noise, coordinate i getting rho * shares[i] / epsilon (the model's
    /// epsilon split read as fractions of the job: the shares add up to at most epsilon, so the
    /// coordinates' rho add up to at most this, by zCDP composition); `releaseSelected` is refused.
    public var zcdpRho: Rho? = nil
    /// Per release: its label and each coordinate's noise scale (Laplace b, or Gaussian sigma),
    /// in the coordinate's units (dry runs record them too: what a quote prints).
    public private(set) var noiseScales: [(what: String, scales: [Double])] = []
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
                attributes: Set<String>, eventKinds: Set<String>, derived: [DerivedAttribute] = [], dryRun: Bool = false) {
        self.dryRun = dryRun
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
        r.objectionPurpose = objectionPurpose
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
        var units: UInt64 = 0
        for e in shares {
            let (sum, overflow) = units.addingReportingOverflow(e.noiseUnits)
            guard !overflow else { throw SessionError("the model asked for more epsilon than the job was granted (\(epsilon))") }
            units = sum
        }
        guard units <= epsilon.noiseUnits - usedUnits else {
            throw SessionError("the model asked for more epsilon than the job was granted (\(epsilon))")
        }
        usedUnits += units
    }

    /// Releases every coordinate of the request (coordinate i with epsilon `shares[i]`) for
    /// every key of the grouping's public domain ("" when ungrouped), in domain order.
    /// Everything is checked (grants, shares, bounds) before the session's epsilon is spent.
    public func release(_ request: AggregateRequest, shares: [Epsilon], label: String) throws -> [(key: String, values: [NoisyValue])] {
        guard shares.count == request.coordinates.count else { throw SessionError("\(label): one epsilon share per coordinate") }
        let r = try prepared(request)
        let keys: [String]
        if let g = r.grouping {
            guard let d = g.domain else { throw SessionError("a grouping with keys from the data needs releaseSelected") }
            keys = d
        } else {
            keys = [""]
        }
        for c in r.coordinates { _ = try BoundedSum.scaleNumerator(bound: c.bound) }
        // zCDP: each coordinate's rho share, and its noise checked, before anything is spent.
        var gaussians: [DiscreteGaussian] = []
        if let rho = zcdpRho {
            for (c, e) in zip(r.coordinates, shares) {
                let q = rho.units.multipliedFullWidth(by: e.noiseUnits)
                guard q.high < epsilon.noiseUnits else { throw SessionError("\(label): an epsilon share above the job's") }
                let units = epsilon.noiseUnits.dividingFullWidth(q).quotient
                guard units > 0 else { throw SessionError("\(label): the rho share of a coordinate is below the 2^-30 resolution") }
                do { gaussians.append(try DiscreteGaussian.forRelease(l2: c.bound, rho: Rho(units: units))) } catch let e as DPParameterError {
                    throw SessionError("\(label): \(e.reason)")
                }
            }
        }
        try take(shares)
        func scales() -> [Double] {
            gaussians.isEmpty ? zip(r.coordinates, shares).map { c, e in Double(max(1, c.bound)) / e.noiseValue * c.grid }
                              : zip(r.coordinates, gaussians).map { c, g in g.sigma * c.grid }
        }
        noiseScales.append((label, scales()))
        if dryRun {
            ledger.append(("\(label) (\(keys.count) groups)", shares.reduce(0) { $0 + $1.noiseValue }, r.coordinates.map { Double($0.bound) * $0.grid }))
            let zeros = zip(r.coordinates, scales()).map { _, b in NoisyValue(value: 0, scale: b, halfWidth: 0) }
            return keys.map { ($0, zeros) }
        }
        let sums = try source.boundedSums(r)
        let gaussianHalfWidths = gaussians.map { Double($0.halfWidthUnits(alpha: 0.05)) }
        var out: [(key: String, values: [NoisyValue])] = []
        out.reserveCapacity(keys.count)
        for key in keys {
            var exact = sums[key] ?? []
            if exact.count != r.coordinates.count { exact = [Int64](repeating: 0, count: r.coordinates.count) }
            var values: [NoisyValue] = []
            for (i, c) in r.coordinates.enumerated() {
                if gaussians.isEmpty {
                    values += try BoundedSum.release(sums: [exact[i]], bound: c.bound, epsilon: shares[i], grid: c.grid, using: &rng)
                } else {
                    let g = gaussians[i]
                    let noise = g.sample(using: &rng)
                    values.append(NoisyValue(value: noise.added(to: exact[i]) * c.grid, scale: g.sigma * c.grid,
                                             halfWidth: gaussianHalfWidths[i] * c.grid))
                }
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
    /// items of events): one coordinate, each key present in the data gets its noisy count
    /// exact + Y, Y ~ DiscreteLaplace(m / epsilon') (m = bound, the number of keys one subject
    /// can touch, each by at most 1), and only keys with exact + Y >= T are released, T from
    /// `BoundedSum.selectionThreshold`: the smallest integer (or one above it) for which the
    /// exact discrete-Laplace tail gives P(1 + Y >= T) = p^(T-1) / (1 + p) <= delta / m,
    /// p = exp(-epsilon'/m). A key only one subject holds (exact count 1) is released with
    /// probability at most delta / m; a subject holds at most m such keys, so the release is
    /// (epsilon, delta)-DP (Korolova et al. 2009; Desfontaines et al. 2022). The comparison is
    /// made on the exact integers. Returns T as the threshold.
    public func releaseSelected(_ request: AggregateRequest, epsilon share: Epsilon, delta: Double, label: String) throws -> (released: [(key: String, value: NoisyValue)], threshold: Double) {
        guard request.coordinates.count == 1, case .itemPresence? = request.coordinates.first else {
            throw SessionError("partition selection counts item presence only (one coordinate)")
        }
        guard zcdpRho == nil else { throw SessionError("private partition selection is not available under a zCDP purpose: declare the items (items_from)") }
        guard delta > 0, usedDelta + delta <= self.delta * (1 + 1e-9) else { throw SessionError("the model asked for more delta than the job allows (\(self.delta))") }
        var r = try prepared(request)
        if case .items? = r.grouping { r.grouping = .items(vocabulary: nil) } else { throw SessionError("partition selection needs an item grouping") }
        let c = r.coordinates[0]
        let threshold = try BoundedSum.selectionThreshold(bound: c.bound, epsilon: share, delta: delta)
        let t = try BoundedSum.scaleNumerator(bound: c.bound), s = share.noiseUnits
        try take([share])
        usedDelta += delta
        if dryRun {
            ledger.append(("\(label) (partition selection, delta \(delta), threshold \(threshold))", share.noiseValue, [Double(c.bound)]))
            return ([], Double(threshold))
        }
        let scale = Double(t) / Double(s)
        let halfWidth = Double(BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: 0.05))
        let sampler = DiscreteLaplace()
        let sums = try source.boundedSums(r)
        var out: [(key: String, value: NoisyValue)] = []
        for key in sums.keys.sorted() {
            guard let exact = sums[key]?.first, exact > 0 else { continue }
            let noise = sampler.sampleNoise(scaleNumerator: t, scaleDenominator: s, using: &rng)
            // exact + Y >= T, on the integers (T <= 2^62 + 1 and exact >= 1: T - exact cannot overflow).
            guard noise.isAtLeast(threshold - exact) else { continue }
            out.append((key, NoisyValue(value: noise.added(to: exact), scale: scale, halfWidth: halfWidth)))
        }
        ledger.append(("\(label) (partition selection, delta \(delta), threshold \(threshold))", share.noiseValue, [Double(c.bound)]))
        // The released items only: nothing released counts 0 events, with one item's noise scale.
        eventCounts.append(NoisyCount(value: out.reduce(0) { $0 + $1.value.value },
                                      scale: max(scale, out.reduce(0) { $0 + $1.value.scale * $1.value.scale }.squareRoot()), release: label))
        return (out, Double(threshold))
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
