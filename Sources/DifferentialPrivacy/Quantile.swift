import Foundation

/// Quantiles by the exponential mechanism over a bounded, binned domain
/// (docs/differential-privacy.md, "Quantiles").
///
/// **Domain.** The public bounds [lo, hi] split into `bins` equal cells (one per integer for an
/// integer attribute whose span is below `maxBins`). Each subject's clamped value falls in one
/// cell (`Grouping.cell` over the one feature: the store sums exact per-cell counts c_j; a null
/// falls in none). The candidate outputs are the cells; the released value is the cell's
/// integer, or its midpoint (post-processing of the index).
///
/// **Utility.** With B_j the number of values in cells below j and A_j the number above,
///
///     u(j) = -| (1 - q)·B_j - q·A_j |.
///
/// **Sensitivity 1.** Neighbouring stores differ by one subject (present or absent). Its value
/// lies in one cell k (or none): for j > k it adds 1 to B_j, changing the inner term by 1 - q;
/// for j < k it adds 1 to A_j, changing it by -q; for j = k nothing changes. So
/// |u_D(j) - u_D'(j)| <= max(q, 1 - q) <= 1 for every j.
///
/// **Privacy.** The mechanism outputs j with probability exp(ε·u(j)/2) / Σ_i exp(ε·u(i)/2).
/// For neighbours, each numerator changes by a factor at most e^(ε/2) and the sum as well, so
/// every output's probability changes by at most e^ε: ε-DP (McSherry & Talwar 2007). k
/// quantiles each get ε/k (`Epsilon.split`): by sequential composition the release is ε-DP.
///
/// **Exact sampling, no floating point.** q is rounded to a multiple of 2^-20 (qu = q·2^20),
/// the scores U_j = |(2^20 - qu)·B_j - qu·A_j| are exact integers (u = -U/2^20), and with
/// ε = s/2^20 the weight exp(ε·(u(j) - u_max)/2) = exp(-s·(U_j - U_min)/2^41). Sampling is by
/// rejection: draw j uniformly, accept with Bernoulli(exp(-s·(U_j - U_min)/2^41)), computed
/// exactly with the Canonne-Kamath-Steinke Bernoulli(exp(-γ)) sampler (`DiscreteLaplace`) on
/// the 128-bit numerator; a rejected draw starts again. The accepted j has probability
/// proportional to exp(ε·u(j)/2), exactly. (The best cell is accepted with probability 1, so
/// the expected number of draws is at most `bins`.)
///
/// **Accuracy.** For the exponential mechanism, P(u(out) <= u_max - (2/ε')(ln(bins) + t)) <=
/// e^(-t): with probability >= 95% the released cell's |(1 - q)·B - q·A| is within
/// (2/ε')·ln(bins/0.05) of the best cell's (`rankError`), ε' = ε/k.
public enum QuantileMechanism {
    /// The most cells a domain is split into. The released value is off by up to half a cell
    /// (the grid's error, in the attribute's units), while the mechanism's rank error grows only
    /// with ln(bins): 4,096 cells instead of 1,024 quarter the grid's error and add
    /// (2/ε')·ln 4 ≈ 2.8/ε' ranks (docs/differential-privacy.md, "Quantiles"). The sampler's
    /// expected draws are at most `bins`, and the store returns one count per cell.
    public static let maxBins = 4096

    /// The cells of [lo, hi]: one per integer when the attribute is integral with integer bounds
    /// and hi - lo + 1 <= maxBins, else maxBins (1 when lo == hi).
    public static func bins(lower: Double, upper: Double, integral: Bool) -> Int {
        let span = upper - lower
        guard span > 0 else { return 1 }
        if integral && lower == lower.rounded() && upper == upper.rounded() && span + 1 <= Double(maxBins) { return Int(span) + 1 }
        return maxBins
    }

