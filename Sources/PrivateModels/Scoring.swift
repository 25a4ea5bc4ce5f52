import Foundation

/// Scoring one subject with a trained model (`profilectl score`, `POST /v1/scores`): the
/// checks an artifact must pass before any value reaches it (``Scoring/problem(_:)``), and the
/// score of one subject's feature values (``Scoring/score(_:_:)``), which is exactly what
/// `Regression.predict`, `RandomForest.predict` and `KMeans.nearest` compute.
///
/// An artifact reaching the scorer carries a MAC that verified, so it was written by `train`;
/// the checks still hold for any artifact, so a model that train could never write (edited and
/// sealed again with the keyring, or from another version) is an error, never a trap, an
/// infinite or NaN score.
public enum Scoring {
    /// The kinds `score` serves.
    public static let kinds: Set<ModelKind> = [.linear_regression, .logistic_regression, .random_forest, .kmeans]

    /// The largest number of features, trees, tree levels and centroids a scored model may have.
    public static let maxFeatures = 1024, maxTrees = 1000, maxDepth = 16, maxCentroids = 64

    /// What one subject gets: a score (predicted value or probability) or a segment (k-means).
    public enum Output: Sendable, Equatable {
        case score(Double)
        case segment(Int)
    }

    /// Why `a` cannot be scored (nil: it can). Checks every length and number the scorer uses.
    public static func problem(_ a: ModelArtifact) -> String? {
        guard kinds.contains(a.model) else {
            return "a \(a.model.rawValue) model is not scored (score serves linear_regression, logistic_regression, random_forest and kmeans)"
        }
        let d = a.features.count
        // One feature: the score is a function of that one attribute, and for most models an
        // invertible one (a linear score gives the attribute back exactly): scoring would read
        // the attribute out, which only the DP layer may release.
        guard d >= 2 else { return "a scored model needs at least 2 features: with \(d == 1 ? "one" : "none"), its score would reveal the attribute itself" }
        guard d <= maxFeatures else { return "the model needs 2 to \(maxFeatures) features" }
        guard Set(a.features).count == d else { return "a feature is listed twice" }
        guard a.featureBounds.count == d else { return "feature_bounds has \(a.featureBounds.count) entries for \(d) features" }
        for (i, b) in a.featureBounds.enumerated() {
            guard b.count == 2, b[0].isFinite, b[1].isFinite, b[0] < b[1] else {
                return "feature_bounds[\(i)] is not a pair of finite numbers lower < upper"
            }
        }
        switch a.model {
        case .linear_regression, .logistic_regression:
            guard let c = a.coefficients, c.count == d else { return "coefficients must have one number per feature (\(d))" }
            guard let b0 = a.intercept, b0.isFinite, c.allSatisfy(\.isFinite) else { return "the intercept and coefficients must be finite numbers" }
            // The largest |sum| over inputs clamped to the bounds: finite, so no score overflows.
            var bound = abs(b0)
            for (ci, b) in zip(c, a.featureBounds) { bound += abs(ci) * max(abs(b[0]), abs(b[1])) }
            guard bound.isFinite, bound < 1e300 else { return "the coefficients are so large that a score would overflow" }
        case .random_forest:
            guard let trees = a.trees, (1...maxTrees).contains(trees.count) else { return "a random forest needs 1 to \(maxTrees) trees" }
            let names = Set(a.features)
            for (k, t) in trees.enumerated() {
                guard (1...maxDepth).contains(t.features.count), t.cuts.count == t.features.count else {
                    return "trees[\(k)]: features and cuts must have the same length, 1 to \(maxDepth)"
                }
                guard t.features.allSatisfy(names.contains) else { return "trees[\(k)]: a tree feature is not a feature of the model" }
                guard t.cuts.allSatisfy(\.isFinite) else { return "trees[\(k)]: a cut is not a finite number" }
                guard t.leafProbabilities.count == 1 << t.features.count else {
                    return "trees[\(k)]: leaf_probabilities must have 2^levels (\(1 << t.features.count)) entries"
                }
                guard t.leafProbabilities.allSatisfy({ $0 >= 0 && $0 <= 1 }) else { return "trees[\(k)]: a leaf probability is not in [0, 1]" }
            }
        case .kmeans:
            guard let c = a.centroids, (1...maxCentroids).contains(c.count) else { return "a kmeans model needs 1 to \(maxCentroids) centroids" }
            guard c.allSatisfy({ $0.count == d && $0.allSatisfy(\.isFinite) }) else {
                return "every centroid must have one finite number per feature (\(d))"
            }
        default:
            break
        }
        return nil
    }

    /// The score of one subject's feature values `x` (in feature order, finite numbers) for a
    /// model without ``problem(_:)``: linear regression the predicted value, logistic regression
    /// and random forest P(target = 1), k-means the index of the nearest centroid (in the
    /// features' unit scale, ties to the lowest index). Inputs are clamped to `feature_bounds`
    /// (regressions, k-means); a forest compares the values with its cuts, which lie inside them.
    public static func score(_ a: ModelArtifact, _ x: [Double]) -> Output {
        switch a.model {
        case .kmeans:
            let f = a.scaledFeatures
            let point = zip(f, x).map { $0.unit($1) }
            let centroids = (a.centroids ?? []).map { c in zip(f, c).map { $0.unit($1) } }
            return .segment(KMeans.nearest(point, centroids))
        case .random_forest:
            return .score(RandomForest.predict(a, Dictionary(zip(a.features, x), uniquingKeysWith: { l, _ in l })))
        default:
            return .score(Regression.predict(a, x))
        }
    }
}
