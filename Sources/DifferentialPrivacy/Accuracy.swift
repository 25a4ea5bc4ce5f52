import Foundation

// Accuracy-first queries, quotes (dry runs) and the mean's joint interval
// (docs/differential-privacy.md, "Accuracy, quotes and intervals"). Everything here is a
// function of public parameters (bounds, caps, epsilon, confidence) or post-processing of
// released noisy values: nothing here reads data.

/// What a query would charge and how accurate its answer would be, without running it.
public struct QueryQuote: Sendable {
    /// The epsilon the query would charge (`Epsilon.chargedValue`).
    public var epsilon: Double
    /// Pure DP: every query of this layer charges delta 0.
    public var delta: Double = 0
    /// Noise scale (Laplace b) of the main coordinate, in the measure's units.
    public var scale: Double
    /// The confidence level of `halfWidth`.
    public var confidence: Double
    /// count, sum, histogram: the interval half-width at `confidence`, per released value (the
    /// exact discrete-Laplace quantile times the grid). nil for a mean (see `meanHalfWidthTimesCount`).
    public var halfWidth: Double?
    /// mean: the joint interval's half-width at the worst-case mean (a bound away from the
    /// centre) times the count: for n counted subjects the half-width is at most this / n.
    public var meanHalfWidthTimesCount: Double?
    /// Per coordinate: noise scale and half-width at `confidence`, in the coordinate's units.
    public var coordinates: [(scale: Double, halfWidth: Double)]
    /// Filled in by the caller: the budget as it stands (nothing was charged), the bounds the
    /// values would be clamped to, the accuracy asked for.
    public var budget: BudgetState? = nil
    public var clampBounds: (lower: Double, upper: Double)? = nil
    public var accuracy: Double? = nil
    /// zCDP: the rho the query would charge (`epsilon` and `delta` are then its conversion).
    public var rho: Double? = nil
    /// The query would be answered from the release cache: nothing charged (`epsilon` is the
    /// stored release's; the charge is 0).
    public var cached = false
    /// Whether the quoted epsilon (zCDP: rho) fits the budget left.
    public var fits: Bool? { budget.map { (rho ?? epsilon) <= $0.left * (1 + 1e-12) } }
}

