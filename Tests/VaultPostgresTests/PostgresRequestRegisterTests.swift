import EngineConformanceSupport
import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// The request register on PostgreSQL: the same checks as on SQLite (RegisterConformance),
/// the rows' bytes read back as the owner sees them, and `migrate` carrying the register.
@Suite(.serialized) struct PostgresRequestRegisterTests {
    static let ids = (0..<4).map { "PGREGISTER-SUBJECT-\(9_200_000 + $0)-QZX" }

    static func csv() -> String {
        let rows = ids.enumerated().map { i, id in
            var r = Rows.row(i)
            r[0] = id
            return r.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ",")
        }
        return ([Rows.header] + rows).joined(separator: "\n") + "\n"
    }

    /// Every register and suppression row as PostgreSQL renders it (bytea as hex).
    static func rowsText(_ db: TestDatabase) throws -> [UInt8] {
        let engine = try db.ownerEngine()
        defer { _ = try? PostgresProfiles.wait("closing") { await engine.close() } }
        return try PostgresProfiles.wait("dumping the register") {
            try await engine.transaction("dumping the register") { conn in
                let r = try await engine.rows(conn, """
                    SELECT coalesce((SELECT string_agg(r::text, ',') FROM profilevault.requests r), '')
                        || coalesce((SELECT string_agg(s::text, ',') FROM profilevault.suppressed s), '')
                    """)
                return Array(try r.first?.decode(String.self).utf8 ?? "".utf8)
            }
        }
    }

    @Test func theRegisterHoldsOnEngineTerms() async throws {
        try await ProfileCluster.with { cluster in
            let node = try await cluster.node()
            let path = try cluster.write("p.csv", Self.csv())
            var o = IngestOptions()
            o.audit = context
            let options = o
            let failures = try await onThread { () -> [String] in
                _ = try node.ingestProfiles(.file(path), options: options)
                return try RegisterConformance.run(node, ids: Self.ids, audit: context) { try Self.rowsText(cluster.db) }
            }
            #expect(failures.isEmpty, "\(failures)")
            // Each change committed with its audit entry (3 opened, 1 extended, 1 denied, 1 fulfilled).
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"requests.%'") == 6)
            // The service role may not delete a request (the register only grows).
            let denied = try await cluster.db.attempt("DELETE FROM profilevault.requests", as: cluster.db.node, password: cluster.db.nodePassword)
            #expect(denied?.kind == .denied)
            try await onThread { try node.close() }
        }
    }

    @Test func migrateCarriesTheRegisterAndTheReceipts() async throws {
        try await TestDatabase.with { db in
            let dir = NSTemporaryDirectory() + "pvmigreq-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let keyring = Keyring.generate(note: "test")
            let sqlite = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: repositorySchema, policyVersion: "test")
            defer { try? sqlite.close() }
            var o = IngestOptions()
            o.audit = context
            try Self.csv().write(toFile: dir + "/p.csv", atomically: true, encoding: .utf8)
            _ = try sqlite.ingestProfiles(.file(dir + "/p.csv"), options: o)
            let r1 = try sqlite.openRequest(NewRequest(id: RequestRegister.newID(), type: .access, customerID: Self.ids[0], receivedMillis: 1,
                                                       dueMillis: 2, channel: .letter, note: "sealed note"), audit: context)
            let r2 = try sqlite.openRequest(NewRequest(id: RequestRegister.newID(), type: .erasure, customerID: Self.ids[1], receivedMillis: 1,
                                                       dueMillis: 2, channel: nil, note: nil), audit: context)
            _ = try sqlite.changeRequest(id: r1.id, .extend(extensionMillis: 5, reason: "why"), audit: context)
            let receipt = try #require(try sqlite.erase(customerIDs: [(1, Self.ids[1])], file: nil, reason: "r", audit: context).first)
            _ = try sqlite.changeRequest(id: r2.id, .fulfil(outcome: "receipt:\(receipt.receipt)"), audit: context)
            let url = db.owner.description
            let env = ["PGPASSWORD": db.ownerPassword ?? ""]
            _ = try await onThread {
                try PostgresStore.migrate(from: sqlite, to: url, keyring: keyring, schema: repositorySchema, serviceRole: db.serviceRole,
                                          audit: context, batch: 8, environment: env)
            }
            let node = try await onThread { try PostgresStore.open(url: url, keyring: keyring, schema: repositorySchema, leastPrivilege: false, environment: env) }
            try await onThread {
                #expect(try node.requests(status: nil) == sqlite.requests(status: nil))
                #expect(try node.requestCustomerID(id: r1.id) == Self.ids[0])   // sealed columns copied as they are
                #expect(try node.requestCustomerID(id: r2.id) == nil)
                let p = try node.pseudonym(ofCustomerID: Self.ids[1])
                #expect(try node.erasure(pseudonym: p) == sqlite.erasure(pseudonym: p))
                #expect(try node.erasure(pseudonym: p)?.receipt == receipt.receipt)
                try node.close()
            }
        }
    }
}
