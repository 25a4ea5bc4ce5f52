public import DifferentialPrivacy
public import VaultAudit
public import VaultCrypto
public import VaultPolicy

/// The seam between the `Vault` gate and a storage engine, named after what the gate needs:
/// subjects and their sealed PII, events, the consent ledger and state, erasure and retention,
/// key custody of the wrapped data keys, the budget ledger, the audit chain with its signed
/// checkpoints, the policy ledger, and the aggregate source of the DP layer.
///
/// `ProfileStore` (SQLite, the embedded default) implements it; `Vault` holds an
/// `any StorageEngine` and calls nothing else of the store. Every method is synchronous:
/// `Vault` is, and an engine on an asynchronous driver waits on its own event loops, never on
/// the caller's (the HTTP service calls the vault from dispatch threads, the CLI from its main
/// thread).
///
/// What an engine must keep, whatever its storage (the conformance tests check these on each):
/// - a subject's PII only as AES-256-GCM ciphertext under the subject's own data key, wrapped
///   by the keyring; customer IDs only as keyed pseudonyms and blind indexes;
/// - erasure deletes the wrapped key and the subject's rows in one transaction, with the
///   sealed texts of its register requests, and names its receipt on the suppression list;
/// - the budget ledger never grants past a limit, whatever runs concurrently;
/// - the audit chain is one chain: each append verifies the head it extends, and an operation's
///   entries commit with its effects;
/// - aggregates are exact integer sums over consenting subjects (`AggregateSource`), equal to
///   those of the reference engine before noise.
public protocol StorageEngine: AnyObject, Sendable {
    /// Where the engine keeps the data, as the configuration named it (a file path, a URL).
    var location: String { get }
    var schema: Schema { get }
    /// The files an output may never replace (the SQLite file and its -wal/-shm; none for a
    /// server database).
    var ownFiles: [ProtectedFile] { get }

    // MARK: Life
    func close() throws
    /// Moves what the engine buffers into its durable form (SQLite: the WAL into the file).
    func checkpoint() throws
    func startBackgroundCheckpoints(every interval: Double) throws
    func status() throws -> StoreStatus

