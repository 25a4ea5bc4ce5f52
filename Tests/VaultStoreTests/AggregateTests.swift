import DifferentialPrivacy
import Foundation
import GRDB
import Testing
import VaultPolicy
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

    // MARK: - Derived attributes (per-subject event aggregates)

    static let t0 = DateParsing.unixSeconds(fromISO8601: "2026-03-01T00:00:00Z")!
    static let day: Int64 = 86_400

    /// 6 subjects around the window [t0, t0 + 1 day):
    /// CUST-0 no events; CUST-1 purchases 1 s before, at, 1 s before the end of, and at the end
    /// of the window (items A, B, A, C); CUST-2 five purchases of 900 in the window (items
    /// P0...P4: above every bound below); CUST-3 only ratings in the window; CUST-4 purchases
    /// outside the window only; CUST-5 two purchases of the same item in the window.
    func derivedStore() throws -> (TempStore, [[(kind: String, item: String, value: Double, time: Int64)]]) {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<6)))
        let t0 = Self.t0, day = Self.day
        let events: [[(kind: String, item: String, value: Double, time: Int64)]] = [
            [],
            [("purchase", "A", 10.5, t0 - 1), ("purchase", "B", 20.25, t0), ("purchase", "A", 30.5, t0 + day - 1), ("purchase", "C", 40.75, t0 + day)],
            (0..<5).map { ("purchase", "P\($0)", 900, t0 + Int64($0) * 3600) },
            [("rating", "A", 4, t0 + 10), ("rating", "B", 5, t0 + 20)],
            [("purchase", "A", 7.25, t0 - day), ("purchase", "B", 8.5, t0 + 2 * day)],
            [("purchase", "Q", 1.5, t0 + 100), ("purchase", "Q", 2.5, t0 + 200)],
        ]
        var csv = "customer_id,kind,item,value,time\n"
        for (i, evs) in events.enumerated() {
            for e in evs {
                let v = e.value == e.value.rounded() ? String(Int(e.value)) : String(e.value)   // ratings are int-valued
                csv += "CUST-\(i),\(e.kind),\(e.item),\(v),\(DateParsing.iso8601(unixSeconds: e.time))\n"
            }
        }
        _ = try t.store.ingestEvents(path: t.write("e.csv", csv))
        return (t, events)
    }

    /// Per subject (a predicate on its unique age picks it out), the derived values, in grid units.
    func perSubject(_ t: TempStore, _ derived: [DerivedAttribute], grid: Double = 0.25) throws -> [[Int64]] {
        try (0..<6).map { i in
            let age = Int64(Fixtures.row(i)[5])!
            let r = AggregateRequest(consentPurpose: nil, predicates: [WhereCondition(attribute: "age", op: .eq, value: .int(age))], grouping: nil,
                                     coordinates: [.subjects] + derived.map { .attribute(name: $0.name, lower: $0.lower, upper: $0.upper, center: 0, grid: $0.integral ? 1 : grid) },
                                     derived: derived)
            return try t.store.aggregateSource.boundedSums(r)[""]!
        }
    }

    @Test func derivedSumCountAndDistinctItemsAreExactPerSubjectWithZeroForNoEvents() throws {
        let (t, events) = try derivedStore()
        let window = (from: Self.t0, before: Self.t0 + Self.day)
        let d = [DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, from: window.from, before: window.before, lower: 0, upper: 2000),
                 DerivedAttribute(name: "orders", eventKind: "purchase", aggregate: .count, from: window.from, before: window.before, lower: 0, upper: 3),
                 DerivedAttribute(name: "items", eventKind: "purchase", aggregate: .distinctItems, from: window.from, before: window.before, lower: 0, upper: 3),
                 DerivedAttribute(name: "rated", eventKind: "rating", aggregate: .count, lower: 0, upper: 10)]
        let got = try perSubject(t, d)
        // [subjects, spend / 0.25, orders, items, ratings], by hand:
        #expect(got[0] == [1, 0, 0, 0, 0])                            // no events at all: 0, not null
        #expect(got[1] == [1, 203, 2, 2, 0])                          // (20.25 + 30.5) / 0.25: B at t0, A at the last second; not A at t0 - 1 nor C at the end
        #expect(got[2] == [1, 8000, 3, 3, 0])                         // 4500, 5 and 5 clamped to 2000 (/ 0.25), 3, 3
        #expect(got[3] == [1, 0, 0, 0, 2])                            // ratings are not purchases
        #expect(got[4] == [1, 0, 0, 0, 0])                            // purchases only outside the window
        #expect(got[5] == [1, 16, 2, 1, 0])                           // 4 / 0.25; two events of one item: one distinct item
        // The same against the documented map.
        for (i, evs) in events.enumerated() {
            #expect(got[i].dropFirst().map { $0 } == d.map { Int64(($0.value(of: evs) / ($0.integral ? 1 : 0.25)).rounded()) }, "CUST-\(i)")
        }
    }

    @Test func derivedWindowIsFromInclusiveAndBeforeExclusiveToTheSecond() throws {
        let (t, _) = try derivedStore()
        let t0 = Self.t0, day = Self.day
        func cust1(_ from: Int64?, _ before: Int64?) throws -> [Int64] {
            let d = [DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, from: from, before: before, lower: 0, upper: 2000),
                     DerivedAttribute(name: "orders", eventKind: "purchase", aggregate: .count, from: from, before: before, lower: 0, upper: 10)]
            return Array(try perSubject(t, d)[1].dropFirst())
        }
        // CUST-1: 10.5 at t0 - 1, 20.25 at t0, 30.5 at t0 + day - 1, 40.75 at t0 + day.
        #expect(try cust1(t0, t0 + day) == [203, 2])               // (20.25 + 30.5) / 0.25
        #expect(try cust1(t0 + 1, t0 + day) == [122, 1])           // from one second later: t0 is out
        #expect(try cust1(t0 - 1, t0 + day) == [245, 3])           // from one second earlier: t0 - 1 is in
        #expect(try cust1(t0, t0 + day - 1) == [81, 1])            // before one second earlier: the last second is out
        #expect(try cust1(t0, t0 + day + 1) == [366, 3])           // before one second later: t0 + day is in
        #expect(try cust1(nil, t0) == [42, 1])                     // only before
        #expect(try cust1(t0 + day, nil) == [163, 1])              // only from
        #expect(try cust1(nil, nil) == [408, 4])                   // no window
    }

    @Test func derivedValuesAreClampedAndCombineWithConsentEventsPredicatesAndGroups() throws {
        let (t, events) = try derivedStore()
        // Bounds above 0: a subject without events gets the lower bound; narrower coordinate
        // bounds than the declared ones clamp again (a model may tighten a range).
        let spend = DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, lower: 5, upper: 100)
        let orders = DerivedAttribute(name: "orders", eventKind: "purchase", aggregate: .count, from: Self.t0, lower: 1, upper: 4)
        let g = BoundedSum.grid(forBound: 1, integral: false)
        let tight = ScaledFeature(name: "spend", lower: 10, upper: 50)
        let ctx = AuditContext(actor: "t", role: "privacy_officer", requestID: "r")
        _ = try t.store.setConsent([(1, "CUST-0"), (2, "CUST-1"), (3, "CUST-2"), (4, "CUST-4"), (5, "CUST-5")], file: nil, purpose: "analytics",
                                   granted: true, source: nil, policyVersion: "x", audit: ctx)
        // Every join and its bound parameters at once: consent, a capped event subquery, the
        // derived subquery with its window, and a WHERE predicate.
        let notAge = Int64(Fixtures.row(5)[5])!   // leaves out CUST-5; CUST-0 (no events) stays in
        let coordinates: [Coordinate] = [
            .subjects,
            .attribute(name: "spend", lower: 5, upper: 100, center: 0, grid: 0.25),
            .attribute(name: "orders", lower: 1, upper: 4, center: 0, grid: 1),
            .product(left: tight, right: orders.feature, grid: g),
            .eventCount(kind: "purchase", maxContributions: 2),
            .nonNull(attribute: "spend"),
        ]
        let r = try t.store.aggregateSource.boundedSums(AggregateRequest(
            consentPurpose: "analytics", predicates: [WhereCondition(attribute: "age", op: .ne, value: .int(notAge))], grouping: nil,
            coordinates: coordinates, derived: [spend, orders]))[""]!
        var expect = [Int64](repeating: 0, count: coordinates.count)
        func z(_ f: ScaledFeature, _ x: Double) -> Double { 2 * f.unit(x) - 1 }
        for i in [0, 1, 2, 4, 5] where Int64(Fixtures.row(i)[5])! != notAge {
            let s = spend.value(of: events[i]), o = orders.value(of: events[i])
            #expect(s >= 5 && s <= 100 && o >= 1 && o <= 4)
            expect[0] += 1
            expect[1] += Int64((s / 0.25).rounded())
            expect[2] += Int64(o)
            expect[3] += Int64((z(tight, s) * z(orders.feature, o) / g).rounded(.toNearestOrAwayFromZero))
            expect[4] += Int64(min(2, events[i].filter { $0.kind == "purchase" }.count))
            expect[5] += 1
        }
        #expect(expect[0] >= 3)
        #expect(r == expect)
        // By hand for two subjects: CUST-0 (no events) spend 5, orders 1; CUST-2 spend 100, orders 4.
        #expect(spend.value(of: events[0]) == 5 && orders.value(of: events[0]) == 1)
        #expect(spend.value(of: events[2]) == 100 && orders.value(of: events[2]) == 4)
        // Groupings over a derived feature: each subject in its grid cell.
        let cell = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .cell(features: [spend.feature], bins: 4),
                                                                             coordinates: [.subjects], derived: [spend]))
        var expectCell = ["0": [Int64(0)], "1": [0], "2": [0], "3": [0]]
        for evs in events { expectCell[String(min(3, Int(spend.feature.unit(spend.value(of: evs)) * 4)))]![0] += 1 }
        #expect(cell == expectCell)
        // A derived name cannot shadow a schema attribute, and an undefined name is refused.
        #expect(throws: VaultError.self) {
            _ = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.nonNull(attribute: "age")],
                                                                         derived: [DerivedAttribute(name: "age", eventKind: "purchase", aggregate: .count, lower: 0, upper: 1)]))
        }
        #expect(throws: VaultError.self) {
            _ = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.nonNull(attribute: "spend")]))
        }
    }

    /// The Swift scan for the nearest-centroid grouping (NearestScan.swift) computes exactly what
    /// the SQL form does: same groups, same sums, with and without consent, with feature bounds
    /// inside the stored ones (clamping on) and equal to them (off), and on exact ties.
    @Test func nearestCentroidScanEqualsTheSQLForm() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<300)))
        let ctx = AuditContext(actor: "t", role: "privacy_officer", requestID: "r")
        let ids = (0..<300).filter { $0 % 3 != 0 }.enumerated().map { (line: $0.offset + 1, id: "CUST-\($0.element)") }
        _ = try t.store.setConsent(ids, file: nil, purpose: "analytics", granted: true, source: nil, policyVersion: "x", audit: ctx)
        let fast = t.store.aggregateSource as! StoreAggregateSource
        var sql = fast
        sql.forceSQL = true
        var g = SystemRandomNumberGenerator()
        for (ageBounds, incomeBounds) in [((18.0, 100.0), (0.0, 250_000.0)), ((30.0, 60.0), (10_000.0, 90_000.0))] {
            let age = ScaledFeature(name: "age", lower: ageBounds.0, upper: ageBounds.1)
            let income = ScaledFeature(name: "annual_income", lower: incomeBounds.0, upper: incomeBounds.1)
            for k in [1, 3, 8] {
                var centroids = (0..<k).map { _ in [Double.random(in: 0...1, using: &g), Double.random(in: 0...1, using: &g)] }
                if k == 3 { centroids[2] = centroids[1] }   // an exact tie: the lower index wins
                for consent in [nil, "analytics"] {
                    let r = AggregateRequest(consentPurpose: consent, grouping: .nearest(features: [age, income], centroids: centroids),
                                             coordinates: [.subjects, .nonNull(attribute: "age"),
                                                           .attribute(name: "age", lower: age.lower, upper: age.upper, center: (age.lower + age.upper) / 2, grid: 1),
                                                           .attribute(name: "annual_income", lower: income.lower, upper: income.upper,
                                                                      center: (income.lower + income.upper) / 2, grid: 0.5)])
                    #expect(fast.nearestScanApplies(r))
                    let a = try fast.boundedSums(r), b = try sql.boundedSums(r)
                    #expect(a == b, "k \(k) consent \(consent ?? "-") bounds \(ageBounds)")
                    #expect(a.values.reduce(0) { $0 + $1[0] } == (consent == nil ? 300 : 200))
                    if k == 3 { #expect(a["2"]?[0] == 0) }
                }
            }
        }
    }

    /// Item pairs: each subject's vocabulary items (most recent first, at most m) give every
    /// unordered pair floor(unit / (n - 1)); pairs nobody holds are absent. Checked against a
    /// direct computation on the fixture (CUST-i bought SKU-0 ... SKU-(i-1), SKU-j on day j + 1).
    @Test func itemPairWeightsMatchTheDocumentedMap() throws {
        let t = try store()
        let vocab = ["SKU-0", "SKU-2", "SKU-3", "SKU-5", "SKU-9"]
        for (m, unit) in [(3, 1024), (2, 1024), (5, 7)] {
            let got = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .itemPairs(vocabulary: vocab),
                                                                               coordinates: [.itemPairWeight(kind: "purchase", maxItems: m, unit: unit)]))
            var want: [String: [Int64]] = [:]
            for i in 0..<12 {
                // vocabulary items the subject holds, most recent (highest j) first, capped at m
                let held = vocab.indices.filter { Int(vocab[$0].dropFirst(4))! < i }.sorted { Int(vocab[$0].dropFirst(4))! > Int(vocab[$1].dropFirst(4))! }.prefix(m)
                let items = Array(held)
                guard items.count >= 2 else { continue }
                for a in 0..<items.count {
                    for b in (a + 1)..<items.count {
                        let key = "\(min(items[a], items[b]))|\(max(items[a], items[b]))"
                        want[key, default: [0]][0] += Int64(unit / (items.count - 1))
                    }
                }
            }
            #expect(got == want, "m \(m) unit \(unit): \(got) vs \(want)")
        }
    }
    /// Segment by item: each subject's capped vocabulary items counted in its one segment
    /// (subjects outside the domain in none), every (segment, item) key present.
    @Test func segmentItemPresenceMatchesTheDocumentedMap() throws {
        let t = try store()
        let vocab = ["SKU-0", "SKU-2", "SKU-3", "SKU-5", "SKU-9"]
        let genders = ["female", "male", "other", "unknown"]   // CUST-i has genders[i % 4]
        let domain = ["female", "male", "other"]
        for m in [2, 20] {
            let got = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: "gender", domain: domain, vocabulary: vocab),
                                                                               coordinates: [.itemPresence(kind: "purchase", maxItems: m)]))
            var want: [String: [Int64]] = [:]
            for s in domain.indices { for i in vocab.indices { want["\(s)|\(i)"] = [0] } }
            for i in 0..<12 {
                guard let s = domain.firstIndex(of: genders[i % 4]) else { continue }
                let held = vocab.indices.filter { Int(vocab[$0].dropFirst(4))! < i }.sorted { Int(vocab[$0].dropFirst(4))! > Int(vocab[$1].dropFirst(4))! }.prefix(m)
                for item in held { want["\(s)|\(item)"]![0] += 1 }
            }
            #expect(got == want, "m \(m): \(got) vs \(want)")
        }
        // The grouping takes only item presence, and only a categorical attribute.
        #expect(throws: (any Error).self) {
            try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: "gender", domain: domain, vocabulary: vocab),
                                                                     coordinates: [.itemPairWeight(kind: "purchase", maxItems: 3, unit: 1024)]))
        }
        #expect(throws: (any Error).self) {
            try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: "age", domain: ["1"], vocabulary: vocab),
                                                                     coordinates: [.itemPresence(kind: "purchase", maxItems: 3)]))
        }
    }
    /// Oblivious-tree leaves: bit l set when feature l >= its cut (stored value, own units).
    @Test func thresholdLeavesMatchTheDocumentedMap() throws {
        let t = try store()
        let features = ["age", "annual_income", "age"], cuts = [40.5, 600.0, 60.5]
        let got = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .thresholds(features: features, cuts: cuts),
                                                                           coordinates: [.subjects]))
        var want: [String: [Int64]] = [:]
        for leaf in 0..<8 { want[String(leaf)] = [0] }
        for i in 0..<12 {
            let r = Fixtures.row(i)
            let x = ["age": Double(r[5])!, "annual_income": Double(r[8])!]
            var leaf = 0
            for l in 0..<3 where x[features[l]]! >= cuts[l] { leaf |= 1 << l }
            want[String(leaf)]![0] += 1
        }
        #expect(got == want, "\(got) vs \(want)")
        #expect(throws: (any Error).self) {
            try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .thresholds(features: ["age"], cuts: []), coordinates: [.subjects]))
        }
    }
}
