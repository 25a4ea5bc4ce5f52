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

/// The erasure journal: every erasure a store has made (pseudonym, time, reason, receipt), the
/// store's id, and the audit heads the journal vouches for. It holds no PII and no customer ID.
/// `restore` re-applies from it every erasure recorded after the backup was taken
/// (docs/deployment.md, "Backups that remember erasures").
///
/// Two file formats, both JSON Lines, every line MACed and chained: a line ends with
/// `,"mac":"<hex>"}`, the HMAC-SHA256 under the keyring's erasure-journal key
/// (`KeyPurpose.erasureJournal`, identity version) of the previous line's MAC (32 zero bytes
/// before the first line) followed by the line's body (the line without its MAC member). Only
/// someone holding the keyring can write a journal that verifies; a line altered, dropped,
/// inserted or reordered breaks the chain. Either failure is an integrity error (exit 1) naming
/// the file and the record (the header is record 0, then one record a line).
///
/// - **`profilevault-erasure-journal/2`, append-only** (the journal beside a SQLite store,
///   `STORE.erasures`): a header `{"format":"profilevault-erasure-journal/2","n":0,"store":..}`,
///   then records numbered `n` = 1, 2, ...: an erasure
///   `{"erased_at":ms,"n":k,"pseudonym":hex,"reason":..,"receipt":hex|null,"receipt_seq":n|null}`
///   or a mark `{"audit_head":hex,"audit_seq":n,"mark":"backup"|"created","n":k,"written_at":ms}`
///   (the store's audit head when a backup was taken or the journal was created from the
///   suppression list). Each erasure appends its records (``appendLines(_:after:next:key:)``);
///   nothing is rewritten. A file cut inside a record (a torn write, a truncation that is not at
///   a line end) is refused naming that record. An append-only file cannot prove where it ends:
///   whole records cut off its end leave a journal that verifies up to there, as an older copy
///   of it does (deployment.md says how copies are kept).
/// - **`profilevault-erasure-journal/1`, whole file** (`audit erasures --out FILE`, and the
///   journal beside a store before append-only journals): header, one line per erasure, and a
///   trailer `{"audit_head":hex,"audit_seq":n,"end":true,"entries":n,"written_at":ms}` whose MAC
///   covers the entry count, so any truncation is refused. The first append to a journal in this
///   format converts it once (verified, then rewritten as format 2 under the journal's lock).
public struct ErasureJournal: Sendable {
    public var storeID: String
    public var entries: [ErasureJournalEntry]
    /// The newest audit head (sequence number and hash) the journal vouches for (it was complete
    /// up to there): a format-1 trailer or a format-2 mark. An erasure's receipt does not count:
    /// a restored store's journal carries erasures whose receipts number the entries of the line
    /// it was restored from.
    public var auditSequence: Int64
    public var auditHead: String
    public var writtenAtMillis: Int64
    /// Every audit head the journal vouches for (sequence number: hash hex).
    public var heads: [Int64: String] = [:]
    /// 1 (whole file) or 2 (append-only).
    public var formatVersion: Int = 1
    /// Format 2: the number of the last record (0: header only) and its MAC (where the next
    /// appended record chains from).
    package var lastRecord: Int64 = 0
    package var lastMAC: [UInt8] = []
    public init(storeID: String, entries: [ErasureJournalEntry], auditSequence: Int64, auditHead: String, writtenAtMillis: Int64) {
        self.storeID = storeID
        self.entries = entries
        self.auditSequence = auditSequence
        self.auditHead = auditHead
        self.writtenAtMillis = writtenAtMillis
        self.heads = [auditSequence: auditHead]
    }

    public static let format = "profilevault-erasure-journal/1"
    public static let appendOnlyFormat = "profilevault-erasure-journal/2"

    /// One record of a format-2 journal.
    package enum Record: Sendable {
        case erasure(ErasureJournalEntry)
        /// The store's audit head when a backup was taken (`backup`) or the journal was
        /// (re)created from the suppression list (`created`).
        case mark(kind: String, sequence: Int64, head: String, atMillis: Int64)
    }

    /// The entries of `earlier` and `current` together, one per erasure (pseudonym and
    /// receipt), ordered by time, receipt sequence and pseudonym.
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

    /// One erasure's identity in a journal: pseudonym, receipt and time.
    package struct EntryKey: Hashable {
        var pseudonym: [UInt8]
        var seq: Int64?
        var at: Int64
        package init(_ e: ErasureJournalEntry) {
            pseudonym = e.pseudonym
            seq = e.auditSequence
            at = e.erasedAtMillis
        }
    }

    /// One sealed line: `body` with its MAC member, chained from `previous` (updated).
    package static func sealLine(_ body: JSONValue, previous: inout [UInt8], key: SharedHMACSHA256Key) -> [UInt8] {
        let bytes = body.canonicalBytes()
        let mac = key.mac(previous + bytes)
        previous = mac
        return Array(bytes.dropLast()) + Array(",\"mac\":\"\(AuditLog.hex(mac))\"}\n".utf8)
    }

