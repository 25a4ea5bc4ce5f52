import EngineConformanceSupport
import Foundation
import GRDB
import Testing
import VaultCrypto
import VaultPolicy
@testable import VaultStore

/// The request register on SQLite (RegisterConformance, run on PostgreSQL too), and what the
/// file keeps after an erasure.
@Suite struct RequestRegisterStoreTests {
    static let ids = (0..<4).map { "REGISTER-SUBJECT-\(8_100_000 + $0)-QZX" }
    static let context = AuditContext(actor: "t", role: "privacy_officer", requestID: "r")

    static func store() throws -> TempStore {
        let t = try TempStore()
        let rows = ids.enumerated().map { i, id in
            var r = Fixtures.row(i)
            r[0] = id
            return Fixtures.csvLine(r)
        }
        var o = IngestOptions()
        o.audit = context
        _ = try t.store.ingestProfiles(.file(try t.write("p.csv", ([Fixtures.header] + rows).joined(separator: "\n") + "\n")), options: o)
        return t
    }

    @Test func theRegisterHoldsOnEngineTerms() throws {
        let t = try Self.store()
        let failures = try RegisterConformance.run(t.store, ids: Self.ids, audit: Self.context) {
            // The database file and its WAL, as they are on disk.
            ["", "-wal"].flatMap { Array(FileManager.default.contents(atPath: t.dir + "/store.sqlite" + $0) ?? Data()) }
        }
        #expect(failures.isEmpty, "\(failures)")
        // Each change committed with its audit entry (3 opened, 1 extended, 1 denied, 1 fulfilled).
        let n = try t.store.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit WHERE entry LIKE '%\"requests.%'") }
        #expect(n == 6)
    }

    /// Suppression rows written before v10 have no receipt (NULL): asking about such an
    /// erasure still answers with its date.
    @Test func erasuresBeforeTheRegisterHaveNoReceiptButADate() throws {
        let t = try Self.store()
        _ = try t.store.erase(customerIDs: [(1, Self.ids[3])], file: nil, reason: "old", audit: Self.context)
        let p = try t.store.pseudonym(ofCustomerID: Self.ids[3])
        try t.store.pool.write { db in try db.execute(sql: "UPDATE suppressed SET receipt = NULL, receipt_seq = NULL") }
        let r = try #require(try t.store.erasure(pseudonym: p))
        #expect(r.receipt == nil && r.auditSequence == nil && r.erasedAtMillis > 0)
    }

    /// Damaged register rows are integrity errors, never a trap.
    @Test func anEditedRegisterRowIsAnIntegrityError() throws {
        let t = try Self.store()
        let e = try t.store.openRequest(NewRequest(id: RequestRegister.newID(), type: .access, customerID: Self.ids[0], receivedMillis: 0,
                                                   dueMillis: 1, channel: nil, note: nil), audit: Self.context)
        try t.store.pool.write { db in try db.execute(sql: "UPDATE requests SET type = 'complaint', due = 'x'") }
        #expect(throws: VaultError.self) { _ = try t.store.requests(status: nil) }
        try t.store.pool.write { db in try db.execute(sql: "UPDATE requests SET type = 'access', due = 5, customer_id_sealed = x'00'") }
        do { _ = try t.store.requestCustomerID(id: e.id); Issue.record("a damaged ciphertext opened") } catch let v as VaultError {
            #expect(v.kind == .integrity)
        }
    }
}
