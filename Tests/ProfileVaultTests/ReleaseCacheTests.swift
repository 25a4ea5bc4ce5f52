import DifferentialPrivacy
import Foundation
@testable import ProfileVault
import Testing
import VaultCrypto
@testable import VaultStore

/// Pay once (issue 23): an identical query of the same period is answered from the sealed
/// release cache at no cost, audited; anything different, tampered, of another purpose or of
/// another period pays. The budget ledger is read to tell.
@Suite struct ReleaseCacheTests {
    typealias N = NumberAttackTests

    static func entries(_ s: CLIStore, _ operation: String) throws -> [[String: Any]] {
        try N.auditEntries(s).filter { $0["api.operation"] as? String == operation && $0["status"] as? String == "ok" }
    }

    static func sum(_ whereClause: String? = "age>=30,age<60", bounds: (Double, Double)? = (20, 60), epsilon: Double = 0.25) -> Vault.QueryRequest {
        var q = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: epsilon, attribute: "age", whereClause: whereClause)
        q.bounds = bounds.map { (lower: $0.0, upper: $0.1) }
        return q
    }

    /// Runs the SQL on the store's file behind the vault's back (a file-level attacker).
    static func edit(_ s: CLIStore, _ sql: String) throws {
        let files = try Vault.loadPolicyFiles(directory: s.env["PROFILEVAULT_POLICY"]!)
        let store = try ProfileStore.open(path: s.env["PROFILEVAULT_STORE"]!, keyring: try Keyring.load(path: s.env["PROFILEVAULT_KEYS"]!),
                                          schema: files.schema)
        defer { try? store.close() }
        try store.pool.write { db in try db.execute(sql: sql) }
    }

    @Test func twoIdenticalQueriesChargeOnce() throws {
        let s = try N.store()
        let v = try N.vault(s)
        let first = try v.query(Self.sum())
        let spent = try N.spent(v, "analytics")
        #expect(!first.cached && spent == first.epsilon)
        // The same query, its conditions in another order and one repeated: the stored release.
        let again = try v.query(Self.sum("age<60, age>=30,age<60"))
        #expect(again.cached && again.releasedAtMillis != nil)
        #expect(again.value == first.value && again.scale == first.scale && again.epsilon == first.epsilon)
        #expect(try N.spent(v, "analytics") == spent)
        #expect(again.budget.spent == spent)
        // Audited like any read: two ok entries, the second charged 0 and saying so.
        let ok = try Self.entries(s, "query.sum")
        #expect(ok.count == 2)
        let cachedEntry = try #require(ok.last)
        #expect((cachedEntry["status_detail"] as? String)?.contains("answered from the release cache") == true)
        #expect((cachedEntry["status_detail"] as? String)?.contains("charged 0") == true)
        #expect(cachedEntry["unmapped.epsilon"] as? String == "0.0")
        // Another actor of the same purpose gets the same release (the purpose's budget paid for it).
        let other = try Vault.open(VaultConfiguration(storePath: s.env["PROFILEVAULT_STORE"]!, keysPath: s.env["PROFILEVAULT_KEYS"]!,
                                                      policyDirectory: s.env["PROFILEVAULT_POLICY"]!, actor: Actor(name: "u", role: "trainer")))
        let shared = try other.query(Self.sum())
        #expect(shared.cached && shared.value == first.value)
        #expect(try N.spent(v, "analytics") == spent)
        // A dry run says it would be answered from the cache at cost 0, audited as a quote.
        var dry = Self.sum()
        dry.dryRun = true
        let quote = try v.quoteQuery(dry)
        #expect(quote.cached && quote.fits == true)
        let json = JSONForms.queryQuote(quote)
        #expect(json["cached"] == .bool(true) && json["epsilon_charged"] == .double(0))
        #expect(try N.spent(v, "analytics") == spent)
        // --fresh pays for a new release on purpose.
        var fresh = Self.sum()
        fresh.fresh = true
        let paid = try v.query(fresh)
        #expect(try !paid.cached && abs(N.spent(v, "analytics") - 2 * spent) < 1e-12)
        #expect(JSONForms.query(paid)["cached"] == .bool(false))
        #expect(JSONForms.query(try v.query(Self.sum()))["cached"] == .bool(true))
    }

    @Test func aSlightlyDifferentQueryPays() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        var variants: [Vault.QueryRequest] = [
            Self.sum("age>=31,age<60"), Self.sum("age>=30,age<=60"), Self.sum("age>=30"), Self.sum(nil),
            Self.sum(bounds: (20, 61)), Self.sum(bounds: (21, 60)), Self.sum(bounds: nil), Self.sum(epsilon: 0.2501),
        ]
        var grouped = Self.sum(); grouped.groupBy = "country"; variants.append(grouped)
        var mean = Self.sum(); mean.kind = .mean; variants.append(mean)
        var conf = Self.sum(); conf.confidence = 0.9; variants.append(conf)
        var acc = Self.sum(); acc.epsilon = nil; acc.accuracy = 5000; variants.append(acc)
        for (i, q) in variants.enumerated() {
            let before = try N.spent(v, "analytics")
            let r = try v.query(q)
            #expect(!r.cached, "variant \(i) served from the cache")
            #expect(try N.spent(v, "analytics") > before, "variant \(i) not charged")
        }
        // Each variant, asked again, is now its own cached release.
        #expect(try v.query(Self.sum(bounds: (20, 61))).cached)
    }

    /// The review's finding: a clamped report (and its epsilon) is part of the question, so the
    /// same sum with --report-clamped, or with another clamped epsilon, pays and carries it.
    @Test func aClampedReportIsPartOfTheQuestion() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        var clamped = Self.sum()
        clamped.reportClamped = 0.3
        let r = try v.query(clamped)
        #expect(!r.cached && r.clamped != nil)
        var other = Self.sum()
        other.reportClamped = 0.01
        let r2 = try v.query(other)
        #expect(!r2.cached && r2.clamped != nil)
        let again = try v.query(clamped)
        #expect(again.cached && again.clamped != nil)
        #expect(try v.query(Self.sum()).cached)
    }

    @Test func anotherPurposeNeverSeesTheRelease() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        var q = Self.sum()
        q.purpose = "model_training"
        let r = try v.query(q)
        #expect(!r.cached)
        #expect(try N.spent(v, "model_training") == r.epsilon)
    }

    @Test func aTamperedReleaseIsRefusedAndNotChargedAgain() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        _ = try v.query(Self.sum("age>=40"))
        let spent = try N.spent(v, "analytics")
        let ok = try Self.entries(s, "query.sum").count
        // Swapped releases (each a genuine one, under the other's digest).
        try Self.edit(s, """
            CREATE TEMP TABLE swap AS SELECT digest, sealed FROM release_cache;
            UPDATE release_cache SET sealed = (SELECT swap.sealed FROM swap WHERE swap.digest <> release_cache.digest);
            DROP TABLE swap;
            """)
        for q in [Self.sum(), Self.sum("age>=40")] {
            let e = #expect(throws: VaultError.self) { _ = try v.query(q) }
            #expect(e?.kind == .integrity, "\(String(describing: e))")
            var dry = q
            dry.dryRun = true
            #expect((#expect(throws: VaultError.self) { _ = try v.quoteQuery(dry) })?.kind == .integrity)
        }
        #expect(try N.spent(v, "analytics") == spent)
        #expect(try Self.entries(s, "query.sum").count == ok)
        // The refusals are audited (outcome error).
        let refused = try N.auditEntries(s).filter { $0["api.operation"] as? String == "query.sum" && $0["status"] as? String != "ok" }
        #expect(refused.count == 2)
        // An edited tag, and a release moved to the current window from another: refused too.
        _ = try v.query({ var q = Self.sum(); q.fresh = true; return q }())
        try Self.edit(s, "UPDATE release_cache SET sealed = substr(sealed, 1, length(sealed) - 1) || x'00'")
        #expect((#expect(throws: VaultError.self) { _ = try v.query(Self.sum()) })?.kind == .integrity)
        _ = try v.query({ var q = Self.sum(); q.fresh = true; return q }())
        try Self.edit(s, "UPDATE release_cache SET created_at = created_at + 1")
        #expect((#expect(throws: VaultError.self) { _ = try v.query(Self.sum()) })?.kind == .integrity)
    }

    /// The next budget period: the store's windows count from `meta.created_at`; moved 45 days
    /// back, the current window starts 15 days before the release's, which is then not served.
    @Test func theNextPeriodPaysAgain() throws {
        let s = try N.store()
        let v = try N.vault(s)
        let first = try v.query(Self.sum())
        #expect(try v.query(Self.sum()).cached)
        try Self.edit(s, "UPDATE meta SET value = CAST(value AS INTEGER) - 45 * 86400 WHERE key = 'created_at'")
        let before = try N.spent(v, "analytics")
        let next = try v.query(Self.sum())
        #expect(!next.cached)
        #expect(abs(try N.spent(v, "analytics") - before - first.epsilon) < 1e-12)
        #expect(try v.query(Self.sum()).cached)
    }

    /// Opens the store's file behind the vault's back (a file-level attacker, or the test's
    /// view of the population epoch).
    static func withStore<T>(_ s: CLIStore, _ body: (ProfileStore) throws -> T) throws -> T {
        let files = try Vault.loadPolicyFiles(directory: s.env["PROFILEVAULT_POLICY"]!)
        let store = try ProfileStore.open(path: s.env["PROFILEVAULT_STORE"]!, keyring: try Keyring.load(path: s.env["PROFILEVAULT_KEYS"]!),
                                          schema: files.schema)
        defer { try? store.close() }
        return try body(store)
    }

    static func epoch(_ s: CLIStore) throws -> Int64? { try withStore(s) { try $0.populationEpoch() } }

    /// The race (issue 23's population gap): a query misses at epoch e, an erasure commits (in
    /// another process) while its release is computed, and the release is stored after the
    /// erasure: nothing is stored (the epoch moved), and the same query asked next pays and is
    /// computed from the new population. Interleaved with the vault's own steps, no sleeps.
    @Test func aReleaseComputedAcrossAnErasureIsNotStored() throws {
        let s = try N.store()
        let v = try N.vault(s)
        // A genuine release to store (another query's): what was computed does not matter,
        // only that the store comes after the change.
        let other = try v.query(Self.sum("age>=40"))
        let payload = try #require(StoredQueryRelease(other, clamped: nil).encoded())
        let q = Self.sum()
        let prepared = try v.prepareQuery(q)
        let (slot, decision) = try v.lookupRelease(v.releaseKey(q, prepared), prepared: prepared, fresh: false)
        guard case .miss = decision else { Issue.record("an unasked query was found in the cache"); return }
        let current = try Self.epoch(s)
        #expect(slot.epoch != nil && slot.epoch == current)
        #expect(try s.run(["erase", "--subject", "C3", "--role", "privacy_officer"]).status == 0)
        let moved = try Self.epoch(s)
        #expect(moved != slot.epoch)
        v.rememberRelease(payload, slot: slot, prepared: prepared, periodStart: other.budget.periodStart)
        if case .hit = try v.lookupRelease(v.releaseKey(q, prepared), prepared: prepared, fresh: false).decision {
            Issue.record("a release computed across an erasure was stored")
        }
        let before = try N.spent(v, "analytics")
        let paid = try v.query(q)
        #expect(!paid.cached)
        #expect(try N.spent(v, "analytics") > before)
        // Stored now, at the epoch it was computed at.
        #expect(try v.query(q).cached)
        // The same with a consent revocation, and with --fresh (which reads the epoch first too).
        var fresh = q
        fresh.fresh = true
        let (freshSlot, _) = try v.lookupRelease(v.releaseKey(fresh, prepared), prepared: prepared, fresh: true)
        #expect(freshSlot.epoch != nil)
        #expect(try s.run(["consent", "revoke", "--purpose", "analytics", "--subject", "C4", "--role", "privacy_officer"]).status == 0)
        v.rememberRelease(payload, slot: freshSlot, prepared: prepared, periodStart: other.budget.periodStart)
        #expect(!(try v.query(q).cached))
    }

    /// The replay: a file-level attacker (no keyring) saves the genuine sealed row of a cached
    /// query, an erasure runs, and puts the row back: it is not served (its epoch is old), the
    /// query pays again. With its epoch column set to the current epoch it does not open: an
    /// integrity error (exit 1 from the CLI), nothing charged.
    @Test func aRowSavedBeforeAnErasureAndPutBackIsNotServed() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        #expect(try v.query(Self.sum()).cached)
        // The attacker's copy of the row, kept in a table of its own in the file.
        try Self.edit(s, "CREATE TABLE saved_rows AS SELECT * FROM release_cache")
        #expect(try s.run(["erase", "--subject", "C3", "--role", "privacy_officer"]).status == 0)
        func putBack(currentEpoch: Bool) throws {
            try Self.edit(s, "INSERT OR REPLACE INTO release_cache SELECT * FROM saved_rows")
            if currentEpoch { try Self.edit(s, "UPDATE release_cache SET epoch = (SELECT epoch FROM population_epoch)") }
        }
        try putBack(currentEpoch: false)
        let before = try N.spent(v, "analytics")
        let again = try v.query(Self.sum())
        #expect(!again.cached)
        #expect(try N.spent(v, "analytics") > before)
        // Its epoch column moved to the current epoch: it does not open, nothing is charged.
        try putBack(currentEpoch: true)
        let spent = try N.spent(v, "analytics")
        #expect((#expect(throws: VaultError.self) { _ = try v.query(Self.sum()) })?.kind == .integrity)
        let cli = try s.run(["query", "sum", "--purpose", "analytics", "--epsilon", "0.25", "--attribute", "age", "--bounds", "20,60",
                             "--where", "age>=30,age<60", "--role", "trainer"])
        #expect(cli.status == 1, "\(cli.stdout)\(cli.stderr)")
        #expect(try N.spent(v, "analytics") == spent)
    }

    /// A data scientist ingests a new month and asks the same count: not the old count. Ingest
    /// of profiles and of events, a consent import and a rectification each move the epoch.
    @Test func ingestAndRectificationInvalidate() throws {
        let s = try N.store()
        let v = try N.vault(s)
        let count = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 0.25)
        _ = try v.query(count)
        #expect(try v.query(count).cached)
        #expect(try s.run(["ingest", "profiles", s.write("p2.csv", CLIStore.rows(45))]).status == 0)
        #expect(!(try v.query(count).cached))
        #expect(try v.query(count).cached)
        #expect(try s.run(["ingest", "events", s.write("e2.csv", "customer_id,kind,item,value,time\nC1,purchase,SKU-99,9.5,2026-11-01T12:00:00Z\n")]).status == 0)
        #expect(!(try v.query(count).cached))
        #expect(try v.query(count).cached)
        let r = try s.run(["rectify", "--subject", "C2", "--set", "age=77", "--role", "privacy_officer"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!(try v.query(count).cached))
        #expect(try v.query(count).cached)
        let imp = try s.run(["consent", "import", s.write("ci.csv", "customer_id,purpose,granted,time,source\nC40,analytics,true,2026-11-02T00:00:00Z,web\n"),
                             "--role", "privacy_officer"])
        #expect(imp.status == 0, "\(imp.stderr)")
        #expect(!(try v.query(count).cached))
        #expect(try v.query(count).cached)
        // An ingest that changes nothing (the same file again) leaves the epoch as it was.
        let e = try Self.epoch(s)
        #expect(try s.run(["ingest", "profiles", s.dir + "/p2.csv"]).status == 0)
        #expect(try Self.epoch(s) == e)
        #expect(try v.query(count).cached)
    }

    /// Reads do not move the epoch: a cached query stays cached after a get, an audit export,
    /// a consent status, a budget status and a dry run.
    @Test func readsDoNotInvalidate() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        let e = try Self.epoch(s)
        #expect(try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"]).status == 0)
        _ = try N.auditEntries(s)
        _ = try v.budgetStatus()
        var dry = Self.sum("age>=41")
        dry.dryRun = true
        _ = try v.quoteQuery(dry)
        #expect(try Self.epoch(s) == e)
        #expect(try v.query(Self.sum()).cached)
    }

    /// Erasure (and any change of who may be counted) moves the epoch: the query pays again.
    @Test func erasureAndConsentEmptyTheCache() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        #expect(try s.run(["erase", "--subject", "C3", "--role", "privacy_officer"]).status == 0)
        #expect(!(try v.query(Self.sum()).cached))
        #expect(try v.query(Self.sum()).cached)
        #expect(try s.run(["consent", "revoke", "--purpose", "analytics", "--subject", "C4", "--role", "privacy_officer"]).status == 0)
        #expect(!(try v.query(Self.sum()).cached))
    }

    /// A policy change of the purpose's budget: the digest covers the budget, so nothing older is found.
    @Test func aBudgetChangeInvalidates() throws {
        let s = try N.store()
        let v = try N.vault(s)
        _ = try v.query(Self.sum())
        let path = s.env["PROFILEVAULT_POLICY"]! + "/policy.yaml"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "dp_budget: { epsilon: 4.0, period: 30d }", with: "dp_budget: { epsilon: 5.0, period: 30d }")
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        let w = try N.vault(s)
        #expect(!(try w.query(Self.sum()).cached))
        #expect(try w.query(Self.sum()).cached)
    }

    @Test func quantilesAndBoundsAreCachedToo() throws {
        let s = try N.store()
        let v = try N.vault(s)
        let q = Vault.QuantileRequest(purpose: "analytics", epsilon: 0.5, attribute: "age", quantiles: [0.5])
        let first = try v.quantile(q)
        let spent = try N.spent(v, "analytics")
        let again = try v.quantile(q)
        #expect(again.cached && !first.cached && again.values.first?.values == first.values.first?.values)
        #expect(try N.spent(v, "analytics") == spent)
        #expect(JSONForms.quantile(again)["cached"] == .bool(true))
        var other = q
        other.quantiles = [0.6]
        #expect(!(try v.quantile(other).cached))
        // query bounds: a range inside the schema's, charged once, cached after.
        let b = try v.privateBounds(Vault.BoundsRequest(purpose: "analytics", epsilon: 1, attribute: "age"))
        let range = try #require(b.bounds)
        #expect(range.lower >= 18 && range.upper <= 100 && range.lower <= range.upper && !b.release.cached)
        let b2 = try v.privateBounds(Vault.BoundsRequest(purpose: "analytics", epsilon: 1, attribute: "age"))
        #expect(b2.release.cached && b2.bounds?.lower == range.lower && b2.bounds?.upper == range.upper)
        // A quantile query of the same two q's at the same epsilon is another question (its
        // own action, audited as such): it pays, and is not answered from the bounds release.
        let sameQs = try v.quantile(Vault.QuantileRequest(purpose: "analytics", epsilon: 1, attribute: "age", quantiles: [0.05, 0.95]))
        #expect(!sameQs.cached)
    }

    /// The CLI: `--json` says cached and charged 0, the text says so, `--dry-run` says it would be
    /// answered from the cache at cost 0; `query bounds` prints a `--bounds` to use;
    /// `--report-clamped` prints the clamped count and share, and is refused without `--bounds`.
    @Test func theCommandLineSaysCachedAndCost0() throws {
        let s = try N.store()
        let q = ["query", "sum", "--purpose", "analytics", "--epsilon", "0.5", "--attribute", "age", "--bounds", "20,60", "--role", "trainer"]
        let first = try s.run(q + ["--json"])
        #expect(first.status == 0 && first.json?["cached"] as? Bool == false, "\(first.stdout)")
        let again = try s.run(q + ["--json"])
        #expect(again.json?["cached"] as? Bool == true && again.json?["epsilon_charged"] as? Double == 0, "\(again.stdout)")
        #expect(try s.run(q).stdout.contains("answered from the release cache"))
        let dry = try s.run(q + ["--dry-run"])
        #expect(dry.stdout.contains("would be answered from the release cache at cost 0"), "\(dry.stdout)")
        let b = try s.run(["query", "bounds", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--role", "trainer"])
        #expect(b.status == 0 && b.stdout.hasPrefix("--bounds "), "\(b.stdout)")
        #expect(try s.run(["query", "bounds", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--low", "0.9", "--high", "0.1",
                           "--role", "trainer"]).status == 64)
        let v = try N.vault(s)
        let before = try N.spent(v, "analytics")
        let c = try s.run(["query", "mean", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--bounds", "30,40",
                           "--report-clamped", "--clamped-epsilon", "0.3", "--role", "trainer", "--json"])
        #expect(c.status == 0 && c.json?["clamped"] as? [String: Any] != nil, "\(c.stdout)")
        #expect(abs(try N.spent(v, "analytics") - before - 1.3) < 1e-5)   // 0.3 is charged rounded down to 2^-20
        #expect(try s.run(["query", "mean", "--purpose", "analytics", "--epsilon", "1", "--attribute", "age", "--report-clamped",
                           "--role", "trainer"]).status == 64)
        #expect(try s.run(["query", "count", "--purpose", "analytics", "--epsilon", "1", "--clamped-epsilon", "0.3",
                           "--role", "trainer"]).status == 64)
    }

    /// 40 consenting subjects aged 30..69 (30 + i % 50), bounds [30, 40]: 29 values lie above 40,
    /// none below, 40 are counted. With --clamped-epsilon 30 each count has epsilon 10 (discrete
    /// Laplace, P(|noise| >= 2) = 2e^-20/(1 + e^-10), about 4e-9): all three are within 1 of the
    /// truth except with probability about 1.2e-8, and then the share lies in [28/41, 30/39],
    /// within 0.05 of 29/40. (The analytics budget is raised to 100 for it.)
    @Test func theClampedShareMeasuresWhatTheBoundsCut() throws {
        let s = try N.store()
        let path = s.env["PROFILEVAULT_POLICY"]! + "/policy.yaml"
        try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: "dp_budget: { epsilon: 4.0, period: 30d }", with: "dp_budget: { epsilon: 100.0, period: 30d }")
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try s.run(["policy", "apply", "--role", "privacy_officer"]).status == 0)
        let v = try N.vault(s)
        var q = Vault.QueryRequest(kind: .mean, purpose: "analytics", epsilon: 1, attribute: "age")
        q.bounds = (30, 40)
        q.reportClamped = 30
        let r = try v.query(q)
        let c = try #require(r.clamped)
        #expect(c.epsilon == 30 && r.epsilon == 31)
        #expect(c.shareInterval.0 >= 0 && c.shareInterval.1 <= 1 && c.shareInterval.0 <= c.share && c.share <= c.shareInterval.1)
        #expect(abs(c.share - 29.0 / 40.0) < 0.05, "\(c)")
        #expect(abs(c.count - 29) <= 2)
        #expect(r.clampedShare == c.share)
        #expect(JSONForms.query(r)["clamped_share"] != .string("not measured"))
        // Asked again: the cached release carries the same clamped report, charged 0.
        let before = try N.spent(v, "analytics")
        let again = try v.query(q)
        #expect(try again.cached && again.clamped == c && N.spent(v, "analytics") == before)
        // Refused before anything is charged: no bounds, grouped, events, a tiny epsilon.
        var noBounds = q; noBounds.bounds = nil
        var grouped = q; grouped.groupBy = "country"
        var events = Vault.QueryRequest(kind: .sum, purpose: "analytics", epsilon: 1, events: "purchase"); events.bounds = (0, 5); events.reportClamped = 0.1
        var tiny = q; tiny.reportClamped = 1e-7
        for bad in [noBounds, grouped, events, tiny] {
            #expect((#expect(throws: VaultError.self) { _ = try v.query(bad) })?.kind == .usage)
        }
        #expect(try N.spent(v, "analytics") == before)
    }
}
