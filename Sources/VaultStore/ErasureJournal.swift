import Foundation
public import VaultAudit
public import VaultCrypto
public import VaultValues

/// One erasure as the erasure journal keeps it: the erased subject's pseudonym (never its
/// customer ID), when, why, and the receipt (the sequence number and hash of the audit entry
/// that recorded it; nil for erasures made before receipts were kept).
public struct ErasureJournalEntry: Sendable, Hashable {
    public var pseudonym: [UInt8]
    public var erasedAtMillis: Int64
    public var reason: String
    public var auditSequence: Int64?
    public var receipt: String?
    public init(pseudonym: [UInt8], erasedAtMillis: Int64, reason: String, auditSequence: Int64?, receipt: String?) {
        self.pseudonym = pseudonym
        self.erasedAtMillis = erasedAtMillis
        self.reason = reason
        self.auditSequence = auditSequence
        self.receipt = receipt
    }
}

/// The erasure journal: every erasure a store has made (its suppression list with the
/// receipts, plus the erasures an earlier journal held whose suppression entry a re-ingest
/// removed since), the store's random id, and the store's audit head when it was written.
/// It holds no PII and no customer ID. `restore` re-applies from it every erasure recorded
/// after the backup was taken (docs/deployment.md, "Backups").
///
/// **File format** (`profilevault-erasure-journal/1`), JSON Lines:
/// 1. a header `{"format":"profilevault-erasure-journal/1","store":"<store id>"}`;
/// 2. one line per erasure `{"erased_at":ms,"pseudonym":hex,"reason":..,"receipt":hex|null,"receipt_seq":n|null}`;
/// 3. a trailer `{"audit_head":hex,"audit_seq":n,"end":true,"entries":n,"written_at":ms}`.
///
/// Every line ends with `,"mac":"<hex>"}`: HMAC-SHA256 under the keyring's erasure-journal key
/// (`KeyPurpose.erasureJournal`, identity version) of the previous line's MAC (32 zero bytes
/// before the header) followed by the line's body (the line without its MAC member). A line
/// altered, dropped, inserted or reordered breaks the chain; a truncated file lacks the trailer
/// (whose MAC covers the entry count). Either is an integrity error (exit 1). Only someone
/// holding the keyring can write a journal that verifies.
public struct ErasureJournal: Sendable {
    public var storeID: String
    public var entries: [ErasureJournalEntry]
    /// The store's audit head (sequence number and hash) when the journal was written.
    public var auditSequence: Int64
    public var auditHead: String
    public var writtenAtMillis: Int64
    public init(storeID: String, entries: [ErasureJournalEntry], auditSequence: Int64, auditHead: String, writtenAtMillis: Int64) {
        self.storeID = storeID
        self.entries = entries
        self.auditSequence = auditSequence
        self.auditHead = auditHead
        self.writtenAtMillis = writtenAtMillis
    }

    public static let format = "profilevault-erasure-journal/1"

    /// The entries of `earlier` and `current` together, one per erasure (pseudonym and
    /// receipt), ordered by time, receipt sequence and pseudonym. A journal kept beside the
    /// store is merged into each new one, so an erasure stays in it after a re-ingest of the
    /// same customer ID has removed its suppression entry.
    package static func merged(_ earlier: [ErasureJournalEntry], _ current: [ErasureJournalEntry]) -> [ErasureJournalEntry] {
        struct Key: Hashable { var pseudonym: [UInt8]; var seq: Int64?; var at: Int64 }
        var seen = Set<Key>()
        var out: [ErasureJournalEntry] = []
        for e in current + earlier where seen.insert(Key(pseudonym: e.pseudonym, seq: e.auditSequence, at: e.erasedAtMillis)).inserted {
            out.append(e)
        }
        out.sort {
            if $0.erasedAtMillis != $1.erasedAtMillis { return $0.erasedAtMillis < $1.erasedAtMillis }
            if ($0.auditSequence ?? -1) != ($1.auditSequence ?? -1) { return ($0.auditSequence ?? -1) < ($1.auditSequence ?? -1) }
            return $0.pseudonym.lexicographicallyPrecedes($1.pseudonym)
        }
        return out
    }

