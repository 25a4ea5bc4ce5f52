import Foundation
import PostgresNIO
public import VaultAudit
public import VaultStore
import VaultValues

/// The policy ledger on PostgreSQL (`profilevault.policy_history`, migration 4: append-only
/// for everyone), with the SQLite engine's semantics (PolicyHistory.swift): the newest record
/// is the policy in force; a record is added only on top of the one its caller diffed against
/// (compare-and-set across every node), in one transaction with its audit entry.
extension PostgresEngine {
    /// Advisory lock (namespace, 0): a policy record holds it exclusively, a budget charge that
    /// checks the policy in force holds it shared, so no charge commits under a policy that a
    /// record superseded between its check and its commit (SQLite's write lock does the same).
    static let lockNamespacePolicy: Int32 = 0x5056_5000   // "PVP"

    /// The newest policy record (nil: none yet), read by the caller's transaction.
    func latestPolicy(_ conn: PostgresConnection) async throws -> PolicyRecord? {
        try await rows(conn, """
            SELECT seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes
            FROM profilevault.policy_history ORDER BY seq DESC LIMIT 1
            """).first.map(Self.policyRecord)
    }

    static func policyRecord(_ row: PostgresRow) throws -> PolicyRecord {
        let (seq, version, sha, schemaSHA, at, actor, role, summary, changes) =
            try row.decode((Int64, String, String, String, Int64, String, String, String, String).self)
        return PolicyRecord(sequence: seq, version: version, sha256: sha, schemaSHA256: schemaSHA, appliedAtMillis: at, actor: actor,
                            role: role, summary: summary, changes: changes)
    }

    /// Refuses (configuration, SQLite's message) a charge when the policy in force is not the
    /// one the caller loaded. Takes the policy lock shared for the rest of the transaction.
    func checkPolicyInForce(_ conn: PostgresConnection, _ policy: (sha256: String, schemaSHA256: String)) async throws {
        try await exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespacePolicy), 0)")
        let inForce = try await latestPolicy(conn)
        guard inForce?.sha256 == policy.sha256, inForce?.schemaSHA256 == policy.schemaSHA256 else {
            throw PostgresStoreError(.configuration, "the policy in force changed since this process loaded the policy files; restart it to charge budget under the policy in force")
        }
    }
}

extension PostgresProfiles {
    /// The policy in force: the newest record (nil: none recorded yet).
    public func latestPolicy() throws -> PolicyRecord? {
        try Self.wait("reading the policy history") { [engine] in
            try await engine.transaction("reading the policy history") { conn in try await engine.latestPolicy(conn) }
        }
    }

    /// Every policy the store has run under, oldest first.
    public func policyHistory() throws -> [PolicyRecord] {
        try Self.wait("reading the policy history") { [engine] in
            try await engine.transaction("reading the policy history") { conn in
                try await engine.rows(conn, """
                    SELECT seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes
                    FROM profilevault.policy_history ORDER BY seq
                    """).map(PostgresEngine.policyRecord)
            }
        }
    }

    /// Records `record` (its sequence and time are assigned here: the next sequence number and
    /// the server's clock, one clock for every node) as the policy in force, in one transaction
    /// with its audit entry `audit`. Refused (configuration, SQLite's message) when the newest
    /// record is no longer `previous`: another apply, on any node, came first and the caller's
    /// diff would be against the wrong policy. Two nodes recording on top of the same record:
    /// they queue on the policy lock, the first commits, the second then reads the first's
    /// record and is refused (the sequence number's primary key would refuse it as well).
    ///
    /// `periods`: SQLite gives budget rows charged before period lengths were recorded (length
    /// 0) their purpose's period from the policy recorded. `profilevault.dp_budget` never held
    /// such a row (its `period_seconds` is at least 1 by a CHECK, and its trigger refuses
    /// changing a row's period), so there is nothing to fix here and `periods` changes nothing.
    ///
    /// `meta.policy_version`, which SQLite also sets, is not written: the service role may not
    /// write `meta` on PostgreSQL. The policy in force is this ledger's newest record.
    public func recordPolicy(_ record: PolicyRecord, previous: Int64?, periods: [String: Int], audit: AuditRecord) throws -> PolicyRecord {
        try StoredText.checkPolicyRecord(version: record.version, actor: record.actor, role: record.role, summary: record.summary, changes: record.changes)
        return try Self.wait("recording the policy") { [engine] in
            try await engine.transaction("recording the policy") { conn in
                try await engine.exec(conn, "SELECT pg_advisory_xact_lock(\(PostgresEngine.lockNamespacePolicy), 0)")
                let latest = try await engine.latestPolicy(conn)
                guard latest?.sequence == previous else {
                    throw PostgresStoreError(.configuration, "another policy was recorded meanwhile; run the command again")
                }
                let (seq, overflow) = (latest?.sequence ?? 0).addingReportingOverflow(1)
                guard !overflow else { throw PostgresStoreError(.internalFailure, "the policy history has run out of sequence numbers") }
                guard let clock = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first else {
                    throw PostgresStoreError(.internalFailure, "reading the server's clock returned no row")
                }
                var out = record
                out.sequence = seq
                out.appliedAtMillis = try clock.decode(Int64.self)
                do {
                    try await engine.exec(conn, """
                        INSERT INTO profilevault.policy_history(seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes)
                        VALUES (\(out.sequence), \(out.version), \(out.sha256), \(out.schemaSHA256), \(out.appliedAtMillis),
                                \(out.actor), \(out.role), \(out.summary), \(out.changes))
                        """)
                } catch let e as PSQLError where e.serverInfo?[.sqlState] == "23505" {
                    // unique_violation: a writer that did not take the lock came first.
                    throw PostgresStoreError(.configuration, "another policy was recorded meanwhile; run the command again")
                }
                try await engine.appendLocked(conn, [audit])
                return out
            }
        }
    }
}
