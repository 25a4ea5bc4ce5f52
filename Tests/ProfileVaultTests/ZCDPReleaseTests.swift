import DifferentialPrivacy
import Foundation
@testable import ProfileVault
import Testing
import VaultStore

/// Issue 23 under a zCDP purpose: `--report-clamped` (three counts with the discrete Gaussian,
/// rho C²/2 added to the query's), the release cache (pay once: rho 0 for an identical query),
/// and accuracy-first means (a first noisy count, then the least rho).
@Suite struct ZCDPReleaseTests {
    typealias N = NumberAttackTests
    typealias Z = ZCDPVaultTests

    /// `ZCDPVaultTests.store()` with `rows` subjects (`analytics` zCDP, rho 0.5 per 30 days).
    static func store(rows: Int) throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let pol = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: pol + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "    dp_budget: { epsilon: 4.0, period: 30d }", with: "    dp_budget: { rho: 0.5, period: 30d }")
        try policy.write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = pol
        _ = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json"])
        #expect(try s.run(["init"]).status == 0)
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(rows))]).status == 0)
        let ids = try s.write("ids.txt", (0..<rows).map { "C\($0)" }.joined(separator: "\n"))
        #expect(try s.run(["consent", "grant", "--purpose", "analytics", "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        return s
    }

    static func spent(_ v: Vault) throws -> Double { try Z.state(v, "analytics").spent }
    static let unit = 1 / 1_073_741_824.0   // one rho unit, 2^-30

    static func sum(rho: Double?, clamped: Double? = nil) -> Vault.QueryRequest {
        var q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: nil, attribute: "age")
        q.rho = rho
        q.bounds = (30, 60)
        q.reportClamped = clamped
        return q
    }

    // MARK: - --report-clamped

    @Test func reportClampedAddsRhoAndIsReleasedWithTheGaussian() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        // rho 0.0625 for the sum, clamped epsilon 0.25: rho_c = 0.03125; one charge of 0.09375.
        var q = Self.sum(rho: 0.0625, clamped: 0.25)
        q.fresh = true
        let r = try v.query(q)
        #expect(r.rho == 0.09375 && abs(r.epsilon - Rho.epsilon(rho: 0.09375, delta: 1e-6)) < 1e-12)
        let c = try #require(r.clamped)
        #expect(c.rho == 0.03125 && c.epsilon == 0.25)
        #expect(c.share >= 0 && c.share <= 1 && c.shareInterval.0 <= c.share && c.share <= c.shareInterval.1)
        // 40 subjects, ages 30...69: 9 above 60, none below 30. Sigma of each count is
        // 1/sqrt(rho_c) = 5.66; the count's interval is wide but must be a real interval.
        #expect(c.countInterval.0 <= c.countInterval.1 && c.countInterval.1 > 0)
        #expect(try Self.spent(v) == 0.09375)
        let ok = try DPSteeringTests.entries(s, "query.sum").filter { $0["status"] as? String == "ok" }
        #expect(ok.count == 1)
        let detail = ok.first?["status_detail"] as? String ?? ""
        #expect(detail.contains("zcdp rho 0.09375") && detail.contains("clamped count rho 0.03125"), "\(detail)")
        let j = try ZCDPQuantileTests.object(JSONForms.query(r))
        #expect((j["clamped"] as? [String: Any])?["rho"] as? Double == 0.03125 && j["rho_charged"] as? Double == 0.09375)
        // The quote says the same total, charges nothing.
        var dry = q
        dry.dryRun = true
        #expect(try v.quoteQuery(dry).rho == 0.09375)
        #expect(try Self.spent(v) == 0.09375)
    }

    @Test func reportClampedRefusalsChargeNothing() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var bads: [Vault.QueryRequest] = []
        for c in [0, -1, .nan, .infinity, 1e308, 1e155, 15, 1e-6] { bads.append(Self.sum(rho: 0.1, clamped: c)) }   // out of range, overflowing, a half below 2^-30
        bads.append(Self.sum(rho: 99, clamped: 2))   // 99 + 2 > 100
        var noBounds = Self.sum(rho: 0.1, clamped: 0.1)
        noBounds.bounds = nil
        bads.append(noBounds)
        var grouped = Self.sum(rho: 0.1, clamped: 0.1)
        grouped.groupBy = "country"
        bads.append(grouped)
        var count = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        count.rho = 0.1
        count.reportClamped = 0.1
        bads.append(count)
        var accMean = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        accMean.accuracy = 5
        accMean.bounds = (30, 60)
        accMean.reportClamped = 0.1
        bads.append(accMean)
        for q in bads {
            let e = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(e?.kind == .usage, "\(String(describing: e))")
            var dry = q
            dry.dryRun = true
            let d = #expect(throws: VaultError.self) { _ = try v.quoteQuery(dry) }
            #expect(d?.kind == .usage, "\(String(describing: d))")
        }
        #expect(try Self.spent(v) == 0)
        #expect(try N.okEntries(s, "query.sum") + N.okEntries(s, "query.mean") == 0)
    }

    /// The query's rho plus the clamped counts' rho exactly at the limit is granted; one unit more is refused.
    @Test func reportClampedExhaustsTheBudgetExactly() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var first = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        first.rho = 0.40625   // 0.5 - 0.09375
        _ = try v.query(first)
        let over = Self.sum(rho: 0.0625 + Self.unit, clamped: 0.25)
        let e = #expect(throws: VaultError.self) { _ = try v.query(over) }
        #expect(e?.kind == .denied && e?.message.contains("nothing was charged") == true, "\(String(describing: e))")
        #expect(try Self.spent(v) == 0.40625)
        _ = try v.query(Self.sum(rho: 0.0625, clamped: 0.25))
        let st = try Z.state(v, "analytics")
        #expect(st.spent == 0.5 && st.left == 0)
    }

    // MARK: - The release cache

    @Test func anIdenticalQueryIsAnsweredAtRhoZero() throws {
        let s = try Z.store()
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        q.rho = 0.1
        let a = try v.query(q)
        let b = try v.query(q)
        #expect(!a.cached && b.cached && b.value?.value == a.value?.value && b.rho == a.rho && b.conversionDelta == 1e-6)
        #expect(try Self.spent(v) == Rho(0.1)!.value)
        let j = try ZCDPQuantileTests.object(JSONForms.query(b))
        #expect((j["rho_charged"] as? NSNumber)?.doubleValue == 0 && (j["epsilon_charged"] as? NSNumber)?.doubleValue == 0 && j["budget_unit"] as? String == "rho")
        #expect(j["cached"] as? Bool == true && j["released_at"] != nil)
        // Audited like the epsilon path's cached answers: the query's action, charged 0, epsilon 0.
        let cached = try DPSteeringTests.entries(s, "query.count").filter { ($0["status_detail"] as? String)?.contains("answered from the release cache") == true }
        #expect(cached.count == 1 && cached.first?["unmapped.epsilon"] as? String == "0.0")
        // --epsilon E asks rho E²/2: the same rho as charged, the same question.
        var e = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 0.5)
        let e1 = try v.query(e)
        e.epsilon = nil
        e.rho = 0.125
        #expect(try !e1.cached && v.query(e).cached)
        // A dry run of a cached query quotes rho 0 and is audited as a quote.
        var dry = q
        dry.dryRun = true
        let quote = try v.quoteQuery(dry)
        #expect(quote.cached)
        let qj = try ZCDPQuantileTests.object(JSONForms.queryQuote(quote))
        #expect((qj["rho_charged"] as? NSNumber)?.doubleValue == 0 && qj["fits"] as? Bool == true)
        #expect(try DPSteeringTests.entries(s, "query.count.quote").contains { ($0["status_detail"] as? String)?.contains("rho 0 quoted") == true })
        // Another rho, --fresh: they pay.
        let before = try Self.spent(v)
        q.rho = 0.05
        #expect(!(try v.query(q)).cached)
        q.fresh = true
        #expect(!(try v.query(q)).cached)
        #expect(abs(try Self.spent(v) - before - 2 * Rho(0.05)!.value) < 1e-15)
        // A clamped report is cached with its rho.
        let c1 = try v.query(Self.sum(rho: 0.01, clamped: 0.1))
        let c2 = try v.query(Self.sum(rho: 0.01, clamped: 0.1))
        #expect(c2.cached && c2.clamped == c1.clamped && c2.clamped?.rho == c1.clamped?.rho && c2.rho == c1.rho)
        #expect(!(try v.query(Self.sum(rho: 0.01, clamped: 0.2))).cached)   // another clamped rho: another question
    }

    /// A change of the purpose's zCDP budget (rho limit, conversion delta) never finds an older release.
    @Test func aZCDPBudgetChangeInvalidates() throws {
        let s = try Z.store()
        var q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        q.rho = 0.1
        _ = try N.vault(s).query(q)
        #expect(try N.vault(s).query(q).cached)
        let path = s.env["PROFILEVAULT_POLICY"]! + "/policy.yaml"
        for (from, to) in [("dp_budget: { rho: 0.5, period: 30d }", "dp_budget: { rho: 0.6, period: 30d }"),
                           ("dp_budget: { rho: 0.6, period: 30d }", "dp_budget: { rho: 0.6, period: 30d, delta: 1e-8 }")] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.contains(from))
            try text.replacingOccurrences(of: from, with: to).write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
            let w = try N.vault(s)
            #expect(!(try w.query(q).cached))
            #expect(try w.query(q).cached)
        }
    }

    // MARK: - Accuracy-first mean

    /// 400 subjects: the first count (sigma 20, 95% half-width about 40) is below 1 only when its
    /// noise is below -359, about 18 sigma: never in practice.
    @Test func anAccuracyFirstMeanSpendsACountThenTheLeastRho() throws {
        let s = try Self.store(rows: 400)
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        q.accuracy = 2
        let r = try v.query(q)
        let first = Rho(fromEpsilon: Vault.meanAccuracyCountEpsilon)!.value
        #expect(r.accuracyCountRho == first && (r.rho ?? 0) > first)
        #expect(try Self.spent(v) == r.rho)
        #expect(abs(r.epsilon - Rho.epsilon(rho: r.rho ?? 0, delta: 1e-6)) < 1e-12)
        let v0 = try #require(r.value)
        #expect(v0.value >= 18 && v0.value <= 100 && v0.ci95.0 <= v0.ci95.1)
        // Two charges, two ok entries, both in rho (the first says what it is).
        let ok = try DPSteeringTests.entries(s, "query.mean").filter { $0["status"] as? String == "ok" }
        #expect(ok.count == 2 && ok.allSatisfy { ($0["status_detail"] as? String)?.contains("zcdp rho") == true })
        #expect(ok.contains { ($0["status_detail"] as? String)?.contains("first count release") == true })
        let j = try ZCDPQuantileTests.object(JSONForms.query(r))
        #expect(abs((j["accuracy_count_rho"] as? Double ?? 0) - first) < 1e-15 && j["accuracy"] as? Double == 2, "\(j)")
        // The same question again: the release cache, nothing charged (not even the count).
        let again = try v.query(q)
        #expect(try again.cached && again.value?.value == r.value?.value && Self.spent(v) == r.rho)
        // A mean cannot be quoted by accuracy.
        var dry = q
        dry.dryRun = true
        #expect((#expect(throws: VaultError.self) { _ = try v.quoteQuery(dry) })?.kind == .usage)
        #expect(try Self.spent(v) == r.rho)
    }

    @Test func accuracyFirstMeanRefusals() throws {
        let s = try Self.store(rows: 400)
        let v = try N.vault(s)
        // Absurd accuracies: usage, nothing charged.
        for a: Double in [0, -1, .nan, .infinity, -.infinity] {
            var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
            q.accuracy = a
            let e = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(e?.kind == .usage, "\(a): \(String(describing: e))")
        }
        var both = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        both.accuracy = 2
        both.rho = 0.1
        #expect((#expect(throws: VaultError.self) { _ = try v.query(both) })?.kind == .usage)
        #expect(try Self.spent(v) == 0)
        // The reviewer's input: an accuracy no store could be promised (not even over 2^32
        // values at rho 100) is refused before the first count, nothing charged.
        for a in [1e-9, 1e-300, 5e-324] {
            var absurd = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
            absurd.accuracy = a
            absurd.fresh = true
            let e = #expect(throws: VaultError.self) { _ = try v.query(absurd) }
            #expect(e?.kind == .usage && e?.message.contains("nothing was charged") == true, "\(a): \(String(describing: e))")
        }
        #expect(try Self.spent(v) == 0)
        // Reachable over many values but not over this store's: exit 65 after the first count
        // (charged, as on the epsilon path).
        var tight = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        tight.accuracy = 1e-6
        tight.fresh = true
        let t = #expect(throws: VaultError.self) { _ = try v.query(tight) }
        #expect(t?.kind == .invalidInput && t?.message.contains("charged") == true, "\(String(describing: t))")
        let first = Rho(fromEpsilon: Vault.meanAccuracyCountEpsilon)!.value
        #expect(try Self.spent(v) == first)
        // Too little left for the first count: denied, nothing charged.
        var fill = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        fill.rho = 0.5 - first - first / 2
        _ = try v.query(fill)
        let before = try Self.spent(v)
        var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        q.accuracy = 2
        let e = #expect(throws: VaultError.self) { _ = try v.query(q) }
        #expect(e?.kind == .denied && e?.message.contains("nothing was charged") == true, "\(String(describing: e))")
        #expect(try Self.spent(v) == before)
    }
}