    // MARK: Subjects, PII and events
    func pseudonym(ofCustomerID id: String) throws -> [UInt8]
    func exists(customerID: String) throws -> Bool
    func lookupField(category: String) -> FieldSpec?
    func find(field: String, value: String) throws -> [String]
    func profile(customerID: String, fields wanted: Set<String>) throws -> ProfileView?
    func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, consentPurpose: String?) throws -> ProfileRead
    func rawRows(customerID: String) throws -> RawSubjectRows?
    func ingestProfiles(_ source: RecordSource, options: IngestOptions) throws -> IngestReport
    func ingestEvents(_ source: RecordSource, options: IngestOptions) throws -> IngestReport
    func subjectItems(customerIDs: [String], kind: String, consentPurpose: String?, segmentAttribute: String?) throws -> [SubjectItems]
    /// `score`: the selected subjects' feature values and whether each may be served under the
    /// purpose (SubjectFeatures.swift), from one snapshot; only served subjects' rows are read.
    func subjectFeatures(_ selection: FeatureSelection, features: [FeatureColumn], consentPurpose: String?,
                         objectionPurpose: String?) throws -> [SubjectFeatureRow]
    /// The decrypted customer IDs of these pseudonyms (a pseudonym without a subject is left out).
    func customerIDs(pseudonyms: [[UInt8]]) throws -> [[UInt8]: String]

    // MARK: Consent, access, erasure, retention
    func setConsent(_ ids: [(line: Int, id: String)], file: String?, purpose: String, granted: Bool,
                    source: String?, policyVersion: String, audit: AuditContext) throws -> Int
    func hasConsent(customerID: String, purpose: String) throws -> Bool
    func consentState(customerID: String) throws -> [String: ConsentState]?
    func consentHistory(customerID: String) throws -> [ConsentEntry]?
    func accessExport(customerID: String) throws -> AccessExport?
    func erase(customerIDs: [(line: Int, id: String)], file: String?, reason: String, audit: AuditContext) throws -> [ErasureReceipt]
    func applyRetention(_ rules: [RetentionRule], asOf: Int64, dryRun: Bool, audit: AuditContext) throws -> RetentionReport
    /// A retention dry run's detail for one rule (reads only): how many events of `kinds` have
    /// a time before `cutoff` and, when `subjects`, the pseudonyms of the subjects they belong
    /// to (each once, in row order).
    func retentionEventMatches(kinds: [String], before cutoff: Int64, subjects: Bool) throws -> (events: Int, subjects: [[UInt8]])
    /// The pseudonyms of the subjects whose last activity is before `cutoff`, in row order (reads only).
    func inactiveSubjects(before cutoff: Int64) throws -> [[UInt8]]

    // MARK: Data-subject rights (Rights.swift): restriction, objection, consent import
    func setRestriction(customerID: String, restricted: Bool, audit: AuditContext) throws -> Bool
    func restricted(customerID: String) throws -> Bool?
    func objecting(pseudonyms: [[UInt8]], purpose: String) throws -> Set<[UInt8]>
    func importConsent(_ rows: [ConsentImportRow], file: String?, policyVersion: String, audit: AuditContext) throws -> Int
    func rectify(customerID: String, values: [(FieldSpec, FieldValue)], audit: AuditContext) throws -> [String]
    // MARK: The request register (RequestRegister.swift)
    /// Records a request about an existing subject (notFound otherwise): customer ID and note
    /// sealed, audited (`requests.open`) in the same transaction.
    func openRequest(_ request: NewRequest, audit: AuditContext) throws -> RegisterEntry
    /// The register's metadata, oldest due date first; nil status: every request.
    func requests(status: RequestStatus?) throws -> [RegisterEntry]
    func request(id: String) throws -> RegisterEntry?
    /// The request's customer ID, decrypted; nil for an unknown id or once the subject was erased.
    func requestCustomerID(id: String) throws -> String?
    /// Extends, denies or fulfils an open request (65 when closed, or extended twice), audited.
    func changeRequest(id: String, _ change: RequestChange, audit: AuditContext) throws -> RegisterEntry
    /// The suppression list's record of an erased subject (when, why, the receipt), by pseudonym.
    func erasure(pseudonym: [UInt8]) throws -> ErasureRecord?

    // MARK: Key custody
    func adopt(keyring: Keyring) throws
    func rewrapAll(batchSize: Int, audit: AuditContext, progress: ((Int) -> Void)?) throws -> Int
    func keyStatus(keyring: Keyring) throws -> KeyStatus
    func subjects(wrappedWith version: UInt32) throws -> Int
    func markRetired(_ version: UInt32, audit: AuditContext) throws
    /// The MAC binding a model artifact to this store (its random id and the keyring).
    func modelArtifactMAC(_ message: [UInt8]) -> [UInt8]

    // MARK: The DP layer
    var aggregateSource: any AggregateSource { get }
    func budgetAccountant(audit: AuditRecord, policy: (sha256: String, schemaSHA256: String)?) -> any BudgetAccountant
    func budgetState(purpose: String, limit: Double, periodSeconds: Int) throws -> BudgetState
    func budgetState(purpose: String, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState

    // MARK: The release cache (ReleaseCache.swift)
    /// The keyed digest of a query's canonical form (HMAC-SHA256 under the release-digest key).
    func releaseDigest(_ canonical: [UInt8]) -> [UInt8]
    /// The release stored for `digest` in the purpose's current window at the current
    /// population epoch, opened and verified (integrity error when it does not verify); one
    /// primary-key lookup, in one read with the window's start and the epoch (a miss carries both).
    func cachedRelease(digest: [UInt8], purpose: String, periodSeconds: Int) throws -> ReleaseLookup
    /// Seals and stores (or replaces) a release charged in the window starting at `periodStart`
    /// and computed at population epoch `epoch`, only if `epoch` is still current in the storing
    /// transaction (false: a population change committed since the lookup, nothing stored);
    /// drops the purpose's releases of other windows or epochs.
    @discardableResult
    func storeRelease(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int, epoch: Int64, payload: [UInt8]) throws -> Bool
    /// The current population epoch (nil: the store's epoch row is missing or altered; the
    /// cache is then bypassed). `--fresh` reads it before computing, so its store is conditional.
    func populationEpoch() throws -> Int64?
    /// Drops every cached release; returns how many.
    @discardableResult func clearReleaseCache() throws -> Int

    // MARK: The audit chain
    var auditPublicKey: Ed25519PublicKey { get }
    func audit(_ records: [AuditRecord]) throws
    func signedAuditHead() throws -> AuditCheckpoint?
    func publishAuditHeads(to path: String, protecting: [ProtectedFile]) throws
    func verifyAudit(expectHead: String?) throws -> AuditVerification
    /// `audit export` (a time range, a subject's selection, `--after-seq`, nested or flat) into
    /// `out`, from one snapshot, with the signed head; the `exportAudit` forms below wrap it.
    func writeAuditExport(_ options: AuditExportOptions, to out: any AuditExportSink) throws -> AuditExportResult
    /// `audit report`: counts over the entries in a time range, streamed.
    func auditReport(sinceMillis: Int64?, untilMillis: Int64?) throws -> AuditReport
    /// `serve --audit-stream FILE`: every entry this process commits, one JSON line each.
    func streamAudit(to path: String, protecting: [ProtectedFile]) throws
    /// `audit archive`: moves the entries before `before` (a prefix of the chain ending under a
    /// signed checkpoint) into `file` (a signed export, committed first), keeps their signed
    /// anchor and records an `audit.archive` entry (AuditArchive.swift).
    func archiveAudit(before: Int64, to file: OutputFile, audit: AuditContext) throws -> AuditArchiveResult
    /// The last archived entry (nil: nothing archived): older entries are in audit archives.
    func archivedThrough() throws -> Int64?

    // MARK: The erasure journal (ErasureJournal.swift)
    /// Every erasure the suppression list records, with the store's id and audit head now.
    func erasureJournal() throws -> ErasureJournal
    /// The journal's bytes, each line MACed under the keyring's erasure-journal key.
    func sealErasureJournal(_ journal: ErasureJournal) -> [UInt8]
    /// Reads and verifies a journal of this store (integrity error, exit 1, otherwise).
    func openErasureJournal(_ bytes: [UInt8], label: String) throws -> ErasureJournal

    // MARK: The policy ledger
    func latestPolicy() throws -> PolicyRecord?
    func policyHistory() throws -> [PolicyRecord]
    func recordPolicy(_ record: PolicyRecord, previous: Int64?, periods: [String: Int], audit: AuditRecord) throws -> PolicyRecord
}

