import Foundation
import Testing
import VaultCrypto
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Two nodes ingesting the same customers at once, in opposite orders, in batches that span
/// several statements: each batch locks many subject rows, and without an order (and a retry
/// when PostgreSQL breaks a deadlock) one node's batch failed with 40P01.
@Suite(.serialized) struct PostgresIngestRaceTests {
    @Test func twoNodesIngestingTheSameCustomersInOppositeOrdersBothSucceed() async throws {
        try await ProfileCluster.with { cluster in
            let n = 9_000
            let forward = try cluster.write("f.csv", Rows.csv(0..<n))
            let backward = try cluster.write("b.csv", ([Rows.header] + (0..<n).reversed().map { Rows.line(Rows.row($0)) }).joined(separator: "\n") + "\n")
            let a = try await cluster.node()
            let b = try await cluster.node()
            var options = IngestOptions()
            options.batchSize = n
            options.audit = context
            let o = options
            for round in 0..<2 {
                async let ra = onThread { try a.ingestProfiles(.file(round % 2 == 0 ? forward : backward), options: o) }
                async let rb = onThread { try b.ingestProfiles(.file(round % 2 == 0 ? backward : forward), options: o) }
                let (x, y) = try await (ra, rb)
                // The node that comes second finds the other's identical records: unchanged.
                #expect(x.inserted + x.updated + x.unchanged == n && y.inserted + y.updated + y.unchanged == n, "round \(round)")
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == Int64(n))
            #expect(try await a.engine.verifyAudit().ok)
            await a.engine.close()
            await b.engine.close()
        }
    }
}
