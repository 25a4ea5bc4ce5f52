import DifferentialPrivacy
import Foundation
import Testing
@testable import PrivateModels

/// `Scoring`: every artifact the scorer could be handed (a MAC only says the store's key sealed
/// it) is either scored with finite numbers equal to the models' prediction functions or
/// refused with a reason; nothing traps.
@Suite struct ScoringTests {
    static let features = [ScaledFeature(name: "a", lower: 0, upper: 10), ScaledFeature(name: "b", lower: -5, upper: 5)]

    static func regression(logistic: Bool = false) -> ModelArtifact {
        var m = ModelArtifact(model: logistic ? .logistic_regression : .linear_regression, features: features, params: [:])
        m.coefficients = [0.5, -2]
        m.intercept = 1
        return m
    }

    static func forest() -> ModelArtifact {
        var m = ModelArtifact(model: .random_forest, features: features, params: [:])
        m.trees = [RandomTree(features: ["a", "b"], cuts: [5, 0], leafCounts: [1, 1, 1, 1], leafProbabilities: [0.1, 0.2, 0.3, 0.4]),
                   RandomTree(features: ["b"], cuts: [1], leafCounts: [1, 1], leafProbabilities: [0.9, 0.7])]
        return m
    }

    static func kmeans() -> ModelArtifact {
        var m = ModelArtifact(model: .kmeans, features: features, params: [:])
        m.centroids = [[1, -4], [9, 4]]
        return m
    }

    @Test func scoresAreThePredictionFunctionsWithInputsClamped() {
        let lin = Self.regression(), log = Self.regression(logistic: true)
        #expect(Scoring.problem(lin) == nil && Scoring.problem(log) == nil)
        // a = 20 clamps to 10, b = -9 to -5: 1 + 0.5 * 10 - 2 * -5 = 16.
        #expect(Scoring.score(lin, [20, -9]) == .score(16))
        #expect(Scoring.score(lin, [20, -9]) == .score(Regression.predict(lin, [20, -9])))
        let z: Double = 1 + 0.5 * 2 - 2 * 1
        #expect(Scoring.score(log, [2, 1]) == .score(1 / (1 + exp(-z))))
        let rf = Self.forest()
        #expect(Scoring.problem(rf) == nil)
        // Tree 1: a = 6 >= 5 (bit 0), b = 0.5 >= 0 (bit 1): leaf 3 (0.4); tree 2: b < 1: leaf 0 (0.9).
        let mean: Double = (0.4 + 0.9) / 2
        #expect(Scoring.score(rf, [6, 0.5]) == .score(mean))
        #expect(Scoring.score(rf, [6, 0.5]) == .score(RandomForest.predict(rf, ["a": 6, "b": 0.5])))
        let km = Self.kmeans()
        #expect(Scoring.problem(km) == nil)
        #expect(Scoring.score(km, [0, -5]) == .segment(0) && Scoring.score(km, [100, 100]) == .segment(1))
    }

    @Test func badArtifactsAreRefusedWithAReason() {
        var cases: [(String, ModelArtifact, String)] = []
        var m = Self.regression(); m.coefficients = [.nan, 1]; cases.append(("NaN coefficient", m, "finite"))
        m = Self.regression(); m.intercept = .infinity; cases.append(("infinite intercept", m, "finite"))
        m = Self.regression(); m.coefficients = [1e308, 1e308]; cases.append(("huge", m, "overflow"))
        m = Self.regression(); m.coefficients = [1]; cases.append(("short coefficients", m, "one number per feature"))
        m = Self.regression(); m.coefficients = [1, 2, 3]; cases.append(("long coefficients", m, "one number per feature"))
        m = Self.regression(); m.featureBounds = [[0, 10]]; cases.append(("short bounds", m, "feature_bounds has 1"))
        m = Self.regression(); m.featureBounds = [[0, 10], [5, -5]]; cases.append(("reversed bound", m, "feature_bounds[1]"))
        m = Self.regression(); m.featureBounds = [[0, 10], [.nan, 1]]; cases.append(("NaN bound", m, "feature_bounds[1]"))
        m = Self.regression(); m.featureBounds = [[0, 10], []]; cases.append(("empty bound", m, "feature_bounds[1]"))
        m = Self.regression(); m.features = ["a", "a"]; cases.append(("duplicate feature", m, "twice"))
        m = Self.regression(); m.features = []; m.featureBounds = []; m.coefficients = []; cases.append(("no features", m, "at least 2 features"))
        m = Self.regression(); m.features = ["a"]; m.featureBounds = [[0, 10]]; m.coefficients = [1]
        cases.append(("one feature: its score is the attribute", m, "at least 2 features"))
        var f = Self.forest(); f.trees?[0].leafProbabilities = [0.5]; cases.append(("short leaves", f, "leaf_probabilities"))
        f = Self.forest(); f.trees?[0].cuts = [5]; cases.append(("cuts vs features", f, "same length"))
        f = Self.forest(); f.trees?[0].features = ["a", "zzz"]; cases.append(("unknown tree feature", f, "not a feature"))
        f = Self.forest(); f.trees?[0].cuts = [.infinity, 0]; cases.append(("infinite cut", f, "finite"))
        f = Self.forest(); f.trees?[0].leafProbabilities = [0.1, 2, 0.3, 0.4]; cases.append(("probability 2", f, "[0, 1]"))
        f = Self.forest(); f.trees = []; cases.append(("no trees", f, "1 to"))
        f = Self.forest(); f.trees?[0].features = Array(repeating: "a", count: 70); f.trees?[0].cuts = Array(repeating: 0, count: 70)
        cases.append(("70 levels", f, "same length, 1 to 16"))
        var k = Self.kmeans(); k.centroids = [[1]]; cases.append(("short centroid", k, "one finite number per feature"))
        k = Self.kmeans(); k.centroids = [[1, .nan]]; cases.append(("NaN centroid", k, "one finite number per feature"))
        k = Self.kmeans(); k.centroids = []; cases.append(("no centroids", k, "1 to 64"))
        var r = ModelArtifact(model: .recommender, features: [], params: [:]); r.items = ["x"]
        cases.append(("recommender", r, "not scored"))
        for (label, artifact, reason) in cases {
            let p = Scoring.problem(artifact)
            #expect(p?.contains(reason) == true, "\(label): \(p ?? "accepted")")
        }
    }

    /// The prediction functions themselves never trap on what `Scoring` refuses: a leaf index
    /// beyond a short `leaf_probabilities` (up to 2^depth - 1), a tree of 70 levels, bounds that
    /// are not pairs.
    @Test func predictionFunctionsDoNotTrapOnBrokenArtifacts() {
        var f = Self.forest()
        f.trees?[0].leafProbabilities = [0.25]
        let half: Double = (0.5 + 0.7) / 2   // leaf 3 is missing: 0.5
        #expect(RandomForest.predict(f, ["a": 9, "b": 4]) == half)
        f.trees?[0].features = Array(repeating: "a", count: 70)
        f.trees?[0].cuts = Array(repeating: 0, count: 70)
        #expect(RandomForest.predict(f, ["a": 1, "b": 4]).isFinite)
        var m = Self.regression()
        m.featureBounds = [[], [1]]
        let expected: Double = 0.5   // 1 + 0.5 * 3 - 2 * 1: a unbounded, b clamped to [1, 1]
        #expect(Regression.predict(m, [3, 4]) == expected)
    }
}
