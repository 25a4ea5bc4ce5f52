import Foundation
public import VaultAudit
import VaultCrypto
public import VaultPolicy
public import VaultStore
public import VaultValues

/// The register's value types, for the interfaces (which import ProfileVault, not VaultStore).
public typealias RegisterEntry = VaultStore.RegisterEntry
public typealias RequestType = VaultStore.RequestType
public typealias RequestChannel = VaultStore.RequestChannel
public typealias RequestStatus = VaultStore.RequestStatus
public typealias ErasureRecord = VaultStore.ErasureRecord

/// The request register (issue 19): data-subject requests with their deadlines, from opening
/// to fulfilment or denial. Every operation needs permission `requests` (privacy_officer) and is
/// audited; fulfilling runs the right's own operation, which needs that operation's permission
/// too (`erase`, `export`).
extension Vault {
    /// What `requests fulfil` did: the request, closed, and what the operation produced.
    public struct FulfilResult: Sendable {
        public var request: RegisterEntry
        /// The erasure's receipt (an erasure request).
        public var receipt: ErasureReceipt?
        /// An erasure request whose subject was already erased: the suppression list's record.
        public var earlierErasure: ErasureRecord?
        /// The access export (access and portability requests), as written to the output file
        /// when there was one.
        public var export: JSONValue?
        /// SHA-256 (hex) of the export's bytes as written (attached to the request).
        public var exportSHA256: String?
    }

    /// The refusal for a customer ID that is not a subject: an erased one says when it was
    /// erased and under which receipt (the suppression list), still not found (66); another
    /// says it is unknown. The message never holds the ID.
    func subjectNotFound(customerID: String) -> VaultError {
        guard let pseudo = try? store.pseudonym(ofCustomerID: customerID), let record = try? store.erasure(pseudonym: pseudo) else {
            return VaultError(.notFound, "no subject with this customer ID")
        }
        return Self.erasedError(record)
    }

    /// What may be shown of an erased subject: its pseudonym (hex), when it was erased and the
    /// receipt's id (the suppression list's record; nil receipt for an erasure recorded before
    /// receipts were kept). Nothing else is kept about it.
    public struct ErasedSubject: Sendable, Equatable {
        public var pseudonym: String
        public var erasedAtMillis: Int64
        public var receipt: String?
    }

    /// The suppression list's record of `customerID` when that subject was erased, else nil
    /// (role permission `export`, as the access report that cannot be made for it). A record
    /// found is audited as `subject.erased` with the pseudonym; the reason and the audit entry
    /// of the erasure are not returned. The console's subject page shows the key as shredded.
    public func erasedSubject(customerID: String) throws -> ErasedSubject? {
        try audited("subject.erased", .read, permission: "export", subjectID: customerID) { context in
            guard !Normalization.customerID(customerID).isEmpty else { throw VaultError(.invalidInput, "no customer ID given") }
            let pseudo = try store.pseudonym(ofCustomerID: customerID)
            guard let record = try store.erasure(pseudonym: pseudo) else { return nil }
            try store.audit([context.record("subject.erased", .read, subject: pseudo, detail: "the suppression list's record of an erased subject")])
            return ErasedSubject(pseudonym: AuditLog.hex(pseudo), erasedAtMillis: record.erasedAtMillis, receipt: record.receipt)
        }
    }

    static func erasedError(_ record: ErasureRecord) -> VaultError {
        VaultError(.notFound, "this customer ID was erased on \(Self.erasureText(record)): no data is held about it")
    }

    /// `2026-12-06T10:11:12.345Z with receipt <hash> (audit entry 42)`, or the time alone for an
    /// erasure recorded before receipts were kept.
    static func erasureText(_ r: ErasureRecord) -> String {
        var s = AuditLog.isoMillis(r.erasedAtMillis)
        if let receipt = r.receipt {
            s += " with receipt \(receipt)"
            if let seq = r.auditSequence { s += " (audit entry \(seq))" }
        }
        return s
    }

