import Foundation

// zCDP releases with the exact discrete Gaussian (docs/differential-privacy.md, "zCDP and the
// discrete Gaussian"). The sampler is Canonne, Kamath & Steinke, "The Discrete Gaussian for
// Differential Privacy" (NeurIPS 2020), Algorithm 3, on top of their Algorithms 1 and 2
// (`DiscreteLaplace`): integer and rational arithmetic only, randomness from the caller's
// `RandomWords` (the CSPRNG in every release).
//
// Privacy (CKS Theorem 4): for f with integer values whose L2 sensitivity is Δ, releasing
// f(x) + Y with Y ~ N_Z(0, σ²) on every coordinate is (Δ² / (2σ²))-zCDP. Composition (Bun and
// Steinke 2016, Lemma 2.3): releases of ρ1- and ρ2-zCDP together are (ρ1 + ρ2)-zCDP, so the
// ledger adds rho. Conversion (ibid., Proposition 1.3): ρ-zCDP implies
// (ρ + 2 sqrt(ρ ln(1/δ)), δ)-DP for every δ > 0. Pure ε-DP implies (ε²/2)-zCDP (ibid.,
// Proposition 1.4): an `--epsilon E` asked of a zCDP purpose spends ρ = E²/2.

/// A zCDP parameter as the mechanism uses it: rho rounded *down* to a multiple of 2^-30
/// (`units / 2^30`), so the noise is never smaller than the rho asked for implies, and the
/// ledger is charged exactly that rounded rho.
public struct Rho: Sendable, Equatable, CustomStringConvertible {
    public static let unitsPerOne: UInt64 = 1 << 30
    /// The largest rho a purpose or a request may name (about epsilon 14 as ε²/2): anything
    /// above is no privacy to speak of, and the ledger form stays below Epsilon's 10^6.
    public static let maximum = 100.0
    /// The smallest: one unit, 2^-30.
    public static let minimum = 1 / Double(unitsPerOne)
    public let units: UInt64

    public init?(_ rho: Double) {
        guard rho.isFinite, rho > 0, rho <= Self.maximum else { return nil }
        let scaled = (rho * Double(Self.unitsPerOne)).rounded(.down)
        guard scaled >= 1 else { return nil }
        units = UInt64(scaled)   // <= 100 * 2^30 < 2^37: exact
    }

    init(units: UInt64) { self.units = units }

    /// rho = ε²/2, the zCDP an ε-DP release has (nil outside the accepted range).
    public init?(fromEpsilon e: Double) {
        guard e.isFinite, e > 0 else { return nil }
        self.init(e * e / 2)
    }

    public var value: Double { Double(units) / Double(Self.unitsPerOne) }
    public var description: String { "\(value)" }

    /// `parts` equal shares, each rounded down (nil below one unit): the shares add up to at most this rho.
    public func split(_ parts: Int) -> Rho? {
        guard parts >= 1 else { return nil }
        let u = units / UInt64(parts)
        return u > 0 ? Rho(units: u) : nil
    }

    /// The ledger keeps rho in the epsilon ledger's integer units (2^-20) under the purpose's
    /// zCDP key (`ledgerKey`): one rho unit (2^-30) is one ledger unit, so the ledger's
    /// "epsilon" of a charge is rho * 2^10 and a limit rho_max * 2^10; sums stay exact integers.
    public static let ledgerScale = Double(Rho.unitsPerOne) / Double(Epsilon.unitsPerOne)   // 1024
    public var ledgerCharge: Epsilon? { Epsilon(Double(units) / Double(Epsilon.unitsPerOne)) }
    /// The ledger row of a zCDP purpose: the purpose's name with a suffix no purpose name can
    /// have (names are [a-z][a-z0-9_]*), so rho and epsilon never add up in one row.
    public static func ledgerKey(purpose: String) -> String { purpose + "#zcdp" }
    /// Whether a ledger row key is a zCDP purpose's (its charges are rho, see `ledgerKey`).
    public static func isLedgerKey(_ key: String) -> Bool { key.hasSuffix("#zcdp") }
    /// The rho of a ledger charge made under a zCDP key (the inverse of `ledgerCharge`).
    public static func value(ofLedgerCharge e: Epsilon) -> Double { Double(e.chargeUnits) / Double(unitsPerOne) }
    /// The audit detail of a zCDP charge: the accountants of both engines record a charge under
    /// a zCDP key with no epsilon and this detail (`rho R`) instead.
    public static func auditDetail(ofLedgerCharge e: Epsilon) -> String { "zcdp rho \(value(ofLedgerCharge: e))" }

