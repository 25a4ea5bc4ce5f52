import Foundation
public import GRDB
public import VaultAudit
public import VaultCrypto

/// Key versions as the store sees them.
public struct KeyStatus: Sendable {
    public var active: UInt32
    public var versions: [UInt32]
    public var retired: [UInt32]
    public var identityVersion: UInt32
    /// How many subjects' DEKs are wrapped under each KEK version.
    public var subjectsPerVersion: [UInt32: Int]
    /// Where the keyring's root of trust lives (set by the Vault from the keyring it loaded).
    public var rootOfTrust: KeyCustody = .file

    /// For another engine of this package (VaultPostgres): the memberwise initialiser is internal.
    package static func make(active: UInt32, versions: [UInt32], retired: [UInt32], identityVersion: UInt32,
                             subjectsPerVersion: [UInt32: Int]) -> KeyStatus {
        KeyStatus(active: active, versions: versions, retired: retired, identityVersion: identityVersion, subjectsPerVersion: subjectsPerVersion)
    }
}

/// What a keyring must be for a store to adopt it, on both engines: never older than the store.
/// An older copy of the keyring put back in the file's place (a restored config, a stale copy
/// on another host) would otherwise make a retired version active again and leave the data
/// keys wrapped under newer versions unreadable.
package enum KeyringAdoption {
    /// `recorded`: the store's key versions and whether each is retired; `inUse`: the KEK
    /// versions subjects' data keys are wrapped under.
    package static func check(_ keyring: Keyring, recorded: [(version: UInt32, retired: Bool)], inUse: [UInt32]) throws {
        let place = keyring.path ?? "the keyring"
        if recorded.contains(where: { $0.version == keyring.active && $0.retired }) {
            throw VaultError(.configuration, "\(place): its active version \(keyring.active) is retired in the store: an older copy of the keyring? Not adopted")
        }
        if let newest = recorded.filter({ !$0.retired }).map(\.version).max(), keyring.active < newest {
            throw VaultError(.configuration, "\(place): its active version \(keyring.active) is older than version \(newest), which the store records: an older copy of the keyring? Not adopted")
        }
        for v in inUse.sorted() where !keyring.versions.contains(v) || keyring.isRetired(v) {
            throw VaultError(.configuration, "\(place): data keys are wrapped under version \(v), which this keyring does not hold: not adopted")
        }
    }
}

extension ProfileStore {
    /// Starts using a keyring that gained versions (after `keys rotate`): records the key
    /// check of every new version and swaps the keys in use. The identity keys (pseudonym,
    /// blind index, audit signing) stay those of the identity version. A keyring older than
    /// the store is refused (``KeyringAdoption``).
    public func adopt(keyring: Keyring) throws {
        let fresh = try StoreKeys(keyring: keyring, identityVersion: keys.identityVersion, schema: schema)
        let now = Int64(Date().timeIntervalSince1970)
        try pool.write { db in
            var recorded: [(version: UInt32, retired: Bool)] = []
            for row in try Row.fetchAll(db, sql: "SELECT version, retired FROM key_versions") {
                guard let v = Stored.int(row.stored("version")).flatMap(UInt32.init(exactly:)), let r = Stored.int(row.stored("retired")) else {
                    throw VaultError(.integrity, "the key_versions table holds a value of the wrong type: the store was altered")
                }
                recorded.append((v, r != 0))
            }
            // Integers only: a damaged value (text, blob, real) is left to the read or the
            // rotation that meets its row, which names the row as an integrity failure.
            let inUse = try Int64.fetchAll(db, sql: "SELECT DISTINCT kek_version FROM subjects WHERE typeof(kek_version) = 'integer'")
                .compactMap(UInt32.init(exactly:))
            try KeyringAdoption.check(keyring, recorded: recorded, inUse: inUse)
            for v in keyring.versions {
                let known = try Data.fetchOne(db, sql: "SELECT key_check FROM key_versions WHERE version = ?", arguments: [Int64(v)])
                let check = try StoreKeys.keyCheck(keyring: keyring, version: v)
                if let known {
                    guard constantTimeEqual([UInt8](known), check) else {
                        throw VaultError(.integrity, "keyring version \(v) does not match the store's key check")
                    }
                } else {
                    try db.execute(sql: "INSERT INTO key_versions(version, key_check, added_at, retired) VALUES (?, ?, ?, 0)",
                                   arguments: [Int64(v), Data(check), now])
                }
            }
        }
        keyBox.replace(fresh)
    }

