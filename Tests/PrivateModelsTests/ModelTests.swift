import DifferentialPrivacy
import Foundation
import Testing
@testable import PrivateModels

/// An in-memory aggregate source computing the documented per-subject maps over generated
/// rows (the store's SQL is tested against the same maps in VaultStoreTests), and an
/// accountant that only counts charges.
final class MemorySource: AggregateSource, @unchecked Sendable {
    var rows: [[String: Double]]
    var items: [[String]] = []   // per subject, most recent first
    var requests: [AggregateRequest] = []
    init(rows: [[String: Double]]) { self.rows = rows }

    func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        requests.append(r)
        var out: [String: [Int64]] = [:]
        for key in r.grouping?.domain ?? [""] { out[key] = [Int64](repeating: 0, count: r.coordinates.count) }
        func add(_ key: String, _ i: Int, _ v: Int64) { out[key, default: [Int64](repeating: 0, count: r.coordinates.count)][i] += v }
        if case .items? = r.grouping, case let .itemPresence(_, m, _) = r.coordinates[0] {
            let vocab = r.grouping?.domain.map(Set.init)
            for s in items { for item in s.filter({ vocab?.contains($0) ?? true }).prefix(m) { add(item, 0, 1) } }
            return out
        }
        if case let .itemPairs(v)? = r.grouping, case let .itemPairWeight(_, m, unit) = r.coordinates[0] {
            for s in items {
                let held = Array(s.compactMap { v.firstIndex(of: $0) }.prefix(m))
                guard held.count >= 2 else { continue }
                for a in 0..<held.count { for b in (a + 1)..<held.count { add("\(min(held[a], held[b]))|\(max(held[a], held[b]))", 0, Int64(unit / (held.count - 1))) } }
            }
            return out
        }
        if case let .itemSets(v, size)? = r.grouping, case let .itemSetPresence(_, m, _) = r.coordinates[0] {
            for s in items {
                let held = s.compactMap { v.firstIndex(of: $0) }.prefix(m).sorted()
                for c in Grouping.sets(count: held.count, size: size) { add(c.map { String(held[$0]) }.joined(separator: "|"), 0, 1) }
            }
            return out
        }
        if r.grouping == nil, r.coordinates == [.subjects], rows.isEmpty {
            out[""] = [Int64(items.count)]
            return out
        }
        for row in rows {
            guard r.nonNull.allSatisfy({ row[$0] != nil }) else { continue }
            var key = ""
            switch r.grouping {
            case let .nearest(f, c)?: key = String(KMeans.nearest(f.map { $0.unit(row[$0.name]!) }, c))
            case let .cell(f, b)?:
                var k = 0, w = 1
                for x in f { k += min(b - 1, Int(x.unit(row[x.name]!) * Double(b))) * w; w *= b }
                key = String(k)
            case let .thresholds(f, c)?:
                var leaf = 0
                for l in f.indices where row[f[l]]! >= c[l] { leaf |= 1 << l }
                key = String(leaf)
            case nil: key = ""
            default: fatalError("not needed here")
            }
            for (i, c) in r.coordinates.enumerated() {
                switch c {
                case .subjects: add(key, i, 1)
                case let .attribute(n, lo, hi, ctr, g): add(key, i, Int64(((min(hi, max(lo, row[n]!)) - ctr) / g).rounded(.toNearestOrAwayFromZero)))
                case let .product(l, rr, g):
                    let z = { (f: ScaledFeature) in 2 * f.unit(row[f.name]!) - 1 }
                    add(key, i, Int64((z(l) * (rr.map(z) ?? 1) / g).rounded(.toNearestOrAwayFromZero)))
                default: fatalError("not needed here")
                }
            }
        }
        return out
    }
}

struct NullAccountant: BudgetAccountant {
    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
        BudgetState(purpose: purpose, limit: limit, spent: epsilon.noiseValue, periodStart: 0)
    }
}

func session(_ source: MemorySource, epsilon: Double, attributes: Set<String>, events: Set<String> = [], delta: Double = 0) -> PrivateSession {
    PrivateSession(source: source, consentPurpose: "model_training", epsilon: Epsilon(epsilon)!, delta: delta, attributes: attributes, eventKinds: events)
}

/// A deterministic generator for test data (not for noise).
struct SplitMix { var s: UInt64; mutating func next() -> Double { s &+= 0x9E3779B97F4A7C15; var z = s; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53) } }

