public import VaultCrypto

/// A source of uniformly random 64-bit words.
public protocol RandomWords {
    mutating func next() -> UInt64
}

/// Random words from OpenSSL's CSPRNG (`RAND_bytes`), drawn 4 KiB at a time: one `RAND_bytes`
/// call costs about a microsecond whatever its size, and a noise sample needs several words.
/// Consumed words are zeroed in the buffer at every refill and when the source is freed, since
/// the noise they made must stay secret. One instance per query; not shared between threads.
public final class CSPRNGWords: RandomWords {
    private var buffer: [UInt64]
    private var index: Int

    public init(words: Int = 512) {
        buffer = [UInt64](repeating: 0, count: words)
        index = words
    }

    deinit { clear() }

    private func clear() {
        buffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    public func next() -> UInt64 {
        if index == buffer.count {
            clear()
            buffer.withUnsafeMutableBytes { SecureRandom.fill($0) }
            index = 0
        }
        let w = buffer[index]
        buffer[index] = 0
        index += 1
        return w
    }
}

extension CSPRNGWords {
    // `RandomWords` requires `mutating`; a class satisfies it without copying.
}

/// One discrete Laplace sample: an exact signed integer, its magnitude in 128 bits
/// (`high` * 2^64 + `low`). The sampler computes it without any wrap-around (see
/// `DiscreteLaplace.sampleNoise`); a release adds it to an exact sum with `added(to:)`.
public struct NoiseSample: Sendable, Equatable {
    public var negative: Bool
    public var high: UInt64
    public var low: UInt64

    public init(negative: Bool, high: UInt64, low: UInt64) {
        self.negative = negative && (high != 0 || low != 0)
        self.high = high
        self.low = low
    }

    /// The sample as an `Int64`, nil when it does not fit.
    public var int64: Int64? {
        guard high == 0 else { return nil }
        if negative { return low <= UInt64(1) << 63 ? Int64(truncatingIfNeeded: 0 &- low) : nil }
        return low <= UInt64(Int64.max) ? Int64(low) : nil
    }

    /// Whether this sample is at least `c`, compared exactly.
    public func isAtLeast(_ c: Int64) -> Bool {
        if let n = int64 { return n >= c }
        return !negative   // beyond Int64: above every c when positive, below every c when negative
    }

    /// `exact + self` as a Double: the integer sum is formed exactly (sign and 128-bit
    /// magnitude, no wrap-around) and then converted, so the Double is a fixed function of the
    /// exact noisy integer (post-processing). Below 2^53 in magnitude the conversion is exact.
    public func added(to exact: Int64) -> Double {
        if let n = int64 {
            let (sum, overflow) = exact.addingReportingOverflow(n)
            if !overflow { return Double(sum) }
        }
        // Sign-magnitude addition in 128 bits: |exact| <= 2^63, and |self| < 2^124 for every scale
        // a release uses (t <= 2^60, V < 2^64), so the magnitude of the sum stays below 2^128.
        let a = (negative: exact < 0, high: UInt64(0), low: exact.magnitude)
        let b = (negative: negative, high: high, low: low)
        var r: (negative: Bool, high: UInt64, low: UInt64)
        if a.negative == b.negative {
            let (lo, carry) = a.low.addingReportingOverflow(b.low)
            r = (a.negative, a.high &+ b.high &+ (carry ? 1 : 0), lo)
        } else {
            // Subtract the smaller magnitude from the larger.
            let aBigger = (a.high, a.low) >= (b.high, b.low)
            let (x, y) = aBigger ? (a, b) : (b, a)
            let (lo, borrow) = x.low.subtractingReportingOverflow(y.low)
            r = (x.negative, x.high &- y.high &- (borrow ? 1 : 0), lo)
        }
        let magnitude = Double(r.high) * 18_446_744_073_709_551_616.0 + Double(r.low)
        return r.negative ? -magnitude : magnitude
    }
}

/// Exact sampling of the discrete Laplace distribution (two-sided geometric) with rational
/// scale, after Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy"
/// (NeurIPS 2020), Algorithms 1 and 2. Only integer arithmetic on uniformly random integers:
/// no floating point anywhere, so none of the weaknesses Mironov (CCS 2012) found in naive
/// floating-point Laplace sampling.
///
/// `sampleNoise(scaleNumerator: t, scaleDenominator: s)` returns Y with
/// `P(Y = y) = (1 - p) / (1 + p) * p^|y|`, `p = exp(-s / t)`, i.e. scale `t / s`, for every
/// t, s in 1...2^64 - 1: no step can wrap around (docs/differential-privacy.md, "No
/// wrap-around"). The loop counters (k, V) are 64-bit and grow by one per iteration, so they
/// cannot overflow in any run of fewer than 2^64 iterations.
public struct DiscreteLaplace {
    public init() {}

