import DifferentialPrivacy
import Foundation
@testable import ProfileVault
import Testing
import VaultStore

/// Quantiles and `query bounds` under a zCDP purpose (issue 23): the exponential mechanism at
/// epsilon e is e-DP, hence (e²/2)-zCDP; the release charges rho on the purpose's zCDP ledger
/// row, exactly the shares' sum, never past the limit, and nothing on a refusal or a dry run.
@Suite struct ZCDPQuantileTests {
    typealias N = NumberAttackTests
    typealias Z = ZCDPVaultTests

    static func quantile(epsilon: Double? = nil, rho: Double? = nil, q: [Double] = [0.5]) -> Vault.QuantileRequest {
        var r = Vault.QuantileRequest(purpose: "analytics", epsilon: epsilon, attribute: "age", quantiles: q)
        r.rho = rho
        return r
    }

    static func spent(_ v: Vault) throws -> Double { try Z.state(v, "analytics").spent }

    static func object(_ j: JSONValue) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(j.rendered(pretty: false).utf8)) as? [String: Any])
    }

    @Test func aQuantileChargesEpsilonSquaredOverTwo() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        let r = try v.quantile(Self.quantile(epsilon: 0.5))
        // e = 0.5: rho = 0.125 charged on the zCDP row, the mechanism ran at e itself.
        #expect(r.rho == 0.125 && r.epsilonPerQuantile == 0.5 && r.conversionDelta == 1e-6)
        #expect(abs(r.epsilon - Rho.epsilon(rho: 0.125, delta: 1e-6)) < 1e-12)
        #expect(try Self.spent(v) == 0.125)
        #expect(r.budget.zcdp && r.budget.spent == 0.125 && r.budget.left == 0.375)
        #expect(r.values.count == 1 && r.values[0].values.count == 1)
        let v0 = r.values[0].values[0]
        #expect(v0 >= 18 && v0 <= 100)
        // The epsilon row of the purpose is untouched.
        #expect(try v.store.budgetState(purpose: "analytics", limit: 4, periodSeconds: 30 * 86_400).spent == 0)
        // The charge's audit entry says rho and carries no epsilon.
        let ok = try DPSteeringTests.entries(s, "query.quantile").filter { $0["status"] as? String == "ok" }
        #expect(ok.count == 1 && ok.allSatisfy { ($0["status_detail"] as? String)?.contains("zcdp rho 0.125") == true })

        // --rho R over two quantiles: R/2 each (whole 2^-30 units), each at the largest grid
        // epsilon e with e²/2 <= R/2; the ledger is charged the two shares' sum, exactly.
        let two = try v.quantile(Self.quantile(rho: 0.08, q: [0.25, 0.75]))
        let shareUnits = UInt64((0.08 * 1_073_741_824).rounded(.down)) / 2
        let share = Double(shareUnits) / 1_073_741_824
        #expect(two.rho == Double(2 * shareUnits) / 1_073_741_824)
        let e = two.epsilonPerQuantile
        #expect(e * e / 2 <= share && (e + 1 / 1_048_576) * (e + 1 / 1_048_576) / 2 > share)
        #expect(e == (e * 1_048_576).rounded() / 1_048_576)   // on the 2^-20 grid
        #expect(try Self.spent(v) == 0.125 + Double(2 * shareUnits) / 1_073_741_824)
        #expect(two.values[0].values.count == 2)
    }

    /// Absurd numbers: every one a usage error (64) before anything is charged or read.
    @Test func absurdNumbersAreRefusedBeforeTheCharge() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var bads: [Vault.QuantileRequest] = []
        for rho in [0, -1, .nan, .infinity, -.infinity, 101, 1e308, 1e-12, .leastNonzeroMagnitude] { bads.append(Self.quantile(rho: rho)) }
        for eps in [15, 1e155, 1e308, .infinity, .nan, -1, 0] { bads.append(Self.quantile(epsilon: eps)) }   // e²/2 above 100, or overflowing
        bads.append(Self.quantile(epsilon: 0.5, rho: 0.1))   // both
        bads.append(Self.quantile())                         // neither
        bads.append(Self.quantile(rho: 1.5 / 1_073_741_824, q: [0.25, 0.75]))   // a share below 2^-30
        bads.append(Self.quantile(rho: 0.1, q: []))
        bads.append(Self.quantile(rho: 0.1, q: [1.5]))
        for q in bads {
            let e = #expect(throws: VaultError.self) { _ = try v.quantile(q) }
            #expect(e?.kind == .usage, "\(String(describing: e))")
            guard q.quantiles == [0.5] else { continue }   // the bad numbers, not the bad q's
            var b = Vault.BoundsRequest(purpose: "analytics", epsilon: q.epsilon, attribute: "age")
            b.rho = q.rho
            b.dryRun = true   // a dry run is refused for the same numbers
            let eb = #expect(throws: VaultError.self) { _ = try v.privateBounds(b) }
            #expect(eb?.kind == .usage, "\(String(describing: eb))")
        }
        #expect(try Self.spent(v) == 0)
        // --rho under an epsilon purpose: usage, nothing charged there either.
        var eps = Vault.QuantileRequest(purpose: "model_training", epsilon: nil, attribute: "age", quantiles: [0.5])
        eps.rho = 0.1
        #expect((#expect(throws: VaultError.self) { _ = try v.quantile(eps) })?.kind == .usage)
        #expect(try N.spent(v, "model_training") == 0)
        #expect(try N.okEntries(s, "query.quantile") == 0)
    }

    /// A release that fits exactly is granted; one unit (2^-30) more is refused, nothing charged.
    @Test func theBudgetIsExhaustedExactlyAtTheLimit() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var first = Self.quantile(rho: 0.375)
        first.fresh = true
        _ = try v.quantile(first)
        #expect(try Self.spent(v) == 0.375)
        var over = Self.quantile(rho: 0.125 + 1 / 1_073_741_824, q: [0.9])
        over.fresh = true
        let e = #expect(throws: VaultError.self) { _ = try v.quantile(over) }
        #expect(e?.kind == .denied && e?.message.contains("rho") == true && e?.message.contains("nothing was charged") == true)
        #expect(try Self.spent(v) == 0.375)
        var bounds = Vault.BoundsRequest(purpose: "analytics", epsilon: nil, attribute: "age")
        bounds.rho = 0.125 + 2 / 1_073_741_824
        #expect((#expect(throws: VaultError.self) { _ = try v.privateBounds(bounds) })?.kind == .denied)
        #expect(try Self.spent(v) == 0.375)
        // Exactly what is left (0.5 = 0.25 + 0.125 + ... : rho 0.125 over one quantile) is granted.
        var exact = Self.quantile(rho: 0.125, q: [0.9])
        exact.fresh = true
        _ = try v.quantile(exact)
        let st = try Z.state(v, "analytics")
        #expect(st.spent == 0.5 && st.left == 0)
        #expect(try N.okEntries(s, "query.quantile") == 2)
    }

    /// A dry run reads nothing, charges nothing, is audited as a quote and names rho and its
    /// (epsilon, delta) form; the real release then charges what was quoted.
    @Test func aDryRunChargesNothingAndQuotesRho() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var dry = Self.quantile(epsilon: 0.4, q: [0.1, 0.5, 0.9])
        dry.dryRun = true
        let quote = try v.quantile(dry)
        #expect(quote.dryRun && quote.values.isEmpty && quote.rho == Rho(0.08)!.split(3)!.times(3)!.value)
        #expect(abs(quote.epsilon - Rho.epsilon(rho: quote.rho ?? 0, delta: 1e-6)) < 1e-12 && quote.budget.zcdp)
        #expect(try Self.spent(v) == 0)
        let quotes = try DPSteeringTests.entries(s, "query.quantile.quote")
        #expect(quotes.count == 1 && (quotes[0]["status_detail"] as? String)?.contains("nothing charged") == true)
        #expect((quotes[0]["status_detail"] as? String)?.contains("rho") == true)
        var b = Vault.BoundsRequest(purpose: "analytics", epsilon: nil, attribute: "age")
        b.rho = 0.02
        b.dryRun = true
        let bq = try v.privateBounds(b)
        #expect(abs((bq.release.rho ?? 0) - 0.02) < 1e-8 && bq.bounds == nil)
        #expect(try Self.spent(v) == 0)
        dry.dryRun = false
        let real = try v.quantile(dry)
        #expect(try real.rho == quote.rho && Self.spent(v) == quote.rho)
        let j = try Self.object(JSONForms.quantile(real))
        #expect(j["rho_charged"] as? Double == real.rho && j["budget_unit"] as? String == "rho" && j["delta"] as? Double == 1e-6)
    }

    /// Pay once under zCDP: the same quantile again is answered from the release cache at rho 0
    /// and audited as a cached answer; another rho, or a change of the purpose's zCDP budget
    /// (rho or conversion delta), pays again.
    @Test func theReleaseCacheAnswersAtRhoZero() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        let first = try v.quantile(Self.quantile(rho: 0.05, q: [0.25, 0.75]))
        let again = try v.quantile(Self.quantile(rho: 0.05, q: [0.25, 0.75]))
        #expect(!first.cached && again.cached)
        #expect(again.values.map(\.values) == first.values.map(\.values))
        #expect(try Self.spent(v) == first.rho)
        let j = try Self.object(JSONForms.quantile(again))
        #expect((j["rho_charged"] as? NSNumber)?.doubleValue == 0 && (j["epsilon_charged"] as? NSNumber)?.doubleValue == 0 && j["cached"] as? Bool == true)
        let cachedEntries = try DPSteeringTests.entries(s, "query.quantile").filter { ($0["status_detail"] as? String)?.contains("answered from the release cache") == true }
        #expect(cachedEntries.count == 1)
        // Bounds: cached too, at rho 0.
        let b = Vault.BoundsRequest(purpose: "analytics", epsilon: 0.2, attribute: "age")
        let b1 = try v.privateBounds(b)
        let b2 = try v.privateBounds(b)
        #expect(!b1.release.cached && b2.release.cached && b1.bounds! == b2.bounds!)
        let spent = try Self.spent(v)
        #expect(abs(spent - ((first.rho ?? 0) + 0.02)) < 1e-8 && spent == (first.rho ?? 0) + (b1.release.rho ?? 0))
        // Another rho: another question, it pays.
        #expect(!(try v.quantile(Self.quantile(rho: 0.06, q: [0.25, 0.75])).cached))
        // A change of the purpose's conversion delta (same rho, same period): nothing older is found.
        let path = s.env["PROFILEVAULT_POLICY"]! + "/policy.yaml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "dp_budget: { rho: 0.5, period: 30d }", with: "dp_budget: { rho: 0.5, period: 30d, delta: 1e-7 }")
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        let w = try N.vault(s)
        let after = try w.quantile(Self.quantile(rho: 0.05, q: [0.25, 0.75]))
        #expect(!after.cached && after.conversionDelta == 1e-7)
        #expect(!(try w.privateBounds(b).release.cached))
    }

    /// The command line: --rho on quantile and bounds, the text names rho, JSON carries rho_charged.
    @Test func theCommandLineTakesRho() throws {
        let s = try Z.store()
        let r = try s.run(["query", "quantile", "--purpose", "analytics", "--attribute", "age", "--q", "0.5", "--rho", "0.02", "--role", "trainer"])
        #expect(r.status == 0 && r.stdout.contains("rho 0.02"), "\(r.stdout) \(r.stderr)")
        let j = try s.run(["query", "bounds", "--purpose", "analytics", "--attribute", "age", "--epsilon", "0.2", "--json", "--role", "trainer"])
        #expect(j.status == 0, "\(j.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        #expect(abs((o["rho"] as? Double ?? 0) - 0.02) < 1e-9 && abs((o["rho_charged"] as? Double ?? 0) - 0.02) < 1e-9 && o["budget_unit"] as? String == "rho")
        let bad = try s.run(["query", "quantile", "--purpose", "analytics", "--attribute", "age", "--q", "0.5", "--rho", "0", "--role", "trainer"])
        #expect(bad.status == 64, "\(bad.stderr)")
    }
}