@Suite struct ModelTests {
    let age = ScaledFeature(name: "age", lower: 18, upper: 100)
    let income = ScaledFeature(name: "income", lower: 0, upper: 250_000)

    @Test func kmeansRecoversWellSeparatedClustersAtHighEpsilon() throws {
        var g = SplitMix(s: 1)
        let truth: [[Double]] = [[25, 30_000], [50, 200_000], [85, 100_000]]
        var rows: [[String: Double]] = []
        for i in 0..<3000 {
            let c = truth[i % 3]
            rows.append(["age": c[0] + (g.next() - 0.5) * 6, "income": c[1] + (g.next() - 0.5) * 20_000])
        }
        let src = MemorySource(rows: rows)
        let s = session(src, epsilon: 20, attributes: ["age", "income"])
        let a = try Trainer.fit(.kmeans, spec: TrainingSpec(features: [age, income], params: ["k": 3, "iterations": 4]), session: s)
        let found = try #require(a.centroids)
        #expect(found.count == 3)
        for t in truth {
            let best = found.map { abs($0[0] - t[0]) / 82 + abs($0[1] - t[1]) / 250_000 }.min()!
            #expect(best < 0.03, "no centroid near \(t): \(found)")
        }
        // Every release went to consenting subjects only, and the job's epsilon was not exceeded.
        #expect(src.requests.allSatisfy { $0.consentPurpose == "model_training" })
        #expect(s.spentValue <= 20 + 1e-9)
        #expect(a.privacy?.budgetSplit.reduce(0) { $0 + $1.epsilon } ?? 99 <= 20 + 1e-9)
    }

    @Test func linearRegressionRecoversCoefficientsAndNeverBlowsUp() throws {
        var g = SplitMix(s: 2)
        var rows: [[String: Double]] = []
        for _ in 0..<5000 {
            let a = 18 + g.next() * 82, inc = g.next() * 250_000
            rows.append(["age": a, "income": inc, "y": 1000 + 10 * a + 0.01 * inc + (g.next() - 0.5) * 100])
        }
        let y = ScaledFeature(name: "y", lower: 0, upper: 5000)
        let a = try Trainer.fit(.linear_regression, spec: TrainingSpec(features: [age, income], target: y),
                                session: session(MemorySource(rows: rows), epsilon: 10, attributes: ["age", "income", "y"]))
        let c = try #require(a.coefficients)
        #expect(abs(c[0] - 10) < 1.5 && abs(c[1] - 0.01) < 0.0015, "\(c)")
        // Tiny epsilon: ridge and the positive-definite fix keep it finite.
        for eps in [0.01, 0.1] {
            let b = try Trainer.fit(.linear_regression, spec: TrainingSpec(features: [age, income], target: y),
                                    session: session(MemorySource(rows: Array(rows.prefix(50))), epsilon: eps, attributes: ["age", "income", "y"]))
            #expect((b.coefficients ?? [.nan]).allSatisfy(\.isFinite) && (b.intercept ?? .nan).isFinite)
        }
    }

    /// Public bounds 100 times wider than the data: the first releases' noisy histograms
    /// narrow the clipping ranges, which the second release's noise then scales with.
    ///
    /// Epsilon 5, not 1: each range histogram gets a tenth of the job's epsilon; at epsilon 1
    /// (noise scale 10) an empty bin 50 above the bar (1% of the mass) stretched a range in about
    /// 1.4% of runs, and the ridge's shrinkage put the coefficient below 2.7 in about 0.01% (15 of
    /// 1,000 runs failed). At 5 (scale 2) that bin is 29 scales out: below 1e-9 per run.
    @Test func regressionChoosesClippingRangesPrivately() throws {
        var g = SplitMix(s: 5)
        var rows: [[String: Double]] = []
        for _ in 0..<5000 {
            let x = g.next() * 1000
            rows.append(["x": x, "y": 3 * x + (g.next() - 0.5) * 200])
        }
        let x = ScaledFeature(name: "x", lower: 0, upper: 100_000)
        let y = ScaledFeature(name: "y", lower: 0, upper: 300_000)
        var spec = TrainingSpec(features: [x], target: y)
        spec.params["private_ranges"] = 1   // linear regression's default is the declared bounds
        let a = try Trainer.fit(.linear_regression, spec: spec,
                                session: session(MemorySource(rows: rows), epsilon: 5, attributes: ["x", "y"]))
        let b = try #require(a.featureBounds.first)
        #expect(b[0] >= 0 && b[1] <= 5000 && b[1] > 900, "range \(b)")
        #expect(a.params["target_upper"].map { $0 < 20_000 } == true)
        #expect(a.privacy?.budgetSplit.count == 3)   // two ranges, then the statistics
        let c = try #require(a.coefficients?.first)
        #expect(abs(c - 3) < 0.3, "coefficient \(c)")
        // Within the job's epsilon; predictions clamp inputs to the range used.
        #expect(a.privacy?.budgetSplit.reduce(0) { $0 + $1.epsilon } ?? 99 <= 5 + 1e-9)
        #expect(Regression.predict(a, [1e9]) == Regression.predict(a, [b[1]]))
    }

