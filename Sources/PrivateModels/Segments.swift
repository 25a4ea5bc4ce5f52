public import DifferentialPrivacy
import Foundation

/// User profiling: size and mean of each feature per segment, where a segment is a value of
/// a categorical attribute (over its public domain) or a cluster of a k-means artifact.
///
/// One release: per segment, the subject count (bound 1) and each feature's centred sum
/// (bound (hi - lo)/2), the job's epsilon split equally over the d + 1 coordinates. Since a
/// subject is in one segment, the whole release is E-DP. mean = centre + sum / count.
public enum Segments {
    /// Why a k-means artifact cannot define segments (nil: it can): 1 to 64 centroids, each with
    /// one finite number per feature, and every feature's bounds two finite numbers lower < upper.
    /// The gate checks this before the job's budget is charged.
    public static func clustersProblem(_ m: ModelArtifact) -> String? {
        guard let c = m.centroids, !c.isEmpty, c.count <= 64 else { return "the artifact has no centroids (1 to 64)" }
        guard !m.features.isEmpty, m.featureBounds.count == m.features.count,
              m.featureBounds.allSatisfy({ $0.count == 2 && $0[0].isFinite && $0[1].isFinite && $0[0] < $0[1] }) else {
            return "the artifact's feature bounds are not one pair lower < upper per feature"
        }
        guard c.allSatisfy({ $0.count == m.features.count && $0.allSatisfy(\.isFinite) }) else {
            return "the artifact's centroids do not have one finite number per feature"
        }
        return nil
    }

    public static func fit(spec: TrainingSpec, session: PrivateSession) throws -> ModelArtifact {
        let f = spec.features
        let grouping: Grouping
        let by: String
        if let s = spec.segmentBy {
            grouping = .attribute(name: s.name, domain: s.domain)
            by = s.name
        } else if let m = spec.clusters, let c = m.centroids {
            if let problem = clustersProblem(m) { throw ModelError("segments: params.from_model: \(problem)") }
            let mf = m.scaledFeatures
            grouping = .nearest(features: mf, centroids: c.map { p in p.indices.map { mf[$0].unit(p[$0]) } })
            by = "kmeans"
        } else {
            throw ModelError("segments needs params.by (a categorical attribute) or params.from_model (a kmeans artifact)")
        }
        let d = f.count
        let coordinates: [Coordinate] = [.subjects] + f.map { Trainer.centredCoordinate($0, integral: spec.integral.contains($0.name)) }
        guard let each = session.epsilon.share(1 / Double(d + 1)) else { throw ModelError("segments: epsilon too small") }
        let r = try session.release(AggregateRequest(consentPurpose: nil, nonNull: f.map(\.name), grouping: grouping, coordinates: coordinates),
                                    shares: [Epsilon](repeating: each, count: d + 1), label: "segments: count and sums per segment")
        var a = ModelArtifact(model: .segments, features: f, params: [:])
        a.segmentBy = by
        a.segments = r.map { key, v in
            let n = v[0].value
            var means: [String: Double] = [:]
            for j in 0..<d {
                let mid = (f[j].lower + f[j].upper) / 2
                means[f[j].name] = n >= 1 ? min(f[j].upper, max(f[j].lower, mid + v[j + 1].value / n)) : mid
            }
            return Segment(key: key, size: max(0, n), means: means)
        }
        return a
    }
}
