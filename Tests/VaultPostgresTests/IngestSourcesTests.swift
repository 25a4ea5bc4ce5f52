import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Issue 19 part 4 (data that stays true) and the `sources` of part 2, on both engines: an
/// unchanged re-ingest writes nothing and keeps the last activity; ingest runs are recorded and
/// named by each subject; the retention dry run's per-rule reads agree.
@Suite(.serialized) struct IngestSourcesTests {
    /// A raw column of one subject on both engines.
    static func lastActivity(_ pair: EnginePair, _ id: String) async throws -> (sqlite: Int64, pg: Int64) {
        let p = try pair.sqlite.pseudonym(ofCustomerID: id)
        let s = try await pair.sqlite.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT last_activity FROM subjects WHERE pseudonym = ?", arguments: [Data(p)])
        }
        let hex = AuditLog.hex(p)
        let pg = try await TestDatabase.strings(pair.cluster.db,
            "SELECT last_activity::text FROM profilevault.subjects WHERE pseudonym = decode('\(hex)', 'hex')")
        return (try #require(s), try #require(pg.first.flatMap { Int64($0) }))
    }

    @Test func anUnchangedReingestWritesNothingAndAChangedFieldIsAnUpdate() async throws {
        try await EnginePair.with { pair in
            // Push a known, old last activity into both stores (as if ingested long ago).
            let id = Rows.id(11)   // no events: its last activity is its ingest time
            let p = try pair.sqlite.pseudonym(ofCustomerID: id)
            try await pair.sqlite.pool.write { db in
                try db.execute(sql: "UPDATE subjects SET last_activity = 1000, updated_at = 1000 WHERE pseudonym = ?", arguments: [Data(p)])
            }
            let db = pair.cluster.db
            let failed = try await db.attempt("UPDATE profilevault.subjects SET last_activity = 1000, updated_at = 1000 WHERE pseudonym = decode('\(AuditLog.hex(p))', 'hex')",
                                              as: db.owner, password: db.ownerPassword)
            #expect(failed == nil)
            let head = try await pair.auditHeads()
            // The same file again: every record unchanged, on both engines.
            let same = try pair.cluster.write("same.csv", Rows.csv(0..<20))
            var o = IngestOptions()
            o.audit = context
            o.holdForValidation = 0
            let options = o
            let s = try pair.sqlite.ingestProfiles(.file(same), options: options)
            let g = try await onThread { try pair.pg.ingestProfiles(.file(same), options: options) }
            for r in [s, g] {
                #expect(r.inserted == 0 && r.updated == 0 && r.unchanged == 20 && r.rejected == 0, "\(r)")
            }
            // The raw last activity (and updated_at) is what it was.
            let la = try await Self.lastActivity(pair, id)
            #expect(la.sqlite == 1000 && la.pg == 1000)
            // One changed field: that record is an update, the others unchanged.
            var changed = Rows.row(11)
            changed[2] = "Someone Else"
            let edited = try pair.cluster.write("edited.csv", ([Rows.header] + (0..<20).map { $0 == 11 ? Rows.line(changed) : Rows.line(Rows.row($0)) })
                .joined(separator: "\n") + "\n")
            let s2 = try pair.sqlite.ingestProfiles(.file(edited), options: options)
            let g2 = try await onThread { try pair.pg.ingestProfiles(.file(edited), options: options) }
            for r in [s2, g2] {
                #expect(r.inserted == 0 && r.updated == 1 && r.unchanged == 19, "\(r)")
            }
            let la2 = try await Self.lastActivity(pair, id)
            #expect(la2.sqlite > 1000 && la2.pg > 1000)
            // The decrypted profile holds the new value on both.
            let view = try #require(try pair.sqlite.accessExport(customerID: id))
            #expect(view.profile.fields.first { $0.name == "full_name" }?.value == .text("Someone Else"))
            let pgView = try #require(try await onThread { try pair.pg.accessExport(customerID: id) })
            #expect(pgView.profile.fields.first { $0.name == "full_name" }?.value == .text("Someone Else"))
            // Sources: created by the first run, last changed by the third (the second changed nothing).
            for e in [view, pgView] {
                #expect(e.createdBy?.source == "p.csv", "\(String(describing: e.createdBy))")
                #expect(e.createdBy?.inserted == 20)
                #expect(e.updatedBy?.source.hasSuffix("edited.csv") == true)
                #expect(e.updatedBy?.updated == 1 && e.updatedBy?.unchanged == 19)
                #expect(e.updatedBy?.actor == "tester")
            }
            #expect(view.createdBy?.id == pgView.createdBy?.id && view.updatedBy?.id == pgView.updatedBy?.id)
            // The same audit entries on both engines (counts with `unchanged` and the run's id).
            let after = try await pair.entries(after: min(head.sqlite, head.pg))
            #expect(after.sqlite == after.pg)
            #expect(after.sqlite.contains { $0.contains("\"unchanged\":20") })
        }
    }

    @Test func retentionDryRunReadsAgreeAndWriteNothing() async throws {
        try await EnginePair.with { pair in
            let before = try await onThread { try pair.pg.storedCounts() }
            let cutoff: Int64 = 1_893_456_000   // 2030-01-01: the 2026 events go, the 2035 ones stay
            let kinds = ["purchase", "rating"]
            let s = try pair.sqlite.retentionEventMatches(kinds: kinds, before: cutoff, subjects: true)
            let g = try await onThread { try pair.pg.retentionEventMatches(kinds: kinds, before: cutoff, subjects: true) }
            #expect(s.events == 6 && g.events == 6)
            #expect(s.subjects == g.subjects)
            let expected = try [0, 7, 8, 9].map { try pair.sqlite.pseudonym(ofCustomerID: Rows.id($0)) }
            #expect(Set(s.subjects) == Set(expected))
            // Everyone's last activity is the ingest (now) or 2035: nobody was inactive a day ago.
            let yesterday = Int64(Date().timeIntervalSince1970) - 86_400
            #expect(try pair.sqlite.inactiveSubjects(before: yesterday).isEmpty)
            #expect(try await onThread { try pair.pg.inactiveSubjects(before: yesterday) }.isEmpty)
            // Before 2030: the 15 customers without a 2035 event.
            let inactive = try pair.sqlite.inactiveSubjects(before: cutoff)
            #expect(inactive.count == 15)
            #expect(try await onThread { try pair.pg.inactiveSubjects(before: cutoff) } == inactive)
            let far: Int64 = 2_500_000_000
            #expect(try pair.sqlite.inactiveSubjects(before: far) == (try await onThread { try pair.pg.inactiveSubjects(before: far) }))
            #expect(try pair.sqlite.inactiveSubjects(before: far).count == 20)
            #expect(try await onThread { try pair.pg.storedCounts() } == before)
        }
    }
}