    @Test func logisticRegressionRanksByTheSignal() throws {
        var g = SplitMix(s: 3)
        var rows: [[String: Double]] = []
        for _ in 0..<4000 {
            let a = 18 + g.next() * 82
            rows.append(["age": a, "income": g.next() * 250_000, "y": g.next() < 1 / (1 + exp(-(a - 60) / 8)) ? 1 : 0])
        }
        let y = ScaledFeature(name: "y", lower: 0, upper: 1)
        let m = try Trainer.fit(.logistic_regression, spec: TrainingSpec(features: [age, income], target: y),
                                session: session(MemorySource(rows: rows), epsilon: 5, attributes: ["age", "income", "y"]))
        #expect(Regression.predict(m, [90, 1000]) > Regression.predict(m, [20, 1000]))
    }

    /// Calibration with a rare outcome: P(y = 1) = σ(-4 + 3u), u = age scaled to [0, 1] (rates
    /// 0.018 to 0.27, mean about 0.09). At epsilon 1000 the noise is negligible; what is left is
    /// the quadratic surrogate. Expanded at t = 0 (the old solver) the log-odds are about
    /// 4 × (linear probability − ½), so at u = 0 (linear probability near 0) it predicts about
    /// σ(−2) = 0.12; expanded at the constant model logit(ȳ) the low end is low and the mean
    /// prediction near the observed rate (measured 0.118 against 0.098: the surrogate keeps the
    /// mean of the log-odds, not of the probability).
    @Test func logisticRegressionIsCalibratedForARareOutcome() throws {
        var g = SplitMix(s: 5)
        var rows: [[String: Double]] = []
        for _ in 0..<20_000 {
            let u = g.next()
            rows.append(["age": 18 + u * 82, "y": g.next() < 1 / (1 + exp(4 - 3 * u)) ? 1 : 0])
        }
        let rate = rows.reduce(0) { $0 + $1["y"]! } / Double(rows.count)
        let y = ScaledFeature(name: "y", lower: 0, upper: 1)
        let m = try Trainer.fit(.logistic_regression, spec: TrainingSpec(features: [age], target: y, params: ["private_ranges": 0]),
                                session: session(MemorySource(rows: rows), epsilon: 1000, attributes: ["age", "y"]))
        let mean = rows.reduce(0) { $0 + Regression.predict(m, [$1["age"]!]) } / Double(rows.count)
        #expect(abs(mean - rate) < 0.03, "mean prediction \(mean), rate \(rate)")
        let low = Regression.predict(m, [18]), high = Regression.predict(m, [100])
        #expect(low < 0.05 && high > 0.2, "\(low) \(high)")
        #expect(abs((m.params["expansion_point"] ?? 0) - log(rate / (1 - rate))) < 0.05, "\(m.params)")
    }

