import Foundation
import Testing
@testable import DifferentialPrivacy

/// Issue 23: accuracy-first epsilon, quotes, and intervals that cover what they say. Every
/// statistical test runs on a fixed seed (`SplitMix`): its outcome is deterministic and cannot
/// fail by chance.
@Suite struct AccuracyTests {
    static let budget = BudgetState(purpose: "p", limit: 1e9, spent: 0, periodStart: 0)

    static func query(_ kind: QueryKind, _ measure: Measure, epsilon: Double, confidence: Double = 0.95,
                      groups: [String]? = nil) -> DPQuery {
        var q = DPQuery(kind: kind, measure: measure, consentPurpose: nil, predicates: [],
                        groupBy: groups.map { ("g", $0) }, epsilon: Epsilon(epsilon)!)
        q.confidence = confidence
        return q
    }

    /// Coverage of `runs` releases of a query whose exact sums are `sums` and whose true value is
    /// `truth`: the share of released intervals (at the query's confidence) holding it.
    static func coverage(_ q: DPQuery, sums: [Int64], truth: Double, runs: Int = 2000, seed: UInt64) throws -> (interval: Double, ci95: Double) {
        var rng = SplitMix(state: seed)
        let plan = try QueryEngine.plan(q)
        var inside = 0, inside95 = 0
        for _ in 0..<runs {
            let r = try QueryEngine.release(q, plan: plan, sums: ["": sums], budget: budget, using: &rng)
            let v = try #require(r.value)
            let i = try #require(v.interval)
            if i.0 <= truth && truth <= i.1 { inside += 1 }
            if v.ci95.0 <= truth && truth <= v.ci95.1 { inside95 += 1 }
        }
        return (Double(inside) / Double(runs), Double(inside95) / Double(runs))
    }

    /// Count, sum and mean over 2,000 runs each: coverage within 1.5 points of the stated level,
    /// at 95% and at 90%. The mean's old interval (extreme ratios over two 97.5% intervals)
    /// covered about 99.5% when it said 95%, so this test fails on it.
    @Test(arguments: [0.95, 0.90])
    func coverageIsTheStatedLevel(confidence: Double) throws {
        // count: 1000 subjects, epsilon 0.05 (scale 20).
        let count = try Self.coverage(Self.query(.count, .subjects, epsilon: 0.05, confidence: confidence),
                                      sums: [1000], truth: 1000, seed: 11)
        // sum of ages in [18, 100] (integral, grid 1, bound 100): exact sum 50,000.
        let sum = try Self.coverage(Self.query(.sum, .attribute(name: "age", lower: 18, upper: 100, integral: true), epsilon: 0.1, confidence: confidence),
                                    sums: [50_000], truth: 50_000, seed: 12)
        // mean of ages: centre 59, grid 1 (span 82 even), 400 subjects whose centred sum is
        // 400 * 21 (true mean 80, near a bound: where the worst case of the interval is tight).
        let mq = Self.query(.mean, .attribute(name: "age", lower: 18, upper: 100, integral: true), epsilon: 0.5, confidence: confidence)
        let mean = try Self.coverage(mq, sums: [400 * 21, 400], truth: 80, seed: 13)
        // A mean at the centre (true mean 59, centred sum 0).
        let centred = try Self.coverage(mq, sums: [0, 400], truth: 59, seed: 14)
        for (what, c) in [("count", count.interval), ("sum", sum.interval), ("mean", mean.interval), ("centred mean", centred.interval)] {
            #expect(abs(c - confidence) <= 0.015, "\(what): covered \(c) at stated \(confidence)")
        }
        for (what, c) in [("count", count.ci95), ("sum", sum.ci95), ("mean", mean.ci95), ("centred mean", centred.ci95)] {
            #expect(abs(c - 0.95) <= 0.015, "\(what): ci95 covered \(c)")
        }
    }

    /// The joint tail: b = 0 is one Laplace (quantile a ln(1/alpha)); a = b the closed form; and
    /// the general formula against its a -> b limit.
    @Test func jointTailIsTheLaplaceDifference() {
        #expect(abs(JointInterval.quantile(alpha: 0.05, a: 3, b: 0) - 3 * log(20)) < 1e-8)   // bisection to a relative 2^-32
        let z = 7.0
        #expect(abs(JointInterval.tail(z, a: 2, b: 2) - exp(-3.5) * (1 + 7.0 / 4)) < 1e-12)
        #expect(abs(JointInterval.tail(z, a: 2, b: 2 * (1 + 1e-4)) - JointInterval.tail(z, a: 2, b: 2)) < 1e-3)
        #expect(JointInterval.tail(z, a: 2, b: 1) == JointInterval.tail(z, a: 1, b: 2))
        // Monte Carlo of |X - Y| (seeded, 200,000 draws of continuous Laplace from uniforms).
        var rng = SplitMix(state: 5)
        func lap(_ b: Double) -> Double {
            let u = (Double(rng.next() >> 11) + 0.5) / 9_007_199_254_740_992.0 - 0.5
            return -b * (u < 0 ? -1 : 1) * log(1 - 2 * abs(u))
        }
        let q = JointInterval.quantile(alpha: 0.05, a: 3, b: 1.5)
        var over = 0
        for _ in 0..<200_000 where abs(lap(3) - lap(1.5)) > q { over += 1 }
        // sd of the share at p = 0.05 over 200,000 draws is 0.00049; 0.003 is 6 sd.
        #expect(abs(Double(over) / 200_000 - 0.05) < 0.003, "\(over)")
    }

