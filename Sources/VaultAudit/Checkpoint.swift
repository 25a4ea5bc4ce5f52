import Foundation
public import VaultCrypto

/// A signed checkpoint of the audit chain's head.
///
/// v2 checkpoints form a chain of their own: each signs its sequence number, the chain's hash
/// at that entry, its time, and the sequence number and digest of the checkpoint before it,
/// so a checkpoint deleted from the middle breaks the link of the one after it. The digest of a
/// checkpoint is `SHA-256(message || signature)`; the first checkpoint links to sequence 0 and
/// 32 zero bytes. v1 checkpoints (stores made before chaining) sign only sequence and hash;
/// they are accepted before the first v2 checkpoint of a log, never after one.
public struct AuditCheckpoint: Sendable, Equatable {
    public var sequence: Int64
    public var hash: [UInt8]
    public var signature: [UInt8]
    /// Unix milliseconds; nil for a v1 checkpoint (whose time was not signed).
    public var timeMillis: Int64?
    /// The checkpoint before this one: its sequence number (0: none) and digest; nil for v1.
    public var previousSequence: Int64?
    public var previousDigest: [UInt8]?

    public init(sequence: Int64, hash: [UInt8], signature: [UInt8], timeMillis: Int64?, previousSequence: Int64?, previousDigest: [UInt8]?) {
        self.sequence = sequence
        self.hash = hash
        self.signature = signature
        self.timeMillis = timeMillis
        self.previousSequence = previousSequence
        self.previousDigest = previousDigest
    }

    /// The link of the first checkpoint of a log.
    public static let genesisLink: (sequence: Int64, digest: [UInt8]) = (0, AuditLog.genesis)

    public var isChained: Bool { timeMillis != nil && previousSequence != nil && previousDigest != nil }

    /// The bytes the signature covers.
    public var message: [UInt8] {
        guard let timeMillis, let previousSequence, let previousDigest else {
            return AuditLog.checkpointMessage(sequence: sequence, hash: hash)
        }
        return Self.message(sequence: sequence, hash: hash, timeMillis: timeMillis,
                            previousSequence: previousSequence, previousDigest: previousDigest)
    }

    static func message(sequence: Int64, hash: [UInt8], timeMillis: Int64, previousSequence: Int64, previousDigest: [UInt8]) -> [UInt8] {
        Array("profilevault-audit-checkpoint/v2 \(sequence) \(AuditLog.hex(hash)) \(timeMillis) \(previousSequence) \(AuditLog.hex(previousDigest))".utf8)
    }

    /// `SHA-256(message || signature)`: what the next checkpoint links to.
    public var digest: [UInt8] { SHA256.hash(message, signature) }

    /// Signs a new v2 checkpoint linked to `previous` (nil: the first checkpoint of the log).
    public static func sign(sequence: Int64, hash: [UInt8], timeMillis: Int64, after previous: AuditCheckpoint?,
                            key: Ed25519PrivateKey) throws -> AuditCheckpoint {
        let link = previous.map { ($0.sequence, $0.digest) } ?? genesisLink
        let m = message(sequence: sequence, hash: hash, timeMillis: timeMillis, previousSequence: link.0, previousDigest: link.1)
        return AuditCheckpoint(sequence: sequence, hash: hash, signature: try key.signature(for: m), timeMillis: timeMillis,
                               previousSequence: link.0, previousDigest: link.1)
    }

    public func isValid(publicKey: Ed25519PublicKey) -> Bool {
        publicKey.isValidSignature(signature, for: message)
    }

    /// Why this checkpoint does not follow `previous` (nil: it does). `previous` nil means
    /// "the first checkpoint of the log"; pass `knownPrevious: false` when the checkpoint
    /// before this one is not at hand (the first checkpoint of an export slice).
    public func linkFailure(after previous: AuditCheckpoint?, knownPrevious: Bool = true) -> String? {
        guard isChained, let previousSequence, let previousDigest else {
            if let previous, previous.isChained {
                return "checkpoint \(sequence) is unchained but follows chained checkpoint \(previous.sequence): it was forged"
            }
            return nil
        }
        guard knownPrevious else { return nil }
        let link = previous.map { ($0.sequence, $0.digest) } ?? Self.genesisLink
        if previousSequence != link.0 || previousDigest != link.1 {
            let expected = previous.map { "checkpoint \($0.sequence)" } ?? "none"
            return "checkpoint \(sequence) links to checkpoint \(previousSequence) but the checkpoint before it is \(expected): checkpoints were deleted or rewritten"
        }
        return nil
    }

