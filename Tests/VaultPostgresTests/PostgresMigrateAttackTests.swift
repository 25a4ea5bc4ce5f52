import Foundation
import GRDB
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Adversarial review of `profilectl migrate`: a source SQLite file edited by a file-level
/// attacker must be refused as an integrity error with NOTHING committed to the target (so the
/// operator can fix the source and migrate again), never a half-verified copy left behind.
@Suite(.serialized) struct PostgresMigrateAttackTests {
    /// Each case edits a fresh source store (triggers dropped as an attacker would) and
    /// migrates it into the same database; every case must leave that database empty.
    static let damages: [(name: String, sql: String)] = [
        // The chain: checked before this review only at its head before the commit, so these
        // were committed to the target and only then found not to verify.
        ("a middle audit entry rewritten, its hash column kept",
         "DROP TRIGGER IF EXISTS audit_no_update; UPDATE audit SET entry = replace(entry, '\"tester\"', '\"forger\"') WHERE seq = 2"),
        ("a middle audit entry reformatted (the same JSON, not its canonical bytes)",
         "DROP TRIGGER IF EXISTS audit_no_update; UPDATE audit SET entry = replace(entry, '\"tester\"', '\"tes\\u0074er\"') WHERE seq = 3"),
        ("a middle checkpoint's signature zeroed",
         "DROP TRIGGER IF EXISTS audit_checkpoints_no_update; UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = (SELECT min(seq) FROM audit_checkpoints)"),
        ("an audit row at sequence 0, which the ordered read skips",
         "INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (0, 0, '{}', zeroblob(32), zeroblob(32), NULL)"),
        // Rows PostgreSQL's constraints refuse: the source's damage, not a server failure
        // (they were rolled back, but reported as not-found or internal errors).
        ("an event of a subject that is not there",
         "UPDATE events SET subject_id = 999999 WHERE id = (SELECT min(id) FROM events)"),
        ("a consent state of a subject that is not there",
         "UPDATE consent_state SET subject_id = 999999 WHERE subject_id = (SELECT min(subject_id) FROM consent_state)"),
        ("a budget row with negative units", "UPDATE budget SET spent_units = -1"),
        // A subject id SQLite never assigns: at the top of bigint it left the copy's identity
        // sequence no id for the next new customer (every later ingest failed); it was copied.
        ("a subject moved to row id 2^63-1", Self.moveSubject(from: "max", to: "9223372036854775807")),
        ("a subject moved to row id -7", Self.moveSubject(from: "min", to: "-7")),
    ]

    /// SQL moving the subject with the smallest or largest row id (and every row naming it) to `id`.
    static func moveSubject(from which: String, to id: String) -> String {
        let old = "(SELECT \(which)(id) FROM subjects)"
        return "DROP TRIGGER IF EXISTS consent_no_update; "
            + ["pii", "attributes", "events", "consent", "consent_state"].map { "UPDATE \($0) SET subject_id = \(id) WHERE subject_id = \(old); " }.joined()
            + "UPDATE subjects SET id = \(id) WHERE id = \(old)"
    }

