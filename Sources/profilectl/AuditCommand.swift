import ArgumentParser
import Foundation
import ProfileVault
import VaultValues

/// Parses `--since` / `--until`: ISO 8601 date or time, or unix milliseconds.
func parseTimeMillis(_ text: String, option: String) throws -> Int64 {
    if let ms = Int64(text) { return ms }
    let f = ISO8601DateFormatter()
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime], [.withFullDate]] {
        f.formatOptions = options
        if let d = f.date(from: text) { return Int64((d.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
    throw ValidationError("\(option) \(text): not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)")
}

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Auditor tools: export, verify, signed head, public key.",
        subcommands: [Export.self, Report.self, Verify.self, Head.self, PublicKey.self, Erasures.self, Archive.self])

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the access log (JSON Lines or CSV), ending with a signed head.",
            discussion: "JSON Lines entries are OCSF objects ({\"actor\":{\"user\":{\"name\":..}}}) unless --flat; CSV is flat. --subject ID selects one customer's entries (resolving the ID is audited); --after-seq N the entries after N, for shipping without duplicates (the answer's last_sequence is the next N).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Entries at or after this time (ISO 8601 or unix ms).") var since: String?
        @Option(help: "Entries at or before this time (ISO 8601 or unix ms).") var until: String?
        @Option(name: .customLong("after-seq"), help: "Only entries with a sequence number above N (the last_sequence of the previous export).") var afterSeq: Int64?
        @Option(help: "Only the entries about this customer (by its pseudonym; the lookup is audited).") var subject: String?
        @Flag(help: "Flat dotted keys (as stored) instead of nested OCSF objects (JSON Lines).") var flat = false
        @Option(help: "jsonl or csv.") var format = "jsonl"
        @Option(help: "The export file (a new file, mode 0600).") var out: String
        @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false

        func validate() throws {
            guard AuditExportFormat(rawValue: format) != nil else { throw ValidationError("--format must be jsonl or csv, not \(format)") }
            if let since { _ = try parseTimeMillis(since, option: "--since") }
            if let until { _ = try parseTimeMillis(until, option: "--until") }
            if let afterSeq, afterSeq < 0 { throw ValidationError("--after-seq must be 0 or more") }
            if let subject, subject.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--subject: the customer ID is empty") }
        }

        func run() throws {
            let vault = try options.openVault()
            guard let fmt = AuditExportFormat(rawValue: format) else { throw ValidationError("--format must be jsonl or csv, not \(format)") }
            let request = Vault.AuditExportRequest(format: fmt, sinceMillis: try since.map { try parseTimeMillis($0, option: "--since") },
                                                   untilMillis: try until.map { try parseTimeMillis($0, option: "--until") },
                                                   afterSequence: afterSeq, subjectID: subject, flat: flat)
            let r = try vault.exportAudit(request, to: out, force: force)
            options.emit(.object([("entries", .int(Int64(r.entries))), ("head", .string(r.head)), ("last_sequence", .int(r.lastSequence)),
                                  ("out", .string(out))]),
                         text: "exported \(r.entries) entries to \(out); signed head \(r.head); continue with --after-seq \(r.lastSequence)")
        }
    }

    struct Archive: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move the entries before DATE out of the store into a signed archive file; the store keeps their signed anchor.",
            discussion: "Permission audit (auditor). The archive is an ordinary signed export of the oldest entries (a prefix of the chain ending under a signed checkpoint): audit verify --file FILE --public-key PEM checks it alone. It is written (new file, 0600) and fsynced before any entry is deleted; the store keeps a signed anchor (the last archived entry's sequence number and hash, and its checkpoint), audit verify starts the live chain from it, and an audit.archive entry records the range and the archive's head. On PostgreSQL run it with the owner's --store location (as init): the service role may not delete audit entries. Keep the file: it is the only copy of those entries.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Archive the entries strictly before this time (ISO 8601 or unix ms; not in the future).") var before: String
        @Option(help: "The archive file (a new file, mode 0600; never replaced).") var out: String

        func validate() throws {
            _ = try parseTimeMillis(before, option: "--before")
        }

        func run() throws {
            let vault = try Vault.open(try options.configuration(), asOwner: true)
            defer { try? vault.close() }
            let r = try vault.archiveAudit(before: try parseTimeMillis(before, option: "--before"), to: out)
            options.emit(.object([("archived", .int(Int64(r.entries))), ("out", .string(out)), ("first_sequence", .int(r.firstSequence)), ("last_sequence", .int(r.lastSequence)),
                                  ("entries", .int(Int64(r.entries))), ("head", .string(r.head)), ("record_sequence", .int(r.recordSequence))]),
                         text: "archived entries \(r.firstSequence) to \(r.lastSequence) (\(r.entries)) to \(out); archive head \(r.head); recorded as audit entry \(r.recordSequence); keep the file: the store holds only its signed anchor")
        }
    }

    struct Erasures: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the erasure journal (every erasure: pseudonym, time, reason, receipt; MACed line by line) to a new file.",
            discussion: "Permission keys (privacy_officer). restore --erasure-journal FILE re-applies it to a backup. A SQLite store also keeps it beside itself (STORE.erasures), rewritten after every erasure.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The journal file (a new file, mode 0600).") var out: String
        @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false

        func run() throws {
            let vault = try options.openVault()
            defer { try? vault.close() }
            let n = try vault.exportErasureJournal(to: out, force: force)
            options.emit(.object([("path", .string(out)), ("entries", .int(Int64(n)))]), text: "erasure journal written to \(out): \(n) erasures")
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts of the access log per actor, action, purpose and outcome; denied attempts; epsilon spent per purpose.",
            discussion: "The report is itself audited (audit.report). It summarises the entries; audit verify proves them.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Entries at or after this time (ISO 8601 or unix ms).") var since: String?
        @Option(help: "Entries at or before this time (ISO 8601 or unix ms).") var until: String?

        func validate() throws {
            if let since { _ = try parseTimeMillis(since, option: "--since") }
            if let until { _ = try parseTimeMillis(until, option: "--until") }
        }

        func run() throws {
            let vault = try options.openVault()
            let report = try vault.auditReport(sinceMillis: try since.map { try parseTimeMillis($0, option: "--since") },
                                               untilMillis: try until.map { try parseTimeMillis($0, option: "--until") })
            var json = JSONForms.auditReport(report)
            var lines = ["audit report: \(report.entries) entries" + (report.firstSequence.map { " (\($0) to \(report.lastSequence ?? $0))" } ?? "")]
            // After `audit archive` the report counts the live entries only: say so.
            if let archived = try vault.auditArchivedThrough() {
                lines.append("entries up to \(archived) are in audit archives and not counted here")
                if case .object(let pairs) = json { json = .object(pairs + [("archived_through", .int(archived))]) }
            }
            lines.append("denied attempts: \(report.deniedCount)")
            for d in report.denied {
                lines.append("  #\(d.sequence) \(d.time) \(d.actor) (\(d.role)) \(d.action)\(d.purpose.map { " purpose \($0)" } ?? "")\(d.subject.map { " subject \($0.prefix(16))..." } ?? ""): \(d.detail ?? "")")
            }
            for (title, counts) in [("by actor", report.byActor), ("by action", report.byAction), ("by purpose", report.byPurpose), ("by outcome", report.byOutcome)] {
                lines.append(title + ":")
                for (k, n) in JSONForms.sortedCounts(counts) { lines.append("  \(k): \(n)") }
            }
            lines.append("epsilon spent by purpose:")
            for (k, e) in report.epsilonByPurpose.sorted(by: { $0.key < $1.key }) { lines.append("  \(k): \(e)") }
            if !report.rhoByPurpose.isEmpty {
                lines.append("rho spent by purpose (zCDP):")
                for (k, r) in report.rhoByPurpose.sorted(by: { $0.key < $1.key }) { lines.append("  \(k): \(r)") }
            }
            options.emit(json, text: lines.joined(separator: "\n"))
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify the store's log (with the keyring) or an export file (with the public key alone).",
            discussion: "Exit 1 when the log does not verify; the answer names the first bad entry.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "A JSON Lines export to verify instead of the store.") var file: String?
        @Option(name: .customLong("public-key"), help: "The audit public key (PEM) for --file.") var publicKey: String?
        @Option(name: .customLong("expect-head"), help: ArgumentHelp(
            "A head hash from an earlier export, or a file of published heads (audit head, serve --publish-heads): detects a truncated or rolled-back tail.",
            valueName: "HASH|FILE")) var expectHead: String?

        func validate() throws {
            if (file == nil) != (publicKey == nil) { throw ValidationError("--file and --public-key go together") }
        }

        func run() throws {
            let result: AuditVerification
            if let file, let publicKey {
                // Needs no keyring, store or role: anyone holding the export and the public key can check it.
                guard let pem = try? String(contentsOfFile: publicKey, encoding: .utf8) else {
                    throw VaultError(.notFound, "\(publicKey): cannot read the public key")
                }
                result = try Vault.verifyAuditExport(path: file, publicKeyPEM: pem, keyName: publicKey, expectHead: expectHead)
            } else {
                // Read-only: verifies even while a changed policy waits to be applied.
                result = try options.openVault(checkPolicy: false).verifyAudit(expectHead: expectHead)
            }
            options.emit(.object([
                ("ok", .bool(result.ok)),
                ("entries", .int(Int64(result.entries))),
                ("first_bad", result.firstBad.map { .int($0) } ?? .null),
                ("reason", result.reason.map { .string($0) } ?? .null),
                ("head", result.head.map { .string($0) } ?? .null),
                ("archived_through", result.archivedThrough.map { .int($0) } ?? .null),
            ]), text: result.ok ? "ok: \(result.entries) entries verify; head \(result.head ?? "")"
                                    + (result.archivedThrough.map { "; entries up to \($0) are in audit archives (the live log starts from their signed anchor; verify the archive files with --file)" } ?? "")
                                : "NOT OK: first bad entry \(result.firstBad.map(String.init) ?? "?"): \(result.reason ?? "")")
            if !result.ok {
                FileHandle.standardError.write(Data("error: audit log does not verify: first bad entry \(result.firstBad.map(String.init) ?? "?"): \(result.reason ?? "")\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct Head: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the newest signed head of the audit log, verified; publish it outside the store.",
            discussion: "Keep the output (or serve --publish-heads FILE) on another host: audit verify --expect-head FILE later detects a log truncated back to an older checkpoint or a store restored from an older copy. Exit 1 when the head is not covered by a checkpoint that verifies.")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            // Read-only, like verify: an auditor can take the head while a changed policy waits.
            let vault = try options.openVault(checkPolicy: false)
            guard let head = try vault.signedAuditHead() else {
                throw VaultError(.notFound, "the audit log is empty: there is no signed head yet")
            }
            // One line, so `audit head --json >> heads.jsonl` keeps a file --expect-head reads.
            if options.json {
                print(head.published.canonicalString())
            } else {
                print("entry \(head.sequence) head \(Vault.hex(head.hash)) checkpoint \(Vault.hex(head.digest))")
            }
        }
    }

    struct PublicKey: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "public-key", abstract: "Write the audit public key (PEM) for auditors.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Where to write the PEM file (a new file, mode 0600).") var out: String
        @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false

        func run() throws {
            let vault = try options.openVault()
            let file = try vault.createOutput(out, force: force, what: "the public key file")
            try file.write(vault.auditPublicKeyPEM)
            try file.commit()
            options.emit(.object([("path", .string(out))]), text: "wrote the audit public key to \(out)")
        }
    }
}
