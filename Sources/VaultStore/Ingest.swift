import Foundation
public import GRDB
public import VaultCrypto
public import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

/// What an ingest did.
public struct IngestReport: Sendable, Equatable {
    public var inserted = 0
    public var updated = 0
    /// Records identical to the subject's stored profile: nothing written, its last activity kept.
    public var unchanged = 0
    public var rejected = 0
    public var seconds = 0.0
    public init() {}
}

/// Progress of a running ingest, for a terminal display.
public struct IngestProgress: Sendable {
    public var phase: String
    public var records: Int
    public var bytes: Int
    public var totalBytes: Int
}

public struct IngestOptions: Sendable {
    public var format: InputFormat?
    /// Write the good records and report the bad ones instead of refusing the whole file.
    public var skipInvalid = false
    /// Where rejected records go (with `skipInvalid`): CSV of line, field, reason. A new file
    /// (exit 73 if it exists) unless `rejectsForce`; never the store or `protectedFiles`.
    public var rejectsPath: String?
    /// Replace an existing rejects file (`--force`).
    public var rejectsForce = false
    /// Files the rejects file may never be, besides the store's own (the keyring, the policy
    /// files, the tokens file; ``Vault`` fills it in).
    public var protectedFiles: [ProtectedFile] = []
    /// The CSV field separator (one ASCII byte other than `"`, CR and LF): `,` by default, `;`
    /// for files such as the bank-marketing data set. Ignored for JSON Lines.
    public var delimiter: UInt8 = UInt8(ascii: ",")
    /// Records per transaction. A transaction dirties the random-key index pages it touches
    /// (pseudonym key, blind indexes) once, so larger ones write far less WAL per record; the
    /// records reach the writer in chunks of `pipelineChunk`, so memory does not grow with it.
    /// 1,000,000 profiles, one run each (`pvbench vault`): 16,384: 23,600/s; 65,536: 25,600/s;
    /// 131,072: 26,800/s, peak RSS 136 MB for all three. 65,536 holds the write lock about 2.5 s
    /// per commit. docs/benchmarks.md.
    public static let defaultBatchSize = 65_536
    /// While the validation pass still runs, the first transaction may grow to this many
    /// records before the writer waits for it (it commits only after validation passes). The
    /// validator runs at a lower priority and takes about 9 s for 1,000,000 profiles on 2 cores,
    /// by when the writer has written about 400,000.
    static let maxHeldForValidation = 524_288
    /// Records the parser hands the writer at a time (a transaction arrives in such chunks).
    static let pipelineChunk = 4_096
    public var batchSize = IngestOptions.defaultBatchSize
    /// How far the first transaction may grow while the validation pass still runs (tests set
    /// it to 0 for transaction boundaries that do not depend on timing).
    var holdForValidation = IngestOptions.maxHeldForValidation
    /// Whether the writer uses a `SubjectFilter` (nil: only for large inputs; tests force it).
    var subjectFilter: Bool?
    public var progress: (@Sendable (IngestProgress) -> Void)?
    /// Who ingests: each committed batch appends one audit entry with its counts, in the
    /// batch's own transaction. Nil only for benchmarks and tests of the bare store.
    public var audit: AuditContext?
    /// Accept customer IDs on the suppression list (erased before) as new subjects.
    public var allowReingest = false
    public init() {}
}

/// A profile that passed validation: normalised customer ID and one value per schema field.
package struct ValidProfile: Sendable {
    package var line: Int
    package var customerID: String
    package var values: [FieldValue]
}

/// A profile ready to write: everything sensitive is already sealed or keyed.
package struct SealedProfile: Sendable {
    package var line: Int
    package var pseudonym: [UInt8]
    package var kekVersion: UInt32
    package var wrappedDEK: [UInt8]
    /// The `pii` row's values in `PIIColumns.valueColumns` order: ciphertexts, then blind-index
    /// MACs; nil where the field is empty.
    package var piiRow: [[UInt8]?]
    package var attributes: [FieldValue]
    /// The record's keyed digest (``ProfileSealer/digest(_:)``): equal to the stored one, the
    /// record is unchanged and nothing is written.
    package var digest: [UInt8]
    /// The last activity the record names (the schema's `last_activity` field), unix seconds.
    package var lastActivity: Int64?
    package init(line: Int, pseudonym: [UInt8], kekVersion: UInt32, wrappedDEK: [UInt8], piiRow: [[UInt8]?], attributes: [FieldValue],
                 digest: [UInt8] = [], lastActivity: Int64? = nil) {
        self.digest = digest
        self.lastActivity = lastActivity
        self.line = line
        self.pseudonym = pseudonym
        self.kekVersion = kekVersion
        self.wrappedDEK = wrappedDEK
        self.piiRow = piiRow
        self.attributes = attributes
    }
}

