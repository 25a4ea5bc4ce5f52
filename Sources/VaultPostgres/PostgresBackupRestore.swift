import Foundation
import Logging
import PostgresNIO
public import VaultAudit
public import VaultCrypto
public import VaultPolicy
public import VaultStore
import VaultValues

// `profilectl backup --out FILE` and `profilectl restore --to postgres://...` on PostgreSQL
// (docs/deployment.md, "Backups that remember erasures").
//
// Design: one REPEATABLE READ READ ONLY transaction (one snapshot: every table as of one
// moment, while the nodes go on writing) reads every table of the `profilevault` schema,
// found in the catalog (so a table added by a later migration is carried without a change
// here), each row as PostgreSQL's own JSON of it (`row_to_json`); restore loads each row back
// with `json_populate_recordset` into the same table of a new store, so every value comes back
// through PostgreSQL's own input functions, type for type. Nothing is decrypted: ciphertexts,
// wrapped keys, pseudonyms and the audit chain are copied as stored. The restore goes through
// what `migrate` does for a copy (PostgresMigrate.swift): the target created by
// ``PostgresProfiles/create(owner:schema:keyring:options:)``, one transaction holding the
// migration and subject locks and the audit head, the emptiness check, counts per table and the
// digest of every subject's stored row (``SubjectDigest``, over ``PostgresProfiles/snapshotSelect``)
// compared before the commit, the whole chain verified after it.
//
// File format `profilevault-postgres-backup/1`, JSON Lines, each line MACed and chained as
// the erasure journal's are (ErasureJournal.swift), under the same keyring-derived key
// (`pv:erasure-journal`, identity version), separated from journals by its first line's format:
// 1. a header `{"audit_head":hex,"audit_seq":n,"audit_time":ms,"format":..,"identity_key_version":n,"tables":[[name,[[column,type],..]],..],"written_at":ms}`;
// 2. per table, in an order where a table comes after those its foreign keys name, lines of up
//    to 500 rows `{"rows":["<row_to_json>",..],"t":"<table>"}`;
// 3. a trailer `{"counts":{table:n,..},"end":true,"subject_digest":hex}`.
// A file altered, cut, reordered or of another keyring is refused (exit 1) naming the record.

/// The store's tables (schema `profilevault`) and their columns as the catalog lists them.
struct StoreTable: Sendable, Equatable {
    var name: String
    /// `[column, type]` in column order.
    var columns: [[String]]
}

extension PostgresEngine {
    /// Every table of the store, each after the tables its foreign keys name, with its columns.
    func storeTables(_ conn: PostgresConnection) async throws -> [StoreTable] {
        var columns: [String: [[String]]] = [:]
        var order: [String] = []
        for row in try await rows(conn, """
            SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'profilevault' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY c.relname, a.attnum
            """) {
            let (t, c, ty) = try row.decode((String, String, String).self)
            if columns[t] == nil { order.append(t) }
            columns[t, default: []].append([c, ty])
        }
        var needs: [String: Set<String>] = [:]
        for row in try await rows(conn, """
            SELECT a.relname::text, b.relname::text FROM pg_constraint k
            JOIN pg_class a ON a.oid = k.conrelid JOIN pg_class b ON b.oid = k.confrelid JOIN pg_namespace n ON n.oid = a.relnamespace
            WHERE n.nspname = 'profilevault' AND k.contype = 'f'
            """) {
            let (from, to) = try row.decode((String, String).self)
            if from != to { needs[from, default: []].insert(to) }
        }
        var out: [StoreTable] = []
        var placed = Set<String>()
        while out.count < order.count {
            guard let next = order.first(where: { !placed.contains($0) && (needs[$0] ?? []).isSubset(of: placed) }) else {
                throw PostgresStoreError(.internalFailure, "the store's tables name each other in a cycle of foreign keys")
            }
            guard PostgresBackupFile.isPlainName(next) else {
                throw PostgresStoreError(.integrity, "the store holds a table whose name is not a plain identifier: the database was edited")
            }
            placed.insert(next)
            out.append(StoreTable(name: next, columns: columns[next] ?? []))
        }
        return out
    }
}