extension ProfileStore: StorageEngine {
    public var location: String { path }
}

/// The audit export's forms, the same on every engine (each writes ``StorageEngine/writeAuditExport(_:to:)``).
extension StorageEngine {
    /// The export of a time range into a file already opened: committed on success, discarded
    /// (only what it created is removed: the new file, or the temporary file of a replacement)
    /// on any failure.
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat, to file: OutputFile) throws -> (entries: Int, head: String) {
        let r = try exportAudit(AuditExportOptions(format: format, sinceMillis: sinceMillis, untilMillis: untilMillis), to: file)
        return (r.entries, r.head)
    }

    /// The audit export written to memory (the HTTP service's `GET /v1/audit`: no file).
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat) throws -> (bytes: [UInt8], entries: Int, head: String) {
        let r = try exportAudit(AuditExportOptions(format: format, sinceMillis: sinceMillis, untilMillis: untilMillis))
        return (r.bytes, r.entries, r.head)
    }

    /// The export of `options` into a file opened already (committed on success, discarded on
    /// failure). `lastSequence`: the slice's last entry, from which the next `--after-seq`
    /// continues.
    public func exportAudit(_ options: AuditExportOptions, to file: OutputFile) throws -> AuditExportResult {
        try file.committing { try writeAuditExport(options, to: $0) }
    }

    /// The export of `options` in memory.
    public func exportAudit(_ options: AuditExportOptions) throws -> (bytes: [UInt8], entries: Int, head: String, lastSequence: Int64) {
        let sink = MemoryExportSink()
        let r = try writeAuditExport(options, to: sink)
        return (sink.bytes, r.entries, r.head, r.lastSequence)
    }
}
