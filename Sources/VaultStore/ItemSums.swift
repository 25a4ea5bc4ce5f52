package import DifferentialPrivacy
package import VaultPolicy

/// The item groupings' sums (`Grouping.items`, `.itemPairs`, `.itemSets`, `.segmentItems`),
/// shared by every engine: the request's checks (`init`) and the accumulation of each subject's
/// capped sample of distinct items into the groups. An engine only fetches, for each subject of
/// the population (consent applied), its distinct items of `kind` (events at or after `since`
/// when given, only items of `vocabulary` when given) with the time of each one's last use, and
/// its value of `segmentAttribute` when the grouping has one; it hands them over one subject at
/// a time:
///
///     var sums = try ItemSums(request, schema: schema)
///     for each subject { sums.beginSubject(pseudonym:segment:); for each item { sums.add(item:lastUsed:) } }
///     return try sums.finish()
///
/// A subject's sample: its items the most recently used first, ties (the lines of one invoice
/// share a time) by `ReferenceAggregateSource.itemTieBreak` of the subject's tie key ascending,
/// then by the item; the first `maxItems`. Breaking ties by the item code, as an ORDER BY
/// would, made the capped sample prefer low codes: on online retail that alone cost the
/// popularity ranking 0.06-0.08 HR@10 (docs/models.md). The sample counts:
/// - items: 1 for each sampled item; with a vocabulary every vocabulary item is a key (zeros
///   included), without one the keys are the items sampled;
/// - item pairs: with n >= 2 sampled vocabulary items, each unordered pair gets
///   floor(unit / (n - 1)); keys "i|j" (i < j, vocabulary indexes), only pairs whose sum is not 0;
/// - item sets: 1 for every set of `size` sampled vocabulary items; keys "i|j(|k)", ascending
///   vocabulary indexes; every set of the vocabulary is a key (zeros included);
/// - segment items: 1 in "s|i" for each sampled vocabulary item i, s the index of the subject's
///   segment value in the domain (a value outside the domain, or null: no group); every pair
///   is a key.
/// A value listed twice in a vocabulary or domain stands for its last index. Sums are checked
/// 64-bit additions: one beyond 64 bits makes `finish` refuse the request (invalid input).
package struct ItemSums: Sendable {
    package let kind: String
    package let maxItems: Int
    /// Only events at or after this time (milliseconds) count (`itemPresence`'s bound).
    package let since: Int64?
    /// Only these items count (nil: every item of the kind).
    package let vocabulary: [String]?
    /// The categorical attribute whose value is the subject's segment (segment items only).
    package let segmentAttribute: String?

    private let grouping: Grouping
    private let unit: Int
    private let mode: Mode
    private enum Mode: Sendable { case presence, pairs, sets(Int), segments }
    private var index: [String: Int] = [:]          // vocabulary item -> its (last) index
    private var segmentIndex: [String: Int] = [:]   // domain value -> its (last) index

    private var held: [(t: Int64, tie: UInt64, item: String)] = []
    private var tieKey: UInt64 = 0
    private var segment: Int? = nil
    private var presence: [String: Int64] = [:]
    private struct Pair: Hashable { let a: Int, b: Int }
    private var pairs: [Pair: Int64] = [:]          // (i, j) for pairs, (segment, item) for segments
    private var sets: [String: Int64] = [:]
    private var overflowed = false

    /// Checks the request: one item coordinate, no predicates, a coordinate that goes with the
    /// grouping, at least one item per subject, a categorical segment attribute (usage errors,
    /// in this order).
    package init(_ r: AggregateRequest, schema: Schema) throws {
        guard r.coordinates.count == 1, r.predicates.isEmpty, r.nonNull.isEmpty else {
            throw VaultError(.usage, "an item grouping takes exactly one item coordinate and no predicates")
        }
        let kind: String, maxItems: Int
        var unit = 1
        var since: Int64? = nil
        switch r.coordinates[0] {
        case let .itemPresence(k, m, t): kind = k; maxItems = m; since = t
        case let .itemPairWeight(k, m, u): kind = k; maxItems = m; unit = u
        case let .itemSetPresence(k, m, _): kind = k; maxItems = m
        default: throw VaultError(.usage, "an item grouping takes an item coordinate")
        }
        guard maxItems >= 1 else { throw VaultError(.usage, "max items per subject must be at least 1") }
        // The coordinate must match the grouping (the bound is the coordinate's).
        let mode: Mode
        switch (r.grouping, r.coordinates[0]) {
        case (.items?, .itemPresence): mode = .presence
        case (.itemPairs?, .itemPairWeight): mode = .pairs
        case (.segmentItems?, .itemPresence): mode = .segments
        case let (.itemSets(_, size)?, .itemSetPresence(_, _, k)) where size == k && (size == 2 || size == 3): mode = .sets(size)
        default: throw VaultError(.usage, "this item coordinate does not go with this item grouping")
        }
        guard let grouping = r.grouping else { throw VaultError(.usage, "this item coordinate does not go with this item grouping") }
        var vocabulary: [String]? = nil
        var segmentAttribute: String? = nil
        switch grouping {
        case let .items(v): vocabulary = v
        case let .itemPairs(v): vocabulary = v
        case let .itemSets(v, _): vocabulary = v
        case let .segmentItems(attribute, domain, v):
            vocabulary = v
            guard let f = schema.attributeFields.first(where: { $0.name == attribute }), f.type == .category else {
                throw VaultError(.usage, "segment grouping needs a categorical attribute; \(attribute) is not one")
            }
            segmentAttribute = f.name
            segmentIndex = Self.indexes(domain)
        default: break
        }
        if case .presence = mode {} else { index = Self.indexes(vocabulary ?? []) }
        (self.kind, self.maxItems, self.since, self.vocabulary, self.segmentAttribute) = (kind, maxItems, since, vocabulary, segmentAttribute)
        (self.grouping, self.unit, self.mode) = (grouping, unit, mode)
    }

    private static func indexes(_ v: [String]) -> [String: Int] {
        var out: [String: Int] = [:]
        for (i, item) in v.enumerated() { out[item] = i }
        return out
    }

    /// Ends the previous subject and starts the next one: its pseudonym (the tie key is its
    /// first 8 bytes, `ReferenceAggregateSource.itemTieKey`) and its segment attribute's value.
    package mutating func beginSubject<C: Collection<UInt8>>(pseudonym: C, segment value: String?) {
        endSubject()
        tieKey = ReferenceAggregateSource.itemTieKey(pseudonym: pseudonym)
        segment = value.flatMap { segmentIndex[$0] }
    }

    /// One distinct item of the current subject, with the time of its last use.
    package mutating func add(item: String, lastUsed t: Int64) {
        held.append((t, ReferenceAggregateSource.itemTieBreak(subjectKey: tieKey, item: item), item))
    }

    /// Adds `n` to a group's sum (wrapping); true when the sum went beyond 64 bits.
    private static func bump<K: Hashable>(_ table: inout [K: Int64], _ key: K, by n: Int64) -> Bool {
        let (s, o) = (table[key] ?? 0).addingReportingOverflow(n)
        table[key] = s
        return o
    }

    /// Counts the current subject's sample in the groups.
    private mutating func endSubject() {
        guard !held.isEmpty else { return }
        held.sort { $0.t != $1.t ? $0.t > $1.t : ($0.tie != $1.tie ? $0.tie < $1.tie : $0.item < $1.item) }
        let capped = held.prefix(maxItems)
        switch mode {
        case .presence:
            for h in capped { if Self.bump(&presence, h.item, by: 1) { overflowed = true } }
        case .segments:
            if let s = segment {
                for h in capped { if let i = index[h.item] { if Self.bump(&pairs, Pair(a: s, b: i), by: 1) { overflowed = true } } }
            }
        case .sets(let size):
            let items = capped.compactMap { index[$0.item] }.sorted()
            for combo in Grouping.sets(count: items.count, size: size) {
                if Self.bump(&sets, combo.map { String(items[$0]) }.joined(separator: "|"), by: 1) { overflowed = true }
            }
        case .pairs:
            let items = capped.compactMap { index[$0.item] }
            if items.count >= 2 {
                let w = Int64(unit / (items.count - 1))
                for a in items.indices {
                    for b in items.indices where b > a {
                        if Self.bump(&pairs, Pair(a: min(items[a], items[b]), b: max(items[a], items[b])), by: w) { overflowed = true }
                    }
                }
            }
        }
        held.removeAll(keepingCapacity: true)
    }

    /// Ends the last subject; the sums by group key. A sum beyond 64 bits: invalid input.
    package mutating func finish() throws -> [String: [Int64]] {
        endSubject()
        guard !overflowed else { throw ReferenceAggregateSource.overflow() }
        var out: [String: [Int64]] = [:]
        switch mode {
        case .presence:
            for item in vocabulary ?? [] { out[item] = [0] }
            for (item, n) in presence { out[item] = [n] }
        case .pairs:
            for (p, n) in pairs where n != 0 { out["\(p.a)|\(p.b)"] = [n] }
        case .sets:
            for key in grouping.domain ?? [] { out[key] = [0] }
            for (key, n) in sets { out[key] = [n] }
        case .segments:
            for key in grouping.domain ?? [] { out[key] = [0] }
            for (p, n) in pairs { out["\(p.a)|\(p.b)"] = [n] }
        }
        return out
    }
}
