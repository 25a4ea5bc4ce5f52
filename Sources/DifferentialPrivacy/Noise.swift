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

/// Exact sampling of the discrete Laplace distribution (two-sided geometric) with rational
/// scale, after Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy"
/// (NeurIPS 2020), Algorithms 1 and 2. Only integer arithmetic on uniformly random integers:
/// no floating point anywhere, so none of the weaknesses Mironov (CCS 2012) found in naive
/// floating-point Laplace sampling.
///
/// `sample(scaleNumerator: t, scaleDenominator: s)` returns Y with
/// `P(Y = y) = (1 - p) / (1 + p) * p^|y|`, `p = exp(-s / t)`, i.e. scale `t / s`.
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
    static func bernoulliExpAtMostOne<R: RandomWords>(_ num: UInt64, _ den: UInt64, _ rng: inout R) -> Bool {
        var k: UInt64 = 1
        while true {
            let (dk, overflow) = den.multipliedReportingOverflow(by: k)
            // γ/k with k beyond 2^64/den has probability < 2^-60 of continuing: treat as 0.
            if overflow || !bernoulli(num, dk, &rng) { break }
            k += 1
        }
        return k % 2 == 1
    }

    /// One sample with scale t/s (CKS Algorithm 2). t, s > 0.
    public func sample<R: RandomWords>(scaleNumerator t: UInt64, scaleDenominator s: UInt64, using rng: inout R) -> Int64 {
        precondition(t > 0 && s > 0, "discrete Laplace needs a positive scale")
        while true {
            let u = Self.uniform(t, &rng)
            guard Self.bernoulliExp(u, t, &rng) else { continue }
            var v: UInt64 = 0
            while Self.bernoulliExp(1, 1, &rng) { v += 1 }
            let x = u &+ t &* v          // X = U + t*V ~ Geometric(1 - exp(-1/t))
            let y = x / s                // Y = floor(X / s) ~ Geometric(1 - exp(-s/t))
            let negative = Self.uniform(2, &rng) == 1
            if negative && y == 0 { continue }   // reject -0 so 0 is not counted twice
            return negative ? -Int64(y) : Int64(y)
        }
    }
}
