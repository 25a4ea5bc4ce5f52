import Testing
@testable import VaultPolicy

/// `dp_budget.delta` (issue 16 item 5): its default, 0 as pure DP only, and its range.
@Suite("dp_budget delta") struct DeltaBudgetTests {
    func policy(line: Int, _ text: String) throws -> Policy {
        try PolicyLoader.parsePolicy(yaml: Fixtures.policy(replacing: line, with: text), file: "policy.yaml", schema: try Fixtures.schema())
    }

    @Test func defaultsTo1eMinus6OnlyForAPurposeWithAnApproximateDPModel() throws {
        let p = try PolicyLoader.parsePolicy(yaml: Fixtures.specPolicy, file: "policy.yaml", schema: try Fixtures.schema())
        #expect(p.purpose("model_training")?.dpBudget?.delta == 1e-6)   // lists recommender
        #expect(p.purpose("analytics")?.dpBudget?.delta == 0)           // queries only: pure DP
    }

    @Test func anExplicitDeltaIsKeptAndZeroMeansPureDP() throws {
        #expect(try policy(line: 13, "    dp_budget: { epsilon: 10.0, delta: 0, period: 30d }").purpose("model_training")?.dpBudget?.delta == 0)
        #expect(try policy(line: 13, "    dp_budget: { epsilon: 10.0, delta: 1.0e-5, period: 30d }").purpose("model_training")?.dpBudget?.delta == 1e-5)
        #expect(try policy(line: 7, "    dp_budget: { epsilon: 4.0, delta: 1.0e-9, period: 30d }").purpose("analytics")?.dpBudget?.delta == 1e-9)
    }

    @Test(arguments: ["-1.0e-6", "0.01", "1", "1.0e-20", ".nan", ".inf", "lots"])
    func aDeltaOutsideItsRangeIsRefusedNamingTheField(_ value: String) throws {
        do {
            _ = try policy(line: 13, "    dp_budget: { epsilon: 10.0, delta: \(value), period: 30d }")
            Issue.record("delta \(value) was accepted")
        } catch let error as PolicyDiagnostic {
            #expect(error.line == 13 && error.field == "purposes.model_training.dp_budget.delta", "\(error)")
        }
    }
}