enum PostgresBackupFile {
    static let format = "profilevault-postgres-backup/1"
    /// Rows per line.
    static let rowsPerLine = 500
    /// The database's set-up, not the store's: not restored (the target's own, made by the
    /// same migrations, must list the same versions).
    static let setupTables: Set<String> = ["schema_migrations"]
    /// Rows the target's `create` wrote already: restored by their own rules.
    /// (`population_epoch`: the target's row stays; the restore gives it a fresh epoch.)
    static let mergedTables: Set<String> = ["meta", "pii_fields", "key_versions", "audit_head", "population_epoch"]

    static func isPlainName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 63 && s.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    /// The lines of a backup file, one at a time, without reading it whole.
    final class Lines {
        let handle: FileHandle
        var buffer: [UInt8] = []
        var start = 0
        var done = false
        /// Whether the last line read ended with a line end.
        var lastEnded = true
        init(path: String) throws {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, let h = FileHandle(forReadingAtPath: path) else {
                throw VaultError(.notFound, "\(path): no backup file here")
            }
            handle = h
        }
        deinit { try? handle.close() }
        func next() throws -> [UInt8]? {
            while true {
                if let nl = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(buffer[start..<nl])
                    start = nl + 1
                    lastEnded = true
                    return line
                }
                if done {
                    guard start < buffer.count else { return nil }
                    let line = Array(buffer[start...])
                    start = buffer.count
                    lastEnded = false
                    return line
                }
                if start > 0 { buffer.removeFirst(start); start = 0 }
                guard let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty else { done = true; continue }
                buffer += chunk
            }
        }
    }

    /// A backup line checked: its MAC chained from `previous` (updated), parsed. Any failure is
    /// an integrity error naming the file and the record (from 0).
    static func verify(_ raw: [UInt8], record: Int, ended: Bool, previous: inout [UInt8], key: SharedHMACSHA256Key, label: String) throws -> JSONValue {
        func bad(_ why: String) -> VaultError {
            VaultError(.integrity, "\(label): record \(record): the backup \(why): it was altered, truncated or was written under another keyring; nothing restored")
        }
        guard ended else { throw bad("ends inside this record (the file was cut short)") }
        guard let (body, mac) = ErasureJournal.split(raw) else { throw bad("has a record without a MAC") }
        guard constantTimeEqual(key.mac(previous + body), mac) else { throw bad("has a record whose MAC does not verify") }
        previous = mac
        guard let value = try? JSONValue.parse(body), case .object = value else { throw bad("has a record that is not a JSON object") }
        return value
    }

    static func seal(_ value: JSONValue, previous: inout [UInt8], key: SharedHMACSHA256Key) -> [UInt8] {
        ErasureJournal.sealLine(value, previous: &previous, key: key)
    }
}

