import Foundation
import VaultCrypto
public import VaultCrypto

/// Outcome of an audited operation (SPEC §7).
public enum AuditOutcome: String, Sendable, CaseIterable {
    case ok, denied, error
}

/// OCSF API Activity `activity_id`.
public enum AuditActivity: Int, Sendable {
    case create = 1, read = 2, update = 3, delete = 4, other = 99
}

/// One audit entry before the log assigns its sequence number, time and hashes.
public struct AuditRecord: Sendable {
    public var actor: String
    public var role: String
    public var action: String
    public var activity: AuditActivity
    public var purpose: String?
    /// The subject's pseudonym (32 bytes), never a plaintext identifier.
    public var subject: [UInt8]?
    public var fields: [String]
    public var epsilon: Double?
    public var outcome: AuditOutcome
    public var requestID: String
    /// Why a denial or error happened; built from messages that never carry PII.
    public var detail: String?
    /// Counts for bulk operations (one entry per batch, not one per subject).
    public var counts: [(String, Int64)]
    /// The version of the policy in force (`unmapped.policy_version`); nil writes no key, as
    /// entries written before the key existed have none (their canonical form is unchanged).
    public var policyVersion: String?

    public init(actor: String, role: String, action: String, activity: AuditActivity, purpose: String? = nil,
                subject: [UInt8]? = nil, fields: [String] = [], epsilon: Double? = nil, outcome: AuditOutcome = .ok,
                requestID: String, detail: String? = nil, counts: [(String, Int64)] = [], policyVersion: String? = nil) {
        self.policyVersion = policyVersion
        self.actor = actor
        self.role = role
        self.action = action
        self.activity = activity
        self.purpose = purpose
        self.subject = subject
        self.fields = fields
        self.epsilon = epsilon
        self.outcome = outcome
        self.requestID = requestID
        self.detail = detail
        self.counts = counts
    }

    /// The entry as stored and exported: flat keys named after OCSF API Activity (class 6003)
    /// where a field has a match, `unmapped.*` otherwise (docs/audit.md has the mapping).
    public func entry(sequence: Int64, timeMillis: Int64) -> JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("metadata.sequence", .int(sequence)),
            ("time", .int(timeMillis)),
            ("time_dt", .string(AuditLog.isoMillis(timeMillis))),
            ("class_uid", .int(6003)),
            ("category_uid", .int(6)),
            ("activity_id", .int(Int64(activity.rawValue))),
            ("actor.user.name", .string(actor)),
            ("api.operation", .string(action)),
            ("api.request.uid", .string(requestID)),
            ("status", .string(outcome.rawValue)),
            ("status_id", .int(outcome == .ok ? 1 : 2)),
            ("status_detail", detail.map(JSONValue.string) ?? .null),
            ("unmapped.role", .string(role)),
            ("unmapped.purpose", purpose.map(JSONValue.string) ?? .null),
            ("unmapped.subject", subject.map { .string(AuditLog.hex($0)) } ?? .null),
            ("unmapped.fields", .array(fields.map(JSONValue.string))),
            ("unmapped.epsilon", epsilon.map { .string(AuditLog.decimal($0)) } ?? .null),
            ("unmapped.counts", .object(counts.map { ($0.0, .int($0.1)) })),
        ]
        if let policyVersion { pairs.append(("unmapped.policy_version", .string(policyVersion))) }
        return .object(pairs)
    }
}

/// The hash chain and its signatures: pure functions shared by the store (which appends and
/// verifies) and by auditors (who verify an export with the public key alone).
public enum AuditLog {
    /// `hash_0`: the chain starts from 32 zero bytes.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    /// `hash_i = SHA-256(hash_{i-1} || canonical entry_i)`.
    public static func chain(previous: [UInt8], entry: JSONValue) -> [UInt8] {
        SHA256.hash(previous, entry.canonicalBytes())
    }

    /// The bytes a v1 checkpoint signature covered: the head of the chain at `sequence`. Stores
    /// made before checkpoints were chained hold such checkpoints; new ones are v2
    /// (``AuditCheckpoint``).
    public static func checkpointMessage(sequence: Int64, hash: [UInt8]) -> [UInt8] {
        Array("profilevault-audit-checkpoint/v1 \(sequence) \(hex(hash))".utf8)
    }

    /// The bytes an export's signed head covers: where the exported slice starts (its first
    /// sequence number and the hash before it) and where it ends, so that entries cut from
    /// either end of the file are detected.
    public static func exportHeadMessage(firstSequence: Int64, previous: [UInt8], lastSequence: Int64, head: [UInt8]) -> [UInt8] {
        Array("profilevault-audit-export/v1 \(firstSequence) \(hex(previous)) \(lastSequence) \(hex(head))".utf8)
    }