    /// The rho an audit entry records for a zCDP charge; nil when it records none. Only the
    /// entries of charging actions count (`query.KIND` but not its `.quote`, and `train`), and
    /// only the detail's last part (separated by "; "), where the budget ledger appends
    /// `auditDetail(ofLedgerCharge:)`: free text earlier in a detail (a consent source, an
    /// erasure reason) cannot pass for a charge.
    public static func charged(action: String?, auditDetail detail: String?) -> Double? {
        guard let action, action == "train" || (action.hasPrefix("query.") && !action.hasSuffix(".quote")),
              let last = detail?.split(separator: ";").last else { return nil }
        let p = last.trimmingCharacters(in: .whitespaces)
        guard p.hasPrefix("zcdp rho "), let v = Double(p.dropFirst("zcdp rho ".count)), v.isFinite, v >= 0 else { return nil }
        return v
    }

    /// The (ε, δ)-DP a ρ-zCDP release has: ε = ρ + 2 sqrt(ρ ln(1/δ)).
    public static func epsilon(rho: Double, delta: Double) -> Double {
        guard rho > 0, delta > 0, delta < 1 else { return rho > 0 ? .infinity : 0 }
        return rho + 2 * (rho * log(1 / delta)).squareRoot()
    }
}

extension Rho {
    /// The largest epsilon on the 2^-20 grid with epsilon²/2 <= this rho, for an epsilon-DP
    /// mechanism (the exponential mechanism of `QuantileMechanism`) run under a zCDP purpose:
    /// pure epsilon-DP implies (epsilon²/2)-zCDP (Bun and Steinke 2016, Proposition 1.4), so a
    /// release at this epsilon is at most rho-zCDP. Exact: epsilon = n / 2^20 with the largest
    /// n such that n² <= units * 2^11 (n²/2^41 <= units/2^30), found in integers after a
    /// floating-point first guess. Nil only when n would be 0 (never for rho >= 2^-30:
    /// sqrt(2^-29) is about 2^-14.5).
    public var pureEpsilon: Epsilon? {
        let bound = units << 11   // units <= 100 * 2^30 < 2^37, so < 2^48
        var n = UInt64(((2 * value).squareRoot() * Double(Epsilon.unitsPerOne)).rounded(.down))
        while n > 0 && n * n > bound { n -= 1 }
        while (n + 1) * (n + 1) <= bound { n += 1 }
        guard n > 0 else { return nil }
        return Epsilon(Double(n) / Double(Epsilon.unitsPerOne))   // n < 2^24: exact, and Epsilon rounds it back to n units
    }

    /// This rho plus `other` (two releases composed), nil above `maximum`.
    public func adding(_ other: Rho) -> Rho? {
        let (u, o) = units.addingReportingOverflow(other.units)
        guard !o, Double(u) <= Self.maximum * Double(Self.unitsPerOne) else { return nil }
        return Rho(units: u)
    }

    /// `parts` times this rho (the total of `parts` equal shares), nil above `maximum`.
    public func times(_ parts: Int) -> Rho? {
        guard parts >= 1 else { return nil }
        let (u, o) = units.multipliedReportingOverflow(by: UInt64(parts))
        guard !o, Double(u) <= Self.maximum * Double(Self.unitsPerOne) else { return nil }
        return Rho(units: u)
    }
}

/// A non-negative integer below 2^256, four little-endian 64-bit limbs: just what the exact
/// Bernoulli(exp(-γ)) of the discrete Gaussian needs for γ's numerator and denominator.
struct U256: Equatable, Comparable {
    var l: (UInt64, UInt64, UInt64, UInt64)

    init(_ x: UInt64) { l = (x, 0, 0, 0) }
    init(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) { l = (a, b, c, d) }

    subscript(i: Int) -> UInt64 {
        get { switch i { case 0: l.0; case 1: l.1; case 2: l.2; default: l.3 } }
        set { switch i { case 0: l.0 = newValue; case 1: l.1 = newValue; case 2: l.2 = newValue; default: l.3 = newValue } }
    }

    static func == (a: U256, b: U256) -> Bool { a.l == b.l }
    static func < (a: U256, b: U256) -> Bool {
        for i in stride(from: 3, through: 0, by: -1) where a[i] != b[i] { return a[i] < b[i] }
        return false
    }

    var isZero: Bool { l == (0, 0, 0, 0) }

    var bitLength: Int {
        for i in stride(from: 3, through: 0, by: -1) where self[i] != 0 { return 64 * i + (64 - self[i].leadingZeroBitCount) }
        return 0
    }

    func bit(_ i: Int) -> Bool { (self[i / 64] >> UInt64(i % 64)) & 1 == 1 }

