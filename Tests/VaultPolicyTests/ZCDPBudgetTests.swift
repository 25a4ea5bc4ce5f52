import Testing
@testable import VaultPolicy

/// `dp_budget: { rho: R, period: P }` (issue 23 item 4): a zCDP purpose, and the combinations a
/// policy may not write, refused with file, line and field.
@Suite("dp_budget rho (zCDP)") struct ZCDPBudgetTests {
    func policy(line: Int, _ text: String) throws -> Policy {
        try PolicyLoader.parsePolicy(yaml: Fixtures.policy(replacing: line, with: text), file: "policy.yaml", schema: try Fixtures.schema())
    }

    @Test func aRhoBudgetIsZCDPWithItsConversionDelta() throws {
        let b = try #require(try policy(line: 7, "    dp_budget: { rho: 0.5, period: 30d }").purpose("analytics")?.dpBudget)
        #expect(b.rho == 0.5 && b.epsilon == 0 && b.delta == 0 && b.periodSeconds == 30 * 86_400)
        #expect(b.conversionDelta == DPBudget.defaultConversionDelta)
        let c = try #require(try policy(line: 7, "    dp_budget: { rho: 2, delta: 1.0e-9, period: 7d }").purpose("analytics")?.dpBudget)
        #expect(c.rho == 2 && c.conversionDelta == 1e-9)
        // An epsilon budget is unchanged and has no rho.
        #expect(try policy(line: 7, "    dp_budget: { epsilon: 4.0, period: 30d }").purpose("analytics")?.dpBudget?.rho == nil)
    }

    @Test(arguments: [
        ("    dp_budget: { rho: 0.5, epsilon: 1.0, period: 30d }", "purposes.analytics.dp_budget.epsilon"),
        ("    dp_budget: { epsilon: 1.0, rho: 0.5, period: 30d }", "purposes.analytics.dp_budget.epsilon"),
        ("    dp_budget: { rho: 0, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: -0.5, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: .nan, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: .inf, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: 1.0e9, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: 100.5, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: 1.0e-12, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: lots, period: 30d }", "purposes.analytics.dp_budget.rho"),
        ("    dp_budget: { rho: 0.5, delta: 0, period: 30d }", "purposes.analytics.dp_budget.delta"),
        ("    dp_budget: { rho: 0.5, delta: 0.5, period: 30d }", "purposes.analytics.dp_budget.delta"),
        ("    dp_budget: { rho: 0.5 }", "purposes.analytics.dp_budget"),
        ("    dp_budget: { period: 30d }", "purposes.analytics.dp_budget"),
        ("    dp_budget: { rho: 0.5, period: 30d, sigma: 2 }", "purposes.analytics.dp_budget.sigma"),
    ])
    func badCombinationsAreRefusedNamingFileLineAndField(_ text: String, _ field: String) throws {
        do {
            _ = try policy(line: 7, text)
            Issue.record("accepted: \(text)")
        } catch let error as PolicyDiagnostic {
            #expect(error.file == "policy.yaml" && error.line == 7 && error.field == field, "\(error)")
        }
    }
}
