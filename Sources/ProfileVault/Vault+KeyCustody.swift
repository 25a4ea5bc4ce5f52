import Foundation
public import VaultCrypto
import VaultStore
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// Where a keyring's root of trust lives: `.file` or `.pkcs11(uri)` (VaultCrypto's type, named
/// here so the interfaces need not import the crypto layer).
public typealias KeyCustody = VaultCrypto.KeyCustody

/// What `keys generate --hsm`, `keys seal` and `keys unseal` produced: the keyring file, its
/// versions and where its root of trust now lives.
public struct KeyCustodyResult: Sendable {
    public var path: String
    public var versions: [UInt32]
    public var active: UInt32
    public var custody: KeyCustody
}

/// Key custody in a PKCS#11 token (issue 22; docs/keys-and-encryption.md): the keyring's root
/// secrets sealed by a non-extractable AES-256 key that never leaves the token.
extension Vault {
    /// `keys generate --hsm URI --out FILE`: creates the sealing key on the token (AES-256,
    /// sensitive, not extractable; refused when any object already has its label) and a fresh
    /// keyring sealed by it at `path` (new, 0600; never over an existing file: exit 73). Needs
    /// no store (like `keys generate`). The written file is opened again through the token
    /// before this returns.
    public static func generateSealedKeyring(at path: String, hsm: String, note: String) throws -> KeyCustodyResult {
        guard let uri = try parseHSM(hsm) else { throw VaultError(.usage, "--hsm: a pkcs11: URI is required") }
        // Before the token is touched: a key made for a file that cannot be written is litter.
        var st = stat()
        if lstat(path, &st) == 0 {
            throw VaultError(.cannotCreate, "keyring \(path): already exists; refusing to overwrite a keyring (move it away first, or choose another path)")
        }
        do throws(KeyringError) {
            try Keyring.createSealingKey(uri, place: path)
        } catch {
            throw keyringError(error)
        }
        let ring = Keyring.generate(note: note).withCustody(.pkcs11(uri))
        do throws(KeyringError) {
            try ring.write(to: path)
        } catch {
            throw error.kind == .io ? VaultError(.cannotCreate, error.description) : keyringError(error)
        }
        let opened = try loadKeyring(path: path, hsm: hsm)
        guard opened.hasSameKeys(as: ring) else {
            throw VaultError(.integrity, "keyring \(path): the sealed keyring just written does not open to the keys it was sealed with")
        }
        return KeyCustodyResult(path: path, versions: opened.versions, active: opened.active, custody: opened.custody)
    }

