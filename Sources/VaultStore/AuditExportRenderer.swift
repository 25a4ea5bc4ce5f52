package import VaultAudit
package import VaultCrypto
import VaultValues

/// The rendering of an audit export, shared by every engine: the CSV header, each entry of the
/// slice checked (contiguous, hash-linked, its own sequence and time) and rendered with its
/// hashes and checkpoint fields, the walk after the slice to the checkpoint that covers it, and
/// the signed head record. An engine only reads its rows (one consistent snapshot) and feeds
/// them in order:
///
///     var r = AuditExportRenderer(format:first:previous:checkpointBefore:checkpoints:)
///     for each entry of the slice { try r.add(...); if let s = r.takeChunk() { write s } }
///     if r.needsCover { r.beginCover(); while !r.isCovered, let e = the entry at r.nextSequence { try r.follow(...); if e has a checkpoint { try r.cover(by:) } }; try r.checkCovered(publicKey:) }
///     write try r.finish(signer:)
///
/// A failed check throws `AuditExportRefusal`, whose message the engine throws as its integrity
/// error (nothing is exported).
package struct AuditExportRenderer {
    let format: AuditExportFormat
    /// The slice's first sequence number and the hash before it.
    let first: Int64
    let previous: [UInt8]
    /// The hash of the last entry rendered (`previous` before any).
    package private(set) var head: [UInt8]
    /// Entries of the chain walked (the whole slice).
    package private(set) var count = 0
    /// Entries written to the export (the slice, or the subject's entries in it).
    package private(set) var rendered = 0
    /// Entries as OCSF objects (``AuditLog/nested(_:)``) rather than flat keys (JSON Lines).
    let nested: Bool
    /// A subject's selection: only the entries naming this pseudonym (hex) are written, and the
    /// head signs their count and digest (``AuditLog/selectionHeadMessage``).
    let subject: String?
    private var selectedHashes: [UInt8] = []
    private let checkpoints: [Int64: AuditCheckpoint]
    private var lastCheckpoint: AuditCheckpoint?
    private var buffer = ""
    // The walk after the slice.
    package private(set) var covering: AuditCheckpoint?
    private var running: [UInt8] = []
    package private(set) var nextSequence: Int64 = 0

    /// `checkpointBefore`: the last checkpoint before `first` (the first one inside links to
    /// it); `checkpoints`: those inside the slice, by sequence number.
    package init(format: AuditExportFormat, first: Int64, previous: [UInt8], checkpointBefore: AuditCheckpoint?, checkpoints: [Int64: AuditCheckpoint],
                 nested: Bool = false, subject: String? = nil) {
        self.format = format
        self.nested = nested && format == .jsonl
        self.subject = subject
        self.first = first
        self.previous = previous
        self.head = previous
        self.lastCheckpoint = checkpointBefore
        self.checkpoints = checkpoints
        if format == .csv { buffer = AuditLog.csvColumns.joined(separator: ",") + "\n" }
        if let subject, format == .jsonl {
            buffer = JSONValue.object([("selection", .object([("subject", .string(subject))]))]).canonicalString() + "\n"
        }
    }

    /// One entry as an export line (without its newline): the entry (nested or flat) with
    /// `prev_hash`, `hash` and the checkpoint fields `extra`. Also the line `serve
    /// --audit-stream` appends.
    package static func line(entry pairs: [(String, JSONValue)], extra: [(String, JSONValue)], nested: Bool) -> String {
        guard nested, case .object(let tree) = AuditLog.nested(.object(pairs)) else {
            return JSONValue.object(pairs + extra).canonicalString()
        }
        return JSONValue.object(tree + extra).canonicalString()
    }

    /// The chain fields of an entry: its hashes and, at a checkpoint, the signature and link.
    package static func chainFields(previous: [UInt8], hash: [UInt8], checkpoint cp: AuditCheckpoint?) -> [(String, JSONValue)] {
        var pairs: [(String, JSONValue)] = [("prev_hash", .string(AuditLog.hex(previous))), ("hash", .string(AuditLog.hex(hash)))]
        if let cp {
            pairs.append(("checkpoint_signature", .string(AuditLog.hex(cp.signature))))
            if let t = cp.timeMillis, let ps = cp.previousSequence, let pd = cp.previousDigest {
                pairs.append(("checkpoint_time", .int(t)))
                pairs.append(("checkpoint_previous_sequence", .int(ps)))
                pairs.append(("checkpoint_previous", .string(AuditLog.hex(pd))))
            }
        }
        return pairs
    }

    /// The slice's last sequence number (`first - 1` when it is empty).
    package var last: Int64 { first + Int64(count) - 1 }

    private static func broken(_ seq: Int64, _ why: String) -> AuditExportRefusal {
        AuditExportRefusal(message: "audit entry \(seq): \(why); nothing was exported (run audit verify)")
    }

    /// Checks a checkpoint found at its entry against the recomputed hash and the one before.
    private mutating func accept(_ cp: AuditCheckpoint, hash: [UInt8]) throws(AuditExportRefusal) {
        guard cp.hash == hash else { throw Self.broken(cp.sequence, "its checkpoint records another hash") }
        if let why = cp.linkFailure(after: lastCheckpoint, knownPrevious: true) { throw Self.broken(cp.sequence, why) }
        lastCheckpoint = cp
    }

    /// The next entry of the slice, as stored: checked, then rendered (with `prev_hash`,
    /// `hash` and, at a checkpoint, its signature and link).
    package mutating func add(seq: Int64, time: Int64, text: String, previous prev: [UInt8], hash: [UInt8]) throws(AuditExportRefusal) {
        guard seq == first + Int64(count) else { throw Self.broken(seq, "sequence numbers are not contiguous") }
        guard prev == head, SHA256.hash(prev, Array(text.utf8)) == hash else {
            throw Self.broken(seq, "its hash does not match its content and the entry before it")
        }
        guard case .object(let pairs)? = try? JSONValue.parse(text), case .int(seq)? = JSONValue.object(pairs)["metadata.sequence"] else {
            throw Self.broken(seq, "not a valid audit entry")
        }
        guard case .int(time)? = JSONValue.object(pairs)["time"] else {
            throw Self.broken(seq, "its time column differs from the entry's time")
        }
        let cp = checkpoints[seq]
        if let cp { try accept(cp, hash: hash) }
        if let subject {
            // A selection: the entries in between are checked (above) but not written, and no
            // checkpoint fields (a verifier cannot link checkpoints across the gaps).
            if case .string(subject)? = JSONValue.object(pairs)["unmapped.subject"] {
                if format == .jsonl {
                    buffer += Self.line(entry: pairs, extra: Self.chainFields(previous: prev, hash: hash, checkpoint: nil), nested: nested) + "\n"
                } else {
                    buffer += ProfileStore.csvRow(JSONValue.object(pairs + Self.chainFields(previous: prev, hash: hash, checkpoint: nil))) + "\n"
                }
                selectedHashes += hash
                rendered += 1
            }
        } else {
            let extra = Self.chainFields(previous: prev, hash: hash, checkpoint: cp)
            switch format {
            case .jsonl: buffer += Self.line(entry: pairs, extra: extra, nested: nested) + "\n"
            case .csv: buffer += ProfileStore.csvRow(JSONValue.object(pairs + extra)) + "\n"
            }
            rendered += 1
        }
        head = hash
        count += 1
    }

    /// What is rendered so far once it passes 1 MiB (then emptied), for the engine to write.
    package mutating func takeChunk() -> String? {
        guard buffer.utf8.count > 1 << 20 else { return nil }
        defer { buffer = "" }
        return buffer
    }

    /// The slice must end under a checkpoint whose signature verifies (unless it is empty and
    /// starts at the first entry).
    package var needsCover: Bool { count > 0 || first > 1 }

    /// Starts the walk to the covering checkpoint: covered already when the last checkpoint
    /// seen sits on the slice's last entry; else the entries from `nextSequence` on go to `follow`.
    package mutating func beginCover() {
        let end = last
        covering = lastCheckpoint.flatMap { $0.sequence == end && end >= 1 && $0.hash == head ? $0 : nil }
        running = head
        nextSequence = end + 1
    }

    package var isCovered: Bool { covering != nil }

    /// The next entry after the slice: it must link to the one before.
    package mutating func follow(seq: Int64, text: String, previous prev: [UInt8], hash: [UInt8]) throws(AuditExportRefusal) {
        guard seq == nextSequence, prev == running, SHA256.hash(running, Array(text.utf8)) == hash else {
            throw Self.broken(seq, "its hash does not match its content and the entry before it")
        }
        running = hash
        nextSequence += 1
    }

    /// The checkpoint stored at the entry just followed: checked, it covers the slice.
    package mutating func cover(by checkpoint: AuditCheckpoint) throws(AuditExportRefusal) {
        try accept(checkpoint, hash: running)
        covering = checkpoint
    }

    /// Refuses the export unless a checkpoint whose signature verifies covers the slice.
    package func checkCovered(publicKey: Ed25519PublicKey) throws(AuditExportRefusal) {
        guard let covering, covering.isValid(publicKey: publicKey) else {
            throw AuditExportRefusal(message: "audit entries up to \(max(last, first)) are not covered by a signed checkpoint that verifies: the log was tampered with; nothing was exported (run audit verify)")
        }
    }

    /// The rest of the export: what is not written yet and the signed head record (JSON Lines:
    /// a `head` object; CSV: a last row with "head" in its first column).
    package mutating func finish(signer: Ed25519PrivateKey) throws -> String {
        let end = last
        // A subject's selection signs its own message (the selected count and their digest);
        // both heads are otherwise the same record.
        let signature: [UInt8]
        var selection: [(String, JSONValue)] = []
        var selectionCells: [(String, String)] = []
        if let subject {
            let digest = SHA256.hash(selectedHashes)
            let selected = Int64(rendered)
            signature = try signer.signature(for: AuditLog.selectionHeadMessage(
                firstSequence: first, previous: previous, lastSequence: end, head: head, subject: subject, selected: selected, digest: digest))
            selection = [("subject", .string(subject)), ("selected", .int(selected)), ("digest", .string(AuditLog.hex(digest)))]
            selectionCells = [("unmapped.subject", subject)]
        } else {
            signature = try signer.signature(for: AuditLog.exportHeadMessage(firstSequence: first, previous: previous, lastSequence: end, head: head))
        }
        let headRecord = JSONValue.object([
            ("first_sequence", .int(first)),
            ("previous", .string(AuditLog.hex(previous))),
            ("last_sequence", .int(end)),
            ("hash", .string(AuditLog.hex(head))),
        ] + selection + [
            ("signature", .string(AuditLog.hex(signature))),
            ("signed_at", .string(AuditLog.isoMillis(AuditLog.nowMillis))),
            ("public_key", .string(AuditLog.hex(signer.publicKey.rawRepresentation))),
        ])
        switch format {
        case .jsonl: buffer += JSONValue.object([("head", headRecord)]).canonicalString() + "\n"
        case .csv:
            var cells = [String](repeating: "", count: AuditLog.csvColumns.count)
            cells[0] = "head"
            for (column, value) in [("hash", AuditLog.hex(head)), ("checkpoint_signature", AuditLog.hex(signature)),
                                    ("prev_hash", AuditLog.hex(previous))] + selectionCells {
                if let i = AuditLog.csvColumns.firstIndex(of: column) { cells[i] = value }
            }
            buffer += CSVCell.row(cells) + "\n"
        }
        defer { buffer = "" }
        return buffer
    }
}

/// An audit export refused because the log does not check (the engine throws `message` as its
/// integrity error).
package struct AuditExportRefusal: Error {
    package let message: String
}
