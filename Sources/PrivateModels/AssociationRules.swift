public import DifferentialPrivacy
import Foundation

/// One rule of an `association_rules` model: subjects holding `antecedent` also hold
/// `consequent`, with supports from noisy counts.
public struct AssociationRule: Codable, Sendable, Equatable {
    public var antecedent: [String]
    public var consequent: String
    /// Noisy number of (capped) subjects holding antecedent and consequent.
    public var support: Double
    /// support / support(antecedent).
    public var confidence: Double
    /// confidence / (support(consequent) / subjects).
    public var lift: Double
}

/// Apriori-style association rules from noisy supports (issue 10).
///
/// Each subject's distinct items of the event kind are capped: among the vocabulary, the m
/// (`max_items_per_subject`, default 5) most recently used, ties by a fixed hash. Budget split
/// of the job's epsilon E:
/// - without a catalog only, first `selection_share` (default 0.3) of E for the *item
///   selection* the recommender uses (`ItemPopularity.release` with `selection`): each subject
///   votes for at most k = `selection_items` (default 1) of its items (its k most recently
///   used), and only items whose noisy vote count reaches the exact discrete-Laplace threshold
///   are named ((ε_s, δ)-DP, δ the job's `delta`). The vote bound k is separate from the cap m.
///   The shares below are of what is left ((1 - `selection_share`) E; all of E with a catalog);
/// - 25%: item popularity over the catalog (`items_from`) or over the selected items (cap m);
///   the V (`vocabulary_size`, default 50) most popular form the vocabulary.
/// - 5%: the number of consenting subjects N (bound 1).
/// - 20%: item supports within the vocabulary (bound m).
/// - 30%: pair supports, every pair of the vocabulary (bound C(m, 2)).
/// - 20%: triple supports among the V3 (`triple_vocabulary`, default min(15, V)) most popular items
///   (bound C(m, 3)).
/// An itemset is frequent when its noisy support exceeds (`support_threshold` (default 1) +
/// ln S) noise scales, S the number of sets released at that size, and `min_support` (default
/// 10) subjects: pure noise passes with probability ½·e^(-1)/S per set, so about 0.18 false
/// sets per size, however large the vocabulary (a fixed 3 scales let 30 noise pairs of 1,225
/// through on online retail at epsilon 1). A triple also needs its three pairs frequent (the
/// Apriori property). Rules X -> y from every frequent pair and triple, with
/// confidence = s(X ∪ y) / s(X) >= `min_confidence` (default 0.3); the `max_rules` (default
/// 100) with the highest lift are kept. Everything after the releases is post-processing.
public enum AssociationRules {
    /// Without a catalog: the items each subject votes for in the item selection (k), and the
    /// share of the job's epsilon the selection spends (the recommender's defaults).
    public static let defaultSelectionItems = Recommender.defaultSelectionItems
    public static let defaultSelectionShare = Recommender.defaultSelectionShare

