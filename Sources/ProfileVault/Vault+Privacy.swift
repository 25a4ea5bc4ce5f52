import Foundation
public import VaultAudit
public import VaultCrypto
public import VaultPolicy
public import VaultStore

/// Privacy operations (SPEC §3, §4): consent, access export, erasure, retention, keys.
extension Vault {
    /// For a purpose whose legal basis is consent, the subject's consent must be active now.
    func requireConsent(customerID: String, purpose: Purpose) throws {
        guard purpose.legalBasis == .consent else { return }
        guard try store.hasConsent(customerID: customerID, purpose: purpose.name) else {
            throw VaultError(.denied, "purpose \(purpose.name) needs the subject's consent, which is not active")
        }
    }

    /// Subjects named on the command line: one `--subject`, or a `--subjects` file.
    public enum SubjectSelection: Sendable {
        case one(String)
        case file(String)
        /// Customer IDs given inline (an HTTP body's array).
        case list([String])

        /// The one customer a selection names (for the pseudonym of a refused attempt), or nil.
        var singleID: String? { if case .one(let id) = self { id } else { nil } }
    }

    func resolveSelection(_ s: SubjectSelection) throws -> (ids: [(line: Int, id: String)], file: String?) {
        switch s {
        case .one(let id): return ([(1, Normalization.customerID(id))], nil)
        case .file(let path):
            let ids = try ProfileStore.readSubjectList(path: path)
            guard !ids.isEmpty else { throw VaultError(.invalidInput, "\(path): no customer IDs in the file") }
            return (ids, path)
        case .list(let ids):
            guard !ids.isEmpty else { throw VaultError(.invalidInput, "no customer IDs given") }
            return (ids.enumerated().map { ($0.offset + 1, Normalization.customerID($0.element)) }, nil)
        }
    }

    // MARK: - Consent

    /// Grants or revokes consent; returns how many subjects' state changed. A source or actor
    /// holding U+0000 is refused (invalid input) before anything is read or written, on every
    /// engine (`StoredText`).
    public func setConsent(_ selection: SubjectSelection, purpose name: String, granted: Bool, source: String?) throws -> Int {
        try audited(granted ? "consent.grant" : "consent.revoke", .update, permission: "consent", purpose: name, subjectID: selection.singleID) { context in
            try StoredText.check(source, "consent source")
            try StoredText.check(context.actor, "actor")
            try requireConsentBasis(try purpose(name), granted: granted)
            let (ids, file) = try resolveSelection(selection)
            return try store.setConsent(ids, file: file, purpose: name, granted: granted, source: source,
                                        policyVersion: policy.version, audit: context)
        }
    }

    /// Consent state for every purpose of the policy.
    public func consentStatus(customerID: String) throws -> [(purpose: String, state: ConsentState, needed: Bool)] {
        try audited("consent.status", .read, permission: "consent", subjectID: customerID) { context in
            guard let states = try store.consentState(customerID: customerID) else {
                throw VaultError(.notFound, "no subject with this customer ID")
            }
            try store.audit([context.record("consent.status", .read, subject: try store.pseudonym(ofCustomerID: customerID))])
            return policy.purposeOrder.map { name in
                (name, states[name] ?? ConsentState(granted: false, sinceMillis: nil), policy.purpose(name)?.legalBasis == .consent)
            }
        }
    }

    public func consentHistory(customerID: String) throws -> [ConsentEntry] {
        try audited("consent.history", .read, permission: "consent", subjectID: customerID) { context in
            guard let entries = try store.consentHistory(customerID: customerID) else {
                throw VaultError(.notFound, "no subject with this customer ID")
            }
            try store.audit([context.record("consent.history", .read, subject: try store.pseudonym(ofCustomerID: customerID))])
            return entries
        }
    }

    // MARK: - Access export

