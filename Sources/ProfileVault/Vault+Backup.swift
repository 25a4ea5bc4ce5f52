import Foundation
public import Logging
import VaultAudit
import VaultPostgres
public import VaultStore
import VaultValues

public typealias RestoreReport = VaultStore.RestoreReport

/// Backups that remember erasures (issue 20 part 3; docs/deployment.md, "Backups"):
/// `backup --out FILE`, the erasure journal (`STORE.erasures` beside a SQLite store, and
/// `audit erasures --out FILE` on both engines), and `restore --from FILE --to STORE`.
///
/// Permission: `keys` for all three (a backup carries every wrapped data key, as `migrate`
/// does; the journal and a restore decide which subjects stay erased).
extension Vault {
    /// Where the erasure journal of a SQLite store lives: beside it, `STORE.erasures`; nil for
    /// a PostgreSQL store (its journal is written by `audit erasures --out FILE`).
    public static func erasureJournalPath(storePath: String) -> String? {
        PostgresStore.isLocation(storePath) ? nil : storePath + ".erasures"
    }

    /// The journal beside the store, which no output may replace (``protectedFiles``).
    var erasureJournalFiles: [ProtectedFile] {
        Self.erasureJournalPath(storePath: configuration.storePath).map { [ProtectedFile($0, "the erasure journal")] } ?? []
    }

    /// After an erasure committed: appends one record per erased subject to the journal beside
    /// a SQLite store (nothing for PostgreSQL), `fsync`ed before this returns. A failure does
    /// not undo the erasure (it is committed and audited), but the command must not look like a
    /// full success: the journal is what keeps the subjects erased when a backup is restored.
    /// The store then records that its journal is behind (the next append reads the journal
    /// whole and appends every suppression-list entry it lacks), and the failure is logged and
    /// thrown as `.cannotCreate` (exit 73, the class of a file that could not be written), whose
    /// message says the erasure is done (the receipts: hash and audit entry, never a customer
    /// ID) and how to rebuild the journal: `audit erasures --out FILE` writes the whole journal
    /// now (from the suppression list). `done` says what was erased ("erased 2 subjects").
    /// The client-facing detail of that failure (the HTTP answer says it, not "internal error").
    public static let erasureJournalFailure = "the erasure is done, committed and audited, but the erasure journal beside the store could not be written: an operator must write it now with profilectl audit erasures --out FILE and fix its path (see the server log)"

    /// `catchUp`: append every suppression-list entry the journal lacks (a retention run, whose
    /// report names no subjects). `intent`: the token ``beginErasureJournalIntent(permissions:)`` gave
    /// before the erasure committed.
    func recordErasuresInJournal(done: String, receipts: [ErasureReceipt], catchUp: Bool = false, intent: String? = nil) throws {
        guard let path = Self.erasureJournalPath(storePath: configuration.storePath), let s = store as? ProfileStore else { return }
        do {
            let pseudonyms = try receipts.map { try s.pseudonym(ofCustomerID: $0.customerID) }
            let (_, problem) = try s.appendToErasureJournal(at: path, pseudonyms: pseudonyms, catchUp: catchUp, intent: intent)
            if let problem {
                logger.error("the erasure journal beside the store did not verify and was written anew (what verified of it, and the suppression list)", metadata: ["problem": .string(problem)])
            }
        } catch {
            s.markErasureJournalBehind()
            let reason = (error as? VaultError)?.message ?? "\(error)"
            logger.error("could not write the erasure journal beside the store; run profilectl audit erasures --out FILE", metadata: ["error": .string(reason)])
            let shown = receipts.prefix(20).map { "receipt \($0.receipt) (audit entry \($0.auditSequence))" }.joined(separator: ", ")
                + (receipts.count > 20 ? ", ..." : "")
            throw VaultError(.cannotCreate, "\(done): the erasure is done, committed and audited\(shown.isEmpty ? "" : " (\(shown))"), but the erasure journal \(path) could not be written (\(reason)). Until it is, a restored backup would not re-apply this erasure: write the whole journal now with profilectl audit erasures --out FILE (keep it for restore --erasure-journal), and fix the path: the next erasure appends to \(path) every erasure it lacks",
                             detail: Self.erasureJournalFailure)
        }
    }

