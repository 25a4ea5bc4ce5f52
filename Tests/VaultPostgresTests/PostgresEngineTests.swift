import DifferentialPrivacy
import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres
import VaultStore

/// The PostgreSQL engine against a real server (issue 18 §2-§3): migrations and roles, the one
/// audit chain of the cluster, the budget ledger that no node overspends. Each test works in a
/// database of its own (``TestDatabase``); one at a time, so a server with the default
/// max_connections (100) is enough.
@Suite(.serialized) struct PostgresEngineTests {
    @Test func migrationsAreVersionedAndIdempotent() async throws {
        try await TestDatabase.with { db in
            let engine = try db.ownerEngine()
            // Before init: no schema, and a node refuses to start.
            #expect(try await engine.appliedMigrations().isEmpty)
            await #expect(throws: PostgresStoreError.self) { try await engine.checkSchema() }
            // Two owners initialising at once: each migration runs once.
            let other = try db.ownerEngine()
            async let a: Void = engine.initialize(.init(serviceRole: db.serviceRole))
            async let b: Void = other.initialize(.init(serviceRole: db.serviceRole))
            _ = try await (a, b)
            let applied = try await engine.appliedMigrations()
            #expect(applied.map(\.version) == PostgresEngine.migrations.map(\.version))
            #expect(applied.map(\.version).last == PostgresEngine.latestSchemaVersion)
            try await engine.checkSchema()
            let meta = try await engine.meta()
            let storeID = try #require(meta["store_id"])
            #expect(storeID.count == 32 && meta["created_at"] != nil)
            // Again, after some data: nothing changes, nothing is lost.
            try await engine.audit([record("owner", "init")])
            try await engine.initialize(.init(serviceRole: db.serviceRole))
            #expect(try await engine.appliedMigrations().map(\.version) == PostgresEngine.migrations.map(\.version))
            #expect(try await engine.meta()["store_id"] == storeID)
            #expect(try await engine.meta()["policy_version"] == nil)
            #expect(try await db.count("SELECT count(*) FROM profilevault.schema_migrations") == Int64(PostgresEngine.migrations.count))
            #expect(try await engine.verifyAudit().ok)
            #expect(try await engine.auditHead().entries == 1)
            // A database migrated further than this build knows is refused.
            try await db.superuser(["INSERT INTO profilevault.schema_migrations(version, name) VALUES (99, 'future')"])
            await #expect(throws: PostgresStoreError.self) { try await engine.checkSchema() }
            await engine.close()
            await other.close()
        }
    }