    /// The value a cell stands for: its integer (one cell per integer), else its midpoint.
    public static func value(bin j: Int, bins: Int, lower: Double, upper: Double, integral: Bool) -> Double {
        guard bins > 1 else { return lower }
        if integral && lower == lower.rounded() && upper == upper.rounded() && upper - lower + 1 == Double(bins) { return lower + Double(j) }
        return lower + (Double(j) + 0.5) * (upper - lower) / Double(bins)
    }

    /// q in [0, 1] as a multiple of 2^-20 (rounded to nearest).
    public static func units(q: Double) throws -> UInt64 {
        guard q.isFinite, q >= 0, q <= 1 else { throw DPParameterError("q", "each quantile must be a number from 0 to 1") }
        return UInt64((q * Double(Epsilon.unitsPerOne)).rounded())
    }

    /// The scores U_j = |(2^20 - qu)·B_j - qu·A_j| from the exact cell counts (negative counts,
    /// which a correct source never returns, are taken as 0). Throws when a product would
    /// overflow (more than 2^42 values).
    public static func scores(counts: [Int64], qUnits qu: UInt64) throws -> [UInt64] {
        let c = counts.map { UInt64(max(0, $0)) }
        var total: UInt64 = 0
        for x in c {
            let (t, o) = total.addingReportingOverflow(x)
            guard !o, t <= 1 << 42 else { throw DPParameterError("q", "too many values for an exact quantile score") }
            total = t
        }
        let one = Epsilon.unitsPerOne
        var below: UInt64 = 0
        var out: [UInt64] = []
        out.reserveCapacity(c.count)
        for x in c {
            let above = total - below - x
            let l = (one - qu) * below, r = qu * above   // both <= 2^20 · 2^42 = 2^62
            out.append(l >= r ? l - r : r - l)
            below += x
        }
        return out
    }

    /// One draw of the exponential mechanism over the cells (see the type): the index of the
    /// released cell.
    public static func sample<R: RandomWords>(counts: [Int64], qUnits: UInt64, epsilon: Epsilon, using rng: inout R) throws -> Int {
        let s = try scores(counts: counts, qUnits: qUnits)
        guard let best = s.min(), !s.isEmpty else { throw DPParameterError("bins", "no cells") }
        let n = UInt64(s.count)
        while true {
            let j = Int(DiscreteLaplace.uniform(n, &rng))
            if acceptExp(units: epsilon.noiseUnits, difference: s[j] - best, using: &rng) { return j }
        }
    }

    /// Bernoulli(exp(-units·difference / 2^41)), exactly: the 128-bit numerator splits into a
    /// whole part w (w Bernoulli(exp(-1)) draws, stopping at the first failure) and a remainder
    /// r < 2^41 (Bernoulli(exp(-r/2^41))).
    static func acceptExp<R: RandomWords>(units: UInt64, difference: UInt64, using rng: inout R) -> Bool {
        let p = units.multipliedFullWidth(by: difference)   // (high, low)
        let shift: UInt64 = 41
        let remainder = p.low & ((1 << shift) - 1)
        // whole = p >> 41, as (high >> 41, (high << 23) | (low >> 41)).
        var wholeHigh = p.high >> shift
        var wholeLow = (p.high << (64 - shift)) | (p.low >> shift)
        while wholeHigh != 0 || wholeLow != 0 {
            if !DiscreteLaplace.bernoulliExp(1, 1, &rng) { return false }
            if wholeLow == 0 { wholeHigh -= 1 }
            wholeLow &-= 1
        }
        return DiscreteLaplace.bernoulliExpAtMostOne(remainder, 1 << shift, &rng)
    }

    /// The 1 - alpha bound on how much worse than the best cell's score the released one's is, in
    /// values: (2/ε')·ln(bins/alpha).
    public static func rankError(epsilon: Epsilon, bins: Int, alpha: Double = 0.05) -> Double {
        2 / epsilon.noiseValue * log(Double(max(1, bins)) / alpha)
    }
}