    /// Re-wraps every DEK not yet under the active KEK, in batches of `batchSize` (one
    /// transaction and one audit entry each). Field ciphertext is untouched. Readers keep
    /// working throughout: a subject's row holds either the old wrapping (old KEK still in the
    /// keyring) or the new one, switched atomically per batch.
    public func rewrapAll(batchSize: Int = 10_000, audit: AuditContext, progress: ((Int) -> Void)? = nil) throws -> Int {
        let target = keys.activeKEKVersion
        guard let newKEK = keyBox.kek(target) else {
            throw VaultError(.configuration, "the keyring's active version \(target) is not usable")
        }
        let kek = try AESGCMKey(newKEK)
        var oldKEKs: [UInt32: AESGCMKey] = [:]
        var total = 0
        var lastID: Int64 = 0
        while true {
            let rows = try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT id, pseudonym, kek_version, wrapped_dek FROM subjects WHERE id > ? AND kek_version != ? ORDER BY id LIMIT ?",
                                 arguments: [lastID, Int64(target), batchSize])
            }
            if rows.isEmpty { break }
            var updates: [(id: Int64, old: Int64, wrapped: Data)] = []
            updates.reserveCapacity(rows.count)
            for row in rows {
                // Decoded without trapping conversions: a damaged row stops the rotation with
                // an integrity error naming it, before anything of this batch is written.
                let subject = try SubjectRow.decode(row)
                if let damage = subject.keyDamage {
                    throw VaultError(.integrity, damage.message + "; rotation stopped, nothing of this batch written")
                }
                let id = subject.id
                let pseudo = subject.pseudonym
                let old = subject.kekVersion
                let v = Int64(old)
                if oldKEKs[old] == nil {
                    guard let k = keyBox.kek(old) else {
                        throw VaultError(.integrity, "subject DEKs are wrapped with key version \(old), which the keyring does not hold")
                    }
                    oldKEKs[old] = try AESGCMKey(k)
                }
                let dek: SecureBytes
                do {
                    guard let oldKEK = oldKEKs[old] else { throw VaultError(.internalFailure, "key version \(old) was not loaded") }
                    dek = try Envelope.unwrapDEK(subject.wrappedDEK, subject: pseudo, kekVersion: old, kek: oldKEK)
                } catch {
                    throw VaultError(.integrity, "a wrapped data key (subject row \(id)) does not verify; rotation stopped, nothing of this batch written")
                }
                updates.append((id, v, Data(try Envelope.wrapDEK(dek, subject: pseudo, kekVersion: target, kek: kek))))
                lastID = id
            }
            let n = try pool.write { db -> Int in
                let update = try db.cachedStatement(sql: "UPDATE subjects SET kek_version = ?, wrapped_dek = ? WHERE id = ? AND kek_version = ?")
                var n = 0
                for u in updates {
                    // A concurrent ingest may have replaced this subject's key meanwhile: keep its.
                    try update.execute(arguments: [Int64(target), u.wrapped, u.id, u.old])
                    n += db.changesCount
                }
                try appendAudit(db, [audit.record("keys.rewrap", .update, detail: "to key version \(target)", counts: [("rewrapped", Int64(n))])])
                return n
            }
            total += n
            progress?(total)
        }
        return total
    }

    public func keyStatus(keyring: Keyring) throws -> KeyStatus {
        try pool.read { db in
            var per: [UInt32: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT kek_version, count(*) AS n, min(id) AS first FROM subjects GROUP BY kek_version") {
                let v = row.stored("kek_version")
                guard let i = Stored.int(v), let version = UInt32(exactly: i) else {
                    let first = Stored.int(row.stored("first")) ?? 0
                    throw VaultError(.integrity, "subject row \(first): its key version column holds \(Stored.kind(v)) that is not a key version: the store was altered")
                }
                per[version] = Stored.int(row.stored("n")).flatMap { Int(exactly: $0) } ?? 0
            }
            return KeyStatus(active: keyring.active, versions: keyring.versions.filter { !keyring.isRetired($0) },
                             retired: keyring.versions.filter { keyring.isRetired($0) },
                             identityVersion: keys.identityVersion, subjectsPerVersion: per)
        }
    }

    /// Subjects whose DEK is wrapped under `version`.
    public func subjects(wrappedWith version: UInt32) throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM subjects WHERE kek_version = ?", arguments: [Int64(version)]) ?? 0 }
    }

    /// Marks a version retired in the store (after the keyring file says so).
    public func markRetired(_ version: UInt32, audit: AuditContext) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE key_versions SET retired = 1 WHERE version = ?", arguments: [Int64(version)])
            try appendAudit(db, [audit.record("keys.retire", .update, detail: "key version \(version) retired")])
        }
    }
}
