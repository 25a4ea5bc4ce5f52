import EngineConformanceSupport
import Foundation
import GRDB
import Testing
@testable import VaultStore

/// The release cache on SQLite (ReleaseCacheConformance, run on PostgreSQL too): the file-level
/// attacker edits the rows with SQL.
@Suite struct ReleaseCacheStoreTests {
    @Test func theReleaseCacheHoldsOnEngineTerms() throws {
        let t = try TempStore()
        var next = 1
        var saved: [Row] = []
        let failures = try ReleaseCacheConformance.run(t.store, changePopulation: {
            _ = try t.store.ingestProfiles(.objects([InMemoryIngestTests.object(next)]))
            next += 1
        }) { tamper in
            try t.store.pool.write { db in
                switch tamper {
                case .saveRows:
                    saved = try Row.fetchAll(db, sql: "SELECT * FROM release_cache")
                case .restoreRows:
                    for r in saved {
                        try db.execute(sql: "INSERT OR REPLACE INTO release_cache(digest, purpose, period_start, period_seconds, created_at, epoch, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                       arguments: [r["digest"], r["purpose"], r["period_start"], r["period_seconds"], r["created_at"], r["epoch"], r["sealed"]])
                    }
                case .setEpoch(let e):
                    try db.execute(sql: "UPDATE release_cache SET epoch = ?", arguments: [e])
                case .swapSealed:
                    let rows = try Row.fetchAll(db, sql: "SELECT digest, sealed FROM release_cache ORDER BY digest")
                    guard rows.count == 2 else { throw VaultError(.internalFailure, "two rows expected") }
                    let (a, b) = (rows[0]["digest"] as Data, rows[1]["digest"] as Data)
                    let (sa, sb) = (rows[0]["sealed"] as Data, rows[1]["sealed"] as Data)
                    try db.execute(sql: "UPDATE release_cache SET sealed = ? WHERE digest = ?", arguments: [sb, a])
                    try db.execute(sql: "UPDATE release_cache SET sealed = ? WHERE digest = ?", arguments: [sa, b])
                case .changePurpose:
                    try db.execute(sql: "UPDATE release_cache SET purpose = 'model_training'")
                case .flipTag:
                    for row in try Row.fetchAll(db, sql: "SELECT digest, sealed FROM release_cache") {
                        var s = [UInt8](row["sealed"] as Data)
                        s[s.count - 1] ^= 1
                        try db.execute(sql: "UPDATE release_cache SET sealed = ? WHERE digest = ?", arguments: [Data(s), row["digest"] as Data])
                    }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    /// Every population change moves the epoch in its own transaction; reads and no-op changes do not.
    @Test func populationChangesMoveTheEpoch() throws {
        let t = try TempStore()
        let before = try t.store.populationEpoch()
        _ = try t.store.ingestProfiles(.objects((1...4).map { InMemoryIngestTests.object($0) }))
        #expect(try t.store.populationEpoch() != before)
        let failures = try ReleaseCacheConformance.epochMoves(t.store, ids: (1...4).map { "CUST-\($0)" })
        #expect(failures.isEmpty, "\(failures)")
        // The same records again change nothing, and move nothing.
        let e = try t.store.populationEpoch()
        _ = try t.store.ingestProfiles(.objects((1...3).map { InMemoryIngestTests.object($0) }))
        #expect(try t.store.populationEpoch() == e)
    }

    /// Without its epoch row (deleted by someone with the file) the cache is bypassed: nothing
    /// is served or stored, no error; the queries pay.
    @Test func withoutTheEpochRowNothingIsServed() throws {
        let t = try TempStore()
        let d = t.store.releaseDigest(Array("q".utf8))
        guard case let .miss(start, epoch?) = try t.store.cachedRelease(digest: d, purpose: "analytics", periodSeconds: 86_400) else {
            Issue.record("empty cache found a release"); return
        }
        #expect(try t.store.storeRelease(digest: d, purpose: "analytics", periodStart: start, periodSeconds: 86_400, epoch: epoch, payload: [1]))
        try t.store.pool.write { db in try db.execute(sql: "DELETE FROM population_epoch") }
        #expect(try t.store.cachedRelease(digest: d, purpose: "analytics", periodSeconds: 86_400) == .miss(periodStart: start, epoch: nil))
        #expect(try !t.store.storeRelease(digest: d, purpose: "analytics", periodStart: start, periodSeconds: 86_400, epoch: epoch, payload: [1]))
    }

    /// A row whose columns hold the wrong storage class is an integrity error, never a trap.
    @Test func aDamagedRowIsAnIntegrityError() throws {
        let t = try TempStore()
        let d = t.store.releaseDigest(Array("q".utf8))
        guard case let .miss(start, epoch?) = try t.store.cachedRelease(digest: d, purpose: "analytics", periodSeconds: 86_400) else {
            Issue.record("empty cache found a release"); return
        }
        try t.store.storeRelease(digest: d, purpose: "analytics", periodStart: start, periodSeconds: 86_400, epoch: epoch, payload: [1, 2, 3])
        try t.store.pool.write { db in try db.execute(sql: "UPDATE release_cache SET sealed = 'text', created_at = 'x'") }
        #expect((#expect(throws: VaultError.self) { _ = try t.store.cachedRelease(digest: d, purpose: "analytics", periodSeconds: 86_400) })?.kind == .integrity)
    }
}