    /// The accuracy epsilon is the least on the 2^-20 grid: its half-width is at most A, one
    /// unit less is wider. Count, sum (schema and narrower bounds), 90% and 99%.
    @Test func accuracyEpsilonIsTheSmallestThatReachesIt() throws {
        let cases: [(QueryKind, Measure, Double, Double)] = [
            (.count, .subjects, 10, 0.95),
            (.count, .subjects, 3, 0.99),
            (.sum, .attribute(name: "income", lower: 0, upper: 250_000, integral: false), 50_000, 0.95),
            (.sum, .attribute(name: "income", lower: 0, upper: 5_000, integral: false), 50_000, 0.90),
            (.sum, .events(kind: "purchase", lower: 0, upper: 100, integral: false, maxContributions: 10), 2_000, 0.95),
        ]
        for (kind, measure, a, conf) in cases {
            let q = Self.query(kind, measure, epsilon: 1, confidence: conf)
            let e = try QueryEngine.epsilon(forAccuracy: a, q)
            var at = q; at.epsilon = e
            let hw = try #require(try QueryEngine.quote(at).halfWidth)
            #expect(hw <= a, "\(measure): \(hw) > \(a)")
            var less = q; less.epsilon = Epsilon(Double(e.noiseUnits - 1) / Double(Epsilon.unitsPerOne))!
            #expect(try #require(try QueryEngine.quote(less).halfWidth) > a, "\(measure): epsilon \(e) is not the least")
        }
        // Per-query bounds are the point: the same accuracy costs 50 times less on [0, 5000].
        let wide = try QueryEngine.epsilon(forAccuracy: 50_000, Self.query(.sum, .attribute(name: "i", lower: 0, upper: 250_000, integral: false), epsilon: 1))
        let narrow = try QueryEngine.epsilon(forAccuracy: 50_000, Self.query(.sum, .attribute(name: "i", lower: 0, upper: 5_000, integral: false), epsilon: 1))
        #expect(wide.noiseValue / narrow.noiseValue > 45)
        // Nonsense accuracies are refused with the field named. (Any positive accuracy is
        // reachable: a large enough epsilon makes the discrete half-width 0.)
        for bad in [0, -1, Double.nan, .infinity, -.infinity] {
            let err = #expect(throws: DPParameterError.self) { _ = try QueryEngine.epsilon(forAccuracy: bad, Self.query(.count, .subjects, epsilon: 1)) }
            #expect(err?.field == "accuracy")
        }
    }

    /// A mean's accuracy epsilon: least with worst-case half-width over n counted values <= A;
    /// and a release with it, at a mean sitting on a bound, has an interval no wider than 2A
    /// in at least 95% of 2,000 seeded runs.
    @Test func meanAccuracyEpsilon() throws {
        let q = Self.query(.mean, .attribute(name: "age", lower: 18, upper: 100, integral: true), epsilon: 1)
        let n = 500.0
        let e = try QueryEngine.meanEpsilon(forAccuracy: 2, q, countLowerBound: n)
        var at = q; at.epsilon = e
        #expect(try #require(try QueryEngine.quote(at).meanHalfWidthTimesCount) / n <= 2)
        var less = q; less.epsilon = Epsilon(Double(e.noiseUnits - 2) / Double(Epsilon.unitsPerOne))!
        #expect(try #require(try QueryEngine.quote(less).meanHalfWidthTimesCount) / n > 2)
        var rng = SplitMix(state: 77)
        let plan = try QueryEngine.plan(at)
        var narrow = 0
        for _ in 0..<2000 {
            let v = try #require(try QueryEngine.release(at, plan: plan, sums: ["": [500 * 41, 500]], budget: Self.budget, using: &rng).value)
            if v.ci95.1 - v.ci95.0 <= 4 + 1e-9 { narrow += 1 }
        }
        #expect(narrow >= 1900, "\(narrow)")
        #expect(throws: DPParameterError.self) { _ = try QueryEngine.meanEpsilon(forAccuracy: 2, q, countLowerBound: 0) }
    }

    /// The quote is the release's noise: same scale and half-width as a real release reports.
    @Test func quoteMatchesTheRelease() throws {
        var rng = SplitMix(state: 3)
        for (kind, measure) in [(QueryKind.count, Measure.subjects),
                                (.sum, .attribute(name: "x", lower: -5, upper: 20, integral: true)),
                                (.mean, .attribute(name: "x", lower: 0, upper: 1, integral: false))] {
            let q = Self.query(kind, measure, epsilon: 0.7)
            let quote = try QueryEngine.quote(q)
            let r = try QueryEngine.release(q, plan: try QueryEngine.plan(q), sums: ["": kind == .mean ? [3, 10] : [10]], budget: Self.budget, using: &rng)
            #expect(quote.scale == r.scale)
            #expect(quote.epsilon == r.epsilon)
            if kind != .mean {
                let v = try #require(r.value)
                #expect(abs((v.ci95.1 - v.ci95.0) / 2 - (quote.halfWidth ?? -1)) < 1e-9)
            } else {
                #expect(quote.halfWidth == nil && quote.meanHalfWidthTimesCount != nil)
            }
        }
    }
}
