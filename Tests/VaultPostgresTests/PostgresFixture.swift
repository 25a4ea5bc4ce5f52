import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres

/// The PostgreSQL tests need a server: `scripts/with-postgres.sh` starts a private cluster and
/// sets `PROFILEVAULT_TEST_POSTGRES`. Without it they fail (never skip) with this message.
struct NoTestServer: Error, CustomStringConvertible {
    var description: String {
        "PROFILEVAULT_TEST_POSTGRES is not set, so the PostgreSQL tests have no server. Run them through "
            + "scripts/with-postgres.sh swift test --filter VaultPostgresTests (it starts a private PostgreSQL cluster; "
            + "install PostgreSQL first with: apt-get install -y postgresql)"
    }
}

/// A fixed audit signing key: the tests' checkpoints are reproducible.
let testAuditKey: Ed25519PrivateKey = {
    // The seed of RFC 8032's first test vector.
    let seed: [UInt8] = [0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
                         0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60]
    return try! Ed25519PrivateKey(seed: SecureBytes(seed))
}()

/// A fresh database on the test server (and a service role and a login role of its own), so
/// every test is independent of the others and of the order they run in. Dropped at the end.
struct TestDatabase: Sendable {
    let name: String
    /// The superuser at this database: the owner role that runs `initialize`.
    let owner: PostgresLocation
    let ownerPassword: String?
    let serviceRole: String
    /// A login role that is a member of the service role: what a node connects as.
    let node: PostgresLocation
    let nodePassword: String

    static func base() throws -> (PostgresLocation, String?) {
        guard let url = ProcessInfo.processInfo.environment["PROFILEVAULT_TEST_POSTGRES"], !url.isEmpty else {
            throw NoTestServer()
        }
        let location = try PostgresLocation(parsing: url)
        return (location, try location.password())
    }

    /// Runs `body` with a fresh database, dropped afterwards (also when `body` throws).
    static func with(_ body: (TestDatabase) async throws -> Void) async throws {
        let (base, password) = try base()
        let suffix = AuditLog.hex(SecureRandom.bytes(6))
        var owner = base
        owner.database = "pvt_\(suffix)"
        var node = base
        node.user = "pvnode_\(suffix)"
        node.database = owner.database
        let db = TestDatabase(name: owner.database, owner: owner, ownerPassword: password, serviceRole: "pvsvc_\(suffix)",
                              node: node, nodePassword: AuditLog.hex(SecureRandom.bytes(16)))
        try await superuser(base, password, ["CREATE DATABASE \(db.name)"])
        var failure: (any Error)?
        do { try await body(db) } catch { failure = error }
        try? await superuser(base, password, [
            "DROP DATABASE IF EXISTS \(db.name) WITH (FORCE)",
            "DROP ROLE IF EXISTS \(node.user)",
            "DROP ROLE IF EXISTS \(db.serviceRole)",
        ])
        if let failure { throw failure }
    }

    /// Runs statements (built by the tests from names they generated) as the superuser.
    static func superuser(_ location: PostgresLocation, _ password: String?, _ statements: [String]) async throws {
        let engine = try PostgresEngine(location: location, password: password, auditSigningKey: testAuditKey, maximumConnections: 1)
        do {
            try await engine.client.withConnection { conn in
                for s in statements { _ = try await conn.query(PostgresQuery(unsafeSQL: s), logger: engine.logger).collect() }
            }
        } catch {
            await engine.close()
            throw error
        }
        await engine.close()
    }

    /// Runs statements as the superuser in this database.
    func superuser(_ statements: [String]) async throws {
        try await Self.superuser(owner, ownerPassword, statements)
    }

    func ownerEngine(pool: Int = 4) throws -> PostgresEngine {
        try PostgresEngine(location: owner, password: ownerPassword, auditSigningKey: testAuditKey, maximumConnections: pool)
    }

    /// Initialises the schema as the owner and creates the node's login role in the service role.
    func initialize() async throws {
        let engine = try ownerEngine()
        do { try await engine.initialize(.init(serviceRole: serviceRole, schemaVersion: "1", policyVersion: "test")) } catch {
            await engine.close()
            throw error
        }
        await engine.close()
        let exists = try await Self.count(owner, ownerPassword, "SELECT count(*) FROM pg_roles WHERE rolname = '\(node.user)'")
        guard exists == 0 else { return }
        try await superuser([
            "CREATE ROLE \(node.user) LOGIN PASSWORD '\(nodePassword)'",
            "GRANT \(serviceRole) TO \(node.user)",
        ])
    }

    /// An engine connected as the node's login role (a member of the service role).
    func nodeEngine(pool: Int = 4) throws -> PostgresEngine {
        try PostgresEngine(location: node, password: nodePassword, auditSigningKey: testAuditKey, maximumConnections: pool)
    }

    /// Runs one statement as `location` and returns the error it raised (nil: it succeeded).
    func attempt(_ sql: String, as location: PostgresLocation, password: String?) async throws -> PostgresStoreError? {
        let engine = try PostgresEngine(location: location, password: password, auditSigningKey: testAuditKey, maximumConnections: 1)
        var failure: PostgresStoreError?
        do {
            try await engine.transaction("test statement") { conn in
                try await engine.exec(conn, PostgresQuery(unsafeSQL: sql))
            }
        } catch let e as PostgresStoreError {
            failure = e
        }
        await engine.close()
        return failure
    }

    /// One integer from a query run as the superuser.
    func count(_ sql: String) async throws -> Int64 {
        try await Self.count(owner, ownerPassword, sql)
    }

    static func count(_ location: PostgresLocation, _ password: String?, _ sql: String) async throws -> Int64 {
        let engine = try PostgresEngine(location: location, password: password, auditSigningKey: testAuditKey, maximumConnections: 1)
        do {
            let n = try await engine.transaction("test count") { conn -> Int64 in
                guard let row = try await engine.rows(conn, PostgresQuery(unsafeSQL: sql)).first else { return -1 }
                return try row.decode(Int64.self)
            }
            await engine.close()
            return n
        } catch {
            await engine.close()
            throw error
        }
    }
}

func record(_ actor: String, _ action: String = "query.count", purpose: String? = "analytics", request: String = "r") -> AuditRecord {
    AuditRecord(actor: actor, role: "analyst", action: action, activity: .read, purpose: purpose, requestID: request)
}
