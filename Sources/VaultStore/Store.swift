public import GRDB
public import VaultCrypto
public import VaultPolicy
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The keys one store uses, derived once from the keyring when the store is opened.
///
/// Identity keys (pseudonym, blind index, key check) come from the store's *identity version*,
/// fixed at `init`: pseudonyms must never change, or lookups and the suppression list break.
/// KEKs come from every version of the keyring that is not retired; new DEKs are wrapped with
/// the keyring's active version.
///
/// The keys every request uses are also held ready for use from many threads at once
/// (``SharedHMACSHA256Key``, ``SharedAESGCMKey``): keyed once here instead of once per call.
/// They belong to this value: when a keyring reload replaces it (``KeyBox/replace(_:)``) and the
/// last reader lets go, their OpenSSL contexts are freed and cleansed with it.
package struct StoreKeys: Sendable {
    package let identityVersion: UInt32
    package let activeKEKVersion: UInt32
    package private(set) var keks: [UInt32: SecureBytes]
    /// The KEKs again, keyed for AES-GCM (unwrapping a DEK on every read).
    package private(set) var kekCiphers: [UInt32: SharedAESGCMKey]
    package let pseudonym: SecureBytes
    /// The pseudonym key, keyed for HMAC (one pseudonym per request).
    package let pseudonymMAC: SharedHMACSHA256Key
    /// Blind-index key per lookup field name: one key per field, so equal values in two fields
    /// do not produce equal index entries.
    package let blindIndex: [String: SecureBytes]
    /// The blind-index keys again, keyed for HMAC (lookups).
    package let blindIndexMACs: [String: SharedHMACSHA256Key]
    /// Signs audit checkpoints; derived from the identity version like the pseudonym key.
    package let auditSigning: Ed25519PrivateKey
    /// MACs model artifacts (HMAC-SHA256); derived from the identity version like the pseudonym
    /// key, so artifacts stay valid across key rotations.
    package let modelArtifactMAC: SharedHMACSHA256Key
    /// Seals the request register's customer IDs, notes and reasons (AES-256-GCM); derived from
    /// the identity version like the pseudonym key, so it survives key rotations. Erasure
    /// deletes a subject's sealed register columns (RequestRegister.swift).
    package let requestRegister: SharedAESGCMKey
    /// Keys the digests of ingested records (`subjects.record_digest`); identity version.
    package let recordDigest: SecureBytes
    /// MACs the erasure journal's lines (ErasureJournal.swift); identity version, so a journal
    /// stays valid across key rotations.
    package let erasureJournal: SharedHMACSHA256Key
    /// Seals the release cache's rows (AES-256-GCM) and keys its lookup digests (HMAC-SHA256);
    /// identity version, so cached releases survive key rotations (ReleaseCache.swift).
    package let releaseCache: SharedAESGCMKey
    package let releaseDigest: SharedHMACSHA256Key

    package init(keyring: Keyring, identityVersion: UInt32, schema: Schema) throws {
        self.identityVersion = identityVersion
        self.activeKEKVersion = keyring.active
        var keks: [UInt32: SecureBytes] = [:]
        var ciphers: [UInt32: SharedAESGCMKey] = [:]
        for v in keyring.versions where !keyring.isRetired(v) {
            let k = try keyring.derive(.kek, version: v)
            keks[v] = k
            ciphers[v] = try SharedAESGCMKey(k)
        }
        self.keks = keks
        self.kekCiphers = ciphers
        self.pseudonym = try keyring.derive(.pseudonym, version: identityVersion)
        self.pseudonymMAC = try SharedHMACSHA256Key(pseudonym)
        var bi: [String: SecureBytes] = [:]
        var biMACs: [String: SharedHMACSHA256Key] = [:]
        for f in schema.fields where f.pii && f.lookup {
            let k = try keyring.derive(.blindIndex(field: f.name), version: identityVersion)
            bi[f.name] = k
            biMACs[f.name] = try SharedHMACSHA256Key(k)
        }
        self.blindIndex = bi
        self.blindIndexMACs = biMACs
        self.auditSigning = try Ed25519PrivateKey(seed: keyring.derive(.auditSigning, version: identityVersion))
        self.modelArtifactMAC = try SharedHMACSHA256Key(keyring.derive(.modelArtifact, version: identityVersion))
        self.requestRegister = try SharedAESGCMKey(keyring.derive(.requestRegister, version: identityVersion))
        self.recordDigest = try keyring.derive(.recordDigest, version: identityVersion)
        self.erasureJournal = try SharedHMACSHA256Key(keyring.derive(.erasureJournal, version: identityVersion))
        self.releaseCache = try SharedAESGCMKey(keyring.derive(.releaseCache, version: identityVersion))
        self.releaseDigest = try SharedHMACSHA256Key(keyring.derive(.releaseDigest, version: identityVersion))
    }

    /// These keys with the KEKs of `keyring`'s versions they lack (not retired), for
    /// unwrapping only: the active version and every identity key stay these. A reader that
    /// meets a DEK wrapped under a version another process added reloads the keyring file this
    /// way without a store round trip. Nil when `keyring` is not this keyring grown (its
    /// identity version derives another pseudonym key): a foreign file in the keyring's place
    /// adds nothing. Adopting the keyring (`adopt(keyring:)`, which checks every version's key
    /// check against the store) switches the active version.
    package func addingKEKs(of keyring: Keyring) throws -> StoreKeys? {
        guard keyring.versions.contains(identityVersion),
              try keyring.derive(.pseudonym, version: identityVersion) == pseudonym else { return nil }
        var copy = self
        for v in keyring.versions where !keyring.isRetired(v) && copy.keks[v] == nil {
            let k = try keyring.derive(.kek, version: v)
            copy.keks[v] = k
            copy.kekCiphers[v] = try SharedAESGCMKey(k)
        }
        return copy
    }

    package static func keyCheck(keyring: Keyring, version: UInt32) throws -> [UInt8] {
        let key = try keyring.derive(.keyCheck, version: version)
        return try HMACSHA256.mac(key: key, message: Array("profilevault key check v1".utf8))
    }
}