extension PostgresProfiles {
    /// `profilectl backup --out FILE` on PostgreSQL: every table of the store, read in one
    /// REPEATABLE READ READ ONLY transaction (one snapshot while the nodes go on writing), into
    /// `file` (new, 0600: ``OutputFile``), sealed line by line (see the file's comment). Returns
    /// the snapshot's audit head.
    public func backup(into file: OutputFile) throws -> (sequence: Int64, head: String) {
        let engine = self.engine
        let key = keys.erasureJournal
        let identity = keys.identityVersion
        let conn = try Self.wait("connecting for the backup") { try await engine.connectDirect() }
        defer { try? Self.wait("closing the backup connection") { try await conn.close() } }
        let (tables, seq, hash, time) = try Self.wait("starting the backup") { () -> ([StoreTable], Int64, [UInt8], Int64) in
            try await engine.exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let tables = try await engine.storeTables(conn)
            guard let h = try await engine.rows(conn, "SELECT seq, hash, time FROM profilevault.audit_head WHERE id = 1").first else {
                throw PostgresStoreError(.integrity, "the audit head row is missing: the database was edited")
            }
            let (seq, hash, time) = try h.decode((Int64, ByteBuffer, Int64).self)
            return (tables, seq, hash.bytes, time)
        }
        var previous = [UInt8](repeating: 0, count: 32)
        let header: JSONValue = .object([
            ("audit_head", .string(AuditLog.hex(hash))), ("audit_seq", .int(seq)), ("audit_time", .int(time)),
            ("format", .string(PostgresBackupFile.format)), ("identity_key_version", .int(Int64(identity))),
            ("tables", .array(tables.map { (t: StoreTable) -> JSONValue in
                let columns: [JSONValue] = t.columns.map { (c: [String]) -> JSONValue in .array(c.map { JSONValue.string($0) }) }
                return .array([.string(t.name), .array(columns)])
            })),
            ("written_at", .int(AuditLog.nowMillis)),
        ])
        try file.write(PostgresBackupFile.seal(header, previous: &previous, key: key))
        var counts: [(String, JSONValue)] = []
        for t in tables {
            let name = t.name
            try Self.wait("reading table \(name)") {
                try await engine.exec(conn, PostgresQuery(unsafeSQL: "DECLARE backup_rows NO SCROLL CURSOR FOR SELECT row_to_json(t)::text FROM profilevault.\(PostgresEngine.quoted(name)) t"))
            }
            var n: Int64 = 0
            while true {
                let rows = try Self.wait("reading table \(name)") { () -> [String] in
                    try await engine.rows(conn, PostgresQuery(unsafeSQL: "FETCH \(PostgresBackupFile.rowsPerLine) FROM backup_rows")).map { try $0.decode(String.self) }
                }
                if rows.isEmpty { break }
                n += Int64(rows.count)
                try file.write(PostgresBackupFile.seal(.object([("rows", .array(rows.map(JSONValue.string))), ("t", .string(name))]), previous: &previous, key: key))
            }
            try Self.wait("reading table \(name)") { try await engine.exec(conn, "CLOSE backup_rows") }
            counts.append((name, .int(n)))
        }
        // The digest of every subject's stored row, in the same snapshot: restore recomputes it
        // on the rows it loaded before it commits.
        let select = snapshotSelect
        var digest = SubjectDigest()
        var after = Int64.min
        while true {
            let from = after
            let chunk = try Self.wait("reading the subjects' digest") { () -> [SnapshotSubject] in
                let rows = try await engine.rows(conn, PostgresQuery(unsafeSQL: select + " WHERE s.id > $1 ORDER BY s.id LIMIT 2048",
                                                                     binds: { var b = PostgresBindings(); b.append(from); return b }()))
                return try rows.map { try self.snapshotSubject($0) }
            }
            guard let last = chunk.last else { break }
            for s in chunk { digest.add(s) }
            after = last.id
        }
        try Self.wait("ending the backup") { try await engine.exec(conn, "COMMIT") }
        try file.write(PostgresBackupFile.seal(.object([("counts", .object(counts)), ("end", .bool(true)),
                                                        ("subject_digest", .string(AuditLog.hex(digest.value)))]), previous: &previous, key: key))
        try file.commit()
        return (seq, AuditLog.hex(hash))
    }
}

/// What pass 1 of a restore learned from the backup file (all of it verified).
struct VerifiedBackup {
    var tables: [StoreTable] = []
    var sequence: Int64 = 0
    var head = ""
    var headTime: Int64 = 0
    var identityVersion: UInt32 = 0
    var meta: [String: String] = [:]
    var counts: [String: Int64] = [:]
    var digest: [UInt8] = []
    var records = 0
}

