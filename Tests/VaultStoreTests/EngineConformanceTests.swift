import DifferentialPrivacy
import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultStore

// MARK: - Engines under test

/// The storage engines the conformance suite runs on.
///
/// To add PostgreSQL: add `case postgres` and, in `make(schema:)`, its branch, one factory
/// returning an `EngineUnderTest` whose `engine` is the PostgreSQL engine on a fresh database
/// (schema created for `schema`), whose `itemTieKey` returns the subject number its item
/// tie-break hashes (see `ReferenceAggregateSource.Subject.tieKey`) and whose `cleanup` drops
/// the database. Every test of the suite takes `TestEngine.allCases`, so nothing else changes.
enum TestEngine: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite

    var description: String { rawValue }

    func make(schema: Schema) throws -> EngineUnderTest {
        switch self {
        case .sqlite:
            let dir = NSTemporaryDirectory() + "pv-conformance-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let store = try ProfileStore.create(path: dir + "/store.sqlite", keyring: Keyring.generate(note: "conformance"), schema: schema, policyVersion: "test")
            return EngineUnderTest(engine: store, scratch: dir, itemTieKey: { id in
                let p = try store.pseudonym(ofCustomerID: id)
                guard let key = try store.pool.read({ db in try Int64.fetchOne(db, sql: "SELECT id FROM subjects WHERE pseudonym = ?", arguments: [Data(p)]) }) else {
                    throw VaultError(.notFound, "no such subject")
                }
                return key
            }, cleanup: {
                try? store.close()
                try? FileManager.default.removeItem(atPath: dir)
            })
        }
    }
}

/// One engine instance, with a scratch directory for input files.
final class EngineUnderTest: @unchecked Sendable {
    let engine: any StorageEngine
    let scratch: String
    let itemTieKey: (String) throws -> Int64
    private let cleanup: () -> Void

    init(engine: any StorageEngine, scratch: String, itemTieKey: @escaping (String) throws -> Int64, cleanup: @escaping () -> Void) {
        self.engine = engine
        self.scratch = scratch
        self.itemTieKey = itemTieKey
        self.cleanup = cleanup
    }

    deinit { cleanup() }

    func file(_ text: String) throws -> RecordSource {
        let p = scratch + "/" + UUID().uuidString + ".csv"
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return .file(p)
    }
}

// MARK: - The schema and populations

enum Conformance {
    static let twoTo53 = 9_007_199_254_740_992.0

    /// Every attribute type, bounds and domains with both out-of-bounds rules, optional values,
    /// and event kinds with negative, clamped and extreme (±2^53) values.
    static let schema: Schema = {
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

    static let t0: Int64 = 1_772_323_200   // 2026-03-01T00:00:00Z
    /// Few distinct times, so events tie on time.
    static let times: [Int64] = [t0 - 86_400, t0 - 1, t0, t0 + 1, t0 + 3_600, t0 + 86_399, t0 + 86_400]
    static let items = ["I0", "I1", "I2", "I3", "I4", "I5"]

    /// SplitMix64: a fixed seed gives a fixed population.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
        mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    }

    /// One input cell and the value ingest stores for it (nil: null).
    typealias Cell = (text: String, stored: FieldValue)

