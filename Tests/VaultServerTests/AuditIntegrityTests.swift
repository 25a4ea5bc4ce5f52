import Foundation
import GRDB
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultAudit
import VaultCrypto
import VaultServer

/// A store whose audit log was edited in the file (an entry appended without a signature, as
/// a forger without the keyring must leave it): the service refuses to sign over it. Every
/// audited request fails with a generic 500, `/healthz` says degraded, nothing is appended.
@Suite struct AuditIntegrityTests {
    @Test func aForgedLogDegradesTheServiceAndIsNeverSignedOver() async throws {
        let f = try ServiceFixture()
        try await f.test { c in try await c.seed() }
        // The forger: an entry after the signed head, its hash chained correctly, no checkpoint.
        let db = try DatabaseQueue(path: f.dir + "/store.sqlite")
        let before = try await db.write { db -> Int in
            let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")!
            let seq: Int64 = row["seq"]
            let head = [UInt8](row["hash"] as Data)
            let text = AuditRecord(actor: "mallory", role: "support", action: "get", activity: .read, requestID: "forged")
                .entry(sequence: seq + 1, timeMillis: AuditLog.nowMillis).canonicalString()
            try db.execute(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                           arguments: [seq + 1, AuditLog.nowMillis, text, Data(head), Data(SHA256.hash(head, Array(text.utf8)))])
            return try Int.fetchOne(db, sql: "SELECT count(*) FROM audit")!
        }
        try db.close()
        try await f.test { c in
            let h = try await c.call(.get, "/healthz")
            #expect(h.status == .serviceUnavailable, "\(h.text)")
            #expect(h.json?["status"]?.stringValue == "degraded")

            let g = try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support")
            #expect(g.status == .internalServerError, "\(g.text)")
            #expect(!g.text.contains("Ada") && !g.text.contains("ada@example.com"))
            #expect(!g.text.contains("entries") && !g.text.contains("checkpoint"), "the body names no detail: \(g.text)")

            let a = try await c.call(.get, "/v1/audit", as: "auditor")
            #expect(a.status == .internalServerError, "\(a.text)")
        }
        let after = try DatabaseQueue(path: f.dir + "/store.sqlite")
        #expect(try await after.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit")! } == before)
    }
}