    /// The data-subject access export: everything held, decrypted. The export is audited
    /// before it is returned (and so it lists itself among the audit entries).
    /// `format` (json, html, portability) is recorded in the entry's detail.
    public func accessExport(customerID: String, format: String? = nil) throws -> AccessExport {
        try audited("export", .read, permission: "export", subjectID: customerID) { context in
            let pseudo = try store.pseudonym(ofCustomerID: customerID)
            guard try store.exists(customerID: customerID) else {
                throw subjectNotFound(customerID: customerID)
            }
            try store.audit([context.record("export", .read, subject: pseudo, fields: [schema.subjectIDField] + schema.fields.map(\.name),
                                            detail: format.map { "format \($0)" })])
            guard let export = try store.accessExport(customerID: customerID) else {
                throw subjectNotFound(customerID: customerID)
            }
            return export
        }
    }

    // MARK: - Erasure

    /// Erases the subjects (crypto-shredding). A reason holding U+0000 is refused (invalid
    /// input) before anything is read or erased, on every engine (`StoredText`).
    ///
    /// All or nothing: an unknown ID refuses the whole call before anything is erased; one
    /// customer ID that was erased before says when and under which receipt (still 66).
    ///
    /// On a SQLite store the erasure journal beside it is rewritten afterwards; when that fails
    /// the erasure stays done and this throws `.cannotCreate` (73) saying so
    /// (``recordErasuresInJournal(done:receipts:)``).
    public func erase(_ selection: SubjectSelection, reason: String) throws -> [ErasureReceipt] {
        let intent = try beginErasureJournalIntent(permissions: ["erase"])
        let receipts = try eraseWithoutJournal(selection, reason: reason)
        try recordErasuresInJournal(done: "erased \(receipts.count) subject\(receipts.count == 1 ? "" : "s")", receipts: receipts, intent: intent)
        return receipts
    }

    /// ``erase(_:reason:)`` without the journal rewrite, for a caller that records more in the
    /// store first (a fulfilled request closes with its receipt) and then rewrites the journal.
    func eraseWithoutJournal(_ selection: SubjectSelection, reason: String) throws -> [ErasureReceipt] {
        try audited("erase", .delete, permission: "erase", subjectID: selection.singleID) { context in
            try StoredText.check(reason, "erasure reason")
            let (ids, file) = try resolveSelection(selection)
            do {
                return try store.erase(customerIDs: ids, file: file, reason: reason, audit: context)
            } catch let e as VaultError where e.kind == .notFound && ids.count == 1 && file == nil {
                throw subjectNotFound(customerID: ids[0].id)
            }
        }
    }

    /// A customer ID `erase` left alone: its line (from 1: the file's line, or the position in
    /// a list), and when it was erased before (nil: never a subject).
    public struct SkippedSubject: Sendable {
        public var line: Int
        public var erasedBefore: ErasureRecord?
    }

    /// Erases the subjects that exist and reports the others by line (`erase --subjects FILE`
    /// without `--all-or-nothing`): unknown IDs and IDs erased before, with that erasure's date
    /// and receipt; never the IDs themselves. Nothing to erase at all is 66, naming the lines.
    public func eraseExisting(_ selection: SubjectSelection, reason: String) throws -> (receipts: [ErasureReceipt], skipped: [SkippedSubject]) {
        let intent = try beginErasureJournalIntent(permissions: ["erase"])
        let result = try audited("erase", .delete, permission: "erase") { context in
            try StoredText.check(reason, "erasure reason")
            let (ids, file) = try resolveSelection(selection)
            var keep: [(line: Int, id: String)] = []
            var skipped: [SkippedSubject] = []
            for (line, id) in ids {
                if try store.exists(customerID: id) {
                    keep.append((line, id))
                } else {
                    skipped.append(SkippedSubject(line: line, erasedBefore: try store.erasure(pseudonym: try store.pseudonym(ofCustomerID: id))))
                }
            }
            guard !keep.isEmpty else {
                let lines = skipped.prefix(20).map { "line \($0.line): " + ($0.erasedBefore.map { "erased on \(Self.erasureText($0))" } ?? "no subject with this customer ID") }
                throw VaultError(.notFound, "\(file.map { $0 + ": " } ?? "")nothing to erase: " + lines.joined(separator: "; ") + (skipped.count > 20 ? "; ..." : ""),
                                 detail: "nothing to erase: \(skipped.count) customer IDs unknown or erased before")
            }
            let receipts = try store.erase(customerIDs: keep, file: file, reason: reason, audit: context)
            return (receipts, skipped)
        }
        try recordErasuresInJournal(done: "erased \(result.0.count) subject\(result.0.count == 1 ? "" : "s")", receipts: result.0, intent: intent)
        return result
    }

