public import DifferentialPrivacy
import Foundation

/// Linear and logistic regression from noisy sufficient statistics.
///
/// Two steps (the job's epsilon E split `rangeShare` / rest; step 1 only with `private_ranges`
/// 1, the default of logistic regression; linear regression uses the declared bounds):
///
/// 1. **Private clipping ranges.** Public bounds are often far wider than the data (a balance
///    bounded by [-10,000, 110,000] mostly lies within a few thousand of 0), and the noise of
///    the second release is fixed by the range while the signal shrinks with it. So the first
///    releases are a noisy 64-bin histogram of every feature (and a linear target) over its
///    public bounds, and each range shrinks to the bins holding the middle 98% of the noisy mass
///    when that at least halves it (`privateRanges`). Choosing from a DP release is free.
/// 2. **Sufficient statistics** on the ranges so chosen: features and target clamped and scaled
///    to z in [-1, 1], the upper triangle of ZᵀZ (Z with a column of ones: the count, the sums of
///    z_i, the sums of z_i z_j) and Zᵀz_y: T = 1 + d + d(d+1)/2 + 1 + d coordinates, each
///    bounded by 1 per subject, the rest of E split equally (noise scale b = T / E₂).
///
/// - linear: ridge (AdaSSP-style, Wang 2018): λ = 2·sqrt(2)·b·sqrt(p) with p = d + 1, an upper
///   estimate of the noise matrix's spectral norm that depends on public quantities only; if
///   the regularised noisy matrix is still not positive definite, λ doubles until its Cholesky
///   factorisation succeeds. So it never blows up.
/// - logistic: the second-order Taylor expansion of the logistic loss around the constant
///   model t₀ = logit(ȳ), ȳ the rate of y = 1 read off the released statistics
///   (ȳ = (Σz_y / n + 1) / 2, clamped to [0.01, 0.99]), with w = ȳ(1 - ȳ) = σ'(t₀):
///   log(1 + e^t) - y t ≈ const + (ȳ - y)(t - t₀) + w (t - t₀)²/2, whose minimiser is
///   θ = θ₀ + δ with (w ZᵀZ + w λ I) δ = Zᵀ(y - ȳ) = Zᵀz_y / 2 + Zᵀ1 (1/2 - ȳ), θ₀ = (t₀, 0, ...),
///   Zᵀ1 the first column of ZᵀZ (n and the sums of z): the same statistics, post-processing
///   only. The ridge w λ is λ scaled like the matrix it regularises (the noise of w ZᵀZ is w
///   times that of ZᵀZ). Expanding at t = 0 instead (ȳ = 1/2) squeezes predictions towards
///   1/2 when the rate is far from it: on bank marketing (rate 0.12) nothing was predicted
///   below 0.09 and the log loss was 0.333 against 0.292 non-private (docs/models.md).
///   The 0/1 target keeps its bounds.
///
/// The artifact's `feature_bounds` are the ranges used (inputs are clamped to them before the
/// coefficients apply: `predict`); `params.range_share` records the split.
public enum Regression {
    /// Share of the job's epsilon spent on choosing the clipping ranges.
    public static let rangeShare = 0.2

    /// Bins of the per-variable histograms that choose the clipping ranges.
    public static let rangeBins = 64

