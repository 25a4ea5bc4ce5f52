public import DifferentialPrivacy
import Foundation

/// Item-based recommender from noisy item popularity and item-item co-occurrence, with content
/// similarity from a declared catalog's descriptions.
///
/// Each subject's distinct items of the event kind are capped at `max_items_per_subject` (m,
/// the most recently used, ties broken by a fixed hash). Budget split of the job's epsilon E
/// (`popularity_share`, default 1 when the catalog gives descriptions, else 0.8):
/// - first, 5% (`subjectCountShare`) for a noisy count of the subjects (the artifact's
///   `privacy.noisy_subjects`, so a job over almost nobody says so); the shares below are of
///   the remaining 95%;
/// - without a catalog only, first `selection_share` (default 0.3) for *item selection*: each
///   subject votes for at most k = `selection_items` (default 1) of its items (its k most
///   recently used, over all its events), and only items whose noisy vote count reaches the
///   threshold T of the exact discrete-Laplace tail are named ((ε_s, δ)-DP, δ the job's `delta`,
///   default 1e-6; proof in `ItemPopularity.release` and docs/differential-privacy.md, "Item
///   selection with a small per-subject bound"). The vote bound k is separate from, and much
///   smaller than, the cap m on everything else: T grows like k·ln(k/δ)/ε_s, so votes from m = 20
///   items set a bar no item of a shop with a few thousand customers reaches. With a catalog
///   there is no selection and this share is not taken. The shares below are of what is left;
/// - 80%: item popularity, each subject adding 1 to each of its <= m items (L1 bound m), counted
///   over the events from `events_since:` on when the job sets it (recent popularity ranks the
///   items a shop sells now; on online retail two months beat all history by 0.08 HR@10):
///   one noisy count per catalog item (`items_from`), or per selected item.
/// - 20%: co-occurrence among the V most popular released items (`vocabulary_size`, default
///   200) over all events: with n a subject's distinct items among them (<= m), each unordered
///   pair gets 1/(n - 1) (on a grid of 1/1024), so each item a subject holds spreads one unit
///   over its partners and the subject's total is n/2 <= m/2 (L1 bound m/2).
///   `popularity_share: 1` skips this release.
/// Similarity sim(i, j) = max(0, C_ij - 3 noise scales) / sqrt(P_i P_j) (P the noisy
/// popularity, floored); each item keeps its `neighbors` (default 50) most similar items.
/// Content: when the catalog file gives descriptions (`ITEM<TAB>DESCRIPTION` lines), the artifact
/// keeps every item's TF-IDF vector (public data, no budget); `recommend` adds to the score of
/// the `candidates` (default 300) most popular items `content_weight` (default 5) times the
/// cosine between the item and the subject's own items.
/// Matrix factorisation (`factors: k`, McSherry & Mironov 2009): instead of thresholding each
/// noisy co-occurrence, the normalised co-occurrence matrix C_ij / sqrt(P_i P_j) of the
/// vocabulary is replaced by its projection on its top k eigenvectors (the noise spreads over all
/// V directions, the signal sits in a few); item factors F = U sqrt(Lambda) go into the artifact
/// and the similarities are F_i . F_j. Post-processing of the same release: no extra budget.
/// Segments (`by:` a categorical attribute, "customers like you bought"): a share
/// `segment_share` (default 0.5) of the popularity budget releases, for every segment of the
/// attribute's public domain, the noisy popularity of the `segment_vocabulary` (default 300)
/// most popular items (grouping `segmentItems`: a subject is in one segment, L1 bound m).
/// `recommend` then ranks by the subject's segment popularity shrunk towards the global one,
/// (c_sj + α g_j) / (n_s + α), with g_j the global share, n_s the segment's noisy total and
/// α = `segment_prior` (default 200 pseudo-counts), so a small segment's noise is not trusted.
public enum Recommender {
    /// The share of the job's epsilon spent on the noisy subject count.
    public static let subjectCountShare = 0.05
    /// Without a catalog: the items each subject votes for in the item selection (k), and the
    /// share of the epsilon left after the subject count that the selection spends. Chosen by
    /// the time-split evaluation on online retail (docs/models.md, "Item selection").
    public static let defaultSelectionItems = 1
    public static let defaultSelectionShare = 0.3
    /// A released vocabulary under this many items makes the job warn: `recommend --top` is at
    /// most a tenth of the vocabulary, so below 100 items it cannot answer a top 10.
    public static let smallVocabulary = 100

