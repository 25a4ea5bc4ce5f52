import Foundation
import PostgresNIO
import Synchronization
public import VaultAudit
public import VaultCrypto
public import VaultPolicy
public import VaultStore
public import VaultValues

/// Subjects, their sealed PII, plaintext attributes and events on PostgreSQL (issue 18 §2): the
/// `StorageEngine` methods of that part of the seam, with the SQLite engine's signatures and
/// semantics, over one ``PostgresEngine`` (its pool, its audit chain).
///
/// Validation and sealing are the SQLite engine's own (`ProfileSealer`, `validateProfile`,
/// `validateEvent`, `Envelope`, shared through package access): the same record is refused with
/// the same message, and the same customer gets the same pseudonym and blind-index entries
/// under the same keyring. PostgreSQL only ever sees pseudonyms, wrapped keys, ciphertexts,
/// truncated MACs and the schema's plaintext attributes.
///
/// **Threads.** Every public method is synchronous, as the protocol is: it runs its statements
/// on the pool's tasks and waits for them on the calling thread (a semaphore). Call them from a
/// plain thread (the CLI's main thread, the HTTP service's dispatch threads, a test's detached
/// thread), never from Swift's cooperative pool (an `async` function or a `Task`): a blocked
/// cooperative thread is a thread the pool's own tasks may need, and with few cores that waits
/// forever. Ingest parses, validates and seals on the calling thread and hands each transaction
/// to the pool.
public final class PostgresProfiles: Sendable {
    public let engine: PostgresEngine
    public let schema: Schema
    /// The keys in use: replaced by ``adopt(keyring:)`` (PostgresKeys.swift).
    let keyBox: Mutex<StoreKeys>
    var keys: StoreKeys { keyBox.withLock { $0 } }
    /// The keyring file the keys came from (nil for a keyring built in memory).
    let keyringLocation: KeyringLocation?
    let piiColumns: PIIColumns
    let piiFieldIDs: [String: Int]
    /// The upserts of one statement's worth of `pii` and `attributes` rows (built once from the
    /// schema's validated identifiers; every value is a bound array).
    let piiUpsert: String
    let attributesUpsert: String
    /// The same statements without `ON CONFLICT`, for chunks whose subjects the chunk's own
    /// upsert just created (their row ids are fresh, so no `pii` or `attributes` row can have
    /// them; one would be an integrity failure, refused by the primary key, not overwritten).
    let piiInsert: String
    let attributesInsert: String
    /// `SELECT` list of a subject's row with its `pii` and `attributes` columns.
    let profileSelect: String

    /// Rows per statement: each column is one bound array of this many elements.
    static let statementRows = 4_096

    /// Whether ingest writes a transaction of new subjects with `COPY` (true: always, outside
    /// tests), and how many committed transactions it wrote so: tests compare the two paths' rows.
    let bulkCopy = Mutex<(enabled: Bool, transactions: Int)>((true, 0))

    /// Where the engine keeps the data (the location without its password).
    public var location: String { engine.location.description }
    /// A server database has no files an output could overwrite.
    public var ownFiles: [ProtectedFile] { [] }

