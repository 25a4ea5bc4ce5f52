public import DifferentialPrivacy
public import VaultPolicy

/// The reference aggregate source: the specification of the exact integer sums every storage
/// engine's `AggregateSource` must return, written as plain loops over plain values (no SQL).
///
/// It holds a population as ingest leaves it in a store: subjects (customer ID, attribute
/// values as the schema types them, events in ingest order, consent state per purpose; erased
/// subjects are simply absent) and computes `boundedSums` from the rules of
/// docs/differential-privacy.md, one function per rule. The engine conformance suite
/// (`Tests/VaultStoreTests/EngineConformanceTests.swift`) ingests the same data into an engine
/// through its public API and into this source, and requires equal answers for every request
/// shape.
///
/// Floating point: where a rule's value is not an integer, it is evaluated in IEEE double with
/// the operations in the order the doc comment gives (the order the SQLite engine uses), then
/// rounded half away from zero; grids are powers of two (`BoundedSum.grid`), so dividing by
/// the grid is exact. Sums are checked 64-bit integer additions.
public struct ReferenceAggregateSource: AggregateSource {
    /// A stored attribute value. Ingest stores int, date (days since 1970-01-01) and bool (0, 1)
    /// attributes as integers, float attributes as reals, categories and strings as text.
    public enum Value: Sendable, Equatable {
        case int(Int64)
        case real(Double)
        case text(String)

        /// The stored form of a validated ingest value (nil: null).
        public init?(_ v: FieldValue) {
            switch v {
            case .null: return nil
            case .int(let i): self = .int(i)
            case .float(let d): self = .real(d)
            case .text(let s): self = .text(s)
            case .date(let d): self = .int(Int64(d))
            case .bool(let b): self = .int(b ? 1 : 0)
            }
        }

        var number: Double? {
            switch self {
            case .int(let i): return Double(i)
            case .real(let d): return d
            case .text: return nil
            }
        }
    }

    public struct Event: Sendable, Equatable {
        public var kind: String
        public var item: String
        public var value: Double
        /// Seconds since the epoch.
        public var time: Int64
        public init(kind: String, item: String, value: Double, time: Int64) {
            self.kind = kind
            self.item = item
            self.value = value
            self.time = time
        }
    }

    public struct Subject: Sendable {
        public var customerID: String
        /// Attribute name -> stored value; an absent name is null.
        public var attributes: [String: Value]
        /// In ingest order (later events after earlier ones, whatever their times).
        public var events: [Event]
        /// Purpose -> the subject's current consent (absent: never given).
        public var consent: [String: Bool]
        /// The subject's keyed pseudonym (HMAC-SHA256 of its normalised customer ID under the
        /// store's identity key), as every engine stores it. The item tie-break hashes its first
        /// 8 bytes with the item (`itemTieKey`, `itemTieBreak`): engine-independent, and keyed,
        /// so an analyst cannot predict which of a subject's tied items are sampled.
        public var pseudonym: [UInt8]
        /// Restricted (GDPR Art. 18): in no sum.
        public var restricted = false
    }

    public let schema: Schema
    /// In ingest order.
    public private(set) var subjects: [Subject] = []

    public init(schema: Schema) { self.schema = schema }

    // MARK: - The population

    /// Ingest of one profile: a new subject, or a replacement of an existing subject's attributes
    /// (its events and consent stay), as `ingestProfiles` does. `attributes` holds the values
    /// ingest validated (nil and absent names: null).
    /// `pseudonym` is the subject's pseudonym under the engine's keyring
    /// (`StorageEngine.pseudonym(ofCustomerID:)`); it stays the same on a replacement.
    public mutating func upsert(customerID: String, pseudonym: [UInt8], attributes: [String: FieldValue]) {
        var values: [String: Value] = [:]
        for (name, v) in attributes { if let s = Value(v) { values[name] = s } }
        if let i = subjects.firstIndex(where: { $0.customerID == customerID }) {
            subjects[i].attributes = values
        } else {
            subjects.append(Subject(customerID: customerID, attributes: values, events: [], consent: [:], pseudonym: pseudonym))
        }
    }

