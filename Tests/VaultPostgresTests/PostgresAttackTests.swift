import DifferentialPrivacy
import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres

extension TestDatabase {
    /// Runs `statements` as `location` in ONE transaction (so `SET LOCAL` holds for the ones
    /// after it) and returns the error the first failing one raised (nil: all succeeded).
    func attemptAll(_ statements: [String], as location: PostgresLocation, password: String?) async throws -> PostgresStoreError? {
        let engine = try PostgresEngine(location: location, password: password, auditSigningKey: testAuditKey, maximumConnections: 1)
        var failure: PostgresStoreError?
        do {
            try await engine.transaction("test statements") { conn in
                for s in statements { try await engine.exec(conn, PostgresQuery(unsafeSQL: s)) }
            }
        } catch let e as PostgresStoreError {
            failure = e
        }
        await engine.close()
        return failure
    }
}

/// Adversarial review of the PostgreSQL engine's walls (issue 18 §2): what a compromised
/// service-role connection, or a service role that is more than it looks, can do to the chain
/// and the ledger. In the engine's serialized suite (each test in a database of its own).
extension PostgresEngineTests {
    /// A service role that may create objects somewhere it can put on its search_path (CREATE
    /// on `public`: every database made before PostgreSQL 15, or granted by a DBA) defines
    /// `public.<` and `public.<=` on bigint as "false" and puts `public` before `pg_catalog`.
    /// The trigger functions compare with the session's operators unless they fix their own
    /// search_path: the ledger would shrink back to 0 (a refund of every spent epsilon, which
    /// nothing in the chain records) and the head would be rewound. Both must still be refused
    /// by the triggers (P0001).
    @Test func theTriggersCannotBeTurnedByTheSessionsSearchPath() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            try await node.audit([record("alice"), record("bob")])
            _ = try await node.charge(purpose: "analytics", epsilon: 1, limit: 5, periodSeconds: 86_400, audit: record("carol"))
            try await db.superuser(["GRANT CREATE ON SCHEMA public TO \(db.serviceRole)"])
            let planted = try await db.attemptAll([
                "CREATE FUNCTION public.pv_never(bigint, bigint) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false'",
                "CREATE OPERATOR public.< (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.pv_never)",
                "CREATE OPERATOR public.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.pv_never)",
            ], as: db.node, password: db.nodePassword)
            #expect(planted == nil, "\(planted?.message ?? "")")
            let spentBefore = try await db.count("SELECT sum(spent_units)::bigint FROM profilevault.dp_budget")
            #expect(spentBefore > 0)
            for attack in [
                "UPDATE profilevault.dp_budget SET spent_units = 0",
                "UPDATE profilevault.audit_head SET seq = 1, hash = (SELECT hash FROM profilevault.audit_log WHERE seq = 1)",
            ] {
                let e = try await db.attemptAll(["SET LOCAL search_path = public, pg_catalog", attack], as: db.node, password: db.nodePassword)
                #expect(e?.sqlState == "P0001", "\(attack): \(e?.message ?? "succeeded")")
            }
            #expect(try await db.count("SELECT sum(spent_units)::bigint FROM profilevault.dp_budget") == spentBefore)
            #expect(try await node.auditHead().entries == 3)
            #expect(try await node.verifyAudit().ok)
            await node.close()
        }
    }

    /// REVOKE removes only what was granted to the service role itself. A role that is a
    /// member of `pg_write_all_data` (UPDATE and DELETE on every table), that has CREATEROLE
    /// (on PostgreSQL 15 it may grant itself the owner), or that may SET ROLE to a superuser,
    /// is not restrained by the grants; nor is one that may SET session_replication_role
    /// (replica mode fires no trigger, and the role may UPDATE the ledger): init refuses each,
    /// and grants nothing.
    /// A login role whose default search_path names a schema it can write (ALTER ROLE ... SET
    /// search_path) could plant functions or operators there that a statement resolves before
    /// the intended ones; every connection of a node starts with search_path = pg_catalog.
    @Test func nodesConnectWithSearchPathPinnedToTheCatalog() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            try await db.superuser(["CREATE SCHEMA planted", "ALTER ROLE \(db.node.user) SET search_path = planted, public"])
            let node = try db.nodeEngine(pool: 1)
            let path = try await node.transaction("reading search_path") { conn in
                try await node.rows(conn, "SHOW search_path").first?.decode(String.self)
            }
            #expect(path == "pg_catalog")
            await node.close()
        }
    }

    @Test func initRefusesAServiceRoleWithPowersThroughItsMemberships() async throws {
        try await TestDatabase.with { db in
            let engine = try db.ownerEngine()
            try await db.superuser(["CREATE ROLE \(db.serviceRole) NOLOGIN"])
            for (grant, undo) in [
                ("GRANT pg_write_all_data TO \(db.serviceRole)", "REVOKE pg_write_all_data FROM \(db.serviceRole)"),
                ("ALTER ROLE \(db.serviceRole) CREATEROLE", "ALTER ROLE \(db.serviceRole) NOCREATEROLE"),
                ("GRANT \(db.owner.user) TO \(db.serviceRole)", "REVOKE \(db.owner.user) FROM \(db.serviceRole)"),
                // `session_replication_role = replica` switches the triggers off for the session.
                ("GRANT SET ON PARAMETER session_replication_role TO \(db.serviceRole)",
                 "REVOKE SET ON PARAMETER session_replication_role FROM \(db.serviceRole)"),
            ] {
                try await db.superuser([grant])
                do {
                    try await engine.initialize(.init(serviceRole: db.serviceRole))
                    Issue.record("init accepted a service role after \(grant)")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .configuration, "\(grant): \(e.message)")
                }
                // Nothing was granted (the grants and the check are one transaction).
                #expect(try await db.count("SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = '\(db.serviceRole)'") == 0, "\(grant)")
                try await db.superuser([undo])
            }
            // A plain role is accepted.
            try await engine.initialize(.init(serviceRole: db.serviceRole))
            await engine.close()
        }
    }

    /// The owner is a plain role (as docs/deployment.md sets it up) and the service role is a
    /// member of it: the service role could `ALTER TABLE ... DISABLE TRIGGER` and then rewrite
    /// the chain with the owner's privileges. Init refuses it, naming the owner.
    @Test func initRefusesAServiceRoleThatIsAMemberOfTheOwner() async throws {
        let (base, superPassword) = try TestDatabase.base()
        let ownerRole = "pvown_" + AuditLog.hex(SecureRandom.bytes(6))
        let ownerPassword = AuditLog.hex(SecureRandom.bytes(16))
        try await TestDatabase.with { db in
            try await db.superuser([
                "CREATE ROLE \(ownerRole) LOGIN PASSWORD '\(ownerPassword)'",
                "ALTER DATABASE \(db.name) OWNER TO \(ownerRole)",
                "CREATE ROLE \(db.serviceRole) NOLOGIN",
                "GRANT \(ownerRole) TO \(db.serviceRole)",
            ])
            var owner = db.owner
            owner.user = ownerRole
            let engine = try PostgresEngine(location: owner, password: ownerPassword, auditSigningKey: testAuditKey, maximumConnections: 2)
            do {
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                Issue.record("init accepted a service role that is a member of the owner")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("owns"), "\(e.message)")
            }
            // Without the membership, the same init succeeds.
            try await db.superuser(["REVOKE \(ownerRole) FROM \(db.serviceRole)"])
            try await engine.initialize(.init(serviceRole: db.serviceRole))
            await engine.close()
        }
        try await TestDatabase.superuser(base, superPassword, ["DROP ROLE IF EXISTS \(ownerRole)"])
    }
}

