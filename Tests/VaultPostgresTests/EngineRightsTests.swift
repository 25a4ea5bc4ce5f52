import DifferentialPrivacy
import Foundation
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
import VaultValues
@testable import VaultStore
@testable import VaultPostgres
import EngineConformanceSupport

/// The data subject's rights (issue 19, part 3) at the storage seam, on both engines alike:
/// restriction, objection, rectification and consent import, with the same results, errors and
/// audit entries.
@Suite(.serialized) struct EngineRightsTests {
    static let ctx = Conformance.ctx

    /// Three subjects with an e-mail address (a PII lookup field) and attributes.
    func populated(_ engine: TestEngine) throws -> EngineUnderTest {
        let e = try engine.make(schema: Conformance.schema)
        try e.ingestProfiles(csv: Conformance.csv(["customer_id", "email", "age", "tier", "region"], [
            ["R1", "r1@example.com", "30", "gold", "north"],
            ["R2", "r2@example.com", "40", "silver", "south"],
            ["R3", "r3@example.com", "50", "gold", "east"],
        ]))
        try e.ingestEvents(csv: Conformance.csv(["customer_id", "kind", "item", "value", "time"], [
            ["R1", "purchase", "I1", "5", "2026-03-01T00:00:00Z"], ["R2", "purchase", "I1", "6", "2026-03-01T00:00:00Z"],
        ]))
        return e
    }

    /// A restriction keeps the data stored (Art. 18): a retention sweep, dry run or applied,
    /// leaves a restricted subject and its events alone, on both engines, while the others go.
    @Test(arguments: TestEngine.allCases)
    func retentionLeavesARestrictedSubjectAndItsEventsStored(engine: TestEngine) async throws {
        try await onThread {
            let e = try populated(engine)
            let s = e.engine
            #expect(try s.setRestriction(customerID: "R2", restricted: true, audit: Self.ctx))
            let day = 86_400
            let rules = [RetentionRule(category: "user.behavior", keepSeconds: day, keepText: "1d", after: .eventTime),
                         RetentionRule(category: "user.contact", keepSeconds: day, keepText: "1d", after: .lastActivity)]
            let asOf = Int64(Date().timeIntervalSince1970) + Int64(3650 * day)
            let dry = try s.applyRetention(rules, asOf: asOf, dryRun: true, audit: Self.ctx)
            #expect(dry.eventsDeleted == 1 && dry.subjectsErased == 2, "\(engine)")
            let applied = try s.applyRetention(rules, asOf: asOf, dryRun: false, audit: Self.ctx)
            #expect(applied.eventsDeleted == 1 && applied.subjectsErased == 2, "\(engine)")
            #expect(try s.exists(customerID: "R1") == false && s.exists(customerID: "R3") == false, "\(engine)")
            #expect(try s.exists(customerID: "R2"), "\(engine)")
            #expect(try s.accessExport(customerID: "R2")?.events.count == 1, "\(engine): the restricted subject's event was deleted")
            // Lifted, the next sweep takes it like any other.
            #expect(try s.setRestriction(customerID: "R2", restricted: false, audit: Self.ctx))
            let after = try s.applyRetention(rules, asOf: asOf, dryRun: false, audit: Self.ctx)
            #expect(after.eventsDeleted == 1 && after.subjectsErased == 1, "\(engine)")
        }
    }