    /// a * b, nil when the product needs more than 256 bits.
    static func multiply(_ a: U256, _ b: U256) -> U256? {
        var r = [UInt64](repeating: 0, count: 8)
        for i in 0..<4 where a[i] != 0 {
            var carry: UInt64 = 0
            for j in 0..<4 {
                let p = a[i].multipliedFullWidth(by: b[j])
                let (s1, c1) = r[i + j].addingReportingOverflow(p.low)
                let (s2, c2) = s1.addingReportingOverflow(carry)
                r[i + j] = s2
                carry = p.high &+ (c1 ? 1 : 0) &+ (c2 ? 1 : 0)   // p.high <= 2^64 - 2: no wrap
            }
            var k = i + 4
            while carry != 0 && k < 8 {
                let (s, c) = r[k].addingReportingOverflow(carry)
                r[k] = s
                carry = c ? 1 : 0
                k += 1
            }
        }
        guard r[4] == 0, r[5] == 0, r[6] == 0, r[7] == 0 else { return nil }
        return U256(r[0], r[1], r[2], r[3])
    }

    /// a - b for a >= b.
    static func subtract(_ a: U256, _ b: U256) -> U256 {
        var r = U256(0)
        var borrow = false
        for i in 0..<4 {
            let (d1, b1) = a[i].subtractingReportingOverflow(b[i])
            let (d2, b2) = d1.subtractingReportingOverflow(borrow ? 1 : 0)
            r[i] = d2
            borrow = b1 || b2
        }
        return r
    }

    /// self + 1 (callers stay far below 2^256).
    func incremented() -> U256 {
        var s = self
        var i = 0, carry = true
        while carry && i < 4 {
            let (a, o) = s[i].addingReportingOverflow(1)
            s[i] = a
            carry = o
            i += 1
        }
        return s
    }

    /// a * b where the caller has shown the product fits; saturates (all ones) instead of
    /// trapping if it ever did not.
    static func product(_ a: U256, _ b: U256) -> U256 { multiply(a, b) ?? U256(.max, .max, .max, .max) }

    func shiftedLeftOne(orBit bit: Bool) -> U256 {
        var r = U256(0)
        var carry: UInt64 = bit ? 1 : 0
        for i in 0..<4 {
            r[i] = (self[i] << 1) | carry
            carry = self[i] >> 63
        }
        return r
    }

    /// (a / b, a mod b) for 0 < b < 2^255, by binary long division: the remainder is below b
    /// before each shift, so 2r + 1 < 2^256 fits (every caller's b is below 2^150).
    static func divide(_ a: U256, _ b: U256) -> (quotient: U256, remainder: U256) {
        var q = U256(0), r = U256(0)
        for i in stride(from: a.bitLength - 1, through: 0, by: -1) {
            r = r.shiftedLeftOne(orBit: a.bit(i))
            if !(r < b) {
                r = subtract(r, b)
                q[i / 64] |= UInt64(1) << UInt64(i % 64)
            }
        }
        return (q, r)
    }
}

/// The exact discrete Gaussian N_Z(0, σ²), σ² = numerator / 2^denominatorLog2.
public struct DiscreteGaussian: Sendable, Equatable {
    /// σ² = numerator / 2^denominatorLog2, numerator in 1...2^62, denominatorLog2 in 0...20.
    public let numerator: UInt64
    public let denominatorLog2: Int

    /// The largest numerator: σ² <= 2^62 grid units² (σ <= 2^31), so t = floor(σ) + 1 <= 2^31 + 1
    /// and every product of the sampler stays below 2^150 (see `sample`).
    public static let maxNumerator: UInt64 = 1 << 62

    public init?(numerator: UInt64, denominatorLog2: Int) {
        guard numerator >= 1, numerator <= Self.maxNumerator, (0...20).contains(denominatorLog2) else { return nil }
        self.numerator = numerator
        self.denominatorLog2 = denominatorLog2
    }

    public var variance: Double { Double(numerator) / Double(UInt64(1) << UInt64(denominatorLog2)) }
    public var sigma: Double { variance.squareRoot() }

