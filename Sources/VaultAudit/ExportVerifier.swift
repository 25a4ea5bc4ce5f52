import Foundation
public import VaultCrypto

/// Verifies a JSON Lines audit export with the public key alone (no keyring, no store).
public enum AuditExportVerifier {
    public struct FileError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static func verify(path: String, publicKey: Ed25519PublicKey, expectHead: String?) throws(FileError) -> AuditVerification {
        guard let reader = LineStream(path: path) else {
            throw FileError(description: "\(path): cannot read the export")
        }
        return try verify(reader, name: path, publicKey: publicKey, expectHead: expectHead)
    }

    /// The same check of an export held in memory (the console's upload): `name` is what the
    /// messages call it. No file is written.
    public static func verify(bytes: [UInt8], name: String, publicKey: Ed25519PublicKey, expectHead: String?) throws(FileError) -> AuditVerification {
        try verify(LineStream(bytes: bytes), name: name, publicKey: publicKey, expectHead: expectHead)
    }

    static func verify(_ reader: LineStream, name path: String, publicKey: Ed25519PublicKey, expectHead: String?) throws(FileError) -> AuditVerification {
        var expected: AuditExpectation?
        if let expectHead {
            do { expected = try AuditExpectation.parse(expectHead, publicKey: publicKey) } catch {
                throw FileError(description: error.description)
            }
        }

        var verifier: ChainVerifier?
        var headRecord: JSONValue?
        var lineNo = 0
        // A subject's selection (`audit export --subject`) starts with a `selection` line.
        var selection: SelectionCheck?
        func result(_ v: ChainVerifier?, _ seq: Int64?, _ reason: String?) -> AuditVerification {
            AuditVerification(ok: reason == nil, entries: v?.entries ?? 0, firstBad: reason == nil ? nil : seq,
                              reason: reason, head: v.map { AuditLog.hex($0.head) })
        }
        while let line = reader.next() {
            lineNo += 1
            if lineNo == 1, line.starts(with: Array("metadata.sequence,".utf8)) {
                throw FileError(description: "\(path): a CSV export; verify reads the JSON Lines export (audit export --format jsonl)")
            }
            if line.isEmpty { continue }
            let value: JSONValue
            do { value = try JSONValue.parse(line) } catch {
                let seq = (verifier?.last ?? 0) + 1
                return result(verifier, seq, "line \(lineNo): not a JSON object (\(error)): the file was altered")
            }
            if headRecord != nil {
                return result(verifier, (verifier?.last ?? 0) + 1, "line \(lineNo): entries after the signed head: entries were appended to the export")
            }
            if let head = value["head"] {
                headRecord = head
                continue
            }
            if lineNo == 1, case .object(let s)? = value["selection"] {
                guard case .string(let subject)? = JSONValue.object(s)["subject"], AuditLog.unhex(subject)?.count == 32 else {
                    return result(nil, 1, "line 1: a selection without a valid subject")
                }
                selection = SelectionCheck(subject: subject)
                continue
            }
            guard case .object(let pairs) = value else {
                return result(verifier, (verifier?.last ?? 0) + 1, "line \(lineNo): not a JSON object")
            }
            var entryPairs: [(String, JSONValue)] = []
            var prev: [UInt8]?, hash: [UInt8]?, sig: [UInt8]?
            var cpTime: Int64?, cpPreviousSequence: Int64?, cpPrevious: [UInt8]?
            for (k, v) in pairs {
                switch k {
                case "prev_hash": if case .string(let s) = v { prev = AuditLog.unhex(s) }
                case "hash": if case .string(let s) = v { hash = AuditLog.unhex(s) }
                case "checkpoint_signature": if case .string(let s) = v { sig = AuditLog.unhex(s) ?? [] }
                case "checkpoint_time": if case .int(let t) = v { cpTime = t }
                case "checkpoint_previous_sequence": if case .int(let t) = v { cpPreviousSequence = t }
                case "checkpoint_previous": if case .string(let s) = v { cpPrevious = AuditLog.unhex(s) }
                default: entryPairs.append((k, v))
                }
            }
            guard let prev, let hash else {
                return result(verifier, (verifier?.last ?? 0) + 1, "line \(lineNo): entry without prev_hash and hash")
            }
            // Nested (OCSF objects) or flat: the hash covers the stored, flat entry.
            guard let entry = AuditLog.flattened(.object(entryPairs)) else {
                return result(verifier, (verifier?.last ?? selection?.last ?? 0) &+ 1, "line \(lineNo): not a valid audit entry (its objects do not flatten to one entry): the file was altered")
            }
            if var sel = selection {
                let ok = sel.add(entry: entry, previous: prev, hash: hash)
                selection = sel
                if !ok, let f = sel.failure { return AuditVerification(ok: false, entries: sel.count, firstBad: f.0, reason: f.1, head: nil) }
                continue
            }
            if verifier == nil {
                guard case .int(let seq)? = entry["metadata.sequence"], seq >= 1, seq < Int64.max else {
                    return result(nil, 1, "line \(lineNo): entry without a valid sequence number")
                }
                verifier = ChainVerifier(publicKey: publicKey, startingAfter: prev, sequence: seq - 1, expecting: expected)
            }
            var checkpoint: AuditCheckpoint?
            if let sig {
                guard case .int(let seq)? = entry["metadata.sequence"] else {
                    return result(verifier, (verifier?.last ?? 0) &+ 1, "line \(lineNo): entry without a sequence number")
                }
                checkpoint = AuditCheckpoint(sequence: seq, hash: hash, signature: sig, timeMillis: cpTime,
                                             previousSequence: cpPreviousSequence, previousDigest: cpPrevious)
            }
            guard var v = verifier else { return result(nil, 1, "line \(lineNo): no chain") }
            let ok = v.add(entry: entry, statedPrevious: prev, statedHash: hash, checkpoint: checkpoint)
            verifier = v
            if !ok, let f = v.failure {
                return result(verifier, f.sequence, f.reason)
            }
        }
        guard let head = headRecord,
              case .int(let first)? = head["first_sequence"], case .int(let last)? = head["last_sequence"],
              case .string(let prevHex)? = head["previous"], let previous = AuditLog.unhex(prevHex),
              case .string(let hashHex)? = head["hash"], let headHash = AuditLog.unhex(hashHex),
              case .string(let sigHex)? = head["signature"], let signature = AuditLog.unhex(sigHex),
              first >= 1, first < Int64.max, last >= first - 1, last < Int64.max else {
            return result(verifier, (verifier?.last ?? 0) &+ 1, "no valid signed head record at the end: the export was truncated or altered")
        }
        if let sel = selection {
            // A selection is signed as such and does not carry the chain up to an expected or
            // published head: pinning one cannot be checked on it, so it is refused, not passed.
            guard expected == nil else {
                return result(nil, first, "--expect-head does not apply to a subject's selection: verify a full export (or the store) against the head")
            }
            return sel.finish(head: head, first: first, previous: previous, last: last, headHash: headHash, signature: signature, publicKey: publicKey)
        }
        if head["subject"] != nil {
            return result(verifier, first, "the signed head is a subject's selection but the file has no selection line: the file was altered")
        }
        guard publicKey.isValidSignature(signature, for: AuditLog.exportHeadMessage(firstSequence: first, previous: previous, lastSequence: last, head: headHash)) else {
            return result(verifier, (verifier?.lastCheckpoint ?? first - 1) + 1, "the signed head does not verify with this public key: the export was rewritten or signed by another store")
        }
        var v = verifier ?? ChainVerifier(publicKey: publicKey, startingAfter: previous, sequence: first - 1, expecting: expected)
        if let f = v.firstSequence, f != first {
            return result(v, first, "the export should start at entry \(first) but starts at \(f): entries were deleted from its start")
        }
        if v.startPrevious != previous {
            return result(v, first, "the first entry's prev_hash differs from the signed head's: the start of the export was altered")
        }
        if (v.last ?? first - 1) != last {
            let at = (v.last ?? first - 1) + 1
            return result(v, at, "the signed head covers entries up to \(last) but the file ends at \(at - 1): the tail was truncated")
        }
        if v.head != headHash {
            return result(v, v.lastCheckpoint + 1, "the entries do not hash to the signed head: entries were rewritten")
        }
        v.finishExpectation()
        if let f = v.failure { return result(v, f.sequence, f.reason) }
        return result(v, nil, nil)
    }
}