    /// Release 1: per variable, a noisy histogram over `rangeBins` equal bins of its public
    /// range (one count per subject: bound 1; the variables share `share` equally, sequential
    /// composition). Each bin's count minus ln(bins) noise scales (about the largest count noise
    /// alone gives) is its weight; the range becomes [left edge of the bin where the cumulated
    /// weight reaches 1%, right edge of the bin where it reaches 99%], when that at least halves
    /// the public range.
    static func privateRanges(_ fs: [ScaledFeature], session: PrivateSession, share: Epsilon, model: String = "regression") throws -> [ScaledFeature] {
        guard let each = share.share(1 / Double(fs.count)) else { throw ModelError("\(model): epsilon too small") }
        return try fs.map { f in
            let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .cell(features: [f], bins: rangeBins), coordinates: [.subjects]),
                                        shares: [each], label: "\(model): clipping range of \(f.name) (\(rangeBins)-bin histogram)")
            var w = [Double](repeating: 0, count: rangeBins)
            // ln(bins) noise scales: about the largest of `rangeBins` pure-noise counts, so empty
            // bins rarely keep weight (with 2 scales, ~7% of them did, enough to stretch a range).
            let bar = log(Double(rangeBins)) * (r.first?.values[0].scale ?? 0)
            for (key, v) in r { if let b = Int(key), b >= 0, b < rangeBins { w[b] = max(0, v[0].value - bar) } }
            let total = w.reduce(0, +)
            guard total > 0 else { return f }
            var acc = 0.0, first = 0, last = rangeBins - 1
            var sawFirst = false
            for b in 0..<rangeBins {
                acc += w[b]
                if !sawFirst && acc >= 0.01 * total { first = b; sawFirst = true }
                if acc >= 0.99 * total { last = b; break }
            }
            guard Double(last - first + 1) <= Double(rangeBins) / 2 else { return f }
            let width = (f.upper - f.lower) / Double(rangeBins)
            return ScaledFeature(name: f.name, lower: f.lower + Double(first) * width, upper: f.lower + Double(last + 1) * width)
        }
    }

    public static func fit(spec: TrainingSpec, session: PrivateSession, logistic: Bool) throws -> ModelArtifact {
        guard let target = spec.target else { throw ModelError("regression needs a target") }
        let d = spec.features.count
        guard d >= 1 else { throw ModelError("regression needs at least one feature") }
        // Private clipping ranges: by default for logistic regression only. For a linear model
        // the tails often carry the signal (a few big spenders): clipping features and target at
        // their 1st/99th percentiles biased the slope so much that R² fell to 0.06 of the
        // non-private model on online retail, where the declared bounds gave 0.92.
        let useRanges = spec.param("private_ranges", logistic ? 1 : 0)
        guard useRanges == 0 || useRanges == 1 else { throw ModelError("regression: private_ranges is 0 or 1") }
        var f = spec.features, y = target
        if useRanges == 1 {
            let ranged = try privateRanges(logistic ? spec.features : spec.features + [target], session: session, share: try session.share(rangeShare))
            f = Array(ranged.prefix(d))
            if !logistic { y = ranged[d] }
        }
        let statShare = useRanges == 1 ? 1 - rangeShare : 1
        let p = d + 1
        let g = BoundedSum.grid(forBound: 1, integral: false)
        var coordinates: [Coordinate] = [.subjects]
        var slots: [(Int, Int)] = [(0, 0)]   // (row, col) of ZᵀZ; col == p: Zᵀz_y
        for i in 0..<d { coordinates.append(.product(left: f[i], right: nil, grid: g)); slots.append((0, i + 1)) }
        for i in 0..<d { for j in i..<d { coordinates.append(.product(left: f[i], right: f[j], grid: g)); slots.append((i + 1, j + 1)) } }
        coordinates.append(.product(left: y, right: nil, grid: g)); slots.append((0, p))
        for i in 0..<d { coordinates.append(.product(left: f[i], right: y, grid: g)); slots.append((i + 1, p)) }
        let t = coordinates.count
        guard let each = try session.share(statShare).share(1 / Double(t)) else { throw ModelError("regression: epsilon too small") }
        let r = try session.release(AggregateRequest(consentPurpose: nil, nonNull: f.map(\.name) + [y.name], grouping: nil, coordinates: coordinates),
                                    shares: [Epsilon](repeating: each, count: t), label: "regression: sufficient statistics ZᵀZ, Zᵀy")
        var a = [[Double]](repeating: [Double](repeating: 0, count: p), count: p)
        var c = [Double](repeating: 0, count: p)
        for (s, v) in zip(slots, r[0].values) {
            if s.1 == p { c[s.0] = v.value } else { a[s.0][s.1] = v.value; a[s.1][s.0] = v.value }
        }
        let n = max(1, a[0][0])
        let b = r[0].values[0].scale
        var lambda = 2 * sqrt(2) * b * sqrt(Double(p))
        // Logistic: the expansion point t₀ = logit(ȳ) and its curvature w (1 for linear).
        let rate = logistic ? min(0.99, max(0.01, (c[0] / n + 1) / 2)) : 0.5
        let t0 = logistic ? log(rate / (1 - rate)) : 0
        let w = logistic ? rate * (1 - rate) : 1
        let rhs = logistic ? (0..<p).map { c[$0] / 2 + a[$0][0] * (0.5 - rate) } : c
        var theta: [Double]
        while true {
            var m = a
            for i in 0..<p { for j in 0..<p { m[i][j] = w * a[i][j] }; m[i][i] += w * lambda }
            if let s = LinearAlgebra.solveCholesky(m, rhs) { theta = s; break }
            lambda = max(lambda * 2, 1e-6)
            if lambda > 1e12 * max(1, n) { theta = [Double](repeating: 0, count: p); break }
        }
        theta[0] += t0
        // Back to the features' own units: z_j = s_j x_j + o_j.
        var coef = [Double](repeating: 0, count: d)
        var intercept = theta[0]
        for j in 0..<d {
            let s = 2 / (f[j].upper - f[j].lower), o = -2 * f[j].lower / (f[j].upper - f[j].lower) - 1
            coef[j] = theta[j + 1] * s
            intercept += theta[j + 1] * o
        }
        if !logistic {
            // z_y = s_y y + o_y  =>  y = (z_y - o_y) / s_y.
            let sy = 2 / (y.upper - y.lower), oy = -2 * y.lower / (y.upper - y.lower) - 1
            coef = coef.map { $0 / sy }
            intercept = (intercept - oy) / sy
        }
        var art = ModelArtifact(model: logistic ? .logistic_regression : .linear_regression, features: f,
                                params: ["ridge_lambda": lambda, "private_ranges": useRanges, "range_share": useRanges == 1 ? rangeShare : 0,
                                         "target_lower": y.lower, "target_upper": y.upper])
        if logistic { art.params["expansion_point"] = (t0 * 1e6).rounded() / 1e6 }
        art.target = y.name
        art.coefficients = coef
        art.intercept = intercept
        return art
    }

    /// Prediction in the target's units (linear) or the probability (logistic), inputs clamped
    /// to the artifact's feature bounds (the ranges the model was trained on).
    public static func predict(_ a: ModelArtifact, _ x: [Double]) -> Double {
        var s = a.intercept ?? 0
        for (i, (c, v)) in zip(a.coefficients ?? [], x).enumerated() {
            let b = i < a.featureBounds.count ? a.featureBounds[i] : []
            s += c * min(b.last ?? .infinity, max(b.first ?? -.infinity, v))
        }
        return a.model == .logistic_regression ? 1 / (1 + exp(-s)) : s
    }
}

enum LinearAlgebra {
    /// Solves m x = b for symmetric m; nil when m is not (numerically) positive definite.
    static func solveCholesky(_ m: [[Double]], _ b: [Double]) -> [Double]? {
        let n = b.count
        var l = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in 0...i {
                var s = m[i][j]
                for k in 0..<j { s -= l[i][k] * l[j][k] }
                if i == j {
                    guard s > 1e-12 * max(1, abs(m[i][i])), s.isFinite else { return nil }
                    l[i][i] = s.squareRoot()
                } else {
                    l[i][j] = s / l[j][j]
                }
            }
        }
        var y = [Double](repeating: 0, count: n)
        for i in 0..<n { var s = b[i]; for k in 0..<i { s -= l[i][k] * y[k] }; y[i] = s / l[i][i] }
        var x = [Double](repeating: 0, count: n)
        for i in stride(from: n - 1, through: 0, by: -1) { var s = y[i]; for k in (i + 1)..<n { s -= l[k][i] * x[k] }; x[i] = s / l[i][i] }
        return x.allSatisfy(\.isFinite) ? x : nil
    }
}
