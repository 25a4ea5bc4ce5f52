import Foundation
import Testing
@testable import DifferentialPrivacy

/// A session and a query carry the objection purpose (GDPR Art. 21) to every request the source
/// gets, whatever the model or caller put in the request: a model cannot drop it.
@Suite struct ObjectionSessionTests {
    @Test func everyRequestOfASessionLeavesOutTheObjectingSubjects() throws {
        let source = DerivedSessionTests.Recorder()
        let session = PrivateSession(source: source, consentPurpose: nil, epsilon: Epsilon(1)!, attributes: [], eventKinds: [])
        session.objectionPurpose = "offers"
        var request = AggregateRequest(consentPurpose: "other", grouping: nil, coordinates: [.subjects])
        request.objectionPurpose = nil   // what a model might send
        _ = try session.release(request, shares: [try session.share(0.5)], label: "count")
        #expect(source.requests.map(\.objectionPurpose) == ["offers"])
        #expect(source.requests.map(\.consentPurpose) == [nil])
    }

    @Test func aQueryPassesItsObjectionPurposeToTheSource() throws {
        struct Free: BudgetAccountant {
            func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
                BudgetState(purpose: purpose, limit: limit, spent: 0, periodStart: 0)
            }
        }
        let source = DerivedSessionTests.Recorder()
        var q = DPQuery(kind: .count, measure: .subjects, consentPurpose: nil, predicates: [], groupBy: nil, epsilon: Epsilon(1)!)
        q.objectionPurpose = "offers"
        _ = try QueryEngine(source: source, accountant: Free()).run(q, purpose: "offers", limit: 10, periodSeconds: 60)
        #expect(source.requests.map(\.objectionPurpose) == ["offers"])
    }
}
