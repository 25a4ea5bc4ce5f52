import ArgumentParser
import ProfileVault
import VaultValues

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a SQLite store to a new PostgreSQL store (ciphertext as is, keys unchanged, audit chain continued), then verify the copy.",
        discussion: "Run as a privacy officer (--role privacy_officer) with the store's keyring and policies. The password comes from PGPASSWORD or a passfile, never from the URL. The target database must not hold a store yet.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The SQLite store to copy (default: --store / PROFILEVAULT_STORE).")
    var from: String?
    @Option(help: "The PostgreSQL location: postgres://owner@host:port/database?sslmode=verify-full")
    var to: String
    @Option(help: "The role service nodes will run as (created NOLOGIN when missing; default profilevault_service).")
    var serviceRole: String?

    func run() throws {
        let vault = try Vault.open(options.configuration(storePath: from))
        defer { try? vault.close() }
        let r = try vault.migrate(to: to, serviceRole: serviceRole)
        options.emit(.object([
            ("subjects", .int(r.subjects)), ("events", .int(r.events)), ("consent_entries", .int(r.consentEntries)),
            ("consent_states", .int(r.consentStates)), ("suppressed", .int(r.suppressed)), ("budget_rows", .int(r.budgetRows)),
            ("policies", .int(r.policies)), ("audit_entries", .int(r.auditEntries)),
            ("audit_head_sequence", .int(r.headSequence)), ("audit_head", .string(r.head)), ("verified", .bool(true)),
        ]), text: """
            copied \(r.subjects) subjects, \(r.events) events, \(r.consentEntries) consent entries, \(r.auditEntries) audit entries
            verified: row counts, every subject's stored row, the audit chain (head entry \(r.headSequence), \(r.head))
            """)
    }
}
