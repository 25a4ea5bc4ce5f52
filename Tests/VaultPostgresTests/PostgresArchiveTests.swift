import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres

/// `audit archive` on PostgreSQL (issue 20 §3): the service role still cannot delete audit
/// entries or record an archive anchor; the owner may delete only rows an anchor covers.
extension PostgresEngineTests {
    @Test func theServiceRoleCannotArchiveAndTheOwnerDeletesOnlyAnchoredRows() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine(pool: 1)
            try await node.audit([AuditRecord(actor: "a", role: "auditor", action: "get", activity: .read, requestID: "r")])
            try await node.audit([AuditRecord(actor: "a", role: "auditor", action: "get", activity: .read, requestID: "r")])
            await node.close()
            // The service role: no DELETE on the chain, no write on the anchors (42501).
            for sql in ["DELETE FROM profilevault.audit_log WHERE seq = 1",
                        "DELETE FROM profilevault.audit_checkpoints WHERE seq = 1",
                        "INSERT INTO profilevault.audit_archive SELECT 1, 1, hash, hash, signature, NULL, NULL, NULL, 0, hash, signature FROM profilevault.audit_checkpoints WHERE seq = 1"] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.sqlState == "42501", "\(sql): \(e?.message ?? "accepted")")
            }
            // The owner, without an anchor: the trigger refuses (P0001).
            let owner = try await db.attempt("DELETE FROM profilevault.audit_log WHERE seq = 1", as: db.owner, password: db.ownerPassword)
            #expect(owner?.sqlState == "P0001", "\(owner?.message ?? "accepted")")
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == 2)
        }
    }
}
