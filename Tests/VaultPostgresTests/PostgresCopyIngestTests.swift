import Foundation
import PostgresNIO
import Synchronization
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Ingest through binary `COPY` (issue 18 §5): a transaction whose subjects are all new is
/// written with three COPYs; any other goes through the upserts. The rows must be the upserts'
/// exactly, a failure anywhere must leave nothing of its transaction, and the connection must
/// come back to the pool usable.
@Suite(.serialized) struct PostgresCopyIngestTests {
    /// A cluster whose store uses `keyring` (so two clusters give the same pseudonyms, MACs
    /// and digests, and their rows can be compared).
    static func withCluster(keyring: Keyring, _ body: (ProfileCluster) async throws -> Void) async throws {
        try await TestDatabase.with { db in
            let owner = try db.ownerEngine()
            do {
                try await PostgresProfiles.create(owner: owner, schema: repositorySchema, keyring: keyring,
                                                  options: .init(serviceRole: db.serviceRole, schemaVersion: "1", policyVersion: "test"))
            } catch {
                await owner.close()
                throw error
            }
            await owner.close()
            try await db.initialize()
            let dir = NSTemporaryDirectory() + "pvpg-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try await body(ProfileCluster(db: db, keyring: keyring, dir: dir))
        }
    }

    /// Every subject's rows, as text, without what is random (ciphertexts and wrapped keys:
    /// only whether each is there and the key's length) or a clock reading (the times).
    static func snapshot(_ cluster: ProfileCluster) async throws -> [String] {
        let owner = try cluster.db.ownerEngine(pool: 1)
        let rows = try await owner.transaction("snapshot") { conn in
            try await owner.rows(conn, """
                SELECT s.id || '|' || encode(s.pseudonym, 'hex') || '|' || s.kek_version || '|' || s.created_batch || '|' || s.updated_batch
                    || '|' || coalesce(encode(s.record_digest, 'hex'), '-') || '|' || length(s.wrapped_dek)
                    || '|' || coalesce(encode(p.m1, 'hex'), '-') || '|' || coalesce(encode(p.m3, 'hex'), '-')
                    || '|' || num_nulls(p.c0, p.c1, p.c2, p.c3, p.c4) || '|' || (a.*)::text
                FROM profilevault.subjects s JOIN profilevault.pii p ON p.subject_id = s.id
                JOIN profilevault.attributes a ON a.subject_id = s.id ORDER BY s.id
                """).map { try $0.decode(String.self) }
        }
        await owner.close()
        return rows
    }

    /// Values COPY's text format would have to escape or would read as markers (tab,
    /// backslash, `\N`, the end-of-data marker `\.`), in a PII field. (Validation refuses
    /// every other control character, NUL, newline and carriage return included.)
    static func awkwardRows() -> [[String]] {
        (0..<6).map { i in
            var r = Rows.row(500 + i)
            r[2] = ["tab\there", "\\N", "back\\slash\\", "\\.", "\\.\t\\N", "quote\"d, \\t\t\\x00"][i]
            return r
        }
    }