    @Test(arguments: TestEngine.allCases)
    func restrictionRefusesReadsAndItemsButNotTheExport(engine: TestEngine) async throws {
        try await onThread {
            let e = try populated(engine)
            let s = e.engine
            let p2 = try s.pseudonym(ofCustomerID: "R2")
            #expect(try s.setRestriction(customerID: "R2", restricted: true, audit: Self.ctx))
            #expect(try s.setRestriction(customerID: "R2", restricted: true, audit: Self.ctx) == false)
            #expect(try s.restricted(customerID: "R2") == true)
            #expect(try s.restricted(customerID: "nobody") == nil)
            #expect(try s.readProfile(pseudonym: p2, fields: ["email"], consentPurpose: nil) == .restricted, "\(engine)")
            #expect(try s.readProfile(pseudonym: p2, fields: ["email"], consentPurpose: "analytics") == .restricted, "\(engine)")
            let items = try s.subjectItems(customerIDs: ["R1", "R2"], kind: "purchase", consentPurpose: nil, segmentAttribute: nil)
            #expect(items.map(\.consent) == [true, false], "\(engine)")
            #expect(try s.accessExport(customerID: "R2")?.customerID == "R2")
            // The engine's unchecked read (no purpose: not a gate read) answers as on SQLite.
            #expect(try s.profile(customerID: "R2", fields: ["email"])?.customerID == "R2", "\(engine)")
            #expect(try s.aggregateSource.boundedSums(Conformance.req([.subjects]))[""] == [2])
            expectNotFound { _ = try s.setRestriction(customerID: "nobody", restricted: true, audit: Self.ctx) }
            #expect(try s.setRestriction(customerID: "R2", restricted: false, audit: Self.ctx))
            guard case .found = try s.readProfile(pseudonym: p2, fields: ["email"], consentPurpose: nil) else {
                Issue.record("\(engine): not readable after unrestrict"); return
            }
            // Erasure takes the restriction with it (PostgreSQL: the foreign key would refuse it otherwise).
            _ = try s.setRestriction(customerID: "R3", restricted: true, audit: Self.ctx)
            _ = try s.erase(customerIDs: [(1, "R3")], file: nil, reason: "test", audit: Self.ctx)
            #expect(try s.restricted(customerID: "R3") == nil)
            #expect(try s.aggregateSource.boundedSums(Conformance.req([.subjects]))[""] == [2])
        }
    }