/// The store's keys, replaceable while the store is open: after `keys rotate` another process
/// (or this one) may meet a DEK wrapped under a KEK version it has not loaded yet; it then
/// reloads the keyring file once, takes the KEKs it lacks (``StoreKeys/addingKEKs(of:)``) and
/// goes on, so readers need no restart during a rotation.
///
/// `@unchecked Sendable`: `value` is only read and written while `lock` is held.
final class KeyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: StoreKeys
    let keyringLocation: KeyringLocation?
    let schema: Schema

    init(_ keys: StoreKeys, keyringLocation: KeyringLocation?, schema: Schema) {
        value = keys
        self.keyringLocation = keyringLocation
        self.schema = schema
    }

    var current: StoreKeys {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    /// The KEK of `version`, reloading the keyring file once if this version is not loaded.
    func kek(_ version: UInt32) -> SecureBytes? {
        let keys = current
        if let k = keys.keks[version] { return k }
        return reloaded(identityVersion: keys.identityVersion)?.keks[version]
    }

    /// The KEK of `version` keyed for AES-GCM, with the same reload as ``kek(_:)``.
    func kekCipher(_ version: UInt32) -> SharedAESGCMKey? {
        let keys = current
        if let k = keys.kekCiphers[version] { return k }
        return reloaded(identityVersion: keys.identityVersion)?.kekCiphers[version]
    }

    private func reloaded(identityVersion: UInt32) -> StoreKeys? {
        guard let location = keyringLocation, let ring = try? location.load() else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let fresh = try? value.addingKEKs(of: ring) else { return nil }
        value = fresh
        return fresh
    }

    func replace(_ keys: StoreKeys) {
        lock.lock()
        value = keys
        lock.unlock()
    }
}

