// The population and request generators of the engine conformance suite, shared by the
// SQLite suite (Tests/VaultStoreTests/EngineConformanceTests.swift) and the PostgreSQL
// aggregate tests (Tests/VaultPostgresTests/PostgresAggregateTests.swift): the same seeded
// populations, the same requests, the same refusals, on every engine.

public import DifferentialPrivacy
public import VaultAudit
public import VaultCrypto
import Foundation
public import VaultPolicy
public import VaultStore

/// What `Conformance.populate` needs of an engine: its ingest, consent and erasure, through
/// whatever API the engine has (each call its own statement(s), as a CLI run would make it).
public protocol ConformancePopulationTarget {
    func pseudonym(ofCustomerID id: String) throws -> [UInt8]
    func ingestProfiles(csv: String) throws
    func ingestEvents(csv: String) throws
    func setConsent(_ ids: [(line: Int, id: String)], purpose: String, granted: Bool) throws
    func erase(_ ids: [(line: Int, id: String)]) throws
}

/// What the rights case of the suite needs beyond `ConformancePopulationTarget`: restriction
/// (Art. 18) and objection (Art. 21), through the engine's own API.
public protocol ConformanceRightsTarget: ConformancePopulationTarget {
    func restrict(_ id: String, _ restricted: Bool) throws
    func object(_ ids: [(line: Int, id: String)], purpose: String) throws
}

// MARK: - The schema and populations

public enum Conformance {
    public static let twoTo53 = 9_007_199_254_740_992.0

    /// Every attribute type, bounds and domains with both out-of-bounds rules, optional values,
    /// and event kinds with negative, clamped and extreme (±2^53) values.
    public static let schema: Schema = {
        let c = "user.behavior"
        return Schema(version: 1, subjectIDField: "customer_id", subjectIDCategory: "user.unique_id", fields: [
            FieldSpec(name: "email", type: .string, category: "user.contact.email", pii: true, lookup: true, required: false),
            FieldSpec(name: "age", type: .int, category: c, required: false, bounds: 18...100),
            FieldSpec(name: "score", type: .float, category: c, required: false, bounds: -1000...1000, onOutOfBounds: .clamp),
            FieldSpec(name: "vip", type: .bool, category: c, required: false),
            FieldSpec(name: "tier", type: .category, category: c, required: false, domain: ["gold", "silver", "bronze", "other"], onOutOfBounds: .clamp),
            FieldSpec(name: "region", type: .category, category: c, required: false, domain: ["north", "south", "east", "west"]),
            FieldSpec(name: "joined", type: .date, category: c, required: false),
            FieldSpec(name: "big", type: .int, category: c, required: false, bounds: -twoTo53...twoTo53),
        ], events: [
            EventKindSpec(name: "purchase", category: c, itemType: .string, value: EventValueSpec(type: .float, bounds: 0...1000, onOutOfBounds: .clamp)),
            EventKindSpec(name: "adjust", category: c, itemType: .string, value: EventValueSpec(type: .float, bounds: -1000...1000)),
            EventKindSpec(name: "rating", category: c, itemType: .string, value: EventValueSpec(type: .int, bounds: 1...5, onOutOfBounds: .clamp)),
            EventKindSpec(name: "huge", category: c, itemType: .string, value: EventValueSpec(type: .int, bounds: -twoTo53...twoTo53)),
        ], file: "conformance-schema.yaml")
    }()

    public static let t0: Int64 = 1_772_323_200   // 2026-03-01T00:00:00Z
    /// Few distinct times, so events tie on time.
    public static let times: [Int64] = [t0 - 86_400, t0 - 1, t0, t0 + 1, t0 + 3_600, t0 + 86_399, t0 + 86_400]
    public static let items = ["I0", "I1", "I2", "I3", "I4", "I5"]

    /// SplitMix64: a fixed seed gives a fixed population.
    public struct Random {
        public var state: UInt64
        public init(state: UInt64) { self.state = state }
        public mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        public mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
        public mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    }

    /// One input cell and the value ingest stores for it (nil: null).
    public typealias Cell = (text: String, stored: FieldValue)

