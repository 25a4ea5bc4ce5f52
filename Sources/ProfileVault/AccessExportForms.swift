import Foundation
public import VaultAudit
import VaultPolicy
public import VaultStore

extension JSONForms {
    /// An ingest run, as the access export's `sources` show it.
    public static func ingestBatch(_ b: IngestBatchInfo?) -> JSONValue {
        guard let b else { return .null }
        return .object([
            ("batch", .int(b.id)), ("kind", .string(b.kind)), ("time", .string(DateParsing.iso8601(unixSeconds: b.time))),
            ("source", .string(b.source)), ("actor", .string(b.actor)),
            ("counts", .object([("inserted", .int(b.inserted)), ("updated", .int(b.updated)), ("unchanged", .int(b.unchanged)),
                                ("rejected", .int(b.rejected))])),
        ])
    }

    /// The access export (`export --format json`, `GET /v1/subjects/{id}/export`): the keys of
    /// ``accessExport(_:)`` and the Art. 15 sections `purposes`, `categories`, `recipients`,
    /// `retention`, `sources` and `accesses`.
    public static func accessReport(_ r: SubjectAccessReport) -> JSONValue {
        guard case .object(var pairs) = accessExport(r.export) else { return accessExport(r.export) }
        if let i = pairs.firstIndex(where: { $0.0 == "exported_at" }) { pairs[i].1 = isoMillis(r.exportedAtMillis) }
        pairs += [
            ("restricted", .bool(r.restricted)),
            ("purposes", .array(r.purposes.map { p in
                .object([
                    ("purpose", .string(p.name)), ("data_use", .string(p.dataUse)), ("legal_basis", .string(p.legalBasis)),
                    ("consent_required", .bool(p.consentRequired)),
                    ("consent", p.consent.map { .object([("granted", .bool($0.granted)), ("since", isoMillis($0.sinceMillis))]) } ?? .null),
                    ("applies", .bool(p.applies)), ("objection", .bool(p.objection)), ("recipients", .array(p.recipients.map { .string($0) })),
                ])
            })),
            ("categories", .array(r.categories.map { c in
                .object([("category", .string(c.category)), ("fields", .array(c.fields.map { .string($0) })),
                         ("events", .array(c.events.map { .string($0) }))])
            })),
            ("recipients", .array(r.recipients.map { .object([("recipient", .string($0.recipient)), ("purposes", .array($0.purposes.map { .string($0) }))]) })),
            ("retention", .array(r.retention.map { l in
                .object([("category", .string(l.category)), ("keep", .string(l.keep)), ("after", .string(l.after)),
                         ("applies_to", .array(l.appliesTo.map { .string($0) })),
                         ("date", l.date.map { .string(DateParsing.iso8601(unixSeconds: $0)) } ?? .null)])
            })),
            ("sources", .object([("created_by", ingestBatch(r.export.createdBy)), ("updated_by", ingestBatch(r.export.updatedBy))])),
            ("accesses", .array(r.accesses.map { a in
                .object([("time", .string(a.time)), ("actor", .string(a.actor)), ("role", .string(a.role)),
                         ("purpose", a.purpose.map { .string($0) } ?? .null), ("action", .string(a.action)), ("outcome", .string(a.outcome))])
            })),
        ]
        // After `audit archive`: `accesses` starts after this entry; older ones are archived.
        if let archived = r.accessesArchivedThrough { pairs.append(("accesses_archived_through", .int(archived))) }
        return .object(pairs)
    }

    /// Art. 20 data portability, JSON: what the subject provided (the profile's fields and the
    /// events), nothing derived and no audit.
    public static func portability(_ e: AccessExport) -> JSONValue {
        .object([
            ("format", .string("profilevault-portability/1")),
            ("customer_id", .string(e.customerID)),
            ("profile", .object(e.profile.fields.map { ($0.name, value($0.value)) })),
            ("events", .array(e.events.map { .object([("kind", .string($0.kind)), ("item", .string($0.item)), ("value", .double($0.value)),
                                                      ("time", .string(DateParsing.iso8601(unixSeconds: $0.time)))]) })),
        ])
    }

