import DifferentialPrivacy
import Foundation
@testable import ProfileVault
import Testing
import VaultStore

/// Issue 23 through the Vault and the CLI: dry runs charge nothing and are audited as quotes,
/// accuracy-first queries charge the least epsilon that reaches the accuracy (or nothing when it
/// does not fit), per-query bounds are checked against the schema and recorded.
@Suite struct DPSteeringTests {
    typealias N = NumberAttackTests

    static func entries(_ s: CLIStore, _ operation: String) throws -> [[String: Any]] {
        try N.auditEntries(s).filter { $0["api.operation"] as? String == operation }
    }

    @Test func aDryRunChargesNothingAndIsAuditedAsAQuote() throws {
        let s = try N.store()
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 0.3, attribute: "age")
        q.bounds = (20, 60)
        q.dryRun = true
        let quote = try v.quoteQuery(q)
        #expect(quote.epsilon == Epsilon(0.3)!.chargedValue && quote.delta == 0)
        #expect(quote.fits == true && quote.budget?.spent == 0)
        #expect(quote.clampBounds?.lower == 20 && quote.clampBounds?.upper == 60)
        // Noise scaled to the query's bounds: max(|20|, |60|) / 0.3.
        #expect(abs(quote.scale - 60 / Epsilon(0.3)!.noiseValue) < 1e-9)
        #expect(try N.spent(v, "analytics") == 0)
        // `query` refuses a request marked as a dry run rather than charging it.
        #expect(throws: VaultError.self) { _ = try v.query(q) }
        #expect(try N.spent(v, "analytics") == 0)
        let quotes = try Self.entries(s, "query.sum.quote")
        #expect(quotes.count == 1 && quotes.first?["status"] as? String == "ok")
        #expect((quotes.first?["status_detail"] as? String)?.contains("bounds [20, 60]") == true)
        #expect(try N.okEntries(s, "query.sum") == 0)
        // The real query charges exactly what was quoted, with the same scale.
        q.dryRun = false
        let r = try v.query(q)
        #expect(r.epsilon == quote.epsilon && r.scale == quote.scale)
        #expect(try N.spent(v, "analytics") == quote.epsilon)
        // A bad dry run is refused like the query (before anything), audited as a failed quote.
        var bad = q
        bad.dryRun = true
        bad.epsilon = .nan
        #expect(throws: VaultError.self) { _ = try v.quoteQuery(bad) }
        #expect(try Self.entries(s, "query.sum.quote").filter { $0["status"] as? String == "ok" }.count == 1)
    }

    @Test func accuracyChargesTheLeastEpsilonOrNothing() throws {
        let s = try N.store()
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: nil)
        q.accuracy = 20
        let r = try v.query(q)
        let v0 = try #require(r.value)
        #expect((v0.ci95.1 - v0.ci95.0) / 2 <= 20)
        #expect(try N.spent(v, "analytics") == r.epsilon)
        // The quote of the same accuracy names the same epsilon.
        var dry = q
        dry.dryRun = true
        #expect(try v.quoteQuery(dry).epsilon == r.epsilon)
        // An accuracy whose epsilon exceeds what is left (4.0): a sum of ages within +/-1 needs
        // epsilon ~300. Denied, nothing charged.
        let before = try N.spent(v, "analytics")
        var tight = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: nil, attribute: "age")
        tight.accuracy = 1
        let err = #expect(throws: VaultError.self) { _ = try v.query(tight) }
        #expect(err?.kind == .denied && err?.message.contains("nothing was charged") == true, "\(String(describing: err))")
        #expect(try N.spent(v, "analytics") == before)
        // Both or neither of --epsilon / --accuracy, and bad confidences: usage, nothing charged.
        var both = q; both.epsilon = 1
        var neither = q; neither.accuracy = nil
        var conf = q; conf.confidence = 1
        var conf2 = q; conf2.confidence = .nan
        var neg = q; neg.accuracy = -3
        for bad in [both, neither, conf, conf2, neg] {
            let e = #expect(throws: VaultError.self) { _ = try v.query(bad) }
            #expect(e?.kind == .usage)
        }
        #expect(try N.spent(v, "analytics") == before)
    }

    /// 1,000 consenting subjects: the first count release (epsilon 0.05, 95% half-width 60) finds
    /// at least 1 with probability 1 - 0.5 exp(-939/20) (a failure chance near 1e-21).
    @Test func anAccuracyFirstMeanSpendsACountThenTheMean() throws {
        let s = try CLIStore()
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(1000))]).status == 0)
        let ids = try s.write("ids.txt", (0..<1000).map { "C\($0)" }.joined(separator: "\n"))
        #expect(try s.run(["consent", "grant", "--purpose", "analytics", "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
        q.accuracy = 2
        let r = try v.query(q)
        #expect(r.accuracyCountEpsilon == Epsilon(Vault.meanAccuracyCountEpsilon)!.chargedValue)
        #expect(abs(try N.spent(v, "analytics") - r.epsilon) < 1e-12)
        #expect(r.epsilon > r.accuracyCountEpsilon!)
        // Two charges, two ok entries (the first says what it is).
        let ok = try Self.entries(s, "query.mean").filter { $0["status"] as? String == "ok" }
        #expect(ok.count == 2)
        #expect(ok.contains { ($0["status_detail"] as? String)?.contains("first count release") == true })
        // A mean cannot be quoted by accuracy (its epsilon depends on a noisy count).
        q.dryRun = true
        #expect(throws: VaultError.self) { _ = try v.quoteQuery(q) }
        // The reviewer's input: an accuracy no store could be promised (not even over 2^32
        // values at the largest epsilon) is refused before the first count: nothing charged.
        let spent = try N.spent(v, "analytics")
        for a in [1e-300, 5e-324, 1e-30] {
            var absurd = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: nil, attribute: "age")
            absurd.accuracy = a
            absurd.fresh = true
            let e = #expect(throws: VaultError.self) { _ = try v.query(absurd) }
            #expect(e?.kind == .usage && e?.message.contains("nothing was charged") == true, "\(a): \(String(describing: e))")
        }
        #expect(try N.spent(v, "analytics") == spent)
    }

    @Test func boundsMustLieInsideTheSchemasAndAreRecorded() throws {
        let s = try N.store()
        let v = try N.vault(s)
        for (attribute, events, lo, hi) in [("age", nil, 10.0, 50.0), ("age", nil, 20.0, 101.0), (nil, "points", -1.0, 5.0)] as [(String?, String?, Double, Double)] {
            var q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 0.5, attribute: attribute, events: events)
            q.bounds = (lo, hi)
            let err = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(err?.kind == .invalidInput, "\(String(describing: err))")
            #expect(err?.message.contains("--bounds") == true && err?.message.contains(attribute ?? "events.points") == true)
        }
        var count = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 0.5)
        count.bounds = (0, 1)
        #expect((#expect(throws: VaultError.self) { _ = try v.query(count) })?.kind == .usage)
        var inf = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 0.5, attribute: "age")
        inf.bounds = (18, .infinity)
        #expect((#expect(throws: VaultError.self) { _ = try v.query(inf) })?.kind == .usage)
        #expect(try N.spent(v, "analytics") == 0)
        // Inside: clamped to the query's bounds, its contribution bound is the query's.
        var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: 1, attribute: "age")
        q.bounds = (30, 40)
        let r = try v.query(q)
        #expect(r.clampBounds?.lower == 30 && r.clampBounds?.upper == 40 && r.boundsFromQuery)
        #expect(r.contributionBounds["coordinate_0"] == 5)
        let value = try #require(r.value)
        #expect(value.value >= 30 && value.value <= 40 && value.ci95.0 >= 30 && value.ci95.1 <= 40)
        #expect(r.clampedShare == nil)   // not measured
        let detail = try Self.entries(s, "query.mean").last?["status_detail"] as? String
        #expect(detail?.contains("bounds [30, 40]") == true, "\(String(describing: detail))")
    }

    @Test func theCLIQuotesAndAsksForAccuracy() throws {
        let s = try N.store()
        let dry = try s.run(["query", "sum", "--purpose", "analytics", "--epsilon", "0.5", "--attribute", "age", "--bounds", "20,60",
                             "--dry-run", "--json", "--role", "trainer"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.json?["dry_run"] as? Bool == true && dry.json?["epsilon"] as? Double == 0.5)
        #expect(dry.json?["interval_half_width"] as? Double != nil && dry.json?["fits"] as? Bool == true)
        let acc = try s.run(["query", "count", "--purpose", "analytics", "--accuracy", "25", "--confidence", "0.9", "--json", "--role", "trainer"])
        #expect(acc.status == 0, "\(acc.stderr)")
        #expect(acc.json?["confidence"] as? Double == 0.9 && acc.json?["cached"] as? Bool == false)
        #expect(acc.json?["clamped_share"] as? Double == 0)
        let interval = try #require(acc.json?["interval"] as? [Double])
        #expect((interval[1] - interval[0]) / 2 <= 25)
        let outside = try s.run(["query", "sum", "--purpose", "analytics", "--epsilon", "0.5", "--attribute", "age", "--bounds", "0,60", "--role", "trainer"])
        #expect(outside.status == 65 && outside.stderr.contains("--bounds"), "\(outside.stderr)")
        for bad in [["--bounds", "1"], ["--bounds", "a,b"], ["--bounds", "5,1"], ["--accuracy", "0"]] {
            let r = try s.run(["query", "sum", "--purpose", "analytics", "--epsilon", "0.5", "--attribute", "age", "--role", "trainer"] + bad)
            #expect(r.status == 64, "\(bad): \(r.status)")
        }
        let budget = try s.run(["budget", "status", "--json", "--role", "trainer"])
        let spent = (budget.json?["purposes"] as? [String: Any]).flatMap { $0["analytics"] as? [String: Any] }?["spent"] as? Double
        #expect(abs((spent ?? -1) - ((acc.json?["epsilon"] as? Double) ?? 0)) < 1e-6)
    }

    /// `query quantile`: charged once, values on the domain, the median where it must be at a
    /// large epsilon, refusals before the charge, dry run free and audited as a quote.
    @Test func quantilesThroughTheVaultAndTheCLI() throws {
        let s = try CLIStore()
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(1000))]).status == 0)
        let ids = try s.write("ids.txt", (0..<1000).map { "C\($0)" }.joined(separator: "\n"))
        #expect(try s.run(["consent", "grant", "--purpose", "analytics", "--subjects", ids, "--role", "privacy_officer"]).status == 0)
        let v = try N.vault(s)
        // Ages: 20 subjects at each of 30...79, so the median cell is 54 or 55 (score 10); every
        // other cell scores at least 30, relative weight at most e^(-3.5·20/2) = e^-35 each, 81
        // of them: a failure chance below 1e-13.
        let r = try v.quantile(Vault.QuantileRequest(purpose: "analytics", epsilon: 3.5, attribute: "age", quantiles: [0.5]))
        let values = try #require(r.values.first?.values)
        #expect(values.count == 1 && [54.0, 55.0].contains(values[0]), "\(values)")
        #expect(r.bins == 83 && r.binWidth == 1)
        #expect(try N.spent(v, "analytics") == 3.5)
        let ok = try Self.entries(s, "query.quantile").filter { $0["status"] as? String == "ok" }
        #expect(ok.count == 1 && (ok.first?["status_detail"] as? String)?.contains("q 0.5") == true)
        // Refusals: nothing charged.
        let bad: [Vault.QuantileRequest] = [
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: []),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: [1.5]),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: [.nan]),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 0x1p-20, attribute: "age", quantiles: [0.5, 0.9]),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: [0.5], bounds: (30, 30)),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "country", quantiles: [0.5]),
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: Array(repeating: 0.5, count: 21)),
            // Subnormal cells: their edges underflow, so a value could fall outside the bounds.
            Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "annual_income", quantiles: [0.5], bounds: (1e-310, 2e-310)),
        ]
        for b in bad {
            let e = #expect(throws: VaultError.self) { _ = try v.quantile(b) }
            #expect(e?.kind == .usage, "\(String(describing: e))")
        }
        let outside = #expect(throws: VaultError.self) {
            _ = try v.quantile(Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: [0.5], bounds: (0, 50)))
        }
        #expect(outside?.kind == .invalidInput)
        #expect(try N.spent(v, "analytics") == 3.5)
        // CLI: grouped, bounded, and a dry run.
        let grouped = try s.run(["query", "quantile", "--purpose", "analytics", "--epsilon", "0.2", "--attribute", "age", "--q", "0.5,0.9",
                                 "--group-by", "country", "--bounds", "20,80", "--json", "--role", "trainer"])
        #expect(grouped.status == 0, "\(grouped.stderr)")
        #expect((grouped.json?["groups"] as? [String: Any])?["DE"] != nil && grouped.json?["bounds_source"] as? String == "query")
        let dry = try s.run(["query", "quantile", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--q", "0.5",
                             "--dry-run", "--json", "--role", "trainer"])
        #expect(dry.status == 0 && dry.json?["dry_run"] as? Bool == true && dry.json?["quantiles"] == nil)
        #expect(try Self.entries(s, "query.quantile.quote").count == 1)
        #expect(abs(try N.spent(v, "analytics") - 3.7) < 1e-6)
        for q in ["1.5", "", "a", "0.5,"] {
            #expect(try s.run(["query", "quantile", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--q", q, "--role", "trainer"]).status == 64, "\(q)")
        }
    }
}