    public static func profileCells(_ rng: inout Random) -> [String: Cell] {
        var cells: [String: Cell] = [:]
        func maybe(_ name: String, _ make: (inout Random) -> Cell) {
            cells[name] = rng.chance(15) ? ("", .null) : make(&rng)
        }
        maybe("age") { r in let v = r.pick([18, 100, 19, 45, 45, 99] + [Int64(18 + r.below(83))]); return (String(v), .int(v)) }
        maybe("score") { r in
            // Bounds, beyond them (clamped at ingest), halves, the doubles next to 1/2, a grid value.
            let v = r.pick([-1000, 1000, -1500, 2500.75, 0.5, -0.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994, 0, 1e-300]
                           + [Double(r.below(8001) - 4000) / 4])
            return (String(v), .float(min(1000, max(-1000, v))))
        }
        maybe("vip") { r in r.chance(50) ? ("true", .bool(true)) : ("0", .bool(false)) }
        maybe("tier") { r in let v = r.pick(["gold", "silver", "bronze", "other", "platinum"]); return (v, .text(v == "platinum" ? "other" : v)) }
        maybe("region") { r in let v = r.pick(["north", "south", "east", "west"]); return (v, .text(v)) }
        maybe("joined") { r in let d = Int32(20_000 + r.below(60)); return (DateParsing.isoDate(days: d), .date(d)) }
        maybe("big") { r in let v = r.pick([Int64(1) << 53, -(Int64(1) << 53), (Int64(1) << 53) - 1, 0, Int64(r.below(1_000_000)) - 500_000]); return (String(v), .int(v)) }
        return cells
    }

    /// One event as input text and as stored.
    public static func event(_ rng: inout Random) -> (kind: String, item: String, text: String, value: Double, time: Int64) {
        let kind = rng.pick(["purchase", "purchase", "adjust", "rating", "huge"])
        let item = rng.pick(items), time = rng.pick(times)
        let text: String, value: Double
        switch kind {
        case "purchase":
            let v = rng.pick([0, 1000, 1500, -3, 0.49999999999999994, 2.5, 999.75] + [Double(rng.below(4000)) / 4])
            (text, value) = (String(v), min(1000, max(0, v)))
        case "adjust":
            let v = rng.pick([-1000, 1000, -0.5, 0.5] + [Double(rng.below(4001) - 2000) / 2])
            (text, value) = (String(v), v)
        case "rating":
            let v = rng.pick([0, 1, 3, 5, 9])
            (text, value) = (String(v), Double(min(5, max(1, v))))
        default:
            let v = rng.pick([Int64(1) << 53, -(Int64(1) << 53), (Int64(1) << 53) - 1, 1, -1])
            (text, value) = (String(v), Double(v))
        }
        return (kind, item, text, value, time)
    }

    public static func csv(_ header: [String], _ rows: [[String]]) -> String {
        ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
    }

    /// A keyring with a fixed secret, loaded from a file written under `directory`: pseudonyms,
    /// and with them the item tie keys, are the same on every run, so tests of tie order are
    /// deterministic.
    public static func fixedKeyring(directory: String) throws -> Keyring {
        let path = directory + "/fixed-keyring.json"
        let json = """
            {"format": "\(Keyring.format)", "format_version": \(Keyring.formatVersion), "active": 1,
             "keys": [{"version": 1, "secret": "\(String(repeating: "5a", count: 16) + String(repeating: "c3", count: 16))", "created": "2026-03-01T00:00:00Z"}]}
            """
        FileManager.default.createFile(atPath: path, contents: Data(json.utf8), attributes: [.posixPermissions: 0o600])
        return try Keyring.load(path: path)
    }

    public static let ctx = AuditContext(actor: "conformance", role: "privacy_officer", requestID: "r")

