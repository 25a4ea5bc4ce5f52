import EngineConformanceSupport
import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// The release cache on PostgreSQL: the same checks as on SQLite (ReleaseCacheConformance), the
/// attacker editing the rows as the superuser, and `migrate` carrying the sealed releases.
@Suite(.serialized) struct PostgresReleaseCacheTests {
    @Test func theReleaseCacheHoldsOnEngineTerms() async throws {
        try await ProfileCluster.with { cluster in
            let node = try await cluster.node()
            let db = cluster.db
            let failures = try await onThread { () -> [String] in
                var next = 1
                return try ReleaseCacheConformance.run(node, changePopulation: {
                    _ = try node.ingestProfiles(.objects([Self.profile(next)]), options: IngestOptions())
                    next += 1
                }) { tamper in
                    let sql: String
                    switch tamper {
                    case .saveRows:
                        sql = "CREATE TABLE public.saved_releases AS SELECT * FROM profilevault.release_cache"
                    case .restoreRows:
                        sql = """
                            INSERT INTO profilevault.release_cache SELECT * FROM public.saved_releases
                            ON CONFLICT (digest) DO UPDATE SET purpose = excluded.purpose, period_start = excluded.period_start,
                                period_seconds = excluded.period_seconds, created_at = excluded.created_at, epoch = excluded.epoch, sealed = excluded.sealed
                            """
                    case .setEpoch(let e):
                        sql = "UPDATE profilevault.release_cache SET epoch = \(e)"
                    case .swapSealed:
                        sql = "UPDATE profilevault.release_cache AS t SET sealed = (SELECT o.sealed FROM profilevault.release_cache o WHERE o.digest <> t.digest)"
                    case .changePurpose:
                        sql = "UPDATE profilevault.release_cache SET purpose = 'model_training'"
                    case .flipTag:
                        sql = "UPDATE profilevault.release_cache SET sealed = overlay(sealed PLACING set_byte('\\x00'::bytea, 0, get_byte(sealed, length(sealed) - 1) # 1) FROM length(sealed) FOR 1)"
                    }
                    try PostgresProfiles.wait("tampering") { try await db.superuser([sql]) }
                }
            }
            #expect(failures.isEmpty, "\(failures)")
            // The service role may drop releases but not empty the table wholesale (no TRUNCATE).
            let truncate = try await db.attempt("TRUNCATE profilevault.release_cache", as: db.node, password: db.nodePassword)
            #expect(truncate?.kind == .denied)
            try await onThread { try node.close() }
        }
    }

    /// Every population change moves the epoch in its own transaction, as on SQLite; reads do not.
    @Test func populationChangesMoveTheEpoch() async throws {
        try await ProfileCluster.with { cluster in
            let node = try await cluster.node()
            let failures = try await onThread { () -> [String] in
                _ = try node.ingestProfiles(.objects((11...14).map { Self.profile($0) }), options: IngestOptions())
                return try ReleaseCacheConformance.epochMoves(node, ids: (11...14).map { "EPOCH-\($0)" })
            }
            #expect(failures.isEmpty, "\(failures)")
            // The service role reads and increments the epoch, and can neither add nor remove its row.
            let db = cluster.db
            #expect(try await db.attempt("DELETE FROM profilevault.population_epoch", as: db.node, password: db.nodePassword)?.kind == .denied)
            #expect(try await db.attempt("INSERT INTO profilevault.population_epoch(id, epoch) VALUES (2, 0)", as: db.node, password: db.nodePassword)?.kind == .denied)
            try await onThread { try node.close() }
        }
    }

    /// A profile of the repository's schema, new for each `i`.
    static func profile(_ i: Int) -> JSONValue {
        .object([("customer_id", .string("EPOCH-\(i)")), ("email", .string("e\(i)@example.org")), ("full_name", .string("E \(i)")),
                 ("phone", .string("+49 30 \(1_000 + i)")), ("birth_date", .string("1990-01-01")), ("age", .int(36)),
                 ("gender", .string("other")), ("country", .string("DE")), ("annual_income", .double(1000))])
    }

    /// The reviewer's attack on a shared epoch: after `migrate` the source stays usable, so if
    /// the copy kept the source's epoch, both would count up from one value and a release the
    /// source made of its population (still holding a subject the copy erased) could be copied
    /// into the copy's table and served there. The copy starts at a fresh random epoch and
    /// carries no release; a row moved over from the source is not served.
    @Test func migrateCopiesNoReleaseAndDrawsAFreshEpoch() async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvmigrel-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = Keyring.generate(note: "test")
            let sqlite = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: repositorySchema, policyVersion: "test")
            defer { try? sqlite.close() }
            let period = 30 * 86_400
            let d = sqlite.releaseDigest(Array("a query".utf8))
            _ = try sqlite.ingestProfiles(.objects([Self.profile(1)]))
            guard case .miss(let start, let now?) = try sqlite.cachedRelease(digest: d, purpose: "analytics", periodSeconds: period) else {
                Issue.record("an empty cache found a release"); return
            }
            try sqlite.storeRelease(digest: d, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: now, payload: Array("the release".utf8))
            let url = db.owner.description
            let env = ["PGPASSWORD": db.ownerPassword ?? ""]
            _ = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            let node = try await onThread { try PostgresStore.open(url: url, keyring: keyring, schema: repositorySchema, leastPrivilege: false, environment: env) }
            let copied = try await onThread { () -> Int64? in
                #expect(node.releaseDigest(Array("a query".utf8)) == d)
                if case .hit = try node.cachedRelease(digest: d, purpose: "analytics", periodSeconds: period) {
                    Issue.record("a release of the source is served by the copy")
                }
                return try node.populationEpoch()
            }
            let fresh = try #require(copied)
            #expect(fresh >= 1 << 40 && fresh != now, "the copy kept the source's epoch \(now)")
            // The source's sealed row, moved into the copy as it is: its epoch is not the copy's.
            let row = try #require(try sqlite.readSnapshot { try $0.releases() }.first)
            try await db.superuser(["""
                INSERT INTO profilevault.release_cache(digest, purpose, period_start, period_seconds, created_at, epoch, sealed)
                VALUES ('\\x\(Hex.encode(row.digest))', '\(row.purpose)', \(row.periodStart), \(row.periodSeconds), \(row.createdAt), \(row.epoch), '\\x\(Hex.encode(row.sealed))')
                """])
            try await onThread {
                if case .hit = try node.cachedRelease(digest: d, purpose: "analytics", periodSeconds: period) {
                    Issue.record("a row moved over from the source is served by the copy")
                }
                try node.close()
            }
        }
    }
}