    static func profileCells(_ rng: inout Random) -> [String: Cell] {
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
    static func event(_ rng: inout Random) -> (kind: String, item: String, text: String, value: Double, time: Int64) {
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

    static func csv(_ header: [String], _ rows: [[String]]) -> String {
        ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
    }

    static let ctx = AuditContext(actor: "conformance", role: "privacy_officer", requestID: "r")

    /// A seeded population ingested into the engine and the reference the same way: profiles,
    /// a second profile file re-ingesting some subjects with new values, events (duplicates
    /// included), consent granted and revoked, some subjects erased.
    static func populate(_ e: EngineUnderTest, subjects n: Int, seed: UInt64) throws -> ReferenceAggregateSource {
        var rng = Random(state: seed)
        var reference = ReferenceAggregateSource(schema: schema)
        let columns = ["age", "score", "vip", "tier", "region", "joined", "big"]
        let ids = (0..<n).map { "C-\(seed)-\($0)" }
        func profiles(_ chosen: [String]) throws {
            var rows: [[String]] = []
            for id in chosen {
                let cells = profileCells(&rng)
                rows.append([id, ""] + columns.map { cells[$0]?.text ?? "" })
                reference.upsert(customerID: id, attributes: cells.mapValues(\.stored))
            }
            _ = try e.engine.ingestProfiles(try e.file(csv(["customer_id", "email"] + columns, rows)), options: IngestOptions())
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
            _ = try e.engine.ingestEvents(try e.file(csv(["customer_id", "kind", "item", "value", "time"], rows)), options: IngestOptions())
        }
        for purpose in ["analytics", "marketing"] {
            let granted = ids.enumerated().filter { _ in rng.chance(60) }.map { (line: $0.offset + 1, id: $0.element) }
            if !granted.isEmpty {
                _ = try e.engine.setConsent(granted, file: nil, purpose: purpose, granted: true, source: nil, policyVersion: "test", audit: ctx)
            }
            for g in granted { reference.setConsent(customerID: g.id, purpose: purpose, granted: true) }
            let revoked = granted.filter { _ in rng.chance(30) }
            if !revoked.isEmpty {
                _ = try e.engine.setConsent(revoked, file: nil, purpose: purpose, granted: false, source: nil, policyVersion: "test", audit: ctx)
            }
            for g in revoked { reference.setConsent(customerID: g.id, purpose: purpose, granted: false) }
        }
        let erased = ids.enumerated().filter { _ in rng.chance(15) }.map { (line: $0.offset + 1, id: $0.element) }
        if !erased.isEmpty { _ = try e.engine.erase(customerIDs: erased, file: nil, reason: "test", audit: ctx) }
        for g in erased { reference.erase(customerID: g.id) }
        for s in reference.subjects { reference.setTieKey(customerID: s.customerID, try e.itemTieKey(s.customerID)) }
        return reference
    }

    // MARK: Requests

    static func attr(_ n: String, _ lo: Double, _ hi: Double, _ c: Double = 0, _ g: Double = 1) -> Coordinate {
        .attribute(name: n, lower: lo, upper: hi, center: c, grid: g)
    }

    static func req(_ coordinates: [Coordinate], consent: String? = nil, where predicates: [WhereCondition] = [], nonNull: [String] = [],
                    grouping: Grouping? = nil, derived: [DerivedAttribute] = []) -> AggregateRequest {
        AggregateRequest(consentPurpose: consent, predicates: predicates, nonNull: nonNull, grouping: grouping, coordinates: coordinates, derived: derived)
    }

    static func w(_ a: String, _ op: WhereCondition.Op, _ v: WhereCondition.Value) -> WhereCondition { WhereCondition(attribute: a, op: op, value: v) }

    static let spend = DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, from: t0, before: t0 + 86_400, lower: 0, upper: 1500)
    static let orders = DerivedAttribute(name: "orders", eventKind: "purchase", aggregate: .count, from: t0 - 1, before: t0 + 86_399, lower: 0, upper: 3)
    static let distinct = DerivedAttribute(name: "distinct", eventKind: "purchase", aggregate: .distinctItems, lower: 1, upper: 4)
    static let net = DerivedAttribute(name: "net", eventKind: "adjust", aggregate: .sum, before: t0 + 1, lower: -500, upper: 250)
    static let rated = DerivedAttribute(name: "rated", eventKind: "rating", aggregate: .count, from: t0 + 1, lower: 0, upper: 10)
    static let allDerived = [spend, orders, distinct, net, rated]

    static let tiers = ["gold", "silver", "bronze", "other"]
    static let age = ScaledFeature(name: "age", lower: 18, upper: 100)
    static let score = ScaledFeature(name: "score", lower: -1000, upper: 1000)
    static let narrowScore = ScaledFeature(name: "score", lower: -10, upper: 10)

    /// Every request shape the aggregate source answers, by name.
    static let requests: [(String, AggregateRequest)] = {
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
    static let refused: [(String, AggregateRequest)] = [
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
enum Answer: Equatable, CustomStringConvertible {
    case sums([String: [Int64]])
    case refused
    init(_ body: () throws -> [String: [Int64]]) {
        do { self = .sums(try body()) } catch { self = .refused }
    }
    var description: String {
        switch self {
        case .refused: return "refused"
        case .sums(let s): return s.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
        }
    }
}

// MARK: - The suite

/// Every engine computes exactly the sums of `ReferenceAggregateSource` (the documented rules)
/// on seeded populations: 0, 1, 7 and 40 subjects with ties, values at and beyond the schema's
/// bounds, missing values, subjects without events, duplicate events, re-ingested profiles,
/// revoked consent and erased subjects. Plus the seam's promises beyond aggregates.
@Suite struct EngineConformanceTests {
    static let populations: [(subjects: Int, seed: UInt64)] = [(0, 1), (1, 2), (7, 3), (40, 4)]

    @Test(arguments: TestEngine.allCases, populations.indices)
    func aggregatesMatchTheReference(engine: TestEngine, population: Int) throws {
        let (n, seed) = Self.populations[population]
        let e = try engine.make(schema: Conformance.schema)
        let reference = try Conformance.populate(e, subjects: n, seed: seed)
        let source = e.engine.aggregateSource
        for (name, r) in Conformance.requests {
            let want = Answer { try reference.boundedSums(r) }
            #expect(want != .refused, "\(name): the reference refuses a request the suite expects to be answered")
            #expect(Answer { try source.boundedSums(r) } == want, "\(engine), \(n) subjects: \(name)")
        }
        for (name, r) in Conformance.refused {
            #expect(Answer { try reference.boundedSums(r) } == .refused, "reference: \(name)")
            #expect(Answer { try source.boundedSums(r) } == .refused, "\(engine): \(name)")
        }
    }

    /// The population really has what the suite claims to test (so the comparisons above
    /// cannot pass on an empty store by accident).
    @Test(arguments: TestEngine.allCases)
    func theLargePopulationHasTheCasesItClaims(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        let reference = try Conformance.populate(e, subjects: 40, seed: 4)
        let subjects = reference.subjects
        #expect(subjects.count >= 25 && subjects.count < 40)                                   // some erased
        #expect(subjects.contains { $0.events.isEmpty } && subjects.contains { $0.events.count >= 4 })
        #expect(subjects.contains { $0.attributes["age"] == nil } && subjects.contains { $0.attributes["age"] == .int(100) })
        #expect(subjects.contains { $0.attributes["score"] == .real(1000) } && subjects.contains { $0.attributes["score"] == .real(-1000) })
        #expect(subjects.contains { $0.consent["analytics"] == false } && subjects.contains { $0.consent["analytics"] == true })
        #expect(subjects.contains { s in Set(s.events.map(\.time)).count < s.events.count })    // ties on time
        #expect(try e.engine.aggregateSource.boundedSums(Conformance.req([.subjects]))[""] == [Int64(subjects.count)])
    }

    /// Item samples with ties: eight subjects, each with six items used last at the same second
    /// (and one older item), capped at 1 to 3. Which items count is the tie rule alone; with
    /// other tie keys the reference gives other sums, so the comparison tests the rule.
    @Test(arguments: TestEngine.allCases)
    func itemTiesFollowTheFixedHashOrder(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        var reference = ReferenceAggregateSource(schema: Conformance.schema)
        let ids = (0..<8).map { "T-\($0)" }
        _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email", "tier"], ids.map { [$0, "", "gold"] })), options: IngestOptions())
        var rows: [[String]] = []
        for id in ids {
            reference.upsert(customerID: id, attributes: ["tier": .text("gold")])
            for (j, item) in (Conformance.items + ["OLD"]).enumerated() {
                let t = item == "OLD" ? Conformance.t0 - 10 : Conformance.t0
                rows.append([id, "purchase", item, String(j), DateParsing.iso8601(unixSeconds: t)])
                reference.addEvent(customerID: id, .init(kind: "purchase", item: item, value: Double(j), time: t))
            }
        }
        _ = try e.engine.ingestEvents(try e.file(Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows)), options: IngestOptions())
        for id in ids { reference.setTieKey(customerID: id, try e.itemTieKey(id)) }
        var otherTies = reference
        for s in reference.subjects { otherTies.setTieKey(customerID: s.customerID, s.tieKey &+ 1_000_003) }
        let vocabulary = Conformance.items + ["OLD"]
        for m in 1...3 {
            let requests = [
                Conformance.req([.itemPresence(kind: "purchase", maxItems: m)], grouping: .items(vocabulary: vocabulary)),
                Conformance.req([.itemPairWeight(kind: "purchase", maxItems: m + 1, unit: 6)], grouping: .itemPairs(vocabulary: vocabulary)),
                Conformance.req([.itemSetPresence(kind: "purchase", maxItems: m + 2, size: 3)], grouping: .itemSets(vocabulary: vocabulary, size: 3)),
                Conformance.req([.itemPresence(kind: "purchase", maxItems: m)], grouping: .segmentItems(attribute: "tier", domain: Conformance.tiers, vocabulary: vocabulary)),
            ]
            for r in requests {
                let want = try reference.boundedSums(r)
                #expect(try e.engine.aggregateSource.boundedSums(r) == want, "\(engine): cap \(m), \(r.grouping.map { "\($0)" } ?? "")")
                #expect(try otherTies.boundedSums(r) != want)
                #expect(want["OLD"] == nil || want["OLD"] == [0])              // the older item never makes a capped sample
            }
        }
    }

    // MARK: Attacks

    /// Values the rules round at their edges: the doubles next to 1/2 (0.49999999999999994
    /// rounds to 0, not 1: adding 0.5 in floating point gives 1), halves (away from zero), and
    /// the schema's extreme int events (±2^53).
    @Test(arguments: TestEngine.allCases)
    func roundingEdgesFollowTheRule(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        var reference = ReferenceAggregateSource(schema: Conformance.schema)
        let scores = ["0.49999999999999994", "-0.49999999999999994", "0.5", "-0.5", "1.5", "-1.5", "2.5", "-2.5"]
        var rows: [[String]] = []
        for (i, s) in scores.enumerated() {
            rows.append(["E-\(i)", "", s])
            reference.upsert(customerID: "E-\(i)", attributes: ["score": .float(Double(s)!)])
        }
        _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email", "score"], rows)), options: IngestOptions())
        let events = [["E-0", "purchase", "A", "0.49999999999999994", "2026-03-01T00:00:00Z"], ["E-1", "purchase", "A", "0.5", "2026-03-01T00:00:00Z"],
                      ["E-2", "adjust", "A", "-0.5", "2026-03-01T00:00:00Z"], ["E-3", "huge", "A", "9007199254740992", "2026-03-01T00:00:00Z"],
                      ["E-3", "huge", "B", "-9007199254740992", "2026-03-01T00:00:01Z"], ["E-4", "huge", "A", "9007199254740991", "2026-03-01T00:00:00Z"]]
        _ = try e.engine.ingestEvents(try e.file(Conformance.csv(["customer_id", "kind", "item", "value", "time"], events)), options: IngestOptions())
        for ev in events {
            reference.addEvent(customerID: ev[0], .init(kind: ev[1], item: ev[2], value: Double(ev[3])!, time: DateParsing.unixSeconds(fromISO8601: Substring(ev[4]))!))
        }
        let source = e.engine.aggregateSource
        // By the rule, subject by subject: round half away from zero.
        let perSubject: [Int64] = [0, 0, 1, -1, 2, -2, 3, -3]
        for (i, want) in perSubject.enumerated() {
            let only = [Conformance.w("score", .eq, .real(Double(scores[i])!))]
            for c in [Conformance.attr("score", -1000, 1000), Conformance.attr("score", 0, 1000), Conformance.attr("score", -1000, 0)] {
                let r = Conformance.req([c], where: only)
                let expected = try reference.boundedSums(r)
                #expect(expected[""] == [(c == Conformance.attr("score", 0, 1000) ? max(0, want) : c == Conformance.attr("score", -1000, 0) ? min(0, want) : want)])
                #expect(try source.boundedSums(r) == expected, "\(engine): score \(scores[i]), \(c)")
            }
        }
        let eventRequests: [AggregateRequest] = [
            Conformance.req([.events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 1, maxContributions: 1)]),
            Conformance.req([.events(kind: "adjust", lower: -1000, upper: 1000, center: 0, grid: 1, maxContributions: 1)]),
            Conformance.req([.events(kind: "huge", lower: -Conformance.twoTo53, upper: Conformance.twoTo53, center: 0, grid: 1, maxContributions: 10)]),
            Conformance.req([.events(kind: "huge", lower: -Conformance.twoTo53, upper: Conformance.twoTo53, center: 0, grid: 1, maxContributions: 10)],
                            where: [Conformance.w("score", .eq, .real(-0.5))]),
        ]
        #expect(try reference.boundedSums(eventRequests[0])[""] == [1])          // 0.4999... -> 0, 0.5 -> 1
        #expect(try reference.boundedSums(eventRequests[1])[""] == [-1])         // -0.5 -> -1
        #expect(try reference.boundedSums(eventRequests[2])[""] == [(1 << 53) - 1])
        for r in eventRequests { #expect(try source.boundedSums(r) == reference.boundedSums(r), "\(engine): \(r.coordinates)") }
    }

    /// Sums that do not fit 64 bits are refused by every engine, never wrapped: 1,100 events of
    /// 2^53 (the kind's bound, grid 1) sum to more than 2^63.
    @Test(arguments: TestEngine.allCases)
    func sumsBeyond64BitsAreRefused(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        var reference = ReferenceAggregateSource(schema: Conformance.schema)
        let ids = (0..<10).map { "X-\($0)" }
        _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email"], ids.map { [$0, ""] })), options: IngestOptions())
        var rows: [[String]] = []
        for id in ids {
            reference.upsert(customerID: id, attributes: [:])
            for j in 0..<110 {
                rows.append([id, "huge", "I\(j)", "9007199254740992", DateParsing.iso8601(unixSeconds: Conformance.t0 + Int64(j))])
                reference.addEvent(customerID: id, .init(kind: "huge", item: "I\(j)", value: Conformance.twoTo53, time: Conformance.t0 + Int64(j)))
            }
        }
        _ = try e.engine.ingestEvents(try e.file(Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows)), options: IngestOptions())
        let big = Conformance.req([.events(kind: "huge", lower: -Conformance.twoTo53, upper: Conformance.twoTo53, center: 0, grid: 1, maxContributions: 10_000)])
        for source in [reference as any AggregateSource, e.engine.aggregateSource] {
            do {
                let wrapped = try source.boundedSums(big)
                Issue.record("\(engine): a sum beyond 64 bits was answered: \(wrapped)")
            } catch let error as VaultError {
                #expect(error.kind == .invalidInput, "\(engine): \(error)")
            } catch {
                Issue.record("\(engine): not a VaultError: \(type(of: error))")
            }
        }
        // Pair weights: floor(unit / (n - 1)) with unit = Int.max on the same pairs of ten
        // subjects does not fit either (the SQLite engine's Swift loop trapped on it).
        let pairs = Conformance.req([.itemPairWeight(kind: "huge", maxItems: 2, unit: .max)], grouping: .itemPairs(vocabulary: ["I0", "I1", "I108", "I109"]))
        #expect(Answer { try reference.boundedSums(pairs) } == .refused)
        #expect(Answer { try e.engine.aggregateSource.boundedSums(pairs) } == .refused)
        let onePair = Conformance.req([.itemPairWeight(kind: "huge", maxItems: 2, unit: 1 << 40)], grouping: .itemPairs(vocabulary: ["I108", "I109"]))
        #expect(try reference.boundedSums(onePair) == ["0|1": [10 << 40]])
        #expect(try e.engine.aggregateSource.boundedSums(onePair) == reference.boundedSums(onePair))
        // Under the cap of 100 per subject it fits (10 * 100 * 2^53 < 2^63) and both agree.
        let fits = Conformance.req([.events(kind: "huge", lower: -Conformance.twoTo53, upper: Conformance.twoTo53, center: 0, grid: 1, maxContributions: 100)])
        #expect(try reference.boundedSums(fits)[""] == [1000 << 53])
        #expect(try e.engine.aggregateSource.boundedSums(fits) == reference.boundedSums(fits))
    }

    /// What ingest refuses never reaches a sum: NaN, infinities, a decimal beyond the double
    /// range, an int beyond 64 bits or beyond the kind's bounds (reject rule); the whole file
    /// is refused, so the sums stay those of the reference without it.
    @Test(arguments: TestEngine.allCases)
    func valuesIngestRefusesNeverReachTheSums(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        let reference = try Conformance.populate(e, subjects: 7, seed: 3)
        let someone = try #require(reference.subjects.first?.customerID)
        let bad: [(String, String)] = [("purchase", "nan"), ("purchase", "NaN"), ("purchase", "inf"), ("purchase", "-Infinity"), ("purchase", "1e999"),
                                       ("adjust", "1000.5"), ("adjust", "nan"), ("huge", "9223372036854775807"), ("huge", "-9223372036854775808"),
                                       ("huge", "9223372036854775808"), ("huge", "18014398509481984"), ("rating", "2.5")]
        for (kind, value) in bad {
            let text = Conformance.csv(["customer_id", "kind", "item", "value", "time"],
                                       [[someone, "purchase", "OK", "1", "2026-03-01T00:00:00Z"], [someone, kind, "BAD", value, "2026-03-01T00:00:00Z"]])
            #expect(throws: VaultError.self, "\(engine): \(kind) \(value)") { _ = try e.engine.ingestEvents(try e.file(text), options: IngestOptions()) }
        }
        let badProfiles = [["score", "nan"], ["score", "inf"], ["age", "101"], ["age", "17"], ["big", "9007199254740993"], ["region", "nowhere"]]
        for b in badProfiles {
            let text = Conformance.csv(["customer_id", "email", b[0]], [["NEW-1", "", ""], [someone, "", b[1]]])
            #expect(throws: VaultError.self, "\(engine): \(b)") { _ = try e.engine.ingestProfiles(try e.file(text), options: IngestOptions()) }
        }
        #expect(try !e.engine.exists(customerID: "NEW-1"))
        for (name, r) in Conformance.requests {
            #expect(Answer { try e.engine.aggregateSource.boundedSums(r) } == Answer { try reference.boundedSums(r) }, "\(engine): \(name)")
        }
    }

    /// A group value outside the request's domain counts nowhere; a domain value nobody has is
    /// a zero group; a condition on a value absent from the data gives zeros, never a missing key.
    @Test(arguments: TestEngine.allCases)
    func groupsAndConditionsOutsideTheData(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        let reference = try Conformance.populate(e, subjects: 40, seed: 4)
        let source = e.engine.aggregateSource
        let total = Int64(reference.subjects.count)
        let tiers = reference.subjects.compactMap { s -> String? in if case let .text(t)? = s.attributes["tier"] { return t } else { return nil } }
        #expect(tiers.contains("other") && !tiers.contains("platinum"))   // "platinum" was clamped to "other" at ingest
        let partial = Conformance.req([.subjects], grouping: .attribute(name: "tier", domain: ["gold", "platinum"]))
        let got = try source.boundedSums(partial)
        #expect(try got == reference.boundedSums(partial))
        #expect(Set(got.keys) == ["gold", "platinum"])
        #expect(got["platinum"] == [0] && got["gold"] == [Int64(tiers.filter { $0 == "gold" }.count)])
        let nowhere = Conformance.req([.subjects, Conformance.attr("age", 18, 100)], where: [Conformance.w("region", .eq, .text("nowhere"))])
        #expect(try source.boundedSums(nowhere) == ["": [0, 0]])
        #expect(try reference.boundedSums(nowhere) == ["": [0, 0]])
        let nowhereGrouped = Conformance.req([.subjects], where: [Conformance.w("tier", .eq, .text("platinum"))], grouping: .attribute(name: "tier", domain: Conformance.tiers))
        #expect(try source.boundedSums(nowhereGrouped) == Dictionary(uniqueKeysWithValues: Conformance.tiers.map { ($0, [Int64(0)]) }))
        #expect(try reference.boundedSums(nowhereGrouped) == source.boundedSums(nowhereGrouped))
        #expect(try source.boundedSums(Conformance.req([.subjects]))[""] == [total])
    }

    // MARK: The seam beyond aggregates

    @Test(arguments: TestEngine.allCases)
    func erasureRemovesTheSubjectEverywhere(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        var reference = try Conformance.populate(e, subjects: 7, seed: 3)
        let victim = try #require(reference.subjects.first(where: { !$0.events.isEmpty })?.customerID)
        #expect(try e.engine.exists(customerID: victim))
        #expect(try e.engine.accessExport(customerID: victim) != nil)
        let before = try e.engine.aggregateSource.boundedSums(Conformance.req([.subjects, .eventCount(kind: "purchase", maxContributions: 100)]))[""]!
        let receipts = try e.engine.erase(customerIDs: [(1, victim)], file: nil, reason: "test", audit: Conformance.ctx)
        reference.erase(customerID: victim)
        #expect(receipts.count == 1)
        #expect(try !e.engine.exists(customerID: victim))
        #expect(try e.engine.accessExport(customerID: victim) == nil)
        #expect(try e.engine.consentState(customerID: victim) == nil)
        let after = try e.engine.aggregateSource.boundedSums(Conformance.req([.subjects, .eventCount(kind: "purchase", maxContributions: 100)]))[""]!
        #expect(after[0] == before[0] - 1)
        for (name, r) in Conformance.requests {
            #expect(Answer { try e.engine.aggregateSource.boundedSums(r) } == Answer { try reference.boundedSums(r) }, "\(engine) after erasure: \(name)")
        }
        #expect(try e.engine.verifyAudit(expectHead: nil).ok)
    }

    @Test(arguments: TestEngine.allCases)
    func consentStateAndHistoryFollowGrantAndRevoke(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email"], [["K-1", ""], ["K-2", ""]])), options: IngestOptions())
        #expect(try e.engine.consentState(customerID: "K-1") == [:])
        #expect(try e.engine.consentState(customerID: "nobody") == nil)
        #expect(try e.engine.consentHistory(customerID: "nobody") == nil)
        _ = try e.engine.setConsent([(1, "K-1"), (2, "K-2")], file: nil, purpose: "analytics", granted: true, source: "form", policyVersion: "v1", audit: Conformance.ctx)
        _ = try e.engine.setConsent([(1, "K-1")], file: nil, purpose: "analytics", granted: false, source: nil, policyVersion: "v2", audit: Conformance.ctx)
        #expect(try e.engine.hasConsent(customerID: "K-2", purpose: "analytics"))
        #expect(try !e.engine.hasConsent(customerID: "K-1", purpose: "analytics"))
        #expect(try !e.engine.hasConsent(customerID: "K-1", purpose: "marketing"))
        #expect(try e.engine.consentState(customerID: "K-1")?["analytics"]?.granted == false)
        #expect(try e.engine.consentState(customerID: "K-2")?["analytics"]?.granted == true)
        let history = try #require(try e.engine.consentHistory(customerID: "K-1"))
        #expect(history.map(\.granted) == [true, false])
        #expect(history.map(\.policyVersion) == ["v1", "v2"])
        #expect(history.map(\.source) == ["form", nil])
        #expect(history.allSatisfy { $0.purpose == "analytics" })
        #expect(try e.engine.aggregateSource.boundedSums(Conformance.req([.subjects], consent: "analytics"))[""] == [1])
        #expect(throws: VaultError.self) {
            _ = try e.engine.setConsent([(1, "nobody")], file: nil, purpose: "analytics", granted: true, source: nil, policyVersion: "v1", audit: Conformance.ctx)
        }
    }

    @Test(arguments: TestEngine.allCases)
    func auditAppendsAndVerifies(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        let start = try e.engine.verifyAudit(expectHead: nil)
        #expect(start.ok)
        try e.engine.audit([Conformance.ctx.record("test.one", .read), Conformance.ctx.record("test.two", .read, outcome: .denied)])
        let v = try e.engine.verifyAudit(expectHead: nil)
        #expect(v.ok)
        #expect(v.entries == start.entries + 2)
        #expect(try e.engine.verifyAudit(expectHead: v.head).ok)
        // A head the chain does not hold is not verified.
        #expect(try !e.engine.verifyAudit(expectHead: String(repeating: "ab", count: 32)).ok)
    }

    @Test(arguments: TestEngine.allCases)
    func budgetLedgerGrantsExactlyUpToTheLimit(engine: TestEngine) throws {
        let e = try engine.make(schema: Conformance.schema)
        let entries = try e.engine.verifyAudit(expectHead: nil).entries
        let accountant = e.engine.budgetAccountant(audit: Conformance.ctx.record("query.count", .read, purpose: "analytics"), policy: nil)
        let quarter = try #require(Epsilon(0.25))
        var granted = 0
        for _ in 0..<6 {
            do {
                _ = try accountant.spend(purpose: "analytics", epsilon: quarter, limit: 1, periodSeconds: 86_400)
                granted += 1
            } catch is BudgetExceeded {}
        }
        #expect(granted == 4)
        #expect(try e.engine.budgetState(purpose: "analytics", limit: 1, periodSeconds: 86_400).spent == 1)
        #expect(try e.engine.budgetState(purpose: "marketing", limit: 1, periodSeconds: 86_400).spent == 0)
        // Delta: a charge beyond the delta limit is refused and spends nothing.
        #expect(throws: BudgetExceeded.self) {
            _ = try accountant.spend(purpose: "marketing", epsilon: quarter, delta: 1e-6, limit: 1, deltaLimit: 1e-7, periodSeconds: 86_400)
        }
        #expect(try e.engine.budgetState(purpose: "marketing", limit: 1, deltaLimit: 1e-7, periodSeconds: 86_400).spent == 0)
        let audited = try e.engine.verifyAudit(expectHead: nil)
        #expect(audited.ok && audited.entries == entries + 4)   // one entry per granted charge
    }
}