    init(engine: PostgresEngine, schema: Schema, keys: StoreKeys, keyringLocation: KeyringLocation? = nil) throws(PostgresStoreError) {
        self.engine = engine
        self.schema = schema
        self.keyBox = Mutex(keys)
        self.keyringLocation = keyringLocation
        let columns = PIIColumns(schema: schema)
        self.piiColumns = columns
        self.piiFieldIDs = Dictionary(uniqueKeysWithValues: PIIColumns.fieldIDs(schema))
        let attrs = try schema.attributeFields.map { f throws(PostgresStoreError) in try Self.attributeColumn(f.name) }
        let pcols = columns.valueColumns.map(\.column)
        let pvals = pcols.indices.map { "v\($0 + 1)" }
        piiUpsert = """
            INSERT INTO profilevault.pii(subject_id, \(pcols.joined(separator: ", ")))
            SELECT s, \(pvals.map { "NULLIF(\($0), ''::bytea)" }.joined(separator: ", "))
            FROM unnest($1::bigint[], \(pcols.indices.map { "$\($0 + 2)::bytea[]" }.joined(separator: ", "))) AS t(s, \(pvals.joined(separator: ", ")))
            ON CONFLICT (subject_id) DO UPDATE SET \(pcols.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", "))
            """
        if attrs.isEmpty {
            attributesUpsert = "INSERT INTO profilevault.attributes(subject_id) SELECT s FROM unnest($1::bigint[]) AS t(s) ON CONFLICT (subject_id) DO NOTHING"
        } else {
            // Each attribute is two arrays: its values and whether each is present (NULL otherwise).
            let types = schema.attributeFields.map { Self.sqlType($0.type) }
            let unnestArgs = types.enumerated().map { i, t in "$\(2 * i + 2)::\(t)[], $\(2 * i + 3)::boolean[]" }
            let names = attrs.indices.map { "a\($0 + 1), p\($0 + 1)" }
            attributesUpsert = """
                INSERT INTO profilevault.attributes(subject_id, \(attrs.joined(separator: ", ")))
                SELECT s, \(attrs.indices.map { "CASE WHEN p\($0 + 1) THEN a\($0 + 1) END" }.joined(separator: ", "))
                FROM unnest($1::bigint[], \(unnestArgs.joined(separator: ", "))) AS t(s, \(names.joined(separator: ", ")))
                ON CONFLICT (subject_id) DO UPDATE SET \(attrs.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", "))
                """
        }
        func withoutConflictClause(_ sql: String) -> String {
            sql.range(of: "ON CONFLICT").map { String(sql[..<$0.lowerBound]) } ?? sql
        }
        piiInsert = withoutConflictClause(piiUpsert)
        attributesInsert = withoutConflictClause(attributesUpsert)
        let selected = ["s.id", "s.kek_version", "s.wrapped_dek"] + pcols.map { "p.\($0)" } + attrs.map { "a.\($0)" }
        profileSelect = """
            SELECT \(selected.joined(separator: ", ")) FROM profilevault.subjects s
            LEFT JOIN profilevault.pii p ON p.subject_id = s.id LEFT JOIN profilevault.attributes a ON a.subject_id = s.id
            """
    }

    // MARK: - Schema-dependent tables

    /// A schema field name as a quoted column name. The schema loader allows only
    /// `^[A-Za-z][A-Za-z0-9_]{0,62}$`; a `Schema` built in code is checked again here, and
    /// `subject_id` (the key column) is refused, so no text from anywhere else reaches the DDL.
    /// PostgreSQL's system column names (``systemColumns``, which the loader and SQLite accept)
    /// are refused too, in any case: the table could not be created.
    static func attributeColumn(_ name: String) throws(PostgresStoreError) -> String {
        let u = Array(name.utf8)
        func letter(_ b: UInt8) -> Bool { (0x61...0x7A).contains(b) || (0x41...0x5A).contains(b) }
        guard (1...63).contains(u.count), letter(u[0]),
              u.allSatisfy({ letter($0) || (0x30...0x39).contains($0) || $0 == 0x5F }), name != "subject_id" else {
            throw PostgresStoreError(.configuration, "a field name of the schema is not a plain identifier (letters, digits and _, starting with a letter, at most 63) or is subject_id")
        }
        guard !systemColumns.contains(name.lowercased()) else {
            throw PostgresStoreError(.configuration, "field \(name) of the schema has the name of a PostgreSQL system column (\(systemColumns.sorted().joined(separator: ", "))); rename the field to store it on PostgreSQL")
        }
        return "\"" + name + "\""
    }

    /// The names every PostgreSQL table reserves for its system columns (`oid` too, a system
    /// column before PostgreSQL 12).
    static let systemColumns: Set<String> = ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"]

