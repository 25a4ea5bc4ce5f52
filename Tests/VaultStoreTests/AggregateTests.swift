import DifferentialPrivacy
import Foundation
import GRDB
import Testing
@testable import VaultStore

/// The store computes exactly the per-subject map the DP layer's sensitivity proof assumes:
/// clamping, centring, the grid, the cap on events, consent and predicates.
@Suite struct AggregateTests {
    /// 12 subjects; CUST-i has i purchases of value 100*i (some above the 1000 bound).
    func store() throws -> TempStore {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<12)))
        var events = "customer_id,kind,item,value,time\n"
        for i in 0..<12 {
            for j in 0..<i { events += "CUST-\(i),purchase,SKU-\(j),\(min(1000, 100 * i + j)),2026-01-\(String(format: "%02d", j + 1))T00:00:00Z\n" }
        }
        _ = try t.store.ingestEvents(path: t.write("e.csv", events))
        return t
    }

    func sums(_ t: TempStore, _ coordinates: [Coordinate], predicates: [WhereCondition] = [], consent: String? = nil,
              groupBy: (attribute: String, domain: [String])? = nil) throws -> [String: [Int64]] {
        try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: consent, predicates: predicates, groupBy: groupBy, coordinates: coordinates))
    }

    @Test func attributeValuesAreClampedCentredAndGridded() throws {
        let t = try store()
        let ages = (0..<12).map { Int64(Fixtures.row($0)[5])! }
        let incomes = (0..<12).map { Double(Fixtures.row($0)[8])! }
        let r = try sums(t, [.subjects, .attribute(name: "age", lower: 30, upper: 60, center: 45, grid: 1),
                             .attribute(name: "annual_income", lower: 0, upper: 1000, center: 0, grid: 0.5), .nonNull(attribute: "age")])[""]!
        #expect(r[0] == 12)
        #expect(r[1] == ages.map { min(60, max(30, $0)) - 45 }.reduce(0, +))
        #expect(r[2] == incomes.map { Int64((min(1000, max(0, $0)) / 0.5).rounded(.toNearestOrAwayFromZero)) }.reduce(0, +))
        #expect(r[3] == 12)
    }

    @Test func schemaBoundsNeedNoClampAndGiveTheSameSums() throws {
        let t = try store()
        let ages = (0..<12).map { Int64(Fixtures.row($0)[5])! }
        let incomes = (0..<12).map { Double(Fixtures.row($0)[8])! }
        let r = try sums(t, [.attribute(name: "age", lower: 18, upper: 100, center: 59, grid: 1),
                             .attribute(name: "annual_income", lower: 0, upper: 250_000, center: 125_000, grid: 2)])[""]!
        #expect(r[0] == ages.map { $0 - 59 }.reduce(0, +))
        #expect(r[1] == incomes.map { Int64((($0 - 125_000) / 2).rounded(.toNearestOrAwayFromZero)) }.reduce(0, +))
        #expect(StoreAggregateSource.contribution("x", lower: 18, upper: 100, center: 59, grid: 1, integral: true, stored: 18...100) == "(x - 59)")
        #expect(StoreAggregateSource.contribution("x", lower: 30, upper: 60, center: 0, grid: 1, integral: true, stored: 18...100).contains("CASE"))
    }

    @Test func eachSubjectContributesAtMostTheCapOfItsMostRecentEvents() throws {
        let t = try store()
        let k = 3
        let r = try sums(t, [.events(kind: "purchase", lower: 0, upper: 500, center: 0, grid: 1, maxContributions: k),
                             .eventCount(kind: "purchase", maxContributions: k)])[""]!
        var expectSum: Int64 = 0, expectCount: Int64 = 0
        for i in 0..<12 {
            let values = (0..<i).map { min(1000, 100 * i + $0) }   // by time: j = 0 oldest
            let recent = values.suffix(k)                            // the k most recent
            expectSum += recent.map { Int64(min(500, $0)) }.reduce(0, +)
            expectCount += Int64(recent.count)
        }
        #expect(r[0] == expectSum)
        #expect(r[1] == expectCount)
        // No subject exceeds the bound the DP layer uses.
        #expect(Coordinate.events(kind: "purchase", lower: 0, upper: 500, center: 0, grid: 1, maxContributions: k).bound == 1500)
    }

    @Test func consentPredicatesAndGroupsRestrictThePopulation() throws {
        let t = try store()
        let ctx = AuditContext(actor: "t", role: "privacy_officer", requestID: "r")
        _ = try t.store.setConsent([(1, "CUST-1"), (2, "CUST-2"), (3, "CUST-7")], file: nil, purpose: "analytics", granted: true, source: nil, policyVersion: "x", audit: ctx)
        _ = try t.store.setConsent([(1, "CUST-2")], file: nil, purpose: "analytics", granted: false, source: nil, policyVersion: "x", audit: ctx)
        #expect(try sums(t, [.subjects], consent: "analytics")[""]! == [2])   // CUST-1 and CUST-7
        let countries = (0..<12).map { Fixtures.row($0)[7] }
        let de = countries.filter { $0 == "DE" }.count
        #expect(try sums(t, [.subjects], predicates: [WhereCondition(attribute: "country", op: .eq, value: .text("DE"))])[""]! == [Int64(de)])
        let g = try sums(t, [.subjects], groupBy: ("country", ["DE", "FR", "GB", "US", "other", "ZZ"]))
        #expect(g["ZZ"] == [0])   // a domain value nobody has still gets an (exact zero) group
        #expect(g["DE"] == [Int64(de)])
        #expect(g.values.map { $0[0] }.reduce(0, +) == 12)
    }

    @Test func budgetIsChargedAtomicallyAndRefusedWhenItWouldBeExceeded() throws {
        let t = try store()
        let record = AuditContext(actor: "t", role: "trainer", requestID: "r").record("query.count", .read, purpose: "analytics")
        let acct = t.store.budgetAccountant(audit: record)
        let e = Epsilon(1.5)!
        _ = try acct.spend(purpose: "analytics", epsilon: e, limit: 4, periodSeconds: 86_400)
        let s = try acct.spend(purpose: "analytics", epsilon: e, limit: 4, periodSeconds: 86_400)
        #expect(abs(s.spent - 3) < 1e-5)
        #expect(throws: BudgetExceeded.self) { _ = try acct.spend(purpose: "analytics", epsilon: e, limit: 4, periodSeconds: 86_400) }
        #expect(abs(try t.store.budgetState(purpose: "analytics", limit: 4, periodSeconds: 86_400).spent - 3) < 1e-5)
        // Each successful charge wrote its audit entry with the epsilon.
        let entries = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit") }
        #expect(entries.count == 2)   // the two charges (this bare-store ingest is not audited)
        #expect(entries.filter { $0.contains(#""unmapped.epsilon":"1.5""#) }.count == 2)
    }
}
