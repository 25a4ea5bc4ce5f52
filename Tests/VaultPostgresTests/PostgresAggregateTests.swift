import DifferentialPrivacy
import EngineConformanceSupport
import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
import VaultStore
import VaultValues

/// A fresh database holding `Conformance.schema`'s tables, a node opened on it with the fixed
/// keyring (the same pseudonyms, so the same item tie order, on every run), and a population
/// target that ingests through the node's public API.
final class AggregateCluster: @unchecked Sendable, ConformancePopulationTarget {
    let db: TestDatabase
    let node: PostgresProfiles
    let dir: String

    init(db: TestDatabase, node: PostgresProfiles, dir: String) {
        self.db = db
        self.node = node
        self.dir = dir
    }

    static func with(_ body: (AggregateCluster) async throws -> Void) async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvpg-agg-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = try Conformance.fixedKeyring(directory: dir)
            let owner = try db.ownerEngine()
            do {
                try await PostgresProfiles.create(owner: owner, schema: Conformance.schema, keyring: keyring,
                                                  options: .init(serviceRole: db.serviceRole, schemaVersion: "1", policyVersion: "test"))
            } catch {
                await owner.close()
                throw error
            }
            await owner.close()
            try await db.initialize()
            let engine = try db.nodeEngine()
            let node: PostgresProfiles
            do { node = try await PostgresProfiles.open(engine: engine, schema: Conformance.schema, keyring: keyring) } catch {
                await engine.close()
                throw error
            }
            let cluster = AggregateCluster(db: db, node: node, dir: dir)
            var failure: (any Error)?
            do { try await body(cluster) } catch { failure = error }
            await engine.close()
            if let failure { throw failure }
        }
    }

    func file(_ text: String) throws -> RecordSource {
        let p = dir + "/" + UUID().uuidString + ".csv"
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return .file(p)
    }

    // MARK: ConformancePopulationTarget (called on a plain thread: the node blocks its caller)

    func pseudonym(ofCustomerID id: String) throws -> [UInt8] { try node.pseudonym(ofCustomerID: id) }
    func ingestProfiles(csv: String) throws { _ = try node.ingestProfiles(try file(csv), options: IngestOptions()) }
    func ingestEvents(csv: String) throws { _ = try node.ingestEvents(try file(csv), options: IngestOptions()) }

    /// Consent state rows written directly by the superuser (the PostgreSQL consent ledger's
    /// `setConsent` is built elsewhere; the aggregate source reads only `consent_state`).
    func setConsent(_ ids: [(line: Int, id: String)], purpose: String, granted: Bool) throws {
        let list = try ids.map { "'\\x" + AuditLog.hex(try node.pseudonym(ofCustomerID: $0.id)) + "'::bytea" }.joined(separator: ", ")
        let db = self.db
        try PostgresProfiles.wait("setting consent") {
            try await db.superuser(["""
                INSERT INTO profilevault.consent_state(subject_id, purpose, granted, since)
                SELECT id, '\(purpose)', \(granted), 0 FROM profilevault.subjects WHERE pseudonym IN (\(list))
                ON CONFLICT (purpose, subject_id) DO UPDATE SET granted = EXCLUDED.granted
                """])
        }
    }

    /// The node's erasure, after the subjects' consent rows are gone (written above by the
    /// superuser; the consent ledger's erasure is built elsewhere).
    func erase(_ ids: [(line: Int, id: String)]) throws {
        let list = try ids.map { "'\\x" + AuditLog.hex(try node.pseudonym(ofCustomerID: $0.id)) + "'::bytea" }.joined(separator: ", ")
        let db = self.db
        try PostgresProfiles.wait("clearing consent") {
            try await db.superuser(["DELETE FROM profilevault.consent_state WHERE subject_id IN (SELECT id FROM profilevault.subjects WHERE pseudonym IN (\(list)))"])
        }
        _ = try node.erase(customerIDs: ids, file: nil, reason: "test", audit: Conformance.ctx)
    }

    func populate(subjects n: Int, seed: UInt64) async throws -> ReferenceAggregateSource {
        try await onThread { try Conformance.populate(self, subjects: n, seed: seed) }
    }

    func sums(_ r: AggregateRequest) async throws -> [String: [Int64]] {
        let source = node.aggregateSource
        return try await onThread { try source.boundedSums(r) }
    }

    func outcome(_ r: AggregateRequest) async -> Outcome {
        let source = node.aggregateSource
        return await Outcome.awaiting { try await onThread { try source.boundedSums(r) } }
    }
}