extension QueryEngine {
    /// The quote of a query: its plan's noise, nothing charged, nothing read. Throws
    /// `DPParameterError` exactly as `plan` does.
    public static func quote(_ q: DPQuery) throws -> QueryQuote {
        let plan = try plan(q)
        let alpha = 1 - q.confidence
        var coords: [(scale: Double, halfWidth: Double)] = []
        for (c, eps) in plan {
            let t = try BoundedSum.scaleNumerator(bound: c.bound)
            let s = eps.noiseUnits
            coords.append((Double(t) / Double(s) * c.grid,
                           Double(BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: alpha)) * c.grid))
        }
        var quote = QueryQuote(epsilon: q.epsilon.chargedValue, scale: coords[0].scale, confidence: q.confidence,
                               halfWidth: coords[0].halfWidth, coordinates: coords)
        if plan.count == 2 {
            quote.halfWidth = nil
            quote.meanHalfWidthTimesCount = try meanHalfWidthTimesCount(plan, alpha: alpha)
        }
        return quote
    }

    /// For a mean's plan: the joint quantile of |Ls - m·Lc| at the worst case |m| = R (half the
    /// span of the bounds), in the measure's units. The interval of a mean over n counted
    /// subjects has half-width about this / n (exactly, in the continuous approximation of the
    /// noise, when the noisy count is n and the mean sits at a bound).
    static func meanHalfWidthTimesCount(_ plan: [(Coordinate, Epsilon)], alpha: Double) throws -> Double {
        let (sum, sEps) = plan[0], (count, cEps) = plan[1]
        let a = Double(try BoundedSum.scaleNumerator(bound: sum.bound)) / Double(sEps.noiseUnits)     // grid units
        let b = Double(try BoundedSum.scaleNumerator(bound: count.bound)) / Double(cEps.noiseUnits)
        let r = Double(sum.bound) / Double(max(1, count.bound))   // |centred value| per counted unit, grid units
        return JointInterval.quantile(alpha: alpha, a: a, b: r * b) * sum.grid
    }

    /// The smallest epsilon (a multiple of 2^-20) whose interval half-width at `confidence` is at
    /// most `accuracy`, for a one-coordinate query (count, sum, histogram): the half-width
    /// k(t/s)·g is non-increasing in the noise units s, so a bisection over s in
    /// 1...2^20·10^6 finds the least s. Throws `DPParameterError("accuracy", ...)` when even
    /// epsilon 10^6 does not reach it, or for a mean (see `meanEpsilon`).
    public static func epsilon(forAccuracy accuracy: Double, _ q: DPQuery) throws -> Epsilon {
        guard accuracy.isFinite, accuracy > 0 else { throw DPParameterError("accuracy", "must be a positive number") }
        guard q.kind != .mean else { throw DPParameterError("accuracy", "a mean's epsilon depends on a noisy count (meanEpsilon)") }
        let alpha = 1 - q.confidence
        func halfWidth(_ units: UInt64) throws -> Double {
            var probe = q
            probe.epsilon = Epsilon(Double(units) / Double(Epsilon.unitsPerOne))!   // units in 1...2^20·10^6: always valid
            let (c, eps) = try plan(probe)[0]
            let t = try BoundedSum.scaleNumerator(bound: c.bound)
            return Double(BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: eps.noiseUnits, alpha: alpha)) * c.grid
        }
        return try smallest(units: halfWidth, accuracy: accuracy)
    }

    /// A mean's epsilon for `accuracy`, given `countLowerBound` (n, > 0): the least epsilon whose
    /// plan gives `meanHalfWidthTimesCount / n <= accuracy` (worst-case mean, count n).
    public static func meanEpsilon(forAccuracy accuracy: Double, _ q: DPQuery, countLowerBound n: Double) throws -> Epsilon {
        guard accuracy.isFinite, accuracy > 0 else { throw DPParameterError("accuracy", "must be a positive number") }
        guard q.kind == .mean, n.isFinite, n > 0 else { throw DPParameterError("accuracy", "needs a positive count") }
        let alpha = 1 - q.confidence
        func halfWidth(_ units: UInt64) throws -> Double {
            var probe = q
            probe.epsilon = Epsilon(Double(units) / Double(Epsilon.unitsPerOne))!
            guard probe.epsilon.split(2) != nil else { return .infinity }
            return try meanHalfWidthTimesCount(plan(probe), alpha: alpha) / n
        }
        return try smallest(units: halfWidth, accuracy: accuracy)
    }

    /// The least units u in 1...2^20·10^6 with halfWidth(u) <= accuracy (halfWidth non-increasing).
    static func smallest(units halfWidth: (UInt64) throws -> Double, accuracy: Double) throws -> Epsilon {
        var hi: UInt64 = Epsilon.unitsPerOne * 1_000_000
        guard try halfWidth(hi) <= accuracy else {
            throw DPParameterError("accuracy", "not reachable: even epsilon 1000000 gives a wider interval")
        }
        var lo: UInt64 = 0   // halfWidth(lo) > accuracy, or lo = 0 (no epsilon)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if try halfWidth(mid) <= accuracy { hi = mid } else { lo = mid }
        }
        return Epsilon(Double(hi) / Double(Epsilon.unitsPerOne))!
    }
}