    static func entryMembers(_ e: ErasureJournalEntry) -> [(String, JSONValue)] {
        [("erased_at", .int(e.erasedAtMillis)), ("pseudonym", .string(AuditLog.hex(e.pseudonym))),
         ("reason", .string(e.reason)), ("receipt", e.receipt.map(JSONValue.string) ?? .null),
         ("receipt_seq", e.auditSequence.map(JSONValue.int) ?? .null)]
    }

    /// The journal's bytes in the whole-file format 1, each line MACed under `key`.
    package func sealed(key: SharedHMACSHA256Key) -> [UInt8] {
        var out: [UInt8] = []
        var previous = [UInt8](repeating: 0, count: 32)
        out += Self.sealLine(.object([("format", .string(Self.format)), ("store", .string(storeID))]), previous: &previous, key: key)
        for e in entries { out += Self.sealLine(.object(Self.entryMembers(e)), previous: &previous, key: key) }
        out += Self.sealLine(.object([("audit_head", .string(auditHead)), ("audit_seq", .int(auditSequence)), ("end", .bool(true)),
                                      ("entries", .int(Int64(entries.count))), ("written_at", .int(writtenAtMillis))]), previous: &previous, key: key)
        return out
    }

    /// A new format-2 journal of `storeID`: its header and `records`. Returns the bytes, the
    /// last record's number and its MAC.
    package static func sealedAppendOnly(storeID: String, records: [Record], key: SharedHMACSHA256Key) -> (bytes: [UInt8], last: Int64, mac: [UInt8]) {
        var previous = [UInt8](repeating: 0, count: 32)
        let header = sealLine(.object([("format", .string(appendOnlyFormat)), ("n", .int(0)), ("store", .string(storeID))]), previous: &previous, key: key)
        let (rest, last, mac) = appendLines(records, after: previous, next: 1, key: key)
        return (header + rest, last, mac)
    }

    /// The lines of `records` appended to a format-2 journal whose last record has MAC `after`,
    /// numbered from `next`. Returns the bytes, the last record's number and its MAC.
    package static func appendLines(_ records: [Record], after: [UInt8], next: Int64, key: SharedHMACSHA256Key) -> (bytes: [UInt8], last: Int64, mac: [UInt8]) {
        var previous = after
        var out: [UInt8] = []
        var n = next
        for r in records {
            switch r {
            case .erasure(let e):
                out += sealLine(.object(entryMembers(e) + [("n", .int(n))]), previous: &previous, key: key)
            case .mark(let kind, let seq, let head, let at):
                out += sealLine(.object([("audit_head", .string(head)), ("audit_seq", .int(seq)), ("mark", .string(kind)), ("n", .int(n)),
                                         ("written_at", .int(at))]), previous: &previous, key: key)
            }
            n += 1
        }
        return (out, n - 1, previous)
    }

    /// The format of a journal file from its first line (not verified: ``open`` verifies).
    package static func formatOf(firstLine: [UInt8]) -> String? {
        guard let cut = firstLine.lastIndex(of: UInt8(ascii: ",")), let v = try? JSONValue.parse(Array(firstLine[..<cut]) + [UInt8(ascii: "}")]),
              case .string(let f)? = v["format"] else { return nil }
        return f
    }

    static let macSuffixLength = ",\"mac\":\"".utf8.count + 64 + "\"}".utf8.count

    /// Splits a sealed line into its body and MAC; nil when it has no MAC member.
    package static func split(_ raw: [UInt8]) -> (body: [UInt8], mac: [UInt8])? {
        guard raw.count > macSuffixLength + 2, raw.last == UInt8(ascii: "}") else { return nil }
        let cut = raw.count - macSuffixLength
        let suffix = Array(raw[cut...])
        guard suffix.starts(with: Array(",\"mac\":\"".utf8)), let mac = AuditLog.unhex(String(decoding: suffix.dropFirst(8).prefix(64), as: UTF8.self)),
              mac.count == 32 else { return nil }
        return (Array(raw[..<cut]) + [UInt8(ascii: "}")], mac)
    }

    /// Reads and verifies a journal in either format: every line's MAC under `key`, the chain,
    /// the record numbers (format 2) or the trailer (format 1), and (with `storeID`) that it is
    /// this store's journal. Any failure is an integrity error naming the file and the record
    /// (the header is record 0), never a value.
    package static func open(_ bytes: [UInt8], key: SharedHMACSHA256Key, storeID: String?, label: String) throws -> ErasureJournal {
        var prefix: ErasureJournal?
        return try read(bytes, key: key, storeID: storeID, label: label, prefix: &prefix)
    }