    /// The noise of a ρ-zCDP release of integer sums with L2 sensitivity `l2` (grid units):
    /// σ² = Δ²/(2ρ) = Δ² 2^29 / r for ρ = r / 2^30, rounded *up* to a multiple of 2^-k with the
    /// largest k <= 20 that keeps the numerator <= 2^62. Rounding σ² up only lowers the
    /// privacy loss Δ²/(2σ²) below ρ. Refused (`DPParameterError`, before anything is charged)
    /// when even k = 0 needs σ² > 2^62, i.e. σ above 2^31 grid units: a rho too small for these bounds.
    public static func forRelease(l2 delta: UInt64, rho: Rho) throws -> DiscreteGaussian {
        let d = max(1, delta)
        guard rho.units >= 1 else { throw DPParameterError("rho", "below the 2^-30 resolution") }
        guard let d2 = U256.multiply(U256(d), U256(d)) else { throw DPParameterError("bounds", "sensitivity too large") }
        let r = U256(rho.units)
        // The largest k worth trying: n(k) >= Δ² 2^(29+k) / r >= 2^(b(Δ²) - 1 + 29 + k - b(r)), so
        // k above 63 - b(Δ²) - 29 + b(r) cannot fit 2^62; start there (at most 20).
        let top = max(0, min(20, 63 - d2.bitLength - 29 + U256(rho.units).bitLength + 1))
        for k in stride(from: top, through: 0, by: -1) {
            // Δ² · 2^(29 + k) < 2^(2·64 + 49): fits 256 bits.
            var x = d2
            for _ in 0..<(29 + k) { x = x.shiftedLeftOne(orBit: false) }
            let (q, rem) = U256.divide(x, r)
            // ceil(x / r)
            let n = rem.isZero ? q : q.incremented()
            if n.bitLength <= 63, n[0] <= maxNumerator, let g = DiscreteGaussian(numerator: n[0], denominatorLog2: k) { return g }
        }
        throw DPParameterError("rho", "too small for these bounds: the Gaussian noise would exceed 2^31 grid units (sigma² above 2^62); spend more rho or use narrower --bounds")
    }

    /// floor(sqrt(x)) exactly.
    static func isqrt(_ x: UInt64) -> UInt64 {
        var r = UInt64(Double(x).squareRoot())
        func sq(_ v: UInt64) -> (high: UInt64, low: UInt64) { v.multipliedFullWidth(by: v) }
        while r > 0 && (sq(r).high > 0 || sq(r).low > x) { r -= 1 }
        while true {
            let s = sq(r + 1)
            if s.high == 0 && s.low <= x { r += 1 } else { break }
        }
        return r
    }

    /// One sample (CKS Algorithm 3): t = floor(σ) + 1; repeat Y ~ DiscreteLaplace(t),
    /// C ~ Bernoulli(exp(-(|Y| - σ²/t)² / (2σ²))) until C = 1; return Y.
    ///
    /// With σ² = n/d (d = 2^k): γ = (|Y| t d - n)² / (2 n d t²), formed exactly in 256 bits:
    /// |Y| < 2^64, t <= 2^31 + 1, d <= 2^20 give |Y| t d < 2^116, so the numerator is below
    /// 2^232 and the denominator 2 n d t² below 2^1 · 2^62 · 2^20 · 2^64 = 2^147.
    /// A Laplace draw with |Y| >= 2^64 (probability below exp(-2^64 / (2^31 + 1)) = exp(-2^32)
    /// or so) is treated as C = 0: its acceptance probability exp(-γ) is below exp(-2^63), so
    /// the output law differs from N_Z(0, σ²) by less than exp(-2^63) in total variation.
    public func sample<R: RandomWords>(using rng: inout R) -> NoiseSample {
        let n = numerator, k = denominatorLog2
        let d = UInt64(1) << UInt64(k)
        let t = Self.isqrt(n >> UInt64(k)) + 1     // floor(sqrt(n/d)) = isqrt(floor(n/d))
        let laplace = DiscreteLaplace()
        // den = 2 n d t²
        let den = U256.product(U256.product(U256(n), U256(d)), U256.product(U256(t), U256(t))).shiftedLeftOne(orBit: false)
        while true {
            let y = laplace.sampleNoise(scaleNumerator: t, scaleDenominator: 1, using: &rng)
            guard y.high == 0 else { continue }
            let a = U256.product(U256.product(U256(y.low), U256(t)), U256(d))    // |Y| t d < 2^116
            let diff = a < U256(n) ? U256.subtract(U256(n), a) : U256.subtract(a, U256(n))
            // Small numbers (the usual case): the same exact Algorithm 1 on 64-bit integers.
            if diff.bitLength <= 32 && den.bitLength <= 64 {
                if DiscreteLaplace.bernoulliExp(diff[0] * diff[0], den[0], &rng) { return y }
                continue
            }
            let num = U256.product(diff, diff)                                   // < 2^232
            if Self.bernoulliExp(num, den, &rng) { return y }
        }
    }

    /// One sample as an Int64 (saturating; for tests and benchmarks).
    public func sampleInt<R: RandomWords>(using rng: inout R) -> Int64 {
        let y = sample(using: &rng)
        return y.int64 ?? (y.negative ? .min : .max)
    }

    /// A uniform integer in [0, n) (n > 0), by rejection on the bit length: exact.
    static func uniform<R: RandomWords>(below n: U256, _ rng: inout R) -> U256 {
        let bits = n.bitLength
        let words = (bits + 63) / 64
        let topBits = bits - 64 * (words - 1)
        let mask: UInt64 = topBits == 64 ? .max : (UInt64(1) << UInt64(topBits)) - 1
        while true {
            var x = U256(0)
            for i in 0..<words { x[i] = rng.next() }
            x[words - 1] &= mask
            if x < n { return x }
        }
    }

