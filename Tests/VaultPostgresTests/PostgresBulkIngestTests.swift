import Foundation
import PostgresNIO
import Testing
import VaultAudit
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// The bulk ingest path (issue 18 §5): the pipeline (this thread seals transaction N+1 while a
/// writer thread has transaction N written), packed batches, plain inserts for subjects the
/// transaction creates, and migration 6 (no foreign keys on `pii` and `attributes`).
@Suite(.serialized) struct PostgresBulkIngestTests {
    /// A writer that fails in its third transaction stops the pipeline: the two transactions
    /// before it are committed (with their audit entries), nothing after it is, the error says
    /// what failed without a value, and the file's later records are never written.
    /// The failure is planted as a `pii` row already holding the row id the third transaction
    /// gives a new subject: the plain insert refuses it (an upsert would have overwritten it).
    @Test func aWriterFailureStopsThePipelineAfterTheCommittedTransactions() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let last = try await cluster.db.count("SELECT nextval(pg_get_serial_sequence('profilevault.subjects', 'id'))")
            // Ids follow the file: transactions of 4 take last+1...last+4, last+5...last+8, last+9...
            try await cluster.db.superuser(["INSERT INTO profilevault.pii(subject_id, c0) VALUES (\(last + 10), '\\x00'::bytea)"])
            let file = try cluster.write("p.csv", Rows.csv(0..<25))
            var options = IngestOptions()
            options.batchSize = 4
            options.audit = context
            let o = options
            do {
                _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
                Issue.record("a transaction whose pii row id was taken was written")
            } catch let e as VaultError {
                #expect(e.message.contains("ingesting profiles") && e.message.contains("23505"))
                #expect(!e.message.contains(Rows.id(9)) && !e.message.contains(Rows.email(9)))
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 8)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 8)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.pii") == 9)   // 8 and the planted row
            #expect(try await pg.engine.auditHead().entries == 2)
            #expect(try await pg.engine.verifyAudit().ok)
            for i in 0..<8 { #expect(try await onThread { try pg.exists(customerID: Rows.id(i)) }) }
            for i in 8..<25 { #expect(try await onThread { try pg.exists(customerID: Rows.id(i)) } == false) }
        }
    }

    /// Many transactions through the pipeline: every record lands once, ids follow the file,
    /// one audit entry per transaction, and a second pass updates (upserts) every subject.
    @Test func manyTransactionsLandInFileOrderAndUpdateOnTheSecondPass() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<300))
            var options = IngestOptions()
            options.batchSize = 7
            options.audit = context
            let o = options
            let first = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
            #expect(first.inserted == 300 && first.updated == 0)
            #expect(try await pg.engine.auditHead().entries == 43)   // ceil(300 / 7)
            // Row ids ascend in file order across all transactions.
            let ordered = try await cluster.db.count("""
                SELECT count(*) FROM (SELECT id, lag(id) OVER (ORDER BY id) AS before FROM profilevault.subjects) t WHERE before IS NOT NULL AND before >= id
                """)
            #expect(ordered == 0)
            let second = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
            // The same records again: unchanged, nothing written.
            #expect(second.inserted == 0 && second.updated == 0 && second.unchanged == 300)
            #expect(try await onThread { try pg.storedCounts() }[0] == 300)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.pii") == 300)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 300)
        }
    }

    /// A store created before migration 6 has foreign keys from `pii` and `attributes` to
    /// `subjects`; init drops them, and a store created now has none.
    @Test func migrationSixDropsTheForeignKeysOfOlderStores() async throws {
        try await ProfileCluster.with { cluster in
            let fks = "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN ('profilevault.pii'::regclass, 'profilevault.attributes'::regclass)"
            #expect(try await cluster.db.count(fks) == 0)
            try await cluster.db.superuser([
                "ALTER TABLE profilevault.pii ADD CONSTRAINT pii_subject_id_fkey FOREIGN KEY (subject_id) REFERENCES profilevault.subjects(id)",
                "ALTER TABLE profilevault.attributes ADD CONSTRAINT attributes_subject_id_fkey FOREIGN KEY (subject_id) REFERENCES profilevault.subjects(id)",
                "DELETE FROM profilevault.schema_migrations WHERE version = 6",
            ])
            #expect(try await cluster.db.count(fks) == 2)
            try await cluster.db.initialize()
            #expect(try await cluster.db.count(fks) == 0)
            #expect(try await cluster.db.count("SELECT max(version) FROM profilevault.schema_migrations") == Int64(PostgresEngine.latestSchemaVersion))
        }
    }

    /// Without foreign keys on `pii` and `attributes`, migration 11 keeps a DBA's own DELETE or
    /// TRUNCATE of `subjects` from leaving their rows behind for the DP scans to count; the
    /// engine's erasure (rows first, then the subject) still works.
    @Test func aSubjectCannotBeDeletedAroundItsRows() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<5))
            var options = IngestOptions()
            options.audit = context
            let o = options
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
            for statement in [
                "DELETE FROM profilevault.subjects WHERE id = (SELECT min(id) FROM profilevault.subjects)",
                "TRUNCATE profilevault.subjects CASCADE",
            ] {
                do {
                    try await cluster.db.superuser([statement])
                    Issue.record("\(statement) left pii and attributes rows behind")
                } catch let e as PSQLError {
                    #expect(e.serverInfo?[.sqlState] == "23503")
                    #expect(e.serverInfo?[.message]?.contains("pii or attributes rows remain") == true)
                }
                #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 5)
                #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 5)
            }
            // Deleting the rows with their subject, as erasure does, is allowed.
            try await cluster.db.superuser([
                "DELETE FROM profilevault.pii WHERE subject_id = (SELECT min(id) FROM profilevault.subjects)",
                "DELETE FROM profilevault.attributes WHERE subject_id = (SELECT min(id) FROM profilevault.subjects)",
                "DELETE FROM profilevault.subjects WHERE id = (SELECT min(id) FROM profilevault.subjects)",
            ])
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 4)
            let receipts = try await onThread { try pg.erase(customerIDs: [(1, Rows.id(3))], file: nil, reason: "test", audit: context) }
            #expect(receipts.count == 1)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 3)
            #expect(try await onThread { try pg.exists(customerID: Rows.id(3)) } == false)
        }
    }
}