    public static func fit(spec: TrainingSpec, session: PrivateSession, progress: (String) -> Void) throws -> ModelArtifact {
        guard let kind = spec.events else { throw ModelError("recommender needs events: (an event kind)") }
        let m = spec.integer("max_items_per_subject", 20)
        let v = spec.integer("vocabulary_size", 200)
        let l = spec.integer("neighbors", 50)
        guard l >= 1 && l <= 2000 else { throw ModelError("recommender: neighbors must be between 1 and 2000") }
        let thresholdScales = spec.param("similarity_threshold", 3)
        let popularityWeight = spec.param("popularity_weight", 5)
        // With descriptions, content is the personalisation and all of epsilon buys popularity;
        // without, 20% buys the co-occurrence (docs/models.md has both measured).
        let described = spec.catalogText != nil && spec.catalog != nil
        let factors = spec.integer("factors", 0)
        let popularityShare = spec.param("popularity_share", described && factors == 0 ? 1 : 0.8)
        let candidates = spec.integer("candidates", 300)
        let contentWeight = spec.param("content_weight", 5)
        guard popularityShare >= 0.05 && popularityShare <= 1 else { throw ModelError("recommender: popularity_share must be between 0.05 and 1") }
        guard candidates >= 0 && candidates <= 10_000 && Double(candidates) == spec.param("candidates", 300) else {
            throw ModelError("recommender: candidates must be a whole number between 0 and 10000 (0: rank by popularity values)")
        }
        guard contentWeight >= 0 && contentWeight <= 1000 else { throw ModelError("recommender: content_weight must be between 0 and 1000") }
        guard thresholdScales >= 0 && thresholdScales <= 100 else { throw ModelError("recommender: similarity_threshold must be between 0 and 100 (noise scales)") }
        guard popularityWeight >= 0 && popularityWeight <= 1000 else { throw ModelError("recommender: popularity_weight must be between 0 and 1000") }
        guard m >= 2 && m <= 1000 else { throw ModelError("recommender: max_items_per_subject must be between 2 and 1000") }
        guard v >= 2 && v <= 2000 else { throw ModelError("recommender: vocabulary_size must be between 2 and 2000") }
        guard factors >= 0 && factors <= 100 else { throw ModelError("recommender: factors must be between 0 (no factorisation) and 100") }
        guard factors == 0 || popularityShare < 1 else { throw ModelError("recommender: factors factorises the co-occurrence; popularity_share must be below 1") }
        let selectionItems = spec.integer("selection_items", defaultSelectionItems)
        let selectionShare = spec.param("selection_share", defaultSelectionShare)
        guard selectionItems >= 1 && selectionItems <= 50 else { throw ModelError("recommender: selection_items must be between 1 and 50") }
        guard selectionShare >= 0.05 && selectionShare <= 0.9 else { throw ModelError("recommender: selection_share must be between 0.05 and 0.9") }
        let segmentShare = spec.segmentBy == nil ? 0 : spec.param("segment_share", 0.5)
        let segmentPrior = spec.param("segment_prior", 200)
        let segmentVocabulary = spec.integer("segment_vocabulary", 300)
        if spec.segmentBy != nil {
            guard segmentShare >= 0.05 && segmentShare <= 0.95 else { throw ModelError("recommender: segment_share must be between 0.05 and 0.95") }
            guard segmentPrior >= 0 && segmentPrior <= 1e9 else { throw ModelError("recommender: segment_prior must be between 0 and 1e9") }
            guard segmentVocabulary >= 1 && segmentVocabulary <= 5000 else { throw ModelError("recommender: segment_vocabulary must be between 1 and 5000") }
        }
        // A noisy subject count (`subjectCountShare` of epsilon; the shares below split the
        // rest): nothing else the recommender releases counts subjects, and the artifact reports
        // how many it learnt from (privacy.noisy_subjects).
        progress("recommender: noisy subject count")
        _ = try session.release(AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects]),
                                shares: [try session.share(subjectCountShare)], label: "recommender: subject count")
        // Without a catalog, the item selection's share comes next; the shares below split what
        // is left (with a catalog there is no selection: nothing is set aside for it).
        let selection = spec.catalog == nil ? (k: selectionItems, epsilon: try session.share((1 - subjectCountShare) * selectionShare)) : nil
        let rest = (1 - subjectCountShare) * (selection == nil ? 1 : 1 - selectionShare)
        let popEps = try session.share(rest * popularityShare * (1 - segmentShare))
        let segEps = segmentShare > 0 ? try session.share(rest * popularityShare * segmentShare) : nil
        let coEps = popularityShare < 1 ? try session.share(rest * (1 - popularityShare)) : nil
        let (items, threshold) = try ItemPopularity.release(model: "recommender", kind: kind, maxItems: m, since: spec.eventsSince,
                                                            spec: spec, session: session, epsilon: popEps, selection: selection, progress: progress)
        let names = items.map(\.0)
        let pop = items.map { max(0, $0.1) }
        let vocab = Array(names.prefix(v))
        var itemFactors: [[Double]]? = nil
        var neighborItems = [[Int]](repeating: [], count: names.count)
        var neighborScores = [[Double]](repeating: [], count: names.count)
        if vocab.count >= 2, let coEps {
            progress("recommender: noisy co-occurrence of the \(vocab.count) most popular items")
            let unit = 1024
            let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .itemPairs(vocabulary: vocab),
                                                         coordinates: [.itemPairWeight(kind: kind, maxItems: m, unit: unit)]),
                                        shares: [coEps], label: "recommender: item-item co-occurrence")
            let floorP = max(1, 2 * Double(m) / popEps.noiseValue)
            var sims = [[(Int, Double)]](repeating: [], count: vocab.count)
            if factors > 0 {
                // Matrix factorisation: the normalised noisy co-occurrence, not thresholded, is
                // projected on its top `factors` eigenvectors; similarities are the low-rank
                // reconstruction F_i . F_j (positive part), F = U sqrt(Lambda) the item factors.
                let n = vocab.count
                var matrix = [Double](repeating: 0, count: n * n)
                for (key, values) in r {
                    let parts = key.split(separator: "|")
                    guard parts.count == 2, let i = Int(parts[0]), let j = Int(parts[1]), i < n, j < n, i != j else { continue }
                    let x = values[0].value / (max(pop[i], floorP) * max(pop[j], floorP)).squareRoot()
                    matrix[i * n + j] = x
                    matrix[j * n + i] = x
                }
                let (values, vectors) = LowRank.topEigen(matrix, n: n, k: min(factors, n))
                let kept = values.indices.filter { values[$0] > 0 }
                let f = (0..<n).map { i in kept.map { vectors[$0][i] * values[$0].squareRoot() } }
                itemFactors = f.map { $0.map { ($0 * 1e6).rounded() / 1e6 } }
                for i in 0..<n {
                    for j in (i + 1)..<n {
                        let s = zip(f[i], f[j]).reduce(0) { $0 + $1.0 * $1.1 }
                        guard s > 0 else { continue }
                        sims[i].append((j, s))
                        sims[j].append((i, s))
                    }
                }
            } else {
                for (key, values) in r {
                    let parts = key.split(separator: "|")
                    guard parts.count == 2, let i = Int(parts[0]), let j = Int(parts[1]) else { continue }
                    // Shrink by the noise: with ~V²/2 released pairs, pure noise puts many of them
                    // above 0 (half) and a few above any fixed bar, so only the part of a count
                    // above `similarity_threshold` noise scales counts as similarity.
                    let c = values[0].value - thresholdScales * values[0].scale
                    guard c > 0 else { continue }
                    let s = c / (max(pop[i], floorP) * max(pop[j], floorP)).squareRoot()
                    sims[i].append((j, s))
                    sims[j].append((i, s))
                }
            }
            for i in vocab.indices {
                let top = sims[i].sorted { $0.1 > $1.1 }.prefix(l)
                neighborItems[i] = top.map(\.0)
                neighborScores[i] = top.map { ($0.1 * 1e6).rounded() / 1e6 }
            }
        }
        var segmentPopularity: [[Double]]? = nil
        if let (by, domain) = spec.segmentBy, let segEps {
            let sv = Array(names.prefix(segmentVocabulary))
            progress("recommender: noisy popularity of \(sv.count) items in each of \(domain.count) segments by \(by)")
            let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: by, domain: domain, vocabulary: sv),
                                                         coordinates: [.itemPresence(kind: kind, maxItems: m, since: spec.eventsSince)]),
                                        shares: [segEps], label: "recommender: item popularity per \(by)")
            var table = [[Double]](repeating: [Double](repeating: 0, count: sv.count), count: domain.count)
            for (key, values) in r {
                let parts = key.split(separator: "|")
                guard parts.count == 2, let seg = Int(parts[0]), let i = Int(parts[1]), seg < domain.count, i < sv.count else { continue }
                table[seg][i] = (max(0, values[0].value) * 1000).rounded() / 1000
            }
            segmentPopularity = table
        }
        var contentTerms: [[Int]]? = nil, contentWeights: [[Double]]? = nil
        if let catalog = spec.catalog, let text = spec.catalogText, text.count == catalog.count, candidates > 0, contentWeight > 0 {
            progress("recommender: TF-IDF vectors of \(names.count) catalog descriptions")
            var textOf: [String: String] = [:]
            for (item, t) in zip(catalog, text) { textOf[item] = t }
            let v = ContentSimilarity.vectors(texts: names.map { textOf[$0] ?? "" })
            contentTerms = v.map(\.terms)
            contentWeights = v.map(\.weights)
        }
        var a = ModelArtifact(model: .recommender, features: [], params: ["max_items_per_subject": Double(m), "vocabulary_size": Double(vocab.count), "neighbors": Double(l),
                                                                          "similarity_threshold": thresholdScales, "popularity_weight": popularityWeight,
                                                                          "popularity_share": popularityShare, "candidates": Double(candidates),
                                                                          "content_weight": contentTerms == nil ? 0 : contentWeight])
        if let threshold { a.params["selection_threshold"] = threshold }
        if let selection {
            a.params["selection_items"] = Double(selection.k)
            a.params["selection_share"] = selectionShare
        }
        if let itemFactors {
            a.params["factors"] = Double(factors)
            a.params["similarity_threshold"] = nil   // the factorisation replaces the threshold
            a.itemFactors = itemFactors
        }
        if let (by, domain) = spec.segmentBy, let segmentPopularity {
            a.segmentBy = by
            a.segmentKeys = domain
            a.segmentPopularity = segmentPopularity
            a.params["segment_share"] = segmentShare
            a.params["segment_prior"] = segmentPrior
        }
        a.events = kind
        a.items = names
        a.itemSource = spec.catalog == nil ? "private_selection" : "catalog"
        a.popularity = pop.map { ($0 * 1000).rounded() / 1000 }
        a.neighborItems = neighborItems
        a.neighborScores = neighborScores
        a.contentTerms = contentTerms
        a.contentWeights = contentWeights
        if let t = spec.eventsSince {
            a.eventsSince = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(t)))
        }
        return a
    }

    /// Top-N items for a subject who has interacted with `owned` (never returned). The score of
    /// item j, in units of the model's largest similarity S:
    ///   sum(sim(i, j) for i owned)                    (item-based co-occurrence)
    ///   + S * w * P_j / P_max                         (popularity; w = `popularity_weight`)
    ///   + S * w * c * cos(profile, j)                 (content, for the K = `candidates` most
    ///     popular items only; c = `content_weight`; profile: the normalised sum of the TF-IDF
    ///     vectors of the subject's items)
    /// Cold subjects and items without significant neighbours fall back to popularity. (Ranking
    /// the candidates by popularity rank instead of value measured 0.01-0.03 HR@10 worse.)
    public static func recommend(_ a: ModelArtifact, owned: Set<String>, segment: String? = nil, top: Int) -> [String] {
        // An artifact's arrays are checked against each other, not trusted: nothing below indexes
        // past them or converts an out-of-range number (a malformed artifact ranks nothing).
        guard let items = a.items, var pop = a.popularity, pop.count == items.count, pop.allSatisfy(\.isFinite) else { return [] }
        if let segment, let s = a.segmentKeys?.firstIndex(of: segment), let table = a.segmentPopularity, s < table.count {
            let shrunk = segmentPopularity(global: pop, segment: table[s], prior: a.params["segment_prior"] ?? 0)
            if shrunk.allSatisfy(\.isFinite) { pop = shrunk }
        }
        let ni = a.neighborItems ?? [], ns = a.neighborScores ?? []
        let maxPop = max(1, pop.max() ?? 1)
        let maxSim = max(1e-9, ns.lazy.compactMap(\.first).max() ?? 0)
        let w = (a.params["popularity_weight"] ?? 1e-3 / maxSim) * maxSim
        let candidates = a.params["candidates"] ?? 0
        let k = candidates.isFinite ? Int(min(Double(items.count), max(0, candidates.rounded(.down)))) : 0
        let c = a.params["content_weight"] ?? 0
        var score = [Double](repeating: 0, count: items.count)
        var ownedIndex = Set<Int>()
        for (i, name) in items.enumerated() where owned.contains(name) {
            ownedIndex.insert(i)
            guard i < ni.count, i < ns.count else { continue }
            for (j, s) in zip(ni[i], ns[i]) where j >= 0 && j < score.count { score[j] += s }
        }
        for j in items.indices { score[j] += w * pop[j] / maxPop }
        if c > 0, k > 0, let terms = a.contentTerms, let weights = a.contentWeights, terms.count >= k, weights.count >= k,
           zip(terms, weights).allSatisfy({ $0.count == $1.count }) {
            let cos = ContentSimilarity.profileScores(terms: terms, weights: weights, owned: ownedIndex.sorted(), targets: 0..<k)
            for j in 0..<k { score[j] += w * c * cos[j] }
        }
        return items.indices.filter { !ownedIndex.contains($0) }
            .sorted { score[$0] != score[$1] ? score[$0] > score[$1] : $0 < $1 }
            .prefix(max(0, top)).map { items[$0] }
    }

    /// A segment's popularity shrunk towards the global one, on the scale of `global`:
    /// (c_j + α g_j) / (n + α) · G, where g_j = P_j / G is the global share (G the global total
    /// over the segment's items), c the segment's noisy counts (total n); items past the
    /// segment's vocabulary have c_j = 0. α = 0 with an empty segment falls back to global.
    static func segmentPopularity(global: [Double], segment: [Double], prior alpha: Double) -> [Double] {
        let k = min(segment.count, global.count)
        let g = global.prefix(k).reduce(0, +)
        let n = segment.prefix(k).reduce(0, +)
        guard g > 0, n + alpha > 0 else { return global }
        return global.indices.map { j in
            let c = j < k ? segment[j] : 0
            return (c + alpha * global[j] / g) / (n + alpha) * g
        }
    }
}