    /// The published form (`audit head --json`, `serve --publish-heads`): everything a holder of
    /// the public key needs to check the signature, and the head an auditor compares with.
    public var published: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("seq", .int(sequence)),
            ("hash", .string(AuditLog.hex(hash))),
            ("signature", .string(AuditLog.hex(signature))),
        ]
        if let timeMillis {
            pairs.append(("time", .string(AuditLog.isoMillis(timeMillis))))
            pairs.append(("time_ms", .int(timeMillis)))
        }
        if let previousSequence, let previousDigest {
            pairs.append(("previous_seq", .int(previousSequence)))
            pairs.append(("previous", .string(AuditLog.hex(previousDigest))))
        }
        pairs.append(("checkpoint", .string(AuditLog.hex(digest))))
        return .object(pairs)
    }

    /// Reads a published head (one line of a `--publish-heads` file or `audit head --json`).
    public static func parsePublished(_ v: JSONValue) -> AuditCheckpoint? {
        guard case .int(let seq)? = v["seq"], seq >= 1, seq < Int64.max,
              case .string(let h)? = v["hash"], let hash = AuditLog.unhex(h), hash.count == 32,
              case .string(let s)? = v["signature"], let sig = AuditLog.unhex(s), sig.count == 64 else { return nil }
        var cp = AuditCheckpoint(sequence: seq, hash: hash, signature: sig, timeMillis: nil, previousSequence: nil, previousDigest: nil)
        if case .int(let t)? = v["time_ms"], case .int(let ps)? = v["previous_seq"], ps >= 0, ps < seq,
           case .string(let pd)? = v["previous"], let prev = AuditLog.unhex(pd), prev.count == 32 {
            cp.timeMillis = t
            cp.previousSequence = ps
            cp.previousDigest = prev
        }
        return cp
    }
}

/// What an auditor expects to find in a log: a head hash from an earlier export, or the heads
/// the service published (`--expect-head FILE`), each at its sequence number.
public struct AuditExpectation: Sendable {
    /// A bare head hash (no sequence number known): it must occur somewhere in the chain.
    public var hash: [UInt8]?
    /// Published heads by sequence number: the entry there must have exactly this hash, and the
    /// log must reach the newest one.
    public var heads: [Int64: [UInt8]] = [:]
    /// Entries for which two validly signed heads disagree: the log was cut back and continued.
    public var forks: Set<Int64> = []
    /// How the expectation was given, for messages (a prefix of the hash, or the file name).
    public var label: String

    public init(hash: [UInt8]?, heads: [Int64: [UInt8]] = [:], label: String) {
        self.hash = hash
        self.heads = heads
        self.label = label
    }

    public var newest: Int64? { heads.keys.max() }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Parses `--expect-head`: a 64-digit hex hash, or a file of published heads (JSON Lines,
    /// each signed by the store's audit key; a head whose signature does not verify is refused).
    public static func parse(_ text: String, publicKey: Ed25519PublicKey) throws(Invalid) -> AuditExpectation {
        if let h = AuditLog.unhex(text.lowercased()), h.count == 32 {
            return AuditExpectation(hash: h, label: "the expected head \(text.prefix(16))…")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: text, isDirectory: &isDir), !isDir.boolValue else {
            throw Invalid(description: "--expect-head \(text.prefix(80)): neither a 64-digit hex hash nor a file of published heads")
        }
        guard let reader = LineStream(path: text) else {
            throw Invalid(description: "\(text): cannot read the published heads")
        }
        var heads: [Int64: [UInt8]] = [:]
        var forks: Set<Int64> = []
        var lineNo = 0
        while let line = reader.next() {
            lineNo += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            guard let v = try? JSONValue.parse(line), let cp = AuditCheckpoint.parsePublished(v) else {
                throw Invalid(description: "\(text):\(lineNo): not a published head (needs seq, hash, signature)")
            }
            guard cp.isValid(publicKey: publicKey) else {
                throw Invalid(description: "\(text):\(lineNo): the head at entry \(cp.sequence) is not signed by this store's audit key")
            }
            if let other = heads[cp.sequence], other != cp.hash { forks.insert(cp.sequence) }
            heads[cp.sequence] = cp.hash
        }
        guard !heads.isEmpty else { throw Invalid(description: "\(text): holds no published head") }
        var e = AuditExpectation(hash: nil, heads: heads, label: "the published heads of \(text)")
        e.forks = forks
        return e
    }
}
