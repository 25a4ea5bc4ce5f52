import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres
@testable import VaultStore

/// The one-statement append (`PostgresEngine.appendOnKnownHead`): a process appends on the
/// head it committed last in one round trip, and only while that head is still the cluster's,
/// unedited. Every edit the locked path finds must still be found, and nothing is appended on it.
@Suite(.serialized) struct PostgresAuditOneStatementTests {
    /// One node alone: every group commit after the first is one statement; the chain
    /// verifies and its times never go back.
    @Test func appendsAfterTheFirstTakeOneStatement() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            for i in 0..<10 { try await node.audit([record("a\(i)"), record("b\(i)")]) }
            #expect(node.knownHeadAppends.withLock { $0 } == 9)
            #expect(node.auditCommitStats == (entries: 20, transactions: 10))
            let v = try await node.verifyAudit()
            #expect(v.ok && v.entries == 20, "\(v)")
            #expect(try await db.count("""
                SELECT count(*) FROM profilevault.audit_log a JOIN profilevault.audit_log b ON b.seq = a.seq + 1 WHERE b.time < a.time
                """) == 0)
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_checkpoints") == 10)
            await node.close()
        }
    }

    /// The reviewer's clock attack: a node whose clock jumped an hour ahead (a resumed VM, a bad
    /// NTP step) must not stamp the cluster's chain with its time. Its one-statement append
    /// misses (the time is checked against the server's clock in the statement) and the
    /// locked path stamps the server's clock; entry times stay near the server's.
    @Test func aNodeWithAClockAheadCannotPushTheChainsTimes() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            for i in 0..<2 { try await node.audit([record("a\(i)")]) }
            #expect(node.knownHeadAppends.withLock { $0 } == 1)
            node.serverClockOffset.withLock { $0 += 3_600_000 }
            try await node.audit([record("ahead")])
            #expect(node.knownHeadAppends.withLock { $0 } == 1, "the one-statement append took a time an hour ahead of the server")
            #expect(try await db.count("""
                SELECT count(*) FROM profilevault.audit_log
                WHERE time > floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + 60000
                """) == 0)
            let v = try await node.verifyAudit()
            #expect(v.ok && v.entries == 3, "\(v)")
            await node.close()
        }
    }

    /// The owner (past the triggers) edits what the next append builds on, after the node
    /// committed the head it remembers: the entry's text, its checkpoint's signature or link,
    /// an entry or a checkpoint slipped in beyond the head, the head's time. Each is found as
    /// the locked path finds it (an integrity error), and nothing is appended.
    @Test func anEditedHeadIsFoundAndNothingIsAppended() async throws {
        let attacks: [(String, [String])] = [
            ("the head entry's text", [
                "UPDATE profilevault.audit_log SET entry = replace(entry, '\"actor.user.name\":\"a2', '\"actor.user.name\":\"zz') WHERE seq = 3"]),
            ("the head entry's text and hash with the head moved along", [
                "UPDATE profilevault.audit_log SET entry = replace(entry, 'a2', 'zz') WHERE seq = 3",
                "UPDATE profilevault.audit_log SET hash = sha256(prev_hash || convert_to(entry, 'UTF8')) WHERE seq = 3",
                "UPDATE profilevault.audit_head SET hash = (SELECT hash FROM profilevault.audit_log WHERE seq = 3)"]),
            ("the checkpoint's signature", [
                "UPDATE profilevault.audit_checkpoints SET signature = decode(repeat('00', 64), 'hex') WHERE seq = 3"]),
            ("the checkpoint's link", [
                "UPDATE profilevault.audit_checkpoints SET prev_seq = 1 WHERE seq = 3"]),
            ("an entry beyond the head", [
                "INSERT INTO profilevault.audit_log(seq, time, entry, prev_hash, hash) SELECT 4, time, entry, hash, hash FROM profilevault.audit_log WHERE seq = 3"]),
            ("a checkpoint beyond the head", [
                "INSERT INTO profilevault.audit_checkpoints(seq, hash, signature, time) SELECT 4, hash, signature, time FROM profilevault.audit_checkpoints WHERE seq = 3"]),
            ("the head's time", [
                "UPDATE profilevault.audit_head SET time = time + 1"]),
        ]
        for (what, statements) in attacks {
            try await TestDatabase.with { db in
                try await db.initialize()
                let node = try db.nodeEngine()
                for i in 0..<3 { try await node.audit([record("a\(i)")]) }
                #expect(node.knownHeadAppends.withLock { $0 } == 2)
                try await db.superuser(["SET session_replication_role = replica"] + statements)
                let before = try await db.count("SELECT count(*) FROM profilevault.audit_log")
                do {
                    try await node.audit([record("after")])
                    // The head's time alone is not something lockHead checks against the entry;
                    // the append must then at least not go through the one statement.
                    if what != "the head's time" { Issue.record("\(what): an append built on an edited head") }
                    #expect(node.knownHeadAppends.withLock { $0 } == 2, "\(what)")
                } catch let e as PostgresStoreError {
                    #expect(e.kind == .integrity, "\(what): \(e)")
                    #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log") == before, "\(what)")
                    #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%after%'") == 0, "\(what)")
                }
                await node.close()
            }
        }
    }

    /// The head row's trigger runs after the statement (migration 16) and still refuses, for
    /// the service role, a head moved in one statement onto an entry with another hash, onto
    /// no entry, or back in time; a correct one-statement move goes through.
    @Test func theHeadTriggerStillRefusesABadMoveInOneStatement() async throws {
        try await TestDatabase.with { db in
            try await db.initialize()
            let node = try db.nodeEngine()
            try await node.audit([record("a")])
            await node.close()
            let insert = """
                WITH e AS (INSERT INTO profilevault.audit_log(seq, time, entry, prev_hash, hash)
                           SELECT seq + 1, time, '{}', hash, decode(repeat('cd', 32), 'hex') FROM profilevault.audit_head RETURNING seq)
                """
            for sql in [
                insert + " UPDATE profilevault.audit_head SET seq = seq + 1, hash = decode(repeat('ab', 32), 'hex') WHERE EXISTS (SELECT 1 FROM e)",
                insert + " UPDATE profilevault.audit_head SET seq = seq + 2, hash = decode(repeat('cd', 32), 'hex') WHERE EXISTS (SELECT 1 FROM e)",
                insert + " UPDATE profilevault.audit_head SET seq = seq + 1, hash = decode(repeat('cd', 32), 'hex'), time = time - 1 WHERE EXISTS (SELECT 1 FROM e)",
            ] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.sqlState == "P0001", "\(sql): \(e?.message ?? "succeeded")")
            }
            #expect(try await db.count("SELECT seq FROM profilevault.audit_head") == 1)
            let ok = insert + " UPDATE profilevault.audit_head SET seq = seq + 1, hash = decode(repeat('cd', 32), 'hex') WHERE EXISTS (SELECT 1 FROM e)"
            #expect(try await db.attempt(ok, as: db.node, password: db.nodePassword) == nil)
            #expect(try await db.count("SELECT seq FROM profilevault.audit_head") == 2)
        }
    }

    /// Audited gets as the Vault runs them (a read, then its entry through the group commit)
    /// from 8 threads on each of two nodes, while a third appends in transactions of its own
    /// (the locked path, as ingest does): every entry is in the one chain, which verifies.
    @Test func concurrentGetsOnTwoNodesKeepOneVerifyingChain() async throws {
        try await ProfileCluster.with { cluster in
            let nodes = [try await cluster.node(pool: 4), try await cluster.node(pool: 4)]
            let profiles = try cluster.write("p.csv", Rows.csv(0..<20))
            _ = try await onThread { try nodes[0].ingestProfiles(.file(profiles), options: IngestOptions()) }
            let writer = try cluster.db.nodeEngine(pool: 1)
            let pseudonyms = try (0..<20).map { try nodes[0].pseudonym(ofCustomerID: Rows.id($0)) }
            let fields: Set<String> = ["email", "country"]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<2 {
                    for t in 0..<8 {
                        group.addTask {
                            try await onThread {
                                for i in 0..<10 {
                                    let p = pseudonyms[(t * 10 + i) % 20]
                                    _ = try nodes[n].readProfile(pseudonym: p, fields: fields, consentPurpose: nil)
                                    try nodes[n].audit([AuditRecord(actor: "n\(n)t\(t)", role: "support", action: "profile.read", activity: .read,
                                                                    purpose: "customer_support", subject: p, requestID: "g\(i)")])
                                }
                            }
                        }
                    }
                }
                group.addTask {
                    for i in 0..<20 {
                        try await writer.transaction("appending") { conn in
                            try await writer.appendLocked(conn, [record("locked\(i)")])
                        }
                    }
                }
                try await group.waitForAll()
            }
            let v = try await writer.verifyAudit()
            #expect(v.ok && v.entries == 2 * 8 * 10 + 20, "\(v)")
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%profile.read%'") == 160)
            await writer.close()
        }
    }
}