/// The SQL rounding of the SQLite engine is round half away from zero for every double, where
/// `CAST(e + 0.5 AS INTEGER)` and SQLite's `round()` were not (±0.49999999999999994 gave ±1;
/// e + 0.5 takes odd integers above 2^52 to their even neighbour). Fixed seed: deterministic.
@Suite struct SQLRoundingTests {
    @Test func roundedIntegerIsHalfAwayFromZeroForEveryDouble() throws {
        var values: [Double] = [0, 0x1p-1074, 0.49999999999999994, 0.5, 0.5000000000000001, 0.9999999999999999, 1, 1.4999999999999998, 1.5,
                                2.5, 3.5, 0x1p51 + 0.5, 0x1p51 - 0.5, 0x1p52 - 0.5, 0x1p52 - 1.5, 0x1p52 + 1, 0x1p52 + 3, 0x1p53 - 1, 0x1p53, 0x1p53 + 2, 0x1p61 + 0x1p9]
        var rng = Conformance.Random(state: 42)
        for _ in 0..<4000 {
            let scale = Double(sign: .plus, exponent: rng.below(60) - 8, significand: 1)
            let x = Double(rng.next() >> 11) / 0x1p53 * scale
            values += [x, x.rounded(.down) + 0.5, (x.rounded(.down) + 0.5).nextDown, (x.rounded(.down) + 0.5).nextUp]
        }
        values += values.map { -$0 }
        let db = try DatabaseQueue()
        let signed = "SELECT " + StoreAggregateSource.roundedInteger("?1", nonNegative: false)
        let nonNegative = "SELECT " + StoreAggregateSource.roundedInteger("?1", nonNegative: true)
        try db.read { (db: Database) throws -> Void in
            for v in values {
                let want = Int64(v.rounded(.toNearestOrAwayFromZero))
                #expect(try Int64.fetchOne(db, sql: signed, arguments: [v]) == want, "\(v)")
                if v >= 0 { #expect(try Int64.fetchOne(db, sql: nonNegative, arguments: [v]) == want, "\(v)") }
            }
            // The forms it replaces fail here.
            #expect(try Int64.fetchOne(db, sql: "SELECT CAST(?1 + 0.5 AS INTEGER)", arguments: [0.49999999999999994]) == 1)
            #expect(try Int64.fetchOne(db, sql: "SELECT CAST(?1 + 0.5 AS INTEGER)", arguments: [0x1p52 + 1]) == Int64(0x1p52 + 2))
            #expect(try Int64.fetchOne(db, sql: "SELECT CAST(round(?1) AS INTEGER)", arguments: [-0.49999999999999994]) == -1)
        }
        #expect(values.count > 30_000)
    }
}
