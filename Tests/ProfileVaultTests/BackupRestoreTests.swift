import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
@testable import ProfileVault
@testable import VaultStore

/// Backups that remember erasures (issue 20 part 3): a backup taken before an erasure, restored
/// with the erasure journal, keeps the subject erased; without the journal, or with a journal
/// that was altered, the restore is refused.
@Suite struct BackupRestoreTests {
    /// A fixture with a backup taken before C1 is erased; returns the backup path, C1's raw
    /// secrets (wrapped DEK, ciphertexts, MACs) as the backup holds them, and the receipt.
    func backupThenErase(_ f: VaultFixture) throws -> (backup: String, secrets: [String], receipt: ErasureReceipt) {
        let officer = try f.vault("privacy_officer")
        let raw = try #require(try officer.store.rawRows(customerID: "C1"))
        let secrets = [raw.wrappedDEKHex] + raw.pii.map(\.ciphertextHex) + raw.blindIndex.map(\.macHex)
        let backup = f.dir + "/backup.db"
        let b = try officer.backup(to: backup)
        #expect(b.sequence > 0)
        var st = stat()
        #expect(stat(backup, &st) == 0 && st.st_mode & 0o777 == 0o600)
        // The backup holds C1's wrapped key (it was taken before the erasure).
        let bytes = try #require(FileManager.default.contents(atPath: backup))
        #expect(bytes.range(of: Data(AuditLog.unhex(raw.wrappedDEKHex)!)) != nil)
        let receipt = try #require(try officer.erase(.one("C1"), reason: "request 7").first)
        return (backup, secrets, receipt)
    }

