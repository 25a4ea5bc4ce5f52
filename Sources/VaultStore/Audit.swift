import Foundation
public import GRDB
public import VaultAudit
public import VaultCrypto

/// Who acts, for the audit entries an operation writes inside its own transactions.
public struct AuditContext: Sendable {
    public var actor: String
    public var role: String
    public var requestID: String
    public init(actor: String, role: String, requestID: String) {
        self.actor = actor
        self.role = role
        self.requestID = requestID
    }

    public func record(_ action: String, _ activity: AuditActivity, purpose: String? = nil, subject: [UInt8]? = nil,
                       fields: [String] = [], outcome: AuditOutcome = .ok, detail: String? = nil,
                       counts: [(String, Int64)] = []) -> AuditRecord {
        AuditRecord(actor: actor, role: role, action: action, activity: activity, purpose: purpose, subject: subject,
                    fields: fields, outcome: outcome, requestID: requestID, detail: detail, counts: counts)
    }
}

public enum AuditExportFormat: String, Sendable, CaseIterable {
    case jsonl, csv
}

extension ProfileStore {
    static func registerAuditMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v2-audit") { db in
            try db.execute(sql: """
                CREATE TABLE audit(
                    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, entry TEXT NOT NULL,
                    prev_hash BLOB NOT NULL, hash BLOB NOT NULL, subject BLOB);
                CREATE INDEX audit_time ON audit(time);
                CREATE INDEX audit_subject ON audit(subject) WHERE subject IS NOT NULL;
                CREATE TABLE audit_checkpoints(
                    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, signature BLOB NOT NULL, time INTEGER NOT NULL);
                CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                """)
        }
    }

    /// The public half of the audit signing key (Ed25519, derived from the identity version).
    public var auditPublicKey: Ed25519PublicKey { keys.auditSigning.publicKey }

    /// Appends entries inside the caller's transaction and signs a checkpoint of the new head,
    /// so the data change and its audit entries commit or roll back together.
    @discardableResult
    func appendAudit(_ db: Database, _ records: [AuditRecord]) throws -> (sequence: Int64, hash: [UInt8]) {
        var seq: Int64 = 0
        var prev = AuditLog.genesis
        // Cached statements: this runs in every audited operation (prepared once per connection).
        if let row = try Row.fetchOne(try db.cachedStatement(sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")) {
            seq = row["seq"]
            prev = [UInt8](row["hash"] as Data)
        }
        guard !records.isEmpty else { return (seq, prev) }
        let now = AuditLog.nowMillis
        let insert = try db.cachedStatement(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (?, ?, ?, ?, ?, ?)")
        for r in records {
            seq += 1
            let canonical = r.entry(sequence: seq, timeMillis: now).canonicalBytes()
            let h = SHA256.hash(prev, canonical)
            try insert.execute(arguments: [seq, now, String(decoding: canonical, as: UTF8.self), Data(prev), Data(h), r.subject.map { Data($0) }])
            prev = h
        }
        let signature = try keys.auditSigning.signature(for: AuditLog.checkpointMessage(sequence: seq, hash: prev))
        try db.cachedStatement(sql: "INSERT INTO audit_checkpoints(seq, hash, signature, time) VALUES (?, ?, ?, ?)")
            .execute(arguments: [seq, Data(prev), Data(signature), now])
        return (seq, prev)
    }

    /// Appends entries that record no data change of their own (reads, denials, errors):
    /// group-committed with those of concurrent callers, and durable when this returns.
    public func audit(_ records: [AuditRecord]) throws {
        try auditCommits.append(records) { batch in
            try pool.write { db in _ = try appendAudit(db, batch) }
        }
    }

    /// Sequence number and hash (hex) of the newest entry; (0, zeros) for an empty log.
    public func auditHead() throws -> (entries: Int64, head: String) {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") else {
                return (0, AuditLog.hex(AuditLog.genesis))
            }
            return (row["seq"], AuditLog.hex([UInt8](row["hash"] as Data)))
        }
    }

    /// Writes the entries between `since` and `until` (unix milliseconds, inclusive) as JSON
    /// Lines or CSV, ending with a head record signed now. The slice is contiguous in sequence
    /// numbers (from the first entry at or after `since` to the last at or before `until`).
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat, to path: String) throws -> (entries: Int, head: String) {
        let signer = keys.auditSigning
        return try pool.read { db in
            let lo = try Int64.fetchOne(db, sql: "SELECT min(seq) FROM audit WHERE time >= ?", arguments: [sinceMillis ?? Int64.min]) ?? 1
            let hi = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit WHERE time <= ?", arguments: [untilMillis ?? Int64.max]) ?? 0
            var previous = AuditLog.genesis
            if let p = try Data.fetchOne(db, sql: "SELECT prev_hash FROM audit WHERE seq = ?", arguments: [lo]) { previous = [UInt8](p) }
            var signatures: [Int64: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT seq, signature FROM audit_checkpoints WHERE seq BETWEEN ? AND ?", arguments: [lo, hi]) {
                signatures[row["seq"]] = [UInt8](row["signature"] as Data)
            }
            guard let out = OutputStream(toFileAtPath: path, append: false) else {
                throw VaultError(.configuration, "\(path): cannot write the export")
            }
            out.open()
            defer { out.close() }
            func put(_ s: String) throws {
                let bytes = Array(s.utf8)
                let n = bytes.withUnsafeBufferPointer { out.write($0.baseAddress!, maxLength: $0.count) }
                if n != bytes.count { throw VaultError(.internalFailure, "\(path): write failed") }
            }
            if format == .csv { try put(AuditLog.csvColumns.joined(separator: ",") + "\n") }
            var head = previous
            var count = 0
            var buffer = ""
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, entry, prev_hash, hash FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", arguments: [lo, hi])
            while let row = try rows.next() {
                let seq: Int64 = row["seq"]
                let entryText: String = row["entry"]
                let prev = [UInt8](row["prev_hash"] as Data)
                let hash = [UInt8](row["hash"] as Data)
                guard case .object(var pairs) = try JSONValue.parse(entryText) else {
                    throw VaultError(.integrity, "audit entry \(seq) is not a JSON object")
                }
                pairs.append(("prev_hash", .string(AuditLog.hex(prev))))
                pairs.append(("hash", .string(AuditLog.hex(hash))))
                if let sig = signatures[seq] { pairs.append(("checkpoint_signature", .string(AuditLog.hex(sig)))) }
                switch format {
                case .jsonl: buffer += JSONValue.object(pairs).canonicalString() + "\n"
                case .csv: buffer += Self.csvRow(JSONValue.object(pairs)) + "\n"
                }
                if buffer.utf8.count > 1 << 20 { try put(buffer); buffer = "" }
                head = hash
                count += 1
            }
            let signature = try signer.signature(for: AuditLog.exportHeadMessage(firstSequence: lo, previous: previous, lastSequence: lo + Int64(count) - 1, head: head))
            let headRecord = JSONValue.object([
                ("first_sequence", .int(lo)),
                ("previous", .string(AuditLog.hex(previous))),
                ("last_sequence", .int(lo + Int64(count) - 1)),
                ("hash", .string(AuditLog.hex(head))),
                ("signature", .string(AuditLog.hex(signature))),
                ("signed_at", .string(AuditLog.isoMillis(AuditLog.nowMillis))),
                ("public_key", .string(AuditLog.hex(signer.publicKey.rawRepresentation))),
            ])
            switch format {
            case .jsonl: buffer += JSONValue.object([("head", headRecord)]).canonicalString() + "\n"
            case .csv:
                // The CSV's last row carries the signed head: "head" in the first column.
                var cells = [String](repeating: "", count: AuditLog.csvColumns.count)
                cells[0] = "head"
                cells[AuditLog.csvColumns.firstIndex(of: "hash")!] = AuditLog.hex(head)
                cells[AuditLog.csvColumns.firstIndex(of: "checkpoint_signature")!] = AuditLog.hex(signature)
                cells[AuditLog.csvColumns.firstIndex(of: "prev_hash")!] = AuditLog.hex(previous)
                buffer += cells.joined(separator: ",") + "\n"
            }
            try put(buffer)
            return (count, AuditLog.hex(head))
        }
    }

    static func csvRow(_ v: JSONValue) -> String {
        AuditLog.csvColumns.map { key -> String in
            let cell: String
            switch v[key] {
            case nil, .null?: cell = ""
            case .string(let s)?: cell = s
            case .int(let i)?: cell = String(i)
            case .array(let items)?: cell = items.map { if case .string(let s) = $0 { s } else { $0.canonicalString() } }.joined(separator: ";")
            case let other?: cell = other.canonicalString()
            }
            if cell.contains(",") || cell.contains("\"") || cell.contains("\n") {
                return "\"" + cell.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }
            return cell
        }.joined(separator: ",")
    }

    /// Verifies the whole log in the store: every entry's hash, every link, every checkpoint
    /// signature, and (with `expectHead`) that an earlier head is still in the log.
    public func verifyAudit(expectHead: String?) throws -> AuditVerification {
        let publicKey = auditPublicKey
        var expected: [UInt8]?
        if let expectHead {
            guard let h = AuditLog.unhex(expectHead.lowercased()), h.count == 32 else {
                throw VaultError(.usage, "--expect-head \(expectHead.prefix(80)): not a 64-digit hex hash")
            }
            expected = h
        }
        return try pool.read { db in
            var checkpoints: [Int64: (hash: [UInt8], signature: [UInt8])] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT seq, hash, signature FROM audit_checkpoints") {
                checkpoints[row["seq"]] = ([UInt8](row["hash"] as Data), [UInt8](row["signature"] as Data))
            }
            var v = ChainVerifier(publicKey: publicKey, startingAfter: AuditLog.genesis, sequence: 0, expecting: expected)
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, entry, prev_hash, hash, subject FROM audit ORDER BY seq")
            while let row = try rows.next() {
                let seq: Int64 = row["seq"]
                let text: String = row["entry"]
                guard let entry = try? JSONValue.parse(text), case .int(let stated)? = entry["metadata.sequence"] else {
                    v.fail(seq, "entry \(seq) is not a valid audit entry: it was modified")
                    break
                }
                if stated != seq {
                    v.fail(min(seq, stated), "row \(seq) holds entry \(stated): entries were reordered or moved")
                    break
                }
                // The subject column (an index for access exports) must agree with the entry.
                let column = (row["subject"] as Data?).map { AuditLog.hex([UInt8]($0)) }
                let statedSubject = entry["unmapped.subject"].flatMap { if case .string(let s) = $0 { s } else { nil } }
                if column != statedSubject {
                    v.fail(seq, "the subject index of entry \(seq) disagrees with the entry: it was altered")
                    break
                }
                let hash = [UInt8](row["hash"] as Data)
                let cp = checkpoints[seq]
                if let cp, cp.hash != hash {
                    v.fail(seq, "checkpoint \(seq) records another head than the entry's hash: the entry was rewritten")
                    break
                }
                if !v.add(entry: entry, statedPrevious: [UInt8](row["prev_hash"] as Data), statedHash: hash, checkpointSignature: cp?.signature) { break }
            }
            let last = v.last ?? 0
            if v.failure == nil, let beyond = checkpoints.keys.filter({ $0 > last }).min() {
                v.fail(last + 1, "a signed checkpoint exists for entry \(beyond) but the log ends at \(last): entries were deleted from the tail")
            }
            if v.failure == nil, last > v.lastCheckpoint {
                v.fail(v.lastCheckpoint + 1, "entries after \(v.lastCheckpoint) are not covered by a signed checkpoint: they were inserted or their checkpoint deleted")
            }
            if v.failure == nil, let expectHead, !v.sawExpected {
                v.fail(last + 1, "the expected head \(expectHead.prefix(16))… is not in this log: it was truncated or rewritten")
            }
            return AuditVerification(ok: v.failure == nil, entries: v.entries, firstBad: v.failure?.sequence,
                                     reason: v.failure?.reason, head: AuditLog.hex(v.head))
        }
    }
}