    /// A seeded population ingested into the engine and the reference the same way: profiles,
    /// a second profile file re-ingesting some subjects with new values, events (duplicates
    /// included), consent granted and revoked, some subjects erased. The reference holds each
    /// subject's pseudonym under the engine's keyring (its item tie key).
    public static func populate(_ e: some ConformancePopulationTarget, subjects n: Int, seed: UInt64) throws -> ReferenceAggregateSource {
        var rng = Random(state: seed)
        var reference = ReferenceAggregateSource(schema: schema)
        let columns = ["age", "score", "vip", "tier", "region", "joined", "big"]
        let ids = (0..<n).map { "C-\(seed)-\($0)" }
        func profiles(_ chosen: [String]) throws {
            var rows: [[String]] = []
            for id in chosen {
                let cells = profileCells(&rng)
                rows.append([id, ""] + columns.map { cells[$0]?.text ?? "" })
                reference.upsert(customerID: id, pseudonym: try e.pseudonym(ofCustomerID: id), attributes: cells.mapValues(\.stored))
            }
            try e.ingestProfiles(csv: csv(["customer_id", "email"] + columns, rows))
        }
        try profiles(ids)
        try profiles(ids.filter { _ in rng.chance(20) })
        var rows: [[String]] = []
        for id in ids {
            for _ in 0..<rng.pick([0, 0, 1, 2, 4, 7]) {
                let ev = event(&rng)
                rows.append([id, ev.kind, ev.item, ev.text, DateParsing.iso8601(unixSeconds: ev.time)])
                reference.addEvent(customerID: id, .init(kind: ev.kind, item: ev.item, value: ev.value, time: ev.time))
                if rng.chance(10) {   // the same event again: stored once
                    rows.append(rows[rows.count - 1])
                }
            }
        }
        if !rows.isEmpty {
            try e.ingestEvents(csv: csv(["customer_id", "kind", "item", "value", "time"], rows))
        }
        for purpose in ["analytics", "marketing"] {
            let granted = ids.enumerated().filter { _ in rng.chance(60) }.map { (line: $0.offset + 1, id: $0.element) }
            if !granted.isEmpty { try e.setConsent(granted, purpose: purpose, granted: true) }
            for g in granted { reference.setConsent(customerID: g.id, purpose: purpose, granted: true) }
            let revoked = granted.filter { _ in rng.chance(30) }
            if !revoked.isEmpty { try e.setConsent(revoked, purpose: purpose, granted: false) }
            for g in revoked { reference.setConsent(customerID: g.id, purpose: purpose, granted: false) }
        }
        let erased = ids.enumerated().filter { _ in rng.chance(15) }.map { (line: $0.offset + 1, id: $0.element) }
        if !erased.isEmpty { try e.erase(erased) }
        for g in erased { reference.erase(customerID: g.id) }
        return reference
    }

    /// The population's rights case: some subjects restricted (one of them restricted and
    /// lifted again), some objecting to `marketing`, on the engine and the reference alike.
    /// Returns the customer IDs restricted and objecting at the end.
    public static func applyRights(_ e: some ConformanceRightsTarget, _ reference: inout ReferenceAggregateSource,
                                   seed: UInt64) throws -> (restricted: [String], objecting: [String]) {
        var rng = Random(state: seed ^ 0x5249_4748_5453)   // "RIGHTS"
        let ids = reference.subjects.map(\.customerID)
        let restricted = ids.filter { _ in rng.chance(20) }
        for id in restricted {
            try e.restrict(id, true)
            reference.setRestricted(customerID: id, true)
        }
        if let lifted = ids.first(where: { !restricted.contains($0) }) {
            try e.restrict(lifted, true)
            try e.restrict(lifted, false)
        }
        let objecting = ids.enumerated().filter { _ in rng.chance(25) }.map { (line: $0.offset + 1, id: $0.element) }
        if !objecting.isEmpty { try e.object(objecting, purpose: "marketing") }
        for o in objecting { reference.setConsent(customerID: o.id, purpose: "marketing", granted: false) }
        return (restricted, objecting.map(\.id))
    }

    /// Every request of `requests`, and each again with objections to `marketing` left out.
    public static var rightsRequests: [(String, AggregateRequest)] {
        requests + requests.map { name, r in
            var o = r
            o.objectionPurpose = "marketing"
            return ("\(name), objections to marketing", o)
        }
    }