    /// When `received` (YYYY-MM-DD or ISO 8601 time) is, in unix milliseconds; now when nil.
    static func receivedMillis(_ received: String?, now: Int64) throws -> Int64 {
        guard let received else { return now }
        guard let seconds = DateParsing.unixSeconds(fromISO8601: Substring(received)),
              case let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000), !overflow, ms >= 0 else {
            throw VaultError(.invalidInput, "received: not a date (YYYY-MM-DD) or ISO 8601 time")
        }
        // A day of slack for a date written in another time zone.
        guard ms <= now + 86_400_000 else { throw VaultError(.invalidInput, "received: the date is in the future") }
        return ms
    }

    static func requestType(_ s: String) throws -> RequestType {
        guard let t = RequestType(rawValue: s) else {
            throw VaultError(.invalidInput, "type: not a request type (\(RequestType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return t
    }

    static func requestChannel(_ s: String?) throws -> RequestChannel? {
        guard let s else { return nil }
        guard let c = RequestChannel(rawValue: s) else {
            throw VaultError(.invalidInput, "channel: not a channel (\(RequestChannel.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return c
    }

    /// Opens a request about an existing subject: due `requests.deadline` after `received`
    /// (default now). An unknown customer ID is refused (66), an erased one says when it was
    /// erased; the type, channel, date and note are checked before anything is read.
    public func openRequest(type: String, customerID: String, received: String? = nil, channel: String? = nil,
                            note: String? = nil) throws -> RegisterEntry {
        try audited("requests.open", .create, permission: "requests", subjectID: customerID) { context in
            let t = try Self.requestType(type)
            let c = try Self.requestChannel(channel)
            let now = AuditLog.nowMillis
            let receivedAt = try Self.receivedMillis(received, now: now)
            try RequestRegister.checkText(note, "note")
            if let note, note.isEmpty { throw VaultError(.invalidInput, "note: empty (leave it out instead)") }
            let (deadline, overflow) = Int64(policy.requests.deadlineSeconds).multipliedReportingOverflow(by: 1000)
            let (due, overflow2) = receivedAt.addingReportingOverflow(deadline)
            guard !overflow, !overflow2 else { throw VaultError(.configuration, "the policy's requests.deadline is out of range") }
            let id = Normalization.customerID(customerID)
            guard !id.isEmpty else { throw VaultError(.invalidInput, "customer ID: empty") }
            guard try store.exists(customerID: id) else { throw subjectNotFound(customerID: id) }
            let request = NewRequest(id: RequestRegister.newID(), type: t, customerID: id, receivedMillis: receivedAt, dueMillis: due,
                                     channel: c, note: note)
            do {
                return try store.openRequest(request, audit: context)
            } catch let e as VaultError where e.kind == .notFound {
                throw subjectNotFound(customerID: id)   // erased meanwhile
            }
        }
    }

    /// The filter of `requests list`: a status, or `overdue` (open past its due date).
    public enum RequestFilter: String, CaseIterable, Sendable {
        case open, overdue, done, denied
    }

    /// The register (metadata only; nothing is decrypted), oldest due date first, with the
    /// time the days left count from. Audited (`requests.list`, with the count).
    public func listRequests(_ filter: RequestFilter? = nil) throws -> (requests: [RegisterEntry], nowMillis: Int64) {
        try audited("requests.list", .read, permission: "requests") { context in
            let now = AuditLog.nowMillis
            let status: RequestStatus? = switch filter {
            case nil: nil
            case .open, .overdue: .open
            case .done: .done
            case .denied: .denied
            }
            var entries = try store.requests(status: status)
            if filter == .overdue { entries = entries.filter { $0.isOverdue(nowMillis: now) } }
            try store.audit([context.record("requests.list", .read, detail: filter.map { "status \($0.rawValue)" },
                                            counts: [("requests", Int64(entries.count))])])
            return (entries, now)
        }
    }

    /// Parses a `requests list --status` / `?status=` value.
    public static func requestFilter(_ s: String) throws -> RequestFilter {
        guard let f = RequestFilter(rawValue: s) else {
            throw VaultError(.invalidInput, "status: not a status (\(RequestFilter.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return f
    }

    /// Extends an open request once, by the policy's `requests.extension`; the reason is sealed.
    public func extendRequest(id: String, reason: String) throws -> RegisterEntry {
        try audited("requests.extend", .update, permission: "requests") { context in
            try Self.checkReason(reason)
            let (by, overflow) = Int64(policy.requests.extensionSeconds).multipliedReportingOverflow(by: 1000)
            guard !overflow else { throw VaultError(.configuration, "the policy's requests.extension is out of range") }
            return try store.changeRequest(id: id, .extend(extensionMillis: by, reason: reason), audit: context)
        }
    }

    /// Refuses an open request (e.g. identity not verified); the reason is sealed.
    public func denyRequest(id: String, reason: String) throws -> RegisterEntry {
        try audited("requests.deny", .update, permission: "requests") { context in
            try Self.checkReason(reason)
            return try store.changeRequest(id: id, .deny(reason: reason), audit: context)
        }
    }

    static func checkReason(_ reason: String) throws {
        guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw VaultError(.invalidInput, "reason: empty") }
        try RequestRegister.checkText(reason, "reason")
    }

    /// Fulfils an open request by running its right's operation and attaching the result:
    /// - erasure: erases the subject (permission `erase`) and attaches the receipt
    ///   (`receipt:<hash>`); a subject already erased attaches that erasure's receipt;
    /// - access, portability: the access export (permission `export`), written to `output`
    ///   when given (the caller opened it: exit 73 before anything is decrypted), its SHA-256
    ///   attached (`sha256:<hex>`);
    /// - rectification, restriction, objection: ``fulfilOther(_:customerID:confirmed:context:)``.
    /// A closed request is refused (65), an unknown id is 66.
    ///
    /// With `requireOutput` (the CLI), an access or portability request without `output` is a
    /// usage error (64) before anything is read; without it (HTTP) the export is returned only.
    ///
    /// An erasure closes the request with its receipt first; only then is the erasure journal
    /// rewritten, so a journal that cannot be written (73, saying the erasure is done) never
    /// leaves the request open without its receipt.
    public func fulfilRequest(id: String, output: OutputFile? = nil, confirmed: Bool = false, requireOutput: Bool = false) throws -> FulfilResult {
        let intent = try beginErasureJournalIntent(permissions: ["requests", "erase"])
        let result = try fulfilRequestWithoutJournal(id: id, output: output, confirmed: confirmed, requireOutput: requireOutput)
        if let r = result.receipt {
            try recordErasuresInJournal(done: "request \(result.request.id) fulfilled: erased 1 subject", receipts: [r], intent: intent)
        }
        return result
    }

    func fulfilRequestWithoutJournal(id: String, output: OutputFile?, confirmed: Bool, requireOutput: Bool) throws -> FulfilResult {
        try audited("requests.fulfil", .update, permission: "requests") { context in
            guard let entry = try store.request(id: id) else { throw RequestRegister.unknown() }
            guard entry.status == .open else {
                throw VaultError(.invalidInput, "request \(entry.id) is \(entry.status.rawValue): a closed request cannot be changed")
            }
            if output != nil, entry.type != .access, entry.type != .portability {
                throw VaultError(.usage, "request \(entry.id) (\(entry.type.rawValue)): --out is for access and portability requests")
            }
            if requireOutput, output == nil, entry.type == .access || entry.type == .portability {
                throw VaultError(.usage, "request \(entry.id) (\(entry.type.rawValue)): give --out FILE (the export is written there, mode 0600)")
            }
            let customerID = try store.requestCustomerID(id: entry.id)
            var result = FulfilResult(request: entry)
            let outcome: String
            switch entry.type {
            case .erasure:
                if let customerID, try store.exists(customerID: customerID) {
                    let receipts = try eraseWithoutJournal(.one(customerID), reason: "data-subject request \(entry.id)")
                    guard let r = receipts.first else { throw VaultError(.internalFailure, "the erasure returned no receipt") }
                    result.receipt = r
                    outcome = "receipt:\(r.receipt)"
                } else if let earlier = try store.erasure(pseudonym: entry.pseudonym) {
                    // Erased by another path (a second request, retention): that receipt answers it.
                    result.earlierErasure = earlier
                    outcome = earlier.receipt.map { "receipt:\($0)" } ?? "erased:\(AuditLog.isoMillis(earlier.erasedAtMillis))"
                } else {
                    throw VaultError(.notFound, "request \(entry.id): its subject is no longer in the store")
                }
            case .access, .portability:
                guard let customerID else {
                    throw try store.erasure(pseudonym: entry.pseudonym).map(Self.erasedError)
                        ?? VaultError(.notFound, "request \(entry.id): its subject is no longer in the store")
                }
                // Access: the Art. 15 export (data, purposes, recipients, retention, sources,
                // accesses); portability: the subject's own data, machine-readable (Art. 20).
                let export = entry.type == .access
                    ? JSONForms.accessReport(try accessReport(customerID: customerID, format: .json))
                    : JSONForms.portability(try accessReport(customerID: customerID, format: .portability).export)
                let bytes = Array((export.rendered(pretty: true) + "\n").utf8)
                if let output {
                    try output.write(bytes)
                    try output.commit()
                }
                let digest = AuditLog.hex(SHA256.hash(bytes))
                result.export = export
                result.exportSHA256 = digest
                outcome = "sha256:\(digest)"
            case .rectification, .restriction, .objection:
                guard let customerID else {
                    throw try store.erasure(pseudonym: entry.pseudonym).map(Self.erasedError)
                        ?? VaultError(.notFound, "request \(entry.id): its subject is no longer in the store")
                }
                outcome = try fulfilOther(entry, customerID: customerID, confirmed: confirmed, context: context)
            }
            result.request = try store.changeRequest(id: entry.id, .fulfil(outcome: outcome), audit: context)
            return result
        }
    }

    /// Fulfilment of a rectification, restriction or objection request: the outcome to attach.
    ///
    /// - restriction: restricts the subject (permission `restrict` too; audited as `restrict`)
    ///   and attaches `restricted` (or `already restricted`);
    /// - objection: checks the consent ledger's state: the subject must object to at least one
    ///   `legitimate_interest` purpose (`consent object`, or a consent import with granted
    ///   false); attaches `objection:P1,P2`. Otherwise 65 naming the command to run first;
    /// - rectification: the corrected values come from the data subject, so the officer runs
    ///   `rectify` and confirms with `--done` (HTTP `{"done": true}`), which attaches
    ///   `confirmed` (permission `rectify` too); without it, 65 naming the command.
    func fulfilOther(_ entry: RegisterEntry, customerID: String, confirmed: Bool, context: AuditContext) throws -> String {
        switch entry.type {
        case .restriction:
            return try setRestriction(customerID: customerID, restricted: true) ? "restricted" : "already restricted"
        case .objection:
            let states = try store.consentState(customerID: customerID) ?? [:]
            let objected = policy.purposeOrder.filter { name in
                policy.purpose(name)?.legalBasis == .legitimate_interest && states[name]?.granted == false
            }
            guard !objected.isEmpty else {
                throw VaultError(.invalidInput, "request \(entry.id) (objection): the subject objects to no legitimate_interest purpose yet: run `profilectl consent object --subject ID --purpose P` (HTTP: POST /v1/subjects/{id}/consent with {\"purpose\": P, \"objection\": true}), then fulfil the request")
            }
            return "objection:" + objected.joined(separator: ",")
        default:
            try require("rectify")
            guard confirmed else {
                throw VaultError(.invalidInput, "request \(entry.id) (rectification): run `profilectl rectify --subject ID --set FIELD=VALUE` (HTTP: POST /v1/subjects/{id}/rectification) with the corrected values, then `requests fulfil \(entry.id) --done` (HTTP: {\"done\": true})")
            }
            return "confirmed"
        }
    }
}

// MARK: - JSON shapes (CLI --json and HTTP bodies)

extension JSONForms {
    /// One request: `{"request","type","status","received","due","days_left", ...}` (SPEC §12).
    /// Metadata only: the customer ID, note and reasons stay sealed.
    public static func request(_ e: RegisterEntry, nowMillis: Int64) -> JSONValue {
        var fields: [(String, JSONValue)] = [
            ("request", .string(e.id)), ("type", .string(e.type.rawValue)), ("status", .string(e.status.rawValue)),
            ("received", isoMillis(e.receivedMillis)), ("due", isoMillis(e.currentDueMillis)),
            ("days_left", e.status == .open ? .int(e.daysLeft(nowMillis: nowMillis)) : .null),
            ("overdue", .bool(e.isOverdue(nowMillis: nowMillis))), ("extended", .bool(e.extendedDueMillis != nil)),
            ("channel", e.channel.map { .string($0.rawValue) } ?? .null), ("subject", .string(AuditLog.hex(e.pseudonym))),
            ("opened_by", .string(e.openedBy)),
        ]
        if let o = e.outcome { fields.append(("outcome", .string(o))) }
        if let t = e.closedAtMillis { fields.append(("closed_at", isoMillis(t))) }
        if let b = e.closedBy { fields.append(("closed_by", .string(b))) }
        return .object(fields)
    }

    public static func requests(_ list: [RegisterEntry], nowMillis: Int64) -> JSONValue {
        .object([("requests", .array(list.map { request($0, nowMillis: nowMillis) }))])
    }

    /// `requests fulfil`: the request, and the receipt or the export digest it attached.
    public static func fulfilment(_ r: Vault.FulfilResult, nowMillis: Int64, includeExport: Bool) -> JSONValue {
        var fields: [(String, JSONValue)] = [("request", request(r.request, nowMillis: nowMillis))]
        if let receipt = r.receipt { fields.append(("receipt", JSONForms.receipt(receipt))) }
        if let e = r.earlierErasure {
            fields.append(("erased_before", .object([("erased_at", isoMillis(e.erasedAtMillis)), ("receipt", e.receipt.map(JSONValue.string) ?? .null),
                                                     ("audit_sequence", e.auditSequence.map(JSONValue.int) ?? .null)])))
        }
        if let d = r.exportSHA256 { fields.append(("export_sha256", .string(d))) }
        if includeExport, let x = r.export { fields.append(("export", x)) }
        return .object(fields)
    }

    /// What `erase` skipped: `[{"line", "reason": "unknown"|"erased", "erased_at", "receipt"}]`.
    public static func skipped(_ s: [Vault.SkippedSubject]) -> JSONValue {
        .array(s.map { x in
            var f: [(String, JSONValue)] = [("line", .int(Int64(x.line))), ("reason", .string(x.erasedBefore == nil ? "unknown" : "erased"))]
            if let e = x.erasedBefore {
                f.append(("erased_at", isoMillis(e.erasedAtMillis)))
                f.append(("receipt", e.receipt.map(JSONValue.string) ?? .null))
            }
            return .object(f)
        })
    }
}
