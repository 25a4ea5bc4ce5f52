import Foundation
import Testing
@testable import DifferentialPrivacy

/// Derived attributes (job-declared per-subject event aggregates): the documented map, and a
/// `PrivateSession` that grants them explicitly, supplies their definitions itself and refuses
/// a derived name whose event kind the gate did not grant.
@Suite struct DerivedSessionTests {
    /// Records the requests it gets; every sum is 0.
    final class Recorder: AggregateSource, @unchecked Sendable {
        var requests: [AggregateRequest] = []
        func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
            requests.append(r)
            return ["": [Int64](repeating: 0, count: r.coordinates.count)]
        }
    }

    static let t0: Int64 = 1_309_478_400   // 2011-07-01T00:00:00Z
    let spend = DerivedAttribute(name: "spend_before", eventKind: "purchase", aggregate: .sum, before: t0, lower: 0, upper: 5000)
    let later = DerivedAttribute(name: "spend_later", eventKind: "purchase", aggregate: .sum, from: t0, before: t0 + 92 * 86_400, lower: 0, upper: 5000)
    let clicks = DerivedAttribute(name: "clicks", eventKind: "click", aggregate: .count, lower: 0, upper: 100)

    @Test func theMapIsTheWindowedAggregateClampedWithZeroForNoEvents() {
        let t0 = Self.t0
        let events: [(kind: String, item: String, value: Double, time: Int64)] = [
            ("purchase", "A", 100, t0 - 1), ("purchase", "B", 250, t0), ("purchase", "A", 40, t0 + 5), ("rating", "A", 5, t0 - 10),
        ]
        #expect(spend.value(of: events) == 100)                        // only the event before t0
        #expect(later.value(of: events) == 290)                        // from t0 inclusive
        let count = DerivedAttribute(name: "n", eventKind: "purchase", aggregate: .count, from: t0, lower: 0, upper: 1)
        #expect(count.value(of: events) == 1)                          // 2 clamped to 1
        let items = DerivedAttribute(name: "i", eventKind: "purchase", aggregate: .distinctItems, lower: 0, upper: 10)
        #expect(items.value(of: events) == 2)                          // A and B
        #expect(spend.value(of: []) == 0)                              // no events: 0
        let floor = DerivedAttribute(name: "f", eventKind: "purchase", aggregate: .sum, lower: 10, upper: 20)
        #expect(floor.value(of: []) == 10)                             // 0 clamped to the bounds
        #expect(count.integral && items.integral && !spend.integral)
        #expect(!DerivedAttribute(name: "c", eventKind: "purchase", aggregate: .count, lower: 0, upper: 2.5).integral)
        // Every value lies within the bounds, so a coordinate over it keeps the attribute's bound.
        var g = UInt64(7)
        for _ in 0..<200 {
            g = g &* 6_364_136_223_846_793_005 &+ 1
            let n = Int(g >> 60)
            let evs = (0..<n).map { j in (kind: "purchase", item: "I\(j % 3)", value: Double((g >> UInt64(j + 8)) % 3000), time: t0 - 5 + Int64(j)) }
            for d in [spend, later, count, items, floor] {
                let v = d.value(of: evs)
                #expect(v >= d.lower && v <= d.upper)
            }
        }
    }

    @Test func theSessionSuppliesTheGrantedDefinitionsAndRefusesUngrantedOnes() throws {
        let src = Recorder()
        let s = PrivateSession(source: src, consentPurpose: "recommendations", epsilon: Epsilon(1)!, attributes: ["country"],
                               eventKinds: ["purchase"], derived: [spend, later, clicks])
        let g = BoundedSum.grid(forBound: 1, integral: false)
        // A model names derived features like attributes; its own definitions are dropped.
        let forged = DerivedAttribute(name: "spend_before", eventKind: "secret", aggregate: .sum, lower: 0, upper: 1e9)
        var req = AggregateRequest(consentPurpose: nil, nonNull: ["spend_before"], grouping: nil,
                                   coordinates: [.subjects, .product(left: spend.feature, right: later.feature, grid: g)], derived: [forged])
        _ = try s.release(req, shares: [try s.share(0.25), try s.share(0.25)], label: "t")
        #expect(src.requests.count == 1)
        #expect(src.requests[0].derived == [spend, later])             // only those named, as granted
        #expect(src.requests[0].consentPurpose == "recommendations")
        // A derived feature whose event kind was not granted, or an unknown name: refused before
        // anything is computed or spent.
        let before = s.spentValue
        req = AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.attribute(name: "clicks", lower: 0, upper: 100, center: 0, grid: 1)])
        #expect(throws: SessionError.self) { _ = try s.release(req, shares: [try s.share(0.25)], label: "t") }
        req = AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.attribute(name: "spend_total", lower: 0, upper: 100, center: 0, grid: 1)],
                               derived: [DerivedAttribute(name: "spend_total", eventKind: "purchase", aggregate: .sum, lower: 0, upper: 100)])
        #expect(throws: SessionError.self) { _ = try s.release(req, shares: [try s.share(0.25)], label: "t") }
        #expect(src.requests.count == 1 && s.spentValue == before)
        // Without derived grants, the same names are unknown attributes.
        let plain = PrivateSession(source: src, consentPurpose: nil, epsilon: Epsilon(1)!, attributes: [], eventKinds: ["purchase"])
        #expect(throws: SessionError.self) {
            _ = try plain.release(AggregateRequest(consentPurpose: nil, nonNull: ["spend_before"], grouping: nil, coordinates: [.subjects], derived: [spend]),
                                  shares: [Epsilon(0.5)!], label: "t")
        }
        #expect(src.requests.count == 1)
    }
}