    /// The bytes the signed head of a subject's selection covers (`audit export --subject`):
    /// the contiguous run of the chain the store walked and checked (`first`, the hash before
    /// it, `last` and its hash), the subject's pseudonym, how many of its entries were selected
    /// and the SHA-256 of their hashes concatenated in order: an entry dropped from or added to
    /// the file changes that digest.
    public static func selectionHeadMessage(firstSequence: Int64, previous: [UInt8], lastSequence: Int64, head: [UInt8],
                                            subject: String, selected: Int64, digest: [UInt8]) -> [UInt8] {
        Array("profilevault-audit-selection/v1 \(firstSequence) \(hex(previous)) \(lastSequence) \(hex(head)) \(subject) \(selected) \(hex(digest))".utf8)
    }

    /// The one key of an entry whose value is an object: ``flattened(_:)`` keeps it whole.
    public static let objectValuedKeys: Set<String> = ["unmapped.counts"]

    /// The entry with its flat dotted keys nested as OCSF objects (`"actor.user.name"` →
    /// `{"actor":{"user":{"name":..}}}`); ``flattened(_:)`` gives back the stored entry. An
    /// entry whose keys would collide (a key that is also the prefix of another) stays flat.
    public static func nested(_ entry: JSONValue) -> JSONValue {
        guard case .object(let pairs) = entry else { return entry }
        final class Node {
            var value: JSONValue?
            var children: [(String, Node)] = []
            func child(_ name: String) -> Node {
                if let c = children.first(where: { $0.0 == name }) { return c.1 }
                let n = Node()
                children.append((name, n))
                return n
            }
            var json: JSONValue { value ?? .object(children.map { ($0.0, $0.1.json) }) }
        }
        let root = Node()
        for (key, value) in pairs {
            var node = root
            for part in key.split(separator: ".", omittingEmptySubsequences: false) {
                guard node.value == nil else { return entry }
                node = node.child(String(part))
            }
            guard node.value == nil, node.children.isEmpty else { return entry }
            node.value = value
        }
        return root.json
    }

    /// The stored (flat) form of an exported entry, nested or flat: every object is flattened
    /// into dotted keys except the value of ``objectValuedKeys``. Nil when the result is not
    /// a valid entry form (two paths giving one key, an empty object, an empty key part): a
    /// nested line that was altered that way does not verify.
    public static func flattened(_ entry: JSONValue) -> JSONValue? {
        guard case .object(let pairs) = entry else { return nil }
        var out: [(String, JSONValue)] = []
        var seen = Set<String>()
        func walk(_ prefix: String, _ value: JSONValue) -> Bool {
            if case .object(let inner) = value, !objectValuedKeys.contains(prefix) {
                guard !inner.isEmpty else { return false }
                for (k, v) in inner {
                    guard !k.isEmpty, walk(prefix + "." + k, v) else { return false }
                }
                return true
            }
            guard seen.insert(prefix).inserted else { return false }
            out.append((prefix, value))
            return true
        }
        for (k, v) in pairs {
            guard !k.isEmpty, walk(k, v) else { return nil }
        }
        return .object(out)
    }

    public static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }

    public static func unhex(_ s: String) -> [UInt8]? { Hex.decode(s) }

    /// Shortest round-tripping decimal text of a number (epsilon is stored as a string so the
    /// canonical form never depends on float formatting).
    public static func decimal(_ d: Double) -> String { "\(d)" }

    /// `2026-11-22T12:00:00.123Z`. Total over Int64: a time read back from a database (even
    /// `Int64.min`) formats without trapping (floor division by quotient and remainder).
    public static func isoMillis(_ ms: Int64) -> String {
        let (q, r) = ms.quotientAndRemainder(dividingBy: 1000)
        let seconds = r < 0 ? q - 1 : q
        let millis = r < 0 ? r + 1000 : r
        let (dq, dr) = seconds.quotientAndRemainder(dividingBy: 86_400)
        let days = dr < 0 ? dq - 1 : dq
        let secOfDay = dr < 0 ? dr + 86_400 : dr
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func p(_ v: Int64, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return "\(p(y, 4))-\(p(m, 2))-\(p(d, 2))T\(p(secOfDay / 3600, 2)):\(p(secOfDay % 3600 / 60, 2)):\(p(secOfDay % 60, 2)).\(p(millis, 3))Z"
    }

    public static var nowMillis: Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    /// The columns of a CSV export, in order: the entry's keys, then the chain fields.
    public static let csvColumns = [
        "metadata.sequence", "time", "time_dt", "class_uid", "category_uid", "activity_id", "actor.user.name",
        "api.operation", "api.request.uid", "status", "status_id", "status_detail", "unmapped.role",
        "unmapped.purpose", "unmapped.subject", "unmapped.fields", "unmapped.epsilon", "unmapped.counts", "unmapped.policy_version",
        "prev_hash", "hash", "checkpoint_signature", "checkpoint_time", "checkpoint_previous_sequence", "checkpoint_previous",
    ]
}

