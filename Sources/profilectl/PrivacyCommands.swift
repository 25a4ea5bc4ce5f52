import ArgumentParser
import Foundation
import ProfileVault
import VaultPolicy
import VaultValues

/// `--subject ID` or `--subjects FILE`, exactly one.
struct SubjectOptions: ParsableArguments {
    @Option(help: "One customer ID.") var subject: String?
    @Option(help: "A file with one customer ID per line.") var subjects: String?

    func validate() throws {
        if (subject == nil) == (subjects == nil) { throw ValidationError("give exactly one of --subject or --subjects") }
    }

    var selection: Vault.SubjectSelection { subject.map { .one($0) } ?? .file(subjects!) }
}


struct Consent: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The consent ledger (role privacy_officer).",
                                                    subcommands: [Grant.self, Revoke.self, Object.self, Import.self, Status.self, History.self])

    struct Change: ParsableArguments {
        @OptionGroup var options: GlobalOptions
        @OptionGroup var who: SubjectOptions
        @Option(help: "The purpose (declared in policy.yaml).") var purpose: String
        @Option(help: "Where the consent change comes from (e.g. web-form, call-center).") var source: String?

        func run(granted: Bool) throws {
            let n = try options.openVault().setConsent(who.selection, purpose: purpose, granted: granted, source: source)
            options.emit(.object([("changed", .int(Int64(n))), ("purpose", .string(purpose)), ("granted", .bool(granted))]),
                         text: "\(granted ? "granted" : "revoked") \(purpose) for \(n) subject(s)")
        }
    }

    struct Grant: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record consent for a purpose.")
        @OptionGroup var change: Change
        func run() throws { try change.run(granted: true) }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke consent; effective for every later read, query and job.")
        @OptionGroup var change: Change
        func run() throws { try change.run(granted: false) }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A subject's current consent per purpose.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The customer ID.") var subject: String

        func run() throws {
            let states = try options.openVault().consentStatus(customerID: subject)
            options.emit(.object([
                ("customer_id", .string(subject)),
                ("purposes", JSONForms.consentPurposes(states)),
            ]), text: states.map { "\($0.purpose): \($0.state.granted ? "granted" : "not granted")\($0.state.sinceMillis.map { " since " + Vault.isoTime(millis: $0) } ?? "")\($0.needed ? "" : " (legal basis is not consent)")" }.joined(separator: "\n"))
        }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A subject's consent ledger entries.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The customer ID.") var subject: String

        func run() throws {
            let entries = try options.openVault().consentHistory(customerID: subject)
            options.emit(.object([
                ("customer_id", .string(subject)),
                ("entries", .array(entries.map(JSONForms.consentEntry))),
            ]), text: entries.isEmpty ? "no consent changes" : entries.map {
                "\(Vault.isoTime(millis: $0.timeMillis))  \($0.granted ? "grant " : "revoke") \($0.purpose)  by \($0.actor)\($0.source.map { " via \($0)" } ?? "")  (policy \($0.policyVersion))"
            }.joined(separator: "\n"))
        }
    }
}


struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Data-subject access export: everything held about a subject, decrypted (role privacy_officer).",
        discussion: "--format json (default): the data with what GDPR Art. 15 asks (purposes, categories, recipients, retention, sources, accesses). --format html: the same as one self-contained page. --format portability: the subject's own data (profile fields and events) as JSON, or as CSV with --csv (Art. 20).")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The customer ID.") var subject: String
    @Option(name: .customLong("format"), help: "json, html or portability.") var formatName = "json"
    var format: AccessExportFormat { AccessExportFormat(rawValue: formatName) ?? .json }
    @Flag(help: "With --format portability: CSV (record,name,value,item,time) instead of JSON.") var csv = false
    @Option(help: "Write the export to this file (a new file, mode 0600) instead of stdout.") var out: String?
    @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false

    func validate() throws {
        if force && out == nil { throw ValidationError("--force needs --out") }
        guard AccessExportFormat(rawValue: formatName) != nil else { throw ValidationError("--format \(formatName): expected json, html or portability") }
        if csv && format != .portability { throw ValidationError("--csv needs --format portability") }
    }

    func run() throws {
        let vault = try options.openVault()
        // The output is opened first: a refused path (exit 73) decrypts and audits nothing.
        let file = try out.map { try vault.createOutput($0, force: force, what: "the access export") }
        let r = try vault.accessReport(customerID: subject, format: format)
        let text: String
        switch format {
        case .json: text = JSONForms.accessReport(r).rendered(pretty: true) + "\n"
        case .html: text = AccessExportHTML.render(r)
        case .portability: text = csv ? JSONForms.portabilityCSV(r.export) : JSONForms.portability(r.export).rendered(pretty: true) + "\n"
        }
        if let out, let file {
            try file.write(text)
            try file.commit()
            options.emit(.object([("customer_id", .string(r.export.customerID)), ("out", .string(out))]), text: "wrote the access export to \(out) (mode 0600)")
        } else {
            print(text, terminator: "")
        }
    }
}

