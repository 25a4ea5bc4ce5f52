import Foundation
public import Logging
public import VaultCrypto
public import VaultPolicy
public import VaultStore
public import VaultAudit
import VaultPostgres

/// Who acts: the actor's name and the policy role it acts in. Both are recorded in the audit log.
public struct Actor: Sendable, Equatable {
    public var name: String
    public var role: String
    public init(name: String, role: String) {
        self.name = name
        self.role = role
    }
}

/// Where the store, keyring and policies are, and who acts.
public struct VaultConfiguration: Sendable {
    public var storePath: String
    public var keysPath: String
    public var policyDirectory: String
    public var actor: Actor
    /// Files no output may replace besides the store, the keyring and the policy files (which
    /// ``Vault/protectedFiles`` always names): `serve` adds its tokens file.
    public var protectedFiles: [ProtectedFile] = []
    /// The PKCS#11 URI of the key that seals the keyring (`--hsm`, `PROFILEVAULT_HSM_URI`);
    /// nil: the keyring must be a plain file keyring (a sealed one is refused without it).
    public var hsmURI: String?
    public init(storePath: String, keysPath: String, policyDirectory: String, actor: Actor) {
        self.storePath = storePath
        self.keysPath = keysPath
        self.policyDirectory = policyDirectory
        self.actor = actor
    }
}

/// The application service: the one `Vault` API every interface (CLI, HTTP) calls. It decides
/// whether this actor may do this for this purpose, and nothing below it can be reached
/// without passing through here.
public final class Vault: Sendable {
    public let configuration: VaultConfiguration
    public let schema: Schema
    public let policy: Policy
    let store: any StorageEngine
    let logger: Logger
    /// The request id every audit entry of this vault's calls carries; nil: each call makes its
    /// own (a random UUID). The HTTP service sets its request's id (``acting(as:requestID:)``),
    /// so the request log and the audit log join on it.
    public let requestID: String?
    /// The policy files with their SHA-256s, when this vault loaded them (always, through
    /// ``open(_:logger:checkPolicy:)`` and ``initialize(_:logger:)``).
    public let policyFiles: PolicyFiles?

    public var actor: Actor { configuration.actor }

    init(configuration: VaultConfiguration, schema: Schema, policy: Policy, store: any StorageEngine, logger: Logger,
         requestID: String? = nil, policyFiles: PolicyFiles? = nil) {
        self.configuration = configuration
        self.schema = schema
        self.policy = policy
        self.store = store
        self.logger = logger
        self.requestID = requestID
        self.policyFiles = policyFiles
    }

    /// The SHA-256s of the policy this vault runs under, for budget charges (see
    /// `ProfileStore.budgetAccountant(audit:policy:)`).
    var policyDigest: (sha256: String, schemaSHA256: String)? {
        policyFiles.map { ($0.sha256, $0.schemaSHA256) }
    }

    // MARK: - Loading configuration

    /// Loads `schema.yaml` and `policy.yaml`; a problem is a configuration error naming file,
    /// line and reason.
    public static func loadPolicies(directory: String) throws -> (schema: Schema, policy: Policy) {
        do {
            return try PolicyLoader.load(directory: directory)
        } catch {
            throw VaultError(.configuration, error.description)
        }
    }

    /// Loads a keyring, refusing one readable by group or others. Internal: a keyring's keys
    /// never leave the gate (an interface that held one could open the store's ciphertext).
    /// A sealed keyring (recognised by its content) is unsealed through `hsm`, the PKCS#11 URI
    /// of its sealing key (docs/keys-and-encryption.md); without one it is refused.
    static func loadKeyring(path: String, hsm: String? = nil) throws -> Keyring {
        let uri = try parseHSM(hsm)
        do {
            return try Keyring.load(path: path, hsm: uri)
        } catch {
            throw keyringError(error)
        }
    }