/// One chunk of a transaction's sealed profiles (the parser hands a transaction to the writer
/// in chunks), with the lines it covers and how many of them were rejected (with `--skip-invalid`).
struct ProfileBatch: Sendable {
    var profiles: [SealedProfile] = []
    var rejected = 0
    var firstLine = 0
    var lastLine = 0
    /// The last chunk of its transaction (the pipeline hands a transaction over in chunks).
    var closesTransaction = false
}

/// Inserted, updated and unchanged counts, added to by the writer thread.
package final class WriterCounts: @unchecked Sendable {
    // `@unchecked Sendable`: the fields are guarded by `lock`.
    private let lock = NSLock()
    private var inserted = 0, updated = 0, unchanged = 0
    package init() {}
    package func add(inserted i: Int, updated u: Int, unchanged n: Int = 0) {
        lock.lock(); inserted += i; updated += u; unchanged += n; lock.unlock()
    }
    package var value: (Int, Int) {
        lock.lock(); defer { lock.unlock() }
        return (inserted, updated)
    }
    package var unchangedCount: Int {
        lock.lock(); defer { lock.unlock() }
        return unchanged
    }
}

/// Per-thread crypto state for sealing profiles: OpenSSL contexts are reused across records
/// but never shared between threads. Shared by both engines: it takes the keys and the PII
/// column layout, not a store.
package final class ProfileSealer {
    let schema: Schema
    let pseudonymKey: HMACSHA256Key
    /// Keys the record digests (``digest(_:)``).
    let digestKey: HMACSHA256Key
    let kek: AESGCMKey
    let kekVersion: UInt32
    let blindKeys: [Int: HMACSHA256Key]   // by schema field index
    /// By schema field index: the field's position in the `pii` row (ciphertext) or -1, and its
    /// MAC's position or -1.
    let ciphertextSlot: [Int]
    let macSlot: [Int]
    let rowWidth: Int
    /// The schema index of the `last_activity` field, if the schema names one.
    let lastActivityIndex: Int?

    convenience init(store: ProfileStore) throws {
        try self.init(schema: store.schema, keys: store.keys, piiFieldIDs: store.piiFieldIDs, piiColumns: store.piiColumns)
    }

    package init(schema: Schema, keys: StoreKeys, piiFieldIDs: [String: Int], piiColumns: PIIColumns) throws {
        self.schema = schema
        pseudonymKey = try HMACSHA256Key(keys.pseudonym)
        digestKey = try HMACSHA256Key(keys.recordDigest)
        kekVersion = keys.activeKEKVersion
        guard let kekBytes = keys.keks[kekVersion] else {
            throw VaultError(.configuration, "the keyring's active version \(kekVersion) is retired")
        }
        kek = try AESGCMKey(kekBytes)
        let columns = piiColumns.valueColumns
        func slot(_ column: String?) -> Int { column.flatMap { c in columns.firstIndex { $0.column == c } } ?? -1 }
        var bk: [Int: HMACSHA256Key] = [:]
        var cs: [Int] = [], ms: [Int] = []
        for (i, f) in schema.fields.enumerated() {
            if f.pii, f.lookup, let k = keys.blindIndex[f.name] { bk[i] = try HMACSHA256Key(k) }
            let id = f.pii ? piiFieldIDs[f.name] : nil
            cs.append(slot(id.flatMap { piiColumns.ciphertextColumn(id: $0) }))
            ms.append(slot(id.flatMap { piiColumns.macColumn(id: $0) }))
        }
        blindKeys = bk
        lastActivityIndex = schema.lastActivityField.flatMap { n in schema.fields.firstIndex { $0.name == n } }
        ciphertextSlot = cs
        macSlot = ms
        rowWidth = columns.count
    }

    package func pseudonym(of customerID: String) -> [UInt8] {
        var id = customerID
        return id.withUTF8 { pseudonymKey.mac(UnsafeRawBufferPointer($0)) }
    }

    package func seal(_ p: ValidProfile) throws -> SealedProfile {
        let pseudonym = pseudonym(of: p.customerID)
        let dek = SecureBytes.random(count: 32)
        let dekKey = try AESGCMKey(dek)
        let wrapped = try Envelope.wrapDEK(dek, subject: pseudonym, kekVersion: kekVersion, kek: kek)
        var row = [[UInt8]?](repeating: nil, count: rowWidth)
        // Slot 0 is the customer ID (pii field id 0, the first column).
        row[0] = try Envelope.sealField(Array(p.customerID.utf8), field: schema.subjectIDField, subject: pseudonym, dek: dekKey)
        var attrs: [FieldValue] = []
        attrs.reserveCapacity(p.values.count)
        try schema.fields.withUnsafeBufferPointer { fields in   // no FieldSpec copies (see validateProfile)
            for i in 0..<fields.count {
                let v = p.values[i]
                if fields[i].pii {
                    guard v != .null else { continue }
                    let text = FieldValue.plaintext(v)
                    row[ciphertextSlot[i]] = try Envelope.sealField(Array(text.utf8), field: fields[i].name, subject: pseudonym, dek: dekKey)
                    if let bk = blindKeys[i] {
                        var norm = Normalization.lookupValue(text, for: fields[i])
                        if !norm.isEmpty {
                            row[macSlot[i]] = ProfileStore.blindIndexEntry(norm.withUTF8 { bk.mac(UnsafeRawBufferPointer($0)) })
                        }
                    }
                } else {
                    attrs.append(v)
                }
            }
        }
        return SealedProfile(line: p.line, pseudonym: pseudonym, kekVersion: kekVersion, wrappedDEK: wrapped, piiRow: row, attributes: attrs,
                             digest: digest(p), lastActivity: lastActivity(p))
    }
}

