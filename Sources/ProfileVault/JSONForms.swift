import Foundation
public import DifferentialPrivacy
public import VaultAudit
import VaultPolicy
public import VaultStore
public import VaultCrypto

/// The JSON shapes of answers, shared by the CLI's `--json` forms (SPEC §10) and the HTTP
/// service's bodies, so the two cannot drift apart.
public enum JSONForms {
    public static func num(_ d: Double) -> JSONValue { .double((d * 1e6).rounded() / 1e6) }
    public static func isoMillis(_ ms: Int64?) -> JSONValue { ms.map { .string(AuditLog.isoMillis($0)) } ?? .null }

    public static func value(_ v: ProfileValue) -> JSONValue {
        switch v {
        case .null: .null
        case .int(let i): .int(i)
        case .float(let d): .double(d)
        case .text(let s): .string(s)
        case .bool(let b): .bool(b)
        }
    }

    public static func profile(_ view: ProfileView) -> JSONValue {
        .object([("customer_id", .string(view.customerID))] + view.fields.map { ($0.name, value($0.value)) })
    }

    public static func ingest(_ r: IngestReport) -> JSONValue {
        .object([
            ("inserted", .int(Int64(r.inserted))),
            ("updated", .int(Int64(r.updated))),
            ("unchanged", .int(Int64(r.unchanged))),
            ("rejected", .int(Int64(r.rejected))),
            ("seconds", .double((r.seconds * 1000).rounded() / 1000)),
        ])
    }

    public static func consentEntry(_ e: ConsentEntry) -> JSONValue {
        .object([("time", isoMillis(e.timeMillis)), ("purpose", .string(e.purpose)), ("granted", .bool(e.granted)),
                 ("actor", .string(e.actor)), ("source", e.source.map { .string($0) } ?? .null), ("policy_version", .string(e.policyVersion))])
    }

    public static func accessExport(_ e: AccessExport) -> JSONValue {
        .object([
            ("customer_id", .string(e.customerID)),
            ("exported_at", isoMillis(AuditLog.nowMillis)),
            ("pseudonym", .string(e.pseudonym)),
            ("created_at", .string(DateParsing.iso8601(unixSeconds: e.createdAt))),
            ("updated_at", .string(DateParsing.iso8601(unixSeconds: e.updatedAt))),
            ("last_activity", .string(DateParsing.iso8601(unixSeconds: e.lastActivity))),
        ] + e.profile.fields.map { ($0.name, value($0.value)) } + [
            ("events", .array(e.events.map { .object([("kind", .string($0.kind)), ("item", .string($0.item)), ("value", .double($0.value)),
                                                      ("time", .string(DateParsing.iso8601(unixSeconds: $0.time)))]) })),
            ("consent", .array(e.consent.map(consentEntry))),
            ("access_log", .array(e.auditEntries.map { (try? JSONValue.parse($0)) ?? .string($0) })),
        ])
    }

    public static func receipt(_ r: ErasureReceipt) -> JSONValue {
        .object([("customer_id", .string(r.customerID)), ("erased_at", isoMillis(r.erasedAtMillis)), ("receipt", .string(r.receipt)),
                 ("audit_sequence", .int(r.auditSequence)), ("reason", .string(r.reason)),
                 ("removed", .object(r.removed.map { ($0.0, .int($0.1)) }))])
    }

