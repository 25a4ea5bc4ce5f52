import Foundation
import PostgresNIO
public import VaultAudit
public import VaultCrypto
public import VaultStore
import VaultValues

/// Key custody on PostgreSQL (issue 18 §2): the `StorageEngine` methods that adopt a rotated
/// keyring, re-wrap every subject's data key under the active KEK, report and retire key
/// versions, and MAC model artifacts, with the SQLite engine's semantics (KeyRotation.swift,
/// ArtifactMAC.swift) and its audit entries.
///
/// `profilevault.key_versions` is written by nodes only to add a version (INSERT) and to
/// retire one (UPDATE of `retired`); migration 5's trigger refuses anything else for every
/// role (a version un-retired, a key check or time changed, a row deleted).
extension PostgresProfiles {
    /// Starts using a keyring that gained versions (after `keys rotate`): records the key
    /// check of every new version and swaps the keys in use; a version the store knows must
    /// match its key check (integrity error otherwise, nothing recorded). The identity keys
    /// (pseudonym, blind index, model-artifact MAC) stay those of the identity version. Other
    /// nodes adopt the keyring on their own (each process holds its own keys); a version
    /// another node recorded first is checked, not recorded again.
    public func adopt(keyring: Keyring) throws {
        let fresh = try StoreKeys(keyring: keyring, identityVersion: keys.identityVersion, schema: schema)
        var checks: [(UInt32, [UInt8])] = []
        for v in keyring.versions { checks.append((v, try StoreKeys.keyCheck(keyring: keyring, version: v))) }
        let now = Int64(Date().timeIntervalSince1970)
        let wanted = checks
        try Self.wait("adopting the keyring") { [engine] in
            try await engine.transaction("adopting the keyring") { conn in
                // Never a keyring older than the store (as on SQLite: KeyringAdoption).
                var recorded: [(version: UInt32, retired: Bool)] = []
                for row in try await engine.rows(conn, "SELECT version, retired FROM profilevault.key_versions") {
                    let (v, r) = try row.decode((Int64, Bool).self)
                    guard let u = UInt32(exactly: v) else { throw PostgresStoreError(.integrity, "key_versions holds a version out of range: the database was edited") }
                    recorded.append((u, r))
                }
                var inUse: [UInt32] = []
                for row in try await engine.rows(conn, "SELECT DISTINCT kek_version FROM profilevault.subjects") {
                    if let u = UInt32(exactly: try row.decode(Int64.self)) { inUse.append(u) }
                }
                try KeyringAdoption.check(keyring, recorded: recorded, inUse: inUse)
                for (v, check) in wanted {
                    // ON CONFLICT DO NOTHING, then read back: a version another node recorded
                    // meanwhile is checked like one recorded long ago.
                    try await engine.exec(conn, """
                        INSERT INTO profilevault.key_versions(version, key_check, added_at, retired)
                        VALUES (\(Int64(v)), \(bytea(check)), \(now), false) ON CONFLICT (version) DO NOTHING
                        """)
                    guard let row = try await engine.rows(conn, "SELECT key_check FROM profilevault.key_versions WHERE version = \(Int64(v))").first,
                          constantTimeEqual(try row.decode(ByteBuffer.self).bytes, check) else {
                        throw PostgresStoreError(.integrity, "keyring version \(v) does not match the store's key check")
                    }
                }
            }
        }
        keyBox.withLock { $0 = fresh }
    }

