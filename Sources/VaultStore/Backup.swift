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
    package init(backupSequence: Int64, backupHead: String, journalEntries: Int?, afterBackup: Int, erased: Int, suppressed: Int,
                 headSequence: Int64, head: String) {
        self.backupSequence = backupSequence
        self.backupHead = backupHead
        self.journalEntries = journalEntries
        self.afterBackup = afterBackup
        self.erased = erased
        self.suppressed = suppressed
        self.headSequence = headSequence
        self.head = head
    }
}

/// Online backup and restore of the SQLite store, and its erasure journal (docs/deployment.md,
/// "Backups").
///
/// - `backup`: `VACUUM INTO` a new, empty 0600 file from a reader connection: one consistent
///   snapshot while writers go on, compacted (no free pages), the same ciphertext and wrapped
///   keys as the store, never a plaintext value. The copy is switched to rollback-journal mode
///   so it is one self-contained file.
/// - The erasure journal (``ErasureJournal``) is kept beside the store (`STORE.erasures`):
///   each erasure appends its records, and each backup a mark, under the journal's file lock
///   (``appendToErasureJournal(at:pseudonyms:mark:merging:catchUp:)``).
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

    /// The `meta` key a failed journal append leaves set (``markErasureJournalBehind()``): the
    /// next append reads the whole journal and catches up from the suppression list.
    static let journalBehindKey = "erasure_journal_behind"

    /// Records that an erasure committed but its journal record could not be appended, so that
    /// the next append catches up (best effort: the caller reports the failure anyway).
    public func markErasureJournalBehind() {
        try? pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", arguments: [Self.journalBehindKey, String(AuditLog.nowMillis)])
        }
    }

    /// The `meta` key an erasure sets before it commits (``beginErasureJournalIntent()``) and its
    /// journal append clears: an intent left by another operation (a process killed between
    /// its erasure's commit and its journal append) makes the next append catch up from the
    /// suppression list, so an erasure can be missing from the journal only until the next
    /// erasure, retention run or backup of the store.
    static let journalIntentKey = "erasure_journal_intent"

    /// Records, before an erasure commits, that its journal append is pending; returns the
    /// token to hand to ``appendToErasureJournal(at:pseudonyms:mark:merging:catchUp:intent:)``.
    /// An intent already there (another erasure in flight, or one whose process died) is kept:
    /// this append then finds another token than its own and catches up.
    public func beginErasureJournalIntent() throws -> String {
        let token = UUID().uuidString
        try pool.write { db in
            try db.execute(sql: "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", arguments: [Self.journalIntentKey, token])
        }
        return token
    }

    /// The suppression-list row of each pseudonym (those still listed), by primary key.
    func suppressionEntries(_ pseudonyms: [[UInt8]]) throws -> [ErasureJournalEntry] {
        try pool.read { db in
            var out: [ErasureJournalEntry] = []
            let statement = try db.cachedStatement(sql: "SELECT pseudonym, erased_at, reason, receipt_seq, receipt FROM suppressed WHERE pseudonym = ?")
            for p in pseudonyms {
                guard let row = try Row.fetchOne(statement, arguments: [Data(p)]) else { continue }
                let at = row.stored("erased_at"), r = row.stored("reason"), s = row.stored("receipt_seq"), h = row.stored("receipt")
                guard let time = Stored.int(at), let reason = Stored.text(r), s.isNull || Stored.int(s) != nil, h.isNull || Stored.text(h) != nil else {
                    throw VaultError(.integrity, "the suppression list holds a value of the wrong type: the store was altered")
                }
                out.append(ErasureJournalEntry(pseudonym: p, erasedAtMillis: time, reason: reason, auditSequence: Stored.int(s), receipt: Stored.text(h)))
            }
            return out
        }
    }

    /// Appends to the append-only journal at `path` (beside the store; format 2,
    /// ``ErasureJournal``) one record per erased subject of `pseudonyms` (its suppression-list
    /// row: time, reason, receipt) and, with `mark`, a mark naming the store's audit head now
    /// (`backup`). Appended with one `write` to the end of the file and `fsync`ed before this
    /// returns; a failed write is cut off again (`ftruncate`), so the file never keeps half a
    /// record. Only the header and the last record are read and verified, so an append costs
    /// the same however many erasures the journal holds.
    ///
    /// The whole journal is read and the file written anew (a new 0600 file, `fsync`ed, renamed
    /// over it, the directory `fsync`ed) only when there is no journal yet (from the suppression
    /// list), when it is in the whole-file format 1 (the one-time conversion), or when its header
    /// or last record does not verify (it is then moved aside, `PATH.unverified-<ms>`, and the new
    /// journal keeps what verified before the first bad record); `problem` then says why. A
    /// journal whose last append failed (``markErasureJournalBehind()``) or `catchUp` is read
    /// whole and every suppression-list entry it lacks is appended. `merging` adds entries of
    /// another journal (a restore).
    ///
    /// Processes and threads take turns on `PATH.lock` (``FileLock``): the tail is read, and the
    /// records numbered and chained from it, under the lock.
    @discardableResult
    public func appendToErasureJournal(at path: String, pseudonyms: [[UInt8]], mark: String? = nil, merging extra: [ErasureJournalEntry] = [],
                                       catchUp requested: Bool = false, intent: String? = nil) throws -> (appended: Int, problem: String?) {
        func fail(_ why: String) -> VaultError { VaultError(.cannotCreate, "\(path): cannot write the erasure journal: \(why)") }
        let key = keys.erasureJournal
        return try FileLock.exclusive(path + ".lock", what: "the erasure journal \(path)") {
            let (identity, behind, pending) = try pool.read { db in
                (try Self.journalIdentity(db), try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [Self.journalBehindKey]) != nil,
                 try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [Self.journalIntentKey]))
            }
            // Any intent but this append's own (another erasure's, in flight or whose process
            // died after its commit; or this one's, consumed by another's catch-up): its
            // erasure may be missing from the journal, so read it whole and add what it lacks
            // (the catch-up appends no entry twice).
            let catchUp = requested || pending != intent
            var written = false
            // The intent this append may clear: its own (fast path), or the one read in the same
            // snapshot as the suppression list it caught up from (every erasure committed in that
            // snapshot set its intent before committing, so the intent read there, if any, is
            // one whose erasure the catch-up holds or whose owner will catch up itself).
            var clearable = pending
            defer {
                // Cleared once the append is written, and only when it is still the one read
                // (an intent set since stays).
                if written, let clearable {
                    try? pool.write { db in try db.execute(sql: "DELETE FROM meta WHERE key = ? AND value = ?", arguments: [Self.journalIntentKey, clearable]) }
                }
            }
            func suppressedWithIntent() throws -> ErasureJournal {
                let (journal, intentNow) = try pool.read { db in
                    (try erasureJournal(db), try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [Self.journalIntentKey]))
                }
                clearable = intentNow
                return journal
            }
            var problem: String?
            // The verified tail of a format-2 journal of this store, or the journal to rewrite.
            var tail: (last: Int64, mac: [UInt8])?
            var rewrite: ErasureJournal?
            var whole: ErasureJournal?
            let fd = Glibc.open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 {
                guard errno == ENOENT else { throw fail(String(cString: strerror(errno))) }
            }
            defer { if fd >= 0 { Glibc.close(fd) } }
            var size: off_t = 0
            if fd >= 0 {
                var st = stat()
                guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid() else { throw fail("not a regular file of this user") }
                size = st.st_size
                if let t = JournalFile.verifiedTail(fd, size: size, key: key, storeID: identity), !(behind || catchUp) {
                    tail = t
                } else {
                    let bytes = try JournalFile.readAll(fd, size: size, path: path)
                    var prefix: ErasureJournal?
                    do {
                        let j = try ErasureJournal.read(bytes, key: key, storeID: identity, label: path, prefix: &prefix)
                        if j.formatVersion == 2 { whole = j; tail = (j.lastRecord, j.lastMAC) } else { rewrite = j }
                    } catch let e as VaultError {
                        // Kept, not overwritten: it may be the journal another store's backups need.
                        let aside = path + ".unverified-\(AuditLog.nowMillis)"
                        problem = e.message + (rename(path, aside) == 0 ? "; moved to \(aside)" : "")
                        rewrite = prefix ?? ErasureJournal(storeID: identity, entries: [], auditSequence: 0, auditHead: "", writtenAtMillis: 0)
                        rewrite?.heads = prefix?.heads ?? [:]
                    }
                }
            }
            if let tail, rewrite == nil {
                // Append: the subjects named, plus (catching up) what the journal lacks.
                var records: [ErasureJournal.Record] = []
                var added = Set<ErasureJournal.EntryKey>()
                var candidates = try suppressionEntries(pseudonyms) + extra
                if let whole {
                    candidates = try suppressedWithIntent().entries + candidates
                    added = Set(whole.entries.map(ErasureJournal.EntryKey.init))
                }
                for e in candidates where added.insert(ErasureJournal.EntryKey(e)).inserted {
                    records.append(.erasure(e))
                }
                let appendedErasures = records.count
                if let mark {
                    let (seq, head) = try auditHead()
                    records.append(.mark(kind: mark, sequence: seq, head: head, atMillis: AuditLog.nowMillis))
                }
                if !records.isEmpty {
                    let (bytes, _, _) = ErasureJournal.appendLines(records, after: tail.mac, next: tail.last + 1, key: key)
                    if let why = JournalFile.append(fd, bytes, restoringSize: size) { throw fail(why) }
                }
                if behind { try clearBehind() }
                written = true
                return (appendedErasures, problem)
            }
            // A new journal: what verified of the old one, the suppression list, and a mark.
            let carried = rewrite ?? ErasureJournal(storeID: identity, entries: [], auditSequence: 0, auditHead: "", writtenAtMillis: 0)
            let now = try suppressedWithIntent()
            var entries = ErasureJournal.merged(carried.entries, now.entries)
            if !extra.isEmpty { entries = ErasureJournal.merged(extra, entries) }
            var records: [ErasureJournal.Record] = carried.heads.sorted { $0.key < $1.key }.filter { !$0.value.isEmpty }
                .map { .mark(kind: "carried", sequence: $0.key, head: $0.value, atMillis: carried.writtenAtMillis) }
            records += entries.map { .erasure($0) }
            records.append(.mark(kind: mark ?? "created", sequence: now.auditSequence, head: now.auditHead, atMillis: now.writtenAtMillis))
            let (bytes, _, _) = ErasureJournal.sealedAppendOnly(storeID: identity, records: records, key: key)
            try Self.replaceFile(path, with: bytes)
            if behind { try clearBehind() }
            written = true
            return (entries.count, problem)
        }
    }

    func clearBehind() throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM meta WHERE key = ?", arguments: [Self.journalBehindKey]) }
    }

    /// Reads the journal at `path` whole and appends every suppression-list entry (and every
    /// entry of `extra`) it lacks; creates it when there is none. Returns the entries appended
    /// (or written) and, when the journal found there did not verify, why.
    @discardableResult
    public func refreshErasureJournal(at path: String, merging extra: [ErasureJournalEntry] = []) throws -> (entries: Int, problem: String?) {
        let (n, problem) = try appendToErasureJournal(at: path, pseudonyms: [], merging: extra, catchUp: true)
        return (n, problem)
    }

    /// Writes `bytes` to a new 0600 file beside `path`, fsyncs it, renames it over `path` and
    /// fsyncs the directory.
    static func replaceFile(_ path: String, with bytes: [UInt8]) throws {
        let temp = path + ".tmp-\(UUID().uuidString.lowercased().prefix(8))"
        func fail(_ why: String) -> VaultError { VaultError(.cannotCreate, "\(path): cannot write the erasure journal: \(why)") }
        let fd = Glibc.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
        var ok = fchmod(fd, 0o600) == 0
        ok = ok && JournalFile.writeAll(fd, bytes)
        ok = ok && fsync(fd) == 0
        let e = errno
        Glibc.close(fd)
        guard ok, rename(temp, path) == 0 else {
            unlink(temp)
            throw fail(String(cString: strerror(ok ? errno : e)))
        }
        JournalFile.syncDirectory(of: path)
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
        if let journal, let head = journal.heads[bseq], head != bhead {
            throw VaultError(.integrity, "the erasure journal was written at the backup's audit entry \(bseq) but names another head: it is not of the line this backup was taken from; refused")
        }
        let report = try pool.write { db -> RestoreReport in
            // The restored store starts a line of its own: journals of the store it was
            // restored from no longer speak for it (``journalIdentity(_:)``).
            try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('lineage', ?)", arguments: [AuditLog.hex(SecureRandom.bytes(16))])
            // So does its population epoch: a fresh random one, which no release sealed by the
            // store before the restore (nor by the backup's store) carries; the cache is emptied.
            try db.execute(sql: "DELETE FROM release_cache")
            try db.execute(sql: "UPDATE population_epoch SET epoch = ? WHERE id = 1", arguments: [ReleaseSealing.restoredEpoch()])
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