struct Erase: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Crypto-shredding erasure; prints a receipt (role privacy_officer).")
    @OptionGroup var options: GlobalOptions
    @OptionGroup var who: SubjectOptions
    @Option(help: "Why (recorded in the audit log).") var reason = "data-subject request"
    @Flag(name: .customLong("all-or-nothing"),
          help: "With --subjects: refuse the whole file when an ID is unknown or erased before (default: erase the others and report those by line).")
    var allOrNothing = false

    func run() throws {
        let vault = try options.openVault()
        if who.subjects != nil, !allOrNothing {
            let (receipts, skipped) = try vault.eraseExisting(who.selection, reason: reason)
            // The IDs are never printed in a report of what was skipped: lines only.
            for s in skipped {
                warn("\(who.subjects ?? ""):\(s.line): " + (s.erasedBefore.map { "already erased on \(Vault.isoTime(millis: $0.erasedAtMillis))" + ($0.receipt.map { " with receipt \($0)" } ?? "") }
                    ?? "no subject with this customer ID") + "; skipped")
            }
            options.emit(.object([("erased", .int(Int64(receipts.count))), ("receipts", .array(receipts.map(JSONForms.receipt))),
                                  ("skipped", JSONForms.skipped(skipped))]),
                         text: "erased \(receipts.count) subjects\(skipped.isEmpty ? "" : ", skipped \(skipped.count) (see the warnings)"); receipts: " + receipts.map { "\($0.customerID) \($0.receipt)" }.joined(separator: "\n"))
            return
        }
        let receipts = try vault.erase(who.selection, reason: reason)
        let json = JSONForms.receipt
        if receipts.count == 1, who.subject != nil {
            let r = receipts[0]
            options.emit(json(r), text: """
                erased \(r.customerID) at \(Vault.isoTime(millis: r.erasedAtMillis)) (\(r.removed.map { "\($0.0) \($0.1)" }.joined(separator: ", ")))
                receipt: audit entry \(r.auditSequence), hash \(r.receipt)
                """)
        } else {
            options.emit(.object([("erased", .int(Int64(receipts.count))), ("receipts", .array(receipts.map(json)))]),
                         text: "erased \(receipts.count) subjects; receipts: " + receipts.map { "\($0.customerID) \($0.receipt)" }.joined(separator: "\n"))
        }
    }
}

struct Retention: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Retention sweeps (role privacy_officer).", subcommands: [Apply.self])

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply policy.yaml's retention rules.")
        @OptionGroup var options: GlobalOptions
        @Flag(name: .customLong("dry-run"), help: "Report the counts, per rule too; change nothing.") var dryRun = false
        @Flag(help: "With --dry-run: list the customer IDs concerned per rule (each resolution audited).") var list = false
        @Option(name: .customLong("as-of"), help: "Apply as if today were this date (YYYY-MM-DD or ISO 8601 time).") var asOf: String?

        func validate() throws {
            if list && !dryRun { throw ValidationError("--list needs --dry-run") }
            if let asOf, DateParsing.unixSeconds(fromISO8601: Substring(asOf)) == nil {
                throw ValidationError("--as-of \(asOf): not a date (YYYY-MM-DD) or ISO 8601 time")
            }
        }

        func run() throws {
            let at = asOf.flatMap { DateParsing.unixSeconds(fromISO8601: Substring($0)) }
            if dryRun {
                let plan = try options.openVault().retentionPlan(asOf: at, list: list)
                options.emit(JSONForms.retentionPlan(plan), text: JSONForms.retentionPlanText(plan))
                return
            }
            let r = try options.openVault().applyRetention(asOf: at, dryRun: dryRun)
            options.emit(.object([("events_deleted", .int(Int64(r.eventsDeleted))), ("subjects_erased", .int(Int64(r.subjectsErased))), ("dry_run", .bool(dryRun))]),
                         text: "\(dryRun ? "would delete" : "deleted") \(r.eventsDeleted) events and \(dryRun ? "erase" : "erased") \(r.subjectsErased) subjects")
        }
    }
}
