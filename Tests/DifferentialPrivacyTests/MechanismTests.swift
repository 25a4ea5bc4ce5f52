import Foundation
import Testing
@testable import DifferentialPrivacy

/// A seeded generator, so the statistical tests are deterministic (the production path uses
/// the CSPRNG; one test below runs it too).
struct SplitMix: RandomWords {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// P(Y = y) for the discrete Laplace with scale t/s.
func pmf(_ y: Int64, t: UInt64, s: UInt64) -> Double {
    let p = exp(-Double(s) / Double(t))
    return (1 - p) / (1 + p) * pow(p, Double(abs(y)))
}

@Suite("Discrete Laplace sampler and the bounded-sum release")
struct MechanismTests {
    /// Pearson chi-square of `n` samples against the exact probabilities, bins |y| <= 12 plus
    /// two tails.
    func chiSquare<R: RandomWords>(t: UInt64, s: UInt64, n: Int, rng: inout R) -> (stat: Double, bins: Int) {
        var counts: [Int64: Int] = [:]
        let d = DiscreteLaplace()
        for _ in 0..<n { counts[d.sample(scaleNumerator: t, scaleDenominator: s, using: &rng), default: 0] += 1 }
        var stat = 0.0, bins = 0
        var tailLo = 0, tailHi = 0
        for (y, c) in counts where abs(y) > 12 { if y < 0 { tailLo += c } else { tailHi += c } }
        let p = exp(-Double(s) / Double(t))
        let tail = pow(p, 13) / (1 + p)   // P(Y >= 13) = P(Y <= -13)
        for y in Int64(-12)...12 {
            let e = Double(n) * pmf(y, t: t, s: s)
            guard e >= 5 else { continue }
            let o = Double(counts[y] ?? 0)
            stat += (o - e) * (o - e) / e
            bins += 1
        }
        for o in [tailLo, tailHi] where Double(n) * tail >= 5 {
            let e = Double(n) * tail
            stat += (Double(o) - e) * (Double(o) - e) / e
            bins += 1
        }
        return (stat, bins)
    }

    @Test(arguments: [(UInt64(1), UInt64(1)), (3, 1), (5, 2), (1 << 20, 1 << 19), (7 << 20, 3_145_728)])
    func empiricalDistributionMatchesTheExactProbabilities(t: UInt64, s: UInt64) {
        var rng = SplitMix(state: 42 &+ t &* 31 &+ s)
        let (stat, bins) = chiSquare(t: t, s: s, n: 200_000, rng: &rng)
        // Critical value of chi-square at p = 0.001 is below 2 * df + 10 for these df (<= 26).
        #expect(bins >= 5)
        #expect(stat < Double(2 * (bins - 1) + 10), "chi-square \(stat) over \(bins) bins")
    }

    @Test func theTestCatchesAWrongScale() {
        // Sampling with scale 2 but testing against scale 1 must fail: the test can fail.
        var rng = SplitMix(state: 7)
        var counts: [Int64: Int] = [:]
        for _ in 0..<50_000 { counts[DiscreteLaplace().sample(scaleNumerator: 2, scaleDenominator: 1, using: &rng), default: 0] += 1 }
        var stat = 0.0
        for y in Int64(-5)...5 {
            let e = 50_000 * pmf(y, t: 1, s: 1)
            stat += pow(Double(counts[y] ?? 0) - e, 2) / e
        }
        #expect(stat > 1000)
    }

    @Test func csprngPathHasTheRightMeanAndVariance() {
        var rng = CSPRNGWords()
        let t: UInt64 = 4, s: UInt64 = 1   // scale 4
        let n = 100_000
        var sum = 0.0, sq = 0.0
        for _ in 0..<n {
            let y = Double(DiscreteLaplace().sample(scaleNumerator: t, scaleDenominator: s, using: &rng))
            sum += y
            sq += y * y
        }
        let p = exp(-0.25)
        let variance = 2 * p / ((1 - p) * (1 - p))   // Var of the discrete Laplace
        let mean = sum / Double(n)
        // 6 standard errors: a correct sampler misses with probability 2e-9 (5 was 6e-7); the
        // second moment's 5% is 7 of its standard errors (a Chernoff bound gives < 1e-10).
        #expect(abs(mean) < 6 * (variance / Double(n)).squareRoot())
        #expect(abs(sq / Double(n) - variance) / variance < 0.05)
    }