extension PostgresStore {
    /// Reads the backup at `path` whole once: every record's MAC and the chain, the tables'
    /// rows against the header's tables, the trailer's counts; returns what restore needs.
    static func verifyBackup(_ path: String, keyring: Keyring, schema: Schema) throws -> VerifiedBackup {
        let lines = try PostgresBackupFile.Lines(path: path)
        guard let first = try lines.next() else { throw VaultError(.integrity, "\(path): record 0: the backup is empty; nothing restored") }
        // The header names the identity version whose key MACs the file; a wrong one fails the MAC.
        guard let (hbody, _) = ErasureJournal.split(first), let h = try? JSONValue.parse(hbody), h["format"] == .string(PostgresBackupFile.format),
              case .int(let iv)? = h["identity_key_version"], let identity = UInt32(exactly: iv) else {
            if first.starts(with: Array("SQLite format 3".utf8)) {
                throw VaultError(.invalidInput, "\(path): a backup of a SQLite store; restore it to a SQLite store (--to FILE), or restore it there and migrate")
            }
            throw VaultError(.invalidInput, "\(path): not a ProfileVault backup of a PostgreSQL store")
        }
        let key: SharedHMACSHA256Key
        do { key = try StoreKeys(keyring: keyring, identityVersion: identity, schema: schema).erasureJournal } catch {
            throw VaultError(.configuration, "keyring \(keyring.path ?? "?"): cannot derive the keys of identity version \(identity) the backup was written under")
        }
        var out = VerifiedBackup()
        out.identityVersion = identity
        var previous = [UInt8](repeating: 0, count: 32)
        var record = 0
        var raw: [UInt8]? = first
        var rowCounts: [String: Int64] = [:]
        var trailer: JSONValue?
        while let line = raw {
            let value = try PostgresBackupFile.verify(line, record: record, ended: lines.lastEnded, previous: &previous, key: key, label: path)
            func bad(_ why: String) -> VaultError { VaultError(.integrity, "\(path): record \(record): the backup \(why); nothing restored") }
            guard trailer == nil else { throw bad("holds a record after its end") }
            if record == 0 {
                guard case .int(let seq)? = value["audit_seq"], case .string(let head)? = value["audit_head"], case .int(let time)? = value["audit_time"],
                      case .array(let tables)? = value["tables"] else { throw bad("has a malformed header") }
                out.sequence = seq
                out.head = head
                out.headTime = time
                for t in tables {
                    guard case .array(let pair) = t, pair.count == 2, case .string(let name) = pair[0], PostgresBackupFile.isPlainName(name),
                          case .array(let cols) = pair[1] else { throw bad("has a malformed header") }
                    var columns: [[String]] = []
                    for c in cols {
                        guard case .array(let ct) = c, ct.count == 2, case .string(let cn) = ct[0], case .string(let ty) = ct[1] else { throw bad("has a malformed header") }
                        columns.append([cn, ty])
                    }
                    out.tables.append(StoreTable(name: name, columns: columns))
                }
            } else if value["end"] == .bool(true) {
                trailer = value
            } else {
                guard case .string(let t)? = value["t"], out.tables.contains(where: { $0.name == t }), case .array(let rows)? = value["rows"], !rows.isEmpty else {
                    throw bad("has a malformed record")
                }
                rowCounts[t, default: 0] += Int64(rows.count)
                if t == "meta" {
                    for r in rows {
                        guard case .string(let text) = r, let row = try? JSONValue.parse(Array(text.utf8)), case .string(let k)? = row["key"],
                              case .string(let v)? = row["value"] else { throw bad("has a malformed meta row") }
                        out.meta[k] = v
                    }
                }
            }
            record += 1
            raw = try lines.next()
        }
        guard let trailer else { throw VaultError(.integrity, "\(path): record \(record): the backup has no end record (truncated); nothing restored") }
        guard case .object(let counts)? = trailer["counts"], case .string(let d)? = trailer["subject_digest"], let digest = AuditLog.unhex(d) else {
            throw VaultError(.integrity, "\(path): record \(record - 1): the backup has a malformed end record; nothing restored")
        }
        for t in out.tables {
            let stated = counts.first { $0.0 == t.name }.flatMap { if case .int(let n) = $0.1 { n } else { nil } }
            guard stated == rowCounts[t.name] ?? 0 else {
                throw VaultError(.integrity, "\(path): record \(record - 1): the backup's end record counts other rows for table \(t.name) than it holds; nothing restored")
            }
            out.counts[t.name] = rowCounts[t.name] ?? 0
        }
        out.digest = digest
        out.records = record
        return out
    }