    /// The configuration's keyring (through its HSM URI when it has one).
    func loadKeyring() throws -> Keyring {
        try Self.loadKeyring(path: configuration.keysPath, hsm: configuration.hsmURI)
    }

    /// `--hsm` / `PROFILEVAULT_HSM_URI` parsed; nil when not given. A URI that does not parse is
    /// a usage error naming the attribute, never its value.
    static func parseHSM(_ text: String?) throws -> PKCS11URI? {
        guard let text, !text.isEmpty else { return nil }
        do { return try PKCS11URI.parse(text) } catch { throw keyringError(error) }
    }

    /// A keyring or key custody failure as the VaultError of its kind: a URI that does not
    /// parse 64; the HSM token away 69 (HTTP 503); a sealed keyring that does not open under
    /// its key 1 (integrity); everything else (file, permissions, module, PIN, key) 78.
    static func keyringError(_ e: KeyringError) -> VaultError {
        switch e.kind {
        case .invalidURI: VaultError(.usage, e.description)
        case .custodyUnavailable: VaultError(.unavailable, e.description)
        case .sealIntegrity: VaultError(.integrity, e.description)
        default: VaultError(.configuration, e.description)
        }
    }

    /// Creates a new store for the policies' schema and records the policy files as the first
    /// policy in force (audited as `policy.apply`).
    ///
    /// A `postgres://` location creates (or migrates) the schema on PostgreSQL as the role the
    /// location names, which becomes the owner, and grants `serviceRole` (default
    /// `profilevault_service`) what a service node needs (docs/deployment.md).
    public static func initialize(_ config: VaultConfiguration, serviceRole: String? = nil,
                                  logger: Logger = Logger(label: "profilevault")) throws -> Vault {
        let files = try loadPolicyFiles(directory: config.policyDirectory)
        let (schema, policy) = (files.schema, files.policy)
        // Stored as given by every engine (meta, the policy ledger): refused before anything is created.
        try StoredText.check(policy.version, "policy version")
        try StoredText.check(config.actor.name, "actor")
        let keyring = try loadKeyring(path: config.keysPath, hsm: config.hsmURI)
        let store: any StorageEngine
        if PostgresStore.isLocation(config.storePath) {
            store = try PostgresStore.create(url: config.storePath, keyring: keyring, schema: schema, schemaVersion: String(schema.version),
                                             policyVersion: policy.version, serviceRole: serviceRole)
            // Init again (to migrate the schema, or from a second host) keeps the policy in
            // force; a different one goes through `policy apply`, which shows its changes.
            if let latest = try store.latestPolicy(), latest.sha256 != files.sha256 || latest.schemaSHA256 != files.schemaSHA256 {
                try? store.close()
                throw VaultError(.configuration, "the store already runs under policy \(latest.version); apply these policy files with profilectl policy apply")
            }
        } else {
            guard serviceRole == nil else {
                throw VaultError(.usage, "--service-role is for a PostgreSQL store (--store postgres://...); a SQLite store has no roles")
            }
            store = try ProfileStore.create(path: config.storePath, keyring: keyring, schema: schema, policyVersion: policy.version)
        }
        let vault = Vault(configuration: config, schema: schema, policy: policy, store: store, logger: logger, policyFiles: files)
        let context = AuditContext(actor: config.actor.name, role: config.actor.role, requestID: UUID().uuidString.lowercased(),
                                   policyVersion: policy.version)
        _ = try vault.recordPolicy(files, context: context, initial: true)
        logger.info("store created", metadata: ["store": .string(config.storePath)])
        return vault
    }