/// The noisy popularity of event items, most popular first (ties by item), for the models
/// that name items (recommender, association_rules): one noisy count per catalog item
/// (`items_from`), or, without a catalog, per item the item selection names ((ε, δ)-DP, δ the
/// job's `delta`; `threshold` is its bar).
///
/// Item selection with a small per-subject bound (`selection`, without a catalog): first a
/// partition selection in which each subject votes for at most k of its items (its k most
/// recently used, over all its events: `itemPresence(maxItems: k)`), with its own epsilon ε_s;
/// then the popularity of the selected items, with the cap m and `epsilon`, exactly as for a
/// catalog (the selected items are public once released). Proof, for the selection:
/// - Sensitivity. Adding or removing one subject u changes the vote count of at most k items,
///   each by exactly 1 (u's votes are a function of u's own events): L1 <= k, L0 <= k. Giving
///   each vote weight 1/k with noise Laplace(1/ε_s) is the same mechanism scaled by 1/k, so the
///   "1/k per item" weighting of DP partition selection is this one.
/// - Threshold. Noise Y ~ DiscreteLaplace(k/ε_s) (p = exp(-ε_s/k)); an item is named when
///   count + Y >= T, with T - 1 >= (k/ε_s)(ln(k/δ) - ln(1+p)) (`BoundedSum.selectionThreshold`,
///   exact discrete tail): an item only u holds (count 1) passes with probability
///   P(Y >= T - 1) = p^(T-1)/(1+p) <= δ/k.
/// - (ε_s, δ)-DP. Items held in both neighbours: their noisy counts differ in L1 by <= k, so
///   they are ε_s-DP with scale k/ε_s, and thresholding is post-processing. Items only u holds:
///   at most k of them, each named with probability <= δ/k, so none is named except with
///   probability <= δ (union bound); outside that event the output is a function of the common
///   items' noisy counts. So P[M(D) ∈ S] <= e^ε_s P[M(D') ∈ S] + δ both ways.
/// - The job. The popularity then counts a public vocabulary (ε-DP with L1 bound m), the later
///   releases likewise; sequential composition gives (Σε, δ) for the job, within its charge.
/// A smaller k lowers T (about (k/ε_s)·ln(k/δ)) but gives each subject fewer votes; the defaults
/// (`Recommender.defaultSelectionItems`, `defaultSelectionShare`) come from the evaluation.
enum ItemPopularity {
    static func release(model: String, kind: String, maxItems m: Int, since: Int64?, spec: TrainingSpec, session: PrivateSession,
                        epsilon: Epsilon, selection: (k: Int, epsilon: Epsilon)? = nil,
                        progress: (String) -> Void) throws -> (ranked: [(String, Double)], threshold: Double?) {
        let presence = Coordinate.itemPresence(kind: kind, maxItems: m, since: since)
        var ranked: [(String, Double)]
        var threshold: Double? = nil
        if spec.catalog == nil, let selection {
            progress("\(model): private selection of items (each subject votes for at most \(selection.k))")
            let votes = Coordinate.itemPresence(kind: kind, maxItems: selection.k, since: nil)
            let s = try session.releaseSelected(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [votes]),
                                                epsilon: selection.epsilon, delta: session.delta, label: "\(model): item selection (\(selection.k) votes per subject)")
            threshold = s.threshold
            let selected = s.released.map(\.key).sorted()
            if selected.isEmpty {
                // Nothing to count: the popularity share stays unspent (the job was charged whole).
                ranked = []
            } else {
                progress("\(model): noisy popularity of the \(selected.count) selected items")
                let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: selected), coordinates: [presence]),
                                            shares: [epsilon], label: "\(model): item popularity (selected items)")
                ranked = r.map { ($0.key, $0.values[0].value) }
            }
        } else if let catalog = spec.catalog {
            progress("\(model): noisy popularity of \(catalog.count) catalog items")
            let r = try session.release(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: catalog), coordinates: [presence]),
                                        shares: [epsilon], label: "\(model): item popularity (catalog)")
            ranked = r.map { ($0.key, $0.values[0].value) }
        } else {
            // Every model that names items passes a selection when it has no catalog.
            throw ModelError("\(model): items need a catalog (items_from) or an item selection")
        }
        ranked.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        return (ranked, threshold)
    }
}
