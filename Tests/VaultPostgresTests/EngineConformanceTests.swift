import DifferentialPrivacy
import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
import VaultValues
@testable import VaultStore
@testable import VaultPostgres
import EngineConformanceSupport

// MARK: - Engines under test

/// The storage engines the conformance suite runs on: SQLite (a file in a temporary directory)
/// and PostgreSQL (a fresh database on the test server of scripts/with-postgres.sh, created
/// and owned by its superuser, dropped afterwards). Every test takes `TestEngine.allCases`.
///
/// The PostgreSQL engine's methods block their caller while the pool's tasks run on Swift's
/// cooperative threads, so every test body runs on a thread of its own (`onThread`), never on a
/// cooperative thread (a test blocking one there starved the pool and hung the whole run); and
/// the suite is serialized, one database at a time.
enum TestEngine: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite
    case postgres

    var description: String { rawValue }

    /// `fixedKeys`: the store's keyring is `Conformance.fixedKeyring` (the same pseudonyms, and
    /// so the same item tie order, on every run); otherwise a fresh random one.
    func make(schema: Schema, fixedKeys: Bool = false) throws -> EngineUnderTest {
        switch self {
        case .sqlite:
            let dir = NSTemporaryDirectory() + "pv-conformance-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let keyring = fixedKeys ? try Conformance.fixedKeyring(directory: dir) : Keyring.generate(note: "conformance")
            let store = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: schema, policyVersion: "test")
            return EngineUnderTest(engine: store, scratch: dir, cleanup: {
                try? store.close()
                try? FileManager.default.removeItem(atPath: dir)
            })
        case .postgres:
            let dir = NSTemporaryDirectory() + "pv-conformance-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let keyring = fixedKeys ? try Conformance.fixedKeyring(directory: dir) : Keyring.generate(note: "conformance")
            let (base, password) = try TestDatabase.base()
            let suffix = AuditLog.hex(SecureRandom.bytes(6))
            var target = base
            target.database = "pvc_\(suffix)"
            let location = target
            let role = "pvcsvc_\(suffix)"
            try PostgresProfiles.wait("creating a conformance database") {
                try await TestDatabase.superuser(base, password, ["CREATE DATABASE \(location.database)"])
            }
            let drop: @Sendable () -> Void = {
                _ = try? PostgresProfiles.wait("dropping a conformance database") {
                    try await TestDatabase.superuser(base, password, ["DROP DATABASE IF EXISTS \(location.database) WITH (FORCE)", "DROP ROLE IF EXISTS \(role)"])
                }
            }
            let store: PostgresProfiles
            do {
                store = try PostgresStore.create(url: location.description, keyring: keyring, schema: schema, schemaVersion: "1", policyVersion: "test",
                                                 serviceRole: role, maximumConnections: 4, environment: ["PGPASSWORD": password ?? ""])
            } catch {
                drop()
                try? FileManager.default.removeItem(atPath: dir)
                throw error
            }
            return EngineUnderTest(engine: store, scratch: dir, cleanup: {
                try? store.close()
                drop()
                try? FileManager.default.removeItem(atPath: dir)
            })
        }
    }
}

/// One engine instance, with a scratch directory for input files.
final class EngineUnderTest: @unchecked Sendable, ConformanceRightsTarget {
    let engine: any StorageEngine
    let scratch: String
    private let cleanup: () -> Void

    init(engine: any StorageEngine, scratch: String, cleanup: @escaping () -> Void) {
        self.engine = engine
        self.scratch = scratch
        self.cleanup = cleanup
    }

    deinit { cleanup() }

    func file(_ text: String) throws -> RecordSource {
        let p = scratch + "/" + UUID().uuidString + ".csv"
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return .file(p)
    }