    /// Opens an existing store with its keyring and policies. With `checkPolicy` (every
    /// command but `policy apply` and the read-only audit verification), the policy files must
    /// be the policy the store records as in force, else a configuration error (78) names the
    /// command that applies them.
    ///
    /// `asOwner`: a PostgreSQL store is opened as its owner's tool (the login role is not
    /// refused for holding more than a node may: `audit archive`, which only the owner may run).
    public static func open(_ config: VaultConfiguration, logger: Logger = Logger(label: "profilevault"), checkPolicy: Bool = true,
                            asOwner: Bool = false) throws -> Vault {
        let files = try loadPolicyFiles(directory: config.policyDirectory)
        let (schema, policy) = (files.schema, files.policy)
        let keyring = try loadKeyring(path: config.keysPath, hsm: config.hsmURI)
        let store: any StorageEngine = PostgresStore.isLocation(config.storePath)
            ? try PostgresStore.open(url: config.storePath, keyring: keyring, schema: schema, leastPrivilege: !asOwner)
            : try ProfileStore.open(path: config.storePath, keyring: keyring, schema: schema)
        if checkPolicy {
            do { try requireInForce(files, store: store) } catch { try? store.close(); throw error }
        }
        return Vault(configuration: config, schema: schema, policy: policy, store: store, logger: logger, policyFiles: files)
    }

    // MARK: - The gate

    /// Refuses (exit 77) unless the actor's role grants `permission`; the message names the
    /// roles that do. Messages say "the policy", never the policy file's path: they also go to
    /// HTTP clients, who must not learn the server's paths.
    public func require(_ permission: String) throws {
        let role = actor.role
        guard policy.roles[role] != nil else {
            throw VaultError(.denied, "role \(role) is not defined in the policy")
        }
        guard policy.role(role, allows: permission) else {
            let granting = policy.roles.filter { $0.value.contains(permission) }.keys.sorted()
            let hint = granting.isEmpty ? "no role of the policy has it" : "it needs role \(granting.joined(separator: " or ")) (--role)"
            throw VaultError(.denied, "role \(role) may not \(permission); \(hint)")
        }
    }

    /// The declared purpose `name`; an undeclared one is refused (77). The CLI's message quotes
    /// the name when it is short printable text (at most 64 characters of letters, digits and
    /// `_ . -`); the recorded detail never does: a mistyped purpose may be anything.
    func purpose(_ name: String) throws -> Purpose {
        guard let p = policy.purpose(name) else {
            let declared = "(purposes: \(policy.purposeOrder.joined(separator: ", ")))"
            let shown = Self.printableName(name).map { "purpose \($0)" } ?? "the purpose given"
            throw VaultError(.denied, "\(shown) is not declared in the policy \(declared)",
                             detail: "undeclared purpose \(declared)")
        }
        return p
    }

