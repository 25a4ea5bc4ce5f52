import Foundation
public import VaultAudit
public import VaultPolicy
public import VaultStore
import VaultCrypto

/// schema.yaml and policy.yaml as loaded, with the SHA-256 of each file's bytes.
public struct PolicyFiles: Sendable {
    public let schema: Schema
    public let policy: Policy
    /// SHA-256 (hex) of policy.yaml.
    public let sha256: String
    /// SHA-256 (hex) of schema.yaml.
    public let schemaSHA256: String
}

/// One difference between two recorded policies (`policy apply`, `policy status`).
public struct PolicyChange: Codable, Sendable, Equatable {
    /// `version`, `schema`, `purpose`, `budget`, `role`, `retention` or `requests`.
    public var kind: String
    /// The purpose or role (nil for version, schema, retention and requests).
    public var name: String?
    /// `added`, `removed`, `changed`, `granted` or `revoked`.
    public var change: String
    /// What changed: `epsilon`, `delta`, `period`, `may_read`, a permission, ...
    public var field: String?
    public var from: String?
    public var to: String?

    public var text: String {
        let subject = [kind, name].compactMap { $0 }.joined(separator: " ")
        switch change {
        case "added": return "\(subject) added" + (to.map { ": \($0)" } ?? "")
        case "removed": return "\(subject) removed" + (from.map { " (was \($0))" } ?? "")
        case "granted", "revoked": return "\(subject): \(change) \(field ?? "")"
        default: return "\(subject): \(field.map { $0 + " " } ?? "")\(from ?? "none") -> \(to ?? "none")"
        }
    }

    public var json: JSONValue {
        func s(_ v: String?) -> JSONValue { v.map(JSONValue.string) ?? .null }
        return .object([("kind", .string(kind)), ("name", s(name)), ("change", .string(change)), ("field", s(field)),
                        ("from", s(from)), ("to", s(to))])
    }
}

/// What a policy grants, as recorded with it in the store: the next `policy apply` diffs
/// against it (the store keeps no copy of the files themselves).
struct PolicySummary: Codable, Equatable {
    struct Budget: Codable, Equatable {
        var epsilon: Double
        var delta: Double
        var period: String
        var periodSeconds: Int
        /// A zCDP budget's rho and conversion delta (nil for epsilon budgets and in summaries
        /// recorded before zCDP budgets existed).
        var rho: Double? = nil
        var conversionDelta: Double? = nil
    }
    struct PurposeSummary: Codable, Equatable {
        var dataUse: String
        var legalBasis: String
        var mayRead: [String]
        var mayReadPII: [String]
        var models: [String]
        var budget: Budget?
        /// `recipients:` (nil in summaries recorded before the key existed: none).
        var recipients: [String]?
    }
    var version: String
    var purposes: [String: PurposeSummary]
    var purposeOrder: [String]
    var roles: [String: [String]]
    var retention: [String]
    /// `requests:` as `[deadline, extension]` (e.g. `["30d", "60d"]`); nil in summaries recorded
    /// before the key existed, which ran under the defaults.
    var requests: [String]?

    init(_ p: Policy) {
        version = p.version
        purposeOrder = p.purposeOrder
        var purposes: [String: PurposeSummary] = [:]
        for (name, x) in p.purposes {
            purposes[name] = PurposeSummary(
                dataUse: x.dataUse, legalBasis: x.legalBasis.rawValue, mayRead: x.mayRead, mayReadPII: x.mayReadPII, models: x.models,
                budget: x.dpBudget.map { Budget(epsilon: $0.epsilon, delta: $0.delta, period: $0.periodText, periodSeconds: $0.periodSeconds,
                                                rho: $0.rho, conversionDelta: $0.rho == nil ? nil : $0.conversionDelta) },
                recipients: x.recipients.isEmpty ? nil : x.recipients)
        }
        self.purposes = purposes
        roles = p.roles.mapValues { $0.sorted() }
        retention = p.retention.map { "\($0.category) keep \($0.keepText) after \($0.after.rawValue)" }
        requests = [p.requests.deadlineText, p.requests.extensionText]
    }