    /// Before an erasure commits on a SQLite store with a journal: records that its journal
    /// append is pending, so that a process killed between the commit and the append leaves
    /// the next append (erasure, retention run or backup mark) to catch up from the
    /// suppression list. Nil elsewhere. A failure to record it refuses the erasure (nothing
    /// erased yet).
    ///
    /// Recorded only for an actor whose role has every one of `permissions` (the operation's own
    /// check, done again inside its audited block, refuses and audits the others): a refused
    /// caller writes nothing to the store.
    func beginErasureJournalIntent(permissions: [String]) throws -> String? {
        guard permissions.allSatisfy({ policy.role(actor.role, allows: $0) }) else { return nil }
        guard Self.erasureJournalPath(storePath: configuration.storePath) != nil, let s = store as? ProfileStore else { return nil }
        return try s.beginErasureJournalIntent()
    }

    // MARK: - backup

    /// What `backup` wrote: the file and the backup's audit head.
    public struct BackupReport: Sendable {
        public var path: String
        public var sequence: Int64
        public var head: String
    }

    /// `profilectl backup --out FILE` (permission `keys`): a consistent online copy of the store
    /// in a new 0600 file (never the store, the keyring or a policy file; no `--force`),
    /// holding the ciphertext and wrapped keys as the store does: a SQLite store file
    /// (`VACUUM INTO`), or for PostgreSQL every table read in one REPEATABLE READ snapshot into
    /// a sealed file (PostgresBackupRestore.swift). The live store then records `store.backup`,
    /// naming the backup's audit head; on SQLite the journal beside it gets a `backup` mark.
    public func backup(to path: String) throws -> BackupReport {
        try audited("store.backup", .read, permission: "keys") { context in
            let file = try OutputFile(path: path, force: false, protecting: store.ownFiles + protectedFiles, what: "the backup")
            let (seq, head): (Int64, String)
            if let source = store as? ProfileStore {
                (seq, head) = try source.backup(into: file)
            } else if let pg = store as? PostgresProfiles {
                (seq, head) = try pg.backup(into: file)
            } else {
                throw VaultError(.usage, "backup copies a SQLite or PostgreSQL store")
            }
            try store.audit([context.record("store.backup", .read, detail: "backup written; its audit head is entry \(seq), \(head)",
                                            counts: [("audit_entries", seq)])])
            // The journal beside the store vouches that it was complete when the backup was
            // taken (a `backup` mark at a head past the backup's): what restore checks.
            if let journal = Self.erasureJournalPath(storePath: configuration.storePath), let source = store as? ProfileStore {
                // Caught up first: a mark vouches for every erasure before it.
                do { _ = try source.appendToErasureJournal(at: journal, pseudonyms: [], mark: "backup", catchUp: true) } catch {
                    let reason = (error as? VaultError)?.message ?? "\(error)"
                    throw VaultError(.cannotCreate, "backup written to \(path) (audit head entry \(seq)), but the erasure journal \(journal) could not be marked (\(reason)): restoring this backup needs a journal written after it; write one now with profilectl audit erasures --out FILE and fix the path")
                }
            }
            return BackupReport(path: path, sequence: seq, head: head)
        }
    }

    // MARK: - the erasure journal

    /// `profilectl audit erasures --out FILE` (permission `keys`): the erasure journal of this
    /// store (its suppression list with receipts, merged with the journal beside a SQLite
    /// store) in a new 0600 file, MACed line by line. Audited (`store.erasure_journal`).
    public func exportErasureJournal(to path: String, force: Bool = false) throws -> Int {
        try audited("store.erasure_journal", .read, permission: "keys") { context in
            let file = try OutputFile(path: path, force: force, protecting: store.ownFiles + protectedFiles, what: "the erasure journal")
            var journal = try store.erasureJournal()
            if let beside = Self.erasureJournalPath(storePath: configuration.storePath), let bytes = FileManager.default.contents(atPath: beside) {
                journal.entries = ErasureJournal.merged(try store.openErasureJournal(Array(bytes), label: beside).entries, journal.entries)
            }
            try store.audit([context.record("store.erasure_journal", .read, detail: "erasure journal exported at audit entry \(journal.auditSequence)",
                                            counts: [("entries", Int64(journal.entries.count))])])
            try file.write(store.sealErasureJournal(journal))
            try file.commit()
            return journal.entries.count
        }
    }

    // MARK: - restore