    public static func query(_ r: QueryResult) -> JSONValue {
        func ci(_ v: ReleasedValue) -> JSONValue { .array([num(v.ci95.0), num(v.ci95.1)]) }
        func interval(_ v: ReleasedValue) -> JSONValue { .array([num((v.interval ?? v.ci95).0), num((v.interval ?? v.ci95).1)]) }
        var common: [(String, JSONValue)] = [
            ("epsilon", .double(r.epsilon)), ("delta", .double(0)), ("scale", num(r.scale)), ("budget_left", num(r.budget.left)),
            ("budget_spent", num(r.budget.spent)), ("mechanism", .string("discrete Laplace, user-level")),
            ("contribution_bounds", .object(r.contributionBounds.sorted { $0.key < $1.key }.map { ($0.key, num($0.value)) })),
            ("warnings", .array(queryWarnings(r).map { .string($0) })),
            ("cached", .bool(r.cached)),
            ("confidence", .double(r.confidence)),
            ("clamped_share", r.clampedShare.map { num($0) } ?? .string("not measured")),
        ]
        if let b = r.clampBounds {
            common.append(("bounds", .array([num(b.lower), num(b.upper)])))
            common.append(("bounds_source", .string(r.boundsFromQuery ? "query" : "schema")))
        }
        if let a = r.accuracy { common.append(("accuracy", num(a))) }
        if let e = r.accuracyCountEpsilon { common.append(("accuracy_count_epsilon", .double(e))) }
        if let rho = r.rho {   // zCDP: epsilon and delta are the conversion of rho; budget figures are rho
            common = common.map { pair in
                switch pair.0 {
                case "delta": return ("delta", .double(r.conversionDelta ?? 0))
                case "mechanism": return ("mechanism", .string("discrete Gaussian, user-level (zCDP)"))
                default: return pair
                }
            }
            common += [("rho", .double(rho)), ("rho_charged", .double(r.cached ? 0 : rho)), ("budget_unit", .string("rho"))]
            if let c = r.accuracyCountRho { common.append(("accuracy_count_rho", .double(c))) }
        }
        // Pay once: what this answer charged (0 from the release cache) and when the release was made.
        common.append(("epsilon_charged", .double(r.cached ? 0 : r.epsilon)))
        if let t = r.releasedAtMillis { common.append(("released_at", isoMillis(t))) }
        if let c = r.clamped {
            var clampedPairs: [(String, JSONValue)] = [
                ("epsilon", .double(c.epsilon)), ("count", num(c.count)), ("count_interval", .array([num(c.countInterval.0), num(c.countInterval.1)])),
                ("share", num(c.share)), ("share_interval", .array([num(c.shareInterval.0), num(c.shareInterval.1)])),
                ("outside", .string("values below the lower bound or above the upper bound")),
            ]
            if let rc = c.rho { clampedPairs.append(("rho", .double(rc))) }   // zCDP: what the three counts were charged
            common.append(("clamped", .object(clampedPairs)))
        }
        if let v = r.value {
            return .object([("value", num(v.value)), ("ci95", ci(v)), ("interval", interval(v))] + common)
        }
        return .object([("groups", .object(r.groups.map { ($0.key, .object([("value", num($0.value.value)), ("ci95", ci($0.value)),
                                                                              ("interval", interval($0.value))])) }))] + common)
    }

