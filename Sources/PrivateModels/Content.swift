import Foundation

/// Content similarity of catalog items from their descriptions (public catalog data, not
/// personal data: computing it spends no privacy budget). TF-IDF as scikit-learn's
/// `TfidfVectorizer(sublinear_tf=True)` computes it: tokens are runs of two or more letters or
/// digits, lower-cased; tf = 1 + ln(count); idf = ln((1 + n) / (1 + df)) + 1; rows L2-normalised;
/// similarity is the cosine.
enum ContentSimilarity {
    static func tokens(_ text: String) -> [String] {
        var out: [String] = []
        var cur = ""
        for ch in text.lowercased() {
            if ch.isLetter || ch.isNumber || ch == "_" { cur.append(ch) } else {
                if cur.count >= 2 { out.append(cur) }
                cur = ""
            }
        }
        if cur.count >= 2 { out.append(cur) }
        return out
    }

    /// Every text's TF-IDF vector, L2-normalised, as (term ids ascending, weights rounded to 1e-6).
    static func vectors(texts: [String]) -> [(terms: [Int], weights: [Double])] {
        let n = texts.count
        var vocab: [String: Int] = [:]
        var df: [Int] = []
        var counts: [[Int: Int]] = []
        counts.reserveCapacity(n)
        // Term ids in order of the sorted vocabulary, so the artifact does not depend on text order.
        for t in texts {
            var c: [Int: Int] = [:]
            for tok in tokens(t) {
                let id: Int
                if let v = vocab[tok] { id = v } else { id = vocab.count; vocab[tok] = id; df.append(0) }
                c[id, default: 0] += 1
            }
            for id in c.keys { df[id] += 1 }
            counts.append(c)
        }
        var rank = [Int](repeating: 0, count: vocab.count)
        for (r, (_, id)) in vocab.sorted(by: { $0.key < $1.key }).enumerated() { rank[id] = r }
        return counts.map { c in
            var row = c.map { (rank[$0.key], (1 + log(Double($0.value))) * (log(Double(1 + n) / Double(1 + df[$0.key])) + 1)) }
            row.sort { $0.0 < $1.0 }
            let norm = row.reduce(0) { $0 + $1.1 * $1.1 }.squareRoot()
            return (row.map(\.0), row.map { norm > 0 ? ($0.1 / norm * 1e6).rounded() / 1e6 : 0 })
        }
    }

    /// The cosine of the subject's profile (the normalised sum of the vectors of `owned`) with
    /// each of `targets`; 0 when the profile is empty.
    static func profileScores(terms: [[Int]], weights: [[Double]], owned: [Int], targets: Range<Int>) -> [Double] {
        var profile: [Int: Double] = [:]
        for i in owned where i < terms.count && i < weights.count {
            for (t, w) in zip(terms[i], weights[i]) { profile[t, default: 0] += w }
        }
        let norm = profile.values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard norm > 0 else { return [Double](repeating: 0, count: targets.count) }
        return targets.map { j in
            guard j < terms.count && j < weights.count else { return 0 }
            var dot = 0.0
            for (t, w) in zip(terms[j], weights[j]) { dot += w * (profile[t] ?? 0) }
            return dot / norm
        }
    }
}