extension PostgresEngineTests {
    /// A period so long that the window's end (`start + period`, bigint in SQL) overflows:
    /// refused as configuration before anything is read or written, not a server error
    /// (`bigint out of range`, which came out as an internal failure after the window row was
    /// about to be written).
    @Test func aPeriodLongerThanTheClockCanCountIsRefused() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            for period in [Int.max, Int.max / 2, 1 << 62, (1 << 40) + 1] {
                do {
                    _ = try await node.charge(purpose: "analytics", epsilon: 0.5, limit: 5, periodSeconds: period, audit: record("x"))
                    Issue.record("charged under a period of \(period) seconds")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .configuration, "\(period): \(e.message)")
                }
                do {
                    _ = try await node.budgetState(purpose: "analytics", limit: 5, periodSeconds: period)
                    Issue.record("read a budget under a period of \(period) seconds")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .configuration, "\(period): \(e.message)")
                }
            }
            // The longest period a policy can declare (9999999d) works.
            _ = try await node.charge(purpose: "analytics", epsilon: 0.5, limit: 5, periodSeconds: 9_999_999 * 86_400, audit: record("y"))
            #expect(try await db.count("SELECT count(*) FROM profilevault.dp_budget") == 1)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == 1)
            await node.close()
        }
    }
}

extension PostgresEngineTests {
    /// A co-tenant of the database creates the schema `profilevault` before init (or plants a
    /// `schema_migrations` of its own claiming every version is applied). Init must not build
    /// the store in it: the schema's owner could drop or replace any table, and a planted
    /// migrations table would make init skip the migrations, so the nodes would run on tables
    /// without triggers or grants. Init refuses both, and creates nothing.
    @Test func initRefusesASchemaSomeoneElsePlanted() async throws {
        let (base, superPassword) = try TestDatabase.base()
        let cotenant = "pvco_" + AuditLog.hex(SecureRandom.bytes(6))
        try await TestDatabase.with { db in
            let engine = try db.ownerEngine()
            try await db.superuser(["CREATE ROLE \(cotenant) NOLOGIN", "CREATE SCHEMA profilevault AUTHORIZATION \(cotenant)"])
            do {
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                Issue.record("init built the store in a schema another role owns")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("another role"), "\(e.message)")
            }
            #expect(try await db.count("SELECT count(*) FROM pg_class WHERE relnamespace = 'profilevault'::regnamespace") == 0)
            // The schema is the owner's, but a table in it is planted by the co-tenant.
            try await db.superuser([
                "DROP SCHEMA profilevault",
                "CREATE SCHEMA profilevault",
                "CREATE TABLE profilevault.schema_migrations(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                "INSERT INTO profilevault.schema_migrations(version, name) VALUES (1, 'x'), (2, 'y')",
                "ALTER TABLE profilevault.schema_migrations OWNER TO \(cotenant)",
            ])
            do {
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                Issue.record("init accepted a schema with a planted migrations table")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("another role"), "\(e.message)")
            }
            #expect(try await db.count("SELECT count(*) FROM pg_class WHERE relnamespace = 'profilevault'::regnamespace AND relname = 'audit_log'") == 0)
            // Its own schema, cleared: init builds the store.
            try await db.superuser(["DROP TABLE profilevault.schema_migrations"])
            try await engine.initialize(.init(serviceRole: db.serviceRole))
            #expect(try await engine.appliedMigrations().map(\.version) == PostgresEngine.migrations.map(\.version))
            await engine.close()
        }
        try await TestDatabase.superuser(base, superPassword, ["DROP ROLE IF EXISTS \(cotenant)"])
    }
}