    @Test func epsilonRoundsNoiseDownAndChargesTheTrueLoss() throws {
        let e = try #require(Epsilon(0.1))
        #expect(e.noiseValue <= 0.1 && e.noiseValue > 0.1 - 1e-6)
        #expect(e.chargeUnits == e.noiseUnits)
        // Ten charges of 0.4 fit a budget of 4.0 exactly.
        #expect(10 * Epsilon(0.4)!.chargeUnits <= UInt64(4.0 * Double(Epsilon.unitsPerOne)))
        #expect(Epsilon(0) == nil && Epsilon(-1) == nil && Epsilon(.nan) == nil && Epsilon(.infinity) == nil)
        let half = try #require(e.split(2))
        #expect(half.noiseUnits * 2 <= e.noiseUnits)
    }

    @Test func intervalHalfWidthIsTheExactQuantile() {
        for (t, s) in [(UInt64(1), UInt64(1)), (10, 1), (1 << 20, 1 << 18)] {
            let k = BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: 0.05)
            let p = exp(-Double(s) / Double(t))
            func tail(_ k: Int64) -> Double { 2 * pow(p, Double(k + 1)) / (1 + p) }   // P(|Y| > k)
            #expect(tail(k) <= 0.05 + 1e-12)
            if k > 0 { #expect(tail(k - 1) > 0.05) }
        }
    }

    @Test func releasedCountsAreUnbiasedAndIntervalsCoverAtLeast95Percent() throws {
        var rng = SplitMix(state: 99)
        let eps = try #require(Epsilon(0.5))
        let truth: Int64 = 1000
        var covered = 0, total = 0.0
        let n = 4000
        for _ in 0..<n {
            let v = try BoundedSum.release(sums: [truth], bound: 1, epsilon: eps, grid: 1, using: &rng)[0]
            total += v.value
            if abs(v.value - Double(truth)) <= v.halfWidth { covered += 1 }
            #expect(v.scale == 2)
        }
        #expect(abs(total / Double(n) - Double(truth)) < 0.3)
        #expect(Double(covered) / Double(n) >= 0.94)
    }

    /// Neighbouring data sets: the sums differ by one subject with the most extreme data (the
    /// full bound). For every output the empirical probabilities may differ by at most e^epsilon,
    /// up to sampling error.
    @Test func neighbouringDataSetsAreIndistinguishableUpToEToTheEpsilon() throws {
        let eps = try #require(Epsilon(1.0))
        let bound: UInt64 = 3
        let n = 300_000
        var a: [Int64: Int] = [:], b: [Int64: Int] = [:]
        var rng = SplitMix(state: 2024)
        for _ in 0..<n {
            a[Int64(try BoundedSum.release(sums: [10], bound: bound, epsilon: eps, grid: 1, using: &rng)[0].value), default: 0] += 1
            b[Int64(try BoundedSum.release(sums: [10 + Int64(bound)], bound: bound, epsilon: eps, grid: 1, using: &rng)[0].value), default: 0] += 1
        }
        var worst = 0.0, checked = 0
        for (o, ca) in a {
            guard let cb = b[o], ca >= 2000, cb >= 2000 else { continue }
            let ratio = max(Double(ca) / Double(cb), Double(cb) / Double(ca))
            // Relative standard error of a ratio of two counts of ~c: about sqrt(2/c); allow 5 sigma.
            let tolerance = 1 + 5 * (2 / Double(min(ca, cb))).squareRoot()
            #expect(ratio <= exp(1.0) * tolerance, "output \(o): ratio \(ratio)")
            worst = max(worst, ratio)
            checked += 1
        }
        #expect(checked >= 10)
        // The bound is tight: far from both centres the ratio approaches e^epsilon.
        #expect(worst > exp(1.0) * 0.85)
    }

