import Foundation

/// A privacy parameter as the mechanism uses it: epsilon rounded *down* to a multiple of
/// 2^-20 (`noiseUnits / 2^20`), so the noise is never smaller than the epsilon asked for
/// implies. The budget is charged exactly that rounded epsilon, which is the privacy loss the
/// release actually has (charging the unrounded value would make ten queries of 0.4 not fit
/// a budget of 4.0, since 0.4 has no exact binary form).
public struct Epsilon: Sendable, Equatable, CustomStringConvertible {
    public static let unitsPerOne: UInt64 = 1 << 20
    /// floor(epsilon * 2^20): the numerator of the epsilon the noise is calibrated to.
    public let noiseUnits: UInt64
    /// What the budget is charged: the noise epsilon of the whole release. For a release split
    /// into parts, the parts' noise units add up to at most this.
    public let chargeUnits: UInt64
    public let requested: Double

    public init?(_ epsilon: Double) {
        guard epsilon.isFinite, epsilon > 0, epsilon <= 1_000_000 else { return nil }
        let scaled = epsilon * Double(Self.unitsPerOne)
        guard scaled >= 1 else { return nil }
        noiseUnits = UInt64(scaled.rounded(.down))
        chargeUnits = noiseUnits
        requested = epsilon
    }

    /// Splits into `parts` equal shares (for releases of several coordinates); each share's
    /// noise units round down, so the shares' noise epsilons sum to at most this one's. nil
    /// when `parts` < 1 or a share rounds to zero units (below the 2^-20 resolution): such a
    /// release cannot be made, and the caller refuses it before anything is charged.
    public func split(_ parts: Int) -> Epsilon? {
        guard parts >= 1 else { return nil }
        let units = noiseUnits / UInt64(parts)
        guard units > 0 else { return nil }
        return Epsilon(noiseUnits: units, chargeUnits: chargeUnits, requested: requested / Double(parts))
    }

    /// A share of `fraction` (0 < fraction <= 1) of this epsilon, its noise units rounded down
    /// (nil when the share rounds to zero units). Shares of one release whose fractions add up
    /// to at most 1 have noise epsilons adding up to at most this one's.
    public func share(_ fraction: Double) -> Epsilon? {
        guard fraction > 0, fraction <= 1 else { return nil }
        let units = UInt64((Double(noiseUnits) * fraction).rounded(.down))
        guard units > 0 else { return nil }
        return Epsilon(noiseUnits: units, chargeUnits: chargeUnits, requested: requested * fraction)
    }

    private init(noiseUnits: UInt64, chargeUnits: UInt64, requested: Double) {
        self.noiseUnits = noiseUnits
        self.chargeUnits = chargeUnits
        self.requested = requested
    }

    /// The epsilon the noise is calibrated to, as a number.
    public var noiseValue: Double { Double(noiseUnits) / Double(Self.unitsPerOne) }
    /// The epsilon the budget is charged (`chargeUnits` / 2^20): what results, model artifacts
    /// and audit entries report, so the three agree with the ledger (an epsilon asked for as
    /// 1.5e-6 is rounded down to the grid and charged and reported as 2^-20 = 9.5367431640625e-07).
    public var chargedValue: Double { Double(chargeUnits) / Double(Self.unitsPerOne) }
    /// The smallest epsilon a release can be made with (one unit of 2^-20).
    public static let minimum: Double = 1 / Double(unitsPerOne)
    public var description: String { "\(chargedValue)" }
}

/// A release or plan the DP layer refuses before anything is charged: which parameter
/// (`field`: "epsilon", "bounds", "max_contributions", ...) and why. Callers turn it into a
/// usage or invalid-input error naming their own spelling of the field.
public struct DPParameterError: Error, Sendable, CustomStringConvertible {
    public var field: String
    public var reason: String
    public init(_ field: String, _ reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "\(field): \(reason)" }
}

/// One noisy coordinate.
public struct NoisyValue: Sendable, Equatable {
    /// Released value in the coordinate's own units (grid units times the grid).
    public var value: Double
    /// Noise scale (Laplace b) in the same units.
    public var scale: Double
    /// Half-width of the central interval holding the noise with probability `1 - alpha`.
    public var halfWidth: Double
}