    /// Ingest of one event: an event identical in kind, item, value and time to one the subject
    /// has is not stored twice. Returns false (nothing stored) when there is no such subject.
    @discardableResult
    public mutating func addEvent(customerID: String, _ e: Event) -> Bool {
        guard let i = subjects.firstIndex(where: { $0.customerID == customerID }) else { return false }
        if !subjects[i].events.contains(e) { subjects[i].events.append(e) }
        return true
    }

    public mutating func setConsent(customerID: String, purpose: String, granted: Bool) {
        guard let i = subjects.firstIndex(where: { $0.customerID == customerID }) else { return }
        subjects[i].consent[purpose] = granted
    }

    /// Restriction (Art. 18) or its end.
    public mutating func setRestricted(customerID: String, _ restricted: Bool) {
        guard let i = subjects.firstIndex(where: { $0.customerID == customerID }) else { return }
        subjects[i].restricted = restricted
    }

    /// Whether a subject is in a request's population as far as consent, restriction and
    /// objection go: not restricted, consent active for `consentPurpose`, no objection (a
    /// consent state of false) to `objectionPurpose`.
    static func admitted(_ s: Subject, _ r: AggregateRequest) -> Bool {
        if s.restricted { return false }
        if let p = r.consentPurpose, s.consent[p] != true { return false }
        if let p = r.objectionPurpose, s.consent[p] == false { return false }
        return true
    }

    /// Erasure: the subject, its events and consent are gone from every sum.
    public mutating func erase(customerID: String) {
        subjects.removeAll { $0.customerID == customerID }
    }

    /// Replaces a subject's pseudonym (tests: another keyring's pseudonym gives other ties).
    public mutating func setPseudonym(customerID: String, _ pseudonym: [UInt8]) {
        guard let i = subjects.firstIndex(where: { $0.customerID == customerID }) else { return }
        subjects[i].pseudonym = pseudonym
    }

    // MARK: - The rules

    /// round(x) half away from zero, as an exact integer (nil when it does not fit 64 bits).
    static func roundedInteger(_ x: Double) -> Int64? { Int64(exactly: x.rounded(.toNearestOrAwayFromZero)) }

    static func clamp(_ x: Double, _ lo: Double, _ hi: Double) -> Double { min(hi, max(lo, x)) }

    static func overflow() -> VaultError { VaultError(.invalidInput, "the aggregate overflows 64-bit integers") }

    /// `Coordinate.attribute`: round((clamp(x, lo, hi) - c) / g) for a value x; 0 for null.
    static func attributeContribution(_ x: Double?, lower lo: Double, upper hi: Double, center c: Double, grid g: Double) throws -> Int64 {
        guard let x else { return 0 }
        guard let n = roundedInteger((clamp(x, lo, hi) - c) / g) else { throw overflow() }
        return n
    }

    /// `Coordinate.product`'s z(x) = (clamp(x, lo, hi) - lo) * (2 / (hi - lo)) - 1, in [-1, 1].
    static func signedUnit(_ x: Double, _ f: ScaledFeature) -> Double {
        (clamp(x, f.lower, f.upper) - f.lower) * (2 / (f.upper - f.lower)) - 1
    }

    /// A feature scaled to [0, 1] (nearest and cell groupings):
    /// (clamp(x, lo, hi) - lo) * (1 / (hi - lo)).
    static func unit(_ x: Double, _ f: ScaledFeature) -> Double {
        (clamp(x, f.lower, f.upper) - f.lower) * (1 / (f.upper - f.lower))
    }

