import Foundation
import Testing
@testable import DifferentialPrivacy

/// Issue 23 item 5: quantiles by the exponential mechanism. The sensitivity claim is checked
/// exhaustively (deterministic), the sampler against the exact probabilities and on
/// neighbouring stores with fixed seeds (deterministic outcomes, cannot fail by chance).
@Suite struct QuantileTests {
    /// Adding one subject in any cell (or none) moves every score by at most 1 (2^20 units),
    /// for many data sets and quantiles: the sensitivity the privacy proof uses.
    @Test func theScoreHasSensitivityOne() throws {
        var rng = SplitMix(state: 8)
        for _ in 0..<200 {
            let bins = 1 + Int(rng.next() % 40)
            let counts = (0..<bins).map { _ in Int64(rng.next() % 7) }
            for q in [0.0, 0.1, 0.5, 0.9, 1.0, 0.333] {
                let u = try QuantileMechanism.units(q: q)
                let base = try QuantileMechanism.scores(counts: counts, qUnits: u)
                for k in 0..<bins {
                    var plus = counts
                    plus[k] += 1
                    let moved = try QuantileMechanism.scores(counts: plus, qUnits: u)
                    for j in 0..<bins {
                        let d = base[j] > moved[j] ? base[j] - moved[j] : moved[j] - base[j]
                        #expect(d <= Epsilon.unitsPerOne, "bins \(bins) q \(q) k \(k) j \(j): \(d)")
                    }
                }
            }
        }
    }

    /// The score is |(1-q)·below - q·above| exactly (the test catches a wrong score).
    @Test func scoresAreTheRankDistance() throws {
        let s = try QuantileMechanism.scores(counts: [2, 0, 3, 5], qUnits: try QuantileMechanism.units(q: 0.5))
        // below/above per cell: (0,8) (2,8) (2,5) (5,0): |0.5·b - 0.5·a| · 2^20.
        #expect(s == [4, 3, 1.5, 2.5].map { UInt64($0 * 1_048_576) })
    }

    /// Over 200,000 seeded draws the output frequencies match exp(ε·u/2)/Z (chi-square at p = 0.001).
    @Test func samplesFollowTheExponentialMechanism() throws {
        let counts: [Int64] = [3, 1, 4, 1, 5, 9, 2, 6]
        let u = try QuantileMechanism.units(q: 0.5)
        let eps = try #require(Epsilon(0.5))
        let scores = try QuantileMechanism.scores(counts: counts, qUnits: u)
        let weights = scores.map { exp(-eps.noiseValue * Double($0) / Double(Epsilon.unitsPerOne) / 2) }
        let z = weights.reduce(0, +)
        var rng = SplitMix(state: 31)
        let n = 200_000
        var seen = [Int](repeating: 0, count: counts.count)
        for _ in 0..<n { seen[try QuantileMechanism.sample(counts: counts, qUnits: u, epsilon: eps, using: &rng)] += 1 }
        var stat = 0.0
        for j in counts.indices {
            let e = Double(n) * weights[j] / z
            stat += pow(Double(seen[j]) - e, 2) / e
        }
        #expect(stat < 24.3, "chi-square \(stat) on 7 degrees of freedom")   // p = 0.001 critical value
    }

    /// Neighbouring stores (one subject added at the top of the domain): for every output seen
    /// often enough, the empirical probabilities differ by at most e^ε up to 5 standard errors.
    @Test func neighbouringStoresAreWithinEToTheEpsilon() throws {
        let eps = try #require(Epsilon(1.0))
        let u = try QuantileMechanism.units(q: 0.5)
        let d: [Int64] = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
        var dPrime = d
        dPrime[9] += 1
        var a = [Int](repeating: 0, count: d.count), b = a
        var rng = SplitMix(state: 2026)
        let n = 300_000
        for _ in 0..<n {
            a[try QuantileMechanism.sample(counts: d, qUnits: u, epsilon: eps, using: &rng)] += 1
            b[try QuantileMechanism.sample(counts: dPrime, qUnits: u, epsilon: eps, using: &rng)] += 1
        }
        var worst = 0.0, checked = 0
        for j in d.indices where a[j] >= 2000 && b[j] >= 2000 {
            let ratio = max(Double(a[j]) / Double(b[j]), Double(b[j]) / Double(a[j]))
            let tolerance = 1 + 5 * (2 / Double(min(a[j], b[j]))).squareRoot()
            #expect(ratio <= exp(1.0) * tolerance, "cell \(j): \(ratio)")
            worst = max(worst, ratio)
            checked += 1
        }
        #expect(checked >= 5)
        #expect(worst <= exp(1.0) * 1.05)
    }

    /// The released median of 1,001 values is within the stated rank error in 2,000 seeded runs
    /// (at least 95% of them).
    @Test func theMedianIsWithinTheRankError() throws {
        let counts = (0..<100).map { Int64(($0 * 37) % 19 + 1) }   // about 1,000 values over 100 cells
        let u = try QuantileMechanism.units(q: 0.5)
        let eps = try #require(Epsilon(0.5))
        let scores = try QuantileMechanism.scores(counts: counts, qUnits: u)
        let best = try #require(scores.min())
        let bound = QuantileMechanism.rankError(epsilon: eps, bins: counts.count) * Double(Epsilon.unitsPerOne)
        var rng = SplitMix(state: 4)
        var within = 0
        for _ in 0..<2000 {
            let j = try QuantileMechanism.sample(counts: counts, qUnits: u, epsilon: eps, using: &rng)
            if Double(scores[j] - best) <= bound { within += 1 }
        }
        #expect(within >= 1900, "\(within)")
    }

    /// Absurd weights never hang or trap: exp(-2^40 · 2^62 / 2^41) is drawn exactly (false, fast).
    @Test func hugeExponentsAreExact() {
        var rng = SplitMix(state: 1)
        for _ in 0..<1000 {
            #expect(!QuantileMechanism.acceptExp(units: 1 << 40, difference: 1 << 62, using: &rng))
        }
        #expect(QuantileMechanism.acceptExp(units: 1 << 40, difference: 0, using: &rng))
        #expect(throws: DPParameterError.self) { _ = try QuantileMechanism.units(q: .nan) }
        #expect(throws: DPParameterError.self) { _ = try QuantileMechanism.units(q: 1.5) }
        #expect(QuantileMechanism.bins(lower: 18, upper: 100, integral: true) == 83)
        #expect(QuantileMechanism.bins(lower: 0, upper: 250_000, integral: false) == QuantileMechanism.maxBins)
        #expect(QuantileMechanism.value(bin: 82, bins: 83, lower: 18, upper: 100, integral: true) == 100)
    }
}