    /// The column type of an attribute: as on SQLite, dates are day numbers and every number
    /// is stored exactly as ingest parsed it.
    static func sqlType(_ t: FieldType) -> String {
        switch t {
        case .int: "bigint"
        case .float: "double precision"
        case .date: "integer"
        case .bool: "boolean"
        case .string, .category: "text"
        }
    }

    /// The `pii` and `attributes` tables of `schema`: a ciphertext column `c<id>` per PII field
    /// and a MAC column `m<id>` per lookup field with its partial index (names made of ids,
    /// never of field names), and a typed column per attribute. Neither has a foreign key to
    /// `subjects` (migration 6 says why).
    static func tableStatements(_ schema: Schema) throws(PostgresStoreError) -> [String] {
        let c = PIIColumns(schema: schema)
        var out = ["CREATE TABLE profilevault.pii(subject_id bigint PRIMARY KEY"
                   + c.valueColumns.map { ", \($0.column) bytea" }.joined() + ")"]
        for m in c.macs {
            out.append("CREATE INDEX pii_\(m.column) ON profilevault.pii(\(m.column)) WHERE \(m.column) IS NOT NULL")
        }
        var attrs = "CREATE TABLE profilevault.attributes(subject_id bigint PRIMARY KEY"
        for f in schema.attributeFields { attrs += ", \(try attributeColumn(f.name)) \(sqlType(f.type))" }
        out.append(attrs + ")")
        return out
    }

    /// Grants the service role (`role`, already quoted) what ingest, reads and erasure need on
    /// the schema's tables, once they exist: SELECT, INSERT, UPDATE (upserts) and DELETE
    /// (erasure). No TRUNCATE.
    static func grantProfileTables(_ conn: PostgresConnection, role: String, engine: PostgresEngine) async throws {
        let exists = try await engine.rows(conn, "SELECT to_regclass('profilevault.pii') IS NOT NULL AND to_regclass('profilevault.attributes') IS NOT NULL")
        guard let row = exists.first, try row.decode(Bool.self) else { return }
        try await engine.exec(conn, PostgresQuery(unsafeSQL: "GRANT SELECT, INSERT, UPDATE, DELETE ON profilevault.pii, profilevault.attributes TO \(role)"))
    }

