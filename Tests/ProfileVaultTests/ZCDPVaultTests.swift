import DifferentialPrivacy
import Foundation
@testable import ProfileVault
import Testing
import VaultStore

/// Issue 23 item 4 through the Vault: a zCDP purpose (`analytics` with `dp_budget.rho`) answers
/// count, sum, mean and histogram with the discrete Gaussian, charges rho on its own ledger row
/// and never past its limit, quotes and accuracy work under it, budget status shows rho and its
/// (epsilon, delta) form; regressions train under it with Gaussian noise; `train --dry-run`
/// quotes a job and charges nothing.
@Suite struct ZCDPVaultTests {
    typealias N = NumberAttackTests

    /// A store whose `analytics` purpose is zCDP (rho 0.5 per 30 days, shown at delta 1e-6) and
    /// may train regressions; `model_training` stays an epsilon purpose.
    static func store() throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "    dp_budget: { epsilon: 4.0, period: 30d }",
                                             with: "    models: [linear_regression, logistic_regression, kmeans]\n    dp_budget: { rho: 0.5, period: 30d }")
        try policy.write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = pol
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(40))]).status == 0)
        let ids = try s.write("ids.txt", (0..<40).map { "C\($0)" }.joined(separator: "\n"))
        for purpose in ["analytics", "model_training"] {
            #expect(try s.run(["consent", "grant", "--purpose", purpose, "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        }
        return s
    }

    static func state(_ v: Vault, _ purpose: String) throws -> BudgetState {
        try #require(try v.budgetStatus().first { $0.purpose == purpose })
    }

    @Test func zcdpQueriesChargeRhoAndNeverOverspend() throws {
        let s = try Self.store()
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        q.rho = 0.125
        let r = try v.query(q)
        #expect(r.rho == 0.125 && r.conversionDelta == 1e-6)
        #expect(abs(r.scale - 2) < 1e-9)   // sigma = 1 / sqrt(2 * 0.125)
        #expect(abs(r.epsilon - Rho.epsilon(rho: 0.125, delta: 1e-6)) < 1e-12)
        // --epsilon under zCDP spends epsilon²/2.
        var e = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 0.5, attribute: "age")
        e.bounds = (18, 100)
        #expect(try v.query(e).rho == 0.125)
        for kind in [QueryKind.mean, .histogram] {
            var m = Vault.QueryRequest(kind: kind, purpose: "analytics", epsilon: nil, attribute: kind == .mean ? "age" : "country")
            m.rho = 0.0625
            let res = try v.query(m)
            #expect(res.rho == 0.0625)
            if kind == .histogram { #expect(res.groups.count >= 2) } else { #expect(res.value != nil) }
        }
        var st = try Self.state(v, "analytics")
        #expect(st.zcdp && st.limit == 0.5 && st.spent == 0.375 && st.conversionDelta == 1e-6)
        #expect(abs(st.epsilonEquivalentLimit - (0.5 + 2 * (0.5 * log(1e6)).squareRoot())) < 1e-12)
        // Up to the limit exactly, then refused with nothing charged and nothing read (each a new
        // release: --fresh, else the release cache answers the same count at rho 0).
        q.rho = 0.125
        q.fresh = true
        _ = try v.query(q)
        let err = #expect(throws: VaultError.self) { _ = try v.query(q) }
        #expect(err?.kind == .denied && err?.message.contains("rho") == true, "\(String(describing: err))")
        st = try Self.state(v, "analytics")
        #expect(st.spent == 0.5 && st.left == 0)
        // The epsilon ledger of the purpose is untouched: rho lives on its own row.
        #expect(try v.store.budgetState(purpose: "analytics", limit: 4, periodSeconds: 30 * 86_400).spent == 0)
        // The audit entries of the charges say rho and carry no epsilon.
        let entries = try N.auditEntries(s).filter { $0["api.operation"] as? String == "query.count" && $0["status"] as? String == "ok" }
        #expect(entries.count == 2)
        #expect(entries.allSatisfy { ($0["status_detail"] as? String)?.contains("zcdp rho 0.125") == true && $0["epsilon"] == nil })
    }

    @Test func badRequestsAreRefusedBeforeTheCharge() throws {
        let s = try Self.store()
        let v = try N.vault(s)
        var bads: [Vault.QueryRequest] = []
        for rho in [0, -1, .nan, .infinity, 101, 1e-12] {
            var q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
            q.rho = rho
            bads.append(q)
        }
        var both = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 0.1)
        both.rho = 0.1
        bads.append(both)
        bads.append(Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 15))   // rho 112.5 > 100
        bads.append(Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil))
        var tiny = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: nil, attribute: "annual_income")
        tiny.rho = 1e-9   // sigma above 2^31 grid units
        bads.append(tiny)
        for q in bads {
            let e = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(e?.kind == .usage, "\(String(describing: e))")
        }
        #expect(try Self.state(v, "analytics").spent == 0)
        // --rho under an epsilon purpose: usage.
        var eps = Vault.QueryRequest(kind: .count, purpose: "model_training", epsilon: nil)
        eps.rho = 0.1
        #expect((#expect(throws: VaultError.self) { _ = try v.query(eps) })?.kind == .usage)
    }

    @Test func quotesAndAccuracyWorkUnderZCDP() throws {
        let s = try Self.store()
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: nil, attribute: "age")
        q.rho = 0.2
        q.dryRun = true
        let quote = try v.quoteQuery(q)
        #expect(quote.rho == Rho(0.2)?.value && quote.fits == true && quote.budget?.zcdp == true)
        // sigma = 100 / sqrt(0.4) (rho rounded down to 2^-30).
        #expect(abs(quote.scale - 100 / (2 * Rho(0.2)!.value).squareRoot()) < 1e-3)
        #expect(try Self.state(v, "analytics").spent == 0)
        #expect(try DPSteeringTests.entries(s, "query.sum.quote").count == 1)
        q.dryRun = false
        let r = try v.query(q)
        #expect(r.scale == quote.scale)
        // Accuracy: the least rho whose 95% half-width is at most 20; the quote names the same.
        var a = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        a.accuracy = 20
        var aq = a
        aq.dryRun = true
        let quoted = try v.quoteQuery(aq)
        let ra = try v.query(a)
        #expect(ra.rho == quoted.rho)
        let v0 = try #require(ra.value)
        #expect((v0.ci95.1 - v0.ci95.0) / 2 <= 20)
        // Asking beyond what is left: denied, nothing charged.
        let before = try Self.state(v, "analytics").spent
        var big = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        big.rho = 0.49
        #expect((#expect(throws: VaultError.self) { _ = try v.query(big) })?.kind == .denied)
        #expect(try Self.state(v, "analytics").spent == before)
    }

    static let regression = """
        job: zcdp-regression
        purpose: analytics
        model: linear_regression
        features: [age]
        target: annual_income
        epsilon: 0.6

        """

    @Test func regressionsTrainWithGaussianNoiseAndDryRunsChargeNothing() throws {
        let s = try Self.store()
        let v = try N.vault(s)
        let job = try s.write("job.yaml", Self.regression)
        // The quote: rho = 0.6²/2 = 0.18, per-release noise scales, nothing charged, audited.
        let quote = try v.quoteTrain(jobFile: job)
        #expect(abs((quote.rho ?? 0) - 0.18) < 1e-9 && quote.fits && quote.mechanism.contains("Gaussian"))
        #expect(!quote.releases.isEmpty && quote.releases.allSatisfy { !$0.scales.isEmpty })
        #expect(try Self.state(v, "analytics").spent == 0)
        #expect(try DPSteeringTests.entries(s, "train.quote").filter { $0["status"] as? String == "ok" }.count == 1)
        #expect(try N.okEntries(s, "train") == 0)
        // The job itself charges the quoted rho.
        let r = try v.train(jobFile: job)
        #expect(r.budget.zcdp && abs(r.budget.spent - Rho(0.18)!.value) < 1e-12)
        #expect(r.rho == Rho(0.18)?.value)
        #expect(r.artifact.privacy?.mechanism.contains("Gaussian") == true)
        // A Laplace-only model is refused under the zCDP purpose (denied), nothing charged.
        let km = try s.write("km.yaml", "job: km\npurpose: analytics\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2, iterations: 2 }\nepsilon: 0.5\n")
        #expect((#expect(throws: VaultError.self) { _ = try v.train(jobFile: km) })?.kind == .denied)
        #expect(abs(try Self.state(v, "analytics").spent - Rho(0.18)!.value) < 1e-12)
        // An epsilon purpose's quote names epsilon and charges nothing.
        let eq = try v.quoteTrain(jobFile: try s.write("e.yaml", Self.regression.replacingOccurrences(of: "purpose: analytics", with: "purpose: model_training")))
        #expect(eq.rho == nil && eq.epsilon == Epsilon(0.6)!.chargedValue)
        #expect(try N.spent(v, "model_training") == 0)
    }

    @Test func cliAndJSONShowRho() throws {
        let s = try Self.store()
        let r = try s.run(["query", "count", "--purpose", "analytics", "--rho", "0.1", "--json", "--role", "trainer"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(abs((j["rho"] as? Double ?? 0) - 0.1) < 1e-8 && j["budget_unit"] as? String == "rho" && (j["mechanism"] as? String)?.contains("Gaussian") == true)
        let b = try s.run(["budget", "status", "--json", "--role", "trainer"])
        let bj = try #require(try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any])
        let a = try #require((bj["purposes"] as? [String: Any])?["analytics"] as? [String: Any])
        #expect(a["accounting"] as? String == "zcdp" && abs((a["rho_spent"] as? Double ?? 0) - 0.1) < 1e-6 && a["conversion_delta"] as? Double == 1e-6)
        let dry = try s.run(["train", try s.write("job.yaml", Self.regression), "--dry-run", "--role", "trainer"])
        #expect(dry.status == 0 && dry.stdout.contains("rho 0.18"), "\(dry.stdout) \(dry.stderr)")
        // The job itself: its output names the rho charged and says the budget left is in rho.
        let t = try s.run(["train", try s.write("job2.yaml", Self.regression), "--out", s.dir + "/m.json", "--json", "--role", "trainer"])
        #expect(t.status == 0, "\(t.stderr)")
        let tj = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])
        #expect(abs((tj["rho_charged"] as? Double ?? 0) - 0.18) < 1e-9 && tj["budget_unit"] as? String == "rho")
        #expect(abs((tj["budget_left"] as? Double ?? 0) - (0.5 - 0.1 - 0.18)) < 1e-5, "\(t.stdout)")
        // Under an epsilon purpose: no rho, the unit is epsilon.
        let e = try s.run(["train", try s.write("job3.yaml", Self.regression.replacingOccurrences(of: "purpose: analytics", with: "purpose: model_training")),
                           "--out", s.dir + "/m2.json", "--json", "--role", "trainer"])
        let ej = try #require(try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as? [String: Any], "\(e.stderr)")
        #expect(ej["rho_charged"] == nil && ej["budget_unit"] as? String == "epsilon")
        // The audit report sums the rho charged (0.1 + 0.18), and free text that looks like a
        // charge (a consent source, an erasure reason) is not counted.
        let one = try s.write("one.txt", "C1")
        #expect(try s.run(["consent", "grant", "--purpose", "analytics", "--subjects", one, "--source", "web-form; zcdp rho 1000", "--role", "privacy_officer"]).status == 0)
        #expect(try s.run(["erase", "--subjects", try s.write("two.txt", "C2"), "--reason", "dsr; zcdp rho 77", "--role", "privacy_officer"]).status == 0)
        let rep = try s.run(["audit", "report", "--json", "--role", "auditor"])
        let rj = try #require(try JSONSerialization.jsonObject(with: Data(rep.stdout.utf8)) as? [String: Any], "\(rep.stderr)")
        let rho = try #require(rj["rho_by_purpose"] as? [String: Double])
        #expect(rho.keys.sorted() == ["analytics"] && abs((rho["analytics"] ?? 0) - 0.28) < 1e-6, "\(rho)")
    }
}
