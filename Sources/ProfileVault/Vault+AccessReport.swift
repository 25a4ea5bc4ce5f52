import Foundation
public import VaultAudit
public import VaultPolicy
public import VaultStore

/// The forms of the data-subject access export (`export --format`).
public enum AccessExportFormat: String, Sendable, CaseIterable {
    /// Everything GDPR Art. 15 asks for, as JSON.
    case json
    /// The same, as one self-contained HTML page a person can be sent.
    case html
    /// The subject's own data (what they provided: profile fields and events; nothing derived,
    /// no audit), for Art. 20 data portability: JSON, or CSV with `csv`.
    case portability
}

/// The access export with what Art. 15(1) asks beside the data: the purposes with their legal
/// bases and the subject's consent, the categories of data held, the recipients, the retention
/// of each category and the date it applies to this subject, the source of the data (the
/// ingest runs), and who accessed the subject's data (denied attempts too).
public struct SubjectAccessReport: Sendable {
    public struct PurposeLine: Sendable {
        public var name: String
        public var dataUse: String
        public var legalBasis: String
        public var consentRequired: Bool
        /// The subject's current consent for the purpose (nil: never recorded).
        public var consent: ConsentState?
        /// Whether the purpose applies to the subject now: consent granted for a consent purpose;
        /// no objection (Art. 21) for a legitimate_interest one; and no restriction (Art. 18).
        public var applies: Bool
        /// The subject objects to this legitimate_interest purpose (Art. 21).
        public var objection: Bool
        public var recipients: [String]
    }
    public struct CategoryLine: Sendable {
        public var category: String
        public var fields: [String]
        public var events: [String]
    }
    public struct RecipientLine: Sendable {
        public var recipient: String
        public var purposes: [String]
    }
    public struct RetentionLine: Sendable {
        public var category: String
        public var keep: String
        public var after: String
        /// The fields and event kinds of the subject's data the rule covers.
        public var appliesTo: [String]
        /// When the rule next removes data of this subject (unix seconds): for `last_activity`,
        /// the erasure date unless the subject is active again; for `event_time`, when the oldest
        /// covered event goes. Nil: nothing of the subject is covered yet.
        public var date: Int64?
    }
    public struct AccessLine: Sendable {
        public var time: String
        public var actor: String
        public var role: String
        public var purpose: String?
        public var action: String
        public var outcome: String
    }

    public var export: AccessExport
    public var exportedAtMillis: Int64
    /// The subject's processing is restricted (Art. 18): no purpose applies until it is lifted.
    public var restricted: Bool
    public var purposes: [PurposeLine]
    public var categories: [CategoryLine]
    public var recipients: [RecipientLine]
    public var retention: [RetentionLine]
    public var accesses: [AccessLine]
    /// After `audit archive`: the last archived audit entry. `accesses` lists only the live
    /// log's entries; the subject's older ones are in the archive files (nil: none archived).
    public var accessesArchivedThrough: Int64? = nil
}

extension Vault {
    /// The access export with its Art. 15 sections (role permission `export`), audited as
    /// `export` with the format, before it is returned (so it lists itself among the accesses).
    public func accessReport(customerID: String, format: AccessExportFormat = .json) throws -> SubjectAccessReport {
        let e = try accessExport(customerID: customerID, format: format.rawValue)
        let restricted = try store.restricted(customerID: customerID) ?? false
        // The consent state the gate enforces (not the ledger's last row: an imported entry may
        // carry an earlier time than the state it did not replace).
        let states = try store.consentState(customerID: customerID) ?? [:]
        var report = Self.accessReport(e, restricted: restricted, states: states, policy: policy, schema: schema)
        report.accessesArchivedThrough = try store.archivedThrough()
        return report
    }