    /// A subject's events of `kind`, the most recent first: by time, descending; events of the
    /// same time, the later ingested first.
    static func mostRecentFirst(_ s: Subject, kind: String) -> [Event] {
        let mine = s.events.enumerated().filter { $0.element.kind == kind }
        return mine.sorted { a, b in a.element.time != b.element.time ? a.element.time > b.element.time : a.offset > b.offset }.map(\.element)
    }

    /// `Coordinate.events`: over the subject's at most k most recent events of the kind, the sum
    /// of round((clamp(v, lo, hi) - c) / g); 0 with no events.
    static func eventsContribution(_ s: Subject, kind: String, lower lo: Double, upper hi: Double, center c: Double, grid g: Double, cap k: Int) throws -> Int64 {
        var total: Int64 = 0
        for e in mostRecentFirst(s, kind: kind).prefix(max(0, k)) {
            let (t, o) = total.addingReportingOverflow(try attributeContribution(e.value, lower: lo, upper: hi, center: c, grid: g))
            guard !o else { throw overflow() }
            total = t
        }
        return total
    }

    /// `Coordinate.eventCount`: min(number of the subject's events of the kind, k).
    static func eventCount(_ s: Subject, kind: String, cap k: Int) -> Int64 {
        Int64(min(s.events.filter { $0.kind == kind }.count, max(0, k)))
    }

    /// `DerivedAttribute`: clamp(A(events of the kind with from <= time < before), lo, hi), A the
    /// sum of the values (added in ingest order), the count, or the number of distinct items; A
    /// of no events is 0. Never null.
    static func derivedValue(_ s: Subject, _ d: DerivedAttribute) -> Double {
        let mine = s.events.filter { $0.kind == d.eventKind && d.inWindow($0.time) }
        let raw: Double
        switch d.aggregate {
        case .sum:
            var t = 0.0
            for e in mine { t += e.value }
            raw = t
        case .count: raw = Double(mine.count)
        case .distinctItems: raw = Double(Set(mine.map(\.item)).count)
        }
        return clamp(raw, d.lower, d.upper)
    }

    /// Compares two stored values as a predicate does: numbers by value (exactly, integers with
    /// reals), text by its UTF-8 bytes (SQLite's BINARY collation). nil for a number against
    /// text (`subjectSums` refuses such a condition before comparing anything).
    static func compare(_ a: Value, _ b: WhereCondition.Value) -> Int? {
        switch (a, b) {
        case let (.text(x), .text(y)):
            let (u, v) = (Array(x.utf8), Array(y.utf8))
            return u == v ? 0 : (u.lexicographicallyPrecedes(v) ? -1 : 1)
        case let (.int(x), .int(y)): return x == y ? 0 : (x < y ? -1 : 1)
        case let (.int(x), .real(y)): return compareExactly(x, y)
        case let (.real(x), .int(y)): return compareExactly(y, x).map { -$0 }
        case let (.real(x), .real(y)): return x == y ? 0 : (x < y ? -1 : 1)
        default: return nil
        }
    }

    /// An integer against a real, exactly (a real beyond 2^63 or NaN compares by its sign).
    static func compareExactly(_ i: Int64, _ d: Double) -> Int? {
        guard !d.isNaN else { return nil }
        if d >= 9_223_372_036_854_775_808.0 { return -1 }
        if d < -9_223_372_036_854_775_808.0 { return 1 }
        let f = d.rounded(.down)
        let fi = Int64(f)   // exact: f is integral and within range
        if i != fi { return i < fi ? -1 : 1 }
        return f == d ? 0 : -1   // i == floor(d) < d when d has a fraction
    }

    /// `WhereCondition`: the subject's value compared with the constant; a null is never selected.
    static func holds(_ x: Value?, _ p: WhereCondition) throws -> Bool {
        guard let x else { return false }
        guard let c = compare(x, p.value) else {
            throw VaultError(.usage, "condition on \(p.attribute): a number compares with a number, text with text")
        }
        switch p.op {
        case .eq: return c == 0
        case .ne: return c != 0
        case .lt: return c < 0
        case .le: return c <= 0
        case .gt: return c > 0
        case .ge: return c >= 0
        }
    }