    /// `keys seal --hsm URI` (permission `keys`, audited `keys.seal`): the store's file keyring
    /// becomes a keyring sealed by the URI's key, in place. The sealed form is written beside
    /// it (`KEYRING.sealed.new`, 0600, fsync), opened again through the token and compared
    /// key for key with the file keyring; only then is it renamed over the keyring, and the
    /// old file's bytes are overwritten with zeros (``Keyring/install(_:over:)``). At every
    /// moment the keyring path names a complete keyring.
    public func sealKeyring(hsm: String) throws -> KeyCustodyResult {
        try audited("keys.seal", .update, permission: "keys") { context in
            guard let uri = try Self.parseHSM(hsm) else { throw VaultError(.usage, "--hsm: a pkcs11: URI is required") }
            guard uri.token != nil, uri.object != nil else {
                throw VaultError(.usage, "--hsm: sealing needs a URI that names the token and the key (pkcs11:token=LABEL;object=LABEL?module-path=...)")
            }
            let path = configuration.keysPath
            if let sealed = Keyring.sealedHeader(path: path) {
                throw VaultError(.usage, "keyring \(path) is already sealed (by key \(Self.label(sealed.object)) on token \(Self.label(sealed.token))); to move it to another key, unseal it to a new file first")
            }
            // The plaintext keyring is zeroed in place after the rename: that works only on a
            // regular file with this one name. Through a symbolic link the link would be replaced
            // and the plaintext target left whole; with a second hard link that other name would
            // be zeroed too (or, for a backup copy, silently destroyed). Both are refused.
            var st = stat()
            guard lstat(path, &st) == 0 else { throw VaultError(.configuration, "keyring \(path): cannot be examined: \(String(cString: strerror(errno)))") }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                throw VaultError(.configuration, "keyring \(path) is a symbolic link: sealing replaces the keyring file and zeroes its old bytes, so seal the file it points to (--keys TARGET) and point the link again afterwards")
            }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw VaultError(.configuration, "keyring \(path) is not a regular file") }
            if st.st_nlink > 1 {
                throw VaultError(.configuration, "keyring \(path) has \(st.st_nlink) hard links: the plaintext keyring would stay readable (or be zeroed) under the other names; remove them (or copy the keyring to a file of its own) and seal again")
            }
            let ring = try Self.loadKeyring(path: path)
            // The keyring this store was opened with, not another one put in its place since.
            try store.adopt(keyring: ring)
            let temporary = path + ".sealed.new"
            do throws(KeyringError) {
                try ring.withCustody(.pkcs11(uri)).write(to: temporary)
            } catch {
                throw Self.keyringError(error)
            }
            let reopened: Keyring
            do {
                reopened = try Self.loadKeyring(path: temporary, hsm: hsm)
            } catch {
                unlink(temporary)
                throw error
            }
            guard reopened.hasSameKeys(as: ring) else {
                unlink(temporary)
                throw VaultError(.integrity, "keyring \(path): the sealed keyring does not open to the same keys; the file keyring is unchanged")
            }
            do throws(KeyringError) { try Keyring.install(temporary, over: path) } catch { throw Self.keyringError(error) }
            try store.audit([context.record("keys.seal", .update,
                                            detail: "keyring sealed by PKCS#11 key \(Self.label(uri.object ?? "")) on token \(Self.label(uri.token ?? "")) (\(uri.moduleName)); versions \(ring.versions.map(String.init).joined(separator: ","))")])
            return KeyCustodyResult(path: path, versions: reopened.versions, active: reopened.active, custody: reopened.custody)
        }
    }

    /// `keys unseal --out FILE` (permission `keys`, audited `keys.unseal`): writes the sealed
    /// keyring's keys as a plain file keyring to a new file (0600, O_EXCL; never over anything:
    /// exit 73), for a privacy officer leaving the HSM (or escrowing a copy). The sealed keyring
    /// stays as it is. The file is written, then the audit entry committed; if the entry cannot
    /// be committed the file is removed again, so no plaintext keyring exists unaudited.
    public func unsealKeyring(to out: String) throws -> KeyCustodyResult {
        try audited("keys.unseal", .read, permission: "keys") { context in
            let ring = try loadKeyring()
            guard case .pkcs11(let uri) = ring.custody else {
                throw VaultError(.usage, "keyring \(configuration.keysPath) is not sealed (its root of trust is the file itself); nothing to unseal")
            }
            if protectedFiles.contains(where: { $0.path == out }) {
                throw VaultError(.cannotCreate, "\(out): is a file of this store (keyring, store or policy); refusing to write there")
            }
            let written: Keyring
            do throws(KeyringError) {
                written = try ring.withCustody(.file).write(to: out)
            } catch {
                throw error.kind == .io ? VaultError(.cannotCreate, error.description) : Self.keyringError(error)
            }
            do {
                try store.audit([context.record("keys.unseal", .read,
                                                detail: "keyring unsealed from PKCS#11 key \(Self.label(uri.object ?? "")) on token \(Self.label(uri.token ?? "")) to a new file keyring \(URL(fileURLWithPath: out).lastPathComponent); versions \(ring.versions.map(String.init).joined(separator: ","))")])
            } catch {
                unlink(out)
                throw error
            }
            return KeyCustodyResult(path: out, versions: written.versions, active: written.active, custody: .file)
        }
    }

    /// The state of the key custody for the health check: nil for a file keyring (nothing to
    /// reach); for a sealed one, whether its PKCS#11 token is present now (no PIN, no key
    /// touched). The running service holds its keys in memory and keeps serving without the
    /// token; what needs the token (adopting a changed keyring file, rotation) fails with 503
    /// until it is back.
    public func keyCustodyAvailable() -> Bool? {
        guard let header = Keyring.sealedHeader(path: configuration.keysPath) else { return nil }
        guard let uri = try? Self.parseHSM(configuration.hsmURI) else { return false }
        var resolved = uri
        resolved.token = header.token
        resolved.object = header.object
        return KeyCustody.pkcs11(resolved).unavailability == nil
    }

    /// A token or key label as messages show it: quoted when short printable ASCII.
    static func label(_ s: String) -> String {
        s.utf8.count <= 64 && s.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7f && $0 != "\"" }) ? "\"\(s)\"" : "(label not shown)"
    }
}
