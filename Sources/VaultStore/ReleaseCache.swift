import Foundation
public import GRDB
import VaultAudit
public import VaultCrypto

// The release cache (issue 23, "pay once"): a DP release the store answered is kept, sealed,
// so the same query asked again in the same budget period is answered with the same release at
// no cost. A release is already public once made (answering it again is post-processing), so
// this spends nothing and learns nothing new about anyone.
//
// What is stored, per release: `digest`, the HMAC-SHA256 (key `pv:release-digest` of the
// keyring's identity version) of the query's canonical form (kind, measure and bounds, the
// parsed conditions in canonical order with their values, groups, the requested epsilon or
// accuracy and confidence, the purpose and its budget), computed by the Vault; the purpose, the
// budget window (start and length) it was charged in, the population epoch it was computed at,
// when it was stored; and `sealed`, the release itself (the Vault's encoding) sealed with
// AES-256-GCM under `pv:release-cache`, the associated data binding it to its digest, purpose,
// window, epoch and time. Nothing in the clear names a condition's value or a released number.
//
// The population epoch (migration `v15-population-epoch`): one integer per store, incremented
// in the same transaction as every change of who may be counted or of what a query reads for
// them (erasure, retention, consent set or import, objection, restriction, ingest of profiles or
// events, rectification). A release is served only while the epoch it was computed at is the
// current one; a release is stored only if the epoch read at the lookup is still current in the
// storing transaction (a change that committed in between makes the store a no-op). So a
// release is served only for the population it was computed from, whatever runs concurrently,
// and a sealed row saved before a change and put back after it is never served (its epoch
// column is old; set to the current one, the row does not open).
//
// A file-level attacker who edits a sealed release, moves one to another digest, purpose or
// window, or changes any of those columns or its epoch is detected: the row does not open and
// the lookup is an integrity error (exit 1); it is never served, and never silently charged
// again. One who deletes rows (or the epoch row) makes the next query pay again (no epoch: the
// cache is bypassed), which costs budget and leaks nothing. One who rolls back the epoch row
// together with saved rows can make the store answer a release it already made to that purpose
// in that window, as rolling back the whole file can (post-processing of a release already
// public to the purpose; docs/differential-privacy.md).

/// What a release-cache lookup found for a digest in the purpose's current budget window.
public enum ReleaseLookup: Sendable, Equatable {
    /// Nothing stored for the digest in this window and epoch: `periodStart` is the window's
    /// start, `epoch` the population epoch read with it (nil: the store has no epoch row, the
    /// cache is bypassed), which a store of the release computed now must still find current.
    case miss(periodStart: Int64, epoch: Int64?)
    /// The stored release, opened and verified: the Vault's encoding, and when it was stored.
    case hit(payload: [UInt8], storedAtMillis: Int64, periodStart: Int64)
}

/// One row of the release cache as `profilectl migrate` copies it (opaque: still sealed).
public struct SnapshotRelease: Sendable, Equatable {
    public var digest: [UInt8]
    public var purpose: String
    public var periodStart: Int64
    public var periodSeconds: Int64
    public var createdAt: Int64
    /// The population epoch the release was computed at.
    public var epoch: Int64
    public var sealed: [UInt8]
    package init(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64, epoch: Int64, sealed: [UInt8]) {
        self.digest = digest
        self.purpose = purpose
        self.periodStart = periodStart
        self.periodSeconds = periodSeconds
        self.createdAt = createdAt
        self.epoch = epoch
        self.sealed = sealed
    }
}

