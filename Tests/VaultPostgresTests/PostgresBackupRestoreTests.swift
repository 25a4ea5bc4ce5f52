import Foundation
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres
@testable import VaultStore

/// Backups that remember erasures on PostgreSQL (issue 20 part 3): `backup` reads every table in
/// one snapshot into a sealed file; `restore --to postgres://` loads it into a new database and
/// re-applies every erasure the journal recorded after the backup, in the same transaction.
@Suite(.serialized) struct PostgresBackupRestoreTests {
    @Test func backupEraseRestoreKeepsTheSubjectErasedAndATamperedBackupRestoresNothing() async throws {
        try await ProfileCluster.with { cluster in
            // A store with events, consent, a restriction and a chain with checkpoints: the
            // migrate test's source, moved to PostgreSQL.
            let sqlite = try PostgresMigrateTests.source(cluster.dir, keyring: cluster.keyring)
            _ = try PostgresStore.migrate(from: sqlite, to: cluster.db.owner.description, keyring: cluster.keyring, schema: repositorySchema,
                                          serviceRole: cluster.db.serviceRole, audit: context, environment: PostgresMigrateTests.environment(cluster.db))
            try sqlite.close()
            // As a deployment opens it: the chain signed with the keyring's key.
            let node = try await onThread {
                try PostgresStore.open(url: cluster.db.owner.description, keyring: cluster.keyring, schema: repositorySchema, leastPrivilege: false,
                                       environment: PostgresMigrateTests.environment(cluster.db))
            }
            let backupPath = cluster.dir + "/pg.backup"
            let erased = Rows.id(7)
            let (backup, receipt, journal, sourceSubjects, erasedPseudonym) = try await onThread { () -> ((Int64, String), ErasureReceipt, [UInt8], Int64, [UInt8]) in
                let file = try OutputFile(path: backupPath, force: false, protecting: [], what: "the backup")
                let b = try node.backup(into: file)
                let receipt = try #require(try node.erase(customerIDs: [(1, erased)], file: nil, reason: "asked", audit: context).first)
                let journal = node.sealErasureJournal(try node.erasureJournal())
                return (b, receipt, journal, Int64(try node.storedCounts()[0]), try node.pseudonym(ofCustomerID: erased))
            }
            var st = stat()
            #expect(stat(backupPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
            let bytes = try #require(FileManager.default.contents(atPath: backupPath))
            #expect(bytes.starts(with: Array("{\"audit_head\":\"\(backup.1)\"".utf8)))
            // No customer ID in the clear: PII is ciphertext in the backup as in the store.
            #expect(bytes.range(of: Data(erased.utf8)) == nil)

            try await TestDatabase.with { target in
                let env = PostgresMigrateTests.environment(target)
                let url = target.owner.description
                // A backup with one byte changed inside a row: refused naming the record, nothing restored.
                var tampered = bytes
                let at = try #require(tampered.range(of: Data("\"t\":\"subjects\"".utf8))).lowerBound - 20
                tampered[at] = tampered[at] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
                let tamperedPath = try cluster.write("tampered.backup", "")
                #expect(FileManager.default.createFile(atPath: tamperedPath, contents: tampered))
                // A backup cut inside a record.
                let cutPath = try cluster.write("cut.backup", "")
                #expect(FileManager.default.createFile(atPath: cutPath, contents: bytes.prefix(bytes.count - 25)))
                try await onThread {
                    for p in [tamperedPath, cutPath] {
                        do {
                            _ = try PostgresStore.restore(backup: p, to: url, keyring: cluster.keyring, schema: repositorySchema, serviceRole: target.serviceRole,
                                                          journal: (journal, "j"), audit: context, environment: env)
                            Issue.record("a damaged backup was restored")
                        } catch let e as VaultError {
                            #expect(e.kind == .integrity && e.message.contains("\(p): record "), "\(e.message)")
                        }
                    }
                    // The intact backup with the journal written after the erasure.
                    let report = try PostgresStore.restore(backup: backupPath, to: url, keyring: cluster.keyring, schema: repositorySchema,
                                                           serviceRole: target.serviceRole, journal: (journal, "j"), audit: context, environment: env)
                    #expect(report.erased == 1 && report.afterBackup == 1 && report.backupSequence == backup.0)
                }
                #expect(try await target.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"store.restore\"%'") == 1)
                #expect(try await target.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%re-applied by restore%'") == 1)
                let hex = AuditLog.hex(erasedPseudonym)
                #expect(try await target.count("SELECT count(*) FROM profilevault.subjects WHERE pseudonym = decode('\(hex)', 'hex')") == 0, "key shredded")
                #expect(try await target.count("SELECT count(*) FROM profilevault.subjects") == sourceSubjects)
                #expect(try await target.count("SELECT count(*) FROM profilevault.events") > 0)
                let restored = try await onThread {
                    try PostgresStore.open(url: url, keyring: cluster.keyring, schema: repositorySchema, leastPrivilege: false, environment: env)
                }
                try await onThread {
                    #expect(try restored.exists(customerID: erased) == false)
                    #expect(try restored.exists(customerID: Rows.id(6)))
                    let record = try #require(try restored.erasure(pseudonym: erasedPseudonym))
                    #expect(record.receipt == receipt.receipt && record.auditSequence == receipt.auditSequence && record.reason == "asked")
                    // The suppression list is in force: a stale import cannot bring the subject back.
                    let csv = try cluster.write("again.csv", Rows.csv(7..<8))
                    var o = IngestOptions()
                    o.audit = context
                    #expect(throws: (any Error).self) { _ = try restored.ingestProfiles(.file(csv), options: o) }
                    #expect(try restored.verifyAudit(expectHead: nil).ok)
                    // A journal of the source no longer speaks for the restored store (its own line).
                    #expect(throws: VaultError.self) { _ = try restored.openErasureJournal(journal, label: "j") }
                }
                await restored.engine.close()
            }
            await node.engine.close()
        }
    }
}