    func encoded() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return (try? e.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func decode(_ text: String) -> PolicySummary? {
        try? JSONDecoder().decode(PolicySummary.self, from: Data(text.utf8))
    }

    /// Seconds of a policy duration text (`30d`, `12h`); nil for anything else.
    static func durationSeconds(_ text: String) -> Int? {
        guard let unit = text.last, let n = Int(text.dropLast()), n >= 0, n < 100_000_000 else { return nil }
        switch unit {
        case "d": return n * 86_400
        case "h": return n * 3_600
        default: return nil
        }
    }

    static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
    }

    static func budgetText(_ b: Budget?) -> String? {
        b.map { b in
            if let rho = b.rho { return "rho \(number(rho)) (zCDP, shown at delta \(number(b.conversionDelta ?? 0))) per \(b.period)" }
            return "epsilon \(number(b.epsilon)), delta \(number(b.delta)) per \(b.period)"
        }
    }

    /// The changes from `old` to `self`, in a fixed order: version, schema, purposes (this
    /// policy's order, then removed ones), their budgets, roles, retention.
    func changes(from old: PolicySummary, oldRecord: PolicyRecord, files: PolicyFiles) -> [PolicyChange] {
        var out: [PolicyChange] = []
        func list(_ a: [String]) -> String { "[" + a.joined(separator: ", ") + "]" }
        if old.version != version {
            out.append(PolicyChange(kind: "version", name: nil, change: "changed", field: nil, from: old.version, to: version))
        }
        if oldRecord.schemaSHA256 != files.schemaSHA256 {
            out.append(PolicyChange(kind: "schema", name: nil, change: "changed", field: "sha256", from: oldRecord.schemaSHA256, to: files.schemaSHA256))
        }
        let names = purposeOrder + old.purposeOrder.filter { purposes[$0] == nil }
        for name in names {
            let a = old.purposes[name], b = purposes[name]
            switch (a, b) {
            case (nil, let b?):
                out.append(PolicyChange(kind: "purpose", name: name, change: "added", field: nil, from: nil, to: "\(b.dataUse), \(b.legalBasis)"))
                if let t = Self.budgetText(b.budget) { out.append(PolicyChange(kind: "budget", name: name, change: "added", field: nil, from: nil, to: t)) }
            case (let a?, nil):
                out.append(PolicyChange(kind: "purpose", name: name, change: "removed", field: nil, from: "\(a.dataUse), \(a.legalBasis)", to: nil))
                if let t = Self.budgetText(a.budget) { out.append(PolicyChange(kind: "budget", name: name, change: "removed", field: nil, from: t, to: nil)) }
            case (let a?, let b?):
                let fields: [(String, String, String)] = [
                    ("data_use", a.dataUse, b.dataUse), ("legal_basis", a.legalBasis, b.legalBasis),
                    ("may_read", list(a.mayRead), list(b.mayRead)), ("may_read_pii", list(a.mayReadPII), list(b.mayReadPII)),
                    ("models", list(a.models), list(b.models)),
                    ("recipients", list(a.recipients ?? []), list(b.recipients ?? [])),
                ]
                for (f, x, y) in fields where x != y {
                    out.append(PolicyChange(kind: "purpose", name: name, change: "changed", field: f, from: x, to: y))
                }
                switch (a.budget, b.budget) {
                case (nil, let y?):
                    out.append(PolicyChange(kind: "budget", name: name, change: "added", field: nil, from: nil, to: Self.budgetText(y)))
                case (let x?, nil):
                    out.append(PolicyChange(kind: "budget", name: name, change: "removed", field: nil, from: Self.budgetText(x), to: nil))
                case (let x?, let y?):
                    if x.epsilon != y.epsilon {
                        out.append(PolicyChange(kind: "budget", name: name, change: "changed", field: "epsilon", from: Self.number(x.epsilon), to: Self.number(y.epsilon)))
                    }
                    if x.delta != y.delta {
                        out.append(PolicyChange(kind: "budget", name: name, change: "changed", field: "delta", from: Self.number(x.delta), to: Self.number(y.delta)))
                    }
                    if x.rho != y.rho || x.conversionDelta != y.conversionDelta {
                        out.append(PolicyChange(kind: "budget", name: name, change: "changed", field: "rho",
                                                from: Self.budgetText(x), to: Self.budgetText(y)))
                    }
                    if x.periodSeconds != y.periodSeconds {
                        out.append(PolicyChange(kind: "budget", name: name, change: "changed", field: "period", from: x.period, to: y.period))
                    }
                case (nil, nil):
                    break
                }
            case (nil, nil):
                break
            }
        }
        for role in Set(old.roles.keys).union(roles.keys).sorted() {
            switch (old.roles[role], roles[role]) {
            case (nil, let p?): out.append(PolicyChange(kind: "role", name: role, change: "added", field: nil, from: nil, to: list(p)))
            case (let p?, nil): out.append(PolicyChange(kind: "role", name: role, change: "removed", field: nil, from: list(p), to: nil))
            case (let x?, let y?):
                for p in y where !x.contains(p) { out.append(PolicyChange(kind: "role", name: role, change: "granted", field: p, from: nil, to: nil)) }
                for p in x where !y.contains(p) { out.append(PolicyChange(kind: "role", name: role, change: "revoked", field: p, from: nil, to: nil)) }
            case (nil, nil): break
            }
        }
        if old.retention != retention {
            out.append(PolicyChange(kind: "retention", name: nil, change: "changed", field: "rules", from: list(old.retention), to: list(retention)))
        }
        // The request register's deadlines, compared as durations (`30d` and `720h` are equal).
        let standard = RequestDeadlines.standard
        let was = old.requests ?? [standard.deadlineText, standard.extensionText]
        let now = requests ?? [standard.deadlineText, standard.extensionText]
        for (i, field) in ["deadline", "extension"].enumerated() where i < was.count && i < now.count {
            if Self.durationSeconds(was[i]) != Self.durationSeconds(now[i]) {
                out.append(PolicyChange(kind: "requests", name: nil, change: "changed", field: field, from: was[i], to: now[i]))
            }
        }
        return out
    }
}