/// Sealing and opening of cached releases, the same on every engine.
package enum ReleaseSealing {
    /// The associated data of a sealed release: its purpose, window, population epoch and time
    /// (the digest is the envelope's subject), so a ciphertext moved to another row or a changed
    /// column fails.
    static func field(purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64, epoch: Int64) -> String {
        "release-cache-v2:\(purpose.utf8.count):\(purpose):\(periodStart):\(periodSeconds):\(createdAt):\(epoch)"
    }

    package static func seal(_ payload: [UInt8], digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64,
                             epoch: Int64, key: SharedAESGCMKey) throws -> [UInt8] {
        guard digest.count == Envelope.subjectByteCount else { throw VaultError(.internalFailure, "release cache: a digest has 32 bytes") }
        do {
            return try key.withKey { (k: AESGCMKey) throws(CryptoError) -> [UInt8] in
                try Envelope.sealField(payload, field: field(purpose: purpose, periodStart: periodStart, periodSeconds: periodSeconds, createdAt: createdAt,
                                                             epoch: epoch),
                                       subject: digest, dek: k)
            }
        } catch {
            throw VaultError(.internalFailure, "release cache: sealing a release failed")
        }
    }

    /// Opens a stored release; an integrity error (exit 1) when it does not verify.
    package static func open(_ r: SnapshotRelease, key: SharedAESGCMKey) throws -> [UInt8] {
        guard r.digest.count == Envelope.subjectByteCount else { throw tampered() }
        do {
            return try key.withKey { (k: AESGCMKey) throws(CryptoError) -> [UInt8] in
                try Envelope.openField(r.sealed, field: field(purpose: r.purpose, periodStart: r.periodStart, periodSeconds: r.periodSeconds,
                                                              createdAt: r.createdAt, epoch: r.epoch),
                                       subject: r.digest, dek: k)
            }
        } catch {
            throw tampered()
        }
    }

    /// The population epoch a restored store starts with: random in [2^40, 2^62), so it meets
    /// none of the epochs of the line it was restored from (those count up from 0, or from
    /// another such draw, by one per change), and increments cannot overflow in practice.
    package static func restoredEpoch() -> Int64 {
        let bytes = SecureRandom.bytes(8)
        let r = bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Int64(1) << 40 + Int64(r % (UInt64(1) << 62 - UInt64(1) << 40))
    }

    package static func tampered() -> VaultError {
        VaultError(.integrity, "the release cache holds a stored release for this query that does not verify (modified, moved from another query, purpose or period, or another keyring): it was not served and nothing was charged; ask again with --fresh to pay for a new release")
    }

    /// The lookup's answer for the row found (nil: none) in the window [start, start + periodSeconds)
    /// at the population epoch `epoch` (nil: the store has no epoch, nothing is served).
    package static func lookup(_ row: SnapshotRelease?, purpose: String, start: Int64, periodSeconds: Int64, epoch: Int64?,
                               key: SharedAESGCMKey) throws -> ReleaseLookup {
        guard let row, let epoch else { return .miss(periodStart: start, epoch: epoch) }
        // Another window's release (the period ended, or the period length changed), or one
        // computed from another population (a change committed since), is not served; whether
        // it verifies does not matter then, and the next store replaces it. The epoch column is
        // bound into the seal: a row whose column was set to the current epoch does not open.
        guard row.periodStart == start, row.periodSeconds == periodSeconds, row.epoch == epoch else {
            return .miss(periodStart: start, epoch: epoch)
        }
        let payload = try open(row, key: key)
        // The digest covers the purpose; a verified row of another purpose cannot exist unless
        // the store was assembled from pieces.
        guard row.purpose == purpose else { throw tampered() }
        return .hit(payload: payload, storedAtMillis: row.createdAt, periodStart: start)
    }
}

