import DifferentialPrivacy
import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultStore

/// Issue 16 items 5 and 6 at the store: delta is charged beside epsilon and refused when it does
/// not fit; a changed budget period never resets what the current window has spent; the policy
/// history is append-only; stores made before these migrate with delta 0.
@Suite struct BudgetLedgerTests {
    func accountant(_ t: TempStore, _ action: String = "train") -> any BudgetAccountant {
        t.store.budgetAccountant(audit: AuditContext(actor: "t", role: "trainer", requestID: "r").record(action, .other, purpose: "model_training"))
    }

    /// Moves the store's creation (the origin of every budget window) `seconds` into the past.
    func created(_ t: TempStore, secondsAgo seconds: Int64) throws {
        let now = Int64(Date().timeIntervalSince1970)
        try t.store.pool.write { db in
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'created_at'", arguments: [String(now - seconds)])
        }
    }

    func spentEpsilon(_ t: TempStore) throws -> Int64 {
        try t.store.pool.read { db in try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(spent_units), 0) FROM budget") ?? 0 }
    }

    @Test func deltaIsChargedWithEpsilonAndRefusedWhenItDoesNotFit() throws {
        let t = try TempStore()
        let a = accountant(t)
        let e = Epsilon(0.5)!
        let s = try a.spend(purpose: "model_training", epsilon: e, delta: 6e-7, limit: 10, deltaLimit: 1e-6, periodSeconds: 86_400)
        #expect(abs(s.deltaSpent - 6e-7) < 1e-18 && abs(s.deltaLeft - 4e-7) < 1e-18)
        // The second job's delta does not fit (1.2e-6 > 1e-6): refused, and it spends nothing, epsilon included.
        let before = try spentEpsilon(t)
        do {
            _ = try a.spend(purpose: "model_training", epsilon: e, delta: 6e-7, limit: 10, deltaLimit: 1e-6, periodSeconds: 86_400)
            Issue.record("a delta past the limit was granted")
        } catch let x as BudgetExceeded {
            #expect(x.deltaExceeded && x.description.contains("delta"), "\(x)")
        }
        #expect(try spentEpsilon(t) == before)
        // What is left still fits exactly (units of 1e-15: 6e-7 + 4e-7 is exactly 1e-6).
        let last = try a.spend(purpose: "model_training", epsilon: e, delta: 4e-7, limit: 10, deltaLimit: 1e-6, periodSeconds: 86_400)
        #expect(last.deltaLeft == 0)
        // A pure-DP purpose (delta limit 0) refuses any delta; epsilon-only charges still pass.
        #expect(throws: BudgetExceeded.self) {
            _ = try a.spend(purpose: "analytics", epsilon: e, delta: 1e-9, limit: 10, deltaLimit: 0, periodSeconds: 86_400)
        }
        _ = try a.spend(purpose: "analytics", epsilon: e, delta: 0, limit: 10, deltaLimit: 0, periodSeconds: 86_400)
        // The charged entries record the delta.
        let entries = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit ORDER BY seq") }
        #expect(entries.count == 3)
        #expect(entries[0].contains("delta 6e-07") && entries[1].contains("delta 4e-07") && !entries[2].contains("delta"))
        // A delta outside [0, 1] is refused before any charge.
        #expect(throws: VaultError.self) { _ = try a.spend(purpose: "x", epsilon: e, delta: .nan, limit: 10, deltaLimit: 1e-6, periodSeconds: 86_400) }
    }

    @Test func concurrentJobsNeverOverspendDelta() async throws {
        let t = try TempStore()
        let a = accountant(t)
        // 20 racing charges of 1e-7 against a limit of 1e-6 (and ample epsilon): exactly 10 fit.
        let granted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    (try? a.spend(purpose: "model_training", epsilon: Epsilon(0.01)!, delta: 1e-7, limit: 100, deltaLimit: 1e-6, periodSeconds: 86_400)) != nil
                }
            }
            var n = 0
            for await ok in group where ok { n += 1 }
            return n
        }
        #expect(granted == 10)
        let state = try t.store.budgetState(purpose: "model_training", limit: 100, deltaLimit: 1e-6, periodSeconds: 86_400)
        #expect(abs(state.deltaSpent - 1e-6) < 1e-18)
    }

    /// The attack of issue 16: 0.9 of 1.0 spent in the second hour of a 1h period; the period
    /// becomes 2h; the 2h window [0, 2h) had no row of its own and granted 0.9 more in that hour.
    @Test func aLongerPeriodCountsWhatTheCurrentWindowSpent() throws {
        let t = try TempStore()
        let a = accountant(t, "query.count")
        try created(t, secondsAgo: 3_900)   // 1h05m: the 1h window is [1h, 2h), the 2h window [0, 2h)
        let eps = Epsilon(0.9)!
        _ = try a.spend(purpose: "analytics", epsilon: eps, limit: 1, periodSeconds: 3_600)
        #expect(throws: BudgetExceeded.self) { _ = try a.spend(purpose: "analytics", epsilon: eps, limit: 1, periodSeconds: 7_200) }
        let s = try t.store.budgetState(purpose: "analytics", limit: 1, periodSeconds: 7_200)
        #expect(abs(s.spent - 0.9) < 1e-5)
        _ = try a.spend(purpose: "analytics", epsilon: Epsilon(0.1)!, limit: 1, periodSeconds: 7_200)   // what is left still fits
        #expect(throws: BudgetExceeded.self) { _ = try a.spend(purpose: "analytics", epsilon: Epsilon(0.01)!, limit: 1, periodSeconds: 7_200) }
    }

    @Test func aShorterPeriodCountsTheOverlappingLongerWindow() throws {
        let t = try TempStore()
        let a = accountant(t, "query.count")
        try created(t, secondsAgo: 5_400)   // 1h30m: the 2h window is [0, 2h), the 1h window [1h, 2h)
        _ = try a.spend(purpose: "analytics", epsilon: Epsilon(0.9)!, limit: 1, periodSeconds: 7_200)
        // Spent at 1h30m (or earlier in [0, 2h)): the 1h window overlaps the 2h row, which counts in full.
        #expect(throws: BudgetExceeded.self) { _ = try a.spend(purpose: "analytics", epsilon: Epsilon(0.9)!, limit: 1, periodSeconds: 3_600) }
        #expect(abs(try t.store.budgetState(purpose: "analytics", limit: 1, periodSeconds: 3_600).spent - 0.9) < 1e-5)
        // Rows of another purpose, and of windows that ended, do not count.
        _ = try a.spend(purpose: "other", epsilon: Epsilon(0.9)!, limit: 1, periodSeconds: 3_600)
        try t.store.pool.write { db in
            try db.execute(sql: "INSERT INTO budget(purpose, period_start, period_seconds, spent_units, spent_delta_units) VALUES ('analytics', 0, 3600, 9999999, 0)")
        }
        #expect(abs(try t.store.budgetState(purpose: "analytics", limit: 1, periodSeconds: 3_600).spent - 0.9) < 1e-5)
    }

    @Test func theChargeIsRefusedUnderASupersededPolicy() throws {
        let t = try TempStore()
        let ctx = AuditContext(actor: "o", role: "privacy_officer", requestID: "r")
        func policyRecord(_ sha: String) -> PolicyRecord {
            PolicyRecord(sequence: 0, version: "v", sha256: sha, schemaSHA256: "s", appliedAtMillis: 0, actor: "o", role: "privacy_officer", summary: "{}", changes: "[]")
        }
        _ = try t.store.recordPolicy(policyRecord("a"), previous: nil, periods: [:], audit: ctx.record("policy.apply", .update))
        let record = AuditContext(actor: "t", role: "trainer", requestID: "r").record("query.count", .read, purpose: "analytics")
        let current = t.store.budgetAccountant(audit: record, policy: ("a", "s"))
        _ = try current.spend(purpose: "analytics", epsilon: Epsilon(0.1)!, limit: 1, periodSeconds: 3_600)
        let stale = t.store.budgetAccountant(audit: record, policy: ("b", "s"))
        #expect(throws: VaultError.self) { _ = try stale.spend(purpose: "analytics", epsilon: Epsilon(0.1)!, limit: 1, periodSeconds: 3_600) }
        // A record made against another previous record than the newest is refused (two applies racing).
        #expect(throws: VaultError.self) { _ = try t.store.recordPolicy(policyRecord("c"), previous: nil, periods: [:], audit: ctx.record("policy.apply", .update)) }
        #expect(try t.store.policyHistory().map(\.sha256) == ["a"])
    }

    @Test func thePolicyHistoryIsAppendOnlyAgainstRawSQL() throws {
        let t = try TempStore()
        let ctx = AuditContext(actor: "o", role: "privacy_officer", requestID: "r")
        let r = PolicyRecord(sequence: 0, version: "2026-11-01", sha256: "aa", schemaSHA256: "bb", appliedAtMillis: 0, actor: "o",
                             role: "privacy_officer", summary: "{}", changes: "[]")
        let stored = try t.store.recordPolicy(r, previous: nil, periods: [:], audit: ctx.record("policy.apply", .update))
        #expect(stored.sequence == 1 && stored.appliedAtMillis > 0)
        for sql in ["UPDATE policy_history SET sha256 = 'cc'", "UPDATE policy_history SET applied_at = 0 WHERE seq = 1",
                    "DELETE FROM policy_history", "DELETE FROM policy_history WHERE seq = 1"] {
            #expect(throws: DatabaseError.self, "\(sql)") { try t.store.pool.write { db in try db.execute(sql: sql) } }
        }
        #expect(try t.store.policyHistory() == [stored])
        #expect(try t.store.latestPolicy()?.sha256 == "aa")
        #expect(try ProfileStore.status(path: t.dir + "/store.sqlite").policy?.sha256 == "aa")
        // And it is in the audit log.
        let entries = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit") }
        #expect(entries.contains { $0.contains(#""api.operation":"policy.apply""#) })
    }

    /// A store made before delta and period lengths were recorded (budget table without them, no
    /// policy history) migrates on open: its rows keep their epsilon, spend delta 0, and count in
    /// the current window until the first policy record gives them that policy's period.
    @Test func anOldStoreMigratesWithDeltaZero() throws {
        let t = try TempStore()
        let path = t.dir + "/store.sqlite"
        let start = try t.store.pool.read { db in try t.store.periodStart(periodSeconds: 86_400, now: Int64(Date().timeIntervalSince1970), db) }
        // Back to the v6 layout, as a store of the previous version has it.
        try t.store.pool.write { db in
            try db.execute(sql: """
                DROP TABLE budget;
                CREATE TABLE budget(purpose TEXT NOT NULL, period_start INTEGER NOT NULL, spent_units INTEGER NOT NULL,
                    PRIMARY KEY(purpose, period_start)) WITHOUT ROWID;
                DROP TABLE policy_history;
                DELETE FROM grdb_migrations WHERE identifier = 'v7-budget-delta-and-policy-history';
                """)
            try db.execute(sql: "INSERT INTO budget(purpose, period_start, spent_units) VALUES ('analytics', ?, ?)",
                           arguments: [start, Int64(3 * Epsilon.unitsPerOne)])
        }
        try t.store.close()
        let store = try ProfileStore.open(path: path, keyring: t.keyring, schema: Fixtures.schema)
        defer { try? store.close() }
        #expect(try store.latestPolicy() == nil)
        let s = try store.budgetState(purpose: "analytics", limit: 4, deltaLimit: 1e-6, periodSeconds: 86_400)
        #expect(abs(s.spent - 3) < 1e-5 && s.deltaSpent == 0)
        let rows = try store.pool.read { db in try Row.fetchAll(db, sql: "SELECT period_seconds, spent_delta_units FROM budget") }
        #expect(rows.count == 1 && rows[0]["period_seconds"] as Int64 == 0 && rows[0]["spent_delta_units"] as Int64 == 0)
        // The first policy record gives the row its purpose's period.
        let r = PolicyRecord(sequence: 0, version: "v", sha256: "a", schemaSHA256: "b", appliedAtMillis: 0, actor: "o", role: "privacy_officer", summary: "{}", changes: "[]")
        _ = try store.recordPolicy(r, previous: nil, periods: ["analytics": 86_400], audit: AuditContext(actor: "o", role: "privacy_officer", requestID: "r").record("policy.apply", .update))
        #expect(try store.pool.read { db in try Int64.fetchOne(db, sql: "SELECT period_seconds FROM budget") } == 86_400)
        #expect(abs(try store.budgetState(purpose: "analytics", limit: 4, periodSeconds: 86_400).spent - 3) < 1e-5)
        // The table it created is append-only too.
        #expect(throws: DatabaseError.self) { try store.pool.write { db in try db.execute(sql: "DELETE FROM policy_history") } }
    }
}