    /// ``open``, and on failure the part that verified before the first bad record in `prefix`
    /// (nil when not even the header verified): what a writer keeps when it must start a new
    /// journal.
    package static func read(_ bytes: [UInt8], key: SharedHMACSHA256Key, storeID: String?, label: String,
                             prefix: inout ErasureJournal?) throws -> ErasureJournal {
        func bad(_ record: Int, _ why: String) -> VaultError {
            VaultError(.integrity, "\(label): record \(record): the erasure journal \(why): it was altered, truncated or is not this store's journal; refused")
        }
        var previous = [UInt8](repeating: 0, count: 32)
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        // A file that does not end with a line end was cut inside its last record.
        let torn = !(lines.last?.isEmpty ?? true)
        if lines.last?.isEmpty == true { lines.removeLast() }
        guard !lines.isEmpty else { throw bad(0, "is empty") }
        var journal: ErasureJournal?
        var version = 0
        var trailer: JSONValue?
        var newest: (seq: Int64, head: String)?
        func vouch(_ j: inout ErasureJournal, _ seq: Int64, _ head: String) {
            j.heads[seq] = head
            if newest.map({ seq > $0.seq }) ?? true { newest = (seq, head) }
        }
        for (i, raw) in lines.enumerated() {
            let n = i
            if torn && i == lines.count - 1 {
                throw bad(n, "ends inside this record (the file was cut short)")
            }
            guard trailer == nil else { throw bad(n, "holds a record after its end") }
            guard let (body, mac) = split(raw) else { throw bad(n, "has a record without a MAC") }
            guard constantTimeEqual(key.mac(previous + body), mac) else {
                throw bad(n, "has a record whose MAC does not verify (it was edited, or a record before it was removed, inserted or moved)")
            }
            previous = mac
            guard let value = try? JSONValue.parse(body), case .object = value else { throw bad(n, "has a record that is not a JSON object") }
            guard var j = journal else {
                guard case .string(let store)? = value["store"] else { throw bad(n, "has no header") }
                switch value["format"] {
                case .string(Self.format)?: version = 1
                case .string(Self.appendOnlyFormat)? where value["n"] == .int(0): version = 2
                default: throw bad(n, "has no header")
                }
                if let storeID, store != storeID { throw bad(n, "belongs to another store") }
                var made = ErasureJournal(storeID: store, entries: [], auditSequence: 0, auditHead: AuditLog.hex(AuditLog.genesis), writtenAtMillis: 0)
                made.heads = [:]
                made.formatVersion = version
                made.lastMAC = mac
                journal = made
                prefix = made
                continue
            }
            if version == 2 {
                guard value["n"] == .int(Int64(n)) else { throw bad(n, "has a record numbered out of place") }
            }
            if version == 1, value["end"] == .bool(true) {
                trailer = value
            } else if version == 2, case .string(let kind)? = value["mark"] {
                guard case .int(let seq)? = value["audit_seq"], case .string(let head)? = value["audit_head"], case .int(let at)? = value["written_at"],
                      !kind.isEmpty else { throw bad(n, "has a malformed mark") }
                vouch(&j, seq, head)
                j.writtenAtMillis = max(j.writtenAtMillis, at)
            } else {
                guard case .int(let at)? = value["erased_at"], case .string(let p)? = value["pseudonym"], let pseudo = AuditLog.unhex(p),
                      pseudo.count == 32, case .string(let reason)? = value["reason"] else { throw bad(n, "has a malformed entry") }
                var seq: Int64?
                switch value["receipt_seq"] { case .int(let s)?: seq = s; case .null?, nil: seq = nil; default: throw bad(n, "has a malformed entry") }
                var receipt: String?
                switch value["receipt"] { case .string(let r)?: receipt = r; case .null?, nil: receipt = nil; default: throw bad(n, "has a malformed entry") }
                j.entries.append(ErasureJournalEntry(pseudonym: pseudo, erasedAtMillis: at, reason: reason, auditSequence: seq, receipt: receipt))
            }
            j.lastRecord = Int64(n)
            j.lastMAC = mac
            journal = j
            if version == 2 {
                var p = j
                if let newest { (p.auditSequence, p.auditHead) = newest }
                prefix = p
            }
        }
        guard var journal else { throw bad(0, "has no header") }
        if version == 1 {
            guard let trailer else { throw bad(lines.count, "has no end record (truncated)") }
            guard case .int(let count)? = trailer["entries"], count == Int64(journal.entries.count),
                  case .int(let seq)? = trailer["audit_seq"], case .string(let head)? = trailer["audit_head"],
                  case .int(let written)? = trailer["written_at"] else { throw bad(lines.count - 1, "has an end record that does not match its entries") }
            journal.auditSequence = seq
            journal.auditHead = head
            journal.writtenAtMillis = written
            journal.heads = [seq: head]
            return journal
        }
        if let newest { (journal.auditSequence, journal.auditHead) = newest }
        return journal
    }
}
