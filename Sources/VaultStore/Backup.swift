import Foundation
public import GRDB
public import VaultAudit
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// What `restore` did: the backup's audit head, the journal's entries and what re-applying
/// them changed, and the restored store's new head.
public struct RestoreReport: Sendable {
    public var backupSequence: Int64
    public var backupHead: String
    /// Nil: restored without a journal (`--i-accept-resurrection`).
    public var journalEntries: Int?
    /// Journal entries recorded after the backup was taken (the ones re-applied).
    public var afterBackup: Int
    /// Subjects present in the backup and erased again.
    public var erased: Int
    /// Suppression entries added for subjects the backup did not hold (ingested after it).
    public var suppressed: Int
    public var headSequence: Int64
    public var head: String
}

/// Online backup and restore of the SQLite store, and its erasure journal (docs/deployment.md,
/// "Backups").
///
/// - `backup`: `VACUUM INTO` a new, empty 0600 file from a reader connection: one consistent
///   snapshot while writers go on, compacted (no free pages), the same ciphertext and wrapped
///   keys as the store, never a plaintext value. The copy is switched to rollback-journal mode
///   so it is one self-contained file.
/// - The erasure journal (``ErasureJournal``) is kept beside the store (`STORE.erasures`),
///   rewritten after every erasure inside a write transaction (so two processes erasing at once
///   write it one after the other), and merged with the journal it replaces.
/// - `restore`: copies a backup to a new store file, verifies its audit chain, and re-applies
///   every erasure the journal recorded after the backup's audit head.
extension ProfileStore {
    // MARK: - The erasure journal

    /// The store's journal now: its suppression list with the receipts, its id and audit head.
    public func erasureJournal() throws -> ErasureJournal {
        try pool.read { db in try erasureJournal(db) }
    }

    func erasureJournal(_ db: Database) throws -> ErasureJournal {
        var entries: [ErasureJournalEntry] = []
        for row in try Row.fetchAll(db, sql: "SELECT pseudonym, erased_at, reason, receipt_seq, receipt FROM suppressed") {
            let p = row.stored("pseudonym"), at = row.stored("erased_at"), r = row.stored("reason"), s = row.stored("receipt_seq"), h = row.stored("receipt")
            guard let pseudo = Stored.blob(p), let time = Stored.int(at), let reason = Stored.text(r),
                  s.isNull || Stored.int(s) != nil, h.isNull || Stored.text(h) != nil else {
                throw VaultError(.integrity, "the suppression list holds a value of the wrong type: the store was altered")
            }
            entries.append(ErasureJournalEntry(pseudonym: pseudo, erasedAtMillis: time, reason: reason, auditSequence: Stored.int(s), receipt: Stored.text(h)))
        }
        let storeID = try Self.journalIdentity(db)
        let head = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        let seq = head?.auditInt("seq") ?? 0
        let hash = head?.auditBlob("hash") ?? AuditLog.genesis
        return ErasureJournal(storeID: storeID, entries: ErasureJournal.merged([], entries), auditSequence: seq, auditHead: AuditLog.hex(hash),
                              writtenAtMillis: AuditLog.nowMillis)
    }

    /// The journal's bytes, MACed under this store's erasure-journal key.
    public func sealErasureJournal(_ journal: ErasureJournal) -> [UInt8] {
        journal.sealed(key: keys.erasureJournal)
    }

    /// Reads and verifies a journal of this store (integrity error otherwise).
    public func openErasureJournal(_ bytes: [UInt8], label: String) throws -> ErasureJournal {
        let identity = try pool.read { db in try Self.journalIdentity(db) }
        return try ErasureJournal.open(bytes, key: keys.erasureJournal, storeID: identity, label: label)
    }

    /// Whose erasures a journal speaks for: the store id, and for a store restored from a
    /// backup the line it started (`meta.lineage`, new at every restore). A restored store
    /// reuses its backup's audit sequence numbers for other entries, so a journal of the store
    /// it was restored from (or of a sibling restore) must not count as covering it: its
    /// "erased after entry N" would skip erasures this line made after N.
    static func journalIdentity(_ db: Database) throws -> String {
        let id = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'store_id'") ?? ""
        guard let lineage = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'lineage'"), !lineage.isEmpty else { return id }
        return id + "/" + lineage
    }