    /// Creates the store on PostgreSQL, as the owner role: the engine's schema and roles
    /// (``PostgresEngine/initialize(_:)``), then the tables of `schema`, the schema's
    /// fingerprint, the keyring's identity version and key checks. Safe to run again with the
    /// same schema and keyring (it records a newly active key version); a different schema is
    /// refused (configuration), a different keyring too (integrity).
    public static func create(owner: PostgresEngine, schema: Schema, keyring: Keyring,
                              options: PostgresEngine.InitOptions = .init()) async throws {
        try await owner.initialize(options)
        let statements = try tableStatements(schema)
        let fingerprint = ProfileStore.schemaFingerprint(schema)
        var checks: [(UInt32, [UInt8])] = []
        for v in Set([keyring.active]).union(keyring.versions.filter { !keyring.isRetired($0) }).sorted() {
            checks.append((v, try StoreKeys.keyCheck(keyring: keyring, version: v)))
        }
        let role = PostgresEngine.quoted(options.serviceRole)
        try await owner.transaction("creating the profile tables") { conn in
            try await owner.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresEngine.lockNamespaceMigrations), 0)")
            let stored = try await owner.rows(conn, "SELECT value FROM profilevault.meta WHERE key = 'schema_fingerprint'")
            if let row = stored.first {
                guard try row.decode(String.self) == fingerprint else {
                    throw PostgresStoreError(.configuration, "\(owner.location.description): the store was created with another schema; a changed schema needs a new store or a migration")
                }
            } else {
                for s in statements { try await owner.exec(conn, PostgresQuery(unsafeSQL: s)) }
                for (k, v) in [("schema_fingerprint", fingerprint), ("identity_key_version", String(keyring.active)), ("schema_version", String(schema.version))] {
                    try await owner.exec(conn, "INSERT INTO profilevault.meta(key, value) VALUES (\(k), \(v)) ON CONFLICT (key) DO NOTHING")
                }
                for (name, id) in PIIColumns.fieldIDs(schema) {
                    try await owner.exec(conn, "INSERT INTO profilevault.pii_fields(id, name) VALUES (\(Int32(id)), \(name))")
                }
            }
            // The key checks: a version recorded before must match (another keyring otherwise).
            for (v, check) in checks {
                let existing = try await owner.rows(conn, "SELECT key_check FROM profilevault.key_versions WHERE version = \(Int64(v))")
                if let row = existing.first {
                    guard constantTimeEqual(try row.decode(ByteBuffer.self).bytes, check) else {
                        throw PostgresStoreError(.integrity, "the keyring does not match the store at \(owner.location.description): key version \(v) fails its key check")
                    }
                } else {
                    try await owner.exec(conn, """
                        INSERT INTO profilevault.key_versions(version, key_check, added_at, retired)
                        VALUES (\(Int64(v)), \(bytea(check)), \(Int64(Date().timeIntervalSince1970)), false)
                        """)
                }
            }
            try await grantProfileTables(conn, role: role, engine: owner)
        }
    }

    /// Opens the profile store for a node: the schema must be the one the store was created
    /// with (configuration error otherwise) and the keyring the one it was keyed with, with
    /// its active version recorded (integrity / configuration errors otherwise).
    public static func open(engine: PostgresEngine, schema: Schema, keyring: Keyring) async throws -> PostgresProfiles {
        let (meta, checks, ids) = try await engine.transaction("opening the profile store") { conn in
            var meta: [String: String] = [:]
            for row in try await engine.rows(conn, "SELECT key, value FROM profilevault.meta") {
                let (k, v) = try row.decode((String, String).self)
                meta[k] = v
            }
            var checks: [Int64: [UInt8]] = [:]
            for row in try await engine.rows(conn, "SELECT version, key_check FROM profilevault.key_versions") {
                let (v, c) = try row.decode((Int64, ByteBuffer).self)
                checks[v] = c.bytes
            }
            var ids: [String: Int] = [:]
            for row in try await engine.rows(conn, "SELECT id, name FROM profilevault.pii_fields") {
                let (id, name) = try row.decode((Int32, String).self)
                ids[name] = Int(id)
            }
            return (meta, checks, ids)
        }
        let place = engine.location.description
        guard let identityText = meta["identity_key_version"], let identity = UInt32(identityText) else {
            throw PostgresStoreError(.configuration, "\(place): no profile tables here; run profilectl init --store with this location, the schema and the keyring first")
        }
        guard meta["schema_fingerprint"] == ProfileStore.schemaFingerprint(schema) else {
            throw PostgresStoreError(.configuration, "\(schema.file): the schema differs from the one \(place) was created with; a changed schema needs a new store or a migration")
        }
        guard keyring.versions.contains(identity) else {
            throw PostgresStoreError(.integrity, "keyring \(keyring.path ?? "?") lacks key version \(identity), which this store was created with")
        }
        for (v, stored) in checks {
            guard let version = UInt32(exactly: v), keyring.versions.contains(version) else { continue }
            guard constantTimeEqual(stored, try StoreKeys.keyCheck(keyring: keyring, version: version)) else {
                throw PostgresStoreError(.integrity, "keyring \(keyring.path ?? "?") does not match the store \(place): key version \(version) fails its key check")
            }
        }
        guard checks[Int64(identity)] != nil else {
            throw PostgresStoreError(.integrity, "\(place): the store has no key check for its identity version \(identity): the database was edited")
        }
        guard checks[Int64(keyring.active)] != nil else {
            throw PostgresStoreError(.configuration, "\(place): the keyring's active version \(keyring.active) is not recorded in the store; run profilectl init --store with this keyring (as the owner role) first")
        }
        guard ids == Dictionary(uniqueKeysWithValues: PIIColumns.fieldIDs(schema)) else {
            throw PostgresStoreError(.configuration, "\(place): the store's PII field table does not match the schema")
        }
        let keys = try StoreKeys(keyring: keyring, identityVersion: identity, schema: schema)
        return try PostgresProfiles(engine: engine, schema: schema, keys: keys, keyringLocation: keyring.location)
    }

    // MARK: - Waiting on the pool

    /// Where a result crosses from the pool's task to the waiting thread. `@unchecked
    /// Sendable`: written once by the task before it signals, read by the waiter after.
    private final class Outcome<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    /// Runs `body` on a task of its own and blocks this thread until it ends; errors come out as
    /// `VaultError` naming `what`. Never call this from Swift's cooperative pool (see the type's
    /// documentation).
    static func wait<T>(_ what: String, _ body: @escaping @Sendable () async throws -> T) throws -> T {
        let outcome = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do { outcome.result = .success(try await body()) } catch { outcome.result = .failure(error) }
            done.signal()
        }
        done.wait()
        switch outcome.result {
        case .success(let value)?: return value
        case .failure(let error)?: throw PostgresStoreError.vaultError(error, what)
        case nil: throw VaultError(.internalFailure, "\(what): the operation ended without a result")
        }
    }
}

