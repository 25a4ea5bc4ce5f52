import Foundation
import GRDB
import VaultCrypto

extension ProfileStore {
    /// HMAC-SHA256 of `message` under the store's model-artifact key (HKDF label
    /// `pv:model-artifact` of the keyring's identity version), bound to this store: the message
    /// is prefixed with the store's random id (`meta.store_id`, made at `init` or by migration
    /// `v8-store-id`), so only a holder of the keyring can make a MAC that verifies, and an
    /// artifact trained by another store with the same keyring (the public example keyring,
    /// say) is refused too.
    public func modelArtifactMAC(_ message: [UInt8]) -> [UInt8] {
        keys.modelArtifactMAC.mac(Array("store \(storeID)\n".utf8) + message)
    }

    /// This store's random id (hex); empty only if the meta row was deleted from the file.
    public var storeID: String {
        (try? pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'store_id'") }) ?? ""
    }

    static func registerStoreIDMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v8-store-id") { db in
            let id = SecureRandom.bytes(16).map { String(format: "%02x", $0) }.joined()
            try db.execute(sql: "INSERT OR IGNORE INTO meta(key, value) VALUES ('store_id', ?)", arguments: [id])
        }
    }
}