    @Test func sessionRefusesOverspendingAndUngrantedAttributes() throws {
        let src = MemorySource(rows: [["age": 30]])
        let s = session(src, epsilon: 1, attributes: ["age"])
        let req = AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects])
        _ = try s.release(req, shares: [try s.share(0.6)], label: "a")
        #expect(throws: SessionError.self) { try s.release(req, shares: [try s.share(0.6)], label: "b") }
        let income = AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.attribute(name: "income", lower: 0, upper: 1, center: 0, grid: 1)])
        #expect(throws: SessionError.self) { try s.release(income, shares: [try s.share(0.1)], label: "c") }
        #expect(src.requests.count == 1)   // refused releases computed nothing
    }

    /// Jacobi: V diag(values) Vᵀ gives the matrix back, V orthonormal.
    @Test func jacobiDecomposesASymmetricMatrix() {
        let m: [Double] = [4, 1, -2, 1, 2, 0, -2, 0, 3]
        let (values, v) = LowRank.jacobi(m, n: 3)
        for i in 0..<3 {
            for j in 0..<3 {
                let back = (0..<3).reduce(0.0) { $0 + v[i * 3 + $1] * values[$1] * v[j * 3 + $1] }
                #expect(abs(back - m[i * 3 + j]) < 1e-9)
                let dot = (0..<3).reduce(0.0) { $0 + v[$1 * 3 + i] * v[$1 * 3 + j] }
                #expect(abs(dot - (i == j ? 1 : 0)) < 1e-9)
            }
        }
    }

    /// Subspace iteration finds the largest signed eigenvalues (a larger negative one is not
    /// among them) and their vectors, on a 40 x 40 matrix with known spectrum.
    @Test func topEigenFindsTheLargestEigenpairs() {
        let n = 40
        var g = SplitMix(s: 11)
        var basis = (0..<n).map { _ in (0..<n).map { _ in g.next() - 0.5 } }
        LowRank.orthonormalise(&basis)
        let spectrum = [5.0, 3.0, -7.0] + [Double](repeating: 0.01, count: n - 3)
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { a[i * n + j] = (0..<n).reduce(0) { $0 + basis[$1][i] * spectrum[$1] * basis[$1][j] } } }
        let (values, vectors) = LowRank.topEigen(a, n: n, k: 2)
        #expect(abs(values[0] - 5) < 1e-6 && abs(values[1] - 3) < 1e-6, "\(values)")
        for (f, want) in [(0, 0), (1, 1)] {
            let cos = zip(vectors[f], basis[want]).reduce(0) { $0 + $1.0 * $1.1 }
            #expect(abs(abs(cos) - 1) < 1e-6)
        }
    }

    /// Two tastes (items 0-4 and 5-9 bought together): the factorised co-occurrence keeps each
    /// item's neighbours within its taste; the artifact holds one factor row per vocabulary item.
    @Test func matrixFactorisationRecommenderKeepsTheTastesApart() throws {
        let src = MemorySource(rows: [])
        var g = SplitMix(s: 7)
        src.items = (0..<4000).map { i in
            let base = (i % 2) * 5
            return Array(Set((0..<4).map { _ in "SKU-\(base + Int(g.next() * 5))" })).sorted()
        }
        let catalog = (0..<10).map { "SKU-\($0)" }
        var spec = TrainingSpec(features: [], events: "purchase", params: ["factors": 2, "popularity_share": 0.5, "max_items_per_subject": 4], catalog: catalog)
        spec.catalogText = nil
        let a = try Recommender.fit(spec: spec, session: session(src, epsilon: 20, attributes: [], events: ["purchase"]), progress: { _ in })
        let f = try #require(a.itemFactors)
        #expect(f.count == 10 && f.allSatisfy { $0.count >= 1 && $0.count <= 2 })
        let items = try #require(a.items), ni = try #require(a.neighborItems)
        for (i, name) in items.enumerated() {
            let taste = Int(name.dropFirst(4))! / 5
            let near = ni[i].prefix(3).map { Int(items[$0].dropFirst(4))! / 5 }
            #expect(near.count == 3 && near.allSatisfy { $0 == taste }, "\(name): \(ni[i].map { items[$0] })")
        }
        #expect(a.params["factors"] == 2 && a.params["similarity_threshold"] == nil)   // no threshold was applied
        // factors needs the co-occurrence release.
        spec.params["popularity_share"] = 1
        #expect(throws: (any Error).self) { try Recommender.fit(spec: spec, session: session(src, epsilon: 20, attributes: [], events: ["purchase"]), progress: { _ in }) }
    }

    /// y = 1 exactly when x > 50: the forest's leaves recover it; one release per tree, within
    /// epsilon; integral features get half-integer cuts inside their bounds.
    @Test func randomForestLearnsAThresholdFromNoisyLeafCounts() throws {
        var g = SplitMix(s: 3)
        let rows = (0..<6000).map { _ -> [String: Double] in
            let x = (g.next() * 100).rounded(.down), z = (g.next() * 10).rounded(.down)
            return ["x": x, "z": z, "y": x > 50 ? 1 : 0]
        }
        let src = MemorySource(rows: rows)
        let x = ScaledFeature(name: "x", lower: 0, upper: 100), z = ScaledFeature(name: "z", lower: 0, upper: 10)
        var spec = TrainingSpec(features: [x, z], target: ScaledFeature(name: "y", lower: 0, upper: 1), params: ["trees": 20, "depth": 4])
        spec.integral = ["x", "z", "y"]
        let a = try Trainer.fit(.random_forest, spec: spec, session: session(src, epsilon: 50, attributes: ["x", "z", "y"]))
        let trees = try #require(a.trees)
        #expect(trees.count == 20 && trees.allSatisfy { $0.cuts.count == 4 && $0.leafProbabilities.count == 16 })
        #expect(trees.allSatisfy { t in zip(t.features, t.cuts).allSatisfy { f, c in c.truncatingRemainder(dividingBy: 1) == 0.5 && c > 0 && c < (f == "x" ? 100 : 10) } })
        #expect(src.requests.count == 22)   // a range histogram per feature, then one release per tree
        #expect(a.privacy?.budgetSplit.reduce(0) { $0 + $1.epsilon } ?? 99 <= 50 + 1e-9)
        // Trees that split on x near 50 separate the classes; the mean over 20 trees ranks them.
        #expect(RandomForest.predict(a, ["x": 95, "z": 5]) > RandomForest.predict(a, ["x": 5, "z": 5]) + 0.3)
        var auc = 0.0, pairs = 0.0
        let test = rows.prefix(400)
        for p in test where p["y"] == 1 { for q in test where q["y"] == 0 {
            let sp = RandomForest.predict(a, p), sq = RandomForest.predict(a, q)
            auc += sp > sq ? 1 : sp == sq ? 0.5 : 0; pairs += 1
        } }
        #expect(auc / pairs > 0.9, "AUC \(auc / pairs)")
    }

    @Test func recommenderNeverReturnsOwnedItemsAndNamesOnlyCatalogItems() throws {
        let src = MemorySource(rows: [])
        var g = SplitMix(s: 4)
        src.items = (0..<2000).map { i in
            let base = (i % 2) * 5   // two tastes: items 0-4 and 5-9
            return (0..<3).map { _ in "SKU-\(base + Int(g.next() * 5))" } + (g.next() < 0.01 ? ["RARE-\(i)"] : [])
        }
        let catalog = (0..<10).map { "SKU-\($0)" } + ["SKU-NEVER"]
        let s = session(src, epsilon: 10, attributes: [], events: ["purchase"])
        // The in-memory source does not compute pairs; the catalog path's popularity is enough here.
        let pop = try s.release(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: catalog), coordinates: [.itemPresence(kind: "purchase", maxItems: 5)]),
                                shares: [try s.share(0.3)], label: "popularity")
        #expect(pop.map(\.key) == catalog)   // catalog items only, zeros included, no RARE-*
        var a = ModelArtifact(model: .recommender, features: [], params: [:])
        a.items = catalog
        a.popularity = pop.map { max(0, $0.values[0].value) }
        a.neighborItems = [[1, 2, 3]] + [[Int]](repeating: [], count: 10)
        a.neighborScores = [[0.9, 0.8, 0.7]] + [[Double]](repeating: [], count: 10)
        for owned in [Set(["SKU-0"]), Set(["SKU-0", "SKU-1", "SKU-2"]), Set(catalog.prefix(10)), []] {
            let r = Recommender.recommend(a, owned: owned, top: 5)
            #expect(r.allSatisfy { !owned.contains($0) && catalog.contains($0) })
            #expect(r.count == min(5, catalog.count - owned.count))
        }
        #expect(Recommender.recommend(a, owned: ["SKU-0"], top: 2) == ["SKU-1", "SKU-2"])
        // Private selection drops items held by few subjects (RARE-*), keeps the popular ones.
        // Each of the 25 RARE items passes with probability about delta / m (the selection's
        // promise), so delta 1e-9: with 1e-6 one of them got through once in 400,000 runs.
        let s2 = session(src, epsilon: 10, attributes: [], events: ["purchase"], delta: 1e-9)
        let sel = try s2.releaseSelected(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPresence(kind: "purchase", maxItems: 5)]),
                                         epsilon: try s2.share(1), delta: 1e-9, label: "selection")
        #expect(sel.released.allSatisfy { $0.key.hasPrefix("SKU-") } && sel.released.count == 10)
    }

    /// Expected cosines from scikit-learn 1.7.2: TfidfVectorizer(sublinear_tf=True) on the same texts.
    @Test func contentVectorsMatchScikitLearnsTfidf() throws {
        let texts = ["JUMBO BAG RED RETROSPOT", "JUMBO BAG PINK POLKADOT", "RED RETROSPOT CAKE STAND",
                     "WHITE HANGING HEART T-LIGHT HOLDER", "LUNCH BAG RED RETROSPOT", ""]
        let v = ContentSimilarity.vectors(texts: texts)
        let terms = v.map(\.terms), weights = v.map(\.weights)
        func cos(_ owned: [Int]) -> [Double] { ContentSimilarity.profileScores(terms: terms, weights: weights, owned: owned, targets: 0..<6) }
        let expected0: [Double] = [1, 0.44658, 0.383635, 0, 0.633935, 0]
        for (got, want) in zip(cos([0]), expected0) { #expect(abs(got - want) < 1e-5, "\(got) vs \(want)") }
        // A profile of two items: the normalised sum of their vectors.
        let expected02: [Double] = [0.831756, 0.268456, 0.831756, 0, 0.595648, 0]
        for (got, want) in zip(cos([0, 2]), expected02) { #expect(abs(got - want) < 1e-5, "\(got) vs \(want)") }
        #expect(cos([5]) == [Double](repeating: 0, count: 6))   // an empty description: no profile
        #expect(cos([]) == [Double](repeating: 0, count: 6))
    }

    @Test func recommenderRanksCandidatesByTheSubjectsOwnItemsDescriptions() throws {
        var a = ModelArtifact(model: .recommender, features: [], params: ["popularity_weight": 5, "candidates": 4, "content_weight": 5])
        a.items = ["WHITE HEART", "GLASS STAR", "PINK RETROSPOT BAG", "RED RETROSPOT BAG", "CAKE TIN"]   // by popularity
        a.popularity = [50, 40, 30, 20, 10]
        let v = ContentSimilarity.vectors(texts: a.items!)
        a.contentTerms = v.map(\.terms)
        a.contentWeights = v.map(\.weights)
        // The owner of the red bag gets the pink one first, then the others by popularity.
        #expect(Recommender.recommend(a, owned: ["RED RETROSPOT BAG"], top: 4) == ["PINK RETROSPOT BAG", "WHITE HEART", "GLASS STAR", "CAKE TIN"])
        // Content counts for the candidates only: with 2, the pink bag (third) gets none.
        a.params["candidates"] = 2
        #expect(Recommender.recommend(a, owned: ["RED RETROSPOT BAG"], top: 2) == ["WHITE HEART", "GLASS STAR"])
        a.params["candidates"] = 4
        // Without content (or for a subject with no described items): popularity order.
        a.params["content_weight"] = 0
        #expect(Recommender.recommend(a, owned: ["RED RETROSPOT BAG"], top: 2) == ["WHITE HEART", "GLASS STAR"])
        a.params["content_weight"] = 5
        #expect(Recommender.recommend(a, owned: ["UNKNOWN"], top: 2) == ["WHITE HEART", "GLASS STAR"])
    }

    @Test func contentFromACatalogSpendsNoBudgetAndTheArtifactCarriesIt() throws {
        let src = MemorySource(rows: [])
        src.items = (0..<500).map { i in ["SKU-\(i % 4)", "SKU-\((i + 1) % 4)"] }
        let s = session(src, epsilon: 1, attributes: [], events: ["purchase"])
        var spec = TrainingSpec(features: [], events: "purchase", params: [:], catalog: ["SKU-0", "SKU-1", "SKU-2", "SKU-3"])
        spec.catalogText = ["red bag", "pink bag", "glass star", ""]
        spec.eventsSince = 1_300_000_000
        let a = try Recommender.fit(spec: spec, session: s, progress: { _ in })
        // The subject count (5%), then one popularity release (the rest of epsilon): with
        // descriptions there is no co-occurrence release.
        #expect(src.requests.count == 2 && src.requests.first?.coordinates == [.subjects])
        if case let .itemPresence(_, m, since)? = src.requests.last?.coordinates.first { #expect(m == 20 && since == 1_300_000_000) } else { Issue.record("no item presence") }
        #expect(a.params["popularity_share"] == 1 && a.params["content_weight"] == 5 && a.params["candidates"] == 300)
        #expect(a.contentTerms?.count == 4 && a.contentWeights?.count == 4)
        let text = ["SKU-0": "red bag", "SKU-1": "pink bag", "SKU-2": "glass star", "SKU-3": ""]
        let v = ContentSimilarity.vectors(texts: a.items!.map { text[$0]! })
        #expect(a.contentTerms! == v.map(\.terms))   // aligned with the items (popularity order)
        #expect(a.eventsSince == "2011-03-13T07:06:40Z")
        // Without descriptions, 20% of the rest buys the co-occurrence (a third release).
        let src2 = MemorySource(rows: [])
        src2.items = src.items
        spec.catalogText = nil
        let b = try Recommender.fit(spec: spec, session: session(src2, epsilon: 1, attributes: [], events: ["purchase"]), progress: { _ in })
        #expect(src2.requests.count == 3 && b.params["popularity_share"] == 0.8 && b.contentTerms == nil)
    }

    /// Planted baskets: subjects who buy A and B almost always buy C; D and E go together; F
    /// is popular with everything. At epsilon 30 the rules come out with the planted lift order.
    /// (At 10, about one run in 500 failed: a pair of two noise items, which nobody holds
    /// together, got a noisy support of 30% of one item's ~90 buyers, a rule with lift ~10 at
    /// the top; and AB -> C's confidence left 0.9 ± 0.05 about once in 15,000. At 30 both take
    /// over 20 noise scales.)
    @Test func associationRulesFindPlantedItemsetsFromNoisySupports() throws {
        let src = MemorySource(rows: [])
        var g = SplitMix(s: 9)
        src.items = (0..<3000).map { i -> [String] in
            var basket: [String] = []
            if i % 3 == 0 { basket += g.next() < 0.9 ? ["A", "B", "C"] : ["A", "B"] }
            if i % 3 == 1 { basket += ["D", "E"] }
            if g.next() < 0.5 { basket.append("F") }
            basket.append("N\(Int(g.next() * 40))")   // noise items
            return basket
        }
        let catalog = ["A", "B", "C", "D", "E", "F"] + (0..<40).map { "N\($0)" }
        var spec = TrainingSpec(features: [], events: "purchase", params: ["vocabulary_size": 10, "triple_vocabulary": 6], catalog: catalog)
        spec.catalogText = nil
        let a = try AssociationRules.fit(spec: spec, session: session(src, epsilon: 30, attributes: [], events: ["purchase"]), progress: { _ in })
        let rules = try #require(a.rules)
        func rule(_ x: [String], _ y: String) -> AssociationRule? { rules.first { Set($0.antecedent) == Set(x) && $0.consequent == y } }
        let ab_c = try #require(rule(["A", "B"], "C"), "\(rules)")
        #expect(abs(ab_c.confidence - 0.9) < 0.05)
        #expect(abs(ab_c.lift - 0.9 / 0.3) < 0.3)
        let d_e = try #require(rule(["D"], "E"))
        #expect(d_e.confidence > 0.95 && abs(d_e.lift - 3) < 0.3)
        // F is independent of everything: no well-supported rule into F clears lift 1.2 (rare
        // noise items can, by chance: 75 buyers each).
        #expect(!rules.contains { $0.consequent == "F" && $0.support >= 200 && $0.lift > 1.2 })
        // The strongest rules are the planted ones.
        #expect(rules.prefix(8).allSatisfy { ["A", "B", "C", "D", "E"].contains($0.consequent) && $0.lift > 2.5 }, "\(rules.prefix(8))")
        // Releases: popularity, subjects, item, pair and triple supports; all of epsilon.
        #expect(src.requests.count == 5)
        #expect(a.params["max_items_per_subject"] == 5 && a.itemSource == "catalog")
        #expect(rules == rules.sorted { $0.lift > $1.lift } || zip(rules, rules.dropFirst()).allSatisfy { $0.lift >= $1.lift })
    }

    /// Without a catalog, association rules name their items by the recommender's item
    /// selection: a first release in which each subject votes for k = `selection_items` of its
    /// items (`itemPresence(maxItems: k)` over all items), with `selection_share` of epsilon;
    /// then the popularity of the named items with the cap m and the rule releases, which split
    /// the rest as with a catalog. At epsilon 30 (selection 9, k = 3: threshold about 6 votes)
    /// the planted items (hundreds of votes) are named and their rules found.
    @Test func associationRulesWithoutACatalogUseTheSmallBoundItemSelection() throws {
        let src = MemorySource(rows: [])
        var g = SplitMix(s: 11)
        src.items = (0..<3000).map { i -> [String] in
            var basket: [String] = []
            if i % 3 == 0 { basket += g.next() < 0.9 ? ["A", "B", "C"] : ["A", "B"] }
            if i % 3 == 1 { basket += ["D", "E"] }
            if g.next() < 0.5 { basket.append("F") }
            basket.append("N\(Int(g.next() * 40))")
            return basket
        }
        let spec = TrainingSpec(features: [], events: "purchase", params: ["vocabulary_size": 10, "triple_vocabulary": 6, "selection_items": 3], catalog: nil)
        let s = session(src, epsilon: 30, attributes: [], events: ["purchase"], delta: 1e-6)
        let a = try AssociationRules.fit(spec: spec, session: s, progress: { _ in })
        // The first release is the vote: k = 3 per subject, no vocabulary (keys from the data).
        let first = try #require(src.requests.first)
        #expect(first.coordinates == [.itemPresence(kind: "purchase", maxItems: 3, since: nil)], "\(first.coordinates)")
        if case let .items(vocabulary)? = first.grouping { #expect(vocabulary == nil) } else { Issue.record("not an item grouping") }
        // Then the popularity of the named items with the cap m = 5.
        #expect(src.requests[1].coordinates == [.itemPresence(kind: "purchase", maxItems: 5, since: nil)])
        #expect(src.requests.count == 6)   // selection, popularity, subjects, items, pairs, triples
        #expect(a.itemSource == "private_selection")
        #expect(a.params["selection_items"] == 3 && a.params["selection_share"] == 0.3 && a.params["selection_threshold"] != nil, "\(a.params)")
        #expect(Set(a.items ?? []).isSuperset(of: ["A", "B", "C", "D", "E", "F"]), "\(a.items ?? [])")
        let rules = try #require(a.rules)
        #expect(rules.contains { Set($0.antecedent) == ["A", "B"] && $0.consequent == "C" }, "\(rules)")
        #expect(rules.contains { $0.antecedent == ["D"] && $0.consequent == "E" })
        // All of epsilon is spent, and the selection's share is 30% of it.
        #expect(abs(s.spentValue - 30) < 1e-4, "\(s.spentValue)")
        // A subject's other items (beyond its k votes) do not count in the selection: an item that
        // is never among anyone's 3 most recent gets no vote and is never named, however many hold it.
        let late = MemorySource(rows: [])
        late.items = (0..<3000).map { _ in ["A", "B", "C", "LATE"] }
        let b = try AssociationRules.fit(spec: spec, session: session(late, epsilon: 30, attributes: [], events: ["purchase"], delta: 1e-6), progress: { _ in })
        #expect(b.items?.contains("LATE") == false && Set(b.items ?? []) == ["A", "B", "C"], "\(b.items ?? [])")
        // Its vote bound is refused outside 1...50 by the model too (the job parser refuses it first).
        for bad in [0.0, 51] {
            var spec2 = spec
            spec2.params["selection_items"] = bad
            #expect(throws: ModelError.self) { try AssociationRules.fit(spec: spec2, session: session(late, epsilon: 30, attributes: [], events: ["purchase"], delta: 1e-6), progress: { _ in }) }
        }
    }

    @Test func modelsCannotSeeTheStore() throws {
        // PrivateModels depends on DifferentialPrivacy only (Package.swift), and imports nothing else.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let manifest = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        #expect(manifest.contains(#".target(name: "PrivateModels", dependencies: ["DifferentialPrivacy"]"#))
        let dir = root.appendingPathComponent("Sources/PrivateModels")
        for file in try FileManager.default.contentsOfDirectory(atPath: dir.path) where file.hasSuffix(".swift") {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.contains("import ") && !line.contains("//") {
                let module = line.split(separator: " ").last.map(String.init) ?? ""
                #expect(["DifferentialPrivacy", "Foundation"].contains(module), "\(file) imports \(module)")
            }
        }
    }
}
