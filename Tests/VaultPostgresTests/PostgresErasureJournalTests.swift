import Foundation
import Testing
import VaultAudit
@testable import VaultPostgres
@testable import VaultStore

/// The erasure journal on PostgreSQL (`audit erasures --out FILE`): the suppression list with its
/// receipts, sealed and verified with the same key and format as on SQLite.
@Suite(.serialized) struct PostgresErasureJournalTests {
    static let ids = (0..<3).map { "PGJOURNAL-SUBJECT-\(9_300_000 + $0)-QZX" }

    @Test func journalNamesEveryErasureAndRefusesATamperedCopy() async throws {
        try await ProfileCluster.with { cluster in
            let node = try await cluster.node()
            let rows = Self.ids.enumerated().map { i, id in
                var r = Rows.row(i)
                r[0] = id
                return r.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ",")
            }
            let path = try cluster.write("p.csv", ([Rows.header] + rows).joined(separator: "\n") + "\n")
            var o = IngestOptions()
            o.audit = context
            let options = o
            try await onThread {
                _ = try node.ingestProfiles(.file(path), options: options)
                #expect(try node.erasureJournal().entries.isEmpty)
                let receipts = try node.erase(customerIDs: [(1, Self.ids[0]), (2, Self.ids[2])], file: nil, reason: "asked", audit: context)
                let journal = try node.erasureJournal()
                #expect(journal.entries.count == 2)
                #expect(Set(journal.entries.compactMap(\.receipt)) == Set(receipts.map(\.receipt)))
                #expect(Set(journal.entries.map(\.pseudonym)) == Set(try [Self.ids[0], Self.ids[2]].map { try node.pseudonym(ofCustomerID: $0) }))
                #expect(journal.storeID == node.storeID && journal.auditSequence >= receipts.map(\.auditSequence).max() ?? 0)
                let bytes = node.sealErasureJournal(journal)
                #expect(try node.openErasureJournal(bytes, label: "j").entries == journal.entries)
                // No customer ID in the journal.
                for id in Self.ids { #expect(!String(decoding: bytes, as: UTF8.self).contains(id)) }
                // A line dropped: refused as an integrity error.
                var lines = bytes.split(separator: UInt8(ascii: "\n")).map(Array.init)
                lines.remove(at: 1)
                let dropped = Array(lines.joined(separator: [UInt8(ascii: "\n")])) + [UInt8(ascii: "\n")]
                do {
                    _ = try node.openErasureJournal(dropped, label: "j")
                    Issue.record("a journal with a line dropped was accepted")
                } catch let e as VaultError {
                    #expect(e.kind == .integrity)
                }
                try node.close()
            }
        }
    }
}
