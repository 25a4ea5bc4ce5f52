import ArgumentParser
import Foundation
import ProfileVault
import VaultValues

// The data subject's rights of issue 19 (part 3): restriction (Art. 18), objection (Art. 21)
// and consent import. docs/cli.md, docs/privacy-operations.md.

/// `restrict --subject ID` and `unrestrict --subject ID` (role permission `restrict`).
struct RestrictionChange: ParsableArguments {
    @OptionGroup var options: GlobalOptions
    @Option(help: "The customer ID.") var subject: String

    func run(restricted: Bool) throws {
        let changed = try options.openVault().setRestriction(customerID: subject, restricted: restricted)
        options.emit(.object([("customer_id", .string(subject)), ("changed", .bool(changed))]),
                     text: changed ? (restricted ? "restricted the processing of \(subject)" : "lifted the restriction of \(subject)")
                                   : (restricted ? "\(subject) was already restricted" : "\(subject) was not restricted"))
    }
}

struct Restrict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restrict a subject's processing (GDPR Art. 18): kept and exportable, left out of every query, job, recommendation and get (role privacy_officer).")
    @OptionGroup var change: RestrictionChange
    func run() throws { try change.run(restricted: true) }
}

struct Unrestrict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Lift a subject's restriction of processing (role privacy_officer).")
    @OptionGroup var change: RestrictionChange
    func run() throws { try change.run(restricted: false) }
}

extension Consent {
    struct Object: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record an objection (GDPR Art. 21) to a legitimate_interest purpose; enforced like a revoked consent.")
        @OptionGroup var options: GlobalOptions
        @OptionGroup var who: SubjectOptions
        @Option(help: "The purpose (legal_basis: legitimate_interest in policy.yaml).") var purpose: String

        func run() throws {
            let n = try options.openVault().object(who.selection, purpose: purpose)
            options.emit(.object([("changed", .int(Int64(n))), ("purpose", .string(purpose))]),
                         text: "recorded an objection to \(purpose) for \(n) subject(s)")
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import consent evidence (CSV customer_id,purpose,granted,time,source), all or nothing, times kept.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The CSV file.") var file: String

        func run() throws {
            let n = try options.openVault().importConsent(path: file)
            options.emit(.object([("changed", .int(Int64(n)))]), text: "imported \(n) consent entries from \(file)")
        }
    }
}

/// `rectify --subject ID --set field=value [--set ...]` (role permission `rectify`).
struct Rectify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rectify a subject's data (GDPR Art. 16): values validated like ingest, PII sealed again; all or nothing (role privacy_officer).")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The customer ID.") var subject: String
    @Option(name: .customLong("set"), help: "field=value (repeatable); an empty value sets the field to null.") var assignments: [String] = []

    func validate() throws {
        if assignments.isEmpty { throw ValidationError("give at least one --set field=value") }
        for a in assignments where !a.contains("=") { throw ValidationError("--set takes field=value") }
    }

    func run() throws {
        let pairs = assignments.map { a -> (field: String, value: String) in
            let i = a.firstIndex(of: "=") ?? a.endIndex
            return (String(a[..<i]), i < a.endIndex ? String(a[a.index(after: i)...]) : "")
        }
        let changed = try options.openVault().rectify(customerID: subject, set: pairs)
        options.emit(.object([("customer_id", .string(subject)), ("changed", .array(changed.map { .string($0) }))]),
                     text: changed.isEmpty ? "nothing changed for \(subject)" : "rectified \(changed.joined(separator: ", ")) for \(subject)")
    }
}