    /// The Art. 15 sections derived from an export, the policy and the schema (no store access:
    /// the same on every engine).
    static func accessReport(_ e: AccessExport, restricted: Bool, states consent: [String: ConsentState], policy: Policy, schema: Schema) -> SubjectAccessReport {
        var purposes: [SubjectAccessReport.PurposeLine] = []
        for name in policy.purposeOrder {
            guard let p = policy.purpose(name) else { continue }
            let state = consent[name]
            let required = p.legalBasis == .consent
            let objection = p.legalBasis == .legitimate_interest && state?.granted == false
            let applies = !restricted && !objection && (!required || state?.granted == true)
            purposes.append(.init(name: name, dataUse: p.dataUse, legalBasis: p.legalBasis.rawValue, consentRequired: required,
                                  consent: state, applies: applies, objection: objection, recipients: p.recipients))
        }
        // Categories of the data held: fields with a value, event kinds with events.
        var categories: [SubjectAccessReport.CategoryLine] = []
        func add(_ category: String, field: String? = nil, event: String? = nil) {
            if let i = categories.firstIndex(where: { $0.category == category }) {
                if let field { categories[i].fields.append(field) }
                if let event, !categories[i].events.contains(event) { categories[i].events.append(event) }
            } else {
                categories.append(.init(category: category, fields: field.map { [$0] } ?? [], events: event.map { [$0] } ?? []))
            }
        }
        add(schema.subjectIDCategory, field: schema.subjectIDField)
        let held = Set(e.profile.fields.filter { $0.value != .null }.map(\.name))
        for f in schema.fields where held.contains(f.name) { add(f.category, field: f.name) }
        let kinds = Set(e.events.map(\.kind))
        for k in schema.events where kinds.contains(k.name) { add(k.category, event: k.name) }
        // Recipients of the purposes that apply.
        var recipients: [SubjectAccessReport.RecipientLine] = []
        for p in purposes where p.applies {
            for r in p.recipients {
                if let i = recipients.firstIndex(where: { $0.recipient == r }) { recipients[i].purposes.append(p.name) } else {
                    recipients.append(.init(recipient: r, purposes: [p.name]))
                }
            }
        }
        // Retention: each rule covering data of the subject, with the date it applies.
        var retention: [SubjectAccessReport.RetentionLine] = []
        for rule in policy.retention {
            let eventKinds = schema.events.filter { kinds.contains($0.name) && Taxonomy.covers(rule.category, $0.category) }.map(\.name)
            var date: Int64?
            switch rule.after {
            case .lastActivity:
                // A subject rule erases the whole subject; it applies when the schema holds data
                // of its category (as ProfileStore.retentionCutoffs decides).
                let applies = schema.fields.contains { Taxonomy.covers(rule.category, $0.category) }
                    || Taxonomy.covers(rule.category, schema.subjectIDCategory)
                    || schema.events.contains { Taxonomy.covers(rule.category, $0.category) }
                guard applies else { continue }
                let (d, overflow) = e.lastActivity.addingReportingOverflow(Int64(rule.keepSeconds))
                date = overflow ? nil : d
                retention.append(.init(category: rule.category, keep: rule.keepText, after: rule.after.rawValue,
                                       appliesTo: schema.fields.map(\.name).filter { held.contains($0) } + [schema.subjectIDField]
                                           + schema.events.filter { kinds.contains($0.name) }.map(\.name), date: date))
            case .eventTime:
                guard !eventKinds.isEmpty else { continue }
                if let oldest = e.events.filter({ eventKinds.contains($0.kind) }).map(\.time).min() {
                    let (d, overflow) = oldest.addingReportingOverflow(Int64(rule.keepSeconds))
                    date = overflow ? nil : d
                }
                retention.append(.init(category: rule.category, keep: rule.keepText, after: rule.after.rawValue, appliesTo: eventKinds, date: date))
            }
        }
        // Who accessed the subject's data: every audit entry naming its pseudonym.
        let accesses: [SubjectAccessReport.AccessLine] = e.auditEntries.compactMap { text in
            guard case .object(let pairs)? = try? JSONValue.parse(text) else { return nil }
            func s(_ key: String) -> String? {
                if case .string(let v)? = pairs.first(where: { $0.0 == key })?.1 { return v }
                return nil
            }
            return .init(time: s("time_dt") ?? "", actor: s("actor.user.name") ?? "", role: s("unmapped.role") ?? "",
                         purpose: s("unmapped.purpose"), action: s("api.operation") ?? "", outcome: s("status") ?? "")
        }
        return SubjectAccessReport(export: e, exportedAtMillis: AuditLog.nowMillis, restricted: restricted, purposes: purposes, categories: categories,
                                   recipients: recipients, retention: retention, accesses: accesses)
    }
}