// MARK: - Keys and decryption

extension PostgresProfiles {
    /// The pseudonym of a customer ID under this store's identity key (as on SQLite).
    public func pseudonym(ofCustomerID id: String) throws -> [UInt8] {
        var norm = Normalization.customerID(id)
        let key = keys.pseudonymMAC
        return norm.withUTF8 { key.mac(UnsafeRawBufferPointer($0)) }
    }

    /// The lookup field of a data category (as on SQLite).
    public func lookupField(category: String) -> FieldSpec? {
        schema.fields.first { $0.pii && $0.lookup && Taxonomy.covers(category, $0.category) }
    }

    struct Subject {
        var id: Int64
        var pseudonym: [UInt8]
        var kekVersion: Int64
        var wrappedDEK: [UInt8]
    }

    /// Unwraps a subject's DEK; a wrong KEK, an unknown version or a modified blob is an
    /// integrity error.
    func dek(_ s: Subject) throws -> AESGCMKey {
        guard let version = UInt32(exactly: s.kekVersion), let kek = keys.kekCiphers[version] ?? reloadedKEK(version) else {
            throw VaultError(.integrity, "subject row \(s.id): its data key is wrapped with key version \(s.kekVersion), which the keyring does not hold (retired or missing)")
        }
        do {
            let dek = try kek.withKey { (k: AESGCMKey) throws(CryptoError) -> SecureBytes in
                try Envelope.unwrapDEK(s.wrappedDEK, subject: s.pseudonym, kekVersion: version, kek: k)
            }
            return try AESGCMKey(dek)
        } catch {
            throw VaultError(.integrity, "subject row \(s.id): the subject's wrapped data key does not verify (modified ciphertext or wrong keyring)")
        }
    }

    /// The KEK of a version another node added (`keys rotate` there): the keyring file is read
    /// again and its missing KEKs taken for unwrapping only (``StoreKeys/addingKEKs(of:)``);
    /// `serve` adopts the changed file in full on its own (Vault.adoptKeyringFile). Plain file
    /// reads, no statement, so this may run inside a transaction's task.
    func reloadedKEK(_ version: UInt32) -> SharedAESGCMKey? {
        guard let location = keyringLocation, let ring = try? location.load() else { return nil }
        return keyBox.withLock { keys -> SharedAESGCMKey? in
            guard let fresh = try? keys.addingKEKs(of: ring) else { return nil }
            keys = fresh
            return fresh.kekCiphers[version]
        }
    }