    @Test(arguments: TestEngine.allCases)
    func objectionsAreRecordedOnceAndFoundByPseudonym(engine: TestEngine) async throws {
        try await onThread {
            let e = try populated(engine)
            let s = e.engine
            let ids: [(line: Int, id: String)] = [(1, "R1"), (2, "R2")]
            #expect(try s.setConsent(ids, file: nil, purpose: "offers", granted: false, source: ProfileStore.objectionSource,
                                     policyVersion: "test", audit: Self.ctx) == 2)
            #expect(try s.setConsent(ids, file: nil, purpose: "offers", granted: false, source: ProfileStore.objectionSource,
                                     policyVersion: "test", audit: Self.ctx) == 0)
            // A plain revocation without a grant before it still records nothing.
            #expect(try s.setConsent([(1, "R3")], file: nil, purpose: "offers", granted: false, source: nil,
                                     policyVersion: "test", audit: Self.ctx) == 0)
            let p = try ["R1", "R2", "R3"].map { try s.pseudonym(ofCustomerID: $0) }
            #expect(try s.objecting(pseudonyms: p, purpose: "offers") == Set([p[0], p[1]]), "\(engine)")
            #expect(try s.objecting(pseudonyms: p, purpose: "other").isEmpty)
            #expect(try s.consentHistory(customerID: "R1")?.last?.source == "objection")
            var r = Conformance.req([.subjects])
            r.objectionPurpose = "offers"
            #expect(try s.aggregateSource.boundedSums(r)[""] == [1])
            r.grouping = .items(vocabulary: ["I1"])
            r.coordinates = [.itemPresence(kind: "purchase", maxItems: 1)]
            #expect(try s.aggregateSource.boundedSums(r)["I1"] == [0], "\(engine)")
        }
    }

    /// PostgreSQL probes whether any restriction or objection exists before it builds an
    /// aggregate's statement, outside the statement's snapshot. One that commits in that gap
    /// must still be honoured: the statement's own snapshot is probed again and the sums made
    /// again with both anti-joins. Without that, these sums counted the just-restricted subject.
    @Test func aRestrictionOrObjectionCommittedAfterTheProbeIsStillHonoured() async throws {
        try await onThread {
            let e = try populated(.postgres)
            let pg = try #require(e.engine as? PostgresProfiles)
            var restricting = PostgresAggregateSource(profiles: pg)
            restricting.afterExclusionProbe = { _ = try pg.setRestriction(customerID: "R2", restricted: true, audit: Self.ctx) }
            #expect(try restricting.boundedSums(Conformance.req([.subjects]))[""] == [2])
            // Item sums take the same path: R2's purchase of I1 is not counted.
            _ = try pg.setRestriction(customerID: "R2", restricted: false, audit: Self.ctx)
            var items = Conformance.req([.itemPresence(kind: "purchase", maxItems: 1)])
            items.grouping = .items(vocabulary: ["I1"])
            #expect(try restricting.boundedSums(items)["I1"] == [1])
            // An objection committed in the gap, with no restriction left anywhere.
            _ = try pg.setRestriction(customerID: "R2", restricted: false, audit: Self.ctx)
            var objecting = PostgresAggregateSource(profiles: pg)
            objecting.afterExclusionProbe = {
                _ = try pg.setConsent([(1, "R1")], file: nil, purpose: "offers", granted: false, source: ProfileStore.objectionSource,
                                      policyVersion: "test", audit: Self.ctx)
            }
            var r = Conformance.req([.subjects])
            r.objectionPurpose = "offers"
            #expect(try objecting.boundedSums(r)[""] == [2])
            // Nothing committed in the gap: the sums are made once, as before.
            #expect(try PostgresAggregateSource(profiles: pg).boundedSums(Conformance.req([.subjects]))[""] == [3])
        }
    }

    @Test(arguments: TestEngine.allCases)
    func rectificationSealsAgainAndReindexes(engine: TestEngine) async throws {
        try await onThread {
            let e = try populated(engine)
            let s = e.engine
            let schema = Conformance.schema
            guard let email = schema.field(named: "email"), let age = schema.field(named: "age"), let tier = schema.field(named: "tier") else {
                Issue.record("schema"); return
            }
            let before = try s.rawRows(customerID: "R1")
            let fresh = "rectified-r1@example.org"
            let changed = try s.rectify(customerID: "R1", values: [(email, .text(fresh)), (age, .int(31)), (tier, .text("gold"))], audit: Self.ctx)
            #expect(changed == ["email", "age"], "\(engine)")
            let after = try s.rawRows(customerID: "R1")
            #expect(after?.pii.first { $0.field == "email" }?.ciphertextHex != before?.pii.first { $0.field == "email" }?.ciphertextHex)
            #expect(after?.wrappedDEKHex == before?.wrappedDEKHex, "the subject keeps its own data key")
            let hexFresh = AuditLog.hex(Array(fresh.utf8))
            #expect(!(after?.pii.contains { $0.ciphertextHex.contains(hexFresh) } ?? true))
            #expect(try s.find(field: "email", value: fresh) == ["R1"])
            #expect(try s.find(field: "email", value: "r1@example.com").isEmpty)
            let view = try s.profile(customerID: "R1", fields: ["email", "age"])
            #expect(view?.fields.map(\.value) == [.text(fresh), .int(31)], "\(engine)")
            // Null clears the value and its index entry.
            #expect(try s.rectify(customerID: "R1", values: [(email, .null)], audit: Self.ctx) == ["email"])
            #expect(try s.find(field: "email", value: fresh).isEmpty)
            expectNotFound { _ = try s.rectify(customerID: "nobody", values: [(age, .int(40))], audit: Self.ctx) }
        }
    }

    @Test(arguments: TestEngine.allCases)
    func consentImportIsAllOrNothingAndKeepsTimes(engine: TestEngine) async throws {
        try await onThread {
            let e = try populated(engine)
            let s = e.engine
            let good = ConsentImportRow(line: 2, customerID: "R1", purpose: "analytics", granted: true, timeMillis: 1_700_000_000_000, source: "paper")
            let unknown = ConsentImportRow(line: 3, customerID: "nobody", purpose: "analytics", granted: true, timeMillis: 1_700_000_000_000, source: nil)
            do {
                _ = try s.importConsent([good, unknown], file: "c.csv", policyVersion: "test", audit: Self.ctx)
                Issue.record("\(engine): imported an unknown subject")
            } catch let err as VaultError {
                #expect(err.kind == .notFound && err.message.contains("c.csv:3"), "\(err.message)")
            }
            #expect(try s.consentHistory(customerID: "R1")?.isEmpty == true)
            let older = ConsentImportRow(line: 3, customerID: "R1", purpose: "analytics", granted: false, timeMillis: 1_600_000_000_000, source: "old")
            #expect(try s.importConsent([good, older], file: "c.csv", policyVersion: "test", audit: Self.ctx) == 2)
            let h = try s.consentHistory(customerID: "R1") ?? []
            #expect(h.map(\.timeMillis) == [1_700_000_000_000, 1_600_000_000_000], "\(engine)")
            #expect(try s.hasConsent(customerID: "R1", purpose: "analytics"), "\(engine): the most recent row decides")
        }
    }
}

func expectNotFound(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected not found", sourceLocation: sourceLocation)
    } catch let e as VaultError {
        #expect(e.kind == .notFound, "\(e.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}