    /// Re-wraps every DEK not yet under the active KEK, in batches of `batchSize` (one
    /// transaction and one `keys.rewrap` audit entry each, as on SQLite). Field ciphertext is
    /// untouched. Readers on every node keep working throughout: a subject's row holds either
    /// the old wrapping or the new one, switched atomically per batch.
    ///
    /// Concurrent ingest and erasure on other nodes: the batch is read, unwrapped and re-wrapped
    /// on this thread, then written in one transaction that holds the subjects lock exclusively
    /// (ingests take it shared, erasures exclusively: the write waits for batches in flight
    /// and never deadlocks with them) and updates a row only if it still holds the very
    /// wrapped key that was read (compare-and-set on `kek_version` and `wrapped_dek`). A subject
    /// re-ingested meanwhile keeps its new key (never overwritten by the re-wrap of its old
    /// one), an erased subject stays erased. A pass that lost such a race is followed by
    /// another over the subjects still under other versions, until a pass loses none. Returns
    /// the number of keys re-wrapped.
    public func rewrapAll(batchSize: Int, audit: AuditContext, progress: ((Int) -> Void)?) throws -> Int {
        guard batchSize >= 1 else { throw VaultError(.usage, "the batch size must be at least 1") }
        let current = keys
        let target = current.activeKEKVersion
        guard let newKEK = current.keks[target] else {
            throw VaultError(.configuration, "the keyring's active version \(target) is not usable")
        }
        let kek = try AESGCMKey(newKEK)
        var oldKEKs: [UInt32: AESGCMKey] = [:]
        let limit = Int64(batchSize)
        var total = 0
        while true {
            var lastID: Int64 = 0
            var lost = 0
            while true {
                let after = lastID
                let rows = try Self.wait("re-wrapping data keys") { [engine] in
                    try await engine.transaction("re-wrapping data keys") { conn in
                        var out: [(Int64, [UInt8], Int64, [UInt8])] = []
                        for row in try await engine.rows(conn, """
                            SELECT id, pseudonym, kek_version, wrapped_dek FROM profilevault.subjects
                            WHERE id > \(after) AND kek_version <> \(Int64(target)) ORDER BY id LIMIT \(limit)
                            """) {
                            let (id, p, v, w) = try row.decode((Int64, ByteBuffer, Int64, ByteBuffer).self)
                            out.append((id, p.bytes, v, w.bytes))
                        }
                        return out
                    }
                }
                if rows.isEmpty { break }
                var ids: [Int64] = [], olds: [Int64] = [], oldWrapped: [ByteBuffer] = [], newWrapped: [ByteBuffer] = []
                for (id, pseudo, version, wrapped) in rows {
                    // Checked before anything of this batch is written: a damaged row stops the
                    // rotation with an integrity error naming it.
                    guard let old = UInt32(exactly: version) else {
                        throw VaultError(.integrity, "subject row \(id): its key version column holds \(version), which is not a key version: the store was altered; rotation stopped, nothing of this batch written")
                    }
                    if oldKEKs[old] == nil {
                        guard let k = keys.keks[old] else {
                            throw VaultError(.integrity, "subject DEKs are wrapped with key version \(old), which the keyring does not hold")
                        }
                        oldKEKs[old] = try AESGCMKey(k)
                    }
                    let dek: SecureBytes
                    do {
                        guard let oldKEK = oldKEKs[old] else { throw VaultError(.internalFailure, "key version \(old) was not loaded") }
                        dek = try Envelope.unwrapDEK(wrapped, subject: pseudo, kekVersion: old, kek: oldKEK)
                    } catch {
                        throw VaultError(.integrity, "a wrapped data key (subject row \(id)) does not verify; rotation stopped, nothing of this batch written")
                    }
                    ids.append(id)
                    olds.append(version)
                    oldWrapped.append(bytea(wrapped))
                    newWrapped.append(bytea(try Envelope.wrapDEK(dek, subject: pseudo, kekVersion: target, kek: kek)))
                    lastID = id
                }
                let (i, o, ow, nw) = (ids, olds, oldWrapped, newWrapped)
                let n = try Self.wait("re-wrapping data keys") { [engine] in
                    try await engine.transaction("re-wrapping data keys") { conn in
                        try await engine.exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceSubjects), 0)")
                        let n = try await engine.rows(conn, """
                            UPDATE profilevault.subjects s SET kek_version = \(Int64(target)), wrapped_dek = t.nw
                            FROM unnest(\(i)::bigint[], \(o)::bigint[], \(ow)::bytea[], \(nw)::bytea[]) AS t(id, old, ow, nw)
                            WHERE s.id = t.id AND s.kek_version = t.old AND s.wrapped_dek = t.ow
                            RETURNING s.id
                            """).count
                        try await engine.appendLocked(conn, [audit.record("keys.rewrap", .update, detail: "to key version \(target)",
                                                                          counts: [("rewrapped", Int64(n))])])
                        return n
                    }
                }
                total += n
                lost += rows.count - n
                progress?(total)
            }
            // Every subject was seen once; those whose key changed under the pass (re-ingested
            // by another node with a keyring of an older active version) get another.
            if lost == 0 { break }
        }
        return total
    }

    /// The keyring's versions as the store sees them, and how many subjects' DEKs each KEK
    /// version wraps (as on SQLite).
    public func keyStatus(keyring: Keyring) throws -> KeyStatus {
        let identity = keys.identityVersion
        let per = try Self.wait("reading the key status") { [engine] in
            try await engine.transaction("reading the key status") { conn in
                var per: [UInt32: Int] = [:]
                for row in try await engine.rows(conn, "SELECT kek_version, count(*), min(id) FROM profilevault.subjects GROUP BY kek_version") {
                    let (v, n, first) = try row.decode((Int64, Int64, Int64).self)
                    guard let version = UInt32(exactly: v) else {
                        throw PostgresStoreError(.integrity, "subject row \(first): its key version column holds a number that is not a key version: the store was altered")
                    }
                    per[version] = Int(exactly: n) ?? 0
                }
                return per
            }
        }
        return KeyStatus.make(active: keyring.active, versions: keyring.versions.filter { !keyring.isRetired($0) },
                              retired: keyring.versions.filter { keyring.isRetired($0) },
                              identityVersion: identity, subjectsPerVersion: per)
    }

    /// Subjects whose DEK is wrapped under `version`.
    public func subjects(wrappedWith version: UInt32) throws -> Int {
        try Self.wait("counting subjects by key version") { [engine] in
            try await engine.transaction("counting subjects by key version") { conn in
                guard let row = try await engine.rows(conn, "SELECT count(*) FROM profilevault.subjects WHERE kek_version = \(Int64(version))").first else { return 0 }
                return Int(exactly: try row.decode(Int64.self)) ?? 0
            }
        }
    }

    /// Marks a version retired in the store (after the keyring file says so), with its
    /// `keys.retire` audit entry in the same transaction. A version the store never recorded
    /// changes nothing (the entry is written, as on SQLite). Once retired, no role can un-retire
    /// it (migration 5's trigger).
    public func markRetired(_ version: UInt32, audit: AuditContext) throws {
        try Self.wait("retiring a key version") { [engine] in
            try await engine.transaction("retiring a key version") { conn in
                try await engine.exec(conn, "UPDATE profilevault.key_versions SET retired = true WHERE version = \(Int64(version)) AND NOT retired")
                try await engine.appendLocked(conn, [audit.record("keys.retire", .update, detail: "key version \(version) retired")])
            }
        }
    }

    /// HMAC-SHA256 of `message` under the store's model-artifact key (HKDF label
    /// `pv:model-artifact` of the keyring's identity version), bound to this store by its
    /// random id (`meta.store_id`, made by init: one id for every node of the store), exactly
    /// as the SQLite store computes it: an artifact trained on another store with the same
    /// keyring is refused, one trained on any node of this store verifies on every other.
    public func modelArtifactMAC(_ message: [UInt8]) -> [UInt8] {
        keys.modelArtifactMAC.mac(Array("store \(storeID)\n".utf8) + message)
    }

    /// This store's random id (hex) from `meta.store_id`; empty only if the row is missing
    /// (then no MAC made before verifies), as on SQLite.
    public var storeID: String {
        (try? Self.wait("reading the store id") { [engine] in
            try await engine.transaction("reading the store id") { conn in
                try await engine.rows(conn, "SELECT value FROM profilevault.meta WHERE key = 'store_id'").first?.decode(String.self)
            }
        }) ?? ""
    }
}