    /// A uniform integer in `0..<n` (n > 0), by rejection: no modulo bias.
    @inline(__always)
    static func uniform<R: RandomWords>(_ n: UInt64, _ rng: inout R) -> UInt64 {
        let threshold = (0 &- n) % n
        while true {
            let r = rng.next()
            if r >= threshold { return r % n }
        }
    }

    /// Bernoulli(num / den), exact (0 <= num <= den, den > 0).
    @inline(__always)
    static func bernoulli<R: RandomWords>(_ num: UInt64, _ den: UInt64, _ rng: inout R) -> Bool {
        uniform(den, &rng) < num
    }

    /// Bernoulli(exp(-num / den)), exact (CKS Algorithm 1).
    static func bernoulliExp<R: RandomWords>(_ num: UInt64, _ den: UInt64, _ rng: inout R) -> Bool {
        var n = num
        // exp(-γ) = exp(-1)^floor(γ) * exp(-(γ - floor(γ))).
        while n > den {
            if !bernoulliExpAtMostOne(1, 1, &rng) { return false }
            n -= den
        }
        return bernoulliExpAtMostOne(n, den, &rng)
    }

    /// Bernoulli(exp(-γ)) for γ = num/den in [0, 1]: draw A_k ~ Bernoulli(γ / k) for
    /// k = 1, 2, ... until one is 0; return whether that k is odd.
    ///
    /// A_k is drawn as Bernoulli(num/den) AND Bernoulli(1/k), two independent exact draws whose
    /// conjunction has probability exactly γ/k: no product den·k is formed, so nothing can
    /// overflow for any den (an earlier version formed den·k and stopped when it overflowed,
    /// which for den near 2^62 cut the series off with probability up to 1/6).
    static func bernoulliExpAtMostOne<R: RandomWords>(_ num: UInt64, _ den: UInt64, _ rng: inout R) -> Bool {
        var k: UInt64 = 1
        while bernoulli(num, den, &rng) && (k == 1 || uniform(k, &rng) == 0) {
            k += 1   // P(reaching k) = γ^(k-1)/(k-1)!: k never comes near 2^64
        }
        return k % 2 == 1
    }

    /// One sample with scale t/s (CKS Algorithm 2), exact for every t, s >= 1 (0 is taken as 1;
    /// the release path never passes 0).
    ///
    /// X = U + t·V and Y = floor(X / s) are computed in 128 bits: t·V < 2^128 for every 64-bit
    /// V, so X is never reduced modulo 2^64 (the wrap-around of the old `u &+ t &* v`, which
    /// for t = 2^20·bound happened with probability exp(-ceil(2^44 / bound))).
    public func sampleNoise<R: RandomWords>(scaleNumerator t0: UInt64, scaleDenominator s0: UInt64, using rng: inout R) -> NoiseSample {
        let t = max(1, t0), s = max(1, s0)
        while true {
            let u = Self.uniform(t, &rng)
            guard Self.bernoulliExp(u, t, &rng) else { continue }
            var v: UInt64 = 0
            while Self.bernoulliExp(1, 1, &rng) { v += 1 }   // one iteration per increment: cannot reach 2^64
            // X = U + t*V ~ Geometric(1 - exp(-1/t)), exactly, as high * 2^64 + low.
            let y = Self.geometric(u: u, t: t, v: v, s: s).y
            let negative = Self.uniform(2, &rng) == 1
            if negative && y.high == 0 && y.low == 0 { continue }   // reject -0 so 0 is not counted twice
            return NoiseSample(negative: negative, high: y.high, low: y.low)
        }
    }

    /// X = u + t·v (128 bits) and Y = floor(X / s) (128 bits), exactly. u < t.
    /// X <= (t - 1) + t·(2^64 - 1) < 2^128; Y <= X.
    static func geometric(u: UInt64, t: UInt64, v: UInt64, s: UInt64) -> (x: (high: UInt64, low: UInt64), y: (high: UInt64, low: UInt64)) {
        let p = t.multipliedFullWidth(by: v)
        let (low, carry) = p.low.addingReportingOverflow(u)
        let high = p.high &+ (carry ? 1 : 0)     // t·v + u <= t·2^64 - 1 < 2^128: no carry out
        // Long division of (high, low) by s: the high word first, then the remainder with the low word.
        let qHigh = high / s, r = high % s
        let qLow = s.dividingFullWidth((r, low)).quotient   // r < s: the quotient fits in 64 bits
        return ((high, low), (qHigh, qLow))
    }

    /// One sample as an `Int64`, saturating at Int64.min / Int64.max. For tests and benchmarks
    /// at small scales (where |Y| >= 2^63 has probability below exp(-2^33)); releases use
    /// `sampleNoise`, which never saturates.
    public func sample<R: RandomWords>(scaleNumerator t: UInt64, scaleDenominator s: UInt64, using rng: inout R) -> Int64 {
        let y = sampleNoise(scaleNumerator: t, scaleDenominator: s, using: &rng)
        return y.int64 ?? (y.negative ? .min : .max)
    }
}
