import ArgumentParser
import Foundation
import ProfileVault
import VaultPolicy
import VaultValues

/// `profilectl requests`: the register of data-subject requests (role privacy_officer,
/// permission `requests`).
struct Requests: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The register of data-subject requests with their deadlines (role privacy_officer).",
        subcommands: [Open.self, List.self, Extend.self, Fulfil.self, Deny.self])

    static let types = RequestType.allCases.map(\.rawValue)
    static let channels = RequestChannel.allCases.map(\.rawValue)

    struct Open: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a request; prints its id and due date (received + requests.deadline).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "access, erasure, rectification, restriction, objection or portability.") var type: String
        @Option(help: "The customer ID (must be a subject of the store).") var subject: String
        @Option(help: "When the request was received (YYYY-MM-DD or ISO 8601 time; default now).") var received: String?
        @Option(help: "web, email, letter or phone.") var channel: String?
        @Option(help: "A note (stored sealed, never in clear).") var note: String?

        func validate() throws {
            guard Requests.types.contains(type) else {
                throw ValidationError("--type: not a request type (\(Requests.types.joined(separator: ", ")))")
            }
            if let channel, !Requests.channels.contains(channel) {
                throw ValidationError("--channel: not a channel (\(Requests.channels.joined(separator: ", ")))")
            }
            if let received, DateParsing.unixSeconds(fromISO8601: Substring(received)) == nil {
                throw ValidationError("--received: not a date (YYYY-MM-DD) or ISO 8601 time")
            }
        }

        func run() throws {
            let e: RegisterEntry
            do {
                e = try options.openVault().openRequest(type: type, customerID: subject, received: received, channel: channel, note: note)
            } catch let error as VaultError where error.kind == .invalidInput && error.message.hasPrefix("received:") {
                throw VaultError(.invalidInput, "--" + error.message)   // name the flag (a date in the future)
            }
            options.emit(.object([("request", .string(e.id)), ("due", JSONForms.isoMillis(e.dueMillis)), ("type", .string(e.type.rawValue))]),
                         text: "opened \(e.id) (\(e.type.rawValue)), due \(Vault.isoTime(millis: e.dueMillis))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The register with the days left to each due date (negative: overdue).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "open, overdue (open past its due date), done or denied.") var status: String?

        func validate() throws {
            if let status, Vault.RequestFilter(rawValue: status) == nil {
                throw ValidationError("--status: not a status (\(Vault.RequestFilter.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }

        func run() throws {
            let (list, now) = try options.openVault().listRequests(status.flatMap(Vault.RequestFilter.init(rawValue:)))
            options.emit(JSONForms.requests(list, nowMillis: now), text: Self.table(list, now: now))
        }

        static func table(_ list: [RegisterEntry], now: Int64) -> String {
            guard !list.isEmpty else { return "no requests" }
            let header = ["REQUEST", "TYPE", "STATUS", "RECEIVED", "DUE", "DAYS LEFT"]
            let rows = list.map { e -> [String] in
                let status = e.isOverdue(nowMillis: now) ? "overdue" : e.status.rawValue
                return [e.id, e.type.rawValue, status + (e.extendedDueMillis != nil ? " (extended)" : ""),
                        String(Vault.isoTime(millis: e.receivedMillis).prefix(10)), String(Vault.isoTime(millis: e.currentDueMillis).prefix(10)),
                        e.status == .open ? String(e.daysLeft(nowMillis: now)) : "-"]
            }
            let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
            func line(_ cells: [String]) -> String {
                cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                    .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
            }
            return ([line(header)] + rows.map(line)).joined(separator: "\n")
        }
    }

    struct Extend: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Extend an open request's due date once, by requests.extension.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The request id (req_...).") var id: String
        @Option(help: "Why (stored sealed).") var reason: String

        func run() throws {
            let e = try options.openVault().extendRequest(id: id, reason: reason)
            options.emit(.object([("request", .string(e.id)), ("due", JSONForms.isoMillis(e.currentDueMillis))]),
                         text: "extended \(e.id): due \(Vault.isoTime(millis: e.currentDueMillis))")
        }
    }

    struct Deny: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refuse an open request (e.g. identity not verified).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The request id (req_...).") var id: String
        @Option(help: "Why (stored sealed).") var reason: String

        func run() throws {
            let e = try options.openVault().denyRequest(id: id, reason: reason)
            options.emit(.object([("request", .string(e.id)), ("status", .string(e.status.rawValue))]), text: "denied \(e.id)")
        }
    }

    struct Fulfil: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the request's operation and attach its result: erasure erases (receipt), access and portability write the export to --out (its SHA-256).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The request id (req_...).") var id: String
        @Option(help: "Access and portability: write the export here (a new file, mode 0600).") var out: String?
        @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false
        @Flag(help: "Rectification, restriction, objection: confirm that the right's command was run.") var done = false

        func validate() throws {
            if force && out == nil { throw ValidationError("--force needs --out") }
        }

        func run() throws {
            let vault = try options.openVault()
            // Access and portability need --out; the output is opened first (exit 73 decrypts nothing).
            let file: OutputFile?
            if let out {
                file = try vault.createOutput(out, force: force, what: "the access export")
            } else {
                file = nil
            }
            let r = try vault.fulfilRequest(id: id, output: file, confirmed: done, requireOutput: true)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            var text = "fulfilled \(r.request.id) (\(r.request.type.rawValue))"
            if let receipt = r.receipt { text += ": erased at \(Vault.isoTime(millis: receipt.erasedAtMillis)), receipt \(receipt.receipt) (audit entry \(receipt.auditSequence))" }
            if let e = r.earlierErasure { text += ": already erased at \(Vault.isoTime(millis: e.erasedAtMillis))" + (e.receipt.map { ", receipt \($0)" } ?? "") }
            if let d = r.exportSHA256, let out { text += ": wrote the access export to \(out) (mode 0600), sha256 \(d)" }
            if r.receipt == nil, r.earlierErasure == nil, r.exportSHA256 == nil, let outcome = r.request.outcome { text += ": \(outcome)" }
            options.emit(JSONForms.fulfilment(r, nowMillis: now, includeExport: false), text: text)
        }
    }
}