extension PostgresEngineTests {
    /// Init checks the service role once; a node's login role is the deployer's, and grants
    /// change after init. A node that logs in as the owner (or a superuser), or as a login role
    /// later given `pg_write_all_data`, holds UPDATE and DELETE on the audit rows and could
    /// disable the triggers: the REVOKE would mean nothing. `open` refuses such a role
    /// (configuration), and opens once the membership is gone.
    @Test func aNodeRunningAsARoleTheGrantsDoNotRestrainIsRefused() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            do {
                let owner = try await PostgresEngine.open(location: db.owner, password: db.ownerPassword, auditSigningKey: testAuditKey)
                await owner.close()
                Issue.record("a node opened as the owner (a superuser here)")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration, "\(e.message)")
            }
            try await db.superuser(["GRANT pg_write_all_data TO \(db.node.user)"])
            do {
                let node = try await PostgresEngine.open(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey)
                await node.close()
                Issue.record("a node opened as a member of pg_write_all_data")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("pg_write_all_data"), "\(e.message)")
            }
            try await db.superuser(["REVOKE pg_write_all_data FROM \(db.node.user)"])
            let node = try await PostgresEngine.open(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey)
            try await node.audit([record("ok")])
            await node.close()
            // The owner's own tools may still open it, saying so.
            let tool = try await PostgresEngine.open(location: db.owner, password: db.ownerPassword, auditSigningKey: testAuditKey, leastPrivilege: false)
            #expect(try await tool.verifyAudit().ok)
            await tool.close()
        }
    }
}