    /// The same files through both paths (COPY on and off), on stores with the same keyring:
    /// a first file of new subjects (COPY), then a file mixing stored subjects (some changed,
    /// some not), new ones and customers twice (the upserts, in both runs), then a file of
    /// distinct customers half of them stored (COPY tried, then the upserts): the same rows
    /// (ids, pseudonyms, digests, MACs, attributes, runs), reports, decrypted profiles, and
    /// the values COPY's text format would escape come back exactly.
    @Test func copyAndUpsertsWriteTheSameRows() async throws {
        let keyring = Keyring.generate(note: "test")
        var changed = (20..<30).map { i in var r = Rows.row(i); r[5] = String(19 + i % 50); return r }
        changed.append(Rows.row(45))   // repeated below: one customer twice in the file
        let first = Rows.csv(0..<30, extra: Self.awkwardRows())
        let second = Rows.csv(25..<50, extra: changed)
        // Each customer once, half of them stored: the COPY is tried and refused by the
        // pseudonym's unique index, its savepoint rolled back, the upserts write the batch.
        let third = Rows.csv(40..<60)
        var results: [(reports: [IngestReport], rows: [String], profiles: [ProfileView?], copied: Int)] = []
        for copy in [false, true] {
            try await Self.withCluster(keyring: keyring) { cluster in
                let pg = try await cluster.node()
                pg.bulkCopy.withLock { $0.enabled = copy }
                let f1 = try cluster.write("p1.csv", first), f2 = try cluster.write("p2.csv", second)
                let f3 = try cluster.write("p3.csv", third)
                var options = IngestOptions()
                options.batchSize = 64
                options.audit = context
                let o = options
                let r1 = try await onThread { try pg.ingestProfiles(.file(f1), options: o) }
                let r2 = try await onThread { try pg.ingestProfiles(.file(f2), options: o) }
                let r3 = try await onThread { try pg.ingestProfiles(.file(f3), options: o) }
                let all = Set(repositorySchema.fields.map(\.name))
                var profiles: [ProfileView?] = []
                for i in Array(0..<60) + Array(500..<506) {
                    profiles.append(try await onThread { try pg.profile(customerID: Rows.id(i), fields: all) })
                }
                for (k, r) in Self.awkwardRows().enumerated() {
                    let got = try await onThread { try pg.profile(customerID: r[0], fields: ["full_name"]) }
                    #expect(got?.fields.first?.value == .text(r[2]), "awkward value \(k)")
                }
                #expect(try await pg.engine.verifyAudit().ok)
                results.append(([r1, r2, r3], try await Self.snapshot(cluster), profiles, pg.bulkCopy.withLock { $0.transactions }))
                await pg.engine.close()
            }
        }
        let (upsert, copied) = (results[0], results[1])
        #expect(upsert.copied == 0)
        #expect(copied.copied == 1)   // the first file; the second mixes stored subjects in
        #expect(copied.rows.count == 66 && copied.rows == upsert.rows)
        #expect(copied.profiles == upsert.profiles && copied.profiles.allSatisfy { $0 != nil })
        for (a, b) in zip(copied.reports, upsert.reports) {
            #expect(a.inserted == b.inserted && a.updated == b.updated && a.unchanged == b.unchanged && a.rejected == b.rejected)
        }
        #expect(copied.reports[0].inserted == 36)
        #expect(copied.reports[1].inserted == 20 && copied.reports[1].updated == 10 && copied.reports[1].unchanged == 6)
        #expect(copied.reports[2].inserted == 10 && copied.reports[2].updated == 0 && copied.reports[2].unchanged == 10)
    }

