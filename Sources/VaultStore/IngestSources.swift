import Foundation
public import GRDB
public import VaultCrypto
public import VaultPolicy

/// One ingest run (GDPR Art. 15(1)(g): the source of the data): when, from which input (its
/// name as the caller gave it: a file name, `request body`; never a value of it), by whom, and
/// what it wrote. Every subject row names the run that created it and the last run that changed
/// it.
public struct IngestBatchInfo: Sendable, Equatable {
    public var id: Int64
    /// `profiles` (events runs are not recorded: a subject's source is its profile's).
    public var kind: String
    /// Unix seconds when the run wrote its first transaction.
    public var time: Int64
    public var source: String
    public var actor: String
    public var inserted: Int64
    public var updated: Int64
    public var unchanged: Int64
    public var rejected: Int64

    package init(id: Int64, kind: String, time: Int64, source: String, actor: String, inserted: Int64, updated: Int64,
                 unchanged: Int64, rejected: Int64) {
        self.id = id
        self.kind = kind
        self.time = time
        self.source = source
        self.actor = actor
        self.inserted = inserted
        self.updated = updated
        self.unchanged = unchanged
        self.rejected = rejected
    }
}

/// The batch row of one ingest run, as its writer thread fills it: the row is inserted by the
/// run's first transaction (so a run that commits nothing leaves none) and its counts are added
/// to by each transaction, one statement per transaction (never per record).
package final class IngestBatchRecorder: @unchecked Sendable {
    // `@unchecked Sendable`: `id` is read and written only by the run's one writer thread.
    package let kind: String
    package let source: String
    package let actor: String
    package let time: Int64
    package var id: Int64?

    package init(kind: String, source: String, actor: String?, time: Int64 = Int64(Date().timeIntervalSince1970)) {
        self.kind = kind
        // Only the file's own name is kept: the directories above it are the operator's (they
        // may name a person, `/cases/Ann Smith/...`), and every subject of the run sees this
        // name in its access export, after any erasure. A name holding U+0000 cannot be stored
        // as text: it is recorded without those. Records in memory (an HTTP body) have no name.
        let base = source.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? ""
        let name = String(String.UnicodeScalarView(base.unicodeScalars.filter { $0 != "\0" }).prefix(255))
        self.source = name.isEmpty ? "request body" : name
        self.actor = actor ?? ""
        self.time = time
    }

    /// The batch id in this SQLite transaction: inserts the batch row the first time.
    func id(_ db: Database) throws -> Int64 {
        if let id { return id }
        try db.execute(sql: "INSERT INTO ingest_batches(kind, time, source, actor) VALUES (?, ?, ?, ?)",
                       arguments: [kind, time, source, actor])
        let new = db.lastInsertedRowID
        id = new
        return new
    }

    /// Adds one transaction's counts to the batch row (SQLite).
    func add(_ db: Database, inserted: Int, updated: Int, unchanged: Int, rejected: Int) throws {
        try db.execute(sql: """
            UPDATE ingest_batches SET inserted = inserted + ?, updated = updated + ?, unchanged = unchanged + ?, rejected = rejected + ?
            WHERE id = ?
            """, arguments: [inserted, updated, unchanged, rejected, try id(db)])
    }
}

extension ProfileStore {
    /// `v11-ingest-sources`: the ingest runs, and per subject the run that created it, the last
    /// run that changed it, and a keyed digest of its last ingested record (so a re-ingest of
    /// an unchanged record writes nothing and keeps the subject's last activity).
    static func registerIngestSourcesMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v11-ingest-sources") { db in
            try db.execute(sql: """
                CREATE TABLE ingest_batches(
                    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, time INTEGER NOT NULL, source TEXT NOT NULL, actor TEXT NOT NULL,
                    inserted INTEGER NOT NULL DEFAULT 0, updated INTEGER NOT NULL DEFAULT 0,
                    unchanged INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0);
                ALTER TABLE subjects ADD COLUMN created_batch INTEGER;
                ALTER TABLE subjects ADD COLUMN updated_batch INTEGER;
                ALTER TABLE subjects ADD COLUMN record_digest BLOB;
                """)
        }
    }

    /// The batch row `id`, decoded without traps (nil: no such row, e.g. a subject ingested
    /// before batches were recorded).
    func ingestBatch(_ db: Database, id: Int64?) throws -> IngestBatchInfo? {
        guard let id, let row = try Row.fetchOne(db, sql: "SELECT * FROM ingest_batches WHERE id = ?", arguments: [id]) else { return nil }
        guard let kind = row.auditText("kind"), let time = row.auditInt("time"), let source = row.auditText("source"),
              let actor = row.auditText("actor"), let ins = row.auditInt("inserted"), let upd = row.auditInt("updated"),
              let unch = row.auditInt("unchanged"), let rej = row.auditInt("rejected") else {
            throw VaultError(.integrity, "ingest batch \(id) holds a value of the wrong type: the file was edited")
        }
        return IngestBatchInfo(id: id, kind: kind, time: time, source: source, actor: actor, inserted: ins, updated: upd,
                               unchanged: unch, rejected: rej)
    }
}

extension ProfileSealer {
    /// The keyed digest of a validated record: HMAC-SHA-256 under the record-digest key
    /// (`pv:record-digest`, the store's identity version) over a tagged, length-prefixed
    /// encoding of the customer ID and every field's value in schema order (numbers as their
    /// 8-byte patterns, no text formatting), first 16 bytes. Equal digests: the same record (a
    /// different record matches with probability 2^-128).
    package func digest(_ p: ValidProfile) -> [UInt8] {
        var bytes: [UInt8] = [1]   // encoding version
        bytes.reserveCapacity(128)
        func length(_ n: Int) {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: n).bigEndian) { bytes.append(contentsOf: $0) }
        }
        func text(_ s: String) {
            var s = s
            s.withUTF8 { u in
                length(u.count)
                bytes.append(contentsOf: u)
            }
        }
        text(p.customerID)
        length(p.values.count)
        for v in p.values {
            switch v {
            case .null: bytes.append(0)
            case .int(let x): bytes.append(1); withUnsafeBytes(of: x.bigEndian) { bytes.append(contentsOf: $0) }
            case .float(let d): bytes.append(2); withUnsafeBytes(of: d.bitPattern.bigEndian) { bytes.append(contentsOf: $0) }
            case .text(let s): bytes.append(3); text(s)
            case .date(let d): bytes.append(4); withUnsafeBytes(of: d.bigEndian) { bytes.append(contentsOf: $0) }
            case .bool(let b): bytes.append(b ? 6 : 5)
            }
        }
        return Array(bytes.withUnsafeBytes { digestKey.mac($0) }.prefix(16))
    }

    /// The subject's last activity that the record itself names (the schema's
    /// `last_activity` date field, unix seconds), nil when the schema names none or the value
    /// is empty. A date after the ingest is taken as the ingest's time: activity cannot lie in
    /// the future, and a far-future value (9999-12-31) would otherwise shield the subject from
    /// inactivity retention for good (the stored value never moves backwards).
    package func lastActivity(_ p: ValidProfile) -> Int64? {
        guard let i = lastActivityIndex, i < p.values.count, case .date(let days) = p.values[i] else { return nil }
        return min(Int64(days) * 86_400, Int64(Date().timeIntervalSince1970))
    }
}