    func pseudonym(ofCustomerID id: String) throws -> [UInt8] { try engine.pseudonym(ofCustomerID: id) }
    func ingestProfiles(csv: String) throws { _ = try engine.ingestProfiles(try file(csv), options: IngestOptions()) }
    func ingestEvents(csv: String) throws { _ = try engine.ingestEvents(try file(csv), options: IngestOptions()) }
    func setConsent(_ ids: [(line: Int, id: String)], purpose: String, granted: Bool) throws {
        _ = try engine.setConsent(ids, file: nil, purpose: purpose, granted: granted, source: nil, policyVersion: "test", audit: Conformance.ctx)
    }
    func erase(_ ids: [(line: Int, id: String)]) throws {
        _ = try engine.erase(customerIDs: ids, file: nil, reason: "test", audit: Conformance.ctx)
    }
    func restrict(_ id: String, _ restricted: Bool) throws {
        _ = try engine.setRestriction(customerID: id, restricted: restricted, audit: Conformance.ctx)
    }
    func object(_ ids: [(line: Int, id: String)], purpose: String) throws {
        _ = try engine.setConsent(ids, file: nil, purpose: purpose, granted: false, source: ProfileStore.objectionSource,
                                  policyVersion: "test", audit: Conformance.ctx)
    }
}

// MARK: - The suite

/// Every engine computes exactly the sums of `ReferenceAggregateSource` (the documented rules)
/// on seeded populations: 0, 1, 7 and 40 subjects with ties, values at and beyond the schema's
/// bounds, missing values, subjects without events, duplicate events, re-ingested profiles,
/// revoked consent and erased subjects. Plus the seam's promises beyond aggregates.
@Suite(.serialized) struct EngineConformanceTests {
    static let populations: [(subjects: Int, seed: UInt64)] = [(0, 1), (1, 2), (7, 3), (40, 4)]