extension FieldValue {
    /// The text a PII value is encrypted as.
    package static func plaintext(_ v: FieldValue) -> String {
        switch v {
        case .null: ""
        case .int(let i): String(i)
        case .float(let d): String(d)
        case .text(let s): s
        case .date(let d): DateParsing.isoDate(days: d)
        case .bool(let b): b ? "true" : "false"
        }
    }

    var databaseValue: DatabaseValue {
        switch self {
        case .null: .null
        case .int(let i): i.databaseValue
        case .float(let d): d.databaseValue
        case .text(let s): s.databaseValue
        case .date(let d): Int64(d).databaseValue
        case .bool(let b): (b ? 1 : 0).databaseValue
        }
    }
}

/// Writes rejected records (line, field, reason) to a CSV file: an ``OutputFile`` (new, 0600,
/// unless `rejectsForce`; never a protected file), its cells formula-safe (``CSVCell``). The
/// file is in place once the ingest finishes (``finish()``); an ingest that fails leaves none.
package final class RejectsWriter {
    private let file: OutputFile
    private var failure: (any Error)?

    init(path: String, force: Bool, protecting: [ProtectedFile]) throws {
        file = try OutputFile(path: path, force: force, protecting: protecting, what: "the rejects file")
        try file.write("line,field,reason\n")
    }

    convenience init?(_ options: IngestOptions, store: ProfileStore) throws {
        try self.init(options, ownFiles: store.ownFiles)
    }

    /// The rejects file `options` asks for (nil: none), never one of `ownFiles` (the engine's
    /// own files) nor of `options.protectedFiles`.
    package convenience init?(_ options: IngestOptions, ownFiles: [ProtectedFile]) throws {
        guard let path = options.rejectsPath else { return nil }
        try self.init(path: path, force: options.rejectsForce, protecting: ownFiles + options.protectedFiles)
    }

    package func write(_ issue: RecordIssue) {
        guard failure == nil else { return }
        do {
            try file.write(String(issue.line) + "," + CSVCell.row([issue.field ?? "", issue.reason], alwaysQuote: true) + "\n")
        } catch {
            failure = error
        }
    }

    /// Puts the file in place; a write that failed on the way fails the ingest here.
    package func finish() throws {
        if let failure {
            file.discard()
            throw failure
        }
        try file.commit()
    }
}

extension ProfileStore {
    // MARK: - Profiles

    /// Canonical column order for profile records: the subject ID, then the schema fields.
    var profileColumns: [String] { Self.profileColumns(schema) }
    package static func profileColumns(_ schema: Schema) -> [String] { [schema.subjectIDField] + schema.fields.map(\.name) }
    /// Input column name -> field name, for fields that declare `column:` in the schema.
    var profileAliases: [String: String] { Self.profileAliases(schema) }
    package static func profileAliases(_ schema: Schema) -> [String: String] {
        Dictionary(schema.fields.compactMap { f in f.column.map { ($0, f.name) } }, uniquingKeysWith: { a, _ in a })
    }