    @Test func samplerIsFastEnough() {
        // Not a benchmark (pvbench noise measures it); just that nothing is pathologically slow.
        var rng = CSPRNGWords()
        for _ in 0..<10_000 { _ = DiscreteLaplace().sample(scaleNumerator: 1 << 30, scaleDenominator: 1 << 18, using: &rng) }
    }
}

/// The engine charges the budget before it computes anything.
@Suite struct EngineTests {
    final class Source: AggregateSource, @unchecked Sendable {
        // @unchecked: `calls` is only touched by the test's own thread.
        var calls = 0
        func boundedSums(_ request: AggregateRequest) throws -> [String: [Int64]] {
            calls += 1
            return [request.groupBy == nil ? "" : request.groupBy!.domain[0]: request.coordinates.map { _ in 100 }]
        }
    }

    struct Refusing: BudgetAccountant {
        func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
            throw BudgetExceeded(state: BudgetState(purpose: purpose, limit: limit, spent: limit, periodStart: 0), requested: epsilon.requested)
        }
    }

    struct Granting: BudgetAccountant {
        func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
            BudgetState(purpose: purpose, limit: limit, spent: epsilon.requested, periodStart: 0)
        }
    }

    @Test func refusedBudgetComputesNothing() throws {
        let source = Source()
        let engine = QueryEngine(source: source, accountant: Refusing())
        let q = DPQuery(kind: .count, measure: .subjects, consentPurpose: nil, predicates: [], groupBy: nil, epsilon: Epsilon(1)!)
        #expect(throws: BudgetExceeded.self) { _ = try engine.run(q, purpose: "p", limit: 1, periodSeconds: 1) }
        #expect(source.calls == 0)
    }

    @Test func plansBoundEachSubjectsContribution() throws {
        let e = Epsilon(1)!
        let sum = try QueryEngine.plan(DPQuery(kind: .sum, measure: .attribute(name: "x", lower: -5, upper: 20, integral: true), consentPurpose: nil, predicates: [], groupBy: nil, epsilon: e))
        #expect(sum.count == 1 && sum[0].0.bound == 20)
        let mean = try QueryEngine.plan(DPQuery(kind: .mean, measure: .attribute(name: "age", lower: 18, upper: 100, integral: true), consentPurpose: nil, predicates: [], groupBy: nil, epsilon: e))
        #expect(mean.count == 2 && mean[0].0.bound == 41 && mean[1].0.bound == 1)
        #expect(mean[0].1.noiseUnits + mean[1].1.noiseUnits <= e.noiseUnits)
        let ev = try QueryEngine.plan(DPQuery(kind: .sum, measure: .events(kind: "purchase", lower: 0, upper: 1000, integral: false, maxContributions: 10), consentPurpose: nil, predicates: [], groupBy: nil, epsilon: e))
        if case let .events(_, _, _, _, g, k) = ev[0].0 {
            #expect(k == 10)
            #expect(Double(ev[0].0.bound) * g >= 10 * 1000 * 0.999 && Double(ev[0].0.bound) * g <= 10 * 1000 * 1.001)
        } else { Issue.record("events plan") }
    }

    @Test func meanIsClampedToTheBounds() throws {
        let engine = QueryEngine(source: Source(), accountant: Granting())
        let q = DPQuery(kind: .mean, measure: .attribute(name: "age", lower: 18, upper: 100, integral: true), consentPurpose: nil, predicates: [], groupBy: nil, epsilon: Epsilon(1000)!)
        let r = try engine.run(q, purpose: "p", limit: 1e6, periodSeconds: 1)
        // sum of centred values 100 over count 100: mean = 59 + 1 = 60 (noise is tiny at epsilon 1000).
        let v = try #require(r.value)
        #expect(abs(v.value - 60) < 1)
        #expect(v.ci95.0 >= 18 && v.ci95.1 <= 100)
    }
}
