import ArgumentParser
import Foundation
import ProfileVault
import VaultValues

/// `profilectl policy apply|status|history`: the policy the store runs under (SPEC §12).
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Record a changed policy as the one in force, and show the policy history.",
        subcommands: [Apply.self, Status.self, History.self])

    static func recordJSON(_ r: PolicyRecord?, changes: [PolicyChange], extra: [(String, JSONValue)] = []) -> JSONValue {
        .object([
            ("version", r.map { .string($0.version) } ?? .null),
            ("sha256", r.map { .string($0.sha256) } ?? .null),
            ("schema_sha256", r.map { .string($0.schemaSHA256) } ?? .null),
            ("applied_at", r.map { .string(Vault.isoTime(millis: $0.appliedAtMillis)) } ?? .null),
            ("actor", r.map { .string($0.actor) } ?? .null),
            ("role", r.map { .string($0.role) } ?? .null),
            ("changes", .array(changes.map(\.json))),
        ] + extra)
    }

    static func describe(_ r: PolicyRecord) -> String {
        "version \(r.version), sha256 \(r.sha256), applied \(Vault.isoTime(millis: r.appliedAtMillis)) by \(r.actor) (\(r.role))"
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record the policy files as the policy in force (role privacy_officer); prints the changes.")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            let r = try options.openVault(checkPolicy: false).applyPolicy()
            let lines = r.changes.map { "  " + $0.text }
            options.emit(PolicyCommand.recordJSON(r.record, changes: r.changes, extra: [("applied", .bool(r.applied))]),
                         text: (r.applied ? "applied policy \(PolicyCommand.describe(r.record))" : "already in force: \(PolicyCommand.describe(r.record))")
                            + (lines.isEmpty ? "" : "\nchanges:\n" + lines.joined(separator: "\n")))
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The policy in force, and what applying the policy files would change (needs no keyring).")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            let s = try Vault.policyStatus(storePath: options.storePath(), policyDirectory: options.policyDirectory)
            var text = s.inForce.map { "in force: " + PolicyCommand.describe($0) } ?? "in force: none recorded (run `\(Vault.applyCommand)`)"
            if let e = s.filesError {
                text += "\npolicy files: do not load: \(e)"
            } else if s.filesInForce {
                text += "\npolicy files: in force"
            } else {
                text += "\npolicy files: NOT in force (sha256 \(s.filesSHA256 ?? "?")); apply with `\(Vault.applyCommand)`"
                if !s.pending.isEmpty { text += "\npending changes:\n" + s.pending.map { "  " + $0.text }.joined(separator: "\n") }
            }
            options.emit(PolicyCommand.recordJSON(s.inForce, changes: s.pending, extra: [
                ("in_force", .bool(s.filesInForce)),
                ("files_sha256", s.filesSHA256.map(JSONValue.string) ?? .null),
                ("files_schema_sha256", s.filesSchemaSHA256.map(JSONValue.string) ?? .null),
                ("files_error", s.filesError.map(JSONValue.string) ?? .null),
            ]), text: text)
        }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every policy the store has run under, with the changes each made (needs no keyring).")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            let history = try Vault.policyHistory(storePath: options.storePath())
            let entries: [JSONValue] = history.map { r in
                PolicyCommand.recordJSON(r, changes: Vault.changes(of: r), extra: [("sequence", .int(r.sequence))])
            }
            let latest = history.last
            options.emit(PolicyCommand.recordJSON(latest, changes: latest.map(Vault.changes(of:)) ?? [], extra: [("history", .array(entries))]),
                         text: history.isEmpty ? "no policy recorded" : history.map { r in
                             (["\(r.sequence). " + PolicyCommand.describe(r)] + Vault.changes(of: r).map { "     " + $0.text }).joined(separator: "\n")
                         }.joined(separator: "\n"))
        }
    }
}