    // MARK: Requests

    public static func attr(_ n: String, _ lo: Double, _ hi: Double, _ c: Double = 0, _ g: Double = 1) -> Coordinate {
        .attribute(name: n, lower: lo, upper: hi, center: c, grid: g)
    }

    public static func req(_ coordinates: [Coordinate], consent: String? = nil, where predicates: [WhereCondition] = [], nonNull: [String] = [],
                    grouping: Grouping? = nil, derived: [DerivedAttribute] = []) -> AggregateRequest {
        AggregateRequest(consentPurpose: consent, predicates: predicates, nonNull: nonNull, grouping: grouping, coordinates: coordinates, derived: derived)
    }

    public static func w(_ a: String, _ op: WhereCondition.Op, _ v: WhereCondition.Value) -> WhereCondition { WhereCondition(attribute: a, op: op, value: v) }

    public static let spend = DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, from: t0, before: t0 + 86_400, lower: 0, upper: 1500)
    public static let orders = DerivedAttribute(name: "orders", eventKind: "purchase", aggregate: .count, from: t0 - 1, before: t0 + 86_399, lower: 0, upper: 3)
    public static let distinct = DerivedAttribute(name: "distinct", eventKind: "purchase", aggregate: .distinctItems, lower: 1, upper: 4)
    public static let net = DerivedAttribute(name: "net", eventKind: "adjust", aggregate: .sum, before: t0 + 1, lower: -500, upper: 250)
    public static let rated = DerivedAttribute(name: "rated", eventKind: "rating", aggregate: .count, from: t0 + 1, lower: 0, upper: 10)
    public static let allDerived = [spend, orders, distinct, net, rated]

    public static let tiers = ["gold", "silver", "bronze", "other"]
    public static let age = ScaledFeature(name: "age", lower: 18, upper: 100)
    public static let score = ScaledFeature(name: "score", lower: -1000, upper: 1000)
    public static let narrowScore = ScaledFeature(name: "score", lower: -10, upper: 10)

    /// Every request shape the aggregate source answers, by name.
    public static let requests: [(String, AggregateRequest)] = {
        let counts: [Coordinate] = [.subjects] + ["age", "score", "vip", "tier", "region", "joined", "big"].map { .nonNull(attribute: $0) }
        let attributes: [Coordinate] = [
            attr("age", 18, 100), attr("age", 18, 100, 59), attr("age", 30, 60, 45), attr("age", 30.5, 60.5, 0, 0.5), attr("age", 18, 100, 0, 2),
            attr("score", -1000, 1000), attr("score", -1000, 1000, 0, 0.5), attr("score", -10, 10, 0, 0.25), attr("score", 0, 1000, 0, 2),
            attr("score", -1000, 1000, 500, 4), attr("score", -1, 1, 0, 1), attr("score", -1000, 1000, 0, 0x1p-20),
            attr("vip", 0, 1), attr("vip", 0, 1, 0.5, 0.5), attr("joined", 20_010, 20_040, 20_020), attr("big", -twoTo53, twoTo53),
            attr("big", -twoTo53, twoTo53, 0, 0x1p37), attr("big", 0, 1_000, 0, 1),
        ]
        let events: [Coordinate] = [
            .events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 1, maxContributions: 10),
            .events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 0.25, maxContributions: 1),
            .events(kind: "purchase", lower: 0, upper: 100, center: 50, grid: 1, maxContributions: 3),
            .events(kind: "purchase", lower: 10, upper: 20, center: 0, grid: 1, maxContributions: 2),
            .events(kind: "adjust", lower: -1000, upper: 1000, center: 0, grid: 0.5, maxContributions: 10),
            .events(kind: "adjust", lower: -100, upper: 100, center: -50, grid: 2, maxContributions: 2),
            .events(kind: "rating", lower: 1, upper: 5, center: 3, grid: 1, maxContributions: 2),
            .events(kind: "huge", lower: -twoTo53, upper: twoTo53, center: 0, grid: 1, maxContributions: 10),
            .events(kind: "huge", lower: -twoTo53, upper: twoTo53, center: 0, grid: 0x1p33, maxContributions: 3),
            .events(kind: "nonesuch", lower: 0, upper: 1, center: 0, grid: 1, maxContributions: 3),
            .eventCount(kind: "purchase", maxContributions: 0), .eventCount(kind: "purchase", maxContributions: -1),
            .events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 1, maxContributions: 0),
            .eventCount(kind: "purchase", maxContributions: 1), .eventCount(kind: "purchase", maxContributions: 3),
            .eventCount(kind: "adjust", maxContributions: 100), .eventCount(kind: "rating", maxContributions: 2), .eventCount(kind: "huge", maxContributions: 10),
        ]
        let products: [Coordinate] = [
            .product(left: age, right: score, grid: 0x1p-16), .product(left: age, right: nil, grid: 0x1p-10), .product(left: narrowScore, right: narrowScore, grid: 0x1p-16),
            .product(left: score, right: nil, grid: 1),
            .product(left: ScaledFeature(name: "age", lower: 40, upper: 40), right: score, grid: 0x1p-16),   // lower == upper: 0
        ]
        let derivedCoordinates: [Coordinate] = allDerived.map { attr($0.name, $0.lower, $0.upper, 0, $0.integral ? 1 : 0.25) }
            + [.nonNull(attribute: "spend"), attr("spend", 100, 200, 150, 0.5),
               .product(left: ScaledFeature(name: "spend", lower: 0, upper: 1500), right: age, grid: 0x1p-16)]
        let predicates: [(String, [WhereCondition])] = [
            ("age=45", [w("age", .eq, .int(45))]), ("age!=45", [w("age", .ne, .int(45))]), ("age<19", [w("age", .lt, .int(19))]),
            ("age<=18", [w("age", .le, .int(18))]), ("age>99", [w("age", .gt, .int(99))]), ("age>=100", [w("age", .ge, .int(100))]),
            ("age>44.5", [w("age", .gt, .real(44.5))]), ("age<=45.0", [w("age", .le, .real(45))]),
            ("score<0.5", [w("score", .lt, .real(0.5))]), ("score>=0.49999999999999994", [w("score", .ge, .real(0.49999999999999994))]),
            ("score=1000", [w("score", .eq, .int(1000))]), ("score<=-1000", [w("score", .le, .real(-1000))]),
            ("tier=gold", [w("tier", .eq, .text("gold"))]), ("tier!=other", [w("tier", .ne, .text("other"))]),
            ("tier<m (bytes)", [w("tier", .lt, .text("m"))]), ("tier=platinum (absent)", [w("tier", .eq, .text("platinum"))]),
            ("region=nowhere (absent)", [w("region", .eq, .text("nowhere"))]), ("vip=1", [w("vip", .eq, .int(1))]),
            ("joined>=", [w("joined", .ge, .int(20_030))]), ("big=2^53", [w("big", .eq, .int(1 << 53))]), ("big<-2^53+1", [w("big", .lt, .real(-twoTo53 + 1))]),
            ("age and tier", [w("age", .ge, .int(30)), w("tier", .ne, .text("gold"))]),
            ("spend>0", [w("spend", .gt, .int(0))]), ("orders>=2", [w("orders", .ge, .real(2))]),
        ]
        let groupings: [(String, Grouping)] = [
            ("tier", .attribute(name: "tier", domain: tiers)), ("tier partial", .attribute(name: "tier", domain: ["gold", "silver"])),
            ("tier with platinum", .attribute(name: "tier", domain: tiers + ["platinum"])), ("region", .attribute(name: "region", domain: ["north", "south", "east", "west"])),
            ("empty domain", .attribute(name: "tier", domain: [])),
            ("nearest", .nearest(features: [age, score], centroids: [[0, 0], [0.5, 0.5], [1, 1], [0.5, 0.5], [0.25, 0.75]])),
            ("nearest one", .nearest(features: [age], centroids: [[0.3]])),
            ("nearest narrow", .nearest(features: [narrowScore, age], centroids: [[0, 0.5], [1, 0.5], [0.5, 0.5]])),
            ("nearest derived", .nearest(features: [ScaledFeature(name: "spend", lower: 0, upper: 1500), age], centroids: [[0, 0], [1, 1]])),
            ("cell", .cell(features: [age, score], bins: 3)), ("cell 1", .cell(features: [narrowScore], bins: 1)),
            ("cell derived", .cell(features: [ScaledFeature(name: "orders", lower: 0, upper: 3)], bins: 4)),
            ("thresholds", .thresholds(features: ["age", "score", "vip"], cuts: [45, 0.5, 1])),
            ("thresholds derived", .thresholds(features: ["net", "big"], cuts: [0, 0])),
            // A feature with lower == upper scales by 1/0: no subject has a cell or a centroid (no trap).
            ("cell degenerate", .cell(features: [ScaledFeature(name: "age", lower: 50, upper: 50)], bins: 2)),
            ("nearest degenerate", .nearest(features: [ScaledFeature(name: "score", lower: 1, upper: 1)], centroids: [[0], [1]])),
        ]
        var out: [(String, AggregateRequest)] = []
        for c in counts + attributes + events + products { out.append(("\(c)", req([c]))) }
        out.append(("all counts and attributes", req(counts + attributes)))
        out.append(("all events", req(events)))
        out.append(("products non-null", req(products, nonNull: ["age", "score"])))
        out.append(("derived", req(derivedCoordinates, derived: allDerived)))
        for purpose in ["analytics", "marketing", "never-asked"] {
            out.append(("consent \(purpose)", req(counts + [attributes[1], events[0], events[10]], consent: purpose)))
        }
        for (name, p) in predicates {
            out.append(("where \(name)", req([.subjects, attributes[5], events[4]], where: p, derived: allDerived)))
        }
        for (name, g) in groupings {
            out.append(("group \(name)", req([.subjects, .nonNull(attribute: "score"), attributes[6], events[0], events[11]], grouping: g, derived: allDerived)))
        }
        out.append(("group nearest, count and attributes only (the Swift scan)", req([.subjects, .nonNull(attribute: "age"), attributes[0], attributes[7]],
                                                                                      grouping: groupings[5].1)))
        out.append(("group nearest degenerate (the Swift scan)", req([.subjects, attributes[6]], grouping: groupings.first { $0.0 == "nearest degenerate" }!.1)))
        out.append(("group nearest, consent (the Swift scan)", req([.subjects, attributes[6]], consent: "analytics", grouping: groupings[7].1)))
        out.append(("everything at once", req([.subjects, attributes[2], events[2], events[12], derivedCoordinates[0], products[0]],
                                              consent: "analytics", where: [w("age", .ge, .int(25)), w("spend", .ge, .real(0))],
                                              nonNull: ["age", "score"], grouping: groupings[0].1, derived: allDerived)))
        out.append(("where absent, grouped", req([.subjects, attributes[5]], where: [w("region", .eq, .text("nowhere"))], grouping: groupings[0].1)))
        // Item groupings.
        let vocabulary = ["I0", "I1", "I2", "I3", "I9"]
        for (k, m) in [("purchase", 1), ("purchase", 2), ("purchase", 10), ("rating", 3), ("adjust", 2)] {
            out.append(("items \(k) \(m)", req([.itemPresence(kind: k, maxItems: m)], grouping: .items(vocabulary: vocabulary))))
            out.append(("items \(k) \(m) consent", req([.itemPresence(kind: k, maxItems: m)], consent: "analytics", grouping: .items(vocabulary: vocabulary))))
            out.append(("items \(k) \(m) found", req([.itemPresence(kind: k, maxItems: m)], grouping: .items(vocabulary: nil))))
            out.append(("items \(k) \(m) since", req([.itemPresence(kind: k, maxItems: m, since: t0)], grouping: .items(vocabulary: vocabulary))))
            for unit in [1, 2, 12] {
                out.append(("pairs \(k) \(m) \(unit)", req([.itemPairWeight(kind: k, maxItems: m, unit: unit)], grouping: .itemPairs(vocabulary: vocabulary))))
            }
            for size in [2, 3] {
                out.append(("sets \(k) \(m) \(size)", req([.itemSetPresence(kind: k, maxItems: m, size: size)], consent: "marketing", grouping: .itemSets(vocabulary: vocabulary, size: size))))
            }
            out.append(("segments \(k) \(m)", req([.itemPresence(kind: k, maxItems: m)], grouping: .segmentItems(attribute: "tier", domain: ["gold", "other", "platinum"], vocabulary: vocabulary))))
            out.append(("segments \(k) \(m) since consent", req([.itemPresence(kind: k, maxItems: m, since: t0 + 1)], consent: "analytics",
                                                                grouping: .segmentItems(attribute: "region", domain: ["north", "south", "east", "west"], vocabulary: vocabulary))))
        }
        return out
    }()

    /// Requests every engine must refuse (the reference does).
    public static let refused: [(String, AggregateRequest)] = [
        ("unknown attribute", req([attr("nonesuch", 0, 1)])),
        ("unknown predicate attribute", req([.subjects], where: [w("nonesuch", .eq, .int(1))])),
        // Constants of another type than the attribute's (SQLite's affinity would convert "45" to 45).
        ("text constant on a number", req([.subjects], where: [w("age", .eq, .text("45"))])),
        ("text constant on a derived number", req([.subjects], where: [w("spend", .ge, .text("0"))], derived: [spend])),
        ("number constant on a category", req([.subjects], where: [w("tier", .eq, .int(1))])),
        ("real constant on a category", req([.subjects], where: [w("tier", .ne, .real(1))])),
        ("NaN constant", req([.subjects], where: [w("score", .ne, .real(.nan))])),
        ("infinite constant", req([.subjects], where: [w("score", .lt, .real(.infinity))])),
        ("item coordinate without item grouping", req([.itemPresence(kind: "purchase", maxItems: 2)])),
        ("item grouping with two coordinates", req([.itemPresence(kind: "purchase", maxItems: 2), .subjects], grouping: .items(vocabulary: ["I0"]))),
        ("item grouping with a predicate", req([.itemPresence(kind: "purchase", maxItems: 2)], where: [w("age", .eq, .int(45))], grouping: .items(vocabulary: ["I0"]))),
        ("no items", req([.itemPresence(kind: "purchase", maxItems: 0)], grouping: .items(vocabulary: ["I0"]))),
        ("mismatched item coordinate", req([.itemPresence(kind: "purchase", maxItems: 2)], grouping: .itemPairs(vocabulary: ["I0", "I1"]))),
        ("sets of 4", req([.itemSetPresence(kind: "purchase", maxItems: 4, size: 4)], grouping: .itemSets(vocabulary: ["I0", "I1", "I2", "I3"], size: 4))),
        ("segment on a number", req([.itemPresence(kind: "purchase", maxItems: 2)], grouping: .segmentItems(attribute: "age", domain: ["18"], vocabulary: ["I0"]))),
        ("derived twice", req([.subjects], derived: [spend, spend])),
        ("derived shadowing a field", req([.subjects], derived: [DerivedAttribute(name: "age", eventKind: "purchase", aggregate: .count, lower: 0, upper: 1)])),
        ("derived with empty bounds", req([.subjects], derived: [DerivedAttribute(name: "x", eventKind: "purchase", aggregate: .count, lower: 1, upper: 1)])),
        ("group by a number", req([.subjects], grouping: .attribute(name: "age", domain: ["18", "45"]))),
        ("group by a bool", req([.subjects], grouping: .attribute(name: "vip", domain: ["0", "1"]))),
        ("group by derived", req([.subjects], grouping: .attribute(name: "spend", domain: ["1"]), derived: [spend])),
        ("no centroids", req([.subjects], grouping: .nearest(features: [age], centroids: []))),
        ("centroid of another dimension", req([.subjects], grouping: .nearest(features: [age], centroids: [[0.5, 0.5]]))),
        ("too many cells", req([.subjects], grouping: .cell(features: [age, score, age, score, age], bins: 17))),
        ("zero bins", req([.subjects], grouping: .cell(features: [age], bins: 0))),
        ("tree without levels", req([.subjects], grouping: .thresholds(features: [], cuts: []))),
        ("tree with an infinite cut", req([.subjects], grouping: .thresholds(features: ["age"], cuts: [.infinity]))),
    ]
}

