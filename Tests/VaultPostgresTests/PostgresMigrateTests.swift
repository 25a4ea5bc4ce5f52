import Foundation
import PostgresNIO
import Testing
import DifferentialPrivacy
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// `profilectl migrate`: a SQLite store copied to PostgreSQL, ciphertext and keys as they are,
/// the chain continued; and what must not happen (a second store overwritten, a damaged source
/// half-copied).
@Suite(.serialized) struct PostgresMigrateTests {
    /// A SQLite store with profiles, events, consent, an erasure, a budget charge and audit
    /// entries, and its directory.
    static func source(_ dir: String, keyring: Keyring) throws -> ProfileStore {
        let store = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: repositorySchema, policyVersion: "test")
        var o = IngestOptions()
        o.audit = context
        o.batchSize = 7
        try Rows.csv(0..<60).write(toFile: dir + "/p.csv", atomically: true, encoding: .utf8)
        _ = try store.ingestProfiles(.file(dir + "/p.csv"), options: o)
        let events = ["customer_id,kind,item,value,time"] + (0..<60).map { "\(Rows.id($0)),purchase,sku-\($0 % 9),\(Double($0) + 0.5),2026-10-0\(1 + $0 % 9)T12:00:00Z" }
        try (events.joined(separator: "\n") + "\n").write(toFile: dir + "/e.csv", atomically: true, encoding: .utf8)
        _ = try store.ingestEvents(.file(dir + "/e.csv"), options: o)
        _ = try store.setConsent((0..<30).map { ($0 + 1, Rows.id($0)) }, file: "ids.txt", purpose: "analytics", granted: true,
                                 source: "web form", policyVersion: "test", audit: context)
        _ = try store.setConsent([(1, Rows.id(3))], file: nil, purpose: "analytics", granted: false, source: nil, policyVersion: "test", audit: context)
        _ = try store.erase(customerIDs: [(1, Rows.id(5))], file: nil, reason: "request", audit: context)
        let record = PolicyRecord(sequence: 0, version: "test", sha256: String(repeating: "a", count: 64), schemaSHA256: String(repeating: "b", count: 64),
                                  appliedAtMillis: 0, actor: "tester", role: "admin", summary: "{}", changes: "[]")
        _ = try store.recordPolicy(record, previous: nil, periods: ["analytics": 86_400], audit: context.record("policy.apply", .update))
        _ = try store.budgetAccountant(audit: context.record("query.count", .read, purpose: "analytics"))
            .spend(purpose: "analytics", epsilon: Epsilon(0.25)!, limit: 4, periodSeconds: 86_400)
        return store
    }

    static func environment(_ db: TestDatabase) -> [String: String] { ["PGPASSWORD": db.ownerPassword ?? ""] }

    @Test func aSQLiteStoreMovesWithItsCiphertextKeysAndChain() async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvmig-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = Keyring.generate(note: "test")
            let sqlite = try Self.source(dir, keyring: keyring)
            defer { try? sqlite.close() }
            // A restricted subject (Art. 18) stays restricted on the copy.
            _ = try sqlite.setRestriction(customerID: Rows.id(3), restricted: true, audit: context)
            let url = db.owner.description
            let env = Self.environment(db)
            let report = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            let sourceStatus = try sqlite.status()
            #expect(report.subjects == Int64(sourceStatus.subjects) && report.subjects == 59)
            #expect(report.events == Int64(sourceStatus.events) && report.events == 59)
            #expect(report.consentEntries == 30 && report.consentStates == 29 && report.suppressed == 1 && report.policies == 1 && report.budgetRows == 1)
            #expect(report.auditEntries == sourceStatus.auditEntries && report.headSequence == sourceStatus.auditEntries + 1)
            // The copy opens with the same keyring and answers as the source does.
            let copy = try await onThread { try PostgresStore.open(url: url, keyring: keyring, schema: repositorySchema, leastPrivilege: false, environment: env) }
            for i in [0, 1, 3, 5, 17, 59] {
                let a = try sqlite.profile(customerID: Rows.id(i), fields: Set(repositorySchema.fields.map(\.name)))
                let b = try await onThread { try copy.profile(customerID: Rows.id(i), fields: Set(repositorySchema.fields.map(\.name))) }
                #expect(a == b, "customer \(i)")
            }
            #expect(try await onThread { try copy.restricted(customerID: Rows.id(3)) } == true)
            #expect(try await onThread { try copy.restricted(customerID: Rows.id(1)) } == false)
            #expect(try await onThread { try copy.profile(customerID: Rows.id(5), fields: ["email"]) } == nil)
            #expect(try await onThread { try copy.erasedAt(customerID: Rows.id(5)) } != nil)
            #expect(try await onThread { try copy.find(field: "email", value: Rows.email(17)) } == [Rows.id(17)])
            // The chain: the source's entries as they were, then the migration's; it verifies,
            // and the entry at the source's head has the source's hash.
            let verification = try await copy.engine.verifyAudit(expectHead: report.head)
            #expect(verification.ok && verification.entries == Int(report.headSequence))
            let sourceHead = try sqlite.verifyAudit(expectHead: nil)
            let copiedHash = try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE seq = \(sourceStatus.auditEntries) AND encode(hash, 'hex') = '\(sourceHead.head ?? "")'")
            #expect(copiedHash == 1)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"api.operation\":\"store.migrate\"%'") == 1)
            // The model-artifact MAC's store id and the budget's period origin came along.
            let meta = try await copy.engine.meta()
            #expect(meta["store_id"] == sqlite.storeID && meta["identity_key_version"] == String(keyring.active))
            #expect(try await db.count("SELECT spent_units FROM profilevault.dp_budget") == 262_144)
            // New subjects after the copy get fresh ids (the identity sequence moved past the copied ones).
            let node = try await onThread { try PostgresStore.open(url: url, keyring: keyring, schema: repositorySchema, leastPrivilege: false, environment: env) }
            try Rows.csv(100..<103).write(toFile: dir + "/more.csv", atomically: true, encoding: .utf8)
            _ = try await onThread { try node.ingestProfiles(.file(dir + "/more.csv"), options: IngestOptions()) }
            #expect(try await db.count("SELECT count(*) FROM profilevault.subjects") == 62)
            // The ingest runs came along: each subject names the same run, and the record
            // digests too (the source's file again is unchanged on the copy); the next run's
            // id follows the copied ones.
            let a = try #require(try sqlite.accessExport(customerID: Rows.id(17)))
            let b = try #require(try await onThread { try copy.accessExport(customerID: Rows.id(17)) })
            #expect(a.createdBy != nil && a.createdBy == b.createdBy && a.updatedBy == b.updatedBy)
            try Rows.csv(6..<60).write(toFile: dir + "/same.csv", atomically: true, encoding: .utf8)
            let again = try await onThread { try node.ingestProfiles(.file(dir + "/same.csv"), options: IngestOptions()) }
            #expect(again.unchanged == 54 && again.updated == 0 && again.inserted == 0, "\(again)")
            let runs = try await TestDatabase.strings(db, "SELECT id::text FROM profilevault.ingest_batches ORDER BY id")
            #expect(runs.count == 3 && runs.last == "3", "\(runs)")
            await copy.engine.close()
            await node.engine.close()
        }
    }

    /// A store whose oldest entries were archived migrates: the copy holds the anchor and the
    /// live chain, verifies from the anchor, and the check after the copy counts the archived
    /// entries too (it used to exit 1 after committing).
    @Test func anArchivedStoreMigratesAndVerifiesFromItsAnchor() async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvmig-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = Keyring.generate(note: "test")
            let sqlite = try Self.source(dir, keyring: keyring)
            defer { try? sqlite.close() }
            let cut = AuditLog.nowMillis
            while AuditLog.nowMillis <= cut { usleep(2_000) }
            try sqlite.audit([context.record("get", .read, detail: "after the cut")])
            let archived = try sqlite.archiveAudit(before: cut + 1, to: try OutputFile(path: dir + "/a.jsonl", force: false, protecting: []), audit: context)
            #expect(archived.firstSequence == 1 && archived.entries > 0)
            let url = db.owner.description
            let env = Self.environment(db)
            let report = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            let copy = try await onThread { try PostgresStore.open(url: url, keyring: keyring, schema: repositorySchema, leastPrivilege: false, environment: env) }
            let v = try await copy.engine.verifyAudit(expectHead: report.head)
            #expect(v.ok && v.archivedThrough == archived.lastSequence, "\(v)")
            #expect(Int64(v.entries) + archived.lastSequence == report.headSequence)
            await copy.engine.close()
        }
    }

    /// A database that already holds a store is never written to; a source with a damaged
    /// row stops the copy, and the transaction leaves the target empty.
    @Test func aSecondStoreIsRefusedAndADamagedSourceLeavesNothing() async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvmig-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = Keyring.generate(note: "test")
            let sqlite = try Self.source(dir, keyring: keyring)
            let url = db.owner.description
            let env = Self.environment(db)
            // Damage: one event's time stored as text (a file-level attacker's edit).
            try await onThread { try sqlite.pool.write { db in try db.execute(sql: "UPDATE events SET time = 'yesterday' WHERE id = (SELECT max(id) FROM events)") } }
            do {
                _ = try await onThread {
                    try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                              audit: context, batch: 8, environment: env)
                }
                Issue.record("a damaged source was copied")
            } catch let e as VaultError {
                #expect(e.kind == .integrity)
            }
            #expect(try await db.count("SELECT count(*) FROM profilevault.subjects") == 0)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == 0)
            #expect(try await db.count("SELECT seq FROM profilevault.audit_head") == 0)
            try await onThread { try sqlite.pool.write { db in try db.execute(sql: "DELETE FROM events WHERE id = (SELECT max(id) FROM events)") } }
            // Now it copies; a second copy into the same database is refused, nothing added.
            _ = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            let entries = try await db.count("SELECT count(*) FROM profilevault.audit_log")
            do {
                _ = try await onThread {
                    try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                              audit: context, batch: 8, environment: env)
                }
                Issue.record("a second migration into a store was accepted")
            } catch let e as VaultError {
                #expect(e.kind == .configuration && e.message.contains("already holds a store"))
            }
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == entries)
            // Another keyring cannot copy (key check), and the message names no secret.
            let other = Keyring.generate(note: "other")
            await #expect(throws: (any Error).self) {
                try await onThread {
                    try PostgresStore.migrate(from: sqlite, to: url, keyring: other, schema: repositorySchema, serviceRole: db.serviceRole,
                                              audit: context, batch: 8, environment: env)
                }
            }
            try? sqlite.close()
        }
    }
}
