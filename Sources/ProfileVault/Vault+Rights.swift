import Foundation
public import VaultPolicy
public import VaultStore

/// The data subject's rights of issue 19 (part 3): restriction (GDPR Art. 18), objection
/// (Art. 21) and consent imported with its original evidence. docs/privacy-operations.md.
extension Vault {
    /// The refusal of any processing of a restricted subject (exit 77), the same everywhere.
    public static let restrictedSubject = "the processing of this subject is restricted (GDPR Art. 18)"

    /// The purpose whose objections a query, job, recommendation or read leaves out: the purpose
    /// itself when its legal basis is `legitimate_interest` (the only basis Art. 21 objections
    /// are recorded for), else nil.
    static func objectionPurpose(_ p: Purpose) -> String? {
        p.legalBasis == .legitimate_interest ? p.name : nil
    }

    // MARK: - Restriction (Art. 18)

    /// Restricts the processing of one subject (`restricted` true) or lifts the restriction;
    /// returns whether its state changed. Role permission `restrict`. An unknown subject is not
    /// found (66). While restricted, the subject stays stored and exportable, but every query,
    /// training job, recommendation and `get` leaves it out or refuses it (77).
    public func setRestriction(customerID: String, restricted: Bool) throws -> Bool {
        try audited(restricted ? "restrict" : "unrestrict", .update, permission: "restrict", subjectID: customerID) { context in
            let id = Normalization.customerID(customerID)
            guard !id.isEmpty else { throw VaultError(.invalidInput, "no customer ID given") }
            return try store.setRestriction(customerID: id, restricted: restricted, audit: context)
        }
    }

    // MARK: - Objection (Art. 21)

    /// Records the subjects' objection to a `legitimate_interest` purpose (role permission
    /// `consent`): a consent-ledger entry (granted false, source `objection`) and a state that
    /// leaves them out of the purpose's queries, jobs, recommendations and reads, as a revoked
    /// consent does. Another legal basis is refused (65). Returns how many subjects' state changed.
    public func object(_ selection: SubjectSelection, purpose name: String) throws -> Int {
        try audited("consent.object", .update, permission: "consent", purpose: name, subjectID: selection.singleID) { context in
            try StoredText.check(context.actor, "actor")
            let p = try purpose(name)
            guard p.legalBasis == .legitimate_interest else {
                throw VaultError(.invalidInput, "purpose \(p.name) has legal basis \(p.legalBasis.rawValue): an objection (Art. 21) applies only to a legitimate_interest purpose"
                                 + (p.legalBasis == .consent ? "; revoke the consent instead" : ""))
            }
            let (ids, file) = try resolveSelection(selection)
            return try store.setConsent(ids, file: file, purpose: p.name, granted: false, source: ProfileStore.objectionSource,
                                        policyVersion: policy.version, audit: context)
        }
    }

    /// Refuses a consent grant or revocation for a purpose whose legal basis is not consent
    /// (65, naming the basis): it would change nothing any read or query checks.
    func requireConsentBasis(_ p: Purpose, granted: Bool) throws {
        guard p.legalBasis == .consent else {
            let hint = p.legalBasis == .legitimate_interest && !granted ? "; record an objection (consent object) instead" : ""
            throw VaultError(.invalidInput, "purpose \(p.name) has legal basis \(p.legalBasis.rawValue), not consent: its consent cannot be \(granted ? "granted" : "revoked")\(hint)")
        }
    }

    // MARK: - Consent import

    /// One input row of a consent import, as read (CSV line or JSON record).
    public struct ConsentImportInput: Sendable {
        public var line: Int
        public var customerID: String?
        public var purpose: String?
        public var granted: String?
        public var time: String?
        public var source: String?
        public init(line: Int, customerID: String?, purpose: String?, granted: String?, time: String?, source: String?) {
            self.line = line
            self.customerID = customerID
            self.purpose = purpose
            self.granted = granted
            self.time = time
            self.source = source
        }
    }

