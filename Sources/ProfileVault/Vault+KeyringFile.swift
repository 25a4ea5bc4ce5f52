import Foundation
import VaultStore
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// A running service and a keyring file that changes under it: `keys rotate` on another node
/// (or this one, or an operator copying the rotated file to this host) adds a key version and
/// re-wraps every data key under it. Readers take the new KEKs on their own the first time
/// they meet one (for unwrapping only); ``adoptKeyringFile()`` switches the rest: it checks
/// every version against the store's key checks and from then on wraps new data keys with
/// the keyring's active version. `serve` calls it when ``keyringFileStamp()`` changes.
extension Vault {
    /// The keyring file's identity as it is now: device, inode, size and modification time
    /// (an atomic replace gives a new inode). Nil when the file cannot be examined.
    public func keyringFileStamp() -> String? {
        var st = stat()
        guard stat(configuration.keysPath, &st) == 0 else { return nil }
        return "\(st.st_dev):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    /// Adopts the keyring file as it is now: every version must match the store's key check
    /// (integrity error otherwise, and the keys in use stay as they were); versions the store
    /// lacks are recorded; new data keys are wrapped with the file's active version. Audited as
    /// `keys.adopt` with the versions, never a key. Needs no permission: it changes no data and
    /// can only take keys the store already vouches for.
    public func adoptKeyringFile() throws -> (active: UInt32, versions: [UInt32]) {
        try audited("keys.adopt", .update, permission: nil) { context in
            let ring = try loadKeyring()
            try store.adopt(keyring: ring)
            let versions = ring.versions.filter { !ring.isRetired($0) }
            try store.audit([context.record("keys.adopt", .update,
                                            detail: "key versions \(versions.map(String.init).joined(separator: ",")), active \(ring.active)")])
            return (ring.active, versions)
        }
    }
}