/// An answer, or the kind of the error that refused it.
enum Outcome: Equatable, CustomStringConvertible {
    case sums([String: [Int64]])
    case refused(VaultError.Kind)
    case otherError(String)

    static func awaiting(_ body: () async throws -> [String: [Int64]]) async -> Outcome {
        do { return .sums(try await body()) } catch let e as VaultError { return .refused(e.kind) } catch { return .otherError("\(type(of: error))") }
    }
    static func of(_ body: () throws -> [String: [Int64]]) -> Outcome {
        do { return .sums(try body()) } catch let e as VaultError { return .refused(e.kind) } catch { return .otherError("\(type(of: error))") }
    }
    var description: String {
        switch self {
        case .refused(let k): return "refused (\(k))"
        case .otherError(let t): return "error \(t)"
        case .sums(let s): return s.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
        }
    }
}

/// The PostgreSQL aggregate source computes exactly `ReferenceAggregateSource`'s sums (and so
/// the SQLite engine's, which the engine conformance suite holds to the same reference): the
/// conformance suite's seeded populations and every request shape, its refusals with the same
/// error kinds, item ties, and attacks (64-bit overflow, underflow, SQL text as data).
@Suite(.serialized) struct PostgresAggregateTests {
    static let populations: [(subjects: Int, seed: UInt64)] = [(0, 1), (1, 2), (7, 3), (40, 4)]

    @Test(arguments: populations.indices)
    func aggregatesMatchTheReference(population: Int) async throws {
        let (n, seed) = Self.populations[population]
        try await AggregateCluster.with { cluster in
            let reference = try await cluster.populate(subjects: n, seed: seed)
            #expect(Conformance.requests.count + Conformance.refused.count >= 180)
            for (name, r) in Conformance.requests {
                let want = Outcome.of { try reference.boundedSums(r) }
                guard case .sums = want else { Issue.record("\(name): the reference refuses it"); continue }
                #expect(await cluster.outcome(r) == want, "\(n) subjects: \(name)")
            }
            for (name, r) in Conformance.refused {
                let want = Outcome.of { try reference.boundedSums(r) }
                guard case .refused = want else { Issue.record("\(name): the reference answers it"); continue }
                #expect(await cluster.outcome(r) == want, "\(n) subjects, refused: \(name)")
            }
        }
    }