    /// Imports consent evidence from a CSV file with the header
    /// `customer_id,purpose,granted,time,source` (role permission `consent`).
    public func importConsent(path: String) throws -> Int {
        try audited("consent.import", .update, permission: "consent") { context in
            let rows = try Self.readConsentCSV(path: path)
            return try importConsent(rows, label: path, context: context)
        }
    }

    /// Imports consent evidence given as records (the HTTP body's `rows`); errors name
    /// `record N` (from 1).
    public func importConsent(records: [ConsentImportInput]) throws -> Int {
        try audited("consent.import", .update, permission: "consent") { context in
            try importConsent(records, label: nil, context: context)
        }
    }

    /// Validates every row before anything is written (the first bad one refuses the import,
    /// naming the file, line and field, never the value), then writes all in one transaction.
    func importConsent(_ rows: [ConsentImportInput], label: String?, context: AuditContext) throws -> Int {
        try StoredText.check(context.actor, "actor")
        guard !rows.isEmpty else { throw VaultError(.invalidInput, "\(label.map { "\($0): " } ?? "")no consent rows") }
        func where_(_ r: ConsentImportInput, _ field: String) -> String {
            if let label { return "\(label):\(r.line): \(field)" }
            return "record \(r.line): \(field)"
        }
        let nowMillis = Int64(Date().timeIntervalSince1970 * 1000)
        var valid: [ConsentImportRow] = []
        valid.reserveCapacity(rows.count)
        for r in rows {
            let id = Normalization.customerID(r.customerID ?? "")
            guard !id.isEmpty else { throw VaultError(.invalidInput, "\(where_(r, "customer_id")): missing") }
            guard let name = r.purpose, !name.isEmpty else { throw VaultError(.invalidInput, "\(where_(r, "purpose")): missing") }
            guard let p = policy.purpose(name) else {
                throw VaultError(.invalidInput, "\(where_(r, "purpose")): not a purpose of the policy (purposes: \(policy.purposeOrder.joined(separator: ", ")))")
            }
            let granted: Bool
            switch r.granted?.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true"?: granted = true
            case "false"?: granted = false
            default: throw VaultError(.invalidInput, "\(where_(r, "granted")): must be true or false")
            }
            // Consent evidence for consent purposes; for a legitimate_interest purpose, a
            // "false" row is an objection (recorded with source `objection`).
            var source = r.source.flatMap { $0.isEmpty ? nil : $0 }
            switch p.legalBasis {
            case .consent:
                if source == ProfileStore.objectionSource {
                    throw VaultError(.invalidInput, "\(where_(r, "source")): \(ProfileStore.objectionSource) is kept for objections to legitimate_interest purposes")
                }
            case .legitimate_interest where !granted:
                source = ProfileStore.objectionSource
            default:
                throw VaultError(.invalidInput, "\(where_(r, "purpose")): purpose \(p.name) has legal basis \(p.legalBasis.rawValue), not consent"
                                 + (p.legalBasis == .legitimate_interest ? " (only an objection, granted false, can be imported for it)" : ""))
            }
            guard let t = Self.consentTime(r.time ?? "") else {
                throw VaultError(.invalidInput, "\(where_(r, "time")): not an ISO 8601 time or epoch milliseconds")
            }
            guard t <= nowMillis else { throw VaultError(.invalidInput, "\(where_(r, "time")): in the future") }
            if let source {
                guard source.utf8.count <= 1024, !source.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                    throw VaultError(.invalidInput, "\(where_(r, "source")): longer than 1024 bytes or holds a control character")
                }
            }
            valid.append(ConsentImportRow(line: r.line, customerID: id, purpose: p.name, granted: granted, timeMillis: t, source: source))
        }
        return try store.importConsent(valid, file: label, policyVersion: policy.version, audit: context)
    }

    /// A consent time: epoch milliseconds (digits, optionally signed) or an ISO 8601 time
    /// (`DateParsing`), as milliseconds since the epoch; nil when it is neither or overflows.
    static func consentTime(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { return nil }
        if t.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return t.utf8.count <= 18 ? Int64(t) : nil }
        guard let s = DateParsing.unixSeconds(fromISO8601: Substring(t)) else { return nil }
        let (ms, overflow) = s.multipliedReportingOverflow(by: 1000)
        return overflow ? nil : ms
    }

    /// Reads a consent CSV: the exact header, then one row per entry (five fields each).
    static func readConsentCSV(path: String) throws -> [ConsentImportInput] {
        let reader = try CSVReader(path: path)
        let header = ["customer_id", "purpose", "granted", "time", "source"]
        guard let first = try reader.next() else { throw VaultError(.invalidInput, "\(path): empty file") }
        if let problem = first.problem { throw VaultError(.invalidInput, "\(path):\(first.line): \(problem.reason)") }
        guard first.fields.map({ $0.trimmingCharacters(in: .whitespaces) }) == header else {
            throw VaultError(.invalidInput, "\(path):\(first.line): the header must be \(header.joined(separator: ","))")
        }
        var out: [ConsentImportInput] = []
        while let r = try reader.next() {
            if let problem = r.problem { throw VaultError(.invalidInput, "\(path):\(r.line): \(problem.reason)") }
            guard r.fields.count == header.count else {
                throw VaultError(.invalidInput, "\(path):\(r.line): \(r.fields.count) fields, the header has \(header.count)")
            }
            out.append(ConsentImportInput(line: r.line, customerID: r.fields[0], purpose: r.fields[1], granted: r.fields[2],
                                          time: r.fields[3], source: r.fields[4]))
        }
        return out
    }
}