    func openPII(_ blob: [UInt8], field: String, subject s: Subject, dek: AESGCMKey) throws -> String {
        let bytes: [UInt8]
        do { bytes = try Envelope.openField(blob, field: field, subject: s.pseudonym, dek: dek) } catch {
            throw VaultError(.integrity, "subject row \(s.id): field \(field): ciphertext does not verify (modified, moved from another subject or field, or wrong keyring)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw VaultError(.integrity, "subject row \(s.id): field \(field): decrypted value is not UTF-8")
        }
        return text
    }

    /// A subject's decrypted profile from a row of ``profileSelect``.
    func profile(_ row: PostgresRow, pseudonym: [UInt8], fields wanted: Set<String>) throws -> ProfileView {
        let cells = PostgresRandomAccessRow(row)
        let (id, kek, wrapped) = try row.decode((Int64, Int64, ByteBuffer).self)
        let s = Subject(id: id, pseudonym: pseudonym, kekVersion: kek, wrappedDEK: wrapped.bytes)
        let dek = try dek(s)
        var blobs: [Int: [UInt8]] = [:]
        for (i, c) in piiColumns.ciphertext.enumerated() {
            if let b = try cells[3 + i].decode(ByteBuffer?.self) { blobs[c.id] = b.bytes }
        }
        guard let idBlob = blobs[0] else {
            throw VaultError(.integrity, "subject row \(id): subject has no stored customer ID (row missing)")
        }
        let customerID = try openPII(idBlob, field: schema.subjectIDField, subject: s, dek: dek)
        let attrBase = 3 + piiColumns.valueColumns.count
        var attrIndex: [String: Int] = [:]
        for (i, f) in schema.attributeFields.enumerated() { attrIndex[f.name] = attrBase + i }
        var out: [(name: String, value: ProfileValue)] = []
        for f in schema.fields where wanted.contains(f.name) {
            if f.pii {
                guard let fid = piiFieldIDs[f.name], let blob = blobs[fid] else {
                    if f.required { throw VaultError(.integrity, "subject row \(id): required field \(f.name) has no stored ciphertext: the store was altered") }
                    out.append((f.name, .null))
                    continue
                }
                out.append((f.name, ProfileStore.profileValue(try openPII(blob, field: f.name, subject: s, dek: dek), type: f.type)))
            } else if let i = attrIndex[f.name] {
                let cell = cells[i]
                let value: ProfileValue
                switch f.type {
                case .int: value = try cell.decode(Int64?.self).map(ProfileValue.int) ?? .null
                case .float: value = try cell.decode(Double?.self).map(ProfileValue.float) ?? .null
                case .bool: value = try cell.decode(Bool?.self).map(ProfileValue.bool) ?? .null
                case .date: value = try cell.decode(Int32?.self).map { .text(DateParsing.isoDate(days: $0)) } ?? .null
                case .string, .category: value = try cell.decode(String?.self).map(ProfileValue.text) ?? .null
                }
                out.append((f.name, value))
            }
        }
        return ProfileView.make(customerID: customerID, fields: out)
    }
}

// MARK: - Reads

extension PostgresProfiles {
    /// Whether a subject with this customer ID is in the store (a pseudonym lookup).
    public func exists(customerID: String) throws -> Bool {
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("looking up a subject") { [engine] in
            try await engine.transaction("looking up a subject") { conn in
                !(try await engine.rows(conn, "SELECT 1 FROM profilevault.subjects WHERE pseudonym = \(bytea(p))").isEmpty)
            }
        }
    }

    /// The decrypted profile of one subject, restricted to `fields`; nil when no subject has
    /// this customer ID (never had, or erased on any node).
    public func profile(customerID: String, fields wanted: Set<String>) throws -> ProfileView? {
        let p = try pseudonym(ofCustomerID: customerID)
        // As on SQLite, whatever a restriction says (the gate's reads use `readProfile`).
        switch try readProfile(pseudonym: p, fields: wanted, restrictionChecked: false) {
        case .found(let view): return view
        default: return nil
        }
    }

