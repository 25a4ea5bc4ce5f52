import Foundation
import PostgresNIO
import VaultAudit
import VaultCrypto
public import VaultStore

extension PostgresEngine {
    /// Migration 14: the DP release cache, as on SQLite (`v14-release-cache`, ReleaseCache.swift).
    /// The service role reads, stores, replaces and drops releases (SELECT, INSERT, UPDATE,
    /// DELETE); the rows are sealed under a keyring key, so the grants give no reader the
    /// releases without the keyring, and no writer a release that would be served.
    static let releaseCacheMigration = PostgresMigration(version: 14, name: "release-cache", statements: [
        """
        CREATE TABLE profilevault.release_cache(
            digest bytea PRIMARY KEY CHECK (length(digest) = 32), purpose text NOT NULL,
            period_start bigint NOT NULL, period_seconds bigint NOT NULL CHECK (period_seconds >= 1),
            created_at bigint NOT NULL, sealed bytea NOT NULL)
        """,
    ])

    /// Migration 15: the population epoch, as on SQLite (`v15-population-epoch`,
    /// ReleaseCache.swift): one row, incremented by every transaction that changes who may be
    /// counted or what a query reads for them; each cached release carries the epoch it was
    /// computed at (bound into its seal). Releases stored before (sealed without an epoch) are
    /// dropped. The service role reads and increments it (SELECT, UPDATE); it cannot add or
    /// remove the row.
    static let populationEpochMigration = PostgresMigration(version: 15, name: "population-epoch", statements: [
        "CREATE TABLE profilevault.population_epoch(id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL)",
        "INSERT INTO profilevault.population_epoch(id, epoch) VALUES (1, 0)",
        "DELETE FROM profilevault.release_cache",
        "ALTER TABLE profilevault.release_cache ADD COLUMN epoch bigint NOT NULL DEFAULT 0",
    ])

    /// Increments the population epoch inside the caller's transaction (the one that changes
    /// the population; called last, just before the commit, so the row lock is held briefly).
    /// The releases of older epochs, which can no longer be served, are dropped by the next
    /// store (``PostgresProfiles/storeRelease(digest:purpose:periodStart:periodSeconds:epoch:payload:)``),
    /// not here: deleting them here would lock cache rows inside a data subject's erasure or
    /// consent change, in an order a concurrent store could lock them the other way round
    /// (a deadlock that would fail the erasure; a failed store only makes a query pay again).
    func bumpPopulationEpoch(_ conn: PostgresConnection) async throws {
        try await exec(conn, "UPDATE profilevault.population_epoch SET epoch = epoch + 1 WHERE id = 1")
    }

    /// The current population epoch (nil: the row is missing).
    func populationEpoch(_ conn: PostgresConnection) async throws -> Int64? {
        try await rows(conn, "SELECT epoch FROM profilevault.population_epoch WHERE id = 1").first?.decode(Int64.self)
    }
}

extension PostgresProfiles {
    public func releaseDigest(_ canonical: [UInt8]) -> [UInt8] { keys.releaseDigest.mac(canonical) }

    /// One primary-key lookup, in the same transaction as the window's start (server clock) and
    /// the population epoch (a snapshot: all three as of one moment).
    public func cachedRelease(digest: [UInt8], purpose: String, periodSeconds: Int) throws -> ReleaseLookup {
        guard periodSeconds >= 1, periodSeconds <= PostgresEngine.maximumPeriodSeconds else {
            throw VaultError(.configuration, "a budget period must be longer than zero and at most 2^40 seconds")
        }
        let period = Int64(periodSeconds)
        let found: (Int64, Int64?, SnapshotRelease?) = try Self.wait("reading the release cache") { [engine] in
            try await engine.transaction("reading the release cache", begin: Self.snapshot) { conn -> (Int64, Int64?, SnapshotRelease?) in
                let start = try await engine.currentPeriodStart(conn, periodSeconds: period)
                let epoch = try await engine.populationEpoch(conn)
                guard let row = try await engine.rows(conn, """
                    SELECT purpose, period_start, period_seconds, created_at, epoch, sealed FROM profilevault.release_cache WHERE digest = \(bytea(digest))
                    """).first else { return (start, epoch, nil) }
                let (p, s, l, c, e, sealed) = try row.decode((String, Int64, Int64, Int64, Int64, ByteBuffer).self)
                return (start, epoch, SnapshotRelease(digest: digest, purpose: p, periodStart: s, periodSeconds: l, createdAt: c, epoch: e, sealed: sealed.bytes))
            }
        }
        return try ReleaseSealing.lookup(found.2, purpose: purpose, start: found.0, periodSeconds: period, epoch: found.1, key: keys.releaseCache)
    }

    public func populationEpoch() throws -> Int64? {
        try Self.wait("reading the population epoch") { [engine] in
            try await engine.transaction("reading the population epoch") { conn in try await engine.populationEpoch(conn) }
        }
    }

    /// Stores the release only if `epoch` is still the current population epoch: checked first
    /// (a stale store does not drop the purpose's current releases), and again by the INSERT
    /// itself, whose snapshot begins after everything the release was computed from was read;
    /// a change that commits after it moves the epoch past the row's, which is then never
    /// served. Returns false when nothing was stored.
    @discardableResult
    public func storeRelease(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int, epoch: Int64, payload: [UInt8]) throws -> Bool {
        let created = AuditLog.nowMillis
        let period = Int64(periodSeconds)
        let sealed = try ReleaseSealing.seal(payload, digest: digest, purpose: purpose, periodStart: periodStart, periodSeconds: period,
                                             createdAt: created, epoch: epoch, key: keys.releaseCache)
        return try Self.wait("storing a release in the cache") { [engine] in
            try await engine.transaction("storing a release in the cache") { conn -> Bool in
                guard try await engine.populationEpoch(conn) == epoch else { return false }
                try await engine.exec(conn, """
                    DELETE FROM profilevault.release_cache
                    WHERE epoch <> \(epoch)
                       OR (purpose = \(purpose) AND NOT (period_start = \(periodStart) AND period_seconds = \(period)))
                    """)
                return !(try await engine.rows(conn, """
                    INSERT INTO profilevault.release_cache(digest, purpose, period_start, period_seconds, created_at, epoch, sealed)
                    SELECT \(bytea(digest)), \(purpose), \(periodStart), \(period), \(created), \(epoch), \(bytea(sealed))
                    WHERE (SELECT epoch FROM profilevault.population_epoch WHERE id = 1) = \(epoch)
                    ON CONFLICT (digest) DO UPDATE SET purpose = excluded.purpose, period_start = excluded.period_start,
                        period_seconds = excluded.period_seconds, created_at = excluded.created_at, epoch = excluded.epoch, sealed = excluded.sealed
                    RETURNING 1
                    """).isEmpty)
            }
        }
    }

    @discardableResult
    public func clearReleaseCache() throws -> Int {
        try Self.wait("clearing the release cache") { [engine] in
            try await engine.transaction("clearing the release cache") { conn -> Int in
                let n = try await engine.rows(conn, "WITH gone AS (DELETE FROM profilevault.release_cache RETURNING 1) SELECT count(*) FROM gone")
                return Int(try n.first?.decode(Int64.self) ?? 0)
            }
        }
    }
}