/// The mean's interval from one joint computation (test inversion), not two Bonferroni corners.
///
/// With S the exact centred sum and C the exact count (grid units), the releases are
/// Ŝ = S + Ls and Ĉ = C + Lc, Ls ~ Laplace(a), Lc ~ Laplace(b) independent. For the true centred
/// mean m = S / C (|m| <= R, the bounds' half-span):
///
///     Ŝ - m·Ĉ = Ls - m·Lc,
///
/// whose law depends only on m (and public scales). So the set
///
///     M = { m in [-R, R] : |Ŝ - m·Ĉ| <= q_alpha(a, |m|·b) },
///
/// q_alpha(a, b') the 1 - alpha quantile of |X - Y| for X ~ Laplace(a), Y ~ Laplace(b'), holds
/// the true m with probability 1 - alpha (one event, not a union bound). The interval is M's
/// hull (the full bounds when M is empty, probability at most alpha). The noise is discrete
/// Laplace; the quantile uses its continuous law with the same scale (at the scales a mean's
/// coordinates have the difference is below the coverage test's tolerance; see the test).
public enum JointInterval {
    /// P(|X - Y| > z), X ~ Laplace(a), Y ~ Laplace(b), independent (a > 0, b >= 0): from the
    /// partial fractions of the characteristic functions,
    /// (a² e^(-z/a) - b² e^(-z/b)) / (a² - b²); e^(-z/a)(1 + z/(2a)) when a = b; e^(-z/a) when b = 0.
    public static func tail(_ z: Double, a: Double, b: Double) -> Double {
        let (x, y) = a >= b ? (a, b) : (b, a)   // symmetric in a and b
        guard y > 0 else { return exp(-z / x) }
        if (x - y) <= 1e-6 * x {
            let m = (x + y) / 2
            return exp(-z / m) * (1 + z / (2 * m))
        }
        // (x² e^(-z/x) - y² e^(-z/y)) / (x² - y²) = e^(-z/x) (x² - y² e^(z/x - z/y)) / (x² - y²); y < x
        let r = y / x
        return exp(-z / x) * (1 - r * r * exp(z / x - z / y)) / (1 - r * r)
    }

    /// The least z with tail(z) <= alpha (bisection to a relative 2^-32).
    public static func quantile(alpha: Double, a: Double, b: Double) -> Double {
        guard alpha > 0, alpha < 1 else { return alpha >= 1 ? 0 : .infinity }
        var lo = 0.0, hi = max(a, b, 1e-300)
        while tail(hi, a: a, b: b) > alpha { hi *= 2; if !hi.isFinite { return .infinity } }
        for _ in 0..<64 {
            let mid = (lo + hi) / 2
            if tail(mid, a: a, b: b) > alpha { lo = mid } else { hi = mid }
            if hi - lo <= hi * 0x1p-32 { break }
        }
        return hi
    }

    /// The hull of M (see the type) for released Ŝ = `sum`, Ĉ = `count` (grid and count units),
    /// scales a (sum) and b (count), bounds [-r, r]: scanned at 129 points (and the point
    /// estimate) and the ends refined by 30 bisection steps (to 2r·2^-37). Returns nil when M is empty.
    public static func interval(sum: Double, count: Double, a: Double, b: Double, r: Double, alpha: Double) -> (Double, Double)? {
        guard r > 0 else { return (0, 0) }
        func accepts(_ m: Double) -> Bool { abs(sum - m * count) <= quantile(alpha: alpha, a: a, b: abs(m) * b) }
        let n = 128
        var points = (0...n).map { -r + 2 * r * Double($0) / Double(n) }
        if count > 0 { points.append(min(r, max(-r, sum / count))); points.sort() }
        let ok = points.map(accepts)
        guard let first = ok.firstIndex(of: true), let last = ok.lastIndex(of: true) else { return nil }
        func refine(_ inside: Double, _ outside: Double) -> Double {
            var (i, o) = (inside, outside)
            for _ in 0..<30 {
                let mid = (i + o) / 2
                if accepts(mid) { i = mid } else { o = mid }
            }
            return i
        }
        let lo = first > 0 ? refine(points[first], points[first - 1]) : points[first]
        let hi = last < points.count - 1 ? refine(points[last], points[last + 1]) : points[last]
        return (lo, hi)
    }
}

/// A mean asked for by accuracy that was refused after its first count release was charged:
/// why, what that release charged, and the budget refusal when the second part did not fit.
public struct MeanAccuracyRefused: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var firstCharged: Double
    public var budget: BudgetExceeded?
    public var description: String { reason }
}