/// What `policy apply` did.
public struct PolicyApplyResult: Sendable {
    /// The policy in force afterwards.
    public var record: PolicyRecord
    /// The changes from the previous policy (empty for the first, or when nothing changed).
    public var changes: [PolicyChange]
    /// False when the files were already the policy in force (nothing was recorded).
    public var applied: Bool
}

/// `policy status`: the policy in force, and what applying the files would change.
public struct PolicyStatus: Sendable {
    public var inForce: PolicyRecord?
    /// True when the files hash to the policy in force.
    public var filesInForce: Bool
    /// The files' SHA-256s (nil when they did not load).
    public var filesSHA256: String?
    public var filesSchemaSHA256: String?
    /// Why the files did not load, if they did not.
    public var filesError: String?
    /// What `policy apply` would record (empty when in force or not loaded).
    public var pending: [PolicyChange]
}

extension Vault {
    /// The command that records a changed policy, named in every refusal.
    public static let applyCommand = "profilectl policy apply --role privacy_officer"

    /// Loads schema.yaml and policy.yaml like ``loadPolicies(directory:)`` and hashes the very
    /// bytes it parsed.
    public static func loadPolicyFiles(directory: String) throws -> PolicyFiles {
        do {
            let l = try PolicyLoader.loadWithText(directory: directory)
            return PolicyFiles(schema: l.schema, policy: l.policy, sha256: AuditLog.hex(SHA256.hash(Array(l.policyText.utf8))),
                               schemaSHA256: AuditLog.hex(SHA256.hash(Array(l.schemaText.utf8))))
        } catch {
            throw VaultError(.configuration, error.description)
        }
    }