/// The one release primitive every query compiles to: a **bounded sum over subjects**.
///
/// Each subject maps to a vector of integers (values on a fixed-point grid) whose L1 norm is at
/// most `bound`. The aggregate source sums these vectors exactly (integers); this adds
/// discrete Laplace noise with scale `bound / epsilon` to every coordinate.
///
/// Privacy (user-level, epsilon-DP): two neighbouring stores differ in all data of one
/// subject, so their exact sums differ by that subject's vector, of L1 norm <= `bound`. For
/// the discrete Laplace mechanism with P(y) proportional to exp(-epsilon |y| / bound) on every
/// coordinate, the probability of any output vector changes by a factor at most
/// exp(epsilon * ||Δ||_1 / bound) <= exp(epsilon). Everything after (scaling by the grid,
/// ratios, intervals) is post-processing. Epsilon here is the noise epsilon (rounded down).
public enum BoundedSum {
    /// Adds noise to exact per-coordinate integer sums.
    /// - Parameters:
    ///   - sums: exact sums in grid units.
    ///   - bound: L1 bound of one subject's integer vector (> 0).
    ///   - grid: the grid step (a released unit is `grid` in the coordinate's own units).
    ///   - alpha: the interval's miss probability (0.05 for 95%).
    public static func release<R: RandomWords>(sums: [Int64], bound: UInt64, epsilon: Epsilon, grid: Double, alpha: Double = 0.05,
                                               using rng: inout R) throws -> [NoisyValue] {
        // Scale bound / eps' = bound * 2^20 / noiseUnits = t / s.
        let t = try scaleNumerator(bound: bound)
        let s = epsilon.noiseUnits
        guard s > 0 else { throw DPParameterError("epsilon", "below the 2^-20 resolution") }
        let sampler = DiscreteLaplace()
        let scaleUnits = Double(t) / Double(s)
        let k = Double(halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: alpha))
        return sums.map { exact in
            let noise = sampler.sampleNoise(scaleNumerator: t, scaleDenominator: s, using: &rng)
            return NoisyValue(value: noise.added(to: exact) * grid, scale: scaleUnits * grid, halfWidth: k * grid)
        }
    }

    /// Public bounds a value may be clamped to: finite, lower <= upper, both within +/-2^53
    /// (as the schema requires), and, with `minimumSpan`, upper - lower >= minimumSpan.
    public static func checkBounds(lower: Double, upper: Double, minimumSpan: Double? = nil) throws {
        let limit = 9_007_199_254_740_992.0   // 2^53
        guard lower.isFinite, upper.isFinite, abs(lower) <= limit, abs(upper) <= limit else {
            throw DPParameterError("bounds", "must be finite numbers within +/-2^53")
        }
        guard lower <= upper else { throw DPParameterError("bounds", "need lower <= upper") }
        if let minimumSpan, !(upper - lower >= minimumSpan) {
            throw DPParameterError("bounds", "upper - lower must be at least \(minimumSpan) (narrower bounds are below the grid the noise is calibrated on)")
        }
    }

    /// The smallest span (upper - lower) of bounds a job may declare for a derived feature: 2^-20.
    public static let minimumDeclaredSpan: Double = 1.0 / 1_048_576

    /// The largest per-subject L1 bound, in grid units, a release accepts: 2^40. The noise
    /// scale's numerator t = bound * 2^20 then stays <= 2^60, and the grids of `grid(forBound:)`
    /// keep every coordinate the layer plans far below it (at most about 2^31: 2^17 units per
    /// value times a cap of 10,000 events).
    public static let maxBound: UInt64 = 1 << 40

    /// t = max(bound, 1) * 2^20, refusing a bound above `maxBound`. A bound of 0 means every
    /// subject's contribution rounds to 0 (the sum is the same on neighbouring stores), so
    /// noise for a bound of 1 is more than enough.
    public static func scaleNumerator(bound: UInt64) throws -> UInt64 {
        guard bound <= maxBound else {
            throw DPParameterError("bounds", "one subject can contribute \(bound) grid units, more than the 2^40 the noise sampler accepts")
        }
        return max(1, bound) * Epsilon.unitsPerOne
    }

    /// The smallest integer k with P(|Y| > k) <= alpha for Y ~ DiscreteLaplace(t/s):
    /// P(|Y| > k) = 2 p^(k+1) / (1 + p), p = exp(-s/t).
    public static func halfWidthUnits(scaleNumerator t: UInt64, scaleDenominator s: UInt64, alpha: Double) -> Int64 {
        let lnp = -Double(max(1, s)) / Double(max(1, t))
        let p = exp(lnp)
        let needed = (log(alpha * (1 + p) / 2) / lnp).rounded(.up)   // k + 1 >= needed
        // Non-finite or beyond Int64 only for a degenerate alpha or scale: the widest, or 0
        // (alpha >= 1 needs no interval).
        guard needed.isFinite, needed < 9.2e18 else { return needed > 0 || needed.isNaN ? .max : 0 }
        guard needed >= 1 else { return 0 }
        return Int64(needed) - 1
    }

    /// A grid step for values with per-subject bound `realBound` (in the value's units): a
    /// power of two 2^e with e = max(-30, floor(log2(realBound)) - 16), which makes the bound
    /// between 2^16 and 2^17 grid steps (more when e is held at -30). Integers use the same
    /// rule but never a step below 1: g = 1 while realBound < 2^17, and a coarser power of two
    /// above, so an integer bound never exceeds 2^17 grid steps either (a bound of 10^9 with a
    /// cap of 10,000 events is 10^13 in steps of 1, too large for exact noise, but below 2^31
    /// in steps of 2^13). Data-independent (depends on public bounds only). A bound that is
    /// zero, negative or not finite gets 1.
    public static func grid(forBound realBound: Double, integral: Bool) -> Double {
        guard realBound.isFinite, realBound > 0 else { return 1 }
        // log2 of a positive finite double lies in [-1074, 1024): e fits an Int. (Not
        // log2(realBound / 65536): for a tiny bound the quotient underflows to 0.)
        let e = max(-30, Int(log2(realBound).rounded(.down)) - 16)
        if integral && e <= 0 { return 1 }
        return pow(2, Double(e))
    }

    /// Private partition selection's threshold, from the exact tail of the discrete Laplace
    /// noise (see `PrivateSession.releaseSelected` and docs/differential-privacy.md, "Partition
    /// selection"): an integer T >= 2 such that a key whose exact count is 1 passes
    /// `1 + Y >= T` with probability at most `delta / m`, for Y ~ DiscreteLaplace(t/s),
    /// t/s = m / epsilon' the scale and m = `bound` (keys one subject can touch, each by 1).
    ///
    /// P(1 + Y >= T) = P(Y >= k) = p^k / (1 + p) for k = T - 1 >= 1, p = exp(-s/t), so the
    /// exact condition is k >= x = (t/s) * (ln(m/delta) - ln(1 + p)). x is computed in floating
    /// point (error below 8 units of 2^-53 of (t/s) * (|ln(m/delta)| + ln(1 + p))), the margin
    /// (t/s) * (|ln(m/delta)| + ln(1 + p)) * 2^-40 added, and the result rounded up: k >= x
    /// holds exactly, and k is the smallest such integer or one above it.
    public static func selectionThreshold(bound m: UInt64, epsilon: Epsilon, delta: Double) throws -> Int64 {
        guard delta > 0, delta < 1 else { throw DPParameterError("delta", "must be above 0 and below 1") }
        let t = try scaleNumerator(bound: m)
        let s = epsilon.noiseUnits
        guard s > 0 else { throw DPParameterError("epsilon", "below the 2^-20 resolution") }
        let scale = Double(t) / Double(s)
        let p = exp(-Double(s) / Double(t))
        let l = log(Double(max(1, m)) / delta), q = log1p(p)
        let x = scale * (l - q) + scale * (abs(l) + q) * 0x1p-40
        let k = max(x, 1).rounded(.up)
        guard k.isFinite, k < 0x1p62 else { throw DPParameterError("delta", "too small for this epsilon: the selection threshold is beyond 2^62") }
        return Int64(k) + 1
    }
}