    /// `profilectl restore --from BACKUP --to STORE [--erasure-journal F]` (permission `keys`,
    /// the role of `config.actor`). A `postgres://` target: the backup of a PostgreSQL store
    /// into a new store there, as the URL's role (its owner), erasures re-applied and the
    /// restore recorded in the same transaction (``PostgresStore/restore(backup:to:keyring:schema:serviceRole:journal:audit:environment:)``).
    /// Otherwise: copies the backup into a new SQLite store at
    /// `config.storePath` (0600; refused when one exists), verifies its audit chain and the
    /// journal (MAC chain, trailer, this store's id: integrity error, exit 1, otherwise), and
    /// re-applies every erasure the journal recorded after the backup's audit head; the restored
    /// store records `store.restore`. Without a journal it refuses (64) unless
    /// `acceptResurrection`, which records `store.restore_without_journal`. Any refusal after
    /// the copy removes the copy.
    public static func restore(_ config: VaultConfiguration, from backup: String, journal journalPath: String?, acceptResurrection: Bool,
                               serviceRole: String? = nil, logger: Logger = Logger(label: "profilevault")) throws -> RestoreReport {
        let files = try loadPolicyFiles(directory: config.policyDirectory)
        let role = config.actor.role
        guard files.policy.roles[role] != nil else { throw VaultError(.denied, "role \(role) is not defined in the policy") }
        guard files.policy.role(role, allows: "keys") else {
            let granting = files.policy.roles.filter { $0.value.contains("keys") }.keys.sorted()
            throw VaultError(.denied, "role \(role) may not keys; \(granting.isEmpty ? "no role of the policy has it" : "it needs role \(granting.joined(separator: " or ")) (--role)")")
        }
        if journalPath != nil && acceptResurrection {
            throw VaultError(.usage, "give either --erasure-journal FILE or --i-accept-resurrection, not both")
        }
        guard journalPath != nil || acceptResurrection else {
            throw VaultError(.usage, "restore needs the erasure journal of the store the backup came from (--erasure-journal FILE: STORE.erasures, or a copy from profilectl audit erasures --out): without it, every subject erased after the backup would come back. --i-accept-resurrection restores without it (audited)")
        }
        var journalBytes: [UInt8]?
        if let journalPath {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: journalPath, isDirectory: &isDir), !isDir.boolValue,
                  let data = FileManager.default.contents(atPath: journalPath) else {
                throw VaultError(.notFound, "\(journalPath): no erasure journal here")
            }
            journalBytes = Array(data)
        }
        let keyring = try loadKeyring(path: config.keysPath, hsm: config.hsmURI)
        if PostgresStore.isLocation(config.storePath) {
            let context = AuditContext(actor: config.actor.name, role: role, requestID: UUID().uuidString.lowercased(), policyVersion: files.policy.version)
            let report = try PostgresStore.restore(backup: backup, to: config.storePath, keyring: keyring, schema: files.schema, serviceRole: serviceRole,
                                                   journal: journalBytes.map { ($0, journalPath ?? "the erasure journal") }, audit: context)
            logger.info("store restored to PostgreSQL")
            return report
        }
        try ProfileStore.copyBackup(from: backup, to: config.storePath)
        var restored: ProfileStore?
        do {
            let store = try ProfileStore.open(path: config.storePath, keyring: keyring, schema: files.schema)
            restored = store
            let before = try store.verifyAudit(expectHead: nil)
            guard before.ok else {
                throw VaultError(.integrity, "\(backup): the backup's audit log does not verify (\(before.firstBad.map { "first bad entry \($0)" } ?? before.reason ?? "")); nothing restored")
            }
            let journal = try journalBytes.map { try store.openErasureJournal($0, label: journalPath ?? "the erasure journal") }
            let context = AuditContext(actor: config.actor.name, role: role, requestID: UUID().uuidString.lowercased(), policyVersion: files.policy.version)
            // Stored DP releases were made from the backup's population, which may hold subjects
            // erased since: none of them is served by the restored store.
            _ = try store.clearReleaseCache()
            let report = try store.reapplyErasures(journal, journalLabel: journalPath, audit: context)
            if let path = erasureJournalPath(storePath: config.storePath) {
                try store.refreshErasureJournal(at: path, merging: journal?.entries ?? [])
            }
            let after = try store.verifyAudit(expectHead: nil)
            guard after.ok else {
                throw VaultError(.integrity, "the restored store's audit log does not verify after the erasures were re-applied; nothing restored")
            }
            try store.close()
            logger.info("store restored", metadata: ["store": .string(config.storePath)])
            return report
        } catch {
            try? restored?.close()
            ProfileStore.removeStoreFiles(config.storePath)
            throw error
        }
    }
}