    /// Rewrites the journal at `path` (beside the store): the suppression list merged with the
    /// journal found there (when it verifies) and `extra`, written to a new 0600 file and
    /// renamed over it. Returns the entry count and, when the journal found there did not
    /// verify, why (it is then moved aside, `PATH.unverified-<ms>`, and the new journal starts
    /// from the store's own list).
    ///
    /// Two processes take turns on `PATH.lock` (``FileLock``), not on the store's write lock:
    /// the list is read in a snapshot taken under the file lock, so each journal written is at
    /// least as new as the one before it, and readers and writers of the store never wait for
    /// a journal being written.
    @discardableResult
    public func refreshErasureJournal(at path: String, merging extra: [ErasureJournalEntry] = []) throws -> (entries: Int, problem: String?) {
        try FileLock.exclusive(path + ".lock", what: "the erasure journal \(path)") {
            var (journal, identity) = try pool.read { db in (try erasureJournal(db), try Self.journalIdentity(db)) }
            var problem: String?
            if let old = FileManager.default.contents(atPath: path) {
                do {
                    let earlier = try ErasureJournal.open(Array(old), key: keys.erasureJournal, storeID: identity, label: path)
                    journal.entries = ErasureJournal.merged(earlier.entries, journal.entries)
                } catch let e as VaultError {
                    // Kept, not overwritten: it may be the journal another store's backups need.
                    let aside = path + ".unverified-\(AuditLog.nowMillis)"
                    problem = e.message + (rename(path, aside) == 0 ? "; moved to \(aside)" : "")
                }
            }
            if !extra.isEmpty { journal.entries = ErasureJournal.merged(extra, journal.entries) }
            try Self.replaceFile(path, with: sealErasureJournal(journal))
            return (journal.entries.count, problem)
        }
    }