    @Test(arguments: TestEngine.allCases, populations.indices)
    func aggregatesMatchTheReference(engine: TestEngine, population: Int) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    /// Restricted subjects (Art. 18) are in no sum and subjects objecting (Art. 21) to the
    /// request's objection purpose in none of its sums, on every engine exactly as in the
    /// reference, for every request shape; the exact count drops by the restricted subjects.
    @Test(arguments: TestEngine.allCases)
    func restrictedAndObjectingSubjectsAreLeftOutAsTheReferenceLeavesThemOut(engine: TestEngine) async throws {
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            var reference = try Conformance.populate(e, subjects: 40, seed: 4)
            let source = e.engine.aggregateSource
            let before = try source.boundedSums(Conformance.req([.subjects]))[""]?.first ?? -1
            let (restricted, objecting) = try Conformance.applyRights(e, &reference, seed: 4)
            #expect(!restricted.isEmpty && !objecting.isEmpty)
            #expect(try source.boundedSums(Conformance.req([.subjects]))[""] == [before - Int64(restricted.count)], "\(engine)")
            var objected = Conformance.req([.subjects])
            objected.objectionPurpose = "marketing"
            #expect(try source.boundedSums(objected)[""] == [Int64(reference.subjects.filter { !$0.restricted && $0.consent["marketing"] != false }.count)])
            #expect(try source.boundedSums(objected)[""] != [before - Int64(restricted.count)], "the objections must remove someone")
            for (name, r) in Conformance.rightsRequests {
                let want = Answer { try reference.boundedSums(r) }
                #expect(want != .refused, "\(name): the reference refuses it")
                #expect(Answer { try source.boundedSums(r) } == want, "\(engine): \(name)")
            }
        }
    }

    /// `score`'s reads (`subjectFeatures`, `customerIDs`): every engine answers what the
    /// reference says for each subject (served or not under consent, restriction and objection;
    /// attribute values, nulls, derived aggregates with windows and clamping), by pseudonyms
    /// (unknown and erased ones left out, each subject once) and page by page; the customer IDs
    /// decrypt; the same refusals.
    @Test(arguments: TestEngine.allCases)
    func subjectFeaturesMatchTheReference(engine: TestEngine) async throws {
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            var reference = try Conformance.populate(e, subjects: 40, seed: 4)
            let (restricted, objecting) = try Conformance.applyRights(e, &reference, seed: 4)
            #expect(!restricted.isEmpty && !objecting.isEmpty)
            let features = Conformance.scoreFeatures
            let asked = (0..<40).map { "C-4-\($0)" } + ["C-NOBODY", "C-4-1"]   // erased ones, an unknown one, a repeat
            let pseudonyms = try asked.map { try e.engine.pseudonym(ofCustomerID: $0) }
            for (consent, objection) in [(nil, nil), ("analytics", nil), (nil, "marketing"), ("marketing", nil)] as [(String?, String?)] {
                let want = Conformance.expectedFeatures(reference, features, consentPurpose: consent, objectionPurpose: objection)
                #expect(want.contains { $0.served } && want.contains { !$0.served } || consent == nil && objection == nil, "\(consent ?? "-") \(objection ?? "-")")
                let byPseudonym = try e.engine.subjectFeatures(.pseudonyms(pseudonyms), features: features, consentPurpose: consent, objectionPurpose: objection)
                // Order of first mention; only existing subjects.
                let order = reference.subjects.map(\.pseudonym)
                let mentioned = pseudonyms.reduce(into: [[UInt8]]()) { acc, p in if order.contains(p) && !acc.contains(p) { acc.append(p) } }
                #expect(byPseudonym.map(\.pseudonym) == mentioned, "\(engine)")
                var paged: [SubjectFeatureRow] = []
                var after: Int64 = 0
                while true {
                    let page = try e.engine.subjectFeatures(.page(after: after, limit: 7), features: features, consentPurpose: consent, objectionPurpose: objection)
                    #expect(page.map(\.row) == page.map(\.row).sorted() && page.allSatisfy { $0.row > after })
                    paged += page
                    guard page.count == 7, let last = page.last else { break }
                    after = last.row
                }
                for rows in [byPseudonym, paged] {
                    #expect(rows.count == want.count, "\(engine): \(rows.count) rows, \(want.count) subjects")
                    for w in want {
                        guard let r = rows.first(where: { $0.pseudonym == w.pseudonym }) else { Issue.record("\(engine): a subject is missing"); continue }
                        #expect(r.served == w.served, "\(engine) \(consent ?? "-") \(objection ?? "-")")
                        #expect(Conformance.sameFeatureValues(r.values, w.values), "\(engine): \(r.values) vs \(w.values)")
                    }
                }
            }
            // Nulls, clamped derived values and subjects without events are really there.
            let all = Conformance.expectedFeatures(reference, features, consentPurpose: nil, objectionPurpose: nil).filter(\.served)
            #expect(all.contains { $0.values[0] == nil } && all.contains { $0.values[7] == 1 } && all.contains { $0.values[5] == 0 })
            // Customer IDs decrypt for existing subjects only.
            let ids = try e.engine.customerIDs(pseudonyms: pseudonyms)
            #expect(Set(ids.values) == Set(reference.subjects.map(\.customerID)), "\(engine)")
            for (name, f, selection) in Conformance.refusedFeatureReads {
                do {
                    _ = try e.engine.subjectFeatures(selection, features: f, consentPurpose: nil, objectionPurpose: nil)
                    Issue.record("\(engine): \(name) was answered")
                } catch let error as VaultError {
                    #expect(error.kind == .usage, "\(engine): \(name): \(error)")
                }
            }
        }
    }

    /// The population really has what the suite claims to test (so the comparisons above
    /// cannot pass on an empty store by accident).
    @Test(arguments: TestEngine.allCases)
    func theLargePopulationHasTheCasesItClaims(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    /// Item samples with ties: eight subjects, each with six items used last at the same second
    /// (and one older item), capped at 1 to 3. Which items count is the tie rule alone: a hash
    /// of the item and the subject's pseudonym (not its row id, which another engine numbers
    /// otherwise). With other pseudonyms the reference gives other sums, so the comparison tests
    /// the rule. A fixed keyring: the same pseudonyms, so the same samples, on every run.
    @Test(arguments: TestEngine.allCases)
    func itemTiesFollowTheFixedHashOrder(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
            let e = try engine.make(schema: Conformance.schema, fixedKeys: true)
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let ids = (0..<8).map { "T-\($0)" }
            _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email", "tier"], ids.map { [$0, "", "gold"] })), options: IngestOptions())
            var rows: [[String]] = []
            for id in ids {
                reference.upsert(customerID: id, pseudonym: try e.pseudonym(ofCustomerID: id), attributes: ["tier": .text("gold")])
                for (j, item) in (Conformance.items + ["OLD"]).enumerated() {
                    let t = item == "OLD" ? Conformance.t0 - 10 : Conformance.t0
                    rows.append([id, "purchase", item, String(j), DateParsing.iso8601(unixSeconds: t)])
                    reference.addEvent(customerID: id, .init(kind: "purchase", item: item, value: Double(j), time: t))
                }
            }
            _ = try e.engine.ingestEvents(try e.file(Conformance.csv(["customer_id", "kind", "item", "value", "time"], rows)), options: IngestOptions())
            // Other pseudonyms (the engine's reversed: as another keyring's would be) give other ties.
            var otherTies = reference
            for s in reference.subjects { otherTies.setPseudonym(customerID: s.customerID, s.pseudonym.reversed()) }
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
    }

    /// The tie key is the pseudonym's first 8 bytes, big-endian; the hash mixes it as a whole.
    @Test func itemTieKeyIsThePseudonymsFirstEightBytes() {
        let p: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08] + [UInt8](repeating: 0xff, count: 24)
        #expect(ReferenceAggregateSource.itemTieKey(pseudonym: p) == 0x0102_0304_0506_0708)
        #expect(ReferenceAggregateSource.itemTieKey(pseudonym: p.prefix(8)) == 0x0102_0304_0506_0708)
        #expect(ReferenceAggregateSource.itemTieKey(pseudonym: [0xab]) == 0xab00_0000_0000_0000)
        // Bytes past the eighth do not count; every one of the first eight does.
        var q = p
        q[31] = 0
        #expect(ReferenceAggregateSource.itemTieKey(pseudonym: q) == ReferenceAggregateSource.itemTieKey(pseudonym: p))
        for i in 0..<8 {
            var r = p
            r[i] ^= 0x80
            #expect(ReferenceAggregateSource.itemTieBreak(subjectKey: ReferenceAggregateSource.itemTieKey(pseudonym: r), item: "I1")
                    != ReferenceAggregateSource.itemTieBreak(subjectKey: ReferenceAggregateSource.itemTieKey(pseudonym: p), item: "I1"))
        }
    }

    // MARK: Attacks

    /// Values the rules round at their edges: the doubles next to 1/2 (0.49999999999999994
    /// rounds to 0, not 1: adding 0.5 in floating point gives 1), halves (away from zero), and
    /// the schema's extreme int events (±2^53).
    @Test(arguments: TestEngine.allCases)
    func roundingEdgesFollowTheRule(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let scores = ["0.49999999999999994", "-0.49999999999999994", "0.5", "-0.5", "1.5", "-1.5", "2.5", "-2.5"]
            var rows: [[String]] = []
            for (i, s) in scores.enumerated() {
                rows.append(["E-\(i)", "", s])
                reference.upsert(customerID: "E-\(i)", pseudonym: try e.pseudonym(ofCustomerID: "E-\(i)"), attributes: ["score": .float(Double(s)!)])
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
    }

    /// Sums that do not fit 64 bits are refused by every engine, never wrapped: 1,100 events of
    /// 2^53 (the kind's bound, grid 1) sum to more than 2^63.
    @Test(arguments: TestEngine.allCases)
    func sumsBeyond64BitsAreRefused(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            var reference = ReferenceAggregateSource(schema: Conformance.schema)
            let ids = (0..<10).map { "X-\($0)" }
            _ = try e.engine.ingestProfiles(try e.file(Conformance.csv(["customer_id", "email"], ids.map { [$0, ""] })), options: IngestOptions())
            var rows: [[String]] = []
            for id in ids {
                reference.upsert(customerID: id, pseudonym: try e.pseudonym(ofCustomerID: id), attributes: [:])
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
    }

    /// What ingest refuses never reaches a sum: NaN, infinities, a decimal beyond the double
    /// range, an int beyond 64 bits or beyond the kind's bounds (reject rule); the whole file
    /// is refused, so the sums stay those of the reference without it.
    @Test(arguments: TestEngine.allCases)
    func valuesIngestRefusesNeverReachTheSums(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    /// A group value outside the request's domain counts nowhere; a domain value nobody has is
    /// a zero group; a condition on a value absent from the data gives zeros, never a missing key.
    @Test(arguments: TestEngine.allCases)
    func groupsAndConditionsOutsideTheData(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    // MARK: The seam beyond aggregates

    @Test(arguments: TestEngine.allCases)
    func erasureRemovesTheSubjectEverywhere(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    @Test(arguments: TestEngine.allCases)
    func consentStateAndHistoryFollowGrantAndRevoke(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    @Test(arguments: TestEngine.allCases)
    func auditAppendsAndVerifies(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
    }

    @Test(arguments: TestEngine.allCases)
    func budgetLedgerGrantsExactlyUpToTheLimit(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
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
}

/// The SQL rounding of the SQLite engine is round half away from zero for every double, where
/// `CAST(e + 0.5 AS INTEGER)` and SQLite's `round()` were not (±0.49999999999999994 gave ±1;
/// e + 0.5 takes odd integers above 2^52 to their even neighbour). Fixed seed: deterministic.
@Suite struct SQLRoundingTests {
    /// `audit archive` (issue 20 §3) on every engine: the slice, the file that verifies alone,
    /// the live chain verified from the signed anchor, the refusals, a second archive.
    @Test(arguments: TestEngine.allCases)
    func auditArchiveMovesAPrefixAndTheLiveChainVerifiesFromItsAnchor(engine: TestEngine) async throws {
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            let ids = ["ARCHIVE-Quaxenberg-0001", "ARCHIVE-Vandersnoot-0002"]
            let emails = ids.map { $0.lowercased() + "@example.org" }
            try e.ingestProfiles(csv: Conformance.csv(["customer_id", "email"], zip(ids, emails).map { [$0, $1] }))
            let failures = try ArchiveConformance.run(e.engine, scratch: e.scratch, ids: ids + emails, audit: Conformance.ctx)
            #expect(failures.isEmpty, "\(engine): \(failures)")
        }
    }

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

    /// A refused record names its place the same way on every engine: the error carries the
    /// structured location (file or record number, line, field) that the HTTP service sends as
    /// `location`. PostgreSQL's ingest threw the message alone, so `POST /v1/profiles` answered
    /// without `location` there.
    @Test(arguments: TestEngine.allCases)
    func aRefusedRecordCarriesItsLocation(engine: TestEngine) async throws {
        // On a thread of its own: the PostgreSQL engine blocks its caller, which must not be
        // one of Swift's cooperative threads (its tasks run there).
        try await onThread {
            let e = try engine.make(schema: Conformance.schema)
            func location(_ body: () throws -> Void) -> VaultError.Location? {
                do { try body() } catch let error as VaultError { return error.location } catch { return nil }
                return nil
            }
            let csv = try e.file("customer_id,age\nA1,30\nA2,300\n")
            let fromFile = location { _ = try e.engine.ingestProfiles(csv, options: IngestOptions()) }
            #expect(fromFile == VaultError.Location(file: csv.name, line: 3, field: "age"), "\(engine)")
            let body: [JSONValue] = [.object([("customer_id", .string("B1")), ("age", .int(40))]),
                                     .object([("customer_id", .string("B2")), ("age", .int(4000))])]
            let fromMemory = location { _ = try e.engine.ingestProfiles(.objects(body), options: IngestOptions()) }
            #expect(fromMemory == VaultError.Location(file: nil, line: 2, field: "age"), "\(engine)")
            try e.ingestProfiles(csv: "customer_id,age\nC1,30\n")
            let events = try e.file("customer_id,kind,item,value,time\nC1,adjust,I0,5000,2026-03-01T00:00:00Z\n")
            let fromEvents = location { _ = try e.engine.ingestEvents(events, options: IngestOptions()) }
            #expect(fromEvents == VaultError.Location(file: events.name, line: 2, field: "value"), "\(engine)")
        }
    }
}