    /// A database left at version 1 (as a build before the ledger would leave it): a node
    /// refuses it, naming the version; the owner's init migrates it to the latest.
    @Test func anOlderSchemaIsRefusedByNodesAndMigratedByInit() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            try await db.superuser([
                // Version 16 (the head's trigger after the statement): the BEFORE trigger of version 1.
                "DROP TRIGGER audit_head_forward ON profilevault.audit_head",
                """
                CREATE TRIGGER audit_head_forward BEFORE UPDATE ON profilevault.audit_head
                    FOR EACH ROW EXECUTE FUNCTION profilevault.audit_head_advances()
                """,
                "DELETE FROM profilevault.schema_migrations WHERE version = 16",
                // Version 15 (the population epoch): its table.
                "DROP TABLE profilevault.population_epoch",
                "DELETE FROM profilevault.schema_migrations WHERE version = 15",
                // Version 14 (the DP release cache): its table.
                "DROP TABLE profilevault.release_cache",
                "DELETE FROM profilevault.schema_migrations WHERE version = 14",
                // Version 13 (audit archive anchors): its table, and the chain's append-only
                // triggers of version 1 back in place of its conditional ones.
                "DROP TABLE profilevault.audit_archive",
                "DROP FUNCTION profilevault.refuse_unarchived_change() CASCADE",
                """
                CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_log
                    FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
                """,
                """
                CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_checkpoints
                    FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
                """,
                "DELETE FROM profilevault.schema_migrations WHERE version = 13",
                // Version 11 (subject rows go with their subject): its function and triggers.
                "DROP FUNCTION profilevault.subject_rows_guard() CASCADE",
                "DELETE FROM profilevault.schema_migrations WHERE version = 11",
                // Version 7 (restriction and objection): its table references the subjects.
                "DROP TABLE profilevault.restriction",
                "DELETE FROM profilevault.schema_migrations WHERE version = 7",
                // Version 8 (the request register): its table, and its columns go with `suppressed` below.
                "DROP TABLE profilevault.requests",
                "DELETE FROM profilevault.schema_migrations WHERE version = 8",
                // Version 9 (ingest sources): its table; its columns go with the subjects below.
                "DROP TABLE profilevault.ingest_batches",
                "DELETE FROM profilevault.schema_migrations WHERE version = 9",
                // Version 6 (bulk ingest) only drops two foreign keys, which these tables lack.
                "DELETE FROM profilevault.schema_migrations WHERE version = 6",
                // Version 5 (key custody), which came after 4: its trigger goes with the table below.
                "DROP FUNCTION profilevault.key_versions_guard() CASCADE",
                "DELETE FROM profilevault.schema_migrations WHERE version = 5",
                // Version 4 (consent and policy ledgers), which came after 3.
                "DROP TABLE profilevault.consent, profilevault.consent_state, profilevault.policy_history",
                "DROP FUNCTION profilevault.consent_append_only(), profilevault.policy_history_append_only()",
                "DELETE FROM profilevault.schema_migrations WHERE version = 4",
                "DROP TABLE profilevault.dp_budget",
                "DROP FUNCTION profilevault.dp_budget_only_grows()",
                "DELETE FROM profilevault.schema_migrations WHERE version = 2",
                // And version 3 (subjects, PII and events), which came after the ledger.
                "DROP TABLE profilevault.events, profilevault.suppressed, profilevault.subjects, profilevault.key_versions, profilevault.pii_fields",
                "DELETE FROM profilevault.schema_migrations WHERE version = 3",
            ])
            do {
                let node = try await PostgresEngine.open(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey)
                await node.close()
                Issue.record("a node opened a schema at version 1")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("version 1") && e.message.contains("init"))
            }
            try await db.initialize()
            let node = try await PostgresEngine.open(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey)
            #expect(try await node.appliedMigrations().map(\.version) == PostgresEngine.migrations.map(\.version))
            _ = try await node.charge(purpose: "p", epsilon: 1, limit: 1, periodSeconds: 60, audit: record("after-migration"))
            #expect(try await node.verifyAudit().ok)
            await node.close()
        }
    }

    @Test func initRefusesAServiceRoleThatCannotBeRestrained() async throws {
        try await TestDatabase.with { db in
            let engine = try db.ownerEngine()
            for bad in ["Robert\"; DROP TABLE x; --", "pg_monitor", "public", "", "UPPER", String(repeating: "a", count: 64)] {
                await #expect(throws: PostgresStoreError.self, "role name \(bad)") { try await engine.initialize(.init(serviceRole: bad)) }
            }
            // The owner itself, or a superuser, as the service role: no grant restrains it.
            await #expect(throws: PostgresStoreError.self) { try await engine.initialize(.init(serviceRole: db.owner.user)) }
            try await db.superuser(["CREATE ROLE \(db.serviceRole) SUPERUSER NOLOGIN"])
            do {
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                Issue.record("a superuser service role was accepted")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.message.contains("superuser"))
            }
            await engine.close()
        }
    }

    /// A store has one service role: init again naming another one is refused (configuration,
    /// naming the store's role) and creates and grants nothing; the same role runs again. A
    /// store initialised before the role was recorded is known by its grants. (The old code
    /// created the second role and granted it a node's privileges.)
    @Test func initAgainWithAnotherServiceRoleIsRefused() async throws {
        try await TestDatabase.with { db in
            let other = db.serviceRole + "_b"
            let engine = try db.ownerEngine()
            var failure: (any Error)?
            do {
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                func refusedNamingTheStoresRole() async throws {
                    do {
                        try await engine.initialize(.init(serviceRole: other))
                        Issue.record("a second service role was accepted")
                    } catch let e as PostgresStoreError {
                        #expect(e.kind == .configuration, "\(e.kind)")
                        #expect(e.message.contains("already has the service role \(db.serviceRole), not \(other)")
                                && e.message.contains("--service-role \(db.serviceRole)"), "\(e.message)")
                    }
                    #expect(try await TestDatabase.count(db.owner, db.ownerPassword, "SELECT count(*) FROM pg_roles WHERE rolname = '\(other)'") == 0)
                }
                try await refusedNamingTheStoresRole()
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                // A store from before the role was recorded: its grants name it, and init records it.
                try await db.superuser(["DELETE FROM profilevault.meta WHERE key = 'service_role'"])
                try await refusedNamingTheStoresRole()
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                #expect(try await engine.meta()["service_role"] == db.serviceRole)
                // Such a store with a second role granted INSERT on the audit log (an older init
                // run with another name): init picks neither; it names both, whichever is asked.
                try await db.superuser([
                    "DELETE FROM profilevault.meta WHERE key = 'service_role'",
                    "CREATE ROLE \(other) NOLOGIN",
                    "GRANT INSERT ON profilevault.audit_log TO \(other)",
                ])
                for asked in [db.serviceRole, other] {
                    do {
                        try await engine.initialize(.init(serviceRole: asked))
                        Issue.record("init chose a service role among two (asked \(asked))")
                    } catch let e as PostgresStoreError {
                        let names = [db.serviceRole, other].sorted().joined(separator: ", ")
                        #expect(e.kind == .configuration && e.message.contains(names), "\(e.message)")
                    }
                    #expect(try await engine.meta()["service_role"] == nil)
                }
                try await db.superuser(["REVOKE ALL ON ALL TABLES IN SCHEMA profilevault FROM \(other)"])
                try await engine.initialize(.init(serviceRole: db.serviceRole))
                #expect(try await engine.meta()["service_role"] == db.serviceRole)
            } catch { failure = error }
            await engine.close()
            try? await db.superuser(["DROP OWNED BY \(other)", "DROP ROLE IF EXISTS \(other)"])
            if let failure { throw failure }
        }
    }

    /// REVOKE, not only triggers: connected as a member of the service role, UPDATE, DELETE and
    /// TRUNCATE of audit rows fail with PostgreSQL's permission check (42501), before any
    /// trigger runs; the owner, who holds the privileges, is stopped by the triggers (P0001).
    @Test func theServiceRoleCannotRewriteTheAuditLog() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            try await node.checkSchema()
            // What a node does works with the service role's grants.
            try await node.audit([record("alice"), record("bob")])
            _ = try await node.charge(purpose: "analytics", epsilon: 0.5, limit: 5, periodSeconds: 86_400, audit: record("carol"))
            #expect(try await node.verifyAudit().ok)
            for sql in [
                "UPDATE profilevault.audit_log SET entry = '{}' WHERE seq = 1",
                "DELETE FROM profilevault.audit_log WHERE seq = 1",
                "TRUNCATE profilevault.audit_log",
                "UPDATE profilevault.audit_checkpoints SET signature = signature",
                "DELETE FROM profilevault.audit_checkpoints",
                "TRUNCATE profilevault.audit_checkpoints",
                "DELETE FROM profilevault.audit_head",
                "TRUNCATE profilevault.audit_head",
                "DELETE FROM profilevault.dp_budget",
                "TRUNCATE profilevault.dp_budget",
                "UPDATE profilevault.meta SET value = '0' WHERE key = 'created_at'",
                "INSERT INTO profilevault.schema_migrations(version, name) VALUES (50, 'x')",
                "ALTER TABLE profilevault.audit_log DISABLE TRIGGER ALL",
                "DROP TABLE profilevault.audit_log",
                "CREATE TABLE profilevault.sneaky(x int)",
            ] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.sqlState == "42501", "\(sql): \(e?.message ?? "succeeded")")
                #expect(e?.kind == .denied, "\(sql)")
            }
            // The head row the node must update: it cannot be rewound or pointed elsewhere.
            for sql in ["UPDATE profilevault.audit_head SET seq = seq - 1",
                        "UPDATE profilevault.audit_head SET hash = decode(repeat('ab', 32), 'hex')",
                        "UPDATE profilevault.dp_budget SET spent_units = 0"] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.sqlState == "P0001", "\(sql): \(e?.message ?? "succeeded")")
            }
            // The owner holds UPDATE and DELETE; the triggers are the second wall.
            for sql in ["UPDATE profilevault.audit_log SET entry = '{}' WHERE seq = 1", "DELETE FROM profilevault.audit_log",
                        "TRUNCATE profilevault.audit_log", "DELETE FROM profilevault.audit_checkpoints"] {
                let e = try await db.attempt(sql, as: db.owner, password: db.ownerPassword)
                #expect(e?.sqlState == "P0001", "\(sql): \(e?.message ?? "succeeded")")
            }
            #expect(try await node.verifyAudit().ok)
            #expect(try await node.auditHead().entries == 3)
            await node.close()
        }
    }

    /// Issue 18 §4's race at the ledger: three engines (three pools, as three nodes) charge 30
    /// times at once a budget that fits exactly 10 charges. Exactly 10 are granted, the ledger
    /// holds exactly 10 charges, and the one chain records every grant and every refusal.
    @Test func threeNodesNeverOverspendABudget() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let nodes = try (0..<3).map { _ in try db.nodeEngine(pool: 4) }
            let epsilon = 0.1   // not a binary fraction: the ledger counts 2^-20 units, exactly
            let e = try #require(Epsilon(epsilon))
            let limit = e.chargedValue * 10
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<30 {
                    let node = nodes[i % 3]
                    group.addTask {
                        do {
                            _ = try await node.charge(purpose: "analytics", epsilon: epsilon, limit: limit, periodSeconds: 86_400,
                                                      audit: record("node\(i % 3)", request: "q\(i)"))
                            return true
                        } catch let x as BudgetExceeded {
                            #expect(!x.deltaExceeded && x.state.limit == limit)
                            return false
                        }
                    }
                }
                var out: [Bool] = []
                for try await r in group { out.append(r) }
                return out
            }
            #expect(results.filter { $0 }.count == 10)
            #expect(results.filter { !$0 }.count == 20)
            let units = try await db.count("SELECT sum(spent_units)::bigint FROM profilevault.dp_budget")
            #expect(units == 10 * Int64(e.chargeUnits))
            let state = try await nodes[0].budgetState(purpose: "analytics", limit: limit, periodSeconds: 86_400)
            #expect(state.spent == limit && state.left == 0)
            // Every grant and refusal is in the one chain, which verifies.
            let v = try await nodes[1].verifyAudit()
            #expect(v.ok && v.entries == 30, "\(v)")
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"status\":\"ok\"%' AND entry LIKE '%\"unmapped.epsilon\":\"0.09999942779541016\"%'") == 10)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"status\":\"denied\"%' AND entry LIKE '%budget exceeded%'") == 20)
            for n in nodes { await n.close() }
        }
    }

    /// Appends from three engines at once form one chain, gap-free, that verifies; an entry
    /// rewritten by the owner (triggers bypassed, as a superuser can) is found, by its number.
    @Test func threeNodesAppendToOneChainAndTamperingIsFound() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let nodes = try (0..<3).map { _ in try db.nodeEngine(pool: 3) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<3 {
                    for i in 0..<50 {
                        group.addTask { try await nodes[n].audit([record("node\(n)-\(i)")]) }
                    }
                }
                try await group.waitForAll()
            }
            let v = try await nodes[0].verifyAudit()
            #expect(v.ok && v.entries == 150, "\(v)")
            #expect(try await nodes[2].auditHead().entries == 150)
            #expect(try await db.count("SELECT count(DISTINCT seq) FROM profilevault.audit_log WHERE seq BETWEEN 1 AND 150") == 150)
            // Group commit: fewer transactions than entries on at least one node is likely but
            // not certain, so only the totals are checked.
            let stats = nodes.map(\.auditCommitStats)
            #expect(stats.map(\.entries).reduce(0, +) == 150)
            // The owner rewrites entry 77 past the triggers.
            try await db.superuser([
                "SET session_replication_role = replica",
                "UPDATE profilevault.audit_log SET entry = replace(entry, '\"actor.user.name\":\"node', '\"actor.user.name\":\"evil') WHERE seq = 77",
            ])
            let bad = try await nodes[1].verifyAudit()
            #expect(!bad.ok && bad.firstBad == 77, "\(bad)")
            // Rewriting the newest entry (which the next append builds on) stops appends.
            try await db.superuser([
                "SET session_replication_role = replica",
                "UPDATE profilevault.audit_log SET entry = replace(entry, '\"actor.user.name\":\"node', '\"actor.user.name\":\"evil') WHERE seq = 150",
            ])
            do {
                try await nodes[0].audit([record("after")])
                Issue.record("an append built on a rewritten head")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .integrity && e.message.contains("150"))
            }
            for n in nodes { await n.close() }
        }
    }

    /// Group commit, made deterministic: another session holds the head row, so this node's
    /// first append waits on it; 20 appends queued meanwhile go out together in the next
    /// transaction (2 transactions for 21 entries), each returning only once committed.
    @Test func appendsQueuedBehindACommitGoOutInOneTransaction() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine(pool: 2)
            let blocker = try db.ownerEngine(pool: 1)
            let (locked, lockedC) = AsyncStream.makeStream(of: Void.self)
            let (release, releaseC) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await blocker.transaction("holding the head") { conn in
                    try await blocker.exec(conn, "SELECT seq FROM profilevault.audit_head WHERE id = 1 FOR UPDATE")
                    lockedC.yield()
                    for await _ in release { break }
                }
            }
            for await _ in locked { break }
            /// Waits (at most 20 s) for a state the test builds step by step.
            func until(_ what: String, _ condition: () -> Bool) async throws {
                for _ in 0..<4000 where !condition() { try await Task.sleep(for: .milliseconds(5)) }
                try #require(condition(), "never reached: \(what)")
            }
            let first = Task { try await node.audit([record("first")]) }
            try await until("the first append in flight") { node.commits.inFlight && node.commits.pending == 0 }
            let rest = (0..<20).map { i in Task { try await node.audit([record("queued\(i)")]) } }
            try await until("20 appends queued") { node.commits.pending == 20 }
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == 0)
            releaseC.yield()
            try await holder.value
            try await first.value
            for t in rest { try await t.value }
            #expect(node.auditCommitStats == (entries: 21, transactions: 2))
            let v = try await node.verifyAudit()
            #expect(v.ok && v.entries == 21)
            await node.close()
            await blocker.close()
        }
    }

    /// A wrong password is a configuration error that does not repeat it.
    @Test func aWrongPasswordIsRefusedWithoutRepeatingIt() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let wrong = "wrong-\(db.nodePassword)"
            do {
                let node = try await PostgresEngine.open(location: db.node, password: wrong, auditSigningKey: testAuditKey)
                await node.close()
                Issue.record("a wrong password was accepted")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration && e.sqlState == "28P01", "\(e)")
                #expect(!e.message.contains(wrong) && !e.message.contains(db.nodePassword))
            }
            // Nothing listening there: refused at once too.
            var nowhere = db.node
            nowhere.endpoint = .unixSocket(directory: "/nonexistent", port: 5432)
            await #expect(throws: PostgresStoreError.self) {
                _ = try await PostgresEngine.open(location: nowhere, password: nil, auditSigningKey: testAuditKey)
            }
            // The right one opens (and checks the schema).
            let node = try await PostgresEngine.open(location: db.node, password: db.nodePassword, auditSigningKey: testAuditKey)
            try await node.audit([record("x")])
            await node.close()
        }
    }

    /// A DBA's stricter default isolation does not turn waiting on the head row into failures:
    /// the engine names READ COMMITTED for its writes.
    @Test func appendsWaitOnTheHeadUnderASerializableDefault() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            try await db.superuser(["ALTER DATABASE \(db.name) SET default_transaction_isolation = 'serializable'"])
            let nodes = try (0..<3).map { _ in try db.nodeEngine(pool: 3) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<3 {
                    for i in 0..<15 {
                        group.addTask {
                            if i % 3 == 0 {
                                _ = try? await nodes[n].charge(purpose: "p", epsilon: 0.25, limit: 2, periodSeconds: 3_600, audit: record("c\(n)"))
                            } else {
                                try await nodes[n].audit([record("node\(n)-\(i)")])
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let v = try await nodes[0].verifyAudit()
            #expect(v.ok && v.entries == 45, "\(v)")
            #expect(try await db.count("SELECT sum(spent_units)::bigint FROM profilevault.dp_budget") == 8 * (1 << 18))
            for n in nodes { await n.close() }
        }
    }

    @Test func aDeletedTailOrAMovedHeadIsFound() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            for i in 0..<5 { try await node.audit([record("a\(i)")]) }
            // The owner cuts the last two entries (and their checkpoints) and rewinds the head.
            try await db.superuser([
                "SET session_replication_role = replica",
                "DELETE FROM profilevault.audit_log WHERE seq > 3",
                "UPDATE profilevault.audit_head SET seq = 3, hash = (SELECT hash FROM profilevault.audit_log WHERE seq = 3)",
            ])
            let v = try await node.verifyAudit()
            #expect(!v.ok && v.firstBad == 4, "\(v)")
            await #expect(throws: PostgresStoreError.self) { try await node.audit([record("next")]) }
            await node.close()
        }
    }

    /// NaN, infinities, negative and out-of-range numbers are refused before anything is
    /// written: no ledger row, no audit entry.
    @Test func absurdNumbersAreRefusedBeforeAnyWrite() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            let cases: [(Double, Double, Double, Double, Int)] = [
                (.nan, 0, 5, 0, 86_400), (.infinity, 0, 5, 0, 86_400), (-.infinity, 0, 5, 0, 86_400), (-1, 0, 5, 0, 86_400),
                (0, 0, 5, 0, 86_400), (-0.0, 0, 5, 0, 86_400), (1e-9, 0, 5, 0, 86_400), (2e6, 0, 5, 0, 86_400),
                (.leastNonzeroMagnitude, 0, 5, 0, 86_400), (.greatestFiniteMagnitude, 0, 5, 0, 86_400),
                (0.5, .nan, 5, 1e-6, 86_400), (0.5, -1e-6, 5, 1e-6, 86_400), (0.5, 2, 5, 1e-6, 86_400), (0.5, .infinity, 5, 1e-6, 86_400),
                (0.5, 0, .nan, 0, 86_400), (0.5, 0, -1, 0, 86_400), (0.5, 0, .infinity, 0, 86_400), (0.5, 0, -.infinity, 0, 86_400),
                (0.5, 0, 5, .nan, 86_400), (0.5, 0, 5, -1, 86_400), (0.5, 0, 5, 2, 86_400),
                (0.5, 0, 5, 0, 0), (0.5, 0, 5, 0, -86_400), (0.5, 0, 5, 0, Int.min),
            ]
            for (eps, delta, limit, deltaLimit, period) in cases {
                do {
                    _ = try await node.charge(purpose: "analytics", epsilon: eps, delta: delta, limit: limit, deltaLimit: deltaLimit,
                                              periodSeconds: period, audit: record("x"))
                    Issue.record("charged epsilon \(eps) delta \(delta) limit \(limit) delta limit \(deltaLimit) period \(period)")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .usage || e.kind == .configuration)
                }
            }
            await #expect(throws: PostgresStoreError.self) {
                _ = try await node.charge(purpose: "", epsilon: 0.5, limit: 5, periodSeconds: 86_400, audit: record("x"))
            }
            #expect(try await db.count("SELECT count(*) FROM profilevault.dp_budget") == 0)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == 0)
            await node.close()
        }
    }

    /// Delta is charged beside epsilon and refused when it does not fit; a window charged under
    /// another period length still counts (as the SQLite ledger).
    @Test func deltaAndPeriodsFollowTheSQLiteLedger() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            let s = try await node.charge(purpose: "training", epsilon: 0.5, delta: 6e-7, limit: 10, deltaLimit: 1e-6,
                                          periodSeconds: 86_400, audit: record("t", "train", purpose: "training"))
            #expect(s.deltaSpent == 6e-7 && s.spent == 0.5)
            do {
                _ = try await node.charge(purpose: "training", epsilon: 0.5, delta: 6e-7, limit: 10, deltaLimit: 1e-6,
                                          periodSeconds: 86_400, audit: record("t", "train", purpose: "training"))
                Issue.record("a delta past its limit was granted")
            } catch let x as BudgetExceeded {
                #expect(x.deltaExceeded && x.state.spent == 0.5)
            }
            // A shorter period whose window overlaps the day's row counts that row in full.
            do {
                _ = try await node.charge(purpose: "training", epsilon: 9.6, limit: 10, deltaLimit: 1e-6, periodSeconds: 3_600,
                                          audit: record("t", "train", purpose: "training"))
                Issue.record("a changed period reset the budget")
            } catch let x as BudgetExceeded {
                #expect(!x.deltaExceeded && x.state.spent == 0.5)
            }
            _ = try await node.charge(purpose: "training", epsilon: 9.5, limit: 10, deltaLimit: 1e-6, periodSeconds: 3_600,
                                      audit: record("t", "train", purpose: "training"))
            // The day's delta counts in the hour's window too: pure DP is refused there now.
            do {
                _ = try await node.charge(purpose: "training", epsilon: 0.001, limit: 100, periodSeconds: 3_600, audit: record("t", "train", purpose: "training"))
                Issue.record("the day's delta was forgotten by the hour's window")
            } catch let x as BudgetExceeded {
                #expect(x.deltaExceeded)
            }
            #expect(try await node.budgetState(purpose: "training", limit: 10, periodSeconds: 86_400).spent == 10)
            // The granted entry carries the epsilon charged and the delta, as on SQLite.
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE seq = 1 AND entry LIKE '%delta 6e-07%' AND entry LIKE '%\"unmapped.epsilon\":\"0.5\"%'") == 1)
            #expect(try await node.verifyAudit().ok)
            await node.close()
        }
    }

    /// Values are bound, never spliced: a purpose, actor or request id written as SQL is stored
    /// and audited as text, and the tables are intact.
    @Test func valuesAreBoundNeverSpliced() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            let evil = "x'); DROP TABLE profilevault.audit_log; -- $1 \\ \u{0}?"
            let r = AuditRecord(actor: evil, role: evil, action: evil, activity: .other, purpose: evil, fields: [evil], requestID: evil, detail: evil)
            _ = try await node.charge(purpose: "p'; TRUNCATE profilevault.dp_budget; --", epsilon: 0.5, limit: 1, periodSeconds: 60, audit: r)
            try await node.audit([r])
            #expect(try await db.count("SELECT count(*) FROM profilevault.dp_budget WHERE purpose = 'p''; TRUNCATE profilevault.dp_budget; --'") == 1)
            let v = try await node.verifyAudit()
            #expect(v.ok && v.entries == 2, "\(v)")
            await node.close()
        }
    }

    /// The delta units are the SQLite ledger's, to the unit.
    @Test func deltaUnitsMatchTheSQLiteLedger() {
        for d in [0, 1e-15, 5e-16, 1e-6, 6e-7, 1.2e-6, 0.3, 1, 1.0000001, -1e-9, .nan, .infinity, 3.3e-10, 1e-16] {
            #expect(PostgresDeltaUnits.charge(d) == DeltaUnits.charge(d), "charge \(d)")
            #expect(PostgresDeltaUnits.limit(d) == DeltaUnits.limit(d), "limit \(d)")
        }
    }

    /// The entries are the SQLite store's, byte for byte: the same record at the same sequence
    /// and time gives the same canonical text and hash.
    @Test func entriesAreTheSQLiteStoresFormat() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            let r = AuditRecord(actor: "alice", role: "analyst", action: "get", activity: .read, purpose: "support",
                                subject: Array(repeating: 7, count: 32), fields: ["email"], requestID: "req-1", counts: [("rows", 3)])
            try await node.audit([r])
            let row = try await node.transaction("read") { conn in
                try await node.rows(conn, "SELECT time, entry, prev_hash, hash, subject FROM profilevault.audit_log WHERE seq = 1").first
            }
            let (time, text, prev, hash, subject) = try #require(row).decode((Int64, String, ByteBuffer, ByteBuffer, ByteBuffer?).self)
            let expected = r.entry(sequence: 1, timeMillis: time)
            #expect(Array(text.utf8) == expected.canonicalBytes())
            #expect(prev.bytes == AuditLog.genesis)
            #expect(hash.bytes == AuditLog.chain(previous: AuditLog.genesis, entry: expected))
            #expect(subject?.bytes == Array(repeating: 7, count: 32))
            await node.close()
        }
    }
}
