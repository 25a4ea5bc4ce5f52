import Foundation
import NIOCore
import VaultPolicy
import VaultStore

/// Sealed profiles packed for the PostgreSQL writer: every byte value of a transaction in one
/// buffer, addressed by offsets, instead of five or six small arrays per profile.
///
/// A transaction of 65,536 `SealedProfile`s took about 1.7 KB a profile in memory (array
/// headers and allocator rounding around some 400 bytes of ciphertext); the ingest pipeline
/// holds two transactions at once (one being written, one being sealed), which alone came to
/// about 220 MB. Packed, a profile takes its bytes plus 8 bytes per value.
struct PackedProfiles: Sendable {
    /// Values per profile in `spans`: the pseudonym, the wrapped DEK, the `pii` row, then the
    /// record's digest.
    private let valuesPerProfile: Int
    let piiWidth: Int
    let attributeCount: Int
    private(set) var count = 0
    private(set) var lines: [Int] = []
    private(set) var kekVersions: [UInt32] = []
    /// The last activity each record names (the schema's `last_activity` field); 0 where
    /// `hasLastActivity` is false.
    private(set) var lastActivities: [Int64] = []
    private(set) var hasLastActivity: [Bool] = []
    private var bytes: [UInt8] = []
    /// Per value: its offset in `bytes` and its length; length -1: nil.
    private var spans: [(offset: Int, length: Int)] = []
    private var attributeValues: [FieldValue] = []
    /// Roughly the bytes each profile binds in the upsert statements (``SealedProfile/boundBytes``).
    private(set) var boundBytes: [Int] = []

    init(piiWidth: Int, attributeCount: Int, capacity: Int = 0) {
        self.piiWidth = piiWidth
        self.attributeCount = attributeCount
        valuesPerProfile = 3 + piiWidth
        lines.reserveCapacity(capacity)
        kekVersions.reserveCapacity(capacity)
        spans.reserveCapacity(capacity * valuesPerProfile)
        attributeValues.reserveCapacity(capacity * attributeCount)
        boundBytes.reserveCapacity(capacity)
    }

    init(_ profiles: some Collection<SealedProfile>, piiWidth: Int, attributeCount: Int) throws(PostgresStoreError) {
        self.init(piiWidth: piiWidth, attributeCount: attributeCount, capacity: profiles.count)
        for p in profiles { try append(p) }
    }

    private mutating func add(_ value: [UInt8]?) {
        guard let value else {
            spans.append((bytes.count, -1))
            return
        }
        spans.append((bytes.count, value.count))
        bytes.append(contentsOf: value)
    }

    mutating func append(_ p: SealedProfile) throws(PostgresStoreError) {
        guard p.piiRow.count == piiWidth, p.attributes.count == attributeCount else {
            throw PostgresStoreError(.internalFailure, "a sealed profile does not match the store's columns")
        }
        lines.append(p.line)
        kekVersions.append(p.kekVersion)
        add(p.pseudonym)
        add(p.wrappedDEK)
        for c in p.piiRow { add(c) }
        add(p.digest)
        lastActivities.append(p.lastActivity ?? 0)
        hasLastActivity.append(p.lastActivity != nil)
        attributeValues.append(contentsOf: p.attributes)
        boundBytes.append(p.boundBytes)
        count += 1
    }

    private func span(_ i: Int, _ k: Int) -> (offset: Int, length: Int) { spans[i * valuesPerProfile + k] }

    private func buffer(_ s: (offset: Int, length: Int)) -> ByteBuffer {
        bytes.withUnsafeBufferPointer { ByteBuffer(bytes: UnsafeBufferPointer(rebasing: $0[s.offset..<s.offset + max(s.length, 0)])) }
    }

    /// Profile `i`'s pseudonym (32 bytes).
    func pseudonym(_ i: Int) -> ArraySlice<UInt8> {
        let s = span(i, 0)
        return bytes[s.offset..<s.offset + s.length]
    }

    func pseudonymBuffer(_ i: Int) -> ByteBuffer { buffer(span(i, 0)) }
    func wrappedDEK(_ i: Int) -> ByteBuffer { buffer(span(i, 1)) }
    func digest(_ i: Int) -> ByteBuffer { buffer(span(i, 2 + piiWidth)) }

    /// Value `c` of profile `i`'s `pii` row; nil where the field is empty.
    func pii(_ i: Int, _ c: Int) -> ByteBuffer? {
        let s = span(i, 2 + c)
        return s.length < 0 ? nil : buffer(s)
    }

    func attribute(_ i: Int, _ a: Int) -> FieldValue { attributeValues[i * attributeCount + a] }

    /// The profiles' indices in lock order: by pseudonym, a repeated customer in file order
    /// (so the later record still wins and copies of one customer are adjacent). Sorted on the
    /// pseudonym's first 8 bytes read as a big-endian integer (the same order as the bytes'),
    /// the whole pseudonyms compared only where those are equal.
    func lockOrder() -> [Int] {
        let keys: [UInt64] = bytes.withUnsafeBufferPointer { b in
            (0..<count).map { i in
                let s = span(i, 0)
                var k: UInt64 = 0
                for j in 0..<Swift.max(0, Swift.min(8, s.length)) { k |= UInt64(b[s.offset + j]) << (56 - 8 * UInt64(j)) }
                return k
            }
        }
        return Array(0..<count).sorted { a, b in
            if keys[a] != keys[b] { return keys[a] < keys[b] }
            let pa = pseudonym(a), pb = pseudonym(b)
            return pa == pb ? a < b : pa.lexicographicallyPrecedes(pb)
        }
    }

    /// Whether profiles `i` and `j` name the same pseudonym.
    func samePseudonym(_ i: Int, _ j: Int) -> Bool {
        let a = span(i, 0), b = span(j, 0)
        guard a.length == b.length else { return false }
        return bytes.withUnsafeBufferPointer { p in
            memcmp(p.baseAddress! + a.offset, p.baseAddress! + b.offset, a.length) == 0
        }
    }

    /// Writes value `k` of profile `i` (0: the pseudonym, 1: the wrapped DEK, 2 + c: `pii`
    /// column c, 2 + piiWidth: the digest) as a binary COPY field, straight from the packed
    /// bytes; a nil value, and an empty one where `emptyIsNull`, as NULL.
    func writeValue(_ i: Int, _ k: Int, emptyIsNull: Bool = false, into out: inout BinaryCopyRows) {
        let s = span(i, k)
        if s.length < 0 || (emptyIsNull && s.length == 0) { return out.null() }
        bytes.withUnsafeBufferPointer { out.bytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[s.offset..<s.offset + s.length])) }
    }
}

extension SealedProfile {
    /// Roughly the bytes this profile binds in the upsert statements (ciphertexts, MACs, the
    /// wrapped key, the pseudonym, the attributes' text or 8 bytes).
    var boundBytes: Int {
        var n = pseudonym.count + wrappedDEK.count + 64
        for c in piiRow { n += (c?.count ?? 0) + 4 }
        for a in attributes { if case .text(let t) = a { n += t.utf8.count + 4 } else { n += 12 } }
        return n
    }
}