    /// The population really has what the comparison claims to test (ties, nulls, bounds,
    /// revoked consent, erasures), on PostgreSQL too.
    @Test func theLargePopulationHasTheCasesItClaims() async throws {
        try await AggregateCluster.with { cluster in
            let reference = try await cluster.populate(subjects: 40, seed: 4)
            let subjects = reference.subjects
            #expect(subjects.count >= 25 && subjects.count < 40)
            #expect(subjects.contains { s in Set(s.events.map(\.time)).count < s.events.count })
            #expect(subjects.contains { $0.consent["analytics"] == false } && subjects.contains { $0.consent["analytics"] == true })
            #expect(try await cluster.sums(Conformance.req([.subjects]))[""] == [Int64(subjects.count)])
            #expect(try await cluster.sums(Conformance.req([.subjects], consent: "analytics"))[""]
                    == [Int64(subjects.filter { $0.consent["analytics"] == true }.count)])
        }
    }

    /// Item samples decided by ties alone (six items used last at the same second, capped at 1
    /// to 3): PostgreSQL samples what the reference does from the subjects' pseudonyms; other
    /// pseudonyms would give other sums, so the comparison tests the tie rule (fixed keyring:
    /// deterministic).
    @Test func itemTiesFollowThePseudonymHashOrder() async throws {
        try await AggregateCluster.with { cluster in
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let ids = (0..<8).map { "T-\($0)" }
            var rows: [[String]] = []
            for id in ids {
                reference.upsert(customerID: id, pseudonym: try cluster.pseudonym(ofCustomerID: id), attributes: ["tier": .text("gold")])
                for (j, item) in (Conformance.items + ["OLD"]).enumerated() {
                    let t = item == "OLD" ? Conformance.t0 - 10 : Conformance.t0
                    rows.append([id, "purchase", item, String(j), DateParsing.iso8601(unixSeconds: t)])
                    reference.addEvent(customerID: id, .init(kind: "purchase", item: item, value: Double(j), time: t))
                }
            }
            let (profiles, events) = (Conformance.csv(["customer_id", "email", "tier"], ids.map { [$0, "", "gold"] }),
                                      Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows))
            try await onThread { try cluster.ingestProfiles(csv: profiles); try cluster.ingestEvents(csv: events) }
            var otherTies = reference
            for s in reference.subjects { otherTies.setPseudonym(customerID: s.customerID, s.pseudonym.reversed()) }
            let vocabulary = Conformance.items + ["OLD"]
            for m in 1...3 {
                for r in [
                    Conformance.req([.itemPresence(kind: "purchase", maxItems: m)], grouping: .items(vocabulary: vocabulary)),
                    Conformance.req([.itemPresence(kind: "purchase", maxItems: m)], grouping: .items(vocabulary: nil)),
                    Conformance.req([.itemPairWeight(kind: "purchase", maxItems: m + 1, unit: 6)], grouping: .itemPairs(vocabulary: vocabulary)),
                    Conformance.req([.itemSetPresence(kind: "purchase", maxItems: m + 2, size: 3)], grouping: .itemSets(vocabulary: vocabulary, size: 3)),
                    Conformance.req([.itemPresence(kind: "purchase", maxItems: m)], grouping: .segmentItems(attribute: "tier", domain: Conformance.tiers, vocabulary: vocabulary)),
                ] {
                    let want = try reference.boundedSums(r)
                    #expect(try await cluster.sums(r) == want, "cap \(m), \(r.grouping.map { "\($0)" } ?? "")")
                    #expect(try otherTies.boundedSums(r) != want)
                }
            }
        }
    }

    // MARK: Attacks

    /// Sums beyond 64 bits are refused (invalid input), never wrapped and never a crash: 1,100
    /// events of 2^53; grids so fine that one value is beyond 2^63 units (and 0 / 0 or NaN grids);
    /// pair weights of Int.max. The reference refuses the same requests with the same kind.
    @Test func overflowIsRefusedAsInvalidInput() async throws {
        try await AggregateCluster.with { cluster in
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let ids = (0..<10).map { "X-\($0)" }
            var rows: [[String]] = []
            for id in ids {
                reference.upsert(customerID: id, pseudonym: try cluster.pseudonym(ofCustomerID: id), attributes: ["score": .float(1000), "big": .int(1 << 53)])
                for j in 0..<110 {
                    rows.append([id, "huge", "I\(j)", "9007199254740992", DateParsing.iso8601(unixSeconds: Conformance.t0 + Int64(j))])
                    reference.addEvent(customerID: id, .init(kind: "huge", item: "I\(j)", value: Conformance.twoTo53, time: Conformance.t0 + Int64(j)))
                }
            }
            let (profiles, events) = (Conformance.csv(["customer_id", "email", "score", "big"], ids.map { [$0, "", "1000", "9007199254740992"] }),
                                      Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows))
            try await onThread { try cluster.ingestProfiles(csv: profiles); try cluster.ingestEvents(csv: events) }
            let huge = Conformance.twoTo53
            let refused: [AggregateRequest] = [
                Conformance.req([.events(kind: "huge", lower: -huge, upper: huge, center: 0, grid: 1, maxContributions: 10_000)]),
                Conformance.req([.events(kind: "huge", lower: -huge, upper: huge, center: 0, grid: 1, maxContributions: .max)]),
                Conformance.req([Conformance.attr("score", -1000, 1000, 0, 0x1p-1074)]),          // 1000 * 2^1074: infinite
                Conformance.req([Conformance.attr("score", -1000, 1000, 0, 0x1p-60)]),            // 1000 * 2^60 > 2^63 per subject
                Conformance.req([Conformance.attr("big", -huge, huge, 0, 0x1p-12)]),              // 2^65 per subject
                Conformance.req([Conformance.attr("big", -huge, huge, 0, 0x1p-6)]),               // 2^59 each, 10 subjects: fits (10 * 2^59 < 2^63)
                Conformance.req([Conformance.attr("big", -huge, huge, 0, 0x1p-7)]),               // 10 * 2^60 > 2^63: the sum
                Conformance.req([Conformance.attr("score", -1000, 1000, -1e308, 0x1p-10)]),       // (1000 + 1e308) * 2^10: infinite
                Conformance.req([Conformance.attr("score", -1000, 1000, 0, 0)]),                  // x / 0
                Conformance.req([Conformance.attr("score", -1000, 1000, 0, .nan)]),
                Conformance.req([.product(left: Conformance.score, right: nil, grid: 0x1p-70)]),
                Conformance.req([.itemPairWeight(kind: "huge", maxItems: 2, unit: .max)], grouping: .itemPairs(vocabulary: ["I0", "I1", "I108", "I109"])),
            ]
            for r in refused {
                let want = Outcome.of { try reference.boundedSums(r) }
                let got = await cluster.outcome(r)
                if case .sums = want {
                    #expect(got == want, "\(r.coordinates)")   // the one that fits: both answer alike
                } else {
                    #expect(want == .refused(.invalidInput), "reference: \(r.coordinates)")
                    #expect(got == .refused(.invalidInput), "\(r.coordinates): \(got)")
                }
            }
            #expect(Outcome.of { try reference.boundedSums(refused[5]) } == .sums(["": [10 << 59]]))
            // Under the cap of 100 per subject it fits (10 * 100 * 2^53 < 2^63) and both agree.
            let fits = Conformance.req([.events(kind: "huge", lower: -huge, upper: huge, center: 0, grid: 1, maxContributions: 100)])
            #expect(try await cluster.sums(fits) == ["": [1000 << 53]])
            // The node still answers afterwards (no connection left in a failed transaction).
            #expect(try await cluster.sums(Conformance.req([.subjects])) == ["": [10]])
        }
    }

    /// Values near zero that PostgreSQL's checked multiplication and division would refuse as
    /// an underflow (subnormal scores against fine units, coarse grids, centroids and cells)
    /// are answered exactly as the reference answers them.
    @Test func subnormalValuesAreAnsweredNotRefused() async throws {
        try await AggregateCluster.with { cluster in
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let scores = ["5e-324", "-5e-324", "1e-310", "2.2250738585072014e-308", "1e-200", "0", "0.5", "-1000"]
            for (i, s) in scores.enumerated() {
                reference.upsert(customerID: "U-\(i)", pseudonym: try cluster.pseudonym(ofCustomerID: "U-\(i)"), attributes: ["score": .float(Double(s)!), "age": .int(18)])
            }
            let profiles = Conformance.csv(["customer_id", "email", "score", "age"], scores.enumerated().map { ["U-\($0.offset)", "", $0.element, "18"] })
            try await onThread { try cluster.ingestProfiles(csv: profiles) }
            let zeroTo = ScaledFeature(name: "score", lower: 0, upper: 0x1p900)
            let requests: [AggregateRequest] = [
                Conformance.req([Conformance.attr("score", -1000, 1000, 0, 4), Conformance.attr("score", -1000, 1000, 0, 0x1p600), Conformance.attr("score", -1000, 1000, 0, 1)]),
                Conformance.req([.subjects], grouping: .cell(features: [zeroTo], bins: 4)),
                Conformance.req([.subjects], grouping: .nearest(features: [zeroTo, Conformance.age], centroids: [[0, 0], [0x1p-520, 0], [0.5, 1]])),
                Conformance.req([.subjects], grouping: .nearest(features: [ScaledFeature(name: "score", lower: 0, upper: 1)], centroids: [[0], [1e-300]])),
                Conformance.req([.product(left: zeroTo, right: nil, grid: 0x1p-10), .product(left: Conformance.score, right: zeroTo, grid: 4)]),
                Conformance.req([.subjects], where: [Conformance.w("score", .gt, .real(0)), Conformance.w("score", .lt, .real(1e-300))]),
                Conformance.req([.subjects], where: [Conformance.w("score", .eq, .int(0))]),
            ]
            for r in requests {
                let want = Outcome.of { try reference.boundedSums(r) }
                guard case .sums = want else { Issue.record("the reference refuses \(r)"); continue }
                #expect(await cluster.outcome(r) == want, "\(r.coordinates) \(String(describing: r.grouping))")
            }
        }
    }

    /// Comparisons are exact, as the reference's: an integer column against fractional, huge
    /// and 2^53-adjacent constants; a double against integers beyond 2^53; text by its bytes
    /// (not the server's collation), and text holding U+0000, which PostgreSQL cannot store.
    @Test func comparisonsAreExact() async throws {
        try await AggregateCluster.with { cluster in
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let bigs: [Int64] = [(1 << 53), (1 << 53) - 1, -(1 << 53), 0, 45]
            let tiers = ["gold", "other", "silver", "bronze", "gold"]
            for (i, b) in bigs.enumerated() {
                reference.upsert(customerID: "Q-\(i)", pseudonym: try cluster.pseudonym(ofCustomerID: "Q-\(i)"),
                                 attributes: ["big": .int(b), "age": .int(Int64(40 + i)), "score": .float(Double(i) - 0.5), "tier": .text(tiers[i])])
            }
            let profiles = Conformance.csv(["customer_id", "email", "big", "age", "score", "tier"],
                                           bigs.enumerated().map { ["Q-\($0.offset)", "", String($0.element), String(40 + $0.offset), String(Double($0.offset) - 0.5), tiers[$0.offset]] })
            try await onThread { try cluster.ingestProfiles(csv: profiles) }
            var predicates: [[WhereCondition]] = []
            for op in WhereCondition.Op.allCases {
                for v: WhereCondition.Value in [.real(Conformance.twoTo53), .real(Conformance.twoTo53 - 1), .real(Conformance.twoTo53 + 2), .real(44.5), .real(45),
                                                .real(1e300), .real(-1e300), .real(9.3e18), .int(.max), .int(.min), .int((1 << 53) + 1)] {
                    predicates.append([Conformance.w("big", op, v)])
                    predicates.append([Conformance.w("age", op, v)])
                    predicates.append([Conformance.w("score", op, v)])
                }
                for t in ["gold", "golc\u{0}", "gold\u{0}x", "\u{0}", "Gold", "ß", "g"] {
                    predicates.append([Conformance.w("tier", op, .text(t))])
                }
            }
            for p in predicates {
                let r = Conformance.req([.subjects, .nonNull(attribute: "tier")], where: p)
                let want = Outcome.of { try reference.boundedSums(r) }
                #expect(await cluster.outcome(r) == want, "\(p)")
            }
        }
    }

    /// SQL in where constants, vocabularies, event kinds, consent purposes, items and domains is
    /// data: bound, compared, counted, never executed. The tables are intact afterwards.
    @Test func sqlTextIsData() async throws {
        try await AggregateCluster.with { cluster in
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let evil = ["x' OR '1'='1", "'); DROP TABLE profilevault.events; --", "$1", "gold\" OR \"1\"=\"1", "\\x00", "a'::text[]) OR TRUE --"]
            var rows: [[String]] = []
            for i in 0..<4 {
                let id = "S-\(i)"
                reference.upsert(customerID: id, pseudonym: try cluster.pseudonym(ofCustomerID: id), attributes: ["tier": .text("gold")])
                for (j, item) in evil.enumerated() where (i + j) % 2 == 0 {
                    rows.append([id, "purchase", item, "1", DateParsing.iso8601(unixSeconds: Conformance.t0 + Int64(j))])
                    reference.addEvent(customerID: id, .init(kind: "purchase", item: item, value: 1, time: Conformance.t0 + Int64(j)))
                }
            }
            func quote(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
            let profiles = Conformance.csv(["customer_id", "email", "tier"], (0..<4).map { ["S-\($0)", "", "gold"] })
            let events = Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows.map { $0.map(quote) })
            try await onThread { try cluster.ingestProfiles(csv: profiles); try cluster.ingestEvents(csv: events) }
            let vocabulary = evil + ["I0"]
            var requests: [AggregateRequest] = [
                Conformance.req([.itemPresence(kind: "purchase", maxItems: 10)], grouping: .items(vocabulary: vocabulary)),
                Conformance.req([.itemPresence(kind: "purchase", maxItems: 2)], grouping: .items(vocabulary: nil)),
                Conformance.req([.itemPairWeight(kind: "purchase", maxItems: 3, unit: 2)], grouping: .itemPairs(vocabulary: vocabulary)),
                Conformance.req([.itemPresence(kind: "purchase", maxItems: 3)], grouping: .segmentItems(attribute: "tier", domain: ["gold"] + evil, vocabulary: vocabulary)),
                Conformance.req([.subjects], grouping: .attribute(name: "tier", domain: evil + ["gold"])),
            ]
            for e in evil + ["x\u{0}y"] {
                requests.append(Conformance.req([.subjects], where: [Conformance.w("tier", .eq, .text(e))]))
                requests.append(Conformance.req([.subjects], where: [Conformance.w("tier", .ne, .text(e))]))
                requests.append(Conformance.req([.subjects], consent: e))
                requests.append(Conformance.req([.eventCount(kind: e, maxContributions: 5), .events(kind: e, lower: 0, upper: 1, center: 0, grid: 1, maxContributions: 5)]))
                requests.append(Conformance.req([.itemPresence(kind: e, maxItems: 2)], grouping: .items(vocabulary: vocabulary)))
                requests.append(Conformance.req([Conformance.attr("d", 0, 5)], derived: [DerivedAttribute(name: "d", eventKind: e, aggregate: .count, lower: 0, upper: 5)]))
            }
            for r in requests {
                let want = Outcome.of { try reference.boundedSums(r) }
                #expect(await cluster.outcome(r) == want, "\(r)")
            }
            // Every sampled evil item was counted as an item (4 subjects, each holds 3).
            let counted = try await cluster.sums(requests[0])
            #expect(evil.map { counted[$0]?[0] ?? -1 } == [2, 2, 2, 2, 2, 2])
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.events") == Int64(rows.count))
        }
    }
}