    /// A subject's tie key: the first 8 bytes of its pseudonym read as a big-endian 64-bit
    /// number (a shorter pseudonym, which no engine stores, is zero-padded on the right). The
    /// pseudonym is an HMAC under the store's identity key, so the key, and with it the order
    /// of tied items, is fixed for the subject and unpredictable without the keyring; and every
    /// engine holds it, whatever its row numbers.
    public static func itemTieKey<C: Collection<UInt8>>(pseudonym: C) -> UInt64 {
        var k: UInt64 = 0
        var n = 0
        for b in pseudonym.prefix(8) { k = k << 8 | UInt64(b); n += 1 }
        return n == 8 ? k : k << (8 * UInt64(8 - n))
    }

    /// The fixed tie order of one subject's items: FNV-1a of the item's UTF-8 bytes, mixed with
    /// the subject's tie key (`itemTieKey`) by SplitMix64's finaliser. Every engine calls this
    /// function.
    public static func itemTieBreak(subjectKey: UInt64, item: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in item.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        var z = h ^ (subjectKey &* 0x9e37_79b9_7f4a_7c15)
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// The item groupings' candidates of one subject: its distinct items of the kind (only those
    /// in `vocabulary` when given, only events at or after `since` when given), each with the
    /// time of its last use (`ItemSums` caps and counts them).
    static func lastUses(_ s: Subject, kind: String, since: Int64?, vocabulary: Set<String>?) -> [String: Int64] {
        var last: [String: Int64] = [:]
        for e in s.events where e.kind == kind && (since.map { e.time >= $0 } ?? true) && (vocabulary?.contains(e.item) ?? true) {
            last[e.item] = max(last[e.item] ?? .min, e.time)
        }
        return last
    }

    // MARK: - boundedSums

    public func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        switch r.grouping {
        case .items?, .itemPairs?, .itemSets?, .segmentItems?: return try itemSums(r)
        default: return try subjectSums(r)
        }
    }

    /// The subjects of the population: consent (active for the purpose, when one is given),
    /// every predicate, every non-null requirement.
    func population(_ r: AggregateRequest, value: (Subject, String) throws -> Value?) throws -> [Subject] {
        var out: [Subject] = []
        for s in subjects {
            if !Self.admitted(s, r) { continue }
            var keep = true
            for p in r.predicates {
                if try !Self.holds(try value(s, p.attribute), p) { keep = false }
            }
            for n in r.nonNull {
                if try value(s, n) == nil { keep = false }
            }
            if keep { out.append(s) }
        }
        return out
    }

