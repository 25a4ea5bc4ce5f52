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
    /// noise units round down, so the shares' noise epsilons sum to at most this one's.
    public func split(_ parts: Int) -> Epsilon {
        Epsilon(noiseUnits: noiseUnits / UInt64(parts), chargeUnits: chargeUnits, requested: requested / Double(parts))
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
    public var description: String { "\(requested)" }
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
                                               using rng: inout R) -> [NoisyValue] {
        precondition(bound > 0 && epsilon.noiseUnits > 0)
        // Scale bound / eps' = bound * 2^20 / noiseUnits = t / s.
        let (t, overflow) = bound.multipliedReportingOverflow(by: Epsilon.unitsPerOne)
        precondition(!overflow, "contribution bound too large for the sampler")
        let s = epsilon.noiseUnits
        let sampler = DiscreteLaplace()
        let scaleUnits = Double(t) / Double(s)
        let k = Double(halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: alpha))
        return sums.map { exact in
            let noise = sampler.sample(scaleNumerator: t, scaleDenominator: s, using: &rng)
            return NoisyValue(value: Double(exact &+ noise) * grid, scale: scaleUnits * grid, halfWidth: k * grid)
        }
    }

    /// The smallest integer k with P(|Y| > k) <= alpha for Y ~ DiscreteLaplace(t/s):
    /// P(|Y| > k) = 2 p^(k+1) / (1 + p), p = exp(-s/t).
    public static func halfWidthUnits(scaleNumerator t: UInt64, scaleDenominator s: UInt64, alpha: Double) -> Int64 {
        let lnp = -Double(s) / Double(t)
        let p = exp(lnp)
        let needed = log(alpha * (1 + p) / 2) / lnp   // k + 1 >= needed
        return max(0, Int64(needed.rounded(.up)) - 1)
    }

    /// A grid step for values with per-subject bound `realBound` (in the value's units): a
    /// power of two that makes the integer bound about 2^16, never finer than 2^-30; integers
    /// use 1. Data-independent (depends on public bounds only).
    public static func grid(forBound realBound: Double, integral: Bool) -> Double {
        if integral { return 1 }
        guard realBound > 0 else { return 1 }
        let e = max(-30, Int((log2(realBound / 65_536)).rounded(.down)))
        return pow(2, Double(e))
    }
}
