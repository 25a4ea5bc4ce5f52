import Foundation

/// Low-rank approximation of a symmetric matrix, for the matrix-factorisation recommender
/// (McSherry & Mironov 2009): the noise of a DP release spreads over all n eigen-directions,
/// the signal of an item-item matrix sits in a few, so keeping the top k denoises it.
/// Post-processing only: the input is already released.
enum LowRank {
    /// The k eigenpairs of the symmetric n x n matrix `a` (row-major) with the largest
    /// eigenvalues, by subspace iteration from a fixed start (deterministic) and a Rayleigh-Ritz
    /// step; eigenvalues descending, vectors unit length (`vectors[f]` has n entries).
    static func topEigen(_ a: [Double], n: Int, k: Int, iterations: Int = 60) -> (values: [Double], vectors: [[Double]]) {
        precondition(a.count == n * n && k >= 1)
        let k = min(k, n)
        // Shift by the Gershgorin bound so every eigenvalue is >= 0: the iteration then finds the
        // largest (signed) eigenvalues, not the largest in magnitude (noise has negative ones).
        var shift = 0.0
        for i in 0..<n { shift = max(shift, (0..<n).reduce(0) { $0 + abs(a[i * n + $1]) }) }
        // Start: a fixed pseudo-random basis (SplitMix64), orthonormalised.
        var state: UInt64 = 0x5EED
        func next() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53) - 0.5
        }
        var x = (0..<k).map { _ in (0..<n).map { _ in next() } }
        orthonormalise(&x)
        func multiply(_ v: [Double]) -> [Double] {
            var out = [Double](repeating: 0, count: n)
            for i in 0..<n {
                var s = shift * v[i]
                let row = i * n
                for j in 0..<n { s += a[row + j] * v[j] }
                out[i] = s
            }
            return out
        }
        for _ in 0..<iterations {
            x = x.map(multiply)
            orthonormalise(&x)
        }
        // Rayleigh-Ritz: T = Xᵀ A X (k x k), its eigenvectors W, vectors X W.
        let ax = x.map { v in multiply(v).enumerated().map { $0.element - shift * v[$0.offset] } }
        var t = [Double](repeating: 0, count: k * k)
        for p in 0..<k { for q in 0..<k { t[p * k + q] = zip(x[p], ax[q]).reduce(0) { $0 + $1.0 * $1.1 } } }
        for p in 0..<k { for q in (p + 1)..<max(p + 1, k) { let m = (t[p * k + q] + t[q * k + p]) / 2; t[p * k + q] = m; t[q * k + p] = m } }
        let (values, w) = jacobi(t, n: k)
        let order = values.indices.sorted { values[$0] > values[$1] }
        let vectors = order.map { c in (0..<n).map { i in (0..<k).reduce(0) { $0 + x[$1][i] * w[$1 * k + c] } } }
        return (order.map { values[$0] }, vectors)
    }

    /// Modified Gram-Schmidt on the rows; a row that vanishes is replaced by a unit vector.
    static func orthonormalise(_ x: inout [[Double]]) {
        for p in x.indices {
            for q in 0..<p {
                let d = zip(x[p], x[q]).reduce(0) { $0 + $1.0 * $1.1 }
                for i in x[p].indices { x[p][i] -= d * x[q][i] }
            }
            let norm = x[p].reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-300 {
                for i in x[p].indices { x[p][i] /= norm }
            } else {
                x[p] = x[p].indices.map { $0 == p % max(1, x[p].count) ? 1 : 0 }
            }
        }
    }

    /// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: eigenvalues,
    /// and the eigenvectors as the columns of the row-major n x n result.
    static func jacobi(_ m: [Double], n: Int) -> ([Double], [Double]) {
        var a = m
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += a[p * n + q] * a[p * n + q] } }
            if off < 1e-30 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where abs(a[p * n + q]) > 1e-300 {
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for r in 0..<n {
                        let arp = a[r * n + p], arq = a[r * n + q]
                        a[r * n + p] = c * arp - s * arq
                        a[r * n + q] = s * arp + c * arq
                    }
                    for r in 0..<n {
                        let apr = a[p * n + r], aqr = a[q * n + r]
                        a[p * n + r] = c * apr - s * aqr
                        a[q * n + r] = s * apr + c * aqr
                    }
                    for r in 0..<n {
                        let vrp = v[r * n + p], vrq = v[r * n + q]
                        v[r * n + p] = c * vrp - s * vrq
                        v[r * n + q] = s * vrp + c * vrq
                    }
                }
            }
        }
        return ((0..<n).map { a[$0 * n + $0] }, v)
    }
}
