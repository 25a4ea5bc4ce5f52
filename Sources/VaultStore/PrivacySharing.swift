public import VaultAudit
public import VaultPolicy

// What the consent, access, retention and raw-read methods of another engine of this package
// (VaultPostgres) share with the SQLite store: the builders of the public value types (their
// memberwise initialisers are internal to this module), the retention cutoffs and the audit
// records these operations write, so both engines apply the same rules and write the same
// entries.

extension ConsentEntry {
    package static func make(purpose: String, granted: Bool, timeMillis: Int64, actor: String, source: String?,
                             policyVersion: String) -> ConsentEntry {
        ConsentEntry(purpose: purpose, granted: granted, timeMillis: timeMillis, actor: actor, source: source, policyVersion: policyVersion)
    }
}

extension AccessExport {
    package static func make(customerID: String, pseudonym: String, createdAt: Int64, updatedAt: Int64, lastActivity: Int64,
                             profile: ProfileView, events: [(kind: String, item: String, value: Double, time: Int64)],
                             consent: [ConsentEntry], auditEntries: [String], createdBy: IngestBatchInfo? = nil,
                             updatedBy: IngestBatchInfo? = nil) -> AccessExport {
        AccessExport(customerID: customerID, pseudonym: pseudonym, createdAt: createdAt, updatedAt: updatedAt, lastActivity: lastActivity,
                     profile: profile, events: events, consent: consent, auditEntries: auditEntries, createdBy: createdBy, updatedBy: updatedBy)
    }
}

extension RetentionReport {
    package static func make(eventsDeleted: Int, subjectsErased: Int, dryRun: Bool) -> RetentionReport {
        RetentionReport(eventsDeleted: eventsDeleted, subjectsErased: subjectsErased, dryRun: dryRun)
    }
}

extension RawSubjectRows {
    package static func make(pseudonymHex: String, kekVersion: UInt32, wrappedDEKHex: String, pii: [(field: String, ciphertextHex: String)],
                             blindIndex: [(field: String, macHex: String)], attributes: [(name: String, value: String)]) -> RawSubjectRows {
        RawSubjectRows(pseudonymHex: pseudonymHex, kekVersion: kekVersion, wrappedDEKHex: wrappedDEKHex, pii: pii,
                       blindIndex: blindIndex, attributes: attributes)
    }
}

extension SubjectItems {
    package static func make(customerID: String, pseudonym: [UInt8], items: Set<String>?, consent: Bool, segment: String? = nil) -> SubjectItems {
        SubjectItems(customerID: customerID, pseudonym: pseudonym, items: items, consent: consent, segment: segment)
    }
}

extension ProfileStore {
    /// The cutoffs of a policy's retention rules as of `asOf` (unix seconds): per event kind
    /// whose category a rule covers, events with a time before the cutoff go; subjects whose
    /// last activity is before `subjects` are erased (a `last_activity` rule applies when the
    /// schema holds data of its category). When several rules cover the same data, the
    /// shortest period (the latest cutoff) wins.
    package static func retentionCutoffs(_ rules: [RetentionRule], schema: Schema, asOf: Int64) -> (events: [String: Int64], subjects: Int64?) {
        var eventCutoffs: [String: Int64] = [:]   // event kind -> delete events with time < cutoff
        var subjectCutoff: Int64?
        for rule in rules {
            let cutoff = asOf - Int64(rule.keepSeconds)
            switch rule.after {
            case .eventTime:
                for e in schema.events where Taxonomy.covers(rule.category, e.category) {
                    eventCutoffs[e.name] = max(eventCutoffs[e.name] ?? Int64.min, cutoff)
                }
            case .lastActivity:
                // A subject rule applies when the schema holds data of that category.
                let applies = schema.fields.contains { Taxonomy.covers(rule.category, $0.category) }
                    || Taxonomy.covers(rule.category, schema.subjectIDCategory)
                    || schema.events.contains { Taxonomy.covers(rule.category, $0.category) }
                if applies { subjectCutoff = max(subjectCutoff ?? Int64.min, cutoff) }
            }
        }
        return (eventCutoffs, subjectCutoff)
    }

    /// The entry of one kind's retention deletion.
    package static func retentionEventsRecord(_ audit: AuditContext, kind: String, cutoff: Int64, deleted: Int) -> AuditRecord {
        audit.record("retention.events", .delete, detail: "reason retention; kind \(kind); before \(DateParsing.iso8601(unixSeconds: cutoff))",
                     counts: [("events_deleted", Int64(deleted))])
    }

    /// The entry of a retention dry run.
    package static func retentionDryRunRecord(_ audit: AuditContext, asOf: Int64, eventsDeleted: Int, subjectsErased: Int) -> AuditRecord {
        audit.record("retention.dry_run", .other, detail: "as of \(DateParsing.iso8601(unixSeconds: asOf))",
                     counts: [("events_deleted", Int64(eventsDeleted)), ("subjects_erased", Int64(subjectsErased))])
    }

    /// The entry of one transaction of consent changes: naming the subject's pseudonym when the
    /// call names one subject, else with the batch's counts only (the ledger holds the detail).
    package static func consentRecord(_ audit: AuditContext, purpose: String, granted: Bool, subject: [UInt8]?, source: String?,
                                      changed: Int, unchanged: Int) -> AuditRecord {
        audit.record(granted ? "consent.grant" : (source == objectionSource ? "consent.object" : "consent.revoke"), .update, purpose: purpose,
                     subject: subject, detail: source.map { "source \($0)" },
                     counts: [("changed", Int64(changed)), ("unchanged", Int64(unchanged))])
    }
}