    public static func fit(spec: TrainingSpec, session: PrivateSession, progress: (String) -> Void) throws -> ModelArtifact {
        guard let kind = spec.events else { throw ModelError("association_rules needs events: (an event kind)") }
        let m = spec.integer("max_items_per_subject", 5)
        let v = spec.integer("vocabulary_size", 50)
        let v3 = spec.integer("triple_vocabulary", min(15, v))
        let tau = spec.param("support_threshold", 1)
        let minSupport = spec.param("min_support", 10)
        let minConfidence = spec.param("min_confidence", 0.3)
        let maxRules = spec.integer("max_rules", 100)
        guard m >= 2 && m <= 20 else { throw ModelError("association_rules: max_items_per_subject must be between 2 and 20") }
        guard v >= 2 && v <= 300 else { throw ModelError("association_rules: vocabulary_size must be between 2 and 300") }
        guard v3 >= 0 && v3 <= min(v, 60) else { throw ModelError("association_rules: triple_vocabulary must be between 0 and min(vocabulary_size, 60)") }
        guard minConfidence >= 0 && minConfidence <= 1 else { throw ModelError("association_rules: min_confidence must be between 0 and 1") }
        guard maxRules >= 1 && maxRules <= 10_000 else { throw ModelError("association_rules: max_rules must be between 1 and 10000") }
        let selectionItems = spec.integer("selection_items", defaultSelectionItems)
        let selectionShare = spec.param("selection_share", defaultSelectionShare)
        guard selectionItems >= 1 && selectionItems <= 50 else { throw ModelError("association_rules: selection_items must be between 1 and 50") }
        guard selectionShare >= 0.05 && selectionShare <= 0.9 else { throw ModelError("association_rules: selection_share must be between 0.05 and 0.9") }

        // 1. The vocabulary: the most popular items (of the catalog, or of those the item
        // selection names). Every share is taken here, before anything depends on the data, so
        // the dry run spends the epsilon exactly as the real run may.
        let selection = spec.catalog == nil ? (k: selectionItems, epsilon: try session.share(selectionShare)) : nil
        let rest = selection == nil ? 1 : 1 - selectionShare
        let popEps = try session.share(rest * 0.25)
        let nEps = try session.share(rest * 0.05), itemEps = try session.share(rest * 0.2)
        let pairEps = try session.share(rest * 0.3), tripleEps = try session.share(rest * 0.2)
        let (ranked, threshold) = try ItemPopularity.release(model: "association_rules", kind: kind, maxItems: m, since: nil,
                                                              spec: spec, session: session, epsilon: popEps, selection: selection,
                                                              progress: progress)
        let vocab = Array(ranked.prefix(v).map(\.0))
        var a = ModelArtifact(model: .association_rules, features: [], params: ["max_items_per_subject": Double(m), "vocabulary_size": Double(vocab.count),
                                                                                "triple_vocabulary": Double(min(v3, vocab.count)), "support_threshold": tau,
                                                                                "min_support": minSupport, "min_confidence": minConfidence, "max_rules": Double(maxRules)])
        if let threshold { a.params["selection_threshold"] = threshold }
        if let selection {
            a.params["selection_items"] = Double(selection.k)
            a.params["selection_share"] = selectionShare
        }
        a.events = kind
        a.items = vocab
        a.itemSource = spec.catalog == nil ? "private_selection" : "catalog"
        a.rules = []
        // A vocabulary under 2 items makes no rule: the remaining shares stay unspent (the job
        // was charged whole, as its dry run planned).
        guard vocab.count >= 2 else { return a }

        // 2. Subjects, item supports, pair and triple supports within the vocabulary.
        progress("association_rules: noisy supports of \(vocab.count) items and their pairs")
        let n = try session.release(AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects]), shares: [nEps],
                                    label: "association_rules: subjects")[0].values[0].value
        let items = try session.release(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: vocab), coordinates: [.itemPresence(kind: kind, maxItems: m)]),
                                        shares: [itemEps], label: "association_rules: item supports")
        let pairs = try session.release(AggregateRequest(consentPurpose: nil, grouping: .itemSets(vocabulary: vocab, size: 2),
                                                         coordinates: [.itemSetPresence(kind: kind, maxItems: m, size: 2)]),
                                        shares: [pairEps], label: "association_rules: pair supports")
        let tripleVocab = Array(vocab.prefix(v3))
        var triples: [(key: String, values: [NoisyValue])] = []
        if tripleVocab.count >= 3 {
            progress("association_rules: noisy supports of the triples of the \(tripleVocab.count) most popular items")
            triples = try session.release(AggregateRequest(consentPurpose: nil, grouping: .itemSets(vocabulary: tripleVocab, size: 3),
                                                           coordinates: [.itemSetPresence(kind: kind, maxItems: m, size: 3)]),
                                          shares: [tripleEps], label: "association_rules: triple supports")
        }
        let total = max(1, n)
        var support: [Int: Double] = [:]
        for (i, r) in items.enumerated() { support[i] = r.values[0].value }
        func frequent(_ x: NoisyValue, among count: Int) -> Bool { x.value > (tau + log(Double(max(1, count)))) * x.scale && x.value >= minSupport }
        var pairSupport: [[Int]: Double] = [:]
        for r in pairs where frequent(r.values[0], among: pairs.count) {
            pairSupport[r.key.split(separator: "|").compactMap { Int($0) }] = r.values[0].value
        }
        var rules: [AssociationRule] = []
        func add(_ antecedent: [Int], _ consequent: Int, _ s: Double, _ sa: Double?) {
            guard let sa, sa > 0, let sc = support[consequent], sc > 0 else { return }
            let confidence = min(1, s / sa)
            guard confidence >= minConfidence else { return }
            func r6(_ x: Double) -> Double { (x * 1e6).rounded() / 1e6 }
            rules.append(AssociationRule(antecedent: antecedent.map { vocab[$0] }, consequent: vocab[consequent], support: r6(s),
                                         confidence: r6(confidence), lift: r6(confidence / min(1, sc / total))))
        }
        for (p, s) in pairSupport {
            add([p[0]], p[1], s, support[p[0]])
            add([p[1]], p[0], s, support[p[1]])
        }
        for r in triples where frequent(r.values[0], among: triples.count) {
            let t = r.key.split(separator: "|").compactMap { Int($0) }
            guard t.count == 3 else { continue }
            let s = r.values[0].value
            let ab = pairSupport[[t[0], t[1]]], ac = pairSupport[[t[0], t[2]]], bc = pairSupport[[t[1], t[2]]]
            guard ab != nil, ac != nil, bc != nil else { continue }   // Apriori: every subset frequent
            add([t[0], t[1]], t[2], s, ab)
            add([t[0], t[2]], t[1], s, ac)
            add([t[1], t[2]], t[0], s, bc)
        }
        rules.sort { $0.lift != $1.lift ? $0.lift > $1.lift : ($0.confidence != $1.confidence ? $0.confidence > $1.confidence : ($0.antecedent + [$0.consequent]).lexicographicallyPrecedes($1.antecedent + [$1.consequent])) }
        a.rules = Array(rules.prefix(maxRules))
        a.params["subjects"] = (n * 1000).rounded() / 1000
        return a
    }
}