    /// One subject's profile in one statement. With `consentPurpose`, the statement reads the
    /// subject's consent state too and nothing is decrypted without it (PostgresConsent.swift).
    public func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, consentPurpose: String?) throws -> ProfileRead {
        if let consentPurpose {
            return try readProfile(pseudonym: pseudonym, fields: wanted, checkingConsentFor: consentPurpose)
        }
        return try readProfile(pseudonym: pseudonym, fields: wanted, restrictionChecked: true)
    }

    /// One subject's profile in one statement; with `restrictionChecked`, the restriction (Art.
    /// 18) is read in the same statement and nothing is decrypted for a restricted subject.
    func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, restrictionChecked: Bool) throws -> ProfileRead {
        let (select, restrictedIndex) = profileSelect(adding: restrictionChecked ? "EXISTS(SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id)" : "false")
        let sql = select + " WHERE s.pseudonym = $1"
        let row = try Self.wait("reading a profile") { [engine] in
            try await engine.single("reading a profile") { conn in
                var binds = PostgresBindings()
                binds.append(bytea(pseudonym))
                return try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)).first
            }
        }
        guard let row else { return .notFound }
        // The row is decoded here, after the wait: a column of another type than the schema's
        // (the database edited) is an integrity error as inside a transaction, never the
        // client library's own error type.
        do {
            if try PostgresRandomAccessRow(row)[restrictedIndex].decode(Bool.self) { return .restricted }
            return .found(try profile(row, pseudonym: pseudonym, fields: wanted))
        } catch {
            throw PostgresStoreError.vaultError(error, "reading a profile")
        }
    }

    /// Blind-index lookup (as on SQLite): the customer IDs of subjects whose lookup field
    /// equals `value` after normalisation, each match confirmed by decrypting (the index holds
    /// 64-bit MACs), in the order the subjects were added.
    public func find(field: String, value: String) throws -> [String] {
        guard let spec = schema.field(named: field), spec.pii, spec.lookup, let mac = keys.blindIndexMACs[field], let fid = piiFieldIDs[field],
              let macColumn = piiColumns.macColumn(id: fid), let valueColumn = piiColumns.ciphertextColumn(id: fid),
              let idColumn = piiColumns.ciphertextColumn(id: 0) else {
            throw VaultError(.configuration, "field \(field) is not a lookup field of the schema")
        }
        var norm = Normalization.lookupValue(value, for: spec)
        if norm.isEmpty { return [] }
        let digest = ProfileStore.blindIndexEntry(norm.withUTF8 { mac.mac(UnsafeRawBufferPointer($0)) })
        // Column names made of ids (c<id>, m<id>); the value is bound.
        let sql = """
            SELECT s.id, s.pseudonym, s.kek_version, s.wrapped_dek, p.\(valueColumn), p.\(idColumn)
            FROM profilevault.pii p JOIN profilevault.subjects s ON s.id = p.subject_id
            WHERE p.\(macColumn) = $1 ORDER BY s.id
            """
        let rows = try Self.wait("looking up a blind index") { [engine] in
            try await engine.transaction("looking up a blind index") { conn in
                var binds = PostgresBindings()
                binds.append(bytea(digest))
                var out: [(Int64, [UInt8], Int64, [UInt8], [UInt8]?, [UInt8]?)] = []
                for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)) {
                    let (id, p, k, w, v, c) = try row.decode((Int64, ByteBuffer, Int64, ByteBuffer, ByteBuffer?, ByteBuffer?).self)
                    out.append((id, p.bytes, k, w.bytes, v?.bytes, c?.bytes))
                }
                return out
            }
        }
        var out: [String] = []
        for (id, p, k, w, stored, idBlob) in rows {
            let s = Subject(id: id, pseudonym: p, kekVersion: k, wrappedDEK: w)
            guard let stored, let idBlob else {
                throw VaultError(.integrity, "subject row \(id): a blind-index entry without its ciphertext: the store was altered")
            }
            let dek = try dek(s)
            guard Normalization.lookupValue(try openPII(stored, field: field, subject: s, dek: dek), for: spec) == norm else { continue }
            out.append(try openPII(idBlob, field: schema.subjectIDField, subject: s, dek: dek))
        }
        return out
    }

    /// Counts and metadata: subjects, events, unretired key versions, the audit head, and the
    /// bytes of the engine's tables and indexes (`fileBytes`), and the policy in force (the
    /// newest `policy_history` record, whose version is the policy version: nodes do not write
    /// `meta`, so `meta.policy_version` is only init's, shown until a policy is recorded).
    public func status() throws -> StoreStatus {
        try Self.wait("reading the store's status") { [engine] in try await Self.status(engine: engine) }
    }

    /// The status from the engine alone (no keyring): `profilectl status` on PostgreSQL.
    static func status(engine: PostgresEngine) async throws -> StoreStatus {
        let (subjects, events, versions, meta, bytes, policy) = try await engine.transaction("reading the store's status") { conn in
            guard let counts = try await engine.rows(conn, """
                SELECT (SELECT count(*) FROM profilevault.subjects), (SELECT count(*) FROM profilevault.events),
                       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'profilevault' AND c.relkind = 'r')
                """).first else { throw PostgresStoreError(.internalFailure, "counting returned no row") }
            let (s, e, b) = try counts.decode((Int64, Int64, Int64).self)
            var versions: [UInt32] = []
            for row in try await engine.rows(conn, "SELECT version FROM profilevault.key_versions WHERE NOT retired ORDER BY version") {
                let v = try row.decode(Int64.self)
                guard let u = UInt32(exactly: v) else { throw PostgresStoreError(.integrity, "the key_versions table holds key version \(v): the database was edited") }
                versions.append(u)
            }
            var meta: [String: String] = [:]
            for row in try await engine.rows(conn, "SELECT key, value FROM profilevault.meta") {
                let (k, v) = try row.decode((String, String).self)
                meta[k] = v
            }
            return (s, e, versions, meta, b, try await engine.latestPolicy(conn))
        }
        let head = try await engine.auditHead()
        return StoreStatus.make(subjects: Int(clamping: subjects), events: Int(clamping: events), keyVersions: versions,
                           identityKeyVersion: UInt32(meta["identity_key_version"] ?? "0") ?? 0,
                           schemaVersion: Int(meta["schema_version"] ?? "0") ?? 0, policyVersion: policy?.version ?? meta["policy_version"] ?? "",
                           fileBytes: bytes, auditEntries: head.entries, auditHead: head.head, policy: policy)
    }

    /// Pseudonyms of erased subjects, with their erasure time (unix ms).
    func suppressionList() async throws -> [[UInt8]: Int64] {
        try await engine.transaction("reading the suppression list") { conn in
            var out: [[UInt8]: Int64] = [:]
            for row in try await engine.rows(conn, "SELECT pseudonym, erased_at FROM profilevault.suppressed") {
                let (p, at) = try row.decode((ByteBuffer, Int64).self)
                out[p.bytes] = at
            }
            return out
        }
    }

    /// When the subject with this customer ID was erased, if it was.
    public func erasedAt(customerID: String) throws -> Int64? {
        let p = try pseudonym(ofCustomerID: customerID)
        return try Self.wait("reading the suppression list") { [engine] in
            try await engine.transaction("reading the suppression list") { conn in
                try await engine.rows(conn, "SELECT erased_at FROM profilevault.suppressed WHERE pseudonym = \(bytea(p))").first?.decode(Int64.self)
            }
        }
    }
}
