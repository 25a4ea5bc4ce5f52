import Foundation
import GRDB
import Synchronization
import Testing
import VaultCrypto
@testable import VaultStore

/// The ingest writer skips the pseudonym lookup for pseudonyms its Bloom filter has never
/// seen: the filter must never miss a stored subject, within one ingest or across writers.
@Suite struct SubjectFilterTests {
    func randomKey() -> [UInt8] { SecureBytes.random(count: 8).withUnsafeBytes { Array($0) } }

    @Test func theBloomFilterHasNoFalseNegativesAndFewFalsePositives() {
        var b = PseudonymBloom(expected: 100_000)
        var inserted: [UInt64] = []
        for _ in 0..<b.capacity {
            let k = PseudonymBloom.key(randomKey())
            b.insert(k)
            inserted.append(k)
        }
        #expect(inserted.allSatisfy { b.mayContain($0) })
        let probes = 200_000
        var falsePositives = 0
        for _ in 0..<probes where b.mayContain(PseudonymBloom.key(randomKey())) { falsePositives += 1 }
        // Expected (1 - e^{-3/16})^3 = 0.48% when full; binomial sd at 200,000 probes is 0.016%.
        #expect(Double(falsePositives) / Double(probes) < 0.008, "\(falsePositives) false positives")
        #expect(PseudonymBloom.key([1, 2, 3, 4, 5, 6, 7, 8, 9]) == 0x0807_0605_0403_0201)
    }

    /// Another writer adds a subject between this ingest's transactions: the ingest's filter
    /// sees the new epoch, rebuilds, and updates that subject instead of adding it twice.
    @Test func anotherWritersSubjectsAreNotAddedTwice() throws {
        let t = try TempStore()
        let other = try ProfileStore.open(path: t.store.path, keyring: t.keyring, schema: Fixtures.schema)
        defer { try? other.close() }
        var late = (0..<10).map { Fixtures.row(1_500 + $0) }
        for i in late.indices { late[i][1] = "other.\(i)@example.org" }
        let otherFile = try t.write("other.csv", ([Fixtures.header] + late.map(Fixtures.csvLine)).joined(separator: "\n") + "\n")
        let ran = Mutex(false)
        var o = IngestOptions()
        o.batchSize = 100
        o.holdForValidation = 0
        o.subjectFilter = true   // the input is small: without this the writer would not use a filter
        o.progress = { p in
            // After the first chunk, and before the chunk with CUST-1500 can be sealed.
            guard p.records >= 100, p.records < 1_500, !ran.withLock({ let r = $0; $0 = true; return r }) else { return }
            _ = try? other.ingestProfiles(path: otherFile)
        }
        let r = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<2_000)), options: o)
        #expect(ran.withLock { $0 })
        #expect(r.inserted == 1_990 && r.updated == 10)
        let (n, distinct) = try t.store.pool.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM subjects")!, try Int.fetchOne(db, sql: "SELECT count(DISTINCT pseudonym) FROM subjects")!)
        }
        #expect(n == 2_000 && distinct == 2_000)
        #expect(try t.store.find(field: "email", value: Fixtures.row(1_503)[1]) == ["CUST-1503"])
        #expect(try t.store.find(field: "email", value: "other.3@example.org").isEmpty)
    }

    /// Only inputs of at least 50,000 records' worth of bytes use a filter.
    @Test func smallInputsDoNotLoadTheFilter() {
        #expect(SubjectFilter.forInput(bytes: 64 * 50_000 - 1) == nil)
        #expect(SubjectFilter.forInput(bytes: 64 * 50_000) != nil)
    }

    /// Each inserting transaction records a fresh epoch; one that only updates does not.
    @Test func insertingTransactionsRecordAnEpoch() throws {
        let t = try TempStore()
        func epoch() throws -> String? { try t.store.pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'subjects_epoch'") } }
        #expect(try epoch() == nil)
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<5)))
        let first = try epoch()
        #expect(first != nil)
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<5)))
        #expect(try epoch() == first)
        _ = try t.store.ingestProfiles(path: t.write("q.csv", Fixtures.profilesCSV(5..<6)))
        #expect(try epoch() != first)
    }
}