/// Both answers, an error compared only as "refused".
public enum Answer: Equatable, CustomStringConvertible {
    case sums([String: [Int64]])
    case refused
    public init(_ body: () throws -> [String: [Int64]]) {
        do { self = .sums(try body()) } catch { self = .refused }
    }
    public var description: String {
        switch self {
        case .refused: return "refused"
        case .sums(let s): return s.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
        }
    }
}


// MARK: - Scoring reads (`subjectFeatures`)

extension Conformance {
    /// Every numeric attribute type (int with a null, float clamped at ingest, bool, date, ±2^53)
    /// and every derived aggregate (windows, clamping, no events).
    public static let scoreFeatures: [FeatureColumn] = [.attribute("age"), .attribute("score"), .attribute("vip"), .attribute("joined"),
                                                        .attribute("big")] + allDerived.map { .derived($0) }

    /// What `subjectFeatures` must answer for the reference's subjects (in the reference's
    /// order): served (consent for `consentPurpose` when given, not restricted, not objecting
    /// to `objectionPurpose`) and, when served, the values in feature order.
    public static func expectedFeatures(_ reference: ReferenceAggregateSource, _ features: [FeatureColumn], consentPurpose: String?,
                                        objectionPurpose: String?) -> [(pseudonym: [UInt8], served: Bool, values: [Double?])] {
        reference.subjects.map { s in
            var served = !s.restricted
            if let c = consentPurpose { served = served && s.consent[c] == true }
            if let o = objectionPurpose { served = served && s.consent[o] != false }
            guard served else { return (s.pseudonym, false, []) }
            let events = s.events.map { (kind: $0.kind, item: $0.item, value: $0.value, time: $0.time) }
            let values: [Double?] = features.map { f in
                switch f {
                case .attribute(let name):
                    switch s.attributes[name] {
                    case .int(let i)?: return Double(i)
                    case .real(let d)?: return d
                    default: return nil
                    }
                case .derived(let d): return d.value(of: events)
                }
            }
            return (s.pseudonym, true, values)
        }
    }