    /// Bernoulli(exp(-num/den)), exact (CKS Algorithm 1 on 256-bit rationals): with
    /// num = q den + r, exp(-num/den) = exp(-1)^q exp(-r/den): q draws of Bernoulli(exp(-1)),
    /// stopping at the first 0, then Bernoulli(exp(-r/den)) for r/den in [0, 1).
    static func bernoulliExp<R: RandomWords>(_ num: U256, _ den: U256, _ rng: inout R) -> Bool {
        var (q, r) = U256.divide(num, den)
        while !q.isZero {
            if !DiscreteLaplace.bernoulliExpAtMostOne(1, 1, &rng) { return false }
            q = U256.subtract(q, U256(1))
        }
        // Bernoulli(exp(-γ)), γ = r/den in [0, 1): A_k ~ Bernoulli(γ) AND Bernoulli(1/k) until one is 0.
        var kk: UInt64 = 1
        while uniform(below: den, &rng) < r && (kk == 1 || DiscreteLaplace.uniform(kk, &rng) == 0) {
            kk += 1
        }
        return kk % 2 == 1
    }

    /// The exact probability mass of N_Z(0, σ²) at y, up to the normalising constant's
    /// floating-point sum (for tests and intervals): exp(-y²/2σ²) / Σ_z exp(-z²/2σ²).
    public func probabilities(upTo m: Int) -> [Double] {
        let s2 = variance
        let top = max(m, Int((40 * sigma).rounded(.up)) + 2)
        var w = (0...top).map { exp(-Double($0) * Double($0) / (2 * s2)) }
        let z = w[0] + 2 * w.dropFirst().reduce(0, +)
        for i in w.indices { w[i] /= z }
        return Array(w[0...m])
    }

    /// The smallest integer k with P(|Y| > k) <= alpha. σ <= 2048: from the law itself (the
    /// floating-point sum of exp(-y²/2σ²) over |y| <= 40σ + 2; the mass beyond is below
    /// e^-800). Above: from the continuous normal with the continuity correction,
    /// P(|Y| > k) = erfc((k + 1/2) / (σ sqrt 2)), which the discrete law matches to a relative
    /// e^(-2π²σ²) (Poisson summation; CKS, Fact 18 and the discussion after it).
    public func halfWidthUnits(alpha: Double) -> Int64 {
        guard alpha > 0 else { return .max }
        guard alpha < 1 else { return 0 }
        let s = sigma
        if s <= 2048 {
            let top = Int((40 * s).rounded(.up)) + 2
            let w = (0...top).map { exp(-Double($0) * Double($0) / (2 * variance)) }
            let z = w[0] + 2 * w.dropFirst().reduce(0, +)
            // tail(k) = 2 Σ_{y > k} w(y) / z, decreasing in k
            var suffix = 0.0
            var result = top
            for k in stride(from: top, through: 0, by: -1) {
                // suffix = Σ_{y > k} w(y)
                if 2 * suffix / z > alpha { break }
                result = k
                suffix += w[k]
            }
            return Int64(result)
        }
        func tail(_ k: Double) -> Double { erfc((k + 0.5) / (s * 2.0.squareRoot())) }
        var lo = 0.0, hi = (40 * s).rounded(.up)
        if tail(lo) <= alpha { return 0 }
        while hi - lo > 1 {
            let mid = ((lo + hi) / 2).rounded(.down)
            if tail(mid) <= alpha { hi = mid } else { lo = mid }
        }
        return Int64(hi)
    }
}

/// The two-sided standard normal quantile z with P(|N(0,1)| > z) = alpha (bisection on erfc).
public func normalTwoSidedQuantile(alpha: Double) -> Double {
    guard alpha > 0 else { return .infinity }
    guard alpha < 1 else { return 0 }
    var lo = 0.0, hi = 40.0
    for _ in 0..<200 {
        let mid = (lo + hi) / 2
        if erfc(mid / 2.0.squareRoot()) > alpha { lo = mid } else { hi = mid }
        if hi - lo < 1e-12 { break }
    }
    return hi
}

