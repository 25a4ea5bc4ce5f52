public import DifferentialPrivacy
import Foundation

/// One oblivious random tree: level l sends a subject right when `features[l] >= cuts[l]`; the
/// leaf index is the sum of bit_l * 2^l. Leaf statistics are noisy.
public struct RandomTree: Codable, Sendable, Equatable {
    public var features: [String]
    public var cuts: [Double]
    /// Per leaf: noisy subject count (floored at 0) and the smoothed probability of target 1.
    public var leafCounts: [Double]
    public var leafProbabilities: [Double]
}

/// Random forest classifier from noisy leaf counts (the construction of diffprivlib's
/// RandomForestClassifier and of Fletcher & Islam's survey: trees whose splits are drawn
/// without looking at the data, so only the leaves' class counts need noise).
///
/// Each of the T = `trees` (default 30) trees has `depth` (default 5) levels; every level draws
/// a feature uniformly and a cut uniformly inside the feature's range (a half-integer for
/// integral features), from the operating system's generator. The range is the public bounds,
/// or by default (`private_ranges`: 1) the bins holding the middle 98% of a noisy 64-bin
/// histogram per feature (20% of E, shared by the features, as the regressions do); given those,
/// the partition is independent of the data. Per tree one release over its 2^depth leaves
/// (grouping `thresholds`): the subject count and the centred target sum, each 0.8·E/(2T) (E/(2T)
/// without private ranges). A subject is in one leaf per tree, so each tree's release is
/// 0.8·E/T-DP and the forest E-DP (sequential composition).
/// Leaf probability: (positives + a·p) / (count + a), positives = count/2 + centred sum clamped
/// to [0, count], p the tree's overall noisy rate, a = `leaf_prior` (default 10): a leaf with few
/// subjects is mostly noise at small epsilon and falls back to the tree's rate.
/// Prediction: the mean over trees of the subject's leaf probability.
public enum RandomForest {
    public static func fit(spec: TrainingSpec, session: PrivateSession, progress: (String) -> Void) throws -> ModelArtifact {
        guard let target = spec.target, target.lower == 0, target.upper == 1 else {
            throw ModelError("random_forest needs a target with bounds [0, 1] (an int or bool attribute)")
        }
        let f = spec.features
        guard !f.isEmpty else { throw ModelError("random_forest needs features") }
        let t = spec.integer("trees", 30), depth = spec.integer("depth", 5)
        let prior = spec.param("leaf_prior", 10)
        guard t >= 1 && t <= 200 else { throw ModelError("random_forest: trees must be between 1 and 200") }
        guard depth >= 1 && depth <= 12 else { throw ModelError("random_forest: depth must be between 1 and 12") }
        guard prior >= 0 && prior <= 1e6 else { throw ModelError("random_forest: leaf_prior must be between 0 and 1e6") }
        // Where to cut: uniform over the public bounds wastes most cuts on empty tails (bank
        // balances span [-10000, 110000], most lie near 0), so by default 20% of epsilon first
        // narrows each feature to the bins holding the middle 98% of a noisy histogram (the
        // regressions' private ranges) and the cuts are drawn inside those.
        let privateRanges = spec.param("private_ranges", 1) != 0
        let ranges = privateRanges ? try Regression.privateRanges(f, session: session, share: try session.share(0.2), model: "random_forest") : f
        guard let each = session.epsilon.share((privateRanges ? 0.8 : 1) / Double(2 * t)) else { throw ModelError("random_forest: epsilon too small for \(t) trees") }
        let countCoordinate = Coordinate.subjects
        let targetCoordinate = Trainer.centredCoordinate(target, integral: spec.integral.contains(target.name))
        var rng = SystemRandomNumberGenerator()
        var trees: [RandomTree] = []
        for k in 0..<t {
            progress("random_forest: tree \(k + 1) of \(t), \(1 << depth) leaves")
            var names: [String] = [], cuts: [Double] = []
            for _ in 0..<depth {
                let x = ranges[Int.random(in: 0..<ranges.count, using: &rng)]
                var cut = Double.random(in: x.lower...x.upper, using: &rng)
                if spec.integral.contains(x.name) {
                    // Between two integers, never on one, and inside the bounds' range.
                    cut = min(x.upper - 0.5, max(x.lower + 0.5, (cut - 0.5).rounded() + 0.5))
                }
                names.append(x.name)
                cuts.append(cut)
            }
            let r = try session.release(AggregateRequest(consentPurpose: nil, nonNull: f.map(\.name) + [target.name],
                                                         grouping: .thresholds(features: names, cuts: cuts),
                                                         coordinates: [countCoordinate, targetCoordinate]),
                                        shares: [each, each], label: "random_forest: tree \(k + 1) leaf counts and target sums")
            var counts = [Double](repeating: 0, count: 1 << depth), positives = counts
            for (key, v) in r {
                guard let leaf = Int(key), leaf < counts.count else { continue }
                let n = max(0, v[0].value)
                counts[leaf] = n
                positives[leaf] = min(n, max(0, n / 2 + v[1].value))
            }
            let total = counts.reduce(0, +)
            let rate = total > 0 ? min(1, max(0, positives.reduce(0, +) / total)) : 0.5
            let probs = counts.indices.map { i in
                counts[i] + prior > 0 ? (positives[i] + prior * rate) / (counts[i] + prior) : rate
            }
            trees.append(RandomTree(features: names, cuts: cuts.map { ($0 * 1e9).rounded() / 1e9 },
                                    leafCounts: counts.map { ($0 * 1000).rounded() / 1000 },
                                    leafProbabilities: probs.map { ($0 * 1e6).rounded() / 1e6 }))
        }
        var a = ModelArtifact(model: .random_forest, features: f, params: ["trees": Double(t), "depth": Double(depth), "leaf_prior": prior])
        a.target = target.name
        a.trees = trees
        return a
    }

    /// The leaf of one tree for the feature values `x` (by name).
    static func leaf(_ tree: RandomTree, _ x: [String: Double]) -> Int {
        var leaf = 0
        // Levels past 62 (never trained: depth <= 12) add nothing rather than overflow.
        for (l, (name, cut)) in zip(tree.features, tree.cuts).enumerated() where l < 62 && (x[name] ?? -.infinity) >= cut { leaf |= 1 << l }
        return leaf
    }

    /// P(target = 1) for the feature values `x`: the mean of the trees' leaf probabilities.
    /// A leaf beyond a tree's `leaf_probabilities` (an artifact train never writes; `Scoring`
    /// refuses it) counts 0.5 instead of trapping.
    public static func predict(_ a: ModelArtifact, _ x: [String: Double]) -> Double {
        guard let trees = a.trees, !trees.isEmpty else { return 0.5 }
        return trees.reduce(0) { sum, t in
            let l = leaf(t, x)
            return sum + (t.leafProbabilities.indices.contains(l) ? t.leafProbabilities[l] : 0.5)
        } / Double(trees.count)
    }
}
