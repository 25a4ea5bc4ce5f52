import DifferentialPrivacy
import Foundation
import GRDB
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Key custody, the policy ledger, the audit wrappers and exports, the budget accountant and
/// the model-artifact MAC of `PostgresProfiles` (issue 18 §2), against the SQLite store on the
/// same inputs and under attack.
@Suite(.serialized) struct PostgresKeysPolicyTests {
    /// A node opened with `keyring` (which must already be recorded in the store).
    static func node(_ cluster: ProfileCluster, keyring: Keyring, auditKey: Ed25519PrivateKey = testAuditKey, pool: Int = 4) async throws -> PostgresProfiles {
        let engine = try PostgresEngine(location: cluster.db.node, password: cluster.db.nodePassword, auditSigningKey: auditKey, maximumConnections: pool)
        do { return try await PostgresProfiles.open(engine: engine, schema: repositorySchema, keyring: keyring) } catch {
            await engine.close()
            throw error
        }
    }

    static func sqlite(_ cluster: ProfileCluster, _ name: String, keyring: Keyring? = nil) throws -> ProfileStore {
        let dir = cluster.dir + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring ?? cluster.keyring, schema: repositorySchema, policyVersion: "test")
    }

    /// Rotation on both engines from the same file: the same count re-wrapped, the same key
    /// status, the same audit actions. Then on PostgreSQL, node A re-wraps in small batches
    /// while node B (already on the rotated keyring) ingests new customers and re-ingests the
    /// old ones with changed names: no subject is lost, no DEK is left under version 1 (a node
    /// whose keyring has version 1 retired, so its KEK cannot even be derived, reads every
    /// profile), and every re-ingested profile holds its new value (a re-wrap of the old key
    /// never overwrote the key of a re-ingest).
    @Test func rotationWithConcurrentIngestLosesNoSubject() async throws {
        try await ProfileCluster.with { cluster in
            var options = IngestOptions()
            options.batchSize = 40
            options.audit = context
            let o = options
            let first = try cluster.write("first.csv", Rows.csv(0..<200))
            let a = try await cluster.node()
            _ = try await onThread { try a.ingestProfiles(.file(first), options: o) }
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            _ = try sqlite.ingestProfiles(.file(first), options: o)

            var rotating = cluster.keyring
            #expect(rotating.addVersion() == 2)
            let rotated = rotating
            // A node cannot open with a keyring whose active version the store has not recorded.
            await #expect(throws: (any Error).self) { _ = try await Self.node(cluster, keyring: rotated) }
            try await onThread { try a.adopt(keyring: rotated) }
            try sqlite.adopt(keyring: rotated)
            let b = try await Self.node(cluster, keyring: rotated)

            let (ss, ps) = (try sqlite.keyStatus(keyring: rotated), try await onThread { try a.keyStatus(keyring: rotated) })
            #expect(ps.active == ss.active && ps.versions == ss.versions && ps.retired == ss.retired && ps.identityVersion == ss.identityVersion)
            #expect(ps.subjectsPerVersion == ss.subjectsPerVersion && ps.subjectsPerVersion == [1: 200])

            // B's file: 100 new customers and the first 200 again with new names.
            var rows = (200..<300).map(Rows.row)
            for i in 0..<200 {
                var r = Rows.row(i)
                r[2] = "Renamed \(i)"
                rows.append(r)
            }
            let second = try cluster.write("second.csv", ([Rows.header] + rows.map(Rows.line)).joined(separator: "\n") + "\n")
            var bo = IngestOptions()
            bo.batchSize = 10
            bo.audit = context
            let bopts = bo
            let progress = ProgressLog()
            async let rewrapped = onThread { try a.rewrapAll(batchSize: 7, audit: context, progress: { progress.add($0) }) }
            async let ingested = onThread { try b.ingestProfiles(.file(second), options: bopts) }
            let (n, report) = try await (rewrapped, ingested)
            #expect(report.inserted == 100 && report.updated == 200)
            #expect(n <= 200 && n >= 0)
            #expect(progress.values == progress.values.sorted() && (progress.values.last ?? 0) == n)
            #expect(try await onThread { try a.subjects(wrappedWith: 1) } == 0)
            #expect(try await onThread { try b.subjects(wrappedWith: 2) } == 300)
            // A rewrap after the race has nothing left to do, as on SQLite after its rewrap.
            #expect(try sqlite.rewrapAll(batchSize: 7, audit: context) == 200)
            #expect(try sqlite.rewrapAll(batchSize: 7, audit: context) == 0)
            #expect(try await onThread { try a.rewrapAll(batchSize: 7, audit: context, progress: nil) } == 0)

            // Version 1 retired in the keyring: its KEK cannot be derived, every profile reads.
            var retired = rotated
            try retired.retire(1)
            let c = try await Self.node(cluster, keyring: retired)
            let all = Set(repositorySchema.fields.map(\.name))
            for i in 0..<300 {
                let p = try #require(try await onThread { try c.profile(customerID: Rows.id(i), fields: all) }, "customer \(i)")
                let name = p.fields.first { $0.name == "full_name" }?.value
                #expect(name == .text(i < 200 ? "Renamed \(i)" : Rows.row(i)[2]), "customer \(i)")
            }
            // The rewrap entries count exactly what was re-wrapped, and the chain verifies.
            let counted = try await TestDatabase.strings(cluster.db, """
                SELECT coalesce(sum((entry::jsonb->'unmapped.counts'->>'rewrapped')::bigint), 0)::text FROM profilevault.audit_log
                WHERE entry::jsonb->>'api.operation' = 'keys.rewrap'
                """)
            #expect(counted == [String(n)])
            #expect(try await onThread { try c.verifyAudit(expectHead: nil) }.ok)
            for e in [a, b, c] { try await onThread { try e.close() } }
        }
    }

    /// The race a compare-and-set on the key version alone loses, made deterministic: a node
    /// still on the old keyring (active version 1) re-ingests customer X with a new data key
    /// between the re-wrap's read of X and its write. A third session holds X's row, so the
    /// ingest waits on it; the re-wrap reads X (old key) and then waits for the ingest's
    /// subjects lock; the session lets go, the ingest commits X's new key under version 1, and
    /// the re-wrap's write must not replace it with the re-wrap of X's old key (X's PII would
    /// no longer decrypt). Its second pass then re-wraps X's new key: nothing is left under
    /// version 1 and X reads with its new name.
    @Test func aReingestBetweenTheRewrapsReadAndWriteKeepsItsKey() async throws {
        try await ProfileCluster.with { cluster in
            var options = IngestOptions()
            options.audit = context
            let o = options
            let a = try await cluster.node()
            _ = try await onThread { try a.ingestProfiles(.file(try cluster.write("p.csv", Rows.csv(0..<5))), options: o) }
            var rotating = cluster.keyring
            rotating.addVersion()
            let rotated = rotating
            try await onThread { try a.adopt(keyring: rotated) }
            let old = try await cluster.node()   // the old keyring: new keys under version 1
            var x = Rows.row(2)
            x[2] = "Renamed Two"
            let again = try cluster.write("x.csv", Rows.header + "\n" + Rows.line(x) + "\n")
            let px = AuditLog.hex(try a.pseudonym(ofCustomerID: Rows.id(2)))
            let db = cluster.db
            func waiters(_ n: Int64) async throws {
                for _ in 0..<600 {
                    if try await db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") >= n { return }
                    try await Task.sleep(nanoseconds: 100_000_000)
                }
                Issue.record("\(n) sessions never waited for a lock")
            }
            let holder = try db.ownerEngine(pool: 1)
            let (rewrap, ingest) = try await holder.transaction("holding customer X") { conn in
                try await holder.exec(conn, PostgresQuery(unsafeSQL: "SELECT 1 FROM profilevault.subjects WHERE pseudonym = '\\x\(px)'::bytea FOR UPDATE"))
                let ingest = Task { try await onThread { try old.ingestProfiles(.file(again), options: o) } }
                try await waiters(1)
                let rewrap = Task { try await onThread { try a.rewrapAll(batchSize: 100, audit: context, progress: nil) } }
                try await waiters(2)
                return (rewrap, ingest)
            }
            await holder.close()
            #expect(try await ingest.value.updated == 1)
            #expect(try await rewrap.value == 5)   // 4 in the first pass, X's new key in the second
            #expect(try await onThread { try a.subjects(wrappedWith: 1) } == 0)
            var retired = rotated
            try retired.retire(1)
            let c = try await Self.node(cluster, keyring: retired)
            let name = try await onThread { try c.profile(customerID: Rows.id(2), fields: ["full_name"]) }?.fields.first?.value
            #expect(name == .text("Renamed Two"))
            for e in [a, old, c] { try await onThread { try e.close() } }
        }
    }

    /// Retiring: the node records it (with its audit entry); nobody, not the service role and
    /// not the owner, can un-retire the version, change a key check, or delete a version; the
    /// service role cannot even write those columns. A keyring whose version differs from a
    /// recorded key check is refused by adopt.
    @Test func aRetiredVersionCannotBeUnretired() async throws {
        try await ProfileCluster.with { cluster in
            var rotating = cluster.keyring
            rotating.addVersion()
            let rotated = rotating
            let a = try await cluster.node()
            try await onThread { try a.adopt(keyring: rotated) }
            try await onThread { try a.markRetired(1, audit: context) }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.key_versions WHERE version = 1 AND retired") == 1)
            #expect(try await onThread { try a.status() }.keyVersions == [2])
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            try sqlite.adopt(keyring: rotated)
            try sqlite.markRetired(1, audit: context)
            #expect(try sqlite.status().keyVersions == [2])
            // The same audit entry on both engines (its action and detail).
            let pgEntry = try await TestDatabase.strings(cluster.db, "SELECT entry FROM profilevault.audit_log ORDER BY seq DESC LIMIT 1")
            let sqliteEntry = try await sqlite.pool.read { db in try String.fetchOne(db, sql: "SELECT entry FROM audit ORDER BY seq DESC LIMIT 1") }
            func strip(_ s: String?) throws -> [String: String] {
                guard case .object(let pairs)? = try s.map(JSONValue.parse) else { return [:] }
                var out: [String: String] = [:]
                for (k, v) in pairs where k != "time" && k != "time_dt" { out[k] = v.canonicalString() }
                return out
            }
            #expect(try strip(pgEntry.first) == (try strip(sqliteEntry)))
            #expect(try strip(pgEntry.first)["api.operation"] == "\"keys.retire\"")
            #expect(try strip(pgEntry.first)["status_detail"] == "\"key version 1 retired\"")

            let db = cluster.db
            // The service role (the node's login role), with its own grants.
            for sql in [
                "UPDATE profilevault.key_versions SET retired = false WHERE version = 1",
                "INSERT INTO profilevault.key_versions(version, key_check, added_at) VALUES (1, '\\x00', 0) ON CONFLICT (version) DO UPDATE SET retired = false",
            ] {
                let e = try #require(try await db.attempt(sql, as: db.node, password: db.nodePassword), "\(sql)")
                #expect(e.sqlState == "P0001" && e.message.contains("only ever added or retired"), "\(sql): \(e)")
            }
            for sql in [
                "UPDATE profilevault.key_versions SET key_check = '\\x00' WHERE version = 2",
                "UPDATE profilevault.key_versions SET version = 7 WHERE version = 2",
                "DELETE FROM profilevault.key_versions WHERE version = 1",
                "TRUNCATE profilevault.key_versions",
            ] {
                let e = try #require(try await db.attempt(sql, as: db.node, password: db.nodePassword), "\(sql)")
                #expect(e.sqlState == "42501" && e.kind == .denied, "\(sql): \(e)")
            }
            // The owner too (it holds every privilege): the trigger refuses.
            for sql in [
                "UPDATE profilevault.key_versions SET retired = false WHERE version = 1",
                "UPDATE profilevault.key_versions SET key_check = '\\x00' WHERE version = 2",
                "DELETE FROM profilevault.key_versions WHERE version = 1",
            ] {
                let e = try #require(try await db.attempt(sql, as: db.owner, password: db.ownerPassword), "\(sql)")
                #expect(e.sqlState == "P0001", "\(sql): \(e)")
            }
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.key_versions WHERE version = 1 AND retired") == 1)
            // Retiring again changes nothing and is still recorded (as on SQLite).
            try await onThread { try a.markRetired(1, audit: context) }
            // A keyring whose version 3 differs from the one another node recorded: refused.
            var mine = rotated
            mine.addVersion()
            var theirs = rotated
            theirs.addVersion()
            let (m, t) = (mine, theirs)
            try await onThread { try a.adopt(keyring: t) }
            do {
                try await onThread { try a.adopt(keyring: m) }
                Issue.record("a keyring with another version 3 was adopted")
            } catch let e as VaultError {
                #expect(e.kind == .integrity && e.message.contains("version 3"))
            }
            // The grants stay what init's check accepts.
            try await db.initialize()
            #expect(try await onThread { try a.verifyAudit(expectHead: nil) }.ok)
            try await onThread { try a.close() }
        }
    }

    /// The policy ledger: the same records and refusals as SQLite; two nodes recording on top
    /// of the same record at the same time (both held at the policy lock by a third session,
    /// so they really are concurrent): exactly one wins, the other gets SQLite's error; the
    /// accountant of a process that loaded the superseded policy is refused on both engines.
    @Test func twoNodesRecordingAPolicyAtOnceOneWins() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            @Sendable func policy(_ v: String) -> PolicyRecord {
                PolicyRecord(sequence: 0, version: v, sha256: String(repeating: String(v.prefix(1)), count: 64), schemaSHA256: String(repeating: "5", count: 64),
                             appliedAtMillis: 0, actor: "admin", role: "admin", summary: "{\"v\":\"\(v)\"}", changes: "[]")
            }
            let audit = context.record("policy.apply", .update, detail: "policy")
            #expect(try await onThread { try a.latestPolicy() } == nil)
            let p1 = try await onThread { try a.recordPolicy(policy("1"), previous: nil, periods: ["analytics": 86_400], audit: audit) }
            let s1 = try sqlite.recordPolicy(policy("1"), previous: nil, periods: ["analytics": 86_400], audit: audit)
            #expect(p1.sequence == 1 && s1.sequence == 1 && p1.appliedAtMillis > 0)
            // A stale `previous`: the same refusal on both engines.
            var messages: [String] = []
            do { _ = try sqlite.recordPolicy(policy("x"), previous: nil, periods: [:], audit: audit); Issue.record("a stale previous was accepted") } catch let e as VaultError {
                #expect(e.kind == .configuration)
                messages.append(e.message)
            }
            do { _ = try await onThread { try a.recordPolicy(policy("x"), previous: nil, periods: [:], audit: audit) }; Issue.record("a stale previous was accepted") } catch let e as VaultError {
                #expect(e.kind == .configuration)
                messages.append(e.message)
            }
            #expect(messages.count == 2 && messages[0] == messages[1])

            // The race: a third session holds the policy lock until both nodes wait for it.
            let db = cluster.db
            func waiters(_ n: Int64) async throws {
                for _ in 0..<600 {
                    if try await db.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") >= n { return }
                    try await Task.sleep(nanoseconds: 100_000_000)
                }
                Issue.record("\(n) sessions never waited for a lock")
            }
            let holder = try db.ownerEngine(pool: 1)
            let (ra, rb) = try await holder.transaction("holding the policy lock") { conn in
                try await holder.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresEngine.lockNamespacePolicy), 0)")
                let ra = Task { try await onThread { try a.recordPolicy(policy("2"), previous: 1, periods: [:], audit: audit) } }
                try await waiters(1)
                let rb = Task { try await onThread { try b.recordPolicy(policy("3"), previous: 1, periods: [:], audit: audit) } }
                try await waiters(2)
                return (ra, rb)
            }
            await holder.close()
            var won: [PolicyRecord] = [], lost: [VaultError] = []
            for t in [ra, rb] {
                do { won.append(try await t.value) } catch let e as VaultError { lost.append(e) }
            }
            #expect(won.count == 1 && lost.count == 1)
            #expect(won.first?.sequence == 2)
            #expect(lost.first?.kind == .configuration && lost.first?.message == messages.first)
            let history = try await onThread { try b.policyHistory() }
            #expect(history.map(\.sequence) == [1, 2] && history.last == won.first)
            #expect(try await onThread { try a.latestPolicy() } == won.first)
            // Status shows the policy in force, as SQLite's does.
            let st = try await onThread { try b.status() }
            #expect(st.policy == won.first && st.policyVersion == won.first?.version)
            // Each record's audit entry committed with it: 2 records, 2 entries, and no more.
            #expect(try await db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%policy.apply%'") == 2)
            // The policy each record was diffed against is in force: an accountant of a process
            // that loaded policy 1 may not charge any more (the same refusal on both engines).
            _ = try sqlite.recordPolicy(won[0], previous: 1, periods: [:], audit: audit)
            let e = try #require(Epsilon(0.5))
            let stale = (sha256: p1.sha256, schemaSHA256: p1.schemaSHA256)
            let current = (sha256: won[0].sha256, schemaSHA256: won[0].schemaSHA256)
            var refusals: [String] = []
            for accountant in [sqlite.budgetAccountant(audit: record("x"), policy: stale), a.budgetAccountant(audit: record("x"), policy: stale)] {
                do {
                    _ = try await onThread { try accountant.spend(purpose: "analytics", epsilon: e, limit: 10, periodSeconds: 86_400) }
                    Issue.record("a charge under a superseded policy")
                } catch let v as VaultError {
                    #expect(v.kind == .configuration)
                    refusals.append(v.message)
                }
            }
            #expect(refusals.count == 2 && refusals[0] == refusals[1])
            let granted = try await onThread { try a.budgetAccountant(audit: record("x"), policy: current).spend(purpose: "analytics", epsilon: e, limit: 10, periodSeconds: 86_400) }
            #expect(granted.spent == e.chargedValue)
            try await onThread { try a.close() }
            try await onThread { try b.close() }
        }
    }

    /// The export of the PostgreSQL chain is the SQLite store's format byte for byte: the
    /// same rows copied into a SQLite store (with the same signing key) export to the same
    /// bytes, but for the head record's signing time; it verifies with the export verifier
    /// (`profilectl audit verify --file`), in JSON Lines and CSV, for slices too. A superuser's
    /// edit of one audit row is found at its sequence number: by verifyAudit, by the export
    /// (which refuses to sign it), and by the verifier of an export taken before and edited.
    @Test func theExportIsSQLitesAndTamperingIsFoundAtItsEntry() async throws {
        try await ProfileCluster.with { cluster in
            let auditKey = try Ed25519PrivateKey(seed: cluster.keyring.derive(.auditSigning, version: 1))
            let nodes = [try await Self.node(cluster, keyring: cluster.keyring, auditKey: auditKey),
                         try await Self.node(cluster, keyring: cluster.keyring, auditKey: auditKey)]
            // 40 entries from two nodes and several threads (group commits of several entries:
            // not every entry has its own checkpoint).
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<40 {
                    let n = nodes[i % 2]
                    group.addTask { try await onThread { try n.audit([record("node\(i % 2)", request: "r\(i)"), record("again", request: "r\(i)b")]) } }
                }
                try await group.waitForAll()
            }
            let pg = nodes[0]
            #expect(pg.auditPublicKey == auditKey.publicKey)
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            #expect(sqlite.auditPublicKey == pg.auditPublicKey)
            // Copy the chain into the SQLite store, row for row.
            let entries = try await TestDatabase.strings(cluster.db, """
                SELECT json_build_array(seq, time, entry, encode(prev_hash, 'hex'), encode(hash, 'hex'))::text FROM profilevault.audit_log ORDER BY seq
                """)
            let checkpoints = try await TestDatabase.strings(cluster.db, """
                SELECT json_build_array(seq, encode(hash, 'hex'), encode(signature, 'hex'), time, checkpoint_time, prev_seq, encode(prev_digest, 'hex'))::text
                FROM profilevault.audit_checkpoints ORDER BY seq
                """)
            #expect(entries.count == 80 && checkpoints.count >= 2 && checkpoints.count <= 40)
            @Sendable func unhex(_ s: String) -> Data { Data(stride(from: 0, to: s.count, by: 2).map { UInt8(s.dropFirst($0).prefix(2), radix: 16) ?? 0 }) }
            try await sqlite.pool.write { db in
                for e in entries {
                    let a = try JSONSerialization.jsonObject(with: Data(e.utf8)) as? [Any] ?? []
                    try db.execute(sql: "INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (?, ?, ?, ?, ?, NULL)",
                                   arguments: [(a[0] as? NSNumber)?.int64Value, (a[1] as? NSNumber)?.int64Value, a[2] as? String,
                                               unhex(a[3] as? String ?? ""), unhex(a[4] as? String ?? "")])
                }
                for c in checkpoints {
                    let a = try JSONSerialization.jsonObject(with: Data(c.utf8)) as? [Any] ?? []
                    try db.execute(sql: "INSERT INTO audit_checkpoints(seq, hash, signature, time, checkpoint_time, prev_seq, prev_digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   arguments: [(a[0] as? NSNumber)?.int64Value, unhex(a[1] as? String ?? ""), unhex(a[2] as? String ?? ""),
                                               (a[3] as? NSNumber)?.int64Value, (a[4] as? NSNumber)?.int64Value, (a[5] as? NSNumber)?.int64Value,
                                               unhex(a[6] as? String ?? "")])
                }
            }
            #expect(try sqlite.verifyAudit(expectHead: nil).ok)
            let times = try await TestDatabase.strings(cluster.db, "SELECT time::text FROM profilevault.audit_log WHERE seq IN (11, 60) ORDER BY seq").compactMap { Int64($0) }
            /// The export without its head record's `signed_at` (the only value that differs).
            func comparable(_ bytes: [UInt8]) -> String {
                String(decoding: bytes, as: UTF8.self).replacing(/"signed_at":"[^"]*"/, with: "")
            }
            for format in AuditExportFormat.allCases {
                for (since, until) in [(nil, nil), (times.first, times.last), (Int64.max - 1, nil), (nil, Int64(0))] as [(Int64?, Int64?)] {
                    let p = try await onThread { try pg.exportAudit(sinceMillis: since, untilMillis: until, format: format) }
                    let s = try sqlite.exportAudit(sinceMillis: since, untilMillis: until, format: format)
                    #expect(p.entries == s.entries && p.head == s.head, "\(format) \(String(describing: since))")
                    #expect(comparable(p.bytes) == comparable(s.bytes), "\(format) \(String(describing: since))")
                    if format == .jsonl {
                        let path = cluster.dir + "/export-\(UUID().uuidString).jsonl"
                        try Data(p.bytes).write(to: URL(fileURLWithPath: path))
                        let v = try AuditExportVerifier.verify(path: path, publicKey: pg.auditPublicKey, expectHead: nil)
                        #expect(v.ok && v.entries == p.entries, "\(v)")
                    }
                }
            }
            // Into a file (an OutputFile, as `audit export --out` writes it).
            let exported = cluster.dir + "/audit.jsonl"
            let r = try await onThread {
                try nodes[1].exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl,
                                         to: try OutputFile(path: exported, force: false, protecting: [], what: "the audit export"))
            }
            #expect(r.entries == 80)
            #expect(try AuditExportVerifier.verify(path: exported, publicKey: pg.auditPublicKey, expectHead: nil).ok)

            // A superuser edits entry 23 past the triggers.
            try await cluster.db.superuser([
                "SET session_replication_role = replica",
                "UPDATE profilevault.audit_log SET entry = regexp_replace(entry, '\"actor.user.name\":\"[a-z0-9]+\"', '\"actor.user.name\":\"evil\"') WHERE seq = 23",
            ])
            #expect(try await TestDatabase.strings(cluster.db, "SELECT entry FROM profilevault.audit_log WHERE seq = 23").first?.contains("evil") == true)
            let v = try await onThread { try nodes[1].verifyAudit(expectHead: nil) }
            #expect(!v.ok && v.firstBad == 23, "\(v)")
            do {
                _ = try await onThread { try pg.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl) }
                Issue.record("a tampered chain was exported")
            } catch let e as VaultError {
                #expect(e.kind == .integrity && e.message.contains("audit entry 23"), "\(e)")
            }
            // Nothing is left of a file export that failed.
            let refused = cluster.dir + "/refused.jsonl"
            await #expect(throws: VaultError.self) {
                _ = try await onThread {
                    try pg.exportAudit(sinceMillis: nil, untilMillis: nil, format: .csv,
                                       to: try OutputFile(path: refused, force: false, protecting: [], what: "the audit export"))
                }
            }
            #expect(!FileManager.default.fileExists(atPath: refused))
            // The export taken before, edited the same way: the verifier finds entry 23.
            var lines = try String(contentsOfFile: exported, encoding: .utf8).split(separator: "\n").map(String.init)
            lines[22] = lines[22].replacing(/"actor.user.name":"[a-z0-9]+"/, with: "\"actor.user.name\":\"evil\"")
            #expect(lines[22].contains("evil") && lines[22].contains("\"metadata.sequence\":23"))
            try (lines.joined(separator: "\n") + "\n").write(toFile: exported, atomically: true, encoding: .utf8)
            let bad = try AuditExportVerifier.verify(path: exported, publicKey: pg.auditPublicKey, expectHead: nil)
            #expect(!bad.ok && bad.firstBad == 23, "\(bad)")
            for n in nodes { try await onThread { try n.close() } }
        }
    }

    /// Signed heads: the verified head, and a published-heads file that receives this node's
    /// heads once committed (and a head the chain holds: `--expect-head FILE` accepts it);
    /// after a rolled-back transaction nothing is published.
    @Test func publishedHeadsAreCommittedHeads() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            #expect(try await onThread { try a.signedAuditHead() } == nil)
            try await onThread { try b.audit([record("first")]) }
            let heads = cluster.dir + "/heads.jsonl"
            try await onThread { try a.publishAuditHeads(to: heads, protecting: []) }
            try await onThread { try a.audit([record("a1")]) }
            try await onThread { try b.audit([record("b1")]) }   // another node: not published here
            try await onThread { try a.audit([record("a2")]) }
            let published = try String(contentsOfFile: heads, encoding: .utf8).split(separator: "\n")
            #expect(published.count == 3)   // the head at publishing time, then a1's and a2's
            let head = try #require(try await onThread { try b.signedAuditHead() })
            #expect(head.sequence == 4 && published.last?.contains("\"seq\":4") == true)
            #expect(try await onThread { try b.verifyAudit(expectHead: heads) }.ok)
            // A transaction that appends and then fails publishes nothing.
            do {
                try await a.engine.transaction("failing on purpose") { conn in
                    try await a.engine.appendLocked(conn, [record("rolled back")])
                    throw PostgresStoreError(.usage, "test")
                }
                Issue.record("the transaction did not fail")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .usage)
            }
            #expect(try await onThread { try b.signedAuditHead() }?.sequence == 4)
            #expect(try String(contentsOfFile: heads, encoding: .utf8).split(separator: "\n").count == 3)
            // Never one of the protected files.
            let keyringPath = cluster.dir + "/keyring.json"
            try "x".write(toFile: keyringPath, atomically: true, encoding: .utf8)
            await #expect(throws: VaultError.self) {
                try await onThread { try a.publishAuditHeads(to: keyringPath, protecting: [ProtectedFile(keyringPath, "the keyring")]) }
            }
            try await onThread { try a.close() }
            try await onThread { try b.close() }
        }
    }

    /// Issue 18 §4's race through the accountant the Vault uses: three nodes, 30 plain threads
    /// (the synchronous API, as the HTTP service's dispatch threads call it) charging a budget
    /// that fits exactly 10: exactly 10 granted, 20 refused with SQLite's `BudgetExceeded`, the
    /// ledger holds exactly 10 charges, and the chain holds the 10 grants and no refusal (the
    /// Vault records a refusal, as on SQLite). The same charges one by one on SQLite and on
    /// PostgreSQL give the same states and the same refusals, delta included.
    @Test func theAccountantGrantsExactlyNOnThreeNodes() async throws {
        try await ProfileCluster.with { cluster in
            let nodes = [try await cluster.node(), try await cluster.node(), try await cluster.node()]
            let e = try #require(Epsilon(0.1))
            let limit = e.chargedValue * 10
            let outcomes = Outcomes()
            try await onThread {
                let group = DispatchGroup()
                for i in 0..<30 {
                    group.enter()
                    let node = nodes[i % 3]
                    Thread {
                        defer { group.leave() }
                        do {
                            _ = try node.budgetAccountant(audit: record("node\(i % 3)", request: "q\(i)"), policy: nil)
                                .spend(purpose: "analytics", epsilon: e, limit: limit, periodSeconds: 86_400)
                            outcomes.add("granted")
                        } catch let x as BudgetExceeded {
                            outcomes.add(x.deltaExceeded || x.state.limit != limit ? "odd refusal" : "refused")
                        } catch {
                            outcomes.add("error: \(error)")
                        }
                    }.start()
                }
                group.wait()
            }
            #expect(outcomes.count("granted") == 10 && outcomes.count("refused") == 20, "\(outcomes.all)")
            #expect(try await cluster.db.count("SELECT sum(spent_units)::bigint FROM profilevault.dp_budget") == 10 * Int64(e.chargeUnits))
            let state = try await onThread { try nodes[1].budgetState(purpose: "analytics", limit: limit, periodSeconds: 86_400) }
            #expect(state.spent == limit && state.left == 0)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"unmapped.epsilon\":\"0.09999942779541016\"%'") == 10)
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%denied%'") == 0)
            #expect(try await onThread { try nodes[2].verifyAudit(expectHead: nil) }.ok)

            // One by one against SQLite: the same states and refusals, epsilon and delta.
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            let steps: [(Double, Double, Double, Double)] = [(0.4, 0, 1, 0), (0.4, 1e-7, 1, 2e-7), (0.3, 1e-7, 1, 2e-7), (0.1, 1e-7, 1, 2e-7),
                                                            (0.1, 0, 1, 0), (0.2, 0, 1, 0), (0.05, 2, 1, 1), (0.05, 0, -1, 0)]
            for (i, (eps, delta, lim, dlim)) in steps.enumerated() {
                let epsilon = try #require(Epsilon(eps))
                let r = record("step\(i)", purpose: "research")
                @Sendable func run(_ a: any BudgetAccountant) -> String {
                    do {
                        let s = try a.spend(purpose: "research", epsilon: epsilon, delta: delta, limit: lim, deltaLimit: dlim, periodSeconds: 3_600)
                        return "granted \(s.spent) \(s.deltaSpent) \(s.limit) \(s.periodStart > 0)"
                    } catch let x as BudgetExceeded {
                        return "refused \(x.description)"
                    } catch let v as VaultError {
                        return "error \(v.kind) \(v.message)"
                    } catch {
                        return "other \(error)"
                    }
                }
                let s = run(sqlite.budgetAccountant(audit: r, policy: nil))
                let p = try await onThread { run(nodes[0].budgetAccountant(audit: r, policy: nil)) }
                #expect(p == s, "step \(i)")
            }
            let (ss, ps) = (try sqlite.budgetState(purpose: "research", limit: 1, deltaLimit: 2e-7, periodSeconds: 3_600),
                            try await onThread { try nodes[0].budgetState(purpose: "research", limit: 1, deltaLimit: 2e-7, periodSeconds: 3_600) })
            #expect(ps.spent == ss.spent && ps.deltaSpent == ss.deltaSpent && ps.left == ss.left)
            // The delta detail of a grant, as the SQLite accountant writes it.
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%delta \(AuditLog.decimal(1e-7))%'") == 2)
            for n in nodes { try await onThread { try n.close() } }
        }
    }

    /// The model-artifact MAC: SQLite's construction (HMAC of "store <id>\n" + message under
    /// the keyring's model-artifact key), the same on every node of one store, different on
    /// another store with the same keyring. Life: checkpoints are no-ops; after close a node's
    /// operations fail with a `VaultError`.
    @Test func theArtifactMACBindsTheStore() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            let message = Array("model artifact bytes".utf8)
            let ma = try await onThread { a.modelArtifactMAC(message) }
            #expect(ma.count == 32)
            #expect(ma == (try await onThread { b.modelArtifactMAC(message) }))
            #expect(ma != (try await onThread { a.modelArtifactMAC(message + [0]) }))
            let id = try #require(try await TestDatabase.strings(cluster.db, "SELECT value FROM profilevault.meta WHERE key = 'store_id'").first)
            #expect(id.count == 32)
            #expect(try await onThread { a.storeID } == id)
            let expected = try HMACSHA256.mac(key: cluster.keyring.derive(.modelArtifact, version: 1), message: Array("store \(id)\n".utf8) + message)
            #expect(ma == expected)
            // A SQLite store with the same keyring: its own id, so another MAC.
            let sqlite = try Self.sqlite(cluster, "sqlite")
            defer { try? sqlite.close() }
            #expect(sqlite.modelArtifactMAC(message) == (try HMACSHA256.mac(key: cluster.keyring.derive(.modelArtifact, version: 1), message: Array("store \(sqlite.storeID)\n".utf8) + message)))
            #expect(sqlite.modelArtifactMAC(message) != ma)
            // Rotation does not change it (identity version).
            var rotating = cluster.keyring
            rotating.addVersion()
            let rotated = rotating
            try await onThread { try a.adopt(keyring: rotated) }
            #expect(try await onThread { a.modelArtifactMAC(message) } == ma)
            // A second PostgreSQL store with the same keyring.
            try await TestDatabase.with { other in
                let owner = try other.ownerEngine()
                do {
                    try await PostgresProfiles.create(owner: owner, schema: repositorySchema, keyring: cluster.keyring,
                                                      options: .init(serviceRole: other.serviceRole, schemaVersion: "1", policyVersion: "test"))
                    let store = try await PostgresProfiles.open(engine: owner, schema: repositorySchema, keyring: cluster.keyring)
                    let mo = try await onThread { store.modelArtifactMAC(message) }
                    #expect(mo.count == 32 && mo != ma)
                } catch {
                    await owner.close()
                    throw error
                }
                await owner.close()
            }
            try a.checkpoint()
            try a.startBackgroundCheckpoints(every: 0.05)
            #expect(a.ownFiles.isEmpty && a.location == cluster.db.node.description)
            try await onThread { try a.close() }
            await #expect(throws: VaultError.self) { _ = try await onThread { try a.latestPolicy() } }
            try await onThread { try b.close() }
        }
    }
}

/// Values reported from several threads.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ v: Int) { lock.lock(); list.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return list }
}

final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ v: String) { lock.lock(); list.append(v); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
    func count(_ v: String) -> Int { all.filter { $0 == v }.count }
}
