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
}

extension PostgresProfiles {
    public func releaseDigest(_ canonical: [UInt8]) -> [UInt8] { keys.releaseDigest.mac(canonical) }

    /// One primary-key lookup, in the same transaction as the window's start (server clock).
    public func cachedRelease(digest: [UInt8], purpose: String, periodSeconds: Int) throws -> ReleaseLookup {
        guard periodSeconds >= 1, periodSeconds <= PostgresEngine.maximumPeriodSeconds else {
            throw VaultError(.configuration, "a budget period must be longer than zero and at most 2^40 seconds")
        }
        let period = Int64(periodSeconds)
        let found: (Int64, SnapshotRelease?) = try Self.wait("reading the release cache") { [engine] in
            try await engine.transaction("reading the release cache") { conn -> (Int64, SnapshotRelease?) in
                let start = try await engine.currentPeriodStart(conn, periodSeconds: period)
                guard let row = try await engine.rows(conn, """
                    SELECT purpose, period_start, period_seconds, created_at, sealed FROM profilevault.release_cache WHERE digest = \(bytea(digest))
                    """).first else { return (start, nil) }
                let (p, s, l, c, sealed) = try row.decode((String, Int64, Int64, Int64, ByteBuffer).self)
                return (start, SnapshotRelease(digest: digest, purpose: p, periodStart: s, periodSeconds: l, createdAt: c, sealed: sealed.bytes))
            }
        }
        return try ReleaseSealing.lookup(found.1, purpose: purpose, start: found.0, periodSeconds: period, key: keys.releaseCache)
    }

    public func storeRelease(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int, payload: [UInt8]) throws {
        let created = AuditLog.nowMillis
        let period = Int64(periodSeconds)
        let sealed = try ReleaseSealing.seal(payload, digest: digest, purpose: purpose, periodStart: periodStart, periodSeconds: period,
                                             createdAt: created, key: keys.releaseCache)
        try Self.wait("storing a release in the cache") { [engine] in
            try await engine.transaction("storing a release in the cache") { conn in
                try await engine.exec(conn, """
                    DELETE FROM profilevault.release_cache
                    WHERE purpose = \(purpose) AND NOT (period_start = \(periodStart) AND period_seconds = \(period))
                    """)
                try await engine.exec(conn, """
                    INSERT INTO profilevault.release_cache(digest, purpose, period_start, period_seconds, created_at, sealed)
                    VALUES (\(bytea(digest)), \(purpose), \(periodStart), \(period), \(created), \(bytea(sealed)))
                    ON CONFLICT (digest) DO UPDATE SET purpose = excluded.purpose, period_start = excluded.period_start,
                        period_seconds = excluded.period_seconds, created_at = excluded.created_at, sealed = excluded.sealed
                    """)
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