    /// The server refuses a row in the middle of the `pii` COPY (a row already holds the id a
    /// new subject gets; the stream is several chunks long): the transaction leaves nothing
    /// (no subject, no pii, no attributes, no audit entry, no run counts), the error names no
    /// value, and the pool's only connection serves the next ingest.
    @Test func aRowRefusedMidCopyLeavesNothingAndTheConnectionServesTheNext() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            let last = try await cluster.db.count("SELECT nextval(pg_get_serial_sequence('profilevault.subjects', 'id'))")
            // 4,000 profiles in one transaction take last+1...last+4000; the rows go in
            // pseudonym order, so the refused one comes somewhere inside the stream.
            try await cluster.db.superuser(["INSERT INTO profilevault.pii(subject_id, c0) VALUES (\(last + 3000), '\\x00'::bytea)"])
            let file = try cluster.write("p.csv", Rows.csv(0..<4000))
            var options = IngestOptions()
            options.batchSize = 65_536
            options.audit = context
            let o = options
            do {
                _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
                Issue.record("a COPY with a refused row committed")
            } catch let e as VaultError {
                #expect(e.message.contains("23505"))
                #expect(!e.message.contains(Rows.id(2999)) && !e.message.contains(Rows.email(2999)))
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 0)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 0)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.pii") == 1)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.ingest_batches") == 0)
            #expect(try await pg.engine.auditHead().entries == 0)
            // The same node, its one connection: the next ingest commits.
            try await cluster.db.superuser(["DELETE FROM profilevault.pii"])
            let report = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
            #expect(report.inserted == 4000)
            #expect(pg.bulkCopy.withLock { $0.transactions } >= 1)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.pii") == 4000)
            #expect(try await pg.engine.verifyAudit().ok)
            await pg.engine.close()
        }
    }

    /// The node gives up half way through a COPY (its row encoder throws after several chunks
    /// have gone): the error is the node's, nothing of the transaction stays, and the pool's
    /// only connection is usable (no COPY or aborted transaction left open on it).
    @Test func aNodeFailureMidCopyLeavesNothingAndTheConnectionServesTheNext() async throws {
        struct Planted: Error {}
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            let engine = pg.engine
            do {
                try await engine.transaction("test copy") { conn in
                    try await engine.copyBinary(conn, table: "attributes", columns: ["subject_id", "\"age\""], count: 200_000) { i, out in
                        if i == 150_000 { throw Planted() }
                        out.row(fields: 2)
                        out.int64(Int64(1_000_000 + i))
                        out.int64(40)
                    }
                }
                Issue.record("a COPY its node gave up committed")
            } catch let e as PostgresStoreError {
                #expect(e.message.contains("test copy"))
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.attributes") == 0)
            let n = try await engine.transaction("after") { conn in try await engine.rows(conn, "SELECT 41 + 1").first?.decode(Int.self) }
            #expect(n == 42)
            let file = try cluster.write("p.csv", Rows.csv(0..<10))
            var options = IngestOptions()
            options.audit = context
            let o = options
            #expect(try await onThread { try pg.ingestProfiles(.file(file), options: o) }.inserted == 10)
            #expect(pg.bulkCopy.withLock { $0.transactions } == 1)
            await pg.engine.close()
        }
    }

    /// The COPY statement is made of constants: a table outside the store's three, or a column
    /// that is not a plain identifier, is refused before anything reaches the server.
    @Test func copyTargetsAreConstants() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            let engine = pg.engine
            for (table, columns) in [("audit_log", ["seq"]), ("subjects\" (id) FROM STDIN; DROP TABLE x; --", ["id"]),
                                     ("attributes", ["subject_id", "age\") FROM STDIN; --"]), ("attributes", [])] {
                do {
                    try await engine.transaction("test copy") { conn in
                        try await engine.copyBinary(conn, table: table, columns: columns, count: 1) { _, out in
                            out.row(fields: 1)
                            out.int64(1)
                        }
                    }
                    Issue.record("COPY into \(table) \(columns) was sent")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .internalFailure && e.sqlState == nil)
                }
            }
            #expect(PostgresEngine.isCopyColumn("\"annual_income\"") && PostgresEngine.isCopyColumn("c12"))
            #expect(!PostgresEngine.isCopyColumn("a b") && !PostgresEngine.isCopyColumn("\"x\"\"y\"") && !PostgresEngine.isCopyColumn(""))
            await pg.engine.close()
        }
    }

    /// A transaction written while the ingest's validation pass still runs waits for the pass
    /// after its rows and before its audit entry. Meanwhile nothing of it is visible to anyone
    /// else, and another node appends to the audit chain (the head row is not held while it
    /// waits); when the pass fails, everything of the transaction is rolled back (rows, run
    /// counts, no audit entry), the chain verifies, and the node's only connection serves the
    /// next ingest.
    @Test func aTransactionWaitingForValidationHoldsNoHeadAndLeavesNothingWhenThePassFails() async throws {
        struct BadInput: Error {}
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            let other = try await cluster.node(pool: 1)
            let profiles = try Self.packed(pg)
            let waited = LockedBox(false)
            let appendTask = LockedBox<Task<Void, any Error>?>(nil)
            do {
                _ = try await pg.writeProfiles(profiles, file: "p.csv", rejected: 0, firstLine: 2, lastLine: 51, audit: context,
                                               allowReingest: false, beforeAudit: { _ in
                    #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 0)
                    // Were the head row held here, this append would wait for the rollback
                    // below: give it 20 seconds, then fail rather than hang.
                    let append = Task {
                        try await other.engine.audit([context.record("test.meanwhile", .read)])
                        waited.value.withLock { $0 = true }
                    }
                    for _ in 0..<200 where !waited.value.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(100)) }
                    #expect(waited.value.withLock { $0 }, "another node could not append while the transaction waited")
                    appendTask.value.withLock { $0 = append }
                    throw BadInput()
                })
                Issue.record("a transaction whose validation failed committed")
            } catch let e as PostgresStoreError {
                #expect(e.message.contains("BadInput"))
            }
            try await appendTask.value.withLock { $0 }?.value
            for table in ["subjects", "pii", "attributes", "ingest_batches"] {
                #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.\(table)") == 0, "\(table)")
            }
            #expect(try await pg.engine.auditHead().entries == 1)
            #expect(try await pg.engine.verifyAudit().ok)
            #expect(pg.bulkCopy.withLock { $0.transactions } == 0)
            // The same node, its one connection: the same profiles commit, after the pass.
            let (inserted, _, _) = try await pg.writeProfiles(profiles, file: "p.csv", rejected: 0, firstLine: 2, lastLine: 51, audit: context,
                                                             allowReingest: false, beforeAudit: { _ in })
            #expect(inserted == 50)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 50)
            #expect(try await pg.engine.auditHead().entries == 2)
            #expect(try await pg.engine.verifyAudit().ok)
            #expect(pg.bulkCopy.withLock { $0.transactions } == 1)
            await other.engine.close()
            await pg.engine.close()
        }
    }

    /// Fifty sealed profiles (rows 0..<50), as the ingest's writer gets them.
    static func packed(_ pg: PostgresProfiles) throws -> PackedProfiles {
        let sealer = try ProfileSealer(schema: repositorySchema, keys: pg.keys, piiFieldIDs: pg.piiFieldIDs, piiColumns: pg.piiColumns)
        var packed = PackedProfiles(piiWidth: pg.piiColumns.valueColumns.count, attributeCount: repositorySchema.attributeFields.count)
        for i in 0..<50 {
            guard case .success(let v) = ProfileStore.validateProfile(RawRecord(line: i + 2, values: Rows.row(i), problem: nil), file: "p.csv",
                                                                      schema: repositorySchema) else { throw PostgresStoreError(.internalFailure, "row \(i)") }
            try packed.append(try sealer.seal(v))
        }
        return packed
    }

    /// A transaction waiting for its validation pass gives way at once to a session that waits
    /// for one of its locks: an erasure's exclusive subjects lock is granted while the pass still
    /// runs (it would otherwise wait for the whole pass, and every node's writes queue behind
    /// it), nothing of the transaction is committed then, and once the pass has passed the
    /// transaction is written again and commits. A pass that fails instead leaves nothing.
    @Test func aWaitingTransactionGivesWayToAnErasureAndIsWrittenAgainAfterThePass() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            let other = try cluster.db.nodeEngine(pool: 1)
            let profiles = try Self.packed(pg)
            let recorder = IngestBatchRecorder(kind: "profiles", source: "p.csv", actor: "tester")
            let gate = ValidationGate()
            async let written = onThread {
                try pg.writeBatch(profiles, file: "p.csv", rejected: 0, firstLine: 2, lastLine: 51, audit: context, allowReingest: false,
                                  batch: recorder, gate: gate)
            }
            // Wait until the transaction holds the subjects lock (its rows are written).
            let ns = PostgresProfiles.lockNamespaceSubjects
            for _ in 0..<200 {
                if try await cluster.db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = \(ns) AND granted") > 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            // At most 10 s (then an error, not a hang: the pass ends only when this test says so).
            do {
                let seen = try await other.transaction("erasure stand-in") { conn in
                    try await other.exec(conn, "SET LOCAL lock_timeout = '10s'")
                    try await other.exec(conn, "SELECT pg_advisory_xact_lock(\(ns), 0)")
                    return try await other.rows(conn, "SELECT count(*) FROM profilevault.subjects").first?.decode(Int64.self)
                }
                #expect(seen == 0)
            } catch {
                Issue.record("the exclusive lock waited for the validation pass: \(error)")
            }
            #expect(!gate.isSettled)
            gate.settle(.success(()))
            #expect(try await written.inserted == 50)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 50)
            #expect(try await pg.engine.auditHead().entries == 1)
            #expect(try await pg.engine.verifyAudit().ok)

            // A pass that fails while the transaction waits: nothing stays, its error is reported.
            struct Bad: Error {}
            let failing = ValidationGate()
            try await cluster.db.superuser(["DELETE FROM profilevault.pii", "DELETE FROM profilevault.attributes", "DELETE FROM profilevault.subjects"])
            async let refused: Void = onThread {
                _ = try pg.writeBatch(profiles, file: "p.csv", rejected: 0, firstLine: 2, lastLine: 51, audit: context, allowReingest: false,
                                      batch: IngestBatchRecorder(kind: "profiles", source: "p.csv", actor: "tester"), gate: failing)
            }
            try await Task.sleep(for: .milliseconds(500))
            failing.settle(.failure(Bad()))
            do {
                try await refused
                Issue.record("a transaction whose validation pass failed committed")
            } catch {
                #expect(PostgresProfiles.reported(error, gate: failing) is Bad)
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 0)
            #expect(try await pg.engine.auditHead().entries == 1)
            await other.close()
            await pg.engine.close()
        }
    }

    /// A large file whose last record is bad: the first transactions are sealed and written
    /// while the validation pass still reads; the error names the last line and nothing stays.
    @Test func aBadLastLineOfALargeFileWritesNothingAndIsNamed() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node(pool: 1)
            var bad = Rows.row(20_000)
            bad[5] = "not a number"
            let file = try cluster.write("p.csv", Rows.csv(0..<20_000, extra: [bad]))
            var options = IngestOptions()
            options.batchSize = 64
            options.audit = context
            let o = options
            do {
                _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
                Issue.record("an invalid file was ingested")
            } catch let e as VaultError {
                #expect(e.message.contains(":20002:"), "\(e.message)")
            }
            for table in ["subjects", "pii", "attributes", "ingest_batches"] {
                #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.\(table)") == 0, "\(table)")
            }
            #expect(try await pg.engine.auditHead().entries == 0)
            await pg.engine.close()
        }
    }

    /// A file whose record 150 fails validation writes nothing, though its first transactions
    /// (of 64 new subjects each: the COPY path) were sealed before the validation pass got there.
    @Test func aFileInvalidHalfWayWritesNothing() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            var bad = Rows.row(150)
            bad[5] = "not a number"
            let file = try cluster.write("p.csv", Rows.csv(0..<150, extra: [bad] + (151..<300).map(Rows.row)))
            var options = IngestOptions()
            options.batchSize = 64
            options.audit = context
            let o = options
            do {
                _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
                Issue.record("an invalid file was ingested")
            } catch let e as VaultError {
                #expect(e.message.contains(":152:"))
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects") == 0)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.pii") == 0)
            #expect(try await pg.engine.auditHead().entries == 0)
            #expect(pg.bulkCopy.withLock { $0.transactions } == 0)
            await pg.engine.close()
        }
    }
}

/// A value behind a lock that closures and tasks can share.
private final class LockedBox<T: Sendable>: Sendable {
    let value: Mutex<T>
    init(_ v: T) { value = Mutex(v) }
}
