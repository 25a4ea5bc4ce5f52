import ArgumentParser
import ProfileVault
import VaultValues

/// `profilectl backup --out FILE`: an online, consistent copy of a SQLite store (docs/deployment.md, "Backups").
struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an online, consistent backup of the store to a new file (mode 0600).",
        discussion: "Run as a privacy officer (--role privacy_officer: permission keys). The backup holds the store's ciphertext and wrapped data keys as the store does; keep it no longer than docs/deployment.md says, and keep the erasure journal that restore needs (STORE.erasures beside a SQLite store; for PostgreSQL, audit erasures --out FILE after the backup and after every erasure run).")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The backup file (a new file; never the store, the keyring or a policy file).") var out: String

    func run() throws {
        let vault = try options.openVault()
        defer { try? vault.close() }
        let r = try vault.backup(to: out)
        options.emit(.object([("path", .string(r.path)), ("audit_head_sequence", .int(r.sequence)), ("audit_head", .string(r.head))]),
                     text: "backup written to \(r.path); its audit head is entry \(r.sequence), \(r.head)")
    }
}

/// `profilectl restore --from BACKUP --to STORE [--erasure-journal F]`.
struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into a new store and re-apply every erasure recorded after the backup was taken.",
        discussion: "Run as a privacy officer (--role privacy_officer: permission keys) with the store's keyring and policies. --erasure-journal is the journal of the store the backup came from (STORE.erasures beside it, or a copy from audit erasures --out); restore refuses without it unless --i-accept-resurrection, which the restored store's audit log records as store.restore_without_journal.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The backup file (from profilectl backup).") var from: String
    @Option(help: "Where the restored store goes: a new SQLite file, or a new PostgreSQL database (postgres://owner@host/db) for a backup of a PostgreSQL store.") var to: String
    @Option(name: .customLong("erasure-journal"), help: "The erasure journal of the store the backup came from.") var erasureJournal: String?
    @Flag(name: .customLong("i-accept-resurrection"), help: "Restore without an erasure journal: subjects erased after the backup come back (audited).")
    var acceptResurrection = false
    @Option(name: .customLong("service-role"), help: "With --to postgres://...: the role the service nodes run as (granted least privilege; default profilevault_service).")
    var serviceRole: String?

    func run() throws {
        let config = try options.configuration(storePath: to)
        let r = try Vault.restore(config, from: from, journal: erasureJournal, acceptResurrection: acceptResurrection, serviceRole: serviceRole)
        if r.journalEntries == nil {
            warn("restored without an erasure journal: subjects erased after the backup (audit entry \(r.backupSequence)) are back in \(to); the restored store's audit log records it")
        }
        options.emit(.object([
            ("path", .string(to)), ("backup_head_sequence", .int(r.backupSequence)), ("backup_head", .string(r.backupHead)),
            ("journal_entries", r.journalEntries.map { .int(Int64($0)) } ?? .null), ("after_backup", .int(Int64(r.afterBackup))),
            ("erased", .int(Int64(r.erased))), ("suppressed", .int(Int64(r.suppressed))),
            ("audit_head_sequence", .int(r.headSequence)), ("audit_head", .string(r.head)),
        ]), text: """
            restored \(from) to \(to) (backup audit head entry \(r.backupSequence))
            \(r.journalEntries.map { "erasure journal: \($0) entries, \(r.afterBackup) after the backup: \(r.erased) subjects erased again, \(r.suppressed) suppression entries added" } ?? "no erasure journal (--i-accept-resurrection)")
            audit head entry \(r.headSequence), \(r.head)
            """)
    }
}
