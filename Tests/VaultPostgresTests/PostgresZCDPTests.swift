import DifferentialPrivacy
import Foundation
import PostgresNIO
import Testing
import VaultAudit
@testable import VaultPostgres
import VaultStore

/// Issue 23 item 4 on PostgreSQL: a zCDP purpose's rho is charged on its own ledger row
/// (`Rho.ledgerKey`) with the same atomic check-and-spend as epsilon, so three nodes racing for a
/// rho budget that fits exactly ten charges get exactly ten; the entries carry `zcdp rho R` and
/// no epsilon; the purpose's epsilon row is untouched.
@Suite(.serialized) struct PostgresZCDPTests {
    @Test func threeNodesNeverOverspendARhoBudget() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let nodes = try (0..<3).map { _ in try db.nodeEngine(pool: 4) }
            let rho = try #require(Rho(0.05))
            let charge = try #require(rho.ledgerCharge)
            let rhoLimit = rho.value * 10
            let key = Rho.ledgerKey(purpose: "analytics")
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<30 {
                    let node = nodes[i % 3]
                    group.addTask {
                        do {
                            _ = try await node.charge(purpose: key, epsilon: charge.chargedValue, limit: rhoLimit * Rho.ledgerScale,
                                                      periodSeconds: 86_400, audit: record("node\(i % 3)", request: "q\(i)"))
                            return true
                        } catch is BudgetExceeded {
                            return false
                        }
                    }
                }
                var out: [Bool] = []
                for try await r in group { out.append(r) }
                return out
            }
            #expect(results.filter { $0 }.count == 10)
            let state = try await nodes[0].budgetState(purpose: key, limit: rhoLimit * Rho.ledgerScale, periodSeconds: 86_400)
                .asRho(limit: rhoLimit, conversionDelta: 1e-6)
            #expect(state.spent == rhoLimit && state.left == 0 && state.zcdp)
            #expect(try await nodes[0].budgetState(purpose: "analytics", limit: 4, periodSeconds: 86_400).spent == 0)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"status\":\"ok\"%' AND entry LIKE '%zcdp rho \(rho.value)%'") == 10)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"status\":\"ok\"%' AND entry LIKE '%\"unmapped.epsilon\":\"%'") == 0)
            #expect(try await nodes[1].verifyAudit().ok)
            for n in nodes { await n.close() }
        }
    }
}