/// The result of verifying a log (store or export file).
public struct AuditVerification: Sendable, Equatable {
    public var ok: Bool
    /// Entries examined.
    public var entries: Int
    /// Sequence number of the first entry that was modified, inserted, deleted or reordered.
    public var firstBad: Int64?
    /// What was found, in words.
    public var reason: String?
    /// The verified head (hash of the last entry), hex.
    public var head: String?
    /// The last entry moved to an audit archive (`audit archive`): the log verified starts
    /// after it, from its signed anchor; nil when nothing was archived.
    public var archivedThrough: Int64?

    public init(ok: Bool, entries: Int, firstBad: Int64?, reason: String?, head: String?, archivedThrough: Int64? = nil) {
        self.archivedThrough = archivedThrough
        self.ok = ok
        self.entries = entries
        self.firstBad = firstBad
        self.reason = reason
        self.head = head
    }
}

/// Verifies a chain of entries, given in order, against their stated hashes and any
/// checkpoints (signature and link to the checkpoint before). Shared by the store verifier and
/// the export verifier.
public struct ChainVerifier {
    let publicKey: Ed25519PublicKey
    private(set) var previous: [UInt8]
    private(set) var lastSequence: Int64?
    private(set) var count = 0
    /// Last sequence covered by a verified checkpoint signature.
    private(set) var lastVerifiedCheckpoint: Int64
    /// The last checkpoint seen, and whether the one before the first is known (a whole log
    /// starts from none; an export slice starts after checkpoints it does not hold).
    private(set) var lastCheckpointSeen: AuditCheckpoint?
    private var previousCheckpointKnown: Bool
    public private(set) var failure: (sequence: Int64, reason: String)?
    /// What an auditor expects to find (`--expect-head`).
    let expectation: AuditExpectation?
    public private(set) var sawExpected: Bool
    public var firstSequence: Int64?
    public var startPrevious: [UInt8]
    /// The last archived entry when the chain starts from an archive anchor (``init(publicKey:anchor:expecting:)``).
    public private(set) var archivedThrough: Int64?
    /// A store's verified archive anchors, as [first, last] sequence ranges (nil: not a store's
    /// own chain, e.g. an export). Every `audit.archive` entry of the chain that records a range
    /// must name one of them: an anchor removed (and its entries put back from an old copy of
    /// the store) leaves that entry contradicting the store, and the chain fails at it.
    public var archiveRanges: Set<[Int64]>?

    /// `wholeLog`: the chain starts at the log's first entry, so its first checkpoint must
    /// link to none.
    public init(publicKey: Ed25519PublicKey, startingAfter previous: [UInt8], sequence: Int64?,
                expecting: AuditExpectation? = nil, wholeLog: Bool = false) {
        self.publicKey = publicKey
        self.expectation = expecting
        self.sawExpected = expecting?.hash == nil || expecting?.hash == previous
        self.previous = previous
        self.startPrevious = previous
        self.lastSequence = sequence
        self.lastVerifiedCheckpoint = sequence ?? 0
        self.previousCheckpointKnown = wholeLog
    }

    /// A store's live chain after an archive: it starts after the anchor's last entry, from
    /// its hash, and its first checkpoint links to the checkpoint the anchor keeps. A
    /// published head at the anchor's entry must be its hash; heads before it are in the
    /// archive (checked there), not here.
    public init(publicKey: Ed25519PublicKey, anchor: AuditArchiveAnchor, expecting: AuditExpectation? = nil) {
        self.init(publicKey: publicKey, startingAfter: anchor.hash, sequence: anchor.lastSequence, expecting: expecting, wholeLog: true)
        lastCheckpointSeen = anchor.checkpoint
        archivedThrough = anchor.lastSequence
        if let want = expecting?.heads[anchor.lastSequence], want != anchor.hash {
            failure = (anchor.lastSequence, "entry \(anchor.lastSequence) (archived) differs from the head published for it (\(expecting?.label ?? "")): the log was rewritten")
        }
    }

