public import DifferentialPrivacy
import Foundation

/// DP k-means (Lloyd on noisy per-cluster counts and sums), with a private initialisation
/// from a noisy grid histogram instead of uniform random centres.
///
/// Features are clamped to their public bounds and scaled to [0, 1]. Budget split of the job's
/// epsilon E (documented in docs/models.md):
/// - 5%: noisy subject count n (sizes the grid);
/// - 10% (`init_share`): noisy histogram over a grid of b^d cells (b chosen from the noisy n so that cells
///   hold enough subjects to rise above the noise); initial centres = weighted k-means++ and
///   Lloyd on the cell centres weighted by their noisy counts (post-processing);
/// - 85%: T Lloyd iterations (`iterations`, default 6), E * 0.85 / T each, split equally between the per-cluster count
///   and the d per-cluster centred sums (bound 1 and (hi - lo)/2 per feature).
public enum KMeans {
    public static func fit(spec: TrainingSpec, session: PrivateSession, progress: (String) -> Void) throws -> ModelArtifact {
        let f = spec.features
        let d = f.count
        guard d >= 1 else { throw ModelError("kmeans needs at least one feature") }
        let k = spec.integer("k", 3)
        let iterations = spec.integer("iterations", 6)
        guard k >= 1 && k <= 64 else { throw ModelError("kmeans: k must be between 1 and 64") }
        guard iterations >= 1 && iterations <= 50 else { throw ModelError("kmeans: iterations must be between 1 and 50") }
        let initShare = spec.param("init_share", 0.1), countShare = 0.05
        guard initShare > 0 && initShare <= 0.9 else { throw ModelError("kmeans: init_share must be above 0 and at most 0.9") }
        let iterShare = (1 - initShare - countShare) / Double(iterations)

        // 1. Noisy n.
        let nRel = try session.release(AggregateRequest(consentPurpose: nil, nonNull: f.map(\.name), grouping: nil, coordinates: [.subjects]),
                                       shares: [try session.share(countShare)], label: "kmeans: subject count")
        let n = max(1, nRel[0].values[0].value)

        // 2. Grid histogram for the initial centres.
        let initEps = try session.share(initShare)
        let scale = 1 / initEps.noiseValue
        let targetCells = min(4096, max(pow(2, Double(d)), n * initEps.noiseValue))
        let bins = max(2, Int(pow(targetCells, 1 / Double(d)).rounded(.down)))
        progress("kmeans: initial centres from a noisy \(bins)^\(d) grid histogram")
        let hist = try session.release(AggregateRequest(consentPurpose: nil, grouping: .cell(features: f, bins: bins), coordinates: [.subjects]),
                                       shares: [initEps], label: "kmeans: grid histogram \(bins)^\(d)")
        var points: [[Double]] = [], weights: [Double] = []
        for (key, values) in hist {
            // Soft threshold: drop mass the noise alone would produce.
            let w = values[0].value - 2 * scale
            guard w > 0, var idx = Int(key) else { continue }
            var p = [Double](repeating: 0, count: d)
            for j in 0..<d { p[j] = (Double(idx % bins) + 0.5) / Double(bins); idx /= bins }
            points.append(p)
            weights.append(w)
        }
        var centroids = seed(points: points, weights: weights, k: k, d: d)
        centroids = weightedLloyd(points: points, weights: weights, centroids: centroids, rounds: 30)

        // 3. DP Lloyd.
        let coordinates: [Coordinate] = [.subjects] + f.map { Trainer.centredCoordinate($0, integral: spec.integral.contains($0.name)) }
        let e = try session.share(iterShare)
        guard let each = e.share(1 / Double(d + 1)) else { throw ModelError("kmeans: epsilon too small for \(iterations) iterations") }
        var sizes = [Double](repeating: 0, count: k)
        for t in 1...iterations {
            progress("kmeans: iteration \(t) of \(iterations)")
            let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .nearest(features: f, centroids: centroids), coordinates: coordinates),
                                        shares: [EpsilonShares](repeating: each, count: d + 1), label: "kmeans: iteration \(t) counts and sums")
            for (key, v) in r {
                guard let c = Int(key) else { continue }
                let count = v[0].value
                sizes[c] = max(0, count)
                // Too few subjects to beat the noise: keep the centre.
                guard count > 2 * v[0].scale + 1 else { continue }
                for j in 0..<d {
                    let mid = (f[j].lower + f[j].upper) / 2
                    let mean = mid + v[j + 1].value / count
                    centroids[c][j] = f[j].unit(mean)
                }
            }
        }
        var a = ModelArtifact(model: .kmeans, features: f, params: ["k": Double(k), "iterations": Double(iterations), "grid_bins": Double(bins)])
        a.centroids = centroids.map { c in (0..<d).map { f[$0].value(unit: c[$0]) } }
        a.clusterSizes = sizes
        return a
    }

    typealias EpsilonShares = Epsilon

    static func dist2(_ a: [Double], _ b: [Double]) -> Double {
        var s = 0.0
        for i in a.indices { let t = a[i] - b[i]; s += t * t }
        return s
    }

    /// Greedy weighted k-means++: the heaviest point first, then the point with the largest
    /// weight * squared distance to the chosen ones. Falls back to the diagonal when the
    /// histogram has too few points above the noise.
    static func seed(points: [[Double]], weights: [Double], k: Int, d: Int) -> [[Double]] {
        var chosen: [[Double]] = []
        if let first = weights.indices.max(by: { weights[$0] < weights[$1] }) { chosen.append(points[first]) }
        var best = points.map { chosen.isEmpty ? Double.infinity : dist2($0, chosen[0]) }
        while chosen.count < k {
            var arg = -1, top = 0.0
            for i in points.indices where weights[i] * best[i] > top { top = weights[i] * best[i]; arg = i }
            guard arg >= 0 else { break }
            chosen.append(points[arg])
            for i in points.indices { best[i] = min(best[i], dist2(points[i], points[arg])) }
        }
        var i = 0
        while chosen.count < k {
            let t = (Double(i) + 0.5) / Double(k)
            chosen.append([Double](repeating: t, count: d))
            i += 1
        }
        return chosen
    }

    static func weightedLloyd(points: [[Double]], weights: [Double], centroids start: [[Double]], rounds: Int) -> [[Double]] {
        var c = start
        guard !points.isEmpty else { return c }
        let d = c[0].count
        for _ in 0..<rounds {
            var sum = [[Double]](repeating: [Double](repeating: 0, count: d), count: c.count)
            var w = [Double](repeating: 0, count: c.count)
            for (p, wt) in zip(points, weights) {
                var arg = 0, bd = Double.infinity
                for (j, cj) in c.enumerated() { let dd = dist2(p, cj); if dd < bd { bd = dd; arg = j } }
                w[arg] += wt
                for t in 0..<d { sum[arg][t] += wt * p[t] }
            }
            for j in c.indices where w[j] > 0 { c[j] = sum[j].map { $0 / w[j] } }
        }
        return c
    }

    /// The index of the nearest centroid (in [0,1] units), ties to the lowest index.
    public static func nearest(_ unitPoint: [Double], _ unitCentroids: [[Double]]) -> Int {
        var arg = 0, bd = Double.infinity
        for (j, c) in unitCentroids.enumerated() { let dd = dist2(unitPoint, c); if dd < bd { bd = dd; arg = j } }
        return arg
    }
}