    /// Declared types of the profile columns (the customer ID is text).
    var profileTypes: [String: FieldType] { Self.profileTypes(schema) }
    package static func profileTypes(_ schema: Schema) -> [String: FieldType] {
        var t: [String: FieldType] = [schema.subjectIDField: .string]
        for f in schema.fields { t[f.name] = f.type }
        return t
    }

    func validateProfile(_ raw: RawRecord, file: String) -> Result<ValidProfile, RecordIssue> {
        Self.validateProfile(raw, file: file, schema: schema)
    }

    /// Validates one profile record against `schema` (both engines): the customer ID and one
    /// parsed value per field, or the record's first problem.
    package static func validateProfile(_ raw: RawRecord, file: String, schema: Schema) -> Result<ValidProfile, RecordIssue> {
        if let p = raw.problem { return .failure(p) }
        guard let rawID = raw.values[0], !Normalization.customerID(rawID).isEmpty else {
            return .failure(RecordIssue(file: file, line: raw.line, field: schema.subjectIDField, reason: "missing customer ID"))
        }
        let id = Normalization.customerID(rawID)
        if id.utf8.count > 1024 {
            return .failure(RecordIssue(file: file, line: raw.line, field: schema.subjectIDField, reason: "longer than 1024 bytes"))
        }
        if let c = ControlCharacter.first(in: id.utf8) {
            return .failure(RecordIssue(file: file, line: raw.line, field: schema.subjectIDField,
                                        reason: ControlCharacter.refusal(c).reason))
        }
        var values: [FieldValue] = []
        values.reserveCapacity(schema.fields.count)
        // Through a buffer pointer: iterating the array would copy every FieldSpec (and retain
        // and release its strings and arrays) for every record.
        let failure: RecordIssue? = schema.fields.withUnsafeBufferPointer { fields in
            for i in 0..<fields.count {
                do throws(ValueError) {
                    values.append(try fields[i].parse(Substring(raw.values[i + 1] ?? "")))
                } catch {
                    return RecordIssue(file: file, line: raw.line, field: fields[i].name, reason: error.reason, detailReason: error.detail)
                }
            }
            return nil
        }
        if let failure { return .failure(failure) }
        return .success(ValidProfile(line: raw.line, customerID: id, values: values))
    }

    /// Ingests a profile file: validate everything first (unless `skipInvalid`), then write in
    /// batched transactions. Upsert by customer ID: a record replaces the whole stored profile.
    public func ingestProfiles(path: String, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        try ingestProfiles(.file(path), options: options)
    }