    /// Equal values: exactly, except sums of event values (the engines add in their own order)
    /// to 1e-9 relative.
    public static func sameFeatureValues(_ a: [Double?], _ b: [Double?]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            switch (x, y) {
            case (nil, nil): return true
            case let (x?, y?): return x == y || abs(x - y) <= 1e-9 * max(1, abs(x), abs(y))
            default: return false
            }
        }
    }

    /// Feature lists and pages every engine refuses (usage errors).
    public static let refusedFeatureReads: [(String, [FeatureColumn], FeatureSelection)] = [
        ("a categorical attribute", [.attribute("tier")], .page(after: 0, limit: 10)),
        ("a PII field", [.attribute("email")], .page(after: 0, limit: 10)),
        ("an unknown attribute", [.attribute("height")], .page(after: 0, limit: 10)),
        ("no features", [], .page(after: 0, limit: 10)),
        ("a derived feature of an unknown kind", [.derived(DerivedAttribute(name: "x", eventKind: "nope", aggregate: .count, lower: 0, upper: 1))], .page(after: 0, limit: 10)),
        ("a derived feature named as a field", [.derived(DerivedAttribute(name: "age", eventKind: "purchase", aggregate: .count, lower: 0, upper: 1))], .page(after: 0, limit: 10)),
        ("reversed derived bounds", [.derived(DerivedAttribute(name: "x", eventKind: "purchase", aggregate: .count, lower: 1, upper: 0))], .page(after: 0, limit: 10)),
        ("an empty page", [.attribute("age")], .page(after: 0, limit: 0)),
        ("a page too large", [.attribute("age")], .page(after: 0, limit: 10_001)),
    ]
}
