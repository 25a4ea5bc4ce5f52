import Foundation
import GRDB

/// A Bloom filter over the store's pseudonym keys (a pseudonym's first 8 bytes, the key of the
/// `subjects_pseudonym` index), for the ingest writer: a pseudonym the filter has never seen is
/// certainly not in the store, so the writer inserts it without first looking it up. The lookup
/// was about a tenth of the writer's time on a bulk ingest of new subjects (docs/benchmarks.md).
///
/// A false positive only costs the lookup the writer would have made anyway; there are no false
/// negatives as long as the filter holds every pseudonym in the store, which `SubjectFilter`
/// guarantees. Three bit positions per key from multiply-shift hashes of the key (pseudonyms
/// are HMAC outputs, so their bytes are uniform); 16 bits per expected key: about 0.06% false
/// positives when full.
struct PseudonymBloom {
    private var words: [UInt64]
    private let shift: UInt64
    private(set) var count = 0
    /// Keys it takes before the false-positive rate climbs; past that the owner rebuilds it larger.
    let capacity: Int

    init(expected: Int) {
        var bits = 1 << 16
        while bits < 16 * max(expected, 1) { bits <<= 1 }
        words = [UInt64](repeating: 0, count: bits / 64)
        shift = UInt64(64 - bits.trailingZeroBitCount)
        capacity = bits / 16
    }

    /// The key of a pseudonym: its first 8 bytes (shorter input is zero-padded).
    static func key<C: Collection<UInt8>>(_ pseudonym: C) -> UInt64 {
        var k: UInt64 = 0
        for (i, b) in pseudonym.prefix(8).enumerated() { k |= UInt64(b) << (8 * UInt64(i)) }
        return k
    }

    @inline(__always) private func positions(_ k: UInt64) -> (Int, Int, Int) {
        (Int((k &* 0x9E37_79B9_7F4A_7C15) >> shift),
         Int((k &* 0xC2B2_AE3D_27D4_EB4F) >> shift),
         Int((k &* 0x1656_67B1_9E37_79F9) >> shift))
    }

    @inline(__always) private func test(_ p: Int) -> Bool { words[p >> 6] & (1 << UInt64(p & 63)) != 0 }

    func mayContain(_ k: UInt64) -> Bool {
        let (a, b, c) = positions(k)
        return test(a) && test(b) && test(c)
    }

    mutating func insert(_ k: UInt64) {
        let (a, b, c) = positions(k)
        words[a >> 6] |= 1 << UInt64(a & 63)
        words[b >> 6] |= 1 << UInt64(b & 63)
        words[c >> 6] |= 1 << UInt64(c & 63)
        count += 1
    }
}

/// The ingest writer's knowledge of which pseudonyms the store holds, kept exact across its
/// transactions: only the ingest writer adds subjects, and every transaction of it that does
/// records a fresh `subjects_epoch` in `meta`. When a transaction starts and the epoch is not
/// the one this filter last wrote (another process ingested in between, or this is the first
/// transaction), the filter is rebuilt from the table inside that transaction. Subjects erased
/// meanwhile only leave false positives behind. Used only by the writer thread.
final class SubjectFilter: @unchecked Sendable {
    // `@unchecked Sendable`: created by the ingest call and then used only on its writer thread.
    private var bloom: PseudonymBloom?
    private var epoch: String?
    /// Set when the store holds many times more subjects than the input can add: loading their
    /// keys would cost more than the lookups it saves.
    private var disabled = false
    /// New subjects the ingest may add (from the input's size), to size the filter once.
    private let expectedNew: Int

    init(expectedNew: Int) { self.expectedNew = expectedNew }

    /// A filter for an input of `bytes` bytes, or nil for a small one (a few lookups cost less
    /// than loading the store's keys): inputs of at least 50,000 records at 64 bytes or more each.
    static func forInput(bytes: Int) -> SubjectFilter? {
        bytes / 64 >= 50_000 ? SubjectFilter(expectedNew: bytes / 64) : nil
    }

    /// At the start of a write transaction: makes sure the filter holds every stored pseudonym.
    func prepare(_ db: Database) throws {
        if disabled { return }
        let current = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'subjects_epoch'")
        if bloom == nil || current != epoch { try rebuild(db, extra: expectedNew) }
    }

    /// Whether `pseudonym` may be stored (false: certainly not).
    func mayContain(_ pseudonym: [UInt8]) -> Bool {
        bloom?.mayContain(PseudonymBloom.key(pseudonym)) ?? true
    }

    /// After inserting a subject (inside the same transaction).
    func inserted(_ pseudonym: [UInt8], _ db: Database) throws {
        bloom?.insert(PseudonymBloom.key(pseudonym))
        if let b = bloom, b.count > b.capacity { try rebuild(db, extra: b.count) }
    }

    /// Every transaction that inserts subjects records a fresh epoch before it commits (with or
    /// without a filter), so other writers' filters know to rebuild.
    static func recordEpoch(_ db: Database) throws -> String {
        let e = UUID().uuidString
        try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('subjects_epoch', ?)", arguments: [e])
        return e
    }

    /// The epoch this writer's transaction recorded: its own inserts are in the filter already.
    func wrote(epoch e: String) { epoch = e }

    private func rebuild(_ db: Database, extra: Int) throws {
        let n = try Int.fetchOne(db, sql: "SELECT count(*) FROM subjects") ?? 0
        if n > 8 * max(extra, 1) {
            bloom = nil
            disabled = true
            return
        }
        var b = PseudonymBloom(expected: n + extra)
        let keys = try Row.fetchCursor(db, sql: "SELECT \(ProfileStore.pseudonymKey) FROM subjects")
        while let row = try keys.next() {
            if let d = row[0] as Data? { b.insert(PseudonymBloom.key(d)) }
        }
        bloom = b
        epoch = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'subjects_epoch'")
    }
}