// MARK: - Rectification (Art. 16)

extension Vault {
    /// Rectifies a subject's stored data (role permission `rectify`): each `field=value` is
    /// validated exactly as ingest validates it (same parser, same normalisation, errors naming
    /// the field and never the value); nothing is written unless every one is valid. PII is
    /// sealed again with the subject's own data key (a fresh nonce), lookup fields get their new
    /// blind-index entry. The customer ID cannot be rectified (it is the subject's identity:
    /// erase and ingest again). Returns the names of the fields whose value changed, in schema
    /// order; the audit entry names them, never a value.
    public func rectify(customerID: String, set assignments: [(field: String, value: String)]) throws -> [String] {
        try audited("rectify", .update, permission: "rectify", subjectID: customerID) { context in
            let id = Normalization.customerID(customerID)
            guard !id.isEmpty else { throw VaultError(.invalidInput, "no customer ID given") }
            guard !assignments.isEmpty else { throw VaultError(.usage, "give at least one field=value to set") }
            var seen = Set<String>()
            var values: [(FieldSpec, FieldValue)] = []
            for (name, raw) in assignments {
                let shown = Self.printableName(name).map { "field \($0)" } ?? "a field given"
                if name == schema.subjectIDField {
                    throw VaultError(.invalidInput, "field \(name) is the customer ID: it cannot be rectified (erase the subject and ingest it again)")
                }
                guard let f = schema.field(named: name) else {
                    throw VaultError(.invalidInput, "\(shown) is not a field of the schema (fields: \(schema.fields.map(\.name).joined(separator: ", ")))",
                                     detail: "unknown field")
                }
                guard seen.insert(f.name).inserted else { throw VaultError(.invalidInput, "field \(f.name) is set twice") }
                do throws(ValueError) {
                    values.append((f, try f.parse(Substring(raw))))
                } catch {
                    throw VaultError(.invalidInput, "field \(f.name): \(error.detail)")
                }
            }
            // Schema order, whatever the order given.
            let order = Dictionary(uniqueKeysWithValues: schema.fields.enumerated().map { ($1.name, $0) })
            values.sort { (order[$0.0.name] ?? 0) < (order[$1.0.name] ?? 0) }
            return try store.rectify(customerID: id, values: values, audit: context)
        }
    }
}