    /// Ingests profiles from `source` (a file, or JSON objects in memory, which nothing writes
    /// to disk): as ``ingestProfiles(path:options:)``; messages about records in memory name
    /// `record N`.
    public func ingestProfiles(_ source: RecordSource, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        let started = Date()
        let path = source.name
        let format = options.format
        let total = source.byteCount
        let required: Set<String> = [schema.subjectIDField]
        var report = IngestReport()

        let suppressed = options.allowReingest ? [:] : try suppressionList()
        /// A validator per thread: the suppression check's HMAC context is not shared.
        let makeValidator: @Sendable () throws -> (RawRecord) -> Result<ValidProfile, RecordIssue> = { [self] in
            let checker = suppressed.isEmpty ? nil : try ProfileSealer(store: self)
            return { [self] raw in
                let r = validateProfile(raw, file: path)
                if case .success(let p) = r, let checker, let erased = suppressed[Data(checker.pseudonym(of: p.customerID))] {
                    return .failure(RecordIssue(file: path, line: p.line, field: schema.subjectIDField,
                        reason: "this customer was erased on \(DateParsing.iso8601(unixSeconds: erased / 1000)); a stale import cannot bring them back (--allow-reingest records them as a new subject)"))
                }
                return r
            }
        }
        let validate = try makeValidator()

        // The whole file must be valid before anything commits (unless `skipInvalid`). Pass 1
        // reads it on a thread of its own while this thread already parses and seals and the
        // writer fills its first transaction; the writer commits only once the gate has passed.
        // Lower priority: the writer is the ingest's bottleneck, and three busy threads on two
        // cores cost it a third of its time until validation finished; the validator takes
        // what the parse thread leaves (see maxHeldForValidation).
        let (columns, types, aliases) = (profileColumns, profileTypes, profileAliases)
        let delimiter = options.delimiter
        let validation = ValidationPass(skip: options.skipInvalid, lowerPriority: true, openReader: {
            try RecordReader(source: source, format: format, delimiter: delimiter, columns: columns, required: required, types: types, aliases: aliases)
        }, makeValidator: makeValidator)
        let gate = validation.gate
        defer { validation.finish() }
        let rejects = try RejectsWriter(options, store: self)
        let reader = try RecordReader(source: source, format: format, delimiter: options.delimiter, columns: profileColumns, required: required, types: profileTypes, aliases: profileAliases)
        let sealer = try ProfileSealer(store: self)
        // Pipeline: this thread parses, validates and seals; a writer thread commits batches.
        let channel = BoundedChannel<ProfileBatch>(capacity: 2)
        let audit = options.audit
        let allowReingest = options.allowReingest
        let openLimit = max(options.batchSize, options.holdForValidation)
        let counts = WriterCounts()
        let batchRecorder = IngestBatchRecorder(kind: "profiles", source: path, actor: audit?.actor)
        let retired = RetiredChunks<ProfileBatch>()
        let filter = switch options.subjectFilter {
        case nil: SubjectFilter.forInput(bytes: total)
        case true?: SubjectFilter(expectedNew: max(total / 64, 1))
        case false?: nil as SubjectFilter?
        }
        let writer = WorkerThread(name: "profilevault-ingest-writer") { [self] in
            while let first = channel.take() {
                do {
                    let (ins, upd, same) = try writeProfiles(first, then: { channel.take() }, audit: audit, allowReingest: allowReingest,
                                                             gate: gate, openLimit: openLimit, retired: retired, filter: filter,
                                                             batch: batchRecorder)
                    counts.add(inserted: ins, updated: upd, unchanged: same)
                } catch {
                    channel.fail(error)
                    return
                }
            }
        }
        // A transaction of `batchSize` records reaches the writer in chunks of at most
        // `pipelineChunk`, so the records in memory stay few however large the transaction.
        let chunkSize = min(options.batchSize, IngestOptions.pipelineChunk)
        var batch = ProfileBatch()
        batch.profiles.reserveCapacity(chunkSize)
        var n = 0, inTransaction = 0
        do {
            while let raw = try reader.next() {
                if batch.firstLine == 0 { batch.firstLine = raw.line }
                batch.lastLine = raw.line
                switch validate(raw) {
                case .failure(let issue):
                    if !options.skipInvalid {
                        // Pass 1 has found this record too (or an earlier one): its error is the
                        // file's first. Were the gate open, the file changed since pass 1 read it.
                        try gate.wait()
                        throw issue.error()
                    }
                    report.rejected += 1
                    batch.rejected += 1
                    rejects?.write(issue)
                case .success(let p):
                    batch.profiles.append(try sealer.seal(p))
                }
                n += 1
                inTransaction += 1
                if inTransaction == options.batchSize || batch.profiles.count + batch.rejected == chunkSize {
                    batch.closesTransaction = inTransaction == options.batchSize
                    if batch.closesTransaction { inTransaction = 0 }
                    try channel.put(batch)
                    retired.drain()
                    batch = ProfileBatch()
                    batch.profiles.reserveCapacity(chunkSize)
                    options.progress?(IngestProgress(phase: "ingesting", records: n, bytes: reader.bytesRead, totalBytes: total))
                }
            }
            batch.closesTransaction = true
            if !batch.profiles.isEmpty || batch.rejected > 0 || inTransaction > 0 { try channel.put(batch) }
        } catch {
            channel.close()
            writer.join()
            throw channel.consumerFailure ?? error
        }
        channel.close()
        writer.join()
        if let failure = channel.consumerFailure { throw failure }
        (report.inserted, report.updated) = counts.value
        report.unchanged = counts.unchangedCount
        options.progress?(IngestProgress(phase: "done", records: n, bytes: reader.bytesRead, totalBytes: total))
        try rejects?.finish()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// One transaction: a subject is either written whole or not at all, and the batch's audit
    /// entry commits with it. The transaction holds `first` and the chunks `next()` hands over
    /// up to and including the one that `closesTransaction` (or until `next()` returns nil).
    /// While `gate` (the validation pass) is still running, the transaction stays open past
    /// such a chunk until it holds `openLimit` records; it commits only once the gate has
    /// passed, and rolls back when it fails.
    ///
    /// A record whose digest equals the stored one (``SealedProfile/digest``) is `unchanged`:
    /// nothing of the subject is written, so its last activity, data key and ciphertexts stay.
    /// The subject row names the ingest run (`batch`) that created it and the last one that
    /// changed it; the run's row gets each transaction's counts (one statement per transaction).
    func writeProfiles(_ first: ProfileBatch, then next: () -> ProfileBatch? = { nil }, audit: AuditContext?,
                       allowReingest: Bool = false, gate: ValidationGate? = nil, openLimit: Int = 0,
                       retired: RetiredChunks<ProfileBatch>? = nil, filter: SubjectFilter? = nil,
                       batch: IngestBatchRecorder? = nil) throws -> (inserted: Int, updated: Int, unchanged: Int) {
        let attrCols = schema.attributeFields.map { ProfileStore.quoted($0.name) }
        let attrSQL = "INSERT OR REPLACE INTO attributes(subject_id\(attrCols.isEmpty ? "" : ", " + attrCols.joined(separator: ", "))) VALUES (?\(String(repeating: ", ?", count: attrCols.count)))"
        let now = Int64(Date().timeIntervalSince1970)
        let recorder = batch ?? IngestBatchRecorder(kind: "profiles", source: "", actor: audit?.actor, time: now)
        let (ins, upd, same) = try pool.write { db -> (Int, Int, Int) in
            let batchID = try recorder.id(db)
            let find = try db.cachedStatement(sql: "SELECT id, record_digest FROM subjects WHERE \(Self.pseudonymMatch)")
            let insertSubject = try db.cachedStatement(sql: "INSERT INTO subjects(pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity, record_digest, created_batch, updated_batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            let updateSubject = try db.cachedStatement(sql: "UPDATE subjects SET kek_version = ?, wrapped_dek = ?, updated_at = ?, last_activity = max(last_activity, ?), record_digest = ?, updated_batch = ? WHERE id = ?")
            // One `pii` row per subject (ciphertexts and blind-index MACs): an update replaces it whole.
            let piiSQL = "INSERT OR REPLACE INTO pii(subject_id, \(piiColumns.valueColumns.map(\.column).joined(separator: ", "))) VALUES (?\(String(repeating: ", ?", count: piiColumns.valueColumns.count)))"
            let insertPII = try db.cachedStatement(sql: piiSQL)
            let insertAttrs = try db.cachedStatement(sql: attrSQL)
            let unsuppress = try db.cachedStatement(sql: "DELETE FROM suppressed WHERE pseudonym = ?")
            var ins = 0, upd = 0, same = 0, reingested = 0
            let find_ = RawStatement(find, db), insertSubject_ = RawStatement(insertSubject, db)
            let updateSubject_ = RawStatement(updateSubject, db), insertPII_ = RawStatement(insertPII, db)
            let insertAttrs_ = RawStatement(insertAttrs, db), unsuppress_ = RawStatement(unsuppress, db)
            for s in [find_, insertSubject_, updateSubject_, insertPII_, insertAttrs_, unsuppress_] { s.reset() }
            try filter?.prepare(db)
            var rejected = 0, lastLine = first.lastLine, held = 0
            var chunk: ProfileBatch? = first
            while let work = chunk {
                rejected += work.rejected
                held += work.profiles.count + work.rejected
                if work.lastLine > 0 { lastLine = work.lastLine }
                for p in work.profiles {
                    let id: Int64
                    // Find, then insert: the pseudonym index is not UNIQUE (it holds 8-byte keys),
                    // so this writer, the only one that adds subjects, keeps pseudonyms unique.
                    // The filter lets a pseudonym that is certainly new skip the lookup.
                    var existing: (id: Int64, digest: [UInt8]?)?
                    if filter?.mayContain(p.pseudonym) ?? true {
                        find_.bind(1, blob: p.pseudonym)
                        existing = try find_.stepWithBlob()
                    }
                    if let existing {
                        id = existing.id
                        if !p.digest.isEmpty, existing.digest == p.digest {
                            same += 1   // the stored record: nothing to write
                            continue
                        }
                        updateSubject_.bind(1, Int64(p.kekVersion)); updateSubject_.bind(2, blob: p.wrappedDEK)
                        updateSubject_.bind(3, now); updateSubject_.bind(4, p.lastActivity ?? now)
                        updateSubject_.bind(5, blob: p.digest); updateSubject_.bind(6, batchID); updateSubject_.bind(7, id)
                        try updateSubject_.step()
                        upd += 1
                    } else {
                        insertSubject_.bind(1, blob: p.pseudonym)
                        insertSubject_.bind(2, Int64(p.kekVersion))
                        insertSubject_.bind(3, blob: p.wrappedDEK)
                        insertSubject_.bind(4, now); insertSubject_.bind(5, now); insertSubject_.bind(6, p.lastActivity ?? now)
                        insertSubject_.bind(7, blob: p.digest); insertSubject_.bind(8, batchID); insertSubject_.bind(9, batchID)
                        try insertSubject_.step()
                        id = db.lastInsertedRowID
                        ins += 1
                        try filter?.inserted(p.pseudonym, db)
                        if allowReingest {
                            unsuppress_.bind(1, blob: p.pseudonym)
                            try unsuppress_.step()
                            reingested += unsuppress_.changes
                        }
                    }
                    insertPII_.bind(1, id)
                    for (i, value) in p.piiRow.enumerated() {
                        if let value { insertPII_.bind(Int32(i + 2), blob: value) } else { insertPII_.bindNull(Int32(i + 2)) }
                    }
                    try insertPII_.step()
                    insertAttrs_.bind(1, id)
                    for (i, v) in p.attributes.enumerated() { insertAttrs_.bind(Int32(i + 2), v) }
                    try insertAttrs_.step()
                }
                retired?.retire(work)
                let holdOpen = gate.map { !$0.isSettled && held < openLimit } ?? false
                chunk = work.closesTransaction && !holdOpen ? nil : next()
            }
            try gate?.wait()
            if ins > 0 {
                // Recorded with or without a filter of its own: other writers' filters rely on it.
                let epoch = try SubjectFilter.recordEpoch(db)
                filter?.wrote(epoch: epoch)
            }
            try recorder.add(db, inserted: ins, updated: upd, unchanged: same, rejected: rejected)
            if let audit {
                try appendAudit(db, [audit.record("ingest.profiles", .create, fields: schema.fields.map(\.name), counts: [
                    ("inserted", Int64(ins)), ("updated", Int64(upd)), ("unchanged", Int64(same)), ("rejected", Int64(rejected)),
                    ("first_line", Int64(first.firstLine)), ("last_line", Int64(lastLine)), ("reingested", Int64(reingested)),
                    ("batch", batchID),
                ])])
            }
            if ins + upd > 0 { try bumpPopulationEpoch(db) }
            return (ins, upd, same)
        }
        return (ins, upd, same)
    }

    /// Pseudonyms of erased subjects, with their erasure time (unix ms).
    func suppressionList() throws -> [Data: Int64] {
        try pool.read { db in
            var out: [Data: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT pseudonym, erased_at FROM suppressed") {
                guard let p = row.auditBlob("pseudonym"), let at = row.auditInt("erased_at") else {
                    throw VaultError(.integrity, "the suppression list holds a value of the wrong type: the file was edited")
                }
                out[Data(p)] = at
            }
            return out
        }
    }

    // MARK: - Events

    package static let eventColumns = ["customer_id", "kind", "item", "value", "time"]

    package struct ValidEvent: Sendable {
        package var line: Int
        package var customerID: String
        package var kind: String
        package var item: String
        package var value: Double
        package var time: Int64
    }

    func validateEvent(_ raw: RawRecord, file: String) -> Result<ValidEvent, RecordIssue> {
        Self.validateEvent(raw, file: file, schema: schema)
    }

    /// Validates one event record against `schema` (both engines).
    package static func validateEvent(_ raw: RawRecord, file: String, schema: Schema) -> Result<ValidEvent, RecordIssue> {
        if let p = raw.problem { return .failure(p) }
        func bad(_ f: String, _ r: String, detail: String? = nil) -> Result<ValidEvent, RecordIssue> {
            .failure(RecordIssue(file: file, line: raw.line, field: f, reason: r, detailReason: detail))
        }
        guard let rawID = raw.values[0], !Normalization.customerID(rawID).isEmpty else { return bad("customer_id", "missing customer ID") }
        guard let kindText = raw.values[1].map(Normalization.trimmed), !kindText.isEmpty else { return bad("kind", "missing event kind") }
        guard let spec = schema.eventKind(named: kindText) else {
            return bad("kind", "not an event kind of the schema (\(schema.events.map(\.name).joined(separator: ", ")))")
        }
        guard let item = raw.values[2].map(Normalization.trimmed), !item.isEmpty else { return bad("item", "missing item") }
        if item.utf8.count > 65536 { return bad("item", "longer than 65536 bytes") }
        if let c = ControlCharacter.first(in: item.utf8) { return bad("item", ControlCharacter.refusal(c, what: "item").reason) }
        let value: Double
        do { value = try spec.value.parse(Substring(raw.values[3] ?? "")) } catch { return bad("value", error.reason, detail: error.detail) }
        guard let timeText = raw.values[4], let time = DateParsing.unixSeconds(fromISO8601: Substring(Normalization.trimmed(timeText))) else {
            return bad("time", "not an ISO 8601 time (e.g. 2026-10-01T12:00:00Z)")
        }
        return .success(ValidEvent(line: raw.line, customerID: Normalization.customerID(rawID), kind: spec.name, item: item, value: value, time: time))
    }

    /// Ingests an events file (`customer_id,kind,item,value,time`). Every event must belong to a
    /// subject already in the store. Idempotent: an event identical in subject, kind, item,
    /// value and time to a stored one is not stored twice (it counts as `updated`).
    public func ingestEvents(path: String, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        try ingestEvents(.file(path), options: options)
    }

    /// Ingests events from `source` (a file, or JSON objects in memory, which nothing writes to
    /// disk): as ``ingestEvents(path:options:)``; messages about records in memory name `record N`.
    public func ingestEvents(_ source: RecordSource, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        let started = Date()
        let path = source.name
        let format = options.format
        let total = source.byteCount
        let required = Set(Self.eventColumns)
        let sealer = try ProfileSealer(store: self)
        var report = IngestReport()
        var idCache: [String: Int64] = [:]

        func resolve(_ e: ValidEvent, _ db: Database) throws -> Int64? {
            if let id = idCache[e.customerID] { return id }
            let pseudo = sealer.pseudonym(of: e.customerID)
            guard let id = try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM subjects WHERE \(Self.pseudonymMatch)"), arguments: [Data(pseudo)]) else {
                return nil
            }
            if idCache.count > 200_000 { idCache.removeAll(keepingCapacity: true) }
            idCache[e.customerID] = id
            return id
        }

        if !options.skipInvalid {
            let reader = try RecordReader(source: source, format: format, delimiter: options.delimiter, columns: Self.eventColumns, required: required,
                                          types: ["customer_id": .string, "kind": .string, "item": .string, "time": .string])
            try pool.read { db in
                var n = 0
                while let raw = try reader.next() {
                    switch validateEvent(raw, file: path) {
                    case .failure(let issue): throw issue.error()
                    case .success(let e):
                        if try resolve(e, db) == nil {
                            throw VaultError(.invalidInput, RecordIssue(file: path, line: e.line, field: "customer_id", reason: "no subject with this customer ID in the store").description)
                        }
                    }
                    n += 1
                    if n % 8192 == 0 { options.progress?(IngestProgress(phase: "validating", records: n, bytes: reader.bytesRead, totalBytes: total)) }
                }
            }
        }
        let rejects = try RejectsWriter(options, store: self)
        let reader = try RecordReader(source: source, format: format, delimiter: options.delimiter, columns: Self.eventColumns, required: required,
                                          types: ["customer_id": .string, "kind": .string, "item": .string, "time": .string])
        var done = false
        var n = 0
        while !done {
            let (ins, dup, rej) = try pool.write { db -> (Int, Int, Int) in
                let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO events(subject_id, kind, item, value, time) VALUES (?, ?, ?, ?, ?)")
                let touch = try db.cachedStatement(sql: "UPDATE subjects SET last_activity = max(last_activity, ?) WHERE id = ?")
                var ins = 0, dup = 0, rej = 0, inBatch = 0, firstLine = 0, lastLine = 0
                while inBatch < options.batchSize {
                    guard let raw = try reader.next() else { done = true; break }
                    n += 1
                    inBatch += 1
                    if firstLine == 0 { firstLine = raw.line }
                    lastLine = raw.line
                    switch validateEvent(raw, file: path) {
                    case .failure(let issue):
                        rej += 1
                        rejects?.write(issue)
                    case .success(let e):
                        guard let id = try resolve(e, db) else {
                            rej += 1
                            rejects?.write(RecordIssue(file: path, line: e.line, field: "customer_id", reason: "no subject with this customer ID in the store"))
                            continue
                        }
                        try insert.execute(arguments: [id, e.kind, e.item, e.value, e.time])
                        if db.changesCount > 0 {
                            ins += 1
                            try touch.execute(arguments: [e.time, id])
                        } else {
                            dup += 1
                        }
                    }
                }
                if let audit = options.audit, inBatch > 0 {
                    try appendAudit(db, [audit.record("ingest.events", .create, counts: [
                        ("inserted", Int64(ins)), ("duplicates", Int64(dup)), ("rejected", Int64(rej)),
                        ("first_line", Int64(firstLine)), ("last_line", Int64(lastLine)),
                    ])])
                }
                if ins > 0 { try bumpPopulationEpoch(db) }
                return (ins, dup, rej)
            }
            report.inserted += ins
            report.updated += dup
            report.rejected += rej
            options.progress?(IngestProgress(phase: done ? "done" : "ingesting", records: n, bytes: reader.bytesRead, totalBytes: total))
        }
        try rejects?.finish()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }
}