    /// `query ... --dry-run --json` and `"dry_run": true`: the quote, nothing charged.
    public static func queryQuote(_ q: QueryQuote) -> JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("dry_run", .bool(true)), ("epsilon", .double(q.epsilon)), ("delta", .double(q.delta)), ("scale", num(q.scale)),
            ("confidence", .double(q.confidence)),
            ("interval_half_width", q.halfWidth.map { num($0) } ?? .null),
            ("coordinates", .array(q.coordinates.map { .object([("scale", num($0.scale)), ("half_width", num($0.halfWidth))]) })),
            ("mechanism", .string("discrete Laplace, user-level")),
        ]
        if let m = q.meanHalfWidthTimesCount { pairs.append(("mean_half_width_times_count", num(m))) }
        if let b = q.clampBounds { pairs.append(("bounds", .array([num(b.lower), num(b.upper)]))) }
        if let a = q.accuracy { pairs.append(("accuracy", num(a))) }
        if let s = q.budget { pairs += [("budget_left", num(s.left)), ("budget_spent", num(s.spent))] }
        if let f = q.fits { pairs.append(("fits", .bool(q.cached || f))) }
        pairs.append(("cached", .bool(q.cached)))
        pairs.append(("epsilon_charged", .double(q.cached ? 0 : q.epsilon)))
        if let rho = q.rho {
            pairs = pairs.map { $0.0 == "mechanism" ? ("mechanism", .string("discrete Gaussian, user-level (zCDP)")) : $0 }
            pairs += [("rho", .double(rho)), ("rho_charged", .double(q.cached ? 0 : rho)), ("budget_unit", .string("rho"))]
        }
        return .object(pairs)
    }

    /// A query's warnings: its noisy count (a count's value, a mean's denominator, summed over
    /// groups) under 5 noise scales. A sum has no count and no warning.
    public static func queryWarnings(_ r: QueryResult) -> [String] {
        guard let c = r.noisyCount, let b = r.noisyCountScale,
              let w = Vault.fewWarning(c, scale: b, what: "count", hint: "has anyone consented to the purpose? does the where clause match anyone?") else { return [] }
        return [w]
    }

    public static func budget(_ states: [BudgetState]) -> JSONValue {
        .object([("purposes", .object(states.map { s in
            (s.purpose, .object([("limit", num(s.limit)), ("spent", num(s.spent)), ("left", num(s.left)),
                                 ("delta_limit", .double(s.deltaLimit)), ("delta_spent", .double(s.deltaSpent)), ("delta_left", .double(s.deltaLeft)),
                                 ("period_start", .string(DateParsing.iso8601(unixSeconds: s.periodStart)))]
                        + (s.zcdp ? [("accounting", .string("zcdp")), ("rho_limit", num(s.limit)), ("rho_spent", num(s.spent)), ("rho_left", num(s.left)),
                                     ("conversion_delta", .double(s.conversionDelta)),
                                     ("epsilon_equivalent_limit", num(s.epsilonEquivalentLimit)),
                                     ("epsilon_equivalent_spent", num(s.epsilonEquivalentSpent))] : [])))
        }))])
    }

    /// Counts, largest first (ties by name).
    public static func sortedCounts(_ counts: [String: Int]) -> [(String, Int)] {
        counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// `audit report --json` and `GET /v1/audit/report`: the denied attempts first, then the
    /// counts per actor, action, purpose and outcome, and epsilon spent per purpose.
    public static func auditReport(_ r: AuditReport) -> JSONValue {
        func counts(_ c: [String: Int]) -> JSONValue { .object(sortedCounts(c).map { ($0.0, .int(Int64($0.1))) }) }
        let denied: [JSONValue] = r.denied.map { d in
            .object([("seq", .int(d.sequence)), ("time", .string(d.time)), ("actor", .string(d.actor)), ("role", .string(d.role)),
                     ("action", .string(d.action)), ("purpose", d.purpose.map { .string($0) } ?? .null),
                     ("subject", d.subject.map { .string($0) } ?? .null), ("detail", d.detail.map { .string($0) } ?? .null)])
        }
        return .object([
            ("since", isoMillis(r.sinceMillis)),
            ("until", isoMillis(r.untilMillis)),
            ("entries", .int(Int64(r.entries))),
            ("first_sequence", r.firstSequence.map { .int($0) } ?? .null),
            ("last_sequence", r.lastSequence.map { .int($0) } ?? .null),
            ("denied_count", .int(Int64(r.deniedCount))),
            ("denied_by_actor", counts(r.deniedByActor)),
            ("denied", .array(denied)),
            ("denied_truncated", .bool(r.deniedCount > r.denied.count)),
            ("by_actor", counts(r.byActor)),
            ("by_action", counts(r.byAction)),
            ("by_purpose", counts(r.byPurpose)),
            ("by_outcome", counts(r.byOutcome)),
            ("epsilon_by_purpose", .object(r.epsilonByPurpose.sorted { $0.key < $1.key }.map { ($0.key, .double($0.value)) })),
            ("rho_by_purpose", .object(r.rhoByPurpose.sorted { $0.key < $1.key }.map { ($0.key, .double($0.value)) })),
        ])
    }
    /// `status --json` and `GET /v1/status`: counts and metadata of the store (no personal data).
    public static func storeStatus(_ s: StoreStatus) -> JSONValue {
        .object([
            ("subjects", .int(Int64(s.subjects))),
            ("events", .int(Int64(s.events))),
            ("key_versions", .array(s.keyVersions.map { .int(Int64($0)) })),
            ("audit_entries", .int(s.auditEntries)),
            ("audit_head", .string(s.auditHead)),
            ("schema_version", .int(Int64(s.schemaVersion))),
            ("policy_version", .string(s.policyVersion)),
            ("file_bytes", .int(s.fileBytes)),
            ("policy", s.policy.map { p in .object([("version", .string(p.version)), ("sha256", .string(p.sha256)),
                                                    ("schema_sha256", .string(p.schemaSHA256)),
                                                    ("applied_at", .string(Vault.isoTime(millis: p.appliedAtMillis))),
                                                    ("actor", .string(p.actor))]) } ?? .null),
        ])
    }

    /// `keys status|rotate|retire --json`, `GET /v1/keys` and `POST /v1/keys/rotate`.
    public static func keyStatus(_ s: KeyStatus, rewrapped: Int) -> JSONValue {
        .object([
            ("active", .int(Int64(s.active))),
            ("versions", .array(s.versions.map { .int(Int64($0)) })),
            ("rewrapped", .int(Int64(rewrapped))),
            ("retired", .array(s.retired.map { .int(Int64($0)) })),
            ("identity_version", .int(Int64(s.identityVersion))),
            ("subjects_per_version", .object(s.subjectsPerVersion.sorted { $0.key < $1.key }.map { (String($0.key), .int(Int64($0.value))) })),
            ("root_of_trust", rootOfTrust(s.rootOfTrust)),
        ])
    }

    /// Where the keyring's root of trust lives: `{"custody":"file"}`, or `{"custody":"pkcs11",
    /// "token","object","module"}` (the module's file name only; never a PIN or its file).
    public static func rootOfTrust(_ custody: KeyCustody) -> JSONValue {
        switch custody {
        case .file:
            return .object([("custody", .string("file"))])
        case .pkcs11(let uri):
            return .object([
                ("custody", .string("pkcs11")), ("token", .string(uri.token ?? "")), ("object", .string(uri.object ?? "")),
                ("module", .string(uri.moduleName)),
            ])
        }
    }

    /// `consent status --json` (and the `purposes` of `GET /v1/subjects/{id}/consent`): each
    /// declared purpose's current state.
    public static func consentPurposes(_ states: [(purpose: String, state: ConsentState, needed: Bool)]) -> JSONValue {
        .object(states.map { ($0.purpose, .object([
            ("granted", .bool($0.state.granted)), ("since", isoMillis($0.state.sinceMillis)), ("consent_required", .bool($0.needed)),
        ])) })
    }
}