extension BoundedSum {
    /// The Gaussian twin of `release`: adds N_Z(0, σ²) noise (σ² from `DiscreteGaussian.forRelease`
    /// for L2 sensitivity `l2` and `rho`) to every exact integer sum. `scale` of the values is σ
    /// times the grid; `halfWidth` the exact discrete-Gaussian quantile at 1 - alpha times the grid.
    public static func releaseGaussian<R: RandomWords>(sums: [Int64], l2: UInt64, rho: Rho, grid: Double, alpha: Double = 0.05,
                                                       using rng: inout R) throws -> [NoisyValue] {
        _ = try scaleNumerator(bound: l2)   // the same 2^40 cap on one subject's contribution
        let g = try DiscreteGaussian.forRelease(l2: l2, rho: rho)
        let k = Double(g.halfWidthUnits(alpha: alpha))
        return sums.map { exact in
            let noise = g.sample(using: &rng)
            return NoisyValue(value: noise.added(to: exact) * grid, scale: g.sigma * grid, halfWidth: k * grid)
        }
    }
}

/// The joint interval of a mean released with Gaussian noise: the m in [-r, r] with
/// |Ŝ - m Ĉ| <= z_α sqrt(a² + m² b²) (a, b the noise σ of sum and count; the normal law of
/// the difference of the two discrete Gaussians, which matches it to a relative e^(-2π²σ²)
/// at the σ a mean's coordinates have). Nil when no m is accepted.
public enum GaussianJointInterval {
    public static func interval(sum: Double, count: Double, a: Double, b: Double, r: Double, alpha: Double) -> (Double, Double)? {
        guard r > 0 else { return (0, 0) }
        let z = normalTwoSidedQuantile(alpha: alpha)
        func accepts(_ m: Double) -> Bool { abs(sum - m * count) <= z * (a * a + m * m * b * b).squareRoot() }
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

// MARK: - Queries under zCDP

extension BudgetState {
    /// The state of a zCDP purpose from its ledger row (`Rho.ledgerKey`), whose amounts are
    /// rho * 2^10 in epsilon units: `limit`, `spent` and `left` become rho; `conversionDelta`
    /// is the delta the (epsilon, delta) figures use.
    public func asRho(limit rhoLimit: Double, conversionDelta: Double) -> BudgetState {
        var s = BudgetState(purpose: purpose, limit: rhoLimit, spent: spent / Rho.ledgerScale, periodStart: periodStart, deltaLimit: 0, deltaSpent: 0)
        s.zcdp = true
        s.conversionDelta = conversionDelta
        return s
    }
    /// zCDP: the (epsilon, delta) equivalents of the rho limit and of the rho spent, at `conversionDelta`.
    public var epsilonEquivalentLimit: Double { Rho.epsilon(rho: limit, delta: conversionDelta) }
    public var epsilonEquivalentSpent: Double { Rho.epsilon(rho: spent, delta: conversionDelta) }
}

extension QueryEngine {
    /// The coordinates of a query under zCDP and the rho share of each: the plan of `plan`
    /// (same coordinates and bounds), all of rho for count, sum and histogram, rho/2 for each
    /// of a mean's sum and count. A coordinate's L2 sensitivity is its bound: one coordinate
    /// per group, and a subject is in one group. Every share's noise is checked
    /// (`DiscreteGaussian.forRelease`) here, before anything is charged.
    public static func planGaussian(_ q: DPQuery, rho: Rho) throws -> [(Coordinate, Rho)] {
        var probe = q
        if let one = Epsilon(1) { probe.epsilon = one }   // the Laplace plan's epsilon split is not used here
        let coordinates = try plan(probe).map(\.0)
        var share = rho
        if coordinates.count == 2 {
            guard let half = rho.split(2) else {
                throw DPParameterError("rho", "a mean releases a sum and a count with rho/2 each, and each needs at least 2^-30")
            }
            share = half
        }
        for c in coordinates { _ = try DiscreteGaussian.forRelease(l2: c.bound, rho: share) }
        return coordinates.map { ($0, share) }
    }

    /// Runs a query under zCDP: plan (refusals before any charge), charge `rho` on the ledger
    /// row `ledgerKey` against `rhoLimit` (in the ledger's units, see `Rho.ledgerCharge`), exact
    /// sums, discrete Gaussian noise. The result's budget is in rho (`BudgetState.asRho`).
    public func runGaussian(_ q: DPQuery, rho: Rho, ledgerKey: String, rhoLimit: Double, conversionDelta: Double,
                            periodSeconds: Int) throws -> QueryResult {
        let plan = try Self.planGaussian(q, rho: rho)
        guard let charge = rho.ledgerCharge else { throw DPParameterError("rho", "out of range") }
        let ledger = try accountant.spend(purpose: ledgerKey, epsilon: charge, limit: rhoLimit * Rho.ledgerScale, periodSeconds: periodSeconds)
        var request = AggregateRequest(consentPurpose: q.consentPurpose, predicates: q.predicates, groupBy: q.groupBy, coordinates: plan.map(\.0))
        request.objectionPurpose = q.objectionPurpose
        let sums = try source.boundedSums(request)
        var rng = CSPRNGWords()
        return try Self.releaseGaussian(q, plan: plan, rho: rho, conversionDelta: conversionDelta, sums: sums,
                                        budget: ledger.asRho(limit: rhoLimit, conversionDelta: conversionDelta), using: &rng)
    }

    /// The noisy answer of a planned zCDP query from its exact sums (tests pass a seeded source).
    public static func releaseGaussian<R: RandomWords>(_ q: DPQuery, plan: [(Coordinate, Rho)], rho: Rho, conversionDelta: Double,
                                                       sums: [String: [Int64]], budget: BudgetState, using rng: inout R) throws -> QueryResult {
        let keys: [String] = q.groupBy?.domain ?? [""]
        let twoParts = plan.count == 2
        let alpha = 1 - q.confidence
        var released: [(String, ReleasedValue)] = []
        var mainScale = 0.0
        var counts: [NoisyValue] = []
        var wanted: [Double] = []
        var noises: [(g: DiscreteGaussian, halfWidth95: Double)] = []
        for (c, share) in plan {
            let g = try DiscreteGaussian.forRelease(l2: c.bound, rho: share)
            wanted.append(Double(g.halfWidthUnits(alpha: alpha)) * c.grid)
            noises.append((g, Double(g.halfWidthUnits(alpha: 0.05))))
        }
        for key in keys {
            var exact = sums[key] ?? []
            if exact.count != plan.count { exact = [Int64](repeating: 0, count: plan.count) }
            var noisy: [NoisyValue] = []
            for (i, (coordinate, _)) in plan.enumerated() {
                let (g, k) = noises[i]
                let noise = g.sample(using: &rng)
                noisy.append(NoisyValue(value: noise.added(to: exact[i]) * coordinate.grid, scale: g.sigma * coordinate.grid, halfWidth: k * coordinate.grid))
            }
            mainScale = noisy[0].scale
            switch plan[twoParts ? 1 : 0].0 {
            case .subjects, .nonNull, .eventCount: counts.append(noisy[twoParts ? 1 : 0])
            default: break
            }
            switch (twoParts, plan[0].0) {
            case let (true, .attribute(_, lo, hi, c, _)), let (true, .events(_, lo, hi, c, _, _)):
                var v = gaussianMean(sum: noisy[0], count: noisy[1], center: c, lower: lo, upper: hi, alpha: 0.05)
                v.interval = abs(alpha - 0.05) < 1e-12 ? v.ci95 : gaussianMean(sum: noisy[0], count: noisy[1], center: c, lower: lo, upper: hi, alpha: alpha).ci95
                released.append((key, v))
            default:
                let n = noisy[0]
                released.append((key, ReleasedValue(value: n.value, ci95: (n.value - n.halfWidth, n.value + n.halfWidth),
                                                    interval: (n.value - wanted[0], n.value + wanted[0]))))
            }
        }
        var bounds: [String: Double] = [:]
        for (i, (c, _)) in plan.enumerated() { bounds["coordinate_\(i)"] = Double(c.bound) * c.grid }
        let grouped = q.groupBy != nil
        var result = QueryResult(value: grouped ? nil : released.first?.1, groups: grouped ? released : [],
                                 epsilon: Rho.epsilon(rho: rho.value, delta: conversionDelta), scale: mainScale, budget: budget,
                                 contributionBounds: bounds)
        result.confidence = q.confidence
        result.rho = rho.value
        result.conversionDelta = conversionDelta
        if !counts.isEmpty {
            result.noisyCount = counts.reduce(0) { $0 + $1.value }
            result.noisyCountScale = counts.reduce(0) { $0 + $1.scale * $1.scale }.squareRoot()
        }
        return result
    }

    /// mean = centre + S / C clamped to the bounds, with the Gaussian joint interval.
    static func gaussianMean(sum s: NoisyValue, count c: NoisyValue, center: Double, lower: Double, upper: Double, alpha: Double) -> ReleasedValue {
        func clamp(_ x: Double) -> Double { min(upper, max(lower, x)) }
        let value = clamp(center + s.value / max(c.value, 1))
        let r = (upper - lower) / 2
        guard let (lo, hi) = GaussianJointInterval.interval(sum: s.value, count: c.value, a: s.scale, b: c.scale, r: r, alpha: alpha) else {
            return ReleasedValue(value: value, ci95: (lower, upper))
        }
        return ReleasedValue(value: value, ci95: (clamp(center + lo), clamp(center + hi)))
    }

    /// The quote of a zCDP query: rho, its (epsilon, delta) form, σ and half-widths; nothing read or charged.
    public static func quoteGaussian(_ q: DPQuery, rho: Rho, conversionDelta: Double) throws -> QueryQuote {
        let plan = try planGaussian(q, rho: rho)
        let alpha = 1 - q.confidence
        var coords: [(scale: Double, halfWidth: Double)] = []
        for (c, share) in plan {
            let g = try DiscreteGaussian.forRelease(l2: c.bound, rho: share)
            coords.append((g.sigma * c.grid, Double(g.halfWidthUnits(alpha: alpha)) * c.grid))
        }
        var quote = QueryQuote(epsilon: Rho.epsilon(rho: rho.value, delta: conversionDelta), scale: coords[0].scale, confidence: q.confidence,
                               halfWidth: coords[0].halfWidth, coordinates: coords)
        quote.delta = conversionDelta
        quote.rho = rho.value
        if plan.count == 2 {
            quote.halfWidth = nil
            let a = coords[0].scale, b = coords[1].scale
            let r = Double(plan[0].0.bound) * plan[0].0.grid / Double(max(1, plan[1].0.bound))
            quote.meanHalfWidthTimesCount = normalTwoSidedQuantile(alpha: alpha) * (a * a + r * r * b * b).squareRoot()
        }
        return quote
    }

    /// A mean's rho for `accuracy` given `countLowerBound` n (> 0): the least rho on the 2^-30
    /// grid (at most `Rho.maximum`) whose quoted Gaussian joint half-width at the worst-case mean,
    /// z·sqrt(a² + r²b²)/n (`quoteGaussian`'s `meanHalfWidthTimesCount` over n; a, b the σ of
    /// the sum and the count at rho/2 each, r the bounds' half-span), is at most `accuracy`.
    /// Non-increasing in rho (σ² = Δ²/2ρ rounded up), so a bisection over the units finds it.
    public static func meanRho(forAccuracy accuracy: Double, _ q: DPQuery, countLowerBound n: Double) throws -> Rho {
        guard accuracy.isFinite, accuracy > 0 else { throw DPParameterError("accuracy", "must be a positive number") }
        guard q.kind == .mean, n.isFinite, n > 0 else { throw DPParameterError("accuracy", "needs a positive count") }
        var probe = q
        if let one = Epsilon(1) { probe.epsilon = one }
        let coordinates = try plan(probe).map(\.0)
        guard coordinates.count == 2 else { throw DPParameterError("accuracy", "meanRho is for means") }
        let z = normalTwoSidedQuantile(alpha: 1 - q.confidence)
        let r = Double(coordinates[0].bound) * coordinates[0].grid / Double(max(1, coordinates[1].bound))
        func fits(_ units: UInt64) -> Bool {
            guard let half = Rho(units: units).split(2),
                  let gs = try? DiscreteGaussian.forRelease(l2: coordinates[0].bound, rho: half),
                  let gc = try? DiscreteGaussian.forRelease(l2: coordinates[1].bound, rho: half) else { return false }
            let a = gs.sigma * coordinates[0].grid, b = gc.sigma * coordinates[1].grid
            return z * (a * a + r * r * b * b).squareRoot() / n <= accuracy
        }
        var hi = UInt64(Rho.maximum * Double(Rho.unitsPerOne))
        guard fits(hi) else { throw DPParameterError("accuracy", "not reachable: even rho \(Rho.maximum) gives a wider interval") }
        var lo: UInt64 = 0
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if fits(mid) { hi = mid } else { lo = mid }
        }
        return Rho(units: hi)
    }

    /// The smallest rho (a multiple of 2^-30, at most `Rho.maximum`) whose interval half-width
    /// at the query's confidence is at most `accuracy`, for count, sum and histogram: the
    /// half-width is non-increasing in rho, so a bisection over the units finds the least.
    public static func rho(forAccuracy accuracy: Double, _ q: DPQuery) throws -> Rho {
        guard accuracy.isFinite, accuracy > 0 else { throw DPParameterError("accuracy", "must be a positive number") }
        var probe = q
        if let one = Epsilon(1) { probe.epsilon = one }
        let coordinates = try plan(probe).map(\.0)
        guard coordinates.count == 1, let c = coordinates.first else {
            throw DPParameterError("accuracy", "a mean under zCDP is asked for with --rho (or --epsilon), not --accuracy")
        }
        let alpha = 1 - q.confidence
        func fits(_ units: UInt64) -> Bool {
            guard let g = try? DiscreteGaussian.forRelease(l2: c.bound, rho: Rho(units: units)) else { return false }
            return Double(g.halfWidthUnits(alpha: alpha)) * c.grid <= accuracy
        }
        var hi = UInt64(Rho.maximum * Double(Rho.unitsPerOne))
        guard fits(hi) else { throw DPParameterError("accuracy", "not reachable: even rho \(Rho.maximum) gives a wider interval") }
        var lo: UInt64 = 0   // fits(lo) false or lo = 0
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if fits(mid) { hi = mid } else { lo = mid }
        }
        return Rho(units: hi)
    }
}