    // MARK: - Retention

    /// Applies `policy.yaml`'s retention rules as of `asOf` (unix seconds; default now).
    public func applyRetention(asOf: Int64?, dryRun: Bool) throws -> RetentionReport {
        let intent = dryRun ? nil : try beginErasureJournalIntent(permissions: ["retention"])
        let report = try audited("retention.apply", .delete, permission: "retention") { context in
            let now = asOf ?? Int64(Date().timeIntervalSince1970)
            if dryRun { return try store.applyRetention(policy.retention, asOf: now, dryRun: true, audit: context) }
            return try store.applyRetention(policy.retention, asOf: now, dryRun: false, audit: context)
        }
        if !dryRun && report.subjectsErased > 0 {
            // The report names no subjects: the journal catches up from the suppression list.
            try recordErasuresInJournal(done: "retention shredded \(report.subjectsErased) subjects", receipts: [], catchUp: true, intent: intent)
        }
        return report
    }

    // MARK: - Keys

    public struct RotationResult: Sendable {
        public var active: UInt32
        public var versions: [UInt32]
        public var rewrapped: Int
    }

    /// Adds a KEK version to the keyring file (atomic replace) and re-wraps every DEK under it.
    /// With `resume`, adds no version and finishes re-wrapping to the current active one (after
    /// an interrupted rotation).
    public func rotateKeys(resume: Bool, progress: ((Int) -> Void)? = nil) throws -> RotationResult {
        try audited("keys.rotate", .update, permission: "keys") { context in
            var ring = try loadKeyring()
            if !resume {
                _ = ring.addVersion()
                // A sealed keyring is sealed again by its token (which must be there: 69/503 otherwise).
                do throws(KeyringError) { ring = try ring.replace(at: configuration.keysPath) } catch {
                    throw Vault.keyringError(error)
                }
                try store.audit([context.record("keys.rotate", .update, detail: "new key version \(ring.active)")])
            }
            try store.adopt(keyring: ring)
            let n = try store.rewrapAll(batchSize: 10_000, audit: context, progress: progress)
            return RotationResult(active: ring.active, versions: ring.versions.filter { !ring.isRetired($0) }, rewrapped: n)
        }
    }

    /// Retires a KEK version; refused while any DEK is still wrapped under it.
    public func retireKey(version: UInt32) throws -> KeyStatus {
        try audited("keys.retire", .update, permission: "keys") { context in
            var ring = try loadKeyring()
            guard ring.versions.contains(version) else {
                throw VaultError(.configuration, "keyring \(configuration.keysPath) has no version \(version)")
            }
            guard version != ring.active else {
                throw VaultError(.configuration, "version \(version) is the active version; rotate first")
            }
            let left = try store.subjects(wrappedWith: version)
            guard left == 0 else {
                throw VaultError(.configuration, "\(left) subjects still have data keys wrapped with version \(version); run `profilectl keys rotate --resume` first")
            }
            do throws(KeyringError) {
                try ring.retire(version)
                ring = try ring.replace(at: configuration.keysPath)
            } catch {
                throw Vault.keyringError(error)
            }
            try store.markRetired(version, audit: context)
            var status = try store.keyStatus(keyring: ring)
            status.rootOfTrust = ring.custody
            return status
        }
    }

    public func keyStatus() throws -> KeyStatus {
        try require("keys")
        let ring = try loadKeyring()
        var status = try store.keyStatus(keyring: ring)
        status.rootOfTrust = ring.custody
        return status
    }
}
