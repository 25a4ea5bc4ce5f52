import Foundation
import GRDB
package import VaultAudit
public import VaultPolicy
import VaultValues

// The whole of a SQLite store as stored (ciphertexts, wrapped keys, pseudonyms, the audit
// chain): what `profilectl migrate` copies to another engine. Nothing is decrypted; every
// value is read by storage class (`Stored`), so an edited file is an integrity error naming
// the table and row, never a crash or a value copied under the wrong type.

/// One subject as stored: its row id (the copy keeps it), its sealed profile and its times.
package struct SnapshotSubject: Sendable {
    package var id: Int64
    package var sealed: SealedProfile
    package var createdAt: Int64
    package var updatedAt: Int64
    package var lastActivity: Int64
    /// The ingest runs that created the subject and last changed it (nil: not recorded).
    package var createdBatch: Int64?
    package var updatedBatch: Int64?
    package init(id: Int64, sealed: SealedProfile, createdAt: Int64, updatedAt: Int64, lastActivity: Int64,
                 createdBatch: Int64? = nil, updatedBatch: Int64? = nil) {
        self.createdBatch = createdBatch
        self.updatedBatch = updatedBatch
        self.id = id
        self.sealed = sealed
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.lastActivity = lastActivity
    }
}

package struct SnapshotEvent: Sendable {
    package var subjectID: Int64
    package var kind: String
    package var item: String
    package var value: Double
    package var time: Int64
}

package struct SnapshotConsent: Sendable {
    package var subjectID: Int64
    package var purpose: String
    package var granted: Bool
    package var time: Int64
    package var actor: String
    package var source: String?
    package var policyVersion: String
}

package struct SnapshotConsentState: Sendable {
    package var subjectID: Int64
    package var purpose: String
    package var granted: Bool
    package var since: Int64
}

package struct SnapshotAuditEntry: Sendable {
    package var seq: Int64
    package var time: Int64
    package var entry: String
    package var prevHash: [UInt8]
    package var hash: [UInt8]
    package var subject: [UInt8]?
}

package struct SnapshotCheckpoint: Sendable {
    package var seq: Int64
    package var hash: [UInt8]
    package var signature: [UInt8]
    package var time: Int64
    package var checkpointTime: Int64?
    package var prevSeq: Int64?
    package var prevDigest: [UInt8]?
}

package struct SnapshotBudget: Sendable {
    package var purpose: String
    package var periodStart: Int64
    package var periodSeconds: Int64
    package var spentUnits: Int64
    package var deltaSpentUnits: Int64
}

package struct SnapshotPolicy: Sendable {
    package var seq: Int64
    package var version: String
    package var sha256: String
    package var schemaSHA256: String
    package var appliedAt: Int64
    package var actor: String
    package var role: String
    package var summary: String
    package var changes: String
}

package struct SnapshotKeyVersion: Sendable {
    package var version: UInt32
    package var keyCheck: [UInt8]
    package var addedAt: Int64
    package var retired: Bool
}

package struct SnapshotSuppressed: Sendable {
    package var pseudonym: [UInt8]
    package var erasedAt: Int64
    package var reason: String
    /// The erasure's receipt (audit sequence and hash hex); nil for erasures before v10.
    package var receiptSeq: Int64?
    package var receipt: String?
}

/// One request of the register as stored: metadata, and the sealed columns as their
/// ciphertexts (the register key is the same under the same keyring, and the associated data
/// binds each to its request id and pseudonym, both copied).
package struct SnapshotRequest: Sendable {
    package var entry: RegisterEntry
    /// `RequestRegister.sealedColumns`, in that order.
    package var sealed: [[UInt8]?]
}