    /// Writes `bytes` to a new 0600 file beside `path`, fsyncs it and renames it over `path`.
    static func replaceFile(_ path: String, with bytes: [UInt8]) throws {
        let temp = path + ".tmp-\(UUID().uuidString.lowercased().prefix(8))"
        func fail(_ why: String) -> VaultError { VaultError(.cannotCreate, "\(path): cannot write the erasure journal: \(why)") }
        let fd = Glibc.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
        var ok = fchmod(fd, 0o600) == 0
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while ok, offset < buffer.count {
                guard let base = buffer.baseAddress else { break }
                let n = Glibc.write(fd, base + offset, buffer.count - offset)
                if n < 0 { if errno == EINTR { continue }; ok = false } else { offset += n }
            }
        }
        ok = ok && fsync(fd) == 0
        let e = errno
        Glibc.close(fd)
        guard ok, rename(temp, path) == 0 else {
            unlink(temp)
            throw fail(String(cString: strerror(ok ? errno : e)))
        }
    }

    // MARK: - Backup

    /// Writes a consistent copy of the store into `file` (new and empty: ``OutputFile``) while
    /// writers go on, and returns the copy's audit head (sequence number, hash hex).
    public func backup(into file: OutputFile) throws -> (sequence: Int64, head: String) {
        try pool.unsafeRead { db in
            try db.execute(sql: "VACUUM INTO ?", arguments: [file.path])
        }
        var config = Configuration()
        config.label = "ProfileVault backup"
        let copy = try DatabaseQueue(path: file.path, configuration: config)
        let head = try copy.writeWithoutTransaction { db -> (Int64, String) in
            try db.execute(sql: "PRAGMA journal_mode = DELETE")
            guard let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") else { return (0, AuditLog.hex(AuditLog.genesis)) }
            guard let seq = row.auditInt("seq"), let hash = row.auditBlob("hash") else {
                throw VaultError(.integrity, "the newest audit entry has a column of the wrong type: the file was edited")
            }
            return (seq, AuditLog.hex(hash))
        }
        try copy.close()
        try file.commit()
        return head
    }

    // MARK: - Restore

    /// Copies the backup file `backup` to a new store file `path` (refused when it exists),
    /// mode 0600. The copy is opened and checked by ``open(path:keyring:schema:)`` afterwards.
    public static func copyBackup(from backup: String, to path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: backup, isDirectory: &isDir), !isDir.boolValue,
              let input = FileHandle(forReadingAtPath: backup) else {
            throw VaultError(.notFound, "\(backup): no backup file here")
        }
        defer { try? input.close() }
        let magic = (try? input.read(upToCount: 16)).map { Array($0) } ?? []
        guard magic == Array("SQLite format 3\0".utf8) else {
            throw VaultError(.invalidInput, "\(backup): not a ProfileVault backup (not a SQLite store file)")
        }
        try input.seek(toOffset: 0)
        if FileManager.default.fileExists(atPath: path) || FileManager.default.fileExists(atPath: path + "-wal") {
            throw VaultError(.configuration, "\(path): a store already exists here; restore into a new location")
        }
        if FileManager.default.fileExists(atPath: path + ".erasures") {
            throw VaultError(.configuration, "\(path).erasures: an erasure journal (of an earlier store?) is already there; move it away or restore into a new location")
        }
        let fd = Glibc.open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw VaultError(.cannotCreate, "\(path): cannot create the restored store (\(String(cString: strerror(errno))))")
        }
        var failure: String?
        while failure == nil {
            guard let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty else { break }
            chunk.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    guard let base = buffer.baseAddress else { break }
                    let n = Glibc.write(fd, base + offset, buffer.count - offset)
                    if n < 0 { if errno == EINTR { continue }; failure = String(cString: strerror(errno)); return }
                    offset += n
                }
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        Glibc.close(fd)
        if let failure {
            removeStoreFiles(path)
            throw VaultError(.cannotCreate, "\(path): cannot write the restored store (\(failure))")
        }
    }

    /// Removes a store file with its -wal, -shm and erasure journal (a restore that was refused).
    public static func removeStoreFiles(_ path: String) {
        for p in [path, path + "-wal", path + "-shm", path + ".erasures", path + ".erasures.lock"] { unlink(p) }
    }

    /// The time (unix ms) of the newest audit entry; nil for an empty log.
    func auditHeadTime() throws -> Int64? {
        try pool.read { db in try Row.fetchOne(db, sql: "SELECT time FROM audit ORDER BY seq DESC LIMIT 1")?.auditInt("time") }
    }

    /// Re-applies every erasure of `journal` recorded after this (restored) store's audit head,
    /// in one write transaction: a subject the store holds is shredded as `erase` does (an
    /// `erase` entry naming the original receipt), and every such pseudonym goes on the
    /// suppression list with its original time, reason and receipt. Then a `store.restore` entry
    /// (or `store.restore_without_journal` when `journal` is nil) records the restore. A journal
    /// written before the backup's head cannot speak for the erasures after it: refused (65).
    public func reapplyErasures(_ journal: ErasureJournal?, journalLabel: String?, audit: AuditContext) throws -> RestoreReport {
        let (bseq, bhead) = try auditHead()
        let btime = try auditHeadTime() ?? 0
        var after: [ErasureJournalEntry] = []
        if let journal {
            guard journal.auditSequence >= bseq else {
                throw VaultError(.invalidInput, "the erasure journal was written at audit entry \(journal.auditSequence), before the backup (entry \(bseq)): it cannot name the erasures made after the backup; use the newest journal")
            }
            after = journal.entries.filter { e in e.auditSequence.map { $0 > bseq } ?? (e.erasedAtMillis > btime) }
        }
        if let journal, journal.auditSequence == bseq, journal.auditHead != bhead {
            throw VaultError(.integrity, "the erasure journal was written at the backup's audit entry \(bseq) but names another head: it is not of the line this backup was taken from; refused")
        }
        let report = try pool.write { db -> RestoreReport in
            // The restored store starts a line of its own: journals of the store it was
            // restored from no longer speak for it (``journalIdentity(_:)``).
            try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('lineage', ?)", arguments: [AuditLog.hex(SecureRandom.bytes(16))])
            var report = RestoreReport(backupSequence: bseq, backupHead: bhead, journalEntries: journal?.entries.count, afterBackup: after.count,
                                       erased: 0, suppressed: 0, headSequence: 0, head: "")
            let suppress = try db.cachedStatement(sql: "INSERT OR REPLACE INTO suppressed(pseudonym, erased_at, reason, receipt_seq, receipt) VALUES (?, ?, ?, ?, ?)")
            let known = try db.cachedStatement(sql: "SELECT 1 FROM suppressed WHERE pseudonym = ?")
            for e in after {
                if let s = try subjectRow(db, pseudonym: e.pseudonym) {
                    let removed = try shredSubject(db, s)
                    try appendAudit(db, [audit.record("erase", .delete, subject: s.pseudonym, fields: [schema.subjectIDField] + schema.fields.map(\.name),
                                                      detail: "reason \(e.reason); re-applied by restore from the erasure journal (receipt \(e.auditSequence.map(String.init) ?? "-") \(e.receipt ?? "-"))",
                                                      counts: removed)])
                    report.erased += 1
                } else if try Bool.fetchOne(known, arguments: [Data(e.pseudonym)]) == true {
                    continue
                } else {
                    report.suppressed += 1
                }
                try suppress.execute(arguments: [Data(e.pseudonym), e.erasedAtMillis, e.reason, e.auditSequence, e.receipt])
            }
            let record: AuditRecord
            if let journal {
                record = audit.record("store.restore", .create,
                                      detail: "restored from a backup whose audit head is entry \(bseq), \(bhead); erasure journal \(journalLabel ?? "") written at entry \(journal.auditSequence), \(journal.auditHead)",
                                      counts: [("journal_entries", Int64(journal.entries.count)), ("after_backup", Int64(after.count)),
                                               ("erased", Int64(report.erased)), ("suppressed", Int64(report.suppressed))])
            } else {
                record = audit.record("store.restore_without_journal", .create,
                                      detail: "restored from a backup whose audit head is entry \(bseq), \(bhead) WITHOUT an erasure journal (--i-accept-resurrection): subjects erased after the backup are back")
            }
            let (seq, hash) = try appendAudit(db, [record])
            report.headSequence = seq
            report.head = AuditLog.hex(hash)
            return report
        }
        try checkpoint()
        return report
    }
}