    /// Refuses (configuration, 78) unless the store records exactly these files as the policy
    /// in force.
    static func requireInForce(_ files: PolicyFiles, store: any StorageEngine) throws {
        guard let record = try store.latestPolicy() else {
            throw VaultError(.configuration, "the store records no policy in force (it was made by an older version); a privacy officer records the current one with `\(applyCommand)`")
        }
        guard record.sha256 == files.sha256, record.schemaSHA256 == files.schemaSHA256 else {
            throw VaultError(.configuration, "the policy files differ from the policy in force (version \(record.version), sha256 \(record.sha256.prefix(16))..., applied \(AuditLog.isoMillis(record.appliedAtMillis)) by \(record.actor)); a changed policy takes effect only when a privacy officer applies it with `\(applyCommand)` (see `profilectl policy status`)")
        }
    }

    /// Records the loaded files as the policy in force: the first record (`init`, or the first
    /// apply on a store made by an older version), or a change, with its diff against the
    /// previous record, in one transaction with its audit entry.
    func recordPolicy(_ files: PolicyFiles, context: AuditContext, initial: Bool) throws -> PolicyApplyResult {
        let latest = try store.latestPolicy()
        if let latest, latest.sha256 == files.sha256, latest.schemaSHA256 == files.schemaSHA256 {
            return PolicyApplyResult(record: latest, changes: [], applied: false)
        }
        let summary = PolicySummary(files.policy)
        var changes: [PolicyChange] = []
        if let latest, let old = PolicySummary.decode(latest.summary) {
            changes = summary.changes(from: old, oldRecord: latest, files: files)
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let changesJSON = (try? e.encode(changes)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        let what = initial ? "initial policy" : latest == nil ? "first recorded policy" : "\(changes.count) changes"
        let detail = "version \(files.policy.version); sha256 \(files.sha256); schema sha256 \(files.schemaSHA256); \(what)"
            + (changes.isEmpty ? "" : ": " + changes.map(\.text).joined(separator: "; "))
        let audit = context.record("policy.apply", .update, detail: detail, counts: [("changes", Int64(changes.count))])
        var periods: [String: Int] = [:]
        for (name, p) in files.policy.purposes { if let b = p.dpBudget { periods[name] = b.periodSeconds } }
        let record = PolicyRecord(sequence: 0, version: files.policy.version, sha256: files.sha256, schemaSHA256: files.schemaSHA256,
                                  appliedAtMillis: 0, actor: context.actor, role: context.role, summary: summary.encoded(), changes: changesJSON)
        let stored = try store.recordPolicy(record, previous: latest?.sequence, periods: periods, audit: audit)
        return PolicyApplyResult(record: stored, changes: changes, applied: true)
    }

    /// `policy apply`: records the policy files this vault loaded as the policy in force
    /// (permission `policy`, checked against those files' roles). Nothing is recorded when they
    /// already are the policy in force.
    public func applyPolicy() throws -> PolicyApplyResult {
        try audited("policy.apply", .update, permission: "policy") { context in
            guard let files = policyFiles else { throw VaultError(.internalFailure, "the policy files were not loaded with their hashes") }
            return try recordPolicy(files, context: context, initial: false)
        }
    }

    /// The changes recorded with a policy record.
    public static func changes(of record: PolicyRecord) -> [PolicyChange] {
        (try? JSONDecoder().decode([PolicyChange].self, from: Data(record.changes.utf8))) ?? []
    }

    /// `policy status`, read without any key: the policy in force and what applying the files
    /// in `policyDirectory` would change.
    public static func policyStatus(storePath: String, policyDirectory: String) throws -> PolicyStatus {
        let history = try policyHistory(storePath: storePath)
        let latest = history.last
        var status = PolicyStatus(inForce: latest, filesInForce: false, filesSHA256: nil, filesSchemaSHA256: nil, filesError: nil, pending: [])
        do {
            let files = try loadPolicyFiles(directory: policyDirectory)
            status.filesSHA256 = files.sha256
            status.filesSchemaSHA256 = files.schemaSHA256
            status.filesInForce = latest?.sha256 == files.sha256 && latest?.schemaSHA256 == files.schemaSHA256
            if !status.filesInForce, let latest, let old = PolicySummary.decode(latest.summary) {
                status.pending = PolicySummary(files.policy).changes(from: old, oldRecord: latest, files: files)
            }
        } catch let e as VaultError {
            status.filesError = e.message
        }
        return status
    }
}
