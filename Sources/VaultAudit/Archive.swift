import Foundation
public import VaultCrypto

/// The signed anchor a store keeps for an archived prefix of its audit chain (`audit archive`).
///
/// The archived entries `firstSequence...lastSequence` leave the store for an archive file (an
/// ordinary signed export of exactly that slice); the store keeps this anchor in their place:
/// where the slice starts (its first sequence number and the hash before it), where it ends
/// (the last archived entry's sequence number and hash, the archive's head), the signed
/// checkpoint at that entry (the first checkpoint of the live chain links to it), the time,
/// and the digest of the anchor before it. The audit key signs all of it, so a file-level
/// attacker without the keyring can neither delete old entries and write an anchor for them,
/// nor alter an anchor; anchors chain as checkpoints do, so one deleted from the middle or the
/// end breaks the chain or leaves entries missing.
public struct AuditArchiveAnchor: Sendable, Equatable {
    public var firstSequence: Int64
    public var previous: [UInt8]
    public var lastSequence: Int64
    public var hash: [UInt8]
    /// The signed checkpoint at `lastSequence` (every archive ends under one).
    public var checkpoint: AuditCheckpoint
    public var timeMillis: Int64
    /// The digest of the anchor before this one (32 zero bytes for the first).
    public var previousAnchor: [UInt8]
    public var signature: [UInt8]

    public init(firstSequence: Int64, previous: [UInt8], lastSequence: Int64, hash: [UInt8], checkpoint: AuditCheckpoint,
                timeMillis: Int64, previousAnchor: [UInt8], signature: [UInt8]) {
        self.firstSequence = firstSequence
        self.previous = previous
        self.lastSequence = lastSequence
        self.hash = hash
        self.checkpoint = checkpoint
        self.timeMillis = timeMillis
        self.previousAnchor = previousAnchor
        self.signature = signature
    }

    /// The bytes the signature covers.
    public var message: [UInt8] {
        Self.message(first: firstSequence, previous: previous, last: lastSequence, hash: hash, checkpointDigest: checkpoint.digest,
                     timeMillis: timeMillis, previousAnchor: previousAnchor)
    }

    static func message(first: Int64, previous: [UInt8], last: Int64, hash: [UInt8], checkpointDigest: [UInt8],
                        timeMillis: Int64, previousAnchor: [UInt8]) -> [UInt8] {
        Array("profilevault-audit-archive/v1 \(first) \(AuditLog.hex(previous)) \(last) \(AuditLog.hex(hash)) \(AuditLog.hex(checkpointDigest)) \(timeMillis) \(AuditLog.hex(previousAnchor))".utf8)
    }

    /// `SHA-256(message || signature)`: what the next anchor links to.
    public var digest: [UInt8] { SHA256.hash(message, signature) }

    /// Signs the anchor of the slice `first...checkpoint.sequence`, after `previous` (nil: the first archive).
    public static func sign(first: Int64, previousHash: [UInt8], checkpoint: AuditCheckpoint, timeMillis: Int64,
                            after previous: AuditArchiveAnchor?, key: Ed25519PrivateKey) throws -> AuditArchiveAnchor {
        let link = previous?.digest ?? AuditLog.genesis
        let m = message(first: first, previous: previousHash, last: checkpoint.sequence, hash: checkpoint.hash,
                        checkpointDigest: checkpoint.digest, timeMillis: timeMillis, previousAnchor: link)
        return AuditArchiveAnchor(firstSequence: first, previous: previousHash, lastSequence: checkpoint.sequence, hash: checkpoint.hash,
                                  checkpoint: checkpoint, timeMillis: timeMillis, previousAnchor: link, signature: try key.signature(for: m))
    }

    /// Why this anchor is not valid after `previous` (nil: it is): its signature and its
    /// checkpoint's must verify with the store's key, the checkpoint must sit on the archive's
    /// last entry with its hash, and it must continue the anchor before it (or start the log).
    public func failure(after previous: AuditArchiveAnchor?, publicKey: Ed25519PublicKey) -> String? {
        let range = "entries \(firstSequence) to \(lastSequence)"
        guard firstSequence >= 1, lastSequence >= firstSequence, lastSequence < Int64.max, hash.count == 32, self.previous.count == 32,
              publicKey.isValidSignature(signature, for: message) else {
            return "the archive anchor for \(range) does not verify with the store's key: it was forged or altered"
        }
        guard checkpoint.sequence == lastSequence, checkpoint.hash == hash, checkpoint.isValid(publicKey: publicKey) else {
            return "the checkpoint kept by the archive anchor for \(range) does not verify: it was altered"
        }
        let expectedFirst = (previous?.lastSequence ?? 0) + 1
        let expectedHash = previous?.hash ?? AuditLog.genesis
        let expectedLink = previous?.digest ?? AuditLog.genesis
        guard firstSequence == expectedFirst, self.previous == expectedHash, previousAnchor == expectedLink else {
            let before = previous.map { "the anchor for entries \($0.firstSequence) to \($0.lastSequence)" } ?? "none"
            return "the archive anchor for \(range) does not continue the one before it (\(before)): anchors were deleted or rewritten"
        }
        return nil
    }

    /// Checks anchors in order (oldest first) and returns the newest, or the first failure
    /// (the sequence number it concerns, and why).
    public static func verifyChain(_ anchors: [AuditArchiveAnchor], publicKey: Ed25519PublicKey) -> Result<AuditArchiveAnchor?, AnchorFailure> {
        var last: AuditArchiveAnchor?
        for a in anchors {
            if let why = a.failure(after: last, publicKey: publicKey) {
                return .failure(AnchorFailure(sequence: max(1, (last?.lastSequence ?? 0) + 1), reason: why))
            }
            last = a
        }
        return .success(last)
    }

    public struct AnchorFailure: Error, Sendable {
        public var sequence: Int64
        public var reason: String
        public init(sequence: Int64, reason: String) {
            self.sequence = sequence
            self.reason = reason
        }
    }
}