    /// The journal's bytes, each line MACed under `key` (see the type's documentation).
    package func sealed(key: SharedHMACSHA256Key) -> [UInt8] {
        var out: [UInt8] = []
        var previous = [UInt8](repeating: 0, count: 32)
        func line(_ body: JSONValue) {
            let bytes = body.canonicalBytes()
            let mac = key.mac(previous + bytes)
            previous = mac
            out += bytes.dropLast()
            out += Array(",\"mac\":\"\(AuditLog.hex(mac))\"}\n".utf8)
        }
        line(.object([("format", .string(Self.format)), ("store", .string(storeID))]))
        for e in entries {
            line(.object([("erased_at", .int(e.erasedAtMillis)), ("pseudonym", .string(AuditLog.hex(e.pseudonym))),
                          ("reason", .string(e.reason)), ("receipt", e.receipt.map(JSONValue.string) ?? .null),
                          ("receipt_seq", e.auditSequence.map(JSONValue.int) ?? .null)]))
        }
        line(.object([("audit_head", .string(auditHead)), ("audit_seq", .int(auditSequence)), ("end", .bool(true)),
                      ("entries", .int(Int64(entries.count))), ("written_at", .int(writtenAtMillis))]))
        return out
    }

    /// Reads and verifies a journal: every line's MAC under `key`, the chain, the trailer, and
    /// (with `storeID`) that it is this store's journal. Any failure is an integrity error
    /// naming the line (from 1), never a value.
    package static func open(_ bytes: [UInt8], key: SharedHMACSHA256Key, storeID: String?, label: String) throws -> ErasureJournal {
        func bad(_ line: Int, _ why: String) -> VaultError {
            VaultError(.integrity, "\(label):\(line): the erasure journal \(why): it was altered, truncated or is not this store's journal; refused")
        }
        let suffixLength = ",\"mac\":\"".utf8.count + 64 + "\"}".utf8.count
        var previous = [UInt8](repeating: 0, count: 32)
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        if lines.last?.isEmpty == true { lines.removeLast() }
        guard !lines.isEmpty else { throw bad(1, "is empty") }
        var header: JSONValue?
        var entries: [ErasureJournalEntry] = []
        var trailer: JSONValue?
        for (i, raw) in lines.enumerated() {
            let n = i + 1
            guard trailer == nil else { throw bad(n, "holds a line after its end") }
            guard raw.count > suffixLength + 2, raw.last == UInt8(ascii: "}") else { throw bad(n, "has a line without a MAC") }
            let cut = raw.count - suffixLength
            let suffix = Array(raw[cut...])
            guard suffix.starts(with: Array(",\"mac\":\"".utf8)), let mac = AuditLog.unhex(String(decoding: suffix.dropFirst(8).prefix(64), as: UTF8.self)),
                  mac.count == 32 else { throw bad(n, "has a line without a MAC") }
            let body = Array(raw[..<cut]) + [UInt8(ascii: "}")]
            guard constantTimeEqual(key.mac(previous + body), mac) else { throw bad(n, "has a line whose MAC does not verify") }
            previous = mac
            guard let value = try? JSONValue.parse(body), case .object = value else { throw bad(n, "has a line that is not a JSON object") }
            if header == nil {
                guard value["format"] == .string(format), case .string? = value["store"] else { throw bad(n, "has no header") }
                header = value
            } else if value["end"] == .bool(true) {
                trailer = value
            } else {
                guard case .int(let at)? = value["erased_at"], case .string(let p)? = value["pseudonym"], let pseudo = AuditLog.unhex(p),
                      pseudo.count == 32, case .string(let reason)? = value["reason"] else { throw bad(n, "has a malformed entry") }
                var seq: Int64?
                switch value["receipt_seq"] { case .int(let s)?: seq = s; case .null?, nil: seq = nil; default: throw bad(n, "has a malformed entry") }
                var receipt: String?
                switch value["receipt"] { case .string(let r)?: receipt = r; case .null?, nil: receipt = nil; default: throw bad(n, "has a malformed entry") }
                entries.append(ErasureJournalEntry(pseudonym: pseudo, erasedAtMillis: at, reason: reason, auditSequence: seq, receipt: receipt))
            }
        }
        guard let header, case .string(let store)? = header["store"] else { throw bad(1, "has no header") }
        guard let trailer else { throw bad(lines.count, "has no end line (truncated)") }
        guard case .int(let count)? = trailer["entries"], count == Int64(entries.count),
              case .int(let seq)? = trailer["audit_seq"], case .string(let head)? = trailer["audit_head"],
              case .int(let written)? = trailer["written_at"] else { throw bad(lines.count, "has an end line that does not match its entries") }
        if let storeID, store != storeID { throw bad(1, "belongs to another store") }
        return ErasureJournal(storeID: store, entries: entries, auditSequence: seq, auditHead: head, writtenAtMillis: written)
    }
}
