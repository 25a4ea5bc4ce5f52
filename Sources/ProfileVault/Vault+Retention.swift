import Foundation
public import VaultAudit
public import VaultPolicy
public import VaultStore

/// What a retention dry run shows per rule of the policy.
public struct RetentionRulePreview: Sendable {
    /// The rule's index in the policy's `retention:` list (from 0) and its text.
    public var index: Int
    public var category: String
    public var keep: String
    public var after: String
    /// Data before this time (unix seconds) goes under this rule.
    public var cutoff: Int64
    /// What this rule alone would remove: events (an `event_time` rule) or whole subjects (a
    /// `last_activity` rule).
    public var events: Int
    public var subjects: Int
    /// With `list`: the customer IDs of the subjects concerned (for an `event_time` rule, those
    /// whose events would go); nil otherwise.
    public var customerIDs: [String]?
}

/// A retention dry run: the totals the sweep would remove (overlapping rules counted once, the
/// shortest period winning) and the detail per rule.
public struct RetentionPlan: Sendable {
    public var report: RetentionReport
    public var rules: [RetentionRulePreview]
}

extension Vault {
    /// `retention apply --dry-run [--list]` (role permission `retention`): writes nothing but
    /// audit entries. The totals' `retention.dry_run` entry as before; with `list`, the customer
    /// IDs of the subjects concerned are decrypted for the privacy officer, each resolution
    /// audited (`retention.list`, naming the subject's pseudonym).
    public func retentionPlan(asOf: Int64?, list: Bool) throws -> RetentionPlan {
        try audited("retention.apply", .read, permission: "retention") { context in
            let now = asOf ?? Int64(Date().timeIntervalSince1970)
            let report = try store.applyRetention(policy.retention, asOf: now, dryRun: true, audit: context)
            var rules: [RetentionRulePreview] = []
            var names: [[UInt8]: String] = [:]   // pseudonym -> customer ID, each resolved once
            func resolve(_ pseudonyms: [[UInt8]]) throws -> [String] {
                var out: [String] = []
                var records: [AuditRecord] = []
                for p in pseudonyms {
                    if let id = names[p] { out.append(id); continue }
                    // A subject erased meanwhile (another node, another sweep) is left out.
                    guard case .found(let view) = try store.readProfile(pseudonym: p, fields: [], consentPurpose: nil) else { continue }
                    names[p] = view.customerID
                    out.append(view.customerID)
                    records.append(context.record("retention.list", .read, subject: p, fields: [schema.subjectIDField],
                                                  detail: "retention dry run as of \(DateParsing.iso8601(unixSeconds: now))"))
                }
                // The IDs are released only once their entries are committed.
                if !records.isEmpty { try store.audit(records) }
                return out
            }
            for (i, rule) in policy.retention.enumerated() {
                let (cutoff, overflow) = now.subtractingReportingOverflow(Int64(rule.keepSeconds))
                let at = overflow ? Int64.min : cutoff
                var line = RetentionRulePreview(index: i, category: rule.category, keep: rule.keepText, after: rule.after.rawValue,
                                                cutoff: at, events: 0, subjects: 0, customerIDs: nil)
                let (eventCutoffs, subjectCutoff) = ProfileStore.retentionCutoffs([rule], schema: schema, asOf: now)
                switch rule.after {
                case .eventTime:
                    let kinds = eventCutoffs.keys.sorted()
                    let m = try store.retentionEventMatches(kinds: kinds, before: at, subjects: true)
                    line.events = m.events
                    line.subjects = m.subjects.count
                    if list { line.customerIDs = try resolve(m.subjects) }
                case .lastActivity:
                    if let c = subjectCutoff {
                        let victims = try store.inactiveSubjects(before: c)
                        line.subjects = victims.count
                        if list { line.customerIDs = try resolve(victims) }
                    } else if list {
                        line.customerIDs = []
                    }
                }
                rules.append(line)
            }
            return RetentionPlan(report: report, rules: rules)
        }
    }

    /// The periodic sweep of `serve --retention-every`: `policy.yaml`'s retention rules applied
    /// now, audited like `retention apply` (the vault's actor is the scheduler's).
    public func scheduledRetention() throws -> RetentionReport {
        try applyRetention(asOf: nil, dryRun: false)
    }

    // MARK: - Find

    /// Blind-index lookup on any lookup field of the schema (`find --field F --value V`, role
    /// permission `get`): the customer IDs whose normalised value equals `value`'s. A field
    /// that is not a lookup field (`pii: true, lookup: true`) is refused as invalid input
    /// without echoing the name given (it may be a value typed in the wrong place); each match
    /// is audited with its pseudonym. A restricted subject (Art. 18) is found only by a role
    /// that may lift the restriction (permission `restrict`); for any other role a match that
    /// is restricted is left out, and when only restricted subjects match, the answer is the
    /// restriction's refusal (77).
    public func find(field name: String, value: String) throws -> [String] {
        try audited("find", .read, permission: "get") { context in
            guard let field = schema.field(named: name) else {
                throw VaultError(.invalidInput, "--field: not a field of the schema (lookup fields: \(lookupFieldNames))",
                                 detail: "find: not a field of the schema")
            }
            guard field.pii, field.lookup else {
                throw VaultError(.invalidInput, "field \(field.name): not a lookup field (lookup fields: \(lookupFieldNames)); only a field with lookup: true has a blind index")
            }
            var ids = try store.find(field: field.name, value: value)
            guard !ids.isEmpty else {
                throw VaultError(.notFound, "no subject with this \(field.name)")
            }
            if !policy.role(actor.role, allows: "restrict") {
                ids = try ids.filter { try store.restricted(customerID: $0) != true }
                guard !ids.isEmpty else { throw VaultError(.denied, Self.restrictedSubject) }
            }
            try store.audit(try ids.map {
                context.record("find", .read, subject: try store.pseudonym(ofCustomerID: $0), fields: [field.name, schema.subjectIDField])
            })
            return ids
        }
    }

    var lookupFieldNames: String {
        let names = schema.fields.filter { $0.pii && $0.lookup }.map(\.name)
        return names.isEmpty ? "none" : names.joined(separator: ", ")
    }
}
