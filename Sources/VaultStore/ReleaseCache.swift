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
// budget window (start and length) it was charged in, when it was stored; and `sealed`, the
// release itself (the Vault's encoding) sealed with AES-256-GCM under `pv:release-cache`, the
// associated data binding it to its digest, purpose, window and time. Nothing in the clear
// names a condition's value or a released number.
//
// A file-level attacker who edits a sealed release, moves one to another digest, purpose or
// window, or changes any of those columns is detected: the row does not open and the lookup
// is an integrity error (exit 1); it is never served, and never silently charged again. One who
// deletes rows makes the next query pay again, which costs budget and leaks nothing.

/// What a release-cache lookup found for a digest in the purpose's current budget window.
public enum ReleaseLookup: Sendable, Equatable {
    /// Nothing stored for the digest in this window: `periodStart` is the window's start.
    case miss(periodStart: Int64)
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
    public var sealed: [UInt8]
    package init(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64, sealed: [UInt8]) {
        self.digest = digest
        self.purpose = purpose
        self.periodStart = periodStart
        self.periodSeconds = periodSeconds
        self.createdAt = createdAt
        self.sealed = sealed
    }
}

/// Sealing and opening of cached releases, the same on every engine.
package enum ReleaseSealing {
    /// The associated data of a sealed release: its purpose, window and time (the digest is the
    /// envelope's subject), so a ciphertext moved to another row or a changed column fails.
    static func field(purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64) -> String {
        "release-cache:\(purpose.utf8.count):\(purpose):\(periodStart):\(periodSeconds):\(createdAt)"
    }

    package static func seal(_ payload: [UInt8], digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int64, createdAt: Int64,
                             key: SharedAESGCMKey) throws -> [UInt8] {
        guard digest.count == Envelope.subjectByteCount else { throw VaultError(.internalFailure, "release cache: a digest has 32 bytes") }
        do {
            return try key.withKey { (k: AESGCMKey) throws(CryptoError) -> [UInt8] in
                try Envelope.sealField(payload, field: field(purpose: purpose, periodStart: periodStart, periodSeconds: periodSeconds, createdAt: createdAt),
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
                                                              createdAt: r.createdAt),
                                       subject: r.digest, dek: k)
            }
        } catch {
            throw tampered()
        }
    }

    package static func tampered() -> VaultError {
        VaultError(.integrity, "the release cache holds a stored release for this query that does not verify (modified, moved from another query, purpose or period, or another keyring): it was not served and nothing was charged; ask again with --fresh to pay for a new release")
    }

    /// The lookup's answer for the row found (nil: none) in the window [start, start + periodSeconds).
    package static func lookup(_ row: SnapshotRelease?, purpose: String, start: Int64, periodSeconds: Int64, key: SharedAESGCMKey) throws -> ReleaseLookup {
        guard let row else { return .miss(periodStart: start) }
        // Another window's release (the period ended, or the period length changed) is not
        // served; whether it verifies does not matter then, and the next store replaces it.
        guard row.periodStart == start, row.periodSeconds == periodSeconds else { return .miss(periodStart: start) }
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
    }

    /// The digest (HMAC-SHA256 under the release-digest key) of a query's canonical form.
    public func releaseDigest(_ canonical: [UInt8]) -> [UInt8] { keys.releaseDigest.mac(canonical) }

    /// One primary-key lookup, in the same read as the window's start (so a period that ends
    /// between the two cannot serve a release of the ended one).
    public func cachedRelease(digest: [UInt8], purpose: String, periodSeconds: Int) throws -> ReleaseLookup {
        guard periodSeconds >= 1 else { throw VaultError(.configuration, "a budget period must be longer than zero") }
        let key = keys.releaseCache
        return try pool.read { db in
            let start = try periodStart(periodSeconds: periodSeconds, now: Int64(Date().timeIntervalSince1970), db)
            let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT purpose, period_start, period_seconds, created_at, sealed FROM release_cache WHERE digest = ?"),
                                       arguments: [Data(digest)])
            return try ReleaseSealing.lookup(row.map { try Self.releaseRow($0, digest: digest) }, purpose: purpose, start: start,
                                             periodSeconds: Int64(periodSeconds), key: key)
        }
    }

    /// A row decoded without traps: a value of the wrong storage class is tampering.
    static func releaseRow(_ row: Row, digest: [UInt8]) throws -> SnapshotRelease {
        guard let purpose = Stored.text(row.stored("purpose")), let start = Stored.int(row.stored("period_start")),
              let seconds = Stored.int(row.stored("period_seconds")), let created = Stored.int(row.stored("created_at")),
              let sealed = Stored.blob(row.stored("sealed")) else { throw ReleaseSealing.tampered() }
        return SnapshotRelease(digest: digest, purpose: purpose, periodStart: start, periodSeconds: seconds, createdAt: created, sealed: sealed)
    }

    /// Stores (or replaces) the release of `digest`, charged in the window starting at
    /// `periodStart`, and drops the purpose's releases of other windows (expired ones).
    public func storeRelease(digest: [UInt8], purpose: String, periodStart: Int64, periodSeconds: Int, payload: [UInt8]) throws {
        let created = AuditLog.nowMillis
        let sealed = try ReleaseSealing.seal(payload, digest: digest, purpose: purpose, periodStart: periodStart, periodSeconds: Int64(periodSeconds),
                                             createdAt: created, key: keys.releaseCache)
        try pool.write { db in
            try db.execute(sql: "DELETE FROM release_cache WHERE purpose = ? AND NOT (period_start = ? AND period_seconds = ?)",
                           arguments: [purpose, periodStart, Int64(periodSeconds)])
            try db.execute(sql: "INSERT OR REPLACE INTO release_cache(digest, purpose, period_start, period_seconds, created_at, sealed) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [Data(digest), purpose, periodStart, Int64(periodSeconds), created, Data(sealed)])
        }
    }

    /// Drops every cached release (after a change of who may be counted: erasure, consent,
    /// objection, restriction, retention). Returns how many were dropped.
    @discardableResult
    public func clearReleaseCache() throws -> Int {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM release_cache")
            return db.changesCount
        }
    }
}