/// Reads one consistent snapshot of the store (one read transaction), in batches.
package struct StoreSnapshotReader {
    let db: Database
    let store: ProfileStore

    package var meta: [String: String] {
        get throws {
            var out: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT key, value FROM meta") {
                guard let k = Stored.text(row.stored(at: 0)), let v = Stored.text(row.stored(at: 1)) else {
                    throw VaultError(.integrity, "the meta table holds a value of the wrong type: the store was altered")
                }
                out[k] = v
            }
            return out
        }
    }

    package func keyVersions() throws -> [SnapshotKeyVersion] {
        try Row.fetchAll(db, sql: "SELECT version, key_check, added_at, retired FROM key_versions ORDER BY version").map { row in
            guard let v = Stored.int(row.stored(at: 0)), let version = UInt32(exactly: v), let check = Stored.blob(row.stored(at: 1)),
                  let added = Stored.int(row.stored(at: 2)), let retired = Stored.int(row.stored(at: 3)) else {
                throw VaultError(.integrity, "the key_versions table holds a value of the wrong type: the store was altered")
            }
            return SnapshotKeyVersion(version: version, keyCheck: check, addedAt: added, retired: retired != 0)
        }
    }

    package func count(_ table: String) throws -> Int64 {
        let allowed: Set<String> = ["subjects", "events", "consent", "consent_state", "suppressed", "budget", "policy_history", "audit", "audit_checkpoints", "restriction", "requests", "release_cache"]
        guard allowed.contains(table) else { throw VaultError(.internalFailure, "no table \(table) to count") }
        return try Int64.fetchOne(db, sql: "SELECT count(*) FROM \(table)") ?? 0
    }

    /// Every recorded ingest run, in id order.
    package func ingestBatches() throws -> [IngestBatchInfo] {
        try Int64.fetchAll(db, sql: "SELECT id FROM ingest_batches ORDER BY id").compactMap { try store.ingestBatch(db, id: $0) }
    }

    /// The subjects in row-id order, with their `pii` and `attributes` rows, `batch` at a time.
    package func subjects(batch: Int, _ body: ([SnapshotSubject]) throws -> Void) throws {
        let pcols = store.piiColumns.valueColumns.map { "p." + $0.column }
        let attrs = store.schema.attributeFields
        let acols = attrs.map { "a." + ProfileStore.quoted($0.name) }
        let sql = """
            SELECT s.id, s.pseudonym, s.kek_version, s.wrapped_dek, s.created_at, s.updated_at, s.last_activity\
            \((pcols + acols).map { ", " + $0 }.joined()), s.created_batch, s.updated_batch, s.record_digest
            FROM subjects s LEFT JOIN pii p ON p.subject_id = s.id LEFT JOIN attributes a ON a.subject_id = s.id
            WHERE s.id > ? ORDER BY s.id LIMIT \(max(1, batch))
            """
        var after: Int64 = Int64.min
        while true {
            let rows = try Row.fetchAll(db, sql: sql, arguments: [after])
            if rows.isEmpty { return }
            var out: [SnapshotSubject] = []
            out.reserveCapacity(rows.count)
            for row in rows {
                guard let id = Stored.int(row.stored(at: 0)) else { throw VaultError(.integrity, "a subject row id is not an integer: the store was altered") }
                guard let pseudonym = Stored.blob(row.stored(at: 1)), pseudonym.count == 32 else {
                    throw Stored.damaged(subject: id, "the pseudonym", row.stored(at: 1), expected: "a 32-byte blob")
                }
                guard let k = Stored.int(row.stored(at: 2)), let kek = UInt32(exactly: k) else {
                    throw Stored.damaged(subject: id, "the key version", row.stored(at: 2), expected: "a key version")
                }
                guard let wrapped = Stored.blob(row.stored(at: 3)) else { throw Stored.damaged(subject: id, "the wrapped data key", row.stored(at: 3), expected: "a blob") }
                var times: [Int64] = []
                for i in 4...6 {
                    guard let t = Stored.int(row.stored(at: i)) else { throw Stored.damaged(subject: id, "a time column", row.stored(at: i), expected: "an integer") }
                    times.append(t)
                }
                var pii: [[UInt8]?] = []
                for (j, c) in store.piiColumns.valueColumns.enumerated() {
                    let v = row.stored(at: 7 + j)
                    if v.isNull { pii.append(nil); continue }
                    guard let b = Stored.blob(v) else { throw Stored.damaged(subject: id, "column \(c.column) of its pii row", v, expected: "a blob") }
                    pii.append(b)
                }
                var values: [FieldValue] = []
                for (j, f) in attrs.enumerated() {
                    values.append(try Self.fieldValue(row.stored(at: 7 + pcols.count + j), field: f, subject: id))
                }
                // The ingest runs and the record digest (v11-ingest-sources): NULL when not recorded.
                let tail = 7 + pcols.count + acols.count
                var batches: [Int64?] = []
                for i in tail..<tail + 2 {
                    let v = row.stored(at: i)
                    if v.isNull { batches.append(nil); continue }
                    guard let b = Stored.int(v) else { throw Stored.damaged(subject: id, "an ingest batch column", v, expected: "an integer") }
                    batches.append(b)
                }
                let d = row.stored(at: tail + 2)
                var digest: [UInt8] = []
                if !d.isNull {
                    guard let b = Stored.blob(d) else { throw Stored.damaged(subject: id, "the record digest", d, expected: "a blob") }
                    digest = b
                }
                out.append(SnapshotSubject(id: id, sealed: SealedProfile(line: 0, pseudonym: pseudonym, kekVersion: kek, wrappedDEK: wrapped,
                                                                           piiRow: pii, attributes: values, digest: digest),
                                           createdAt: times[0], updatedAt: times[1], lastActivity: times[2],
                                           createdBatch: batches[0], updatedBatch: batches[1]))
            }
            after = out[out.count - 1].id
            try body(out)
        }
    }

    /// An attribute as the field's type (ingest stores exactly that; anything else is damage).
    static func fieldValue(_ v: DatabaseValue, field f: FieldSpec, subject id: Int64) throws -> FieldValue {
        if v.isNull { return .null }
        switch f.type {
        case .int:
            guard let i = Stored.int(v) else { throw Stored.damaged(subject: id, "attribute \(f.name)", v, expected: "an integer") }
            return .int(i)
        case .float:
            guard let d = Stored.number(v) else { throw Stored.damaged(subject: id, "attribute \(f.name)", v, expected: "a number") }
            return .float(d)
        case .date:
            guard let i = Stored.int(v), let d = Int32(exactly: i) else { throw Stored.damaged(subject: id, "attribute \(f.name)", v, expected: "a day number") }
            return .date(d)
        case .bool:
            guard let i = Stored.int(v), i == 0 || i == 1 else { throw Stored.damaged(subject: id, "attribute \(f.name)", v, expected: "0 or 1") }
            return .bool(i == 1)
        case .string, .category:
            guard let s = Stored.text(v) else { throw Stored.damaged(subject: id, "attribute \(f.name)", v, expected: "text") }
            return .text(s)
        }
    }

    package func events(batch: Int, _ body: ([SnapshotEvent]) throws -> Void) throws {
        var after: Int64 = Int64.min
        while true {
            let rows = try Row.fetchAll(db, sql: "SELECT id, subject_id, kind, item, value, time FROM events WHERE id > ? ORDER BY id LIMIT \(max(1, batch))",
                                        arguments: [after])
            if rows.isEmpty { return }
            var out: [SnapshotEvent] = []
            for row in rows {
                guard let id = Stored.int(row.stored(at: 0)), let s = Stored.int(row.stored(at: 1)), let kind = Stored.text(row.stored(at: 2)),
                      let item = Stored.text(row.stored(at: 3)), let value = Stored.number(row.stored(at: 4)), let time = Stored.int(row.stored(at: 5)) else {
                    throw VaultError(.integrity, "an events row holds a value of the wrong type: the store was altered")
                }
                after = id
                out.append(SnapshotEvent(subjectID: s, kind: kind, item: item, value: value, time: time))
            }
            try body(out)
        }
    }

    package func consent() throws -> [SnapshotConsent] {
        try Row.fetchAll(db, sql: "SELECT subject_id, purpose, granted, time, actor, source, policy_version FROM consent ORDER BY id").map { row in
            let source = row.stored(at: 5)
            guard let s = Stored.int(row.stored(at: 0)), let p = Stored.text(row.stored(at: 1)), let g = Stored.int(row.stored(at: 2)),
                  let t = Stored.int(row.stored(at: 3)), let a = Stored.text(row.stored(at: 4)), source.isNull || Stored.text(source) != nil,
                  let v = Stored.text(row.stored(at: 6)) else {
                throw VaultError(.integrity, "the consent ledger holds a value of the wrong type: the store was altered")
            }
            return SnapshotConsent(subjectID: s, purpose: p, granted: g != 0, time: t, actor: a, source: Stored.text(source), policyVersion: v)
        }
    }

    package func consentState() throws -> [SnapshotConsentState] {
        try Row.fetchAll(db, sql: "SELECT subject_id, purpose, granted, since FROM consent_state ORDER BY subject_id, purpose").map { row in
            guard let s = Stored.int(row.stored(at: 0)), let p = Stored.text(row.stored(at: 1)), let g = Stored.int(row.stored(at: 2)),
                  let t = Stored.int(row.stored(at: 3)) else {
                throw VaultError(.integrity, "the consent state holds a value of the wrong type: the store was altered")
            }
            return SnapshotConsentState(subjectID: s, purpose: p, granted: g != 0, since: t)
        }
    }

    /// The restricted subjects (Art. 18): row id and since when.
    package func restrictions() throws -> [(subjectID: Int64, since: Int64)] {
        try Row.fetchAll(db, sql: "SELECT subject_id, since FROM restriction ORDER BY subject_id").map { row in
            guard let s = Stored.int(row.stored(at: 0)), let t = Stored.int(row.stored(at: 1)) else {
                throw VaultError(.integrity, "the restriction table holds a value of the wrong type: the store was altered")
            }
            return (s, t)
        }
    }

    package func suppressed() throws -> [SnapshotSuppressed] {
        try Row.fetchAll(db, sql: "SELECT pseudonym, erased_at, reason, receipt_seq, receipt FROM suppressed ORDER BY pseudonym").map { row in
            let q = row.stored(at: 3), h = row.stored(at: 4)
            guard let p = Stored.blob(row.stored(at: 0)), let t = Stored.int(row.stored(at: 1)), let r = Stored.text(row.stored(at: 2)),
                  q.isNull || Stored.int(q) != nil, h.isNull || Stored.text(h) != nil else {
                throw VaultError(.integrity, "the suppression list holds a value of the wrong type: the store was altered")
            }
            return SnapshotSuppressed(pseudonym: p, erasedAt: t, reason: r, receiptSeq: Stored.int(q), receipt: Stored.text(h))
        }
    }

    /// The request register, in id order.
    package func requests() throws -> [SnapshotRequest] {
        let sealed = RequestRegister.sealedColumns
        return try Row.fetchAll(db, sql: "SELECT \(ProfileStore.requestColumns), \(sealed.joined(separator: ", ")) FROM requests ORDER BY id").map { row in
            var blobs: [[UInt8]?] = []
            for c in sealed {
                let v = row.stored(c)
                if v.isNull { blobs.append(nil); continue }
                guard let b = Stored.blob(v) else { throw VaultError(.integrity, "the requests table: \(c) holds \(Stored.kind(v)): the store was altered") }
                blobs.append(b)
            }
            return SnapshotRequest(entry: try ProfileStore.registerEntry(row), sealed: blobs)
        }
    }

    package func budget() throws -> [SnapshotBudget] {
        try Row.fetchAll(db, sql: "SELECT purpose, period_start, period_seconds, spent_units, spent_delta_units FROM budget ORDER BY purpose, period_start").map { row in
            guard let p = Stored.text(row.stored(at: 0)), let s = Stored.int(row.stored(at: 1)), let l = Stored.int(row.stored(at: 2)),
                  let u = Stored.int(row.stored(at: 3)), let d = Stored.int(row.stored(at: 4)) else {
                throw VaultError(.integrity, "the budget ledger holds a value of the wrong type: the store was altered")
            }
            return SnapshotBudget(purpose: p, periodStart: s, periodSeconds: l, spentUnits: u, deltaSpentUnits: d)
        }
    }

    /// The release cache's rows, still sealed (ReleaseCache.swift), in digest order.
    package func releases() throws -> [SnapshotRelease] {
        try Row.fetchAll(db, sql: "SELECT digest, purpose, period_start, period_seconds, created_at, epoch, sealed FROM release_cache ORDER BY digest").map { row in
            guard let d = Stored.blob(row.stored("digest")) else {
                throw VaultError(.integrity, "the release cache holds a value of the wrong type: the store was altered")
            }
            do { return try ProfileStore.releaseRow(row, digest: d) } catch {
                throw VaultError(.integrity, "the release cache holds a value of the wrong type: the store was altered")
            }
        }
    }

    /// The population epoch the releases were computed at (nil: the row is missing or altered).
    package func populationEpoch() throws -> Int64? { try ProfileStore.populationEpoch(db) }

    package func policyHistory() throws -> [SnapshotPolicy] {
        try Row.fetchAll(db, sql: "SELECT seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes FROM policy_history ORDER BY seq").map { row in
            guard let q = Stored.int(row.stored(at: 0)), let v = Stored.text(row.stored(at: 1)), let h = Stored.text(row.stored(at: 2)),
                  let sh = Stored.text(row.stored(at: 3)), let t = Stored.int(row.stored(at: 4)), let a = Stored.text(row.stored(at: 5)),
                  let r = Stored.text(row.stored(at: 6)), let s = Stored.text(row.stored(at: 7)), let c = Stored.text(row.stored(at: 8)) else {
                throw VaultError(.integrity, "the policy history holds a value of the wrong type: the store was altered")
            }
            return SnapshotPolicy(seq: q, version: v, sha256: h, schemaSHA256: sh, appliedAt: t, actor: a, role: r, summary: s, changes: c)
        }
    }

    package func audit(batch: Int, _ body: ([SnapshotAuditEntry]) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let rows = try Row.fetchAll(db, sql: "SELECT seq, time, entry, prev_hash, hash, subject FROM audit WHERE seq > ? ORDER BY seq LIMIT \(max(1, batch))",
                                        arguments: [after])
            if rows.isEmpty { return }
            var out: [SnapshotAuditEntry] = []
            for row in rows {
                let subject = row.stored(at: 5)
                guard let q = Stored.int(row.stored(at: 0)), let t = Stored.int(row.stored(at: 1)), let e = Stored.text(row.stored(at: 2)),
                      let ph = Stored.blob(row.stored(at: 3)), let h = Stored.blob(row.stored(at: 4)),
                      subject.isNull || Stored.blob(subject) != nil else {
                    throw VaultError(.integrity, "audit entry after seq \(after) holds a value of the wrong type: the store was altered")
                }
                after = q
                out.append(SnapshotAuditEntry(seq: q, time: t, entry: e, prevHash: ph, hash: h, subject: Stored.blob(subject)))
            }
            try body(out)
        }
    }

    /// The archive anchors (`audit archive`), oldest first, as stored (the copy verifies them).
    package func archiveAnchors() throws -> [AuditArchiveAnchor] {
        try store.archiveAnchors(db)
    }

    package func checkpoints() throws -> [SnapshotCheckpoint] {
        try Row.fetchAll(db, sql: "SELECT seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest FROM audit_checkpoints ORDER BY seq").map { row in
            let ct = row.stored(at: 4), ps = row.stored(at: 5), pd = row.stored(at: 6)
            guard let q = Stored.int(row.stored(at: 0)), let h = Stored.blob(row.stored(at: 1)), let s = Stored.blob(row.stored(at: 2)),
                  let t = Stored.int(row.stored(at: 3)), ct.isNull || Stored.int(ct) != nil, ps.isNull || Stored.int(ps) != nil,
                  pd.isNull || Stored.blob(pd) != nil else {
                throw VaultError(.integrity, "an audit checkpoint holds a value of the wrong type: the store was altered")
            }
            return SnapshotCheckpoint(seq: q, hash: h, signature: s, time: t, checkpointTime: Stored.int(ct), prevSeq: Stored.int(ps), prevDigest: Stored.blob(pd))
        }
    }
}

extension ProfileStore {
    /// Runs `body` over one consistent snapshot of the store (a read transaction: writers on
    /// other connections go on; what they commit meanwhile is not in the snapshot).
    package func readSnapshot<T>(_ body: (StoreSnapshotReader) throws -> T) throws -> T {
        try pool.read { db in try body(StoreSnapshotReader(db: db, store: self)) }
    }
}