/// The encrypted profile store: one SQLite file through one GRDB `DatabasePool` (WAL,
/// `secure_delete`, synchronous FULL), holding subjects with wrapped DEKs, encrypted PII,
/// blind indexes, typed attributes and events.
///
/// `ProfileStore` is `Sendable`: its state is immutable after opening, and all database access
/// goes through GRDB's own serialised writer and concurrent readers.
public final class ProfileStore: Sendable {
    public let path: String
    public let schema: Schema
    let pool: DatabasePool
    let keyBox: KeyBox
    var keys: StoreKeys { keyBox.current }
    /// Group commit of read and denial audit entries (see `audit(_:)`).
    let auditCommits = AuditGroupCommit()
    /// The last verified checkpoint and the published-heads file (see `verifiedHead`).
    let auditHeads = AuditHeadState()
    /// Background WAL checkpoints (`startBackgroundCheckpoints`), stopped by `close()`.
    private let checkpointer = Mutex<WALCheckpointer?>(nil)
    /// PII field name -> small integer id: the `pii` table's columns are `c<id>` (ciphertext)
    /// and, for lookup fields, `m<id>` (blind-index MAC). See `PIIColumns`.
    let piiFieldIDs: [String: Int]
    /// The `pii` table's layout for this schema.
    let piiColumns: PIIColumns
    /// Name of the pseudo-field that holds the encrypted external customer ID.
    public var subjectIDField: String { schema.subjectIDField }

    /// The storage format this code writes.
    public static let storeFormatVersion = 3

    private init(path: String, schema: Schema, pool: DatabasePool, keys: KeyBox, piiFieldIDs: [String: Int]) {
        self.path = path
        self.schema = schema
        self.pool = pool
        self.keyBox = keys
        self.piiFieldIDs = piiFieldIDs
        self.piiColumns = PIIColumns(schema: schema)
    }

    // MARK: - Opening and creating

    static func makePool(path: String) throws -> DatabasePool {
        var config = Configuration()
        config.label = "ProfileVault"
        config.busyMode = .timeout(30)
        config.foreignKeysEnabled = false
        config.prepareDatabase { db in
            // Overwrite deleted content with zeros, so erased ciphertext does not linger in
            // free pages; FULL sync so a committed batch survives power loss, not only kill -9.
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA cache_size = -65536")
            // The DP aggregates' native sum (GridSumFunction.swift), on every connection.
            try GridSum.register(db)
        }
        return try DatabasePool(path: path, configuration: config)
    }