    /// Art. 20 data portability, CSV: one row per profile field (`field,NAME,VALUE,,`) and per
    /// event (`event,KIND,VALUE,ITEM,TIME`) under the header `record,name,value,item,time`; every
    /// cell formula-safe (``CSVCell``).
    public static func portabilityCSV(_ e: AccessExport) -> String {
        func text(_ v: ProfileValue) -> String {
            switch v {
            case .null: ""
            case .int(let i): String(i)
            case .float(let d): String(d)
            case .text(let s): s
            case .bool(let b): b ? "true" : "false"
            }
        }
        var out = "record,name,value,item,time\n"
        out += CSVCell.row(["field", "customer_id", e.customerID, "", ""]) + "\n"
        for f in e.profile.fields { out += CSVCell.row(["field", f.name, text(f.value), "", ""]) + "\n" }
        for ev in e.events {
            out += CSVCell.row(["event", ev.kind, String(ev.value), ev.item, DateParsing.iso8601(unixSeconds: ev.time)]) + "\n"
        }
        return out
    }
}

/// The access export as one self-contained HTML page (`export --format html`): no script, no
/// external resource (a Content-Security-Policy that allows none), every value HTML-escaped.
public enum AccessExportHTML {
    /// `&`, `<`, `>`, `"` and `'` as character references: a value can neither open a tag nor
    /// leave an attribute.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        guard !rows.isEmpty else { return "<p class=\"none\">None.</p>\n" }
        var out = "<table>\n<tr>" + header.map { "<th>\(escape($0))</th>" }.joined() + "</tr>\n"
        for r in rows { out += "<tr>" + r.map { "<td>\(escape($0))</td>" }.joined() + "</tr>\n" }
        return out + "</table>\n"
    }

    public static func render(_ r: SubjectAccessReport) -> String {
        let e = r.export
        func value(_ v: ProfileValue) -> String {
            switch v {
            case .null: "(none)"
            case .int(let i): String(i)
            case .float(let d): String(d)
            case .text(let s): s
            case .bool(let b): b ? "yes" : "no"
            }
        }
        func batch(_ b: IngestBatchInfo?) -> [String] {
            guard let b else { return ["(not recorded)", "", "", ""] }
            return [DateParsing.iso8601(unixSeconds: b.time), b.source, b.actor, "batch \(b.id)"]
        }
        var h = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
            <title>Personal data held about you</title>
            <style>
            body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
            table { border-collapse: collapse; margin-bottom: 1.5em; }
            th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
            th { background: #eee; }
            .none { color: #666; }
            </style>
            </head>
            <body>

            """
        h += "<h1>Personal data held about you</h1>\n"
        h += "<p>Customer ID <strong>\(escape(e.customerID))</strong>. Exported \(escape(AuditLog.isoMillis(r.exportedAtMillis))). "
        h += "Record created \(escape(DateParsing.iso8601(unixSeconds: e.createdAt))), last changed \(escape(DateParsing.iso8601(unixSeconds: e.updatedAt))), "
        h += "last activity \(escape(DateParsing.iso8601(unixSeconds: e.lastActivity))).</p>\n"
        if r.restricted {
            h += "<p><strong>The processing of your data is restricted (GDPR Art. 18):</strong> it is stored, but used for no purpose until the restriction is lifted.</p>\n"
        }
        h += "<h2>Your data</h2>\n" + table(["Field", "Value"], [["customer_id", e.customerID]] + e.profile.fields.map { [$0.name, value($0.value)] })
        h += "<h2>Events</h2>\n" + table(["Time", "Kind", "Item", "Value"], e.events.map {
            [DateParsing.iso8601(unixSeconds: $0.time), $0.kind, $0.item, String($0.value)]
        })
        h += "<h2>Categories of data</h2>\n" + table(["Category", "Fields", "Events"], r.categories.map {
            [$0.category, $0.fields.joined(separator: ", "), $0.events.joined(separator: ", ")]
        })
        h += "<h2>Purposes and legal bases</h2>\n" + table(["Purpose", "Data use", "Legal basis", "Your consent", "Applies", "Recipients"], r.purposes.map { p in
            let consent = p.objection ? "you objected" + (p.consent?.sinceMillis.map { " on " + AuditLog.isoMillis($0) } ?? "") : p.consent.map { ($0.granted ? "granted" : "withdrawn") + ($0.sinceMillis.map { " since " + AuditLog.isoMillis($0) } ?? "") }
                ?? (p.consentRequired ? "not given" : "not needed")
            return [p.name, p.dataUse, p.legalBasis, consent, p.applies ? "yes" : "no", p.recipients.joined(separator: ", ")]
        })
        h += "<h2>Recipients</h2>\n" + table(["Recipient", "For purposes"], r.recipients.map { [$0.recipient, $0.purposes.joined(separator: ", ")] })
        h += "<h2>How long your data is kept</h2>\n" + table(["Category", "Kept", "Counted from", "Covers", "Applies on"], r.retention.map {
            [$0.category, $0.keep, $0.after == "last_activity" ? "your last activity" : "each event's time", $0.appliesTo.joined(separator: ", "),
             $0.date.map { DateParsing.iso8601(unixSeconds: $0) } ?? "-"]
        })
        h += "<h2>Where your data comes from</h2>\n" + table(["", "Time", "Source", "By", "Batch"], [
            ["Created by"] + batch(e.createdBy), ["Last changed by"] + batch(e.updatedBy),
        ])
        h += "<h2>Consent history</h2>\n" + table(["Time", "Purpose", "Change", "By", "Via"], e.consent.map {
            [AuditLog.isoMillis($0.timeMillis), $0.purpose, $0.granted ? "granted" : "withdrawn", $0.actor, $0.source ?? ""]
        })
        h += "<h2>Who accessed your data</h2>\n" + table(["Time", "Who", "Role", "Purpose", "Operation", "Outcome"], r.accesses.map {
            [$0.time, $0.actor, $0.role, $0.purpose ?? "", $0.action, $0.outcome]
        })
        if let archived = r.accessesArchivedThrough {
            h += "<p>Older records of access (up to audit entry \(archived)) are kept in an audit archive and are not listed here; ask us for them.</p>\n"
        }
        h += "</body>\n</html>\n"
        return h
    }
}

extension JSONForms {
    /// `retention apply --dry-run` and `POST /v1/retention` with `dry_run`: the totals, and per
    /// rule its counts (and, when listed, the customer IDs).
    public static func retentionPlan(_ p: RetentionPlan) -> JSONValue {
        .object([
            ("events_deleted", .int(Int64(p.report.eventsDeleted))), ("subjects_erased", .int(Int64(p.report.subjectsErased))),
            ("dry_run", .bool(true)),
            ("rules", .array(p.rules.map { r in
                var fields: [(String, JSONValue)] = [
                    ("rule", .int(Int64(r.index))), ("category", .string(r.category)), ("keep", .string(r.keep)), ("after", .string(r.after)),
                    ("before", r.cutoff == Int64.min ? .null : .string(DateParsing.iso8601(unixSeconds: r.cutoff))),
                    ("events", .int(Int64(r.events))), ("subjects", .int(Int64(r.subjects))),
                ]
                if let ids = r.customerIDs { fields.append(("customer_ids", .array(ids.map { .string($0) }))) }
                return .object(fields)
            })),
        ])
    }

    public static func retentionPlanText(_ p: RetentionPlan) -> String {
        var lines = ["would delete \(p.report.eventsDeleted) events and erase \(p.report.subjectsErased) subjects"]
        for r in p.rules {
            let what = r.after == "last_activity" ? "\(r.subjects) subjects erased" : "\(r.events) events of \(r.subjects) subjects deleted"
            lines.append("rule \(r.index): \(r.category) keep \(r.keep) after \(r.after): \(what)")
            if let ids = r.customerIDs { lines += ids.map { "  " + $0 } }
        }
        return lines.joined(separator: "\n")
    }
}