    func config(_ f: VaultFixture, store: String, role: String = "privacy_officer") -> VaultConfiguration {
        VaultConfiguration(storePath: store, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "t-restore", role: role))
    }

    @Test func restoredBackupKeepsTheErasedSubjectErased() throws {
        let f = try VaultFixture(profiles: 50)
        let (backup, secrets, receipt) = try backupThenErase(f)
        let journal = f.storePath + ".erasures"
        #expect(FileManager.default.fileExists(atPath: journal), "every erasure rewrites the journal beside the store")
        let target = f.dir + "/restored.sqlite"
        let r = try Vault.restore(config(f, store: target), from: backup, journal: journal, acceptResurrection: false)
        #expect(r.erased == 1 && r.afterBackup == 1 && r.journalEntries == 1)

        let restored = VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "s", role: "support"))
        let support = try Vault.open(restored)
        // get answers 66 and names the original erasure's date and receipt.
        expectKind(.notFound, "with receipt \(receipt.receipt) (audit entry \(receipt.auditSequence))") { _ = try support.get(customerID: "C1", purpose: "customer_support") }
        expectKind(.notFound, "erased on") { _ = try support.get(customerID: "C1", purpose: "customer_support") }
        #expect(try support.get(customerID: "C2", purpose: "customer_support").customerID == "C2")
        // No byte of C1's wrapped key, ciphertext or blind index is left in the restored files.
        for suffix in ["", "-wal", "-shm"] {
            guard let file = FileManager.default.contents(atPath: target + suffix) else { continue }
            for s in secrets { #expect(file.range(of: Data(AuditLog.unhex(s)!)) == nil, "erased bytes left in restored\(suffix)") }
        }
        // A re-ingest of C1 is refused as on the live store (the suppression list came back).
        let op = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "o", role: "operator")))
        var o = IngestOptions()
        o.format = .csv
        expectKind(.invalidInput) { _ = try op.ingestProfiles(path: f.write("again.csv", CLIStore.rows(2)), options: o) }
        // The restored store's log verifies and records the restore.
        let auditor = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "a", role: "auditor")))
        #expect(try auditor.verifyAudit(expectHead: nil).ok)
        let (bytes, _, _, _) = try auditor.exportAudit(Vault.AuditExportRequest(flat: true))
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\"store.restore\"") && text.contains("re-applied by restore"))
        // The live store recorded the backup, naming its head.
        let live = try f.vault("auditor")
        let (liveBytes, _, _, _) = try live.exportAudit(Vault.AuditExportRequest(flat: true))
        #expect(String(decoding: liveBytes, as: UTF8.self).contains("\"store.backup\""))
    }

    /// The review's finding: a retention run shreds subjects (and lists them as suppressed) but
    /// named none of them to the journal, so restoring a backup taken before it brought them
    /// back. Its erasures now reach the journal.
    @Test func aRetentionRunReachesTheJournalAndARestoreKeepsItsSubjectsErased() throws {
        let f = try VaultFixture(profiles: 5)
        let officer = try f.vault("privacy_officer")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        let r = try officer.applyRetention(asOf: Int64(Date().timeIntervalSince1970) + 20 * 365 * 86_400, dryRun: false)
        #expect(r.subjectsErased == 5)
        let path = f.storePath + ".erasures"
        let j = try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: path))), label: "j")
        #expect(j.entries.count == 5)
        let target = f.dir + "/r.sqlite"
        let restored = try Vault.restore(config(f, store: target), from: backup, journal: path, acceptResurrection: false)
        #expect(restored.erased == 5)
        let support = try Vault.open(config(f, store: target, role: "support"))
        expectKind(.notFound, "erased on") { _ = try support.get(customerID: "C2", purpose: "customer_support") }
    }

    /// The review's finding: a process killed between an erasure's commit and its journal
    /// append left a journal without that erasure, and nothing caught it up. The intent
    /// recorded before the commit makes the next append (an erasure, or a backup's mark) do it.
    @Test func anErasureKilledBeforeItsJournalAppendIsCaughtUp() throws {
        let f = try VaultFixture(profiles: 10)
        let officer = try f.vault("privacy_officer")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        let path = f.storePath + ".erasures"
        func entries() throws -> Int {
            try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: path))), label: "j").entries.count
        }
        // C1's erasure commits; the process dies before its append.
        _ = try officer.beginErasureJournalIntent(permissions: ["erase"])
        _ = try officer.eraseWithoutJournal(.one("C1"), reason: "killed")
        #expect(try entries() == 0)
        _ = try officer.erase(.one("C2"), reason: "next")
        #expect(try entries() == 2, "the next erasure caught up C1")
        // Again, then a backup: its mark vouches only after catching up.
        _ = try officer.beginErasureJournalIntent(permissions: ["erase"])
        _ = try officer.eraseWithoutJournal(.one("C3"), reason: "killed")
        _ = try officer.backup(to: f.dir + "/b2.db")
        #expect(try entries() == 3, "the backup's mark caught up C3")
        let r = try Vault.restore(config(f, store: f.dir + "/r.sqlite"), from: backup, journal: path, acceptResurrection: false)
        #expect(r.erased == 3)
    }

    /// A caller refused the permission writes nothing to the store: no journal intent is
    /// recorded for a trainer's (an analyst's) erase, erase of a list, request fulfilment or retention run
    /// (each refused and audited as denied), so no later append has anything to catch up.
    @Test func aRefusedErasureRecordsNoJournalIntent() throws {
        let f = try VaultFixture(profiles: 4)
        let analyst = try f.vault("trainer")
        func intent() throws -> String? {
            try DatabaseQueue(path: f.storePath).read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'erasure_journal_intent'") }
        }
        #expect(try intent() == nil)
        expectKind(.denied, "may not erase") { _ = try analyst.erase(.one("C1"), reason: "x") }
        expectKind(.denied, "may not erase") { _ = try analyst.eraseExisting(.list(["C1"]), reason: "x") }
        expectKind(.denied, "may not retention") { _ = try analyst.applyRetention(asOf: nil, dryRun: false) }
        expectKind(.denied, "may not requests") { _ = try analyst.fulfilRequest(id: "R-1") }
        #expect(try intent() == nil, "a refused caller recorded an erasure journal intent")
        // The officer's own erasure still records and clears it.
        let officer = try f.vault("privacy_officer")
        _ = try officer.erase(.one("C1"), reason: "asked")
        #expect(try intent() == nil)
        #expect(try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: f.storePath + ".erasures"))), label: "j").entries.count == 1)
    }

    /// The review's finding: stored DP releases came back with a backup and were served by the
    /// restored store, though they were made from a population holding subjects erased since.
    @Test func aRestoredStoreServesNoReleaseOfTheBackupsPopulation() throws {
        let f = try VaultFixture(profiles: 20)
        let trainer = try f.vault("trainer")
        let q = Vault.QueryRequest(kind: .count, purpose: "analytics", epsilon: 0.125)
        #expect(try !trainer.query(q).cached)
        #expect(try trainer.query(q).cached)
        let (backup, _, _) = try backupThenErase(f)
        let target = f.dir + "/r.sqlite"
        _ = try Vault.restore(config(f, store: target), from: backup, journal: f.storePath + ".erasures", acceptResurrection: false)
        #expect(try !Vault.open(config(f, store: target, role: "trainer")).query(q).cached)
    }

    /// The review's lineage attack: a store restored from b1 (and its erasures re-applied) is
    /// backed up (b2) and then erases C3; the original store's journal, which reaches the same
    /// audit sequence number as b2 with other entries, must not count as covering b2, or
    /// restoring b2 with it would bring C3 back. And a restore must not pass a backup whose
    /// audit log was edited in the middle.
    @Test func aJournalOfAnotherLineIsRefusedAndAnEditedBackupTooAndTheSubjectStaysErased() throws {
        let f = try VaultFixture(profiles: 10)
        let (b1, _, _) = try backupThenErase(f)
        _ = try f.vault("privacy_officer").erase(.one("C2"), reason: "second")
        let j1 = f.dir + "/j1.erasures"
        try FileManager.default.copyItem(atPath: f.storePath + ".erasures", toPath: j1)
        let r = f.dir + "/r.sqlite"
        _ = try Vault.restore(config(f, store: r), from: b1, journal: j1, acceptResurrection: false)
        let inR = try Vault.open(config(f, store: r))
        let b2 = f.dir + "/b2.db"
        _ = try inR.backup(to: b2)
        _ = try inR.erase(.one("C3"), reason: "in r")
        // The original store's journal for b2: refused, nothing restored.
        let r2 = f.dir + "/r2.sqlite"
        expectKind(.integrity, "another store") { _ = try Vault.restore(config(f, store: r2), from: b2, journal: j1, acceptResurrection: false) }
        #expect(!FileManager.default.fileExists(atPath: r2))
        // r's own journal: C3 stays erased.
        _ = try Vault.restore(config(f, store: r2), from: b2, journal: r + ".erasures", acceptResurrection: false)
        let support = try Vault.open(VaultConfiguration(storePath: r2, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "s", role: "support")))
        expectKind(.notFound, "erased on") { _ = try support.get(customerID: "C3", purpose: "customer_support") }
        expectKind(.notFound, "erased on") { _ = try support.get(customerID: "C1", purpose: "customer_support") }
        #expect(try support.get(customerID: "C4", purpose: "customer_support").customerID == "C4")

        // A backup with an audit entry edited in the middle (its triggers dropped first).
        let edited = f.dir + "/edited.db"
        try FileManager.default.copyItem(atPath: b1, toPath: edited)
        let q = try DatabaseQueue(path: edited)
        try q.write { db in
            for t in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'") {
                try db.execute(sql: "DROP TRIGGER \"\(t)\"")
            }
            try db.execute(sql: "UPDATE audit SET entry = replace(entry, '\"status\":\"ok\"', '\"status\":\"no\"') WHERE seq = 1")
        }
        try q.close()
        let r3 = f.dir + "/r3.sqlite"
        expectKind(.integrity, "does not verify") { _ = try Vault.restore(config(f, store: r3), from: edited, journal: f.storePath + ".erasures", acceptResurrection: false) }
        #expect(!FileManager.default.fileExists(atPath: r3))
    }

    /// Two threads erasing at once (two vaults, two open file descriptions) each append to the
    /// journal beside the store, taking turns on its lock: it holds every erasure of both.
    @Test func concurrentErasuresAllReachTheJournal() throws {
        let f = try VaultFixture(profiles: 40)
        let officers = [try f.vault("privacy_officer"), try f.vault("privacy_officer")]
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            for i in stride(from: k, to: 40, by: 2) { _ = try? officers[k].erase(.one("C\(i)"), reason: "r") }
        }
        let bytes = try #require(FileManager.default.contents(atPath: f.storePath + ".erasures"))
        let journal = try officers[0].store.openErasureJournal(Array(bytes), label: "j")
        #expect(journal.entries.count == 40)
    }

    @Test func subjectIngestedAfterTheBackupAndErasedStaysSuppressed() throws {
        let f = try VaultFixture(profiles: 5)
        let officer = try f.vault("privacy_officer"), op = try f.vault("operator")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        var o = IngestOptions()
        o.format = .csv
        _ = try op.ingestProfiles(path: f.write("late.csv", CLIStore.header + "\nL9,l9@example.com,Late Nine,+49 30 9,1980-01-01,40,female,DE,1000\n"), options: o)
        _ = try officer.erase(.one("L9"), reason: "late")
        let target = f.dir + "/r.sqlite"
        let r = try Vault.restore(config(f, store: target), from: backup, journal: f.storePath + ".erasures", acceptResurrection: false)
        #expect(r.erased == 0 && r.suppressed == 1)
        let restored = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "o", role: "operator")))
        expectKind(.invalidInput) { _ = try restored.ingestProfiles(path: f.write("again.csv", CLIStore.header + "\nL9,l9@example.com,Late Nine,+49 30 9,1980-01-01,40,female,DE,1000\n"), options: o) }
    }

    @Test func restoreWithoutAJournalIsRefusedUnlessResurrectionIsAccepted() throws {
        let f = try VaultFixture(profiles: 5)
        let (backup, _, _) = try backupThenErase(f)
        let target = f.dir + "/r.sqlite"
        expectKind(.usage, "erasure journal") { _ = try Vault.restore(config(f, store: target), from: backup, journal: nil, acceptResurrection: false) }
        #expect(!FileManager.default.fileExists(atPath: target))
        // Without the permission `keys`: refused before anything is written.
        expectKind(.denied) { _ = try Vault.restore(config(f, store: target, role: "operator"), from: backup, journal: f.storePath + ".erasures", acceptResurrection: false) }
        #expect(!FileManager.default.fileExists(atPath: target))
        let r = try Vault.restore(config(f, store: target), from: backup, journal: nil, acceptResurrection: true)
        #expect(r.journalEntries == nil && r.erased == 0)
        let support = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "s", role: "support")))
        #expect(try support.get(customerID: "C1", purpose: "customer_support").customerID == "C1", "resurrected, as accepted")
        let auditor = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "a", role: "auditor")))
        let (bytes, _, _, _) = try auditor.exportAudit(Vault.AuditExportRequest(flat: true))
        #expect(String(decoding: bytes, as: UTF8.self).contains("\"store.restore_without_journal\""))
        #expect(try auditor.verifyAudit(expectHead: nil).ok)
        // A restore never goes over an existing store.
        expectKind(.configuration) { _ = try Vault.restore(config(f, store: target), from: backup, journal: nil, acceptResurrection: true) }
        expectKind(.configuration) { _ = try Vault.restore(config(f, store: f.storePath), from: backup, journal: nil, acceptResurrection: true) }
    }

    @Test func alteredJournalIsRefusedAndLeavesNoStore() throws {
        let f = try VaultFixture(profiles: 10)
        let officer = try f.vault("privacy_officer")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        _ = try officer.erase(.one("C1"), reason: "one")
        _ = try officer.erase(.one("C2"), reason: "two")
        let journal = try #require(FileManager.default.contents(atPath: f.storePath + ".erasures"))
        var lines = String(decoding: journal, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        #expect(lines.count == 4, "header, the backup's mark, two erasures")
        #expect(lines[1].contains("\"mark\":\"backup\""))
        func attempt(_ name: String, _ text: String, record: Int) throws {
            let path = try f.write(name, text)
            let target = f.dir + "/r-\(name).sqlite"
            expectKind(.integrity, "\(path): record \(record): the erasure journal") {
                _ = try Vault.restore(config(f, store: target), from: backup, journal: path, acceptResurrection: false)
            }
            #expect(!FileManager.default.fileExists(atPath: target), "a refused restore leaves no store behind")
        }
        // A record deleted: C1's erasure (so C1 would come back); the next record no longer chains.
        try attempt("dropped", ([lines[0], lines[1], lines[3]]).joined(separator: "\n") + "\n", record: 2)
        // The file cut inside its last record (a torn append or a truncation).
        try attempt("truncated", ([lines[0], lines[1], lines[2], String(lines[3].prefix(40))]).joined(separator: "\n"), record: 3)
        try attempt("truncated-at-mac", ([lines[0], lines[1], lines[2], String(lines[3].dropLast(10))]).joined(separator: "\n") + "\n", record: 3)
        // One byte flipped in an entry (another pseudonym), MAC kept.
        var chars = Array(lines[2])
        let at = try #require(lines[2].range(of: "\"pseudonym\":\"")).upperBound
        let i = lines[2].distance(from: lines[2].startIndex, to: at)
        chars[i] = chars[i] == "0" ? "1" : "0"
        try attempt("altered", ([lines[0], lines[1], String(chars), lines[3]]).joined(separator: "\n") + "\n", record: 2)
        // Two records swapped.
        try attempt("reordered", ([lines[0], lines[1], lines[3], lines[2]]).joined(separator: "\n") + "\n", record: 2)
        // A record replayed at the end.
        try attempt("appended", (lines + [lines[2]]).joined(separator: "\n") + "\n", record: 4)
        // The backup's mark removed (the journal would no longer vouch for the backup).
        try attempt("unmarked", ([lines[0], lines[2], lines[3]]).joined(separator: "\n") + "\n", record: 1)
        // Another store's journal (its own keyring and store id).
        let other = try VaultFixture(profiles: 3)
        let otherOfficer = try Vault.open(VaultConfiguration(storePath: other.storePath, keysPath: other.keys, policyDirectory: other.policies,
                                                             actor: Actor(name: "x", role: "privacy_officer")))
        _ = try otherOfficer.erase(.one("C1"), reason: "x")
        try attempt("other", String(decoding: try #require(FileManager.default.contents(atPath: other.storePath + ".erasures")), as: UTF8.self), record: 0)
        // A journal of another store under the same keyring (another store id).
        let sibling = f.dir + "/sibling.sqlite"
        let sib = try Vault.initialize(VaultConfiguration(storePath: sibling, keysPath: f.keys, policyDirectory: f.policies,
                                                          actor: Actor(name: "x", role: "privacy_officer")))
        _ = try sib.exportErasureJournal(to: f.dir + "/sibling.erasures")
        try attempt("sibling", String(decoding: try #require(FileManager.default.contents(atPath: f.dir + "/sibling.erasures")), as: UTF8.self), record: 0)
        // The whole-file format (audit erasures --out) cut short: its end record is missing.
        let whole = f.dir + "/whole.erasures"
        _ = try officer.exportErasureJournal(to: whole)
        var wlines = String(decoding: try #require(FileManager.default.contents(atPath: whole)), as: UTF8.self).split(separator: "\n").map(String.init)
        wlines.removeLast()
        try attempt("whole-truncated", wlines.joined(separator: "\n") + "\n", record: 3)
        // The intact journals restore, in either format.
        let r = try Vault.restore(config(f, store: f.dir + "/ok.sqlite"), from: backup, journal: f.storePath + ".erasures", acceptResurrection: false)
        #expect(r.erased == 2)
        let r2 = try Vault.restore(config(f, store: f.dir + "/ok2.sqlite"), from: backup, journal: whole, acceptResurrection: false)
        #expect(r2.erased == 2)
    }

    /// The journal beside the store is append-only: every erasure adds its record at the end
    /// and leaves every byte before it as it was (the old journal was rewritten whole each time).
    @Test func eachErasureAppendsOneRecordAndRewritesNothing() throws {
        let f = try VaultFixture(profiles: 10)
        let officer = try f.vault("privacy_officer")
        _ = try officer.erase(.one("C0"), reason: "first")
        let path = f.storePath + ".erasures"
        var before = try #require(FileManager.default.contents(atPath: path))
        for i in 1..<6 {
            _ = try officer.erase(.one("C\(i)"), reason: "r\(i)")
            let after = try #require(FileManager.default.contents(atPath: path))
            #expect(after.count > before.count && after.prefix(before.count) == before, "erasure \(i) rewrote earlier records")
            let added = String(decoding: after.suffix(from: before.count), as: UTF8.self)
            #expect(added.split(separator: "\n").count == 1 && added.contains("\"reason\":\"r\(i)\""), "one record per erasure")
            before = after
        }
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let j = try officer.store.openErasureJournal(Array(before), label: "j")
        #expect(j.formatVersion == 2 && j.entries.count == 6)
    }

    /// A journal in the whole-file format 1 beside the store (written before journals were
    /// append-only) is converted once, keeping its entries and the head it vouched for.
    @Test func aWholeFileJournalIsConvertedOnceAndKeepsItsEntries() throws {
        let f = try VaultFixture(profiles: 10)
        let officer = try f.vault("privacy_officer")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        _ = try officer.erase(.one("C1"), reason: "one")
        let path = f.storePath + ".erasures"
        // The format-1 journal as the store wrote it before: the list with a trailer.
        let store = try #require(officer.store as? ProfileStore)
        let old = try store.erasureJournal()
        try FileManager.default.removeItem(atPath: path)
        #expect(FileManager.default.createFile(atPath: path, contents: Data(store.sealErasureJournal(old)), attributes: [.posixPermissions: 0o600]))
        // A re-ingest removes C1 from the suppression list: only the old journal still has it.
        var o = IngestOptions()
        o.format = .csv
        o.allowReingest = true
        _ = try f.vault("operator").ingestProfiles(path: f.write("back.csv", CLIStore.rows(2)), options: o)
        _ = try officer.erase(.one("C2"), reason: "two")
        let text = String(decoding: try #require(FileManager.default.contents(atPath: path)), as: UTF8.self)
        #expect(text.hasPrefix("{\"format\":\"profilevault-erasure-journal/2\""))
        let j = try store.openErasureJournal(Array(text.utf8), label: "j")
        #expect(j.entries.count == 2 && j.heads[old.auditSequence] == old.auditHead)
        // And from then on it is appended to.
        _ = try officer.erase(.one("C3"), reason: "three")
        let after = String(decoding: try #require(FileManager.default.contents(atPath: path)), as: UTF8.self)
        #expect(after.hasPrefix(text))
        let r = try Vault.restore(config(f, store: f.dir + "/r.sqlite"), from: backup, journal: path, acceptResurrection: false)
        #expect(r.erased == 3)
    }

    /// An append that fails leaves the erasure done (73) and the store marked: the next append
    /// reads the journal whole and adds the erasure it lacks. A journal whose tail was cut (a
    /// torn write) is moved aside and written anew with what verified of it.
    @Test func aFailedAppendIsCaughtUpAndATornJournalIsRepaired() throws {
        let f = try VaultFixture(profiles: 10)
        let officer = try f.vault("privacy_officer")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        _ = try officer.erase(.one("C1"), reason: "one")
        let path = f.storePath + ".erasures"
        // The journal replaced by a symbolic link: opened with O_NOFOLLOW, the append fails.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".kept")
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: path + ".kept")
        expectKind(.cannotCreate, "the erasure is done") { _ = try officer.erase(.one("C2"), reason: "two") }
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".kept", toPath: path)
        let missing = try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: path))), label: "j")
        #expect(missing.entries.count == 1, "C2's record is not there yet")
        _ = try officer.erase(.one("C3"), reason: "three")
        let caught = try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: path))), label: "j")
        #expect(caught.entries.count == 3, "the next append caught up C2")
        // A torn tail: the writer keeps the verified part and starts a new file.
        let bytes = try #require(FileManager.default.contents(atPath: path))
        #expect(FileManager.default.createFile(atPath: path, contents: bytes.dropLast(30), attributes: [.posixPermissions: 0o600]))
        _ = try officer.erase(.one("C4"), reason: "four")
        let dir = try FileManager.default.contentsOfDirectory(atPath: f.dir)
        #expect(dir.contains { $0.contains(".erasures.unverified-") }, "the damaged journal is kept aside")
        let repaired = try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: path))), label: "j")
        #expect(repaired.entries.count == 4)
        let r = try Vault.restore(config(f, store: f.dir + "/r.sqlite"), from: backup, journal: path, acceptResurrection: false)
        #expect(r.erased == 4)
    }

    /// Two processes erasing at once append to the same journal: each record chains from the
    /// one before it (the journal verifies) and none is lost.
    @Test func twoProcessesAppendingAtOnceKeepTheChain() throws {
        let s = try CLIStore()
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(24))]).status == 0)
        let statuses = LockedBox([Int32]())
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            for i in stride(from: k, to: 24, by: 2) {
                let r = try? s.run(["erase", "--subject", "C\(i)", "--reason", "r", "--role", "privacy_officer"])
                statuses.withLock { $0.append(r?.status ?? -1) }
            }
        }
        #expect(statuses.withLock { $0 }.allSatisfy { $0 == 0 })
        let out = s.dir + "/copy.erasures"
        let e = try s.run(["audit", "erasures", "--out", out, "--role", "privacy_officer", "--json"])
        #expect(e.status == 0 && e.json?["entries"] as? Int == 24, "the journal beside the store verifies and holds all 24: \(e.stderr)")
        let text = String(decoding: try #require(FileManager.default.contents(atPath: s.dir + "/store.sqlite.erasures")), as: UTF8.self)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 26 && lines.filter { $0.contains("\"pseudonym\"") }.count == 24, "header, the mark of its creation, one record per erasure")
    }

    @Test func journalOlderThanTheBackupIsRefused() throws {
        let f = try VaultFixture(profiles: 5)
        let officer = try f.vault("privacy_officer")
        _ = try officer.erase(.one("C0"), reason: "early")
        let old = f.dir + "/old.erasures"
        #expect(try officer.exportErasureJournal(to: old) == 1)
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        _ = try officer.erase(.one("C1"), reason: "after")
        expectKind(.invalidInput, "before the backup") {
            _ = try Vault.restore(config(f, store: f.dir + "/r.sqlite"), from: backup, journal: old, acceptResurrection: false)
        }
        #expect(!FileManager.default.fileExists(atPath: f.dir + "/r.sqlite"))
    }

    @Test func journalKeepsAnErasureAfterAReingestRemovedItsSuppressionEntry() throws {
        let f = try VaultFixture(profiles: 5)
        let officer = try f.vault("privacy_officer"), op = try f.vault("operator")
        let backup = f.dir + "/b.db"
        _ = try officer.backup(to: backup)
        _ = try officer.erase(.one("C1"), reason: "asked")
        var o = IngestOptions()
        o.format = .csv
        o.allowReingest = true
        _ = try op.ingestProfiles(path: f.write("back.csv", CLIStore.rows(2)), options: o)
        // The re-ingest removed C1 from the suppression list; the journal still holds C1's
        // erasure (its record was appended when it was made).
        _ = try officer.erase(.one("C0"), reason: "other")
        let j = try officer.store.openErasureJournal(Array(try #require(FileManager.default.contents(atPath: f.storePath + ".erasures"))), label: "j")
        #expect(j.entries.count == 2)
        let r = try Vault.restore(config(f, store: f.dir + "/r.sqlite"), from: backup, journal: f.storePath + ".erasures", acceptResurrection: false)
        #expect(r.erased == 2, "C1's pre-erasure rows in the backup are shredded too")
    }

    /// A backup taken while another thread keeps committing (events and their audit entries)
    /// is one snapshot: the restored copy's audit chain verifies to its last checkpoint. A copy
    /// of pages from two moments would not. Passes whatever the interleaving.
    @Test func backupWhileWritersCommitIsConsistent() throws {
        let f = try VaultFixture(profiles: 20)
        let officer = try f.vault("privacy_officer")
        let writer = try f.vault("operator")
        let files = try (0..<30).map { i in
            try f.write("e\(i).csv", "customer_id,kind,item,value,time\n" + (0..<20).map { "C\($0),purchase,SKU-\(i),\($0 + 1),2026-02-0\(1 + i % 9)T00:00:00Z" }.joined(separator: "\n") + "\n")
        }
        let done = DispatchSemaphore(value: 0)
        let failures = LockedBox(0)
        Thread.detachNewThread {
            var o = IngestOptions()
            o.format = .csv
            for p in files { if (try? writer.ingestEvents(path: p, options: o)) == nil { failures.withLock { $0 += 1 } } }
            done.signal()
        }
        var backups: [String] = []
        for i in 0..<3 {
            let path = f.dir + "/busy\(i).db"
            _ = try officer.backup(to: path)
            backups.append(path)
        }
        done.wait()
        #expect(failures.withLock { $0 } == 0)
        for (i, b) in backups.enumerated() {
            let target = f.dir + "/busy-restored\(i).sqlite"
            _ = try Vault.restore(config(f, store: target), from: b, journal: nil, acceptResurrection: true)
            let auditor = try Vault.open(VaultConfiguration(storePath: target, keysPath: f.keys, policyDirectory: f.policies, actor: Actor(name: "a", role: "auditor")))
            #expect(try auditor.verifyAudit(expectHead: nil).ok)
        }
    }

    @Test func backupRefusesExistingFilesProtectedFilesAndRolesWithoutKeys() throws {
        let f = try VaultFixture(profiles: 3)
        let officer = try f.vault("privacy_officer")
        let existing = try f.write("exists.db", "x")
        expectKind(.cannotCreate, "already exists") { _ = try officer.backup(to: existing) }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "x")
        expectKind(.cannotCreate) { _ = try officer.backup(to: f.storePath) }
        expectKind(.cannotCreate) { _ = try officer.backup(to: f.keys) }
        expectKind(.denied) { _ = try f.vault("operator").backup(to: f.dir + "/op.db") }
        #expect(!FileManager.default.fileExists(atPath: f.dir + "/op.db"))
        // The journal beside the store is never an output.
        _ = try officer.erase(.one("C0"), reason: "x")
        expectKind(.cannotCreate) { _ = try officer.exportErasureJournal(to: f.storePath + ".erasures", force: true) }
    }
}