    /// Creates a new store file for `schema` (refuses an existing file) and records the keyring's
    /// active version as the identity version.
    public static func create(path: String, keyring: Keyring, schema: Schema, policyVersion: String) throws -> ProfileStore {
        if FileManager.default.fileExists(atPath: path) {
            throw VaultError(.configuration, "\(path): a store already exists here; choose another path or remove it")
        }
        // Create the file 0600 before SQLite does, so the database (and its WAL and SHM, which
        // SQLite creates with the same mode) are not readable by others.
        let fd = Glibc.open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        if fd < 0 {
            throw VaultError(.configuration, "\(path): cannot create the store (\(String(cString: strerror(errno))))")
        }
        _ = Glibc.close(fd)
        do {
            let pool = try makePool(path: path)
            let identity = keyring.active
            let check = try StoreKeys.keyCheck(keyring: keyring, version: identity)
            try migrator(schema: schema).migrate(pool)
            let now = Int64(Date().timeIntervalSince1970)
            try pool.write { db in
                let meta: [(String, String)] = [
                    ("store_format", String(storeFormatVersion)),
                    ("schema_version", String(schema.version)),
                    ("schema_fingerprint", schemaFingerprint(schema)),
                    ("policy_version", policyVersion),
                    ("identity_key_version", String(identity)),
                    ("created_at", String(now)),
                ]
                for (k, v) in meta {
                    try db.execute(sql: "INSERT INTO meta(key, value) VALUES (?, ?)", arguments: [k, v])
                }
                try db.execute(
                    sql: "INSERT INTO key_versions(version, key_check, added_at, retired) VALUES (?, ?, ?, 0)",
                    arguments: [Int64(identity), Data(check), now])
                for (name, id) in PIIColumns.fieldIDs(schema) {
                    try db.execute(sql: "INSERT INTO pii_fields(id, name) VALUES (?, ?)", arguments: [id, name])
                }
            }
            try pool.close()
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: path + "-wal")
            try? FileManager.default.removeItem(atPath: path + "-shm")
            throw error
        }
        return try open(path: path, keyring: keyring, schema: schema)
    }

    /// Opens an existing store. Checks that the keyring is the one the store was created with
    /// (integrity error otherwise) and that the schema matches (configuration error otherwise).
    public static func open(path: String, keyring: Keyring, schema: Schema) throws -> ProfileStore {
        let pool = try openPool(path: path)
        let (meta, piiIDs, checks) = try pool.read { db -> ([String: String], [String: Int], [UInt32: [UInt8]]) in
            // Decoded without GRDB's trapping conversions: a value of the wrong type (a file
            // edited with sqlite3) is an integrity error, never a crash.
            let meta = try Self.readMeta(db)
            var ids: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT id, name FROM pii_fields") {
                guard let id = row.auditInt("id").flatMap({ Int(exactly: $0) }), let name = row.auditText("name") else {
                    throw VaultError(.integrity, "\(path): the pii_fields table holds a value of the wrong type: the file was edited")
                }
                ids[name] = id
            }
            var checks: [UInt32: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT version, key_check FROM key_versions") {
                guard let v = row.auditInt("version").flatMap({ UInt32(exactly: $0) }), let d = row.auditBlob("key_check") else {
                    throw VaultError(.integrity, "\(path): the key_versions table holds a value of the wrong type: the file was edited")
                }
                checks[v] = d
            }
            return (meta, ids, checks)
        }
        guard let identityText = meta["identity_key_version"], let identity = UInt32(identityText) else {
            throw VaultError(.configuration, "\(path): not a ProfileVault store (no identity key version)")
        }
        guard meta["schema_fingerprint"] == schemaFingerprint(schema) else {
            throw VaultError(.configuration,
                "\(schema.file): the schema differs from the one \(path) was created with; a changed schema needs a new store or a migration")
        }
        guard keyring.versions.contains(identity) else {
            throw VaultError(.integrity, "keyring \(keyring.path ?? "?") lacks key version \(identity), which this store was created with")
        }
        let check = try StoreKeys.keyCheck(keyring: keyring, version: identity)
        guard let stored = checks[identity], constantTimeEqual(stored, check) else {
            throw VaultError(.integrity, "keyring \(keyring.path ?? "?") does not match the store \(path): key version \(identity) fails its key check")
        }
        for (v, storedCheck) in checks where keyring.versions.contains(v) {
            let c = try StoreKeys.keyCheck(keyring: keyring, version: v)
            guard constantTimeEqual(storedCheck, c) else {
                throw VaultError(.integrity, "keyring \(keyring.path ?? "?") does not match the store \(path): key version \(v) fails its key check")
            }
        }
        guard piiIDs == Dictionary(uniqueKeysWithValues: PIIColumns.fieldIDs(schema)) else {
            // The `pii` columns are named by these ids; the schema fingerprint makes this unreachable.
            throw VaultError(.configuration, "\(path): the store's PII field table does not match the schema")
        }
        let keys = try StoreKeys(keyring: keyring, identityVersion: identity, schema: schema)
        try migrator(schema: schema).migrate(pool)
        if checks[keyring.active] == nil {
            // A version added to the keyring since the store last saw it: record its check value.
            let c = try StoreKeys.keyCheck(keyring: keyring, version: keyring.active)
            try pool.write { db in
                try db.execute(
                    sql: "INSERT OR IGNORE INTO key_versions(version, key_check, added_at, retired) VALUES (?, ?, ?, 0)",
                    arguments: [Int64(keyring.active), Data(c), Int64(Date().timeIntervalSince1970)])
            }
        }
        let box = KeyBox(keys, keyringLocation: keyring.location, schema: schema)
        return ProfileStore(path: path, schema: schema, pool: pool, keys: box, piiFieldIDs: piiIDs)
    }

    static func openPool(path: String) throws -> DatabasePool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else {
            throw VaultError(.notFound, "\(path): no store here; create one with `profilectl init`")
        }
        let pool = try makePool(path: path)
        try pool.read { db in
            guard try db.tableExists("meta") else {
                throw VaultError(.configuration, "\(path): not a ProfileVault store")
            }
        }
        return pool
    }

    /// Reads the store's metadata without any key (for `status`).
    public static func readMeta(path: String) throws -> [String: String] {
        let pool = try openPool(path: path)
        return try pool.read { db in try readMeta(db) }
    }

    /// The meta table, decoded without trapping (a value that is not text is an integrity error).
    static func readMeta(_ db: Database) throws -> [String: String] {
        var meta: [String: String] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT key, value FROM meta") {
            guard let k = row.auditText("key"), let v = row.auditText("value") else {
                throw VaultError(.integrity, "the store's meta table holds a value of the wrong type: the file was edited")
            }
            meta[k] = v
        }
        return meta
    }

    /// A canonical description of the schema's storage shape; a store refuses a schema whose
    /// fingerprint differs from the one it was created with.
    package static func schemaFingerprint(_ schema: Schema) -> String {
        // Bounds and domains are part of it: the DP layer relies on every stored value lying
        // within the schema's bounds (ingest enforces them), so they cannot change under a store.
        func b(_ r: ClosedRange<Double>?) -> String { r.map { "[\($0.lowerBound),\($0.upperBound)]" } ?? "" }
        var parts = ["id:\(schema.subjectIDField)"]
        for f in schema.fields {
            parts.append("f:\(f.name):\(f.type.rawValue):\(f.pii ? "pii" : "attr"):\(f.lookup ? "lookup" : ""):\(b(f.bounds)):\(f.domain?.joined(separator: "|") ?? "")")
        }
        for e in schema.events { parts.append("e:\(e.name):\(e.value.type.rawValue):\(b(e.value.bounds))") }
        return parts.joined(separator: ";")
    }

    /// SQL type of an attribute column.
    static func sqlType(_ t: FieldType) -> String {
        switch t {
        case .int, .date, .bool: "INTEGER"
        case .float: "REAL"
        case .string, .category: "TEXT"
        }
    }

    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    static func migrator(schema: Schema) -> DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-core") { db in
            try db.execute(sql: """
                CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE key_versions(
                    version INTEGER PRIMARY KEY, key_check BLOB NOT NULL,
                    added_at INTEGER NOT NULL, retired INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE pii_fields(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
                CREATE TABLE subjects(
                    id INTEGER PRIMARY KEY,
                    pseudonym BLOB NOT NULL UNIQUE,
                    kek_version INTEGER NOT NULL,
                    wrapped_dek BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    last_activity INTEGER NOT NULL);
                CREATE TABLE pii(
                    subject_id INTEGER NOT NULL, field INTEGER NOT NULL, ciphertext BLOB NOT NULL,
                    PRIMARY KEY(subject_id, field)) WITHOUT ROWID;
                CREATE TABLE blind_index(
                    field INTEGER NOT NULL, mac BLOB NOT NULL, subject_id INTEGER NOT NULL,
                    PRIMARY KEY(field, mac, subject_id)) WITHOUT ROWID;
                CREATE INDEX blind_index_subject ON blind_index(subject_id);
                CREATE TABLE events(
                    id INTEGER PRIMARY KEY, subject_id INTEGER NOT NULL, kind TEXT NOT NULL,
                    item TEXT NOT NULL, value REAL NOT NULL, time INTEGER NOT NULL);
                CREATE UNIQUE INDEX events_identity ON events(subject_id, kind, time, item, value);
                """)
            var cols = ["subject_id INTEGER PRIMARY KEY"]
            for f in schema.attributeFields { cols.append("\(quoted(f.name)) \(sqlType(f.type))") }
            try db.execute(sql: "CREATE TABLE attributes(\(cols.joined(separator: ", ")))")
        }
        registerAuditMigration(&m)
        registerPrivacyMigration(&m)
        registerDPMigration(&m)
        m.registerMigration("v5-compact-lookup-keys") { db in
            // Random-key indexes are what bulk ingest pays for: every batch rewrites most of their
            // pages. The pseudonym index now holds its first 8 bytes (an expression index, no
            // stored copy; uniqueness is the ingest writer's find-then-insert, and lookups
            // compare the whole pseudonym), and blind-index entries are 64-bit MACs (matches are
            // confirmed by decrypting). Existing stores are rebuilt once, ids unchanged.
            try db.execute(sql: """
                CREATE TABLE subjects_v5(
                    id INTEGER PRIMARY KEY,
                    pseudonym BLOB NOT NULL,
                    kek_version INTEGER NOT NULL,
                    wrapped_dek BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    last_activity INTEGER NOT NULL);
                INSERT INTO subjects_v5(id, pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity)
                    SELECT id, pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity FROM subjects ORDER BY id;
                DROP TABLE subjects;
                ALTER TABLE subjects_v5 RENAME TO subjects;
                CREATE INDEX subjects_pseudonym ON subjects(\(pseudonymKey));
                CREATE TABLE blind_index_v5(
                    field INTEGER NOT NULL, mac BLOB NOT NULL, subject_id INTEGER NOT NULL,
                    PRIMARY KEY(field, mac, subject_id)) WITHOUT ROWID;
                INSERT OR IGNORE INTO blind_index_v5(field, mac, subject_id)
                    SELECT field, substr(mac, 1, \(blindIndexBytes)), subject_id FROM blind_index;
                DROP TABLE blind_index;
                ALTER TABLE blind_index_v5 RENAME TO blind_index;
                CREATE INDEX blind_index_subject ON blind_index(subject_id);
                UPDATE meta SET value = '2' WHERE key = 'store_format';
                """)
        }
        m.registerMigration("v6-one-pii-row") { db in
            // One `pii` row per subject (a column per PII field) with each lookup field's
            // blind-index MAC beside its ciphertext, indexed: ingest writes one row and one index
            // entry per lookup field instead of a row per field, a blind-index row per lookup
            // field and its subject index (docs/benchmarks.md). Existing stores are rebuilt once.
            let c = PIIColumns(schema: schema)
            let pivot = c.ciphertext.map { "max(CASE field WHEN \($0.id) THEN ciphertext END)" }.joined(separator: ", ")
            let macs = c.macs.map { "\($0.column) = (SELECT mac FROM blind_index b WHERE b.subject_id = pii_v6.subject_id AND b.field = \($0.id))" }
            try db.execute(sql: """
                CREATE TABLE pii_v6(\(c.tableColumns));
                INSERT INTO pii_v6(subject_id, \(c.ciphertext.map(\.column).joined(separator: ", ")))
                    SELECT subject_id, \(pivot) FROM pii GROUP BY subject_id ORDER BY subject_id;
                \(macs.isEmpty ? "" : "UPDATE pii_v6 SET " + macs.joined(separator: ", ") + ";")
                DROP TABLE pii;
                DROP TABLE blind_index;
                ALTER TABLE pii_v6 RENAME TO pii;
                \(c.indexDefinitions)
                UPDATE meta SET value = '3' WHERE key = 'store_format';
                """)
        }
        registerPolicyMigration(&m)
        registerAuditChainMigration(&m)
        registerStoreIDMigration(&m)
        registerRightsMigration(&m)
        registerRequestMigration(&m)
        registerIngestSourcesMigration(&m)
        registerAuditArchiveMigration(&m)
        registerReleaseCacheMigration(&m)
        return m
    }

    /// The indexed key of a pseudonym (its first 8 bytes), and the condition that finds a subject
    /// by the whole pseudonym bound as `?1` through that index.
    static let pseudonymKey = "substr(pseudonym, 1, 8)"
    static let pseudonymMatch = "\(pseudonymKey) = substr(?1, 1, 8) AND pseudonym = ?1"

    /// Closes the pool; the store is unusable afterwards.
    public func close() throws {
        checkpointer.withLock { c in c?.stop(); c = nil }
        try pool.close()
    }

    /// For a long-running process with many small commits (`serve`): WAL checkpoints move off
    /// the commits onto a thread of their own (see `WALCheckpointer`). `close()` stops it.
    /// Waits for the background checkpointer's next full pass (tests).
    func waitForBackgroundCheckpoint() {
        let c = checkpointer.withLock { $0 }
        c?.waitForNextPass()
    }

    public func startBackgroundCheckpoints(every interval: Double = 0.05) throws {
        try checkpointer.withLock { c in
            guard c == nil else { return }
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
            c = try WALCheckpointer(path: path, interval: interval)
        }
    }

    /// Writes the WAL back into the main file and truncates it.
    public func checkpoint() throws {
        try pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
    }
}