    @Test(arguments: damages.indices) func aDamagedSourceIsRefusedWithNothingCommitted(_ index: Int) async throws {
        let (name, sql) = Self.damages[index]
        try await TestDatabase.with { db in
            let url = db.owner.description
            let env = PostgresMigrateTests.environment(db)
            let keyring = Keyring.generate(note: "test")
            let dir = NSTemporaryDirectory() + "pvmigx-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let sqlite = try PostgresMigrateTests.source(dir, keyring: keyring)
            defer { try? sqlite.close() }
            let changed = try await onThread { try sqlite.pool.writeWithoutTransaction { db in
                try db.execute(sql: sql)
                return db.changesCount
            } }
            #expect(changed == 1, "\(name): the edit changed \(changed) rows")
            do {
                _ = try await onThread {
                    try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                              audit: context, batch: 8, environment: env)
                }
                Issue.record("\(name): the damaged source was copied")
            } catch let e as VaultError {
                #expect(e.kind == .integrity, "\(name): \(e.kind) \(e.message)")
            }
            for table in ["subjects", "events", "consent", "consent_state", "dp_budget", "policy_history", "suppressed", "audit_log", "audit_checkpoints"] {
                #expect(try await db.count("SELECT count(*) FROM profilevault.\(table)") == 0, "\(name): \(table) was written")
            }
            #expect(try await db.count("SELECT seq FROM profilevault.audit_head") == 0, "\(name): the head moved")
            // The database is still a target: the repaired source (a fresh one) copies into it.
            let dir2 = NSTemporaryDirectory() + "pvmigx-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir2, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir2) }
            let good = try PostgresMigrateTests.source(dir2, keyring: keyring)
            defer { try? good.close() }
            let report = try await onThread {
                try PostgresStore.migrate(from: good, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            #expect(report.subjects == 59 && report.headSequence == report.auditEntries + 1)
        }
    }

    /// A consent source is copied as it is: the copy passed "no source" as the text U+0001, so a
    /// source that was U+0001 (the store takes any text) became NULL on PostgreSQL.
    @Test func aConsentSourceIsCopiedAsItIs() async throws {
        try await TestDatabase.with { db in
            let keyring = Keyring.generate(note: "test")
            let dir = NSTemporaryDirectory() + "pvmigx-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let sqlite = try PostgresMigrateTests.source(dir, keyring: keyring)
            defer { try? sqlite.close() }
            _ = try sqlite.setConsent([(1, Rows.id(40))], file: nil, purpose: "analytics", granted: true, source: "\u{01}", policyVersion: "test", audit: context)
            _ = try sqlite.setConsent([(1, Rows.id(41))], file: nil, purpose: "analytics", granted: true, source: "", policyVersion: "test", audit: context)
            let (nulls, controls, empties) = try await onThread { try sqlite.pool.read { db in
                (try Int64.fetchOne(db, sql: "SELECT count(*) FROM consent WHERE source IS NULL") ?? -1,
                 try Int64.fetchOne(db, sql: "SELECT count(*) FROM consent WHERE source = char(1)") ?? -1,
                 try Int64.fetchOne(db, sql: "SELECT count(*) FROM consent WHERE source = ''") ?? -1)
            } }
            #expect(nulls == 1 && controls == 1 && empties == 1)
            let url = db.owner.description
            let env = PostgresMigrateTests.environment(db)
            _ = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            #expect(try await db.count("SELECT count(*) FROM profilevault.consent WHERE source IS NULL") == nulls)
            #expect(try await db.count("SELECT count(*) FROM profilevault.consent WHERE source = chr(1)") == controls)
            #expect(try await db.count("SELECT count(*) FROM profilevault.consent WHERE source = ''") == empties)
        }
    }

    /// A `--to` location that holds a password is refused before anything is read or written,
    /// naming `--to` (it said `--store`, an option the command was not given) and never the password.
    @Test func aPasswordInTheTargetURLIsRefusedByName() throws {
        let dir = NSTemporaryDirectory() + "pvmigx-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keyring = Keyring.generate(note: "test")
        let sqlite = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: repositorySchema, policyVersion: "test")
        defer { try? sqlite.close() }
        for url in ["postgres://owner:Hunter2Secret@127.0.0.1:1/db", "postgres://owner@127.0.0.1:1/db?password=Hunter2Secret"] {
            do {
                _ = try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, audit: context, environment: [:])
                Issue.record("a URL with a password was used")
            } catch let e as VaultError {
                #expect(e.kind == .configuration && e.message.hasPrefix("--to: ") && !e.message.contains("Hunter2Secret"), "\(e.message)")
            }
        }
    }

    /// The store's id and budget-period origin are carried as the SQLite store reads them: a
    /// source whose meta rows `created_at` and `store_id` are gone counts its periods from 0 and
    /// MACs its artifacts under the empty id; the copy kept the ones init had just made, so
    /// its budget windows were shifted (the source's spent rows no longer the current ones).
    @Test func missingMetaRowsAreReadAsSQLiteReadsThem() async throws {
        try await TestDatabase.with { db in
            let keyring = Keyring.generate(note: "test")
            let dir = NSTemporaryDirectory() + "pvmigx-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let sqlite = try PostgresMigrateTests.source(dir, keyring: keyring)
            defer { try? sqlite.close() }
            try await onThread { try sqlite.pool.write { db in try db.execute(sql: "DELETE FROM meta WHERE key IN ('created_at', 'store_id')") } }
            let sourceID = sqlite.storeID
            #expect(sourceID == "")
            let url = db.owner.description
            let env = PostgresMigrateTests.environment(db)
            _ = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            #expect(try await db.count("SELECT count(*) FROM profilevault.meta WHERE key = 'created_at' AND value = '0'") == 1)
            #expect(try await db.count("SELECT count(*) FROM profilevault.meta WHERE key = 'store_id' AND value = ''") == 1)
        }
    }
}