    /// Whose erasures a journal of the backed-up store speaks for (as ``ProfileStore``'s
    /// `journalIdentity`): its store id, and its lineage when it was itself restored.
    static func journalIdentity(_ meta: [String: String]) -> String {
        let id = meta["store_id"] ?? ""
        guard let lineage = meta["lineage"], !lineage.isEmpty else { return id }
        return id + "/" + lineage
    }

    /// `profilectl restore --from BACKUP --to postgres://...`: the backup of a PostgreSQL store
    /// into a new store at `url` (created here as the role the URL names, its owner; a database
    /// holding a store already is refused), with every erasure of `journal` recorded after the
    /// backup's audit head re-applied and a `store.restore` entry (or
    /// `store.restore_without_journal` when `journal` is nil), all in ONE transaction: nothing
    /// is left but the empty tables when anything fails. `openJournal` verifies the journal's
    /// bytes under the backup's key and store identity.
    public static func restore(backup path: String, to url: String, keyring: Keyring, schema: Schema, serviceRole: String? = nil,
                               journal: (bytes: [UInt8], label: String)?, audit: AuditContext,
                               environment: [String: String]? = nil) throws -> RestoreReport {
        let (location, password) = try parse(url, environment: environment, option: "--to")
        let place = location.description
        let backup = try verifyBackup(path, keyring: keyring, schema: schema)
        let keys: StoreKeys
        do { keys = try StoreKeys(keyring: keyring, identityVersion: backup.identityVersion, schema: schema) } catch {
            throw VaultError(.configuration, "keyring \(keyring.path ?? "?"): cannot derive the keys of identity version \(backup.identityVersion)")
        }
        let identity = journalIdentity(backup.meta)
        let parsed = try journal.map { try ErasureJournal.open($0.bytes, key: keys.erasureJournal, storeID: identity, label: $0.label) }
        let (bseq, bhead, btime) = (backup.sequence, backup.head, backup.headTime)
        var after: [ErasureJournalEntry] = []
        if let parsed {
            guard parsed.auditSequence >= bseq else {
                throw VaultError(.invalidInput, "the erasure journal was written at audit entry \(parsed.auditSequence), before the backup (entry \(bseq)): it cannot name the erasures made after the backup; use the newest journal")
            }
            if let head = parsed.heads[bseq], head != bhead {
                throw VaultError(.integrity, "the erasure journal was written at the backup's audit entry \(bseq) but names another head: it is not of the line this backup was taken from; refused")
            }
            after = parsed.entries.filter { e in e.auditSequence.map { $0 > bseq } ?? (e.erasedAtMillis > btime) }
        }
        let signing = keys.auditSigning
        let options = PostgresEngine.InitOptions(serviceRole: serviceRole ?? "profilevault_service",
                                                 schemaVersion: backup.meta["schema_version"] ?? String(schema.version),
                                                 policyVersion: backup.meta["policy_version"])
        let owner = try PostgresEngine(location: location, password: password, auditSigningKey: signing, maximumConnections: 2)
        defer { try? PostgresProfiles.wait("closing the connection pool") { await owner.close() } }
        let target: PostgresProfiles = try PostgresProfiles.wait("creating the store at \(place)") {
            try await owner.probe()
            try await PostgresProfiles.create(owner: owner, schema: schema, keyring: keyring, options: options)
            return try await PostgresProfiles.open(engine: owner, schema: schema, keyring: keyring)
        }
        let conn = try PostgresProfiles.wait("connecting to \(place)") { try await owner.connectDirect() }
        defer { try? PostgresProfiles.wait("closing the restore connection") { try await conn.close() } }
        func run<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) throws -> T {
            try PostgresProfiles.wait(what) {
                do { return try await body() } catch {
                    let e = PostgresStoreError.wrap(error, what)
                    if let state = e.sqlState, state.hasPrefix("22") || state.hasPrefix("23") {
                        throw PostgresStoreError(.integrity, "\(e.message): the backup holds a row PostgreSQL refuses; nothing restored")
                    }
                    throw e
                }
            }
        }
        let tables = backup.tables
        var committed = false
        var report = RestoreReport(backupSequence: bseq, backupHead: bhead, journalEntries: parsed?.entries.count, afterBackup: after.count,
                                   erased: 0, suppressed: 0, headSequence: 0, head: "")
        try run("starting the restore") {
            try await owner.exec(conn, "BEGIN ISOLATION LEVEL READ COMMITTED")
            try await owner.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresEngine.lockNamespaceMigrations), 0)")
            try await owner.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresProfiles.lockNamespaceSubjects), 0)")
            guard let head = try await owner.rows(conn, "SELECT seq FROM profilevault.audit_head WHERE id = 1 FOR UPDATE").first else {
                throw PostgresStoreError(.integrity, "\(place): the audit head row is missing: the database was edited")
            }
            let empty = try await owner.rows(conn, """
                SELECT (SELECT count(*) FROM profilevault.subjects) + (SELECT count(*) FROM profilevault.policy_history)
                     + (SELECT count(*) FROM profilevault.suppressed) + (SELECT count(*) FROM profilevault.dp_budget)
                     + (SELECT count(*) FROM profilevault.requests)
                """).first?.decode(Int64.self) ?? 1
            guard try head.decode(Int64.self) == 0, empty == 0 else {
                throw PostgresStoreError(.configuration, "\(place) already holds a store (subjects, policies, budget or audit entries): restore only into a new database")
            }
            // The same tables and columns: the same migrations and the same schema.yaml.
            let here = try await owner.storeTables(conn)
            guard Set(here.map(\.name)) == Set(tables.map(\.name)),
                  here.allSatisfy({ t in tables.first { $0.name == t.name }?.columns == t.columns }) else {
                throw PostgresStoreError(.configuration, "the backup's tables or columns differ from a new store's here: it was written by another version of ProfileVault or under another schema.yaml; restore with the version and schema it was taken with")
            }
        }
        do {
            // Pass 2: the rows, table by table, as PostgreSQL's JSON of them.
            let lines = try PostgresBackupFile.Lines(path: path)
            var previous = [UInt8](repeating: 0, count: 32)
            var number = 0
            var headRows: String?
            while let line = try lines.next() {
                // Verified again: the file may have changed since pass 1.
                let value = try PostgresBackupFile.verify(line, record: number, ended: lines.lastEnded, previous: &previous, key: keys.erasureJournal, label: path)
                number += 1
                guard case .string(let t)? = value["t"], case .array(let rows)? = value["rows"], tables.contains(where: { $0.name == t }) else { continue }
                if PostgresBackupFile.setupTables.contains(t) { continue }
                let texts = rows.compactMap { if case .string(let s) = $0 { s } else { nil } }
                let json = "[" + texts.joined(separator: ",") + "]"
                // The head moves only onto an entry of the log: after every table is loaded.
                if t == "audit_head" { headRows = json; continue }
                let table = "profilevault." + PostgresEngine.quoted(t)
                let sql: String
                switch t {
                case "meta":
                    sql = "INSERT INTO \(table) SELECT * FROM json_populate_recordset(NULL::\(table), $1::json) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                case "pii_fields", "population_epoch":
                    sql = "INSERT INTO \(table) SELECT * FROM json_populate_recordset(NULL::\(table), $1::json) ON CONFLICT DO NOTHING"
                case "key_versions":
                    // A version the target recorded must carry the same key check (the same
                    // keyring); the backup's retirements carry over.
                    let mismatch = "SELECT count(*) FROM json_populate_recordset(NULL::\(table), $1::json) b JOIN \(table) k USING (version) WHERE k.key_check <> b.key_check"
                    let differ = try run("checking the key versions") { () -> Int64 in
                        var binds = PostgresBindings()
                        binds.append(json)
                        return try await owner.rows(conn, PostgresQuery(unsafeSQL: mismatch, binds: binds)).first?.decode(Int64.self) ?? 0
                    }
                    guard differ == 0 else { throw VaultError(.integrity, "the keyring does not match the backup: a key version fails its key check; nothing restored") }
                    sql = """
                        WITH b AS (SELECT * FROM json_populate_recordset(NULL::\(table), $1::json)),
                        ins AS (INSERT INTO \(table) SELECT * FROM b ON CONFLICT (version) DO NOTHING RETURNING 1)
                        UPDATE \(table) k SET retired = true FROM b WHERE k.version = b.version AND b.retired AND NOT k.retired
                        """
                default:
                    sql = "INSERT INTO \(table) OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_recordset(NULL::\(table), $1::json)"
                }
                try run("restoring table \(t)") {
                    var binds = PostgresBindings()
                    binds.append(json)
                    try await owner.exec(conn, PostgresQuery(unsafeSQL: sql, binds: binds))
                }
            }
            if let headRows {
                try run("restoring the audit head") {
                    var binds = PostgresBindings()
                    binds.append(headRows)
                    try await owner.exec(conn, PostgresQuery(unsafeSQL: """
                        UPDATE profilevault.audit_head h SET seq = b.seq, hash = b.hash, time = b.time
                        FROM json_populate_recordset(NULL::profilevault.audit_head, $1::json) b WHERE h.id = b.id AND b.seq > h.seq
                        """, binds: binds))
                }
            }
            let (counts, digest, subjectSelect) = (backup.counts, backup.digest, target.snapshotSelect)
            try run("checking the restored rows") {
                // Identity columns continue after the restored rows.
                for row in try await owner.rows(conn, """
                    SELECT c.relname::text, a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'profilevault' AND a.attidentity <> '' AND NOT a.attisdropped
                    """) {
                    let (t, c) = try row.decode((String, String).self)
                    guard PostgresBackupFile.isPlainName(t), PostgresBackupFile.isPlainName(c) else { continue }
                    try await owner.exec(conn, PostgresQuery(unsafeSQL: """
                        SELECT setval(pg_get_serial_sequence('profilevault.\(t)', '\(c)'), greatest(1, (SELECT coalesce(max(\(c)), 0) FROM profilevault.\(t))),
                                      (SELECT count(*) > 0 FROM profilevault.\(t)))
                        """))
                }
                for t in tables where !PostgresBackupFile.setupTables.contains(t.name) && !PostgresBackupFile.mergedTables.contains(t.name) {
                    let n = try await owner.rows(conn, PostgresQuery(unsafeSQL: "SELECT count(*) FROM profilevault.\(PostgresEngine.quoted(t.name))")).first?.decode(Int64.self)
                    guard n == counts[t.name] else {
                        throw PostgresStoreError(.integrity, "the restored table \(t.name) holds \(n ?? -1) rows, the backup \(counts[t.name] ?? -1); nothing restored")
                    }
                }
                var d = SubjectDigest()
                var after = Int64.min
                while true {
                    var b = PostgresBindings()
                    b.append(after)
                    let rows = try await owner.rows(conn, PostgresQuery(unsafeSQL: subjectSelect + " WHERE s.id > $1 ORDER BY s.id LIMIT 2048", binds: b))
                    if rows.isEmpty { break }
                    for row in rows {
                        let s = try target.snapshotSubject(row)
                        d.add(s)
                        after = s.id
                    }
                }
                guard constantTimeEqual(d.value, digest) else {
                    throw PostgresStoreError(.integrity, "the restored subjects differ from the backup's (stored rows digest mismatch); nothing restored")
                }
            }
            // The erasures recorded after the backup, re-applied in the same transaction.
            let toApply = after
            let (erased, suppressed) = try run("re-applying the erasure journal") { () -> (Int, Int) in
                var erased = 0, suppressed = 0
                for e in toApply {
                    var b = PostgresBindings()
                    b.append(bytea(e.pseudonym))
                    let present = try await owner.rows(conn, PostgresQuery(unsafeSQL: "SELECT 1 FROM profilevault.subjects WHERE pseudonym = $1", binds: b))
                    let known = try await owner.rows(conn, PostgresQuery(unsafeSQL: "SELECT 1 FROM profilevault.suppressed WHERE pseudonym = $1", binds: b))
                    if !present.isEmpty {
                        let detail = "\(e.reason); re-applied by restore from the erasure journal (receipt \(e.auditSequence.map(String.init) ?? "-") \(e.receipt ?? "-"))"
                        _ = try await target.eraseLocked(conn, [(id: "", pseudonym: e.pseudonym, again: false)], reason: detail, audit: audit, goneIsErased: true)
                        erased += 1
                    } else if !known.isEmpty {
                        continue
                    } else {
                        suppressed += 1
                    }
                    var s = PostgresBindings()
                    s.append(bytea(e.pseudonym))
                    s.append(e.erasedAtMillis)
                    s.append(e.reason)
                    s.append(e.auditSequence)
                    s.append(e.receipt)
                    try await owner.exec(conn, PostgresQuery(unsafeSQL: """
                        INSERT INTO profilevault.suppressed(pseudonym, erased_at, reason, receipt_seq, receipt) VALUES ($1, $2, $3, $4, $5)
                        ON CONFLICT (pseudonym) DO UPDATE SET erased_at = EXCLUDED.erased_at, reason = EXCLUDED.reason,
                            receipt_seq = EXCLUDED.receipt_seq, receipt = EXCLUDED.receipt
                        """, binds: s))
                }
                // Stored DP releases were made from the backup's population, which may hold
                // subjects erased since: none of them is served by the restored store.
                try await owner.exec(conn, "DELETE FROM profilevault.release_cache")
                // And its population epoch is a fresh random one, which no release sealed by
                // the store before the restore (nor by the backup's store) carries.
                try await owner.exec(conn, "UPDATE profilevault.population_epoch SET epoch = \(ReleaseSealing.restoredEpoch()) WHERE id = 1")
                // The restored store starts a line of its own: journals of the store it was
                // restored from no longer speak for it.
                var l = PostgresBindings()
                l.append(AuditLog.hex(SecureRandom.bytes(16)))
                try await owner.exec(conn, PostgresQuery(unsafeSQL: "INSERT INTO profilevault.meta(key, value) VALUES ('lineage', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", binds: l))
                return (erased, suppressed)
            }
            report.erased = erased
            report.suppressed = suppressed
            let record: AuditRecord
            if let parsed {
                record = audit.record("store.restore", .create,
                                      detail: "restored from a backup whose audit head is entry \(bseq), \(bhead); erasure journal \(journal?.label ?? "") written at entry \(parsed.auditSequence), \(parsed.auditHead)",
                                      counts: [("journal_entries", Int64(parsed.entries.count)), ("after_backup", Int64(after.count)),
                                               ("erased", Int64(erased)), ("suppressed", Int64(suppressed))])
            } else {
                record = audit.record("store.restore_without_journal", .create,
                                      detail: "restored from a backup whose audit head is entry \(bseq), \(bhead) WITHOUT an erasure journal (--i-accept-resurrection): subjects erased after the backup are back")
            }
            let (seq, hash) = try run("recording the restore and committing") { () -> (Int64, [UInt8]) in
                let (seq, hash, _) = try await owner.appendLocked(conn, [record])
                try await owner.exec(conn, "COMMIT")
                return (seq, hash)
            }
            committed = true
            report.headSequence = seq
            report.head = AuditLog.hex(hash)
        } catch {
            if !committed { try? run("rolling back the restore") { try await owner.exec(conn, "ROLLBACK") } }
            throw error
        }
        let engine = target.engine, head = report.head
        let verification = try PostgresProfiles.wait("verifying the restored audit chain") { try await engine.verifyAudit(expectHead: head) }
        let (live, overflow) = Int64(verification.entries).addingReportingOverflow(verification.archivedThrough ?? 0)
        guard verification.ok, !overflow, live == report.headSequence, verification.head == report.head else {
            throw VaultError(.integrity, "the restored audit chain does not verify: \(verification.reason ?? "it ends before the restore entry"); drop the database and restore again from an intact backup")
        }
        return report
    }
}