    public var head: [UInt8] { previous }
    public var entries: Int { count }
    public var last: Int64? { lastSequence }

    /// Feeds one entry. Returns false once a failure is recorded (later entries are ignored).
    @discardableResult
    public mutating func add(entry: JSONValue, statedPrevious: [UInt8]?, statedHash: [UInt8]?, checkpoint: AuditCheckpoint?) -> Bool {
        guard failure == nil else { return false }
        guard case .int(let seq)? = entry["metadata.sequence"] else {
            failure = ((lastSequence ?? 0) &+ 1, "entry without a sequence number")
            return false
        }
        guard seq >= 1, seq < Int64.max else {
            failure = ((lastSequence ?? 0) &+ 1, "sequence number \(seq) is out of range")
            return false
        }
        if firstSequence == nil { firstSequence = seq }
        count += 1
        if let last = lastSequence, last < Int64.max - 1, seq != last + 1 {
            failure = (last + 1, seq <= last
                ? "an entry claiming sequence \(seq) follows \(last): entries inserted, duplicated or reordered"
                : "sequence jumps from \(last) to \(seq): entries deleted or reordered")
            return false
        }
        if let statedPrevious, statedPrevious != previous {
            failure = (seq, "prev_hash does not match the hash of the entry before it: an entry was inserted, deleted or modified")
            return false
        }
        let h = AuditLog.chain(previous: previous, entry: entry)
        if let statedHash, statedHash != h {
            failure = (seq, "hash does not match the entry's content: the entry was modified")
            return false
        }
        if let cp = checkpoint {
            guard cp.sequence == seq, cp.hash == h, cp.isValid(publicKey: publicKey) else {
                failure = (lastVerifiedCheckpoint &+ 1, "checkpoint signature at \(seq) does not verify: entries after \(lastVerifiedCheckpoint) were rewritten")
                return false
            }
            if let why = cp.linkFailure(after: lastCheckpointSeen, knownPrevious: previousCheckpointKnown || lastCheckpointSeen != nil) {
                failure = ((lastCheckpointSeen?.sequence ?? 0) &+ 1, why)
                return false
            }
            lastCheckpointSeen = cp
            lastVerifiedCheckpoint = seq
        }
        if let ranges = archiveRanges, case .string("audit.archive")? = entry["api.operation"],
           case .object(let counts)? = entry["unmapped.counts"] {
            var first: Int64?, last: Int64?
            for (k, value) in counts {
                if k == "first_sequence", case .int(let x) = value { first = x }
                if k == "last_sequence", case .int(let x) = value { last = x }
            }
            if let first, let last, !ranges.contains([first, last]) {
                failure = (seq, "entry \(seq) records an audit archive of entries \(first) to \(last), but the store holds no signed anchor for it: an archive anchor was removed")
                return false
            }
        }
        if expectation?.forks.contains(seq) == true {
            failure = (seq, "two heads signed by this store disagree about entry \(seq) (\(expectation?.label ?? "")): the log was cut back and continued")
            return false
        }
        if let want = expectation?.heads[seq], want != h {
            failure = (seq, "entry \(seq) differs from the head published for it (\(expectation?.label ?? "")): the log was rewritten")
            return false
        }
        previous = h
        if let want = expectation?.hash, h == want { sawExpected = true }
        lastSequence = seq
        return true
    }

    /// Records a failure found outside the per-entry checks.
    public mutating func fail(_ sequence: Int64, _ reason: String) {
        if failure == nil { failure = (sequence, reason) }
    }

    /// Checks, once every entry is fed, that the chain holds what the auditor expected:
    /// the bare head somewhere, and every published head up to the newest.
    public mutating func finishExpectation() {
        guard failure == nil, let expectation else { return }
        let end = lastSequence ?? 0
        if expectation.hash != nil, !sawExpected, let archived = archivedThrough {
            fail(end &+ 1, "\(expectation.label) is not in the live log, which starts after entry \(archived) (entries up to \(archived) are in audit archives: verify those with verify-export --expect-head): it is archived, or the log was truncated or rewritten")
        } else if expectation.hash != nil, !sawExpected {
            fail(end &+ 1, "\(expectation.label) is not in this log: it was truncated or rewritten")
        } else if let newest = expectation.newest, newest > end {
            fail(end &+ 1, "\(expectation.label) include entry \(newest) but the log ends at \(end): its tail was truncated")
        }
    }

    public var lastCheckpoint: Int64 { lastVerifiedCheckpoint }
}