extension QueryEngine {
    /// The most values an accuracy-first mean is assumed it could count (2^32, a public
    /// constant, not a property of any store): an accuracy that would need more, even at the
    /// largest epsilon or rho, is refused before anything is charged.
    public static let accuracyPopulationCap: Double = 4_294_967_296

    /// A mean asked for by accuracy (docs/differential-privacy.md, "Accuracy first"):
    ///
    /// 1. charge `first` (on `firstAccountant`, its own audit entry) and release the mean's
    ///    denominator (non-null count, or capped event count) per group, with discrete Laplace
    ///    noise of scale bound / first;
    /// 2. n = the smallest over the groups of (noisy count - its 95% half-width), a lower bound
    ///    on every group's count with probability >= 95% per group;
    /// 3. epsilon = `meanEpsilon(accuracy, n)`: the least epsilon whose joint interval at the
    ///    worst-case mean over n counted units is at most `accuracy` wide on each side;
    /// 4. run the mean with that epsilon (charged as any query; refused when it does not fit).
    ///
    /// The result's `epsilon` is the total charged (both releases: sequential composition).
    /// The first release is a count of the same population: it is epsilon-DP with sensitivity
    /// the count coordinate's bound (1, or the cap for events), like any count.
    public func runMean<R: RandomWords>(forAccuracy accuracy: Double, _ q: DPQuery, first: Epsilon, firstAccountant: any BudgetAccountant,
                                        purpose: String, limit: Double, periodSeconds: Int, using rng: inout R) throws -> QueryResult {
        let plan = try Self.plan(q)
        guard plan.count == 2 else { throw DPParameterError("accuracy", "runMean is for means") }
        let countCoordinate = plan[1].0
        // An accuracy no store could be promised (not reachable even over
        // `accuracyPopulationCap` values at the largest epsilon) is refused before the first
        // release is charged; the half-width only shrinks as the count grows.
        _ = try Self.meanEpsilon(forAccuracy: accuracy, q, countLowerBound: Self.accuracyPopulationCap)
        _ = try firstAccountant.spend(purpose: purpose, epsilon: first, limit: limit, periodSeconds: periodSeconds)
        var request = AggregateRequest(consentPurpose: q.consentPurpose, predicates: q.predicates, groupBy: q.groupBy, coordinates: [countCoordinate])
        request.objectionPurpose = q.objectionPurpose
        let sums = try source.boundedSums(request)
        var lowest = Double.infinity
        for key in q.groupBy?.domain ?? [""] {
            let exact = sums[key]?.first ?? 0
            let v = try BoundedSum.release(sums: [exact], bound: countCoordinate.bound, epsilon: first, grid: 1, alpha: 0.05, using: &rng)[0]
            lowest = min(lowest, v.value - v.halfWidth)
        }
        let charged = first.chargedValue
        guard lowest >= 1 else {
            throw MeanAccuracyRefused(reason: "the first count release (epsilon \(charged), charged) found too few values to promise this accuracy", firstCharged: charged)
        }
        let eps: Epsilon
        do {
            eps = try Self.meanEpsilon(forAccuracy: accuracy, q, countLowerBound: lowest)
        } catch let e as DPParameterError {
            throw MeanAccuracyRefused(reason: "\(e.reason) (the first count release charged epsilon \(charged))", firstCharged: charged)
        }
        var main = q
        main.epsilon = eps
        do {
            var r = try run(main, purpose: purpose, limit: limit, periodSeconds: periodSeconds)
            r.epsilon += charged
            r.accuracy = accuracy
            r.accuracyCountEpsilon = charged
            return r
        } catch let e as BudgetExceeded {
            throw MeanAccuracyRefused(reason: "this accuracy needs epsilon \(eps.chargedValue) more after the first count release (epsilon \(charged), charged)",
                                      firstCharged: charged, budget: e)
        }
    }
}