/// Checks a subject's selection: each entry hashes (with its stated `prev_hash`) to its stated
/// hash and names the subject, sequence numbers rise, and the signed head covers exactly these
/// entries (their count and the digest of their hashes). The entries between them are not in
/// the file: the store checked that chain before signing.
struct SelectionCheck {
    let subject: String
    var count = 0
    var last: Int64?
    var firstSeen: Int64?
    var hashes: [UInt8] = []
    var failure: (Int64, String)?

    init(subject: String) { self.subject = subject }

    mutating func add(entry: JSONValue, previous: [UInt8], hash: [UInt8]) -> Bool {
        guard case .int(let seq)? = entry["metadata.sequence"], seq >= 1, seq < Int64.max else {
            failure = ((last ?? 0) &+ 1, "entry without a valid sequence number")
            return false
        }
        count += 1
        if firstSeen == nil { firstSeen = seq }
        if let last, seq <= last {
            failure = (seq, "an entry claiming sequence \(seq) follows \(last): entries inserted, duplicated or reordered")
            return false
        }
        guard AuditLog.chain(previous: previous, entry: entry) == hash else {
            failure = (seq, "hash does not match the entry's content: the entry was modified")
            return false
        }
        guard case .string(subject)? = entry["unmapped.subject"] else {
            failure = (seq, "entry \(seq) is not about the selected subject: it was added")
            return false
        }
        hashes += hash
        last = seq
        return true
    }