extension ProfileStore {
    static func registerReleaseCacheMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v14-release-cache") { db in
            try db.execute(sql: """
                CREATE TABLE release_cache(
                    digest BLOB PRIMARY KEY, purpose TEXT NOT NULL, period_start INTEGER NOT NULL,
                    period_seconds INTEGER NOT NULL, created_at INTEGER NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
                """)
        }
        // The population epoch; releases stored before it (sealed without an epoch) are dropped:
        // the next identical query pays once more.
        m.registerMigration("v15-population-epoch") { db in
            try db.execute(sql: """
                CREATE TABLE population_epoch(id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL);
                INSERT INTO population_epoch(id, epoch) VALUES (1, 0);
                DELETE FROM release_cache;
                ALTER TABLE release_cache ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
                """)
        }
    }

    /// The current population epoch (nil: the row is missing or not an integer: the store was
    /// altered, and the cache is bypassed: nothing served, nothing stored).
    static func populationEpoch(_ db: Database) throws -> Int64? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT epoch FROM population_epoch WHERE id = 1")).flatMap { Stored.int($0.stored("epoch")) }
    }

    /// Increments the population epoch inside the caller's transaction, the one that changes who
    /// may be counted or what a query reads for them: every release computed before it stops
    /// being served, and none computed from the old population can be stored after it. The
    /// releases of the ended epoch are dropped with it (garbage: they would never be served).
    func bumpPopulationEpoch(_ db: Database) throws {
        try db.execute(sql: "DELETE FROM release_cache")
        try db.execute(sql: "UPDATE population_epoch SET epoch = epoch + 1 WHERE id = 1")
    }

    public func populationEpoch() throws -> Int64? { try pool.read { db in try Self.populationEpoch(db) } }

    /// The digest (HMAC-SHA256 under the release-digest key) of a query's canonical form.
    public func releaseDigest(_ canonical: [UInt8]) -> [UInt8] { keys.releaseDigest.mac(canonical) }

    /// One primary-key lookup, in the same read as the window's start and the population epoch
    /// (so a period that ends, or a change that commits, between them cannot serve a release of
    /// the ended period or the old population).
    public func cachedRelease(digest: [UInt8], purpose: String, periodSeconds: Int) throws -> ReleaseLookup {
        guard periodSeconds >= 1 else { throw VaultError(.configuration, "a budget period must be longer than zero") }
        let key = keys.releaseCache
        return try pool.read { db in
            let start = try periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
            let epoch = try Self.populationEpoch(db)
            let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT purpose, period_start, period_seconds, created_at, epoch, sealed FROM release_cache WHERE digest = ?"),
                                       arguments: [Data(digest)])
            return try ReleaseSealing.lookup(row.map { try Self.releaseRow($0, digest: digest) }, purpose: purpose, start: start,
                                             periodSeconds: Int64(periodSeconds), epoch: epoch, key: key)
        }
    }

    /// A row decoded without traps: a value of the wrong storage class is tampering.
    static func releaseRow(_ row: Row, digest: [UInt8]) throws -> SnapshotRelease {
        guard let purpose = Stored.text(row.stored("purpose")), let start = Stored.int(row.stored("period_start")),
              let seconds = Stored.int(row.stored("period_seconds")), let created = Stored.int(row.stored("created_at")),
              let epoch = Stored.int(row.stored("epoch")), let sealed = Stored.blob(row.stored("sealed")) else { throw ReleaseSealing.tampered() }
        return SnapshotRelease(digest: digest, purpose: purpose, periodStart: start, periodSeconds: seconds, createdAt: created, epoch: epoch, sealed: sealed)
    }

    /// Stores (or replaces) the release of `digest`, charged in the window starting at
    /// `periodStart` and computed at population epoch `epoch` (the one its lookup read), if that
    /// epoch is still the current one, in the same transaction; drops the purpose's releases of
    /// other windows or epochs. Returns false (nothing stored) when a change of the population
    /// committed since the lookup.
    @discardableResult
    public func storeRelease(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int, epoch: Int64, payload: [UInt8]) throws -> Bool {
        let created = AuditLog.nowMillis
        let sealed = try ReleaseSealing.seal(payload, digest: digest, purpose: purpose, periodStart: periodStart, periodSeconds: Int64(periodSeconds),
                                             createdAt: created, epoch: epoch, key: keys.releaseCache)
        return try pool.write { db -> Bool in
            guard try Self.populationEpoch(db) == epoch else { return false }
            try db.execute(sql: "DELETE FROM release_cache WHERE purpose = ? AND NOT (period_start = ? AND period_seconds = ? AND epoch = ?)",
                           arguments: [purpose, periodStart, Int64(periodSeconds), epoch])
            try db.execute(sql: "INSERT OR REPLACE INTO release_cache(digest, purpose, period_start, period_seconds, created_at, epoch, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [Data(digest), purpose, periodStart, Int64(periodSeconds), created, epoch, Data(sealed)])
            return true
        }
    }

    /// Drops every cached release (a restore: the releases were made from the backup's
    /// population). Returns how many were dropped.
    @discardableResult
    public func clearReleaseCache() throws -> Int {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM release_cache")
            return db.changesCount
        }
    }
}