    /// Every grouping but the item groupings: each subject of the population adds its vector to
    /// at most one group; the groups of the public domain are all present (zeros included).
    func subjectSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        var derived: [String: DerivedAttribute] = [:]
        for d in r.derived {
            guard schema.field(named: d.name) == nil, derived.updateValue(d, forKey: d.name) == nil else {
                throw VaultError(.usage, "derived attribute \(d.name) is defined twice or is a field of the schema")
            }
            guard d.lower < d.upper, d.lower.isFinite, d.upper.isFinite else { throw VaultError(.usage, "derived attribute \(d.name) needs finite bounds lower < upper") }
        }
        let attributes = Set(schema.attributeFields.map(\.name))
        /// A subject's value of an attribute (nil: null) or of a derived attribute (never null).
        func value(_ s: Subject, _ name: String) throws -> Value? {
            if attributes.contains(name) { return s.attributes[name] }
            guard let d = derived[name] else { throw VaultError(.usage, "\(name) is not an attribute of the schema") }
            return .real(Self.derivedValue(s, d))
        }
        func number(_ s: Subject, _ name: String) throws -> Double? {
            guard let v = try value(s, name) else { return nil }
            guard let x = v.number else { throw VaultError(.usage, "\(name) is not numeric") }
            return x
        }
        for c in r.coordinates {
            switch c {
            case .itemPresence, .itemPairWeight, .itemSetPresence: throw VaultError(.usage, "item coordinates need an item grouping")
            default: break
            }
        }
        // A condition compares a number attribute (derived ones included) with a finite number,
        // a category or string with text.
        for p in r.predicates {
            guard attributes.contains(p.attribute) || derived[p.attribute] != nil else { throw VaultError(.usage, "\(p.attribute) is not an attribute of the schema") }
            let textual = schema.field(named: p.attribute).map { $0.type == .category || $0.type == .string } ?? false
            switch p.value {
            case .text: guard textual else { throw VaultError(.usage, "condition on \(p.attribute): a number compares with a number") }
            case .int: guard !textual else { throw VaultError(.usage, "condition on \(p.attribute): text compares with text") }
            case .real(let d): guard !textual, d.isFinite else { throw VaultError(.usage, "condition on \(p.attribute): compares with a finite number") }
            }
        }
        // The group of a subject: nil for none.
        let key: (Subject) throws -> String?
        switch r.grouping {
        case nil:
            key = { _ in "" }
        case let .attribute(name, domain)?:
            // By the attribute's text value, only within the domain (null or outside: no group).
            guard derived[name] == nil else { throw VaultError(.usage, "derived attribute \(name) is numeric; it cannot group") }
            guard let f = schema.field(named: name), attributes.contains(name) else { throw VaultError(.usage, "\(name) is not an attribute of the schema") }
            guard f.type == .category || f.type == .string else { throw VaultError(.usage, "\(name) is not a categorical attribute") }
            let inDomain = Set(domain)
            key = { s in
                guard case let .text(t)? = s.attributes[name], inDomain.contains(t) else { return nil }
                return t
            }
        case let .nearest(features, centroids)?:
            // The nearest centroid to the features in [0, 1]: squared distance summed over the
            // features in order, truncated to a multiple of 2^-40; ties to the lowest index.
            guard !centroids.isEmpty, centroids.count <= 64, centroids.allSatisfy({ $0.count == features.count }) else {
                throw VaultError(.usage, "nearest-centroid grouping needs 1 to 64 centroids of the features' dimension")
            }
            key = { s in
                var u: [Double] = []
                for f in features {
                    guard let x = try number(s, f.name) else { return nil }
                    u.append(Self.unit(x, f))
                }
                var best = 0
                var bestDistance = Double.infinity
                for (i, c) in centroids.enumerated() {
                    var d = 0.0
                    for j in u.indices { d += (u[j] - c[j]) * (u[j] - c[j]) }
                    let truncated = (d * 1_099_511_627_776.0).rounded(.towardZero)
                    guard !truncated.isNaN else { return nil }   // lower == upper: no group (SQL: a NULL key)
                    if truncated < bestDistance { best = i; bestDistance = truncated }
                }
                return String(best)
            }
        case let .cell(features, bins)?:
            // bin_j = min(bins - 1, floor(unit_j * bins)), key = sum_j bin_j * bins^j.
            guard bins >= 1, Grouping.cellCount(dimensions: features.count, bins: bins) <= 1 << 20 else {
                throw VaultError(.usage, "grid grouping has too many cells")
            }
            key = { s in
                var k = 0, weight = 1
                for f in features {
                    guard let x = try number(s, f.name) else { return nil }
                    // Not finite only for a feature with lower == upper: no cell (SQL: a NULL key).
                    let v = (Self.unit(x, f) * Double(bins)).rounded(.towardZero)
                    guard v.isFinite, abs(v) < 0x1p52 else { return nil }
                    k += min(bins - 1, Int(v)) * weight
                    weight *= bins
                }
                return String(k)
            }
        case let .thresholds(features, cuts)?:
            // Level l sets bit l when the stored value (unclamped) is >= its cut.
            guard !features.isEmpty, features.count == cuts.count, features.count <= 16, cuts.allSatisfy(\.isFinite) else {
                throw VaultError(.usage, "tree grouping needs 1 to 16 levels, one finite cut per feature")
            }
            key = { s in
                var k = 0
                for (l, (name, cut)) in zip(features, cuts).enumerated() {
                    guard let x = try value(s, name) else { return nil }
                    guard let c = Self.compare(x, .real(cut)) else { throw VaultError(.usage, "\(name) is not numeric") }
                    if c >= 0 { k |= 1 << l }
                }
                return String(k)
            }
        case .items?, .itemPairs?, .itemSets?, .segmentItems?:
            throw VaultError(.usage, "an item grouping takes an item coordinate")
        }
        var out: [String: [Int64]] = [:]
        let zeros = [Int64](repeating: 0, count: r.coordinates.count)
        if let domain = r.grouping?.domain {
            for k in domain { out[k] = zeros }
        } else {
            out[""] = zeros
        }
        // Names are checked even for an empty population, as an engine's statement would be.
        for name in r.names.attributes where !attributes.contains(name) && derived[name] == nil {
            throw VaultError(.usage, "\(name) is not an attribute of the schema")
        }
        for s in try population(r, value: value) {
            guard let k = try key(s), var sums = out[k] else { continue }
            for (i, c) in r.coordinates.enumerated() {
                let add: Int64
                switch c {
                case .subjects:
                    add = 1
                case let .nonNull(name):
                    add = try value(s, name) == nil ? 0 : 1
                case let .attribute(name, lo, hi, center, grid):
                    add = try Self.attributeContribution(try number(s, name), lower: lo, upper: hi, center: center, grid: grid)
                case let .events(kind, lo, hi, center, grid, k):
                    add = try Self.eventsContribution(s, kind: kind, lower: lo, upper: hi, center: center, grid: grid, cap: k)
                case let .eventCount(kind, k):
                    add = Self.eventCount(s, kind: kind, cap: k)
                case let .product(left, right, grid):
                    // round(z(a) * z(b) / g) (z(a) alone without b); 0 when a value is null.
                    guard let a = try number(s, left.name) else { add = 0; break }
                    var z = Self.signedUnit(a, left)
                    if let right {
                        guard let b = try number(s, right.name) else { add = 0; break }
                        z = z * Self.signedUnit(b, right)
                    }
                    // z is NaN only for a feature with lower == upper (0 * 2/0): it contributes 0.
                    if z.isNaN { add = 0; break }
                    guard let n = Self.roundedInteger(z / grid) else { throw Self.overflow() }
                    add = n
                case .itemPresence, .itemPairWeight, .itemSetPresence:
                    throw VaultError(.usage, "item coordinates need an item grouping")
                }
                let (t, o) = sums[i].addingReportingOverflow(add)
                guard !o else { throw Self.overflow() }
                sums[i] = t
            }
            out[k] = sums
        }
        return out
    }

    /// The item groupings: each consenting subject's distinct items (`lastUses`) go to
    /// `ItemSums`, which checks the request, caps each subject's sample and counts it in the
    /// item, pair, set or (segment, item) groups.
    func itemSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        var sums = try ItemSums(r, schema: schema)
        let vocabulary = sums.vocabulary.map(Set.init)
        for s in subjects where Self.admitted(s, r) {
            var segment: String? = nil
            if let a = sums.segmentAttribute, case let .text(t)? = s.attributes[a] { segment = t }
            sums.beginSubject(pseudonym: s.pseudonym, segment: segment)
            for (item, t) in Self.lastUses(s, kind: sums.kind, since: sums.since, vocabulary: vocabulary) {
                sums.add(item: item, lastUsed: t)
            }
        }
        return try sums.finish()
    }
}