    /// `name` when it is at most 64 characters of ASCII letters, digits and `_ . -`, else nil.
    static func printableName(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= 64,
              name.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x5F || $0 == 0x2E || $0 == 0x2D })
        else { return nil }
        return name
    }

    // MARK: - Operations

    public func status() throws -> StoreStatus { try store.status() }

    /// Runs an operation under the audit log: the permission check, the body (which appends
    /// its own `ok` entries inside its transactions), and on any failure one `denied` or
    /// `error` entry saying why. Every entry of one call shares a request id: ``requestID`` when
    /// set, else a fresh one. Every entry carries the version of the policy in force.
    ///
    /// `subjectID`: the customer the call names. The failure entry then carries its pseudonym
    /// (the store's keyed pseudonym function, never the ID), so a refused attempt on a customer
    /// is found by `audit export --subject` like a granted one.
    func audited<T>(_ action: String, _ activity: AuditActivity, permission: String?, purpose: String? = nil,
                    subjectID: String? = nil, _ body: (AuditContext) throws -> T) throws -> T {
        let context = AuditContext(actor: actor.name, role: actor.role, requestID: requestID ?? UUID().uuidString.lowercased(),
                                   policyVersion: policy.version)
        do {
            if let permission { try require(permission) }
            return try body(context)
        } catch {
            let e = error as? VaultError ?? VaultError(.internalFailure, "\(error)")
            let outcome: AuditOutcome = e.kind == .denied ? .denied : .error
            // The entry records the error's `detail` (no input value, no server directory), and a
            // purpose only when the policy declares it: an undeclared one is input, recorded as null.
            let recordedPurpose = purpose.flatMap { policy.purpose($0) != nil ? $0 : nil }
            let subject = subjectID.flatMap { try? store.pseudonym(ofCustomerID: $0) }
            do {
                try store.audit([context.record(action, activity, purpose: recordedPurpose, subject: subject, outcome: outcome, detail: e.detail)])
            } catch {
                logger.error("could not append the audit entry for a failed operation", metadata: ["action": .string(action)])
            }
            throw e
        }
    }

    // MARK: - Output files

    /// The files no output of this vault may replace, even with `--force` (SPEC §12): the
    /// keyring, the store with its `-wal` and `-shm`, `schema.yaml` and `policy.yaml`, the
    /// policy's declared catalogs, and
    /// the configuration's ``VaultConfiguration/protectedFiles`` (the tokens file of `serve`).
    public var protectedFiles: [ProtectedFile] {
        [ProtectedFile.keyring(configuration.keysPath)] + ProtectedFile.store(configuration.storePath)
            + ProtectedFile.policy(directory: configuration.policyDirectory) + catalogFiles + configuration.protectedFiles
            + erasureJournalFiles
    }

    /// The catalog files the policy declares (`catalogs:`): an output over one would change
    /// what the next training job reads as public item names.
    var catalogFiles: [ProtectedFile] {
        let dir = policy.directory.hasSuffix("/") ? policy.directory : policy.directory + "/"
        return policy.catalogs.values.sorted { $0.name < $1.name }.map { ProtectedFile(dir + $0.path, "a catalog file of the policy") }
    }

    /// Opens an output file (``OutputFile``): new and 0600 unless `force`, never one of
    /// ``protectedFiles`` (exit 73 otherwise). Every CLI output goes through here.
    public func createOutput(_ path: String, force: Bool, what: String = "the output file") throws -> OutputFile {
        try OutputFile(path: path, force: force, protecting: protectedFiles, what: what)
    }

    /// Ingests a profile file (CSV or JSON Lines), as `profilectl ingest profiles`.
    public func ingestProfiles(path: String, options: IngestOptions) throws -> IngestReport {
        try ingestProfiles(from: .file(path), options: options)
    }

    /// Ingests profiles held in memory, one JSON object per record (an HTTP body's array):
    /// nothing is written anywhere but the store. Errors name `record N` (from 1) and the field.
    public func ingestProfiles(records: [JSONValue], options: IngestOptions = IngestOptions()) throws -> IngestReport {
        try ingestProfiles(from: .objects(records), options: options)
    }

    /// Ingests profiles from a file or from records in memory: every record is validated before
    /// any is written (unless `options.skipInvalid`).
    public func ingestProfiles(from source: RecordSource, options: IngestOptions) throws -> IngestReport {
        try audited("ingest.profiles", .create, permission: "ingest") { context in
            var o = options
            o.protectedFiles += protectedFiles
            o.audit = context
            return try store.ingestProfiles(source, options: o)
        }
    }

    /// Ingests an events file (CSV or JSON Lines), as `profilectl ingest events`.
    public func ingestEvents(path: String, options: IngestOptions) throws -> IngestReport {
        try ingestEvents(from: .file(path), options: options)
    }

    /// Ingests events held in memory, one JSON object per record: nothing is written anywhere
    /// but the store. Errors name `record N` (from 1) and the field.
    public func ingestEvents(records: [JSONValue], options: IngestOptions = IngestOptions()) throws -> IngestReport {
        try ingestEvents(from: .objects(records), options: options)
    }

    /// Ingests events from a file or from records in memory.
    public func ingestEvents(from source: RecordSource, options: IngestOptions) throws -> IngestReport {
        try audited("ingest.events", .create, permission: "ingest") { context in
            var o = options
            o.protectedFiles += protectedFiles
            o.audit = context
            return try store.ingestEvents(source, options: o)
        }
    }

    /// The decrypted profile of a subject for a purpose that may read PII: the PII fields its
    /// `may_read_pii` covers and the attributes its `may_read` covers, nothing else.
    public func get(customerID: String, purpose name: String) throws -> ProfileView {
        try audited("get", .read, permission: "get", purpose: name, subjectID: customerID) { context in
            let p = try purpose(name)
            let fields = schema.fields.filter { p.mayRead($0) }
            guard fields.contains(where: \.pii) else {
                throw VaultError(.denied, "purpose \(name) may not read PII (no may_read_pii in the policy); get needs a purpose that may")
            }
            // One pseudonym and one read transaction: existence and consent first, so nothing is
            // decrypted for a read that will be refused.
            let pseudonym = try store.pseudonym(ofCustomerID: customerID)
            let view: ProfileView
            switch try store.readProfile(pseudonym: pseudonym, fields: Set(fields.map(\.name)),
                                         consentPurpose: p.legalBasis == .consent ? p.name : nil) {
            case .notFound:
                throw subjectNotFound(customerID: customerID)
            case .consentMissing:
                throw VaultError(.denied, "purpose \(p.name) needs the subject's consent, which is not active")
            case .restricted:
                throw VaultError(.denied, Self.restrictedSubject)
            case .found(let v):
                view = v
            }
            // An objection (Art. 21) to a legitimate_interest purpose refuses its reads as a
            // revoked consent would (checked only for such a purpose).
            if let o = Self.objectionPurpose(p), try store.objecting(pseudonyms: [pseudonym], purpose: o).contains(pseudonym) {
                throw VaultError(.denied, "the subject objected to purpose \(p.name) (GDPR Art. 21)")
            }
            // The read is released only once its audit entry is committed.
            try store.audit([context.record("get", .read, purpose: name, subject: pseudonym,
                                            fields: [schema.subjectIDField] + view.fields.map(\.name))])
            return view
        }
    }

    public enum LookupKind: String, Sendable { case email, phone }

    /// Blind-index lookup by e-mail or phone.
    public func find(_ kind: LookupKind, value: String) throws -> [String] {
        try audited("find", .read, permission: "get") { context in
            let category = kind == .email ? "user.contact.email" : "user.contact.phone_number"
            guard let field = store.lookupField(category: category) else {
                throw VaultError(.configuration, "\(schema.file): no lookup field with category \(category)")
            }
            let ids = try store.find(field: field.name, value: value)
            guard !ids.isEmpty else {
                throw VaultError(.notFound, "no subject with this \(kind.rawValue)")
            }
            try store.audit(try ids.map {
                context.record("find", .read, subject: try store.pseudonym(ofCustomerID: $0), fields: [field.name, schema.subjectIDField])
            })
            return ids
        }
    }

    // MARK: - Audit

    /// Exports the audit log (role permission `audit`); the export itself is audited first,
    /// so it appears in the file it writes. The file is an ``OutputFile`` (new and 0600 unless
    /// `force`, never one of ``protectedFiles``), opened before anything is recorded.
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat, to path: String,
                            force: Bool = false) throws -> (entries: Int, head: String) {
        try audited("audit.export", .read, permission: "audit") { context in
            let file = try OutputFile(path: path, force: force, protecting: store.ownFiles + protectedFiles, what: "the audit export")
            try store.audit([context.record("audit.export", .read, detail: "format \(format.rawValue)")])
            return try store.exportAudit(sinceMillis: sinceMillis, untilMillis: untilMillis, format: format, to: file)
        }
    }

    /// The audit export in memory (role permission `audit`; the HTTP service's `GET
    /// /v1/audit`): audited first like the file form, so it holds its own entry; no file is
    /// written anywhere.
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat) throws -> (bytes: [UInt8], entries: Int, head: String) {
        try audited("audit.export", .read, permission: "audit") { context in
            try store.audit([context.record("audit.export", .read, detail: "format \(format.rawValue)")])
            return try store.exportAudit(sinceMillis: sinceMillis, untilMillis: untilMillis, format: format)
        }
    }

    /// What `audit export` selects: a time range, entries after a sequence number, one
    /// subject's entries; nested OCSF objects unless `flat`.
    public struct AuditExportRequest: Sendable {
        public var format: AuditExportFormat
        public var sinceMillis: Int64?
        public var untilMillis: Int64?
        public var afterSequence: Int64?
        /// The customer ID whose entries to select (resolved to its pseudonym, audited).
        public var subjectID: String?
        public var flat: Bool
        /// Only entries with a sequence number at or below this (a page of the console's audit
        /// page); nil: up to the newest.
        public var throughSequence: Int64?
        public init(format: AuditExportFormat = .jsonl, sinceMillis: Int64? = nil, untilMillis: Int64? = nil,
                    afterSequence: Int64? = nil, subjectID: String? = nil, flat: Bool = false, throughSequence: Int64? = nil) {
            self.throughSequence = throughSequence
            self.format = format
            self.sinceMillis = sinceMillis
            self.untilMillis = untilMillis
            self.afterSequence = afterSequence
            self.subjectID = subjectID
            self.flat = flat
        }
    }

    /// The export's own entries, written before it is read (so it appears in its own file):
    /// with a subject, first `audit.resolve_subject` (the auditor turned a customer ID into its
    /// pseudonym; the entry carries the pseudonym), then `audit.export`. Returns the store's
    /// options.
    func recordAuditExport(_ request: AuditExportRequest, context: AuditContext) throws -> AuditExportOptions {
        if let after = request.afterSequence, after < 0 { throw VaultError(.usage, "--after-seq must be 0 or more") }
        if let through = request.throughSequence, through < 0 { throw VaultError(.usage, "the last sequence number must be 0 or more") }
        var records: [AuditRecord] = []
        var subject: [UInt8]?
        if let id = request.subjectID {
            guard !Normalization.customerID(id).isEmpty else { throw VaultError(.usage, "--subject: the customer ID is empty") }
            subject = try store.pseudonym(ofCustomerID: id)
            records.append(context.record("audit.resolve_subject", .read, subject: subject, detail: "customer ID resolved to its pseudonym for an audit export"))
        }
        var detail = "format \(request.format.rawValue)"
        if request.format == .jsonl { detail += request.flat ? ", flat" : ", nested" }
        if let after = request.afterSequence { detail += ", after entry \(after)" }
        if let through = request.throughSequence { detail += ", through entry \(through)" }
        if subject != nil { detail += ", one subject's entries" }
        records.append(context.record("audit.export", .read, detail: detail))
        try store.audit(records)
        return AuditExportOptions(format: request.format, sinceMillis: request.sinceMillis, untilMillis: request.untilMillis,
                                  afterSequence: request.afterSequence, subject: subject, nested: !request.flat,
                                  throughSequence: request.throughSequence)
    }

    /// `audit export` (role permission `audit`) into a new file (``OutputFile``: new and 0600
    /// unless `force`, never one of ``protectedFiles``; opened before anything is recorded).
    public func exportAudit(_ request: AuditExportRequest, to path: String, force: Bool = false) throws -> AuditExportResult {
        try audited("audit.export", .read, permission: "audit", subjectID: request.subjectID) { context in
            let file = try OutputFile(path: path, force: force, protecting: store.ownFiles + protectedFiles, what: "the audit export")
            let options = try recordAuditExport(request, context: context)
            return try store.exportAudit(options, to: file)
        }
    }

    /// `audit export` in memory (the HTTP service's `GET /v1/audit`).
    public func exportAudit(_ request: AuditExportRequest) throws -> (bytes: [UInt8], entries: Int, head: String, lastSequence: Int64) {
        try audited("audit.export", .read, permission: "audit", subjectID: request.subjectID) { context in
            try store.exportAudit(try recordAuditExport(request, context: context))
        }
    }

    /// `audit report` (role permission `audit`): counts of the entries between `since` and
    /// `until` per actor, action, purpose and outcome, the denied attempts, and epsilon spent
    /// per purpose. Audited first (`audit.report`), so a report whose range reaches now counts
    /// its own entry.
    public func auditReport(sinceMillis: Int64?, untilMillis: Int64?) throws -> AuditReport {
        try audited("audit.report", .read, permission: "audit") { context in
            if let s = sinceMillis, let u = untilMillis, s > u { throw VaultError(.usage, "--since is after --until") }
            try store.audit([context.record("audit.report", .read, detail: "report")])
            return try store.auditReport(sinceMillis: sinceMillis, untilMillis: untilMillis)
        }
    }

    /// Appends every audit entry this process commits to `path`, one JSON line each (the
    /// export's nested line): `serve --audit-stream FILE`.
    public func streamAudit(to path: String) throws {
        try store.streamAudit(to: path, protecting: protectedFiles)
    }

    /// `audit archive --before DATE --out FILE` (role permission `audit`, the auditor's: the
    /// same right that reads and exports the whole log; nothing else is read or changed).
    /// `before` must be a past time (65 otherwise). The file is an ``OutputFile`` opened first
    /// (new, 0600, never one of ``protectedFiles``; refused, 73, when it exists, with nothing
    /// archived); the engine writes and fsyncs it before it deletes anything
    /// (``StorageEngine/archiveAudit(before:to:audit:)``), and records `audit.archive` in the
    /// live chain with the range and the archive's head.
    public func archiveAudit(before: Int64, to path: String) throws -> AuditArchiveResult {
        try audited("audit.archive", .delete, permission: "audit") { context in
            let now = AuditLog.nowMillis
            guard before <= now else {
                throw VaultError(.invalidInput, "--before \(AuditLog.isoMillis(before)) is in the future: only entries before a past time can be archived",
                                 detail: "--before is in the future")
            }
            let file = try OutputFile(path: path, force: false, protecting: store.ownFiles + protectedFiles, what: "the audit archive", replaceable: false)
            return try store.archiveAudit(before: before, to: file, audit: context)
        }
    }

    /// The last entry moved to an audit archive (nil: none; role permission `audit`).
    public func auditArchivedThrough() throws -> Int64? {
        try require("audit")
        return try store.archivedThrough()
    }

    /// Verifies the store's log with the keyring's audit key (role permission `audit`).
    public func verifyAudit(expectHead: String?) throws -> AuditVerification {
        try require("audit")
        return try store.verifyAudit(expectHead: expectHead)
    }

    /// The newest signed head of the audit log, verified before it is shown (role permission
    /// `audit`); nil for an empty log. An auditor publishes it outside the store: a later
    /// `audit verify --expect-head` against it detects a tail truncated to an older checkpoint.
    public func signedAuditHead() throws -> AuditCheckpoint? {
        try require("audit")
        return try store.signedAuditHead()
    }

    /// Appends every new signed head to `path` (one JSON line each), starting with the current
    /// one: `serve --publish-heads FILE`.
    public func publishAuditHeads(to path: String) throws {
        try store.publishAuditHeads(to: path, protecting: protectedFiles)
    }

    /// Whether the audit log's head is covered by a checkpoint that verifies (the health check):
    /// nil when it is, else why not.
    public func auditHeadProblem() -> String? {
        do {
            _ = try store.signedAuditHead()
            return nil
        } catch let e as VaultError where e.kind == .integrity {
            return e.message
        } catch {
            return "the audit log could not be read"
        }
    }

    /// The audit public key, PEM (needs no role: it is public).
    public var auditPublicKeyPEM: String { store.auditPublicKey.pemRepresentation }
}