/// A value shared with a writer thread (tests only).
final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}

@Suite struct BackupCLITests {
    @Test func backupEraseRestoreFromTheCommandLine() throws {
        let s = try CLIStore()
        #expect(try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(5))]).status == 0)
        let backup = s.dir + "/b.db"
        let b = try s.run(["backup", "--out", backup, "--role", "privacy_officer", "--json"])
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.json?["path"] as? String == backup)
        #expect(try s.run(["backup", "--out", backup, "--role", "privacy_officer"]).status == 73)
        #expect(try s.run(["backup", "--out", s.dir + "/x.db"]).status == 77)
        #expect(try s.run(["erase", "--subject", "C1", "--reason", "asked", "--role", "privacy_officer"]).status == 0)
        let target = s.dir + "/r.sqlite"
        let refused = try s.run(["restore", "--from", backup, "--to", target, "--role", "privacy_officer"])
        #expect(refused.status == 64 && refused.stderr.contains("--i-accept-resurrection"))
        let journal = s.dir + "/j.erasures"
        let e = try s.run(["audit", "erasures", "--out", journal, "--role", "privacy_officer", "--json"])
        #expect(e.status == 0 && e.json?["entries"] as? Int == 1, "\(e.stderr)")
        // A journal with a byte changed: integrity error (1).
        var bad = try #require(FileManager.default.contents(atPath: journal))
        if let i = bad.firstIndex(of: UInt8(ascii: "k")) { bad[i] = UInt8(ascii: "K") }
        let badPath = s.dir + "/bad.erasures"
        #expect(FileManager.default.createFile(atPath: badPath, contents: bad))
        #expect(try s.run(["restore", "--from", backup, "--to", target, "--erasure-journal", badPath, "--role", "privacy_officer"]).status == 1)
        let r = try s.run(["restore", "--from", backup, "--to", target, "--erasure-journal", journal, "--role", "privacy_officer", "--json"])
        #expect(r.status == 0 && r.json?["path"] as? String == target && r.json?["erased"] as? Int == 1, "\(r.stderr)")
        var env = s.env
        env["PROFILEVAULT_STORE"] = target
        let get = try CLI.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], env: env)
        #expect(get.status == 66 && get.stderr.contains("erased on") && get.stderr.contains("receipt"), "\(get.stderr)")
        #expect(try CLI.run(["audit", "verify", "--role", "auditor"], env: env).status == 0)
    }
}
