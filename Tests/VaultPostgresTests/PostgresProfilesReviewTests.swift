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
            // The consent ledger is not on PostgreSQL yet: SQLite's receipts also count consent rows.
            let sqliteRemoved = s.map { $0.removed.filter { !$0.0.hasPrefix("consent_") } }
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

    /// An erasure reason with U+0000 (an HTTP `?reason=%00`, which SQLite stores) is a usage
    /// error before anything is erased; it was the server's refusal of the `suppressed` row's
    /// text (an internal failure, exit 1).
    @Test func aReasonWithANulIsAUsageError() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<2))
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            do {
                _ = try await onThread { try pg.erase(customerIDs: [(1, Rows.id(1))], file: nil, reason: "request\u{0}", audit: context) }
                Issue.record("a reason with U+0000 was accepted")
            } catch let e as VaultError {
                #expect(e.kind == .usage, "\(e.kind)")
            }
            #expect(try await onThread { try pg.exists(customerID: Rows.id(1)) })
            await pg.engine.close()
        }
    }
}