    func finish(head: JSONValue, first: Int64, previous: [UInt8], last end: Int64, headHash: [UInt8], signature: [UInt8],
                publicKey: Ed25519PublicKey) -> AuditVerification {
        func bad(_ seq: Int64, _ why: String) -> AuditVerification {
            AuditVerification(ok: false, entries: count, firstBad: seq, reason: why, head: nil)
        }
        guard case .string(subject)? = head["subject"], case .int(let selected)? = head["selected"],
              case .string(let digestHex)? = head["digest"], let digest = AuditLog.unhex(digestHex) else {
            return bad(firstSeen ?? first, "the signed head does not name this selection's subject, count and digest: the file was altered")
        }
        guard publicKey.isValidSignature(signature, for: AuditLog.selectionHeadMessage(
            firstSequence: first, previous: previous, lastSequence: end, head: headHash, subject: subject, selected: selected, digest: digest)) else {
            return bad(firstSeen ?? first, "the signed head does not verify with this public key: the export was rewritten or signed by another store")
        }
        if let f = firstSeen, f < first { return bad(f, "entry \(f) lies before the signed range \(first)-\(end): it was added") }
        if let l = last, l > end { return bad(l, "entry \(l) lies after the signed range \(first)-\(end): it was added") }
        guard Int64(count) == selected, SHA256.hash(hashes) == digest else {
            return bad(firstSeen ?? first, "the file holds \(count) entries but the signed head covers \(selected) others: entries of the selection were deleted, added or replaced")
        }
        return AuditVerification(ok: true, entries: count, firstBad: nil, reason: nil, head: AuditLog.hex(headHash))
    }
}

/// Reads a file line by line with a fixed buffer (exports can be large).
final class LineStream {
    /// nil: the lines of bytes given in memory (all in `buffer`).
    private let handle: FileHandle?
    private var buffer: [UInt8] = []
    private var position = 0
    private var eof = false

    init?(path: String) {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        handle = h
    }

    init(bytes: [UInt8]) {
        handle = nil
        buffer = bytes
        eof = true
    }

    deinit { try? handle?.close() }

    func next() -> [UInt8]? {
        while true {
            if let nl = buffer[position...].firstIndex(of: 0x0A) {
                let line = Array(buffer[position..<nl])
                position = nl + 1
                return line
            }
            if eof {
                guard position < buffer.count else { return nil }
                let line = Array(buffer[position...])
                position = buffer.count
                return line
            }
            buffer.removeSubrange(0..<position)
            position = 0
            let chunk = (try? handle?.read(upToCount: 1 << 20)) ?? nil
            if let chunk, !chunk.isEmpty { buffer.append(contentsOf: chunk) } else { eof = true }
        }
    }
}
