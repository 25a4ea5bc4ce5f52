import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// The repository's schema with `extra` added to its `fields:` mapping, through the schema
/// loader (so the test uses only schemas a user can write).
func repositorySchema(extraFields extra: String) throws -> Schema {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    let dir = NSTemporaryDirectory() + "pvpg-policies-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.copyItem(atPath: url.path + "/policies/policy.yaml", toPath: dir + "/policy.yaml")
    try FileManager.default.copyItem(atPath: url.path + "/policies/catalogs", toPath: dir + "/catalogs")
    var text = try String(contentsOfFile: url.path + "/policies/schema.yaml", encoding: .utf8)
    text = text.replacingOccurrences(of: "\nevents:\n", with: "\n" + extra + "\nevents:\n")
    try text.write(toFile: dir + "/schema.yaml", atomically: true, encoding: .utf8)
    return try PolicyLoader.load(directory: dir).schema
}

/// Review attacks on the PostgreSQL profile tables (issue 18 §2).
@Suite(.serialized) struct PostgresProfilesReviewTests {
    /// A field name the schema loader accepts (and SQLite stores as a column) but that is one of
    /// PostgreSQL's system column names cannot be an `attributes` column: creating the store is
    /// a configuration error naming the problem before any table is made, not a server error
    /// (exit 1) from half-way through the DDL.
    @Test func aFieldNamedLikeASystemColumnIsAConfigurationError() async throws {
        try await TestDatabase.with { db in
            let keyring = Keyring.generate(note: "test")
            for name in ["xmin", "xmax", "cmin", "cmax", "ctid", "tableoid"] {
                let schema = try repositorySchema(extraFields: "  \(name): { type: int, category: user.demographic.age_range, bounds: [0, 9], required: false }")
                #expect(schema.field(named: name) != nil)
                let owner = try db.ownerEngine()
                do {
                    try await PostgresProfiles.create(owner: owner, schema: schema, keyring: keyring,
                                                      options: .init(serviceRole: db.serviceRole, schemaVersion: "1", policyVersion: "test"))
                    Issue.record("a field named \(name) was accepted")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .configuration && e.message.contains("system column"), "\(name): \(e.kind) \(e.message)")
                }
                await owner.close()
            }
            // Nothing was created: no schema fingerprint recorded.
            #expect(try await db.count("SELECT count(*) FROM profilevault.meta WHERE key = 'schema_fingerprint'") == 0)
        }
    }

    /// An erasure list naming one customer twice (the same ID, or one that normalises to it)
    /// erases them once, as on SQLite: the second receipt removes nothing, every other customer
    /// of the list is erased too. It was refused as a whole ("erased by another node meanwhile").
    @Test func anErasureNamingACustomerTwiceMatchesSQLite() async throws {
        try await ProfileCluster.with { cluster in
            let file = try cluster.write("p.csv", Rows.csv(0..<4))
            let sqliteDir = cluster.dir + "/sqlite"
            try FileManager.default.createDirectory(atPath: sqliteDir, withIntermediateDirectories: true)
            let sqlite = try ProfileStore.create(path: sqliteDir + "/store.sqlite", keyring: cluster.keyring, schema: repositorySchema, policyVersion: "test")
            defer { try? sqlite.close() }
            let pg = try await cluster.node()
            _ = try sqlite.ingestProfiles(.file(file), options: IngestOptions())
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            let ids: [(line: Int, id: String)] = [(1, Rows.id(1)), (2, " \(Rows.id(1)) "), (3, Rows.id(2)), (4, Rows.id(1))]
            let s = try sqlite.erase(customerIDs: ids, file: "ids.txt", reason: "request", audit: context)
            let p = try await onThread { try pg.erase(customerIDs: ids, file: "ids.txt", reason: "request", audit: context) }
            #expect(p.count == 4)
            // The whole receipts, consent rows included (labels, order and counts).
            let sqliteRemoved = s.map(\.removed)
            #expect(sqliteRemoved.allSatisfy { $0.map(\.0).contains("consent_states") })
            #expect(p.map { $0.removed.map(\.0) } == sqliteRemoved.map { $0.map(\.0) })
            #expect(p.map { $0.removed.map(\.1) } == sqliteRemoved.map { $0.map(\.1) })
            #expect(p.map { Dictionary(uniqueKeysWithValues: $0.removed)["wrapped_data_key"] } == [1, 0, 1, 0])
            #expect(try await onThread { try pg.storedCounts() }[0] == 2)
            #expect(try sqlite.status().subjects == 2)
            let v = try await pg.engine.verifyAudit()
            #expect(v.ok)
            await pg.engine.close()
        }
    }

    /// An attribute column whose type was changed in the database (by its owner) is an
    /// integrity error on read, as every other edited row: the profile's row is decoded after
    /// its transaction, and the client library's decoding error came out as it was (not a
    /// `VaultError`, so neither its kind nor its exit status).
    @Test func anAttributeColumnOfAnotherTypeIsAnIntegrityError() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<2))
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            #expect(try await onThread { try pg.profile(customerID: Rows.id(1), fields: ["age"]) } != nil)
            try await cluster.db.superuser(["ALTER TABLE profilevault.attributes ALTER COLUMN age TYPE text USING age::text"])
            do {
                _ = try await onThread { try pg.profile(customerID: Rows.id(1), fields: ["age"]) }
                Issue.record("a text column was read as an int attribute")
            } catch let e as VaultError {
                #expect(e.kind == .integrity, "\(e.kind)")
            } catch {
                Issue.record("not a VaultError: \(type(of: error))")
            }
            await pg.engine.close()
        }
    }

    /// An erasure reason with U+0000 (an HTTP `?reason=%00`) is invalid input before anything
    /// is erased, as on SQLite; it was the server's refusal of the `suppressed` row's text (an
    /// internal failure, exit 1).
    @Test func aReasonWithANulIsInvalidInput() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<2))
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            do {
                _ = try await onThread { try pg.erase(customerIDs: [(1, Rows.id(1))], file: nil, reason: "request\u{0}", audit: context) }
                Issue.record("a reason with U+0000 was accepted")
            } catch let e as VaultError {
                #expect(e.kind == .invalidInput && e.message == "the erasure reason contains the control character U+0000", "\(e.kind)")
            }
            #expect(try await onThread { try pg.exists(customerID: Rows.id(1)) })
            await pg.engine.close()
        }
    }

    /// Statement boundaries and huge values: a transaction of more than one 4,096-row statement
    /// with a customer repeated across the boundary (the later record wins, one subject);
    /// events whose 64 KiB items differ only in their last byte are two events (the dedup key
    /// is the item's SHA-256), and the same file again adds none; a lookup value that
    /// normalises to nothing finds nothing.
    @Test func statementBoundariesAndHugeItems() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            var again = Rows.row(0)
            again[2] = "Renamed Across The Boundary"
            let file = try cluster.write("p.csv", Rows.csv(0..<4_099, extra: [again]))
            let report = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            #expect(report.inserted == 4_099 && report.updated == 1)
            #expect(try await onThread { try pg.profile(customerID: Rows.id(0), fields: ["full_name"]) }?.fields.first?.value == .text("Renamed Across The Boundary"))
            #expect(try await onThread { try pg.storedCounts() }[0] == 4_099)
            let base = String(repeating: "x", count: 65_535)
            let events = try cluster.write("e.csv", "customer_id,kind,item,value,time\n"
                + "\(Rows.id(1)),purchase,\(base)a,1,2026-10-01T12:00:00Z\n\(Rows.id(1)),purchase,\(base)b,1,2026-10-01T12:00:00Z\n")
            let first = try await onThread { try pg.ingestEvents(.file(events), options: IngestOptions()) }
            #expect(first.inserted == 2 && first.updated == 0)
            let second = try await onThread { try pg.ingestEvents(.file(events), options: IngestOptions()) }
            #expect(second.inserted == 0 && second.updated == 2)
            #expect(try await onThread { try pg.find(field: "email", value: "  \t ") } == [])
            await pg.engine.close()
        }
    }

    /// An erasure and an events ingest on two nodes, on the same two customers, do not
    /// deadlock. The events transaction has locked customer X (its first 4,096-row statement)
    /// and waits for Y; the erasure (Y, then X) waits for Y too, held by a third session. When
    /// that session lets Y go, the erasure used to lock Y and wait for X while the ingest waited
    /// for Y: PostgreSQL broke the deadlock by failing one of them (40P01, an internal failure).
    /// The events transaction now takes the subjects lock shared, as profile ingests do, so it
    /// waits for the erasure as a whole (and then finds both customers gone).
    @Test func anErasureAndAnEventsIngestDoNotDeadlock() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<3))
            _ = try await onThread { try a.ingestProfiles(.file(file), options: IngestOptions()) }
            var lines = ["customer_id,kind,item,value,time"]
            for i in 0..<4_096 { lines.append("\(Rows.id(1)),purchase,sku-\(i),1,2026-10-01T12:00:00Z") }
            lines.append("\(Rows.id(2)),purchase,sku-y,1,2026-10-01T12:00:00Z")
            let events = try cluster.write("e.csv", lines.joined(separator: "\n") + "\n")
            let y = AuditLog.hex(try a.pseudonym(ofCustomerID: Rows.id(2)))
            let db = cluster.db
            /// Waits (polling, up to 60 s) until `n` sessions of the test database wait for a lock.
            func waiters(_ n: Int64) async throws {
                for _ in 0..<600 {
                    if try await db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") >= n { return }
                    try await Task.sleep(nanoseconds: 100_000_000)
                }
                Issue.record("\(n) sessions never waited for a lock")
            }
            let holder = try db.ownerEngine(pool: 1)
            let (erasure, ingest) = try await holder.transaction("holding customer Y") { conn in
                try await holder.exec(conn, PostgresQuery(unsafeSQL: "SELECT 1 FROM profilevault.subjects WHERE pseudonym = '\\x\(y)'::bytea FOR UPDATE"))
                let erasure = Task { try await onThread { try a.erase(customerIDs: [(1, Rows.id(2)), (2, Rows.id(1))], file: nil, reason: "request", audit: context) } }
                try await waiters(1)
                let ingest = Task { try await onThread { try b.ingestEvents(.file(events), options: IngestOptions()) } }
                try await waiters(2)
                return (erasure, ingest)
            }
            await holder.close()
            let receipts = try await erasure.value
            #expect(receipts.count == 2)
            let report = try await ingest.value
            #expect(report.inserted == 0 && report.rejected == 4_097)
            #expect(try await onThread { try a.storedCounts() } == [1, 5, 2, 1, 0])
            await a.engine.close()
            await b.engine.close()
        }
    }

    /// More rows edited in the database, here with the service role's own grants (UPDATE on
    /// `pii`): a ciphertext moved to another field of the same subject, and an old ciphertext
    /// of the same subject and field replayed after a re-ingest wrapped a new data key, are
    /// integrity errors; a blind-index MAC copied to another subject never makes `find` answer
    /// that subject (the match is confirmed by decrypting).
    @Test func ciphertextsAreBoundToTheirFieldAndDataKey() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let db = cluster.db
            _ = try await onThread { try pg.ingestProfiles(.file(try cluster.write("p.csv", Rows.csv(0..<3))), options: IngestOptions()) }
            let all = Set(repositorySchema.fields.map(\.name))
            let ids = (0..<3).map { AuditLog.hex(try! pg.pseudonym(ofCustomerID: Rows.id($0))) }
            func subject(_ i: Int) -> String { "(SELECT id FROM profilevault.subjects WHERE pseudonym = '\\x\(ids[i])'::bytea)" }
            func asNode(_ sql: String) async throws {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e == nil, "\(sql)")
            }
            func expectIntegrity(_ what: String) async {
                do {
                    _ = try await onThread { try pg.profile(customerID: Rows.id(1), fields: all) }
                    Issue.record("\(what) was not noticed")
                } catch let e as VaultError {
                    #expect(e.kind == .integrity, "\(what)")
                } catch {
                    Issue.record("\(what): \(type(of: error))")
                }
            }
            var changed = Rows.row(1)
            changed[1] = "changed.address@example.org"
            let reingest = try cluster.write("p1.csv", Rows.csv(0..<0, extra: [changed]))
            // Customer 1's e-mail ciphertext (c1) written into its full_name column (c2).
            try await asNode("UPDATE profilevault.pii SET c2 = c1 WHERE subject_id = \(subject(1))")
            await expectIntegrity("a ciphertext moved to another field")
            // Customer 1's old e-mail ciphertext kept aside, customer 1 re-ingested (new data key),
            // the old ciphertext written back.
            let old = try await TestDatabase.strings(db, "SELECT encode(c1, 'hex') FROM profilevault.pii WHERE subject_id = \(subject(1))")
            _ = try await onThread { try pg.ingestProfiles(.file(reingest), options: IngestOptions()) }
            #expect(try await onThread { try pg.profile(customerID: Rows.id(1), fields: ["email"]) }?.fields.first?.value == .text("changed.address@example.org"))
            try await asNode("UPDATE profilevault.pii SET c1 = '\\x\(old[0])'::bytea WHERE subject_id = \(subject(1))")
            await expectIntegrity("an old ciphertext replayed under a new data key")
            // Customer 0's e-mail MAC copied onto customer 2: find answers customer 0 only.
            try await asNode("UPDATE profilevault.pii SET m1 = (SELECT m1 FROM profilevault.pii WHERE subject_id = \(subject(0))) WHERE subject_id = \(subject(2))")
            #expect(try await onThread { try pg.find(field: "email", value: Rows.email(0)) } == [Rows.id(0)])
            #expect(try await onThread { try pg.find(field: "email", value: Rows.email(2)) } == [])
            await pg.engine.close()
        }
    }
}
