internal import Foundation
#if canImport(Glibc)
internal import Glibc
#endif

/// Where to read a keyring again: its file and its custody (the PKCS#11 URI for a sealed one).
/// A store keeps this, never the keyring, to take the KEKs of a keyring rotated on another node.
public struct KeyringLocation: Sendable, Equatable {
    public let path: String
    public let custody: KeyCustody

    public init(path: String, custody: KeyCustody) {
        self.path = path
        self.custody = custody
    }

    /// Reads the file again (and unseals it through the same token for a sealed keyring).
    public func load() throws(KeyringError) -> Keyring {
        switch custody {
        case .file: try Keyring.load(path: path)
        case .pkcs11(let uri): try Keyring.load(path: path, hsm: uri)
        }
    }
}

/// The sealed keyring file (key custody `pkcs11`): the keyring's JSON, secrets and all,
/// sealed with CKM_AES_GCM by a non-extractable AES-256 key in a PKCS#11 token.
///
///     {
///       "format": "profilevault-sealed-keyring",
///       "format_version": 1,
///       "custody": "pkcs11",
///       "token": "vault",
///       "object": "pv-seal",
///       "mechanism": "CKM_AES_GCM",
///       "iv": "<12 bytes, hex>",
///       "sealed": "<ciphertext || 16-byte tag, hex>"
///     }
///
/// The associated data binds the header: `"profilevault-sealed-keyring/v1" || 0x00`, then
/// `custody`, `token`, `object` and `mechanism`, each as a 4-byte big-endian length and its
/// UTF-8 bytes. A header changed to name another key, token or mechanism fails to open
/// (integrity), as does any changed byte of `iv` or `sealed`. The file names the key and the
/// token, never the module to load: the module path comes from the operator's URI only (a file
/// that chose the library to `dlopen` would be code execution for whoever can write it).
public struct SealedKeyring: Sendable {
    public static let format = "profilevault-sealed-keyring"
    public static let formatVersion = 1
    public static let mechanism = "CKM_AES_GCM"
    static let aadLabel: [UInt8] = Array("profilevault-sealed-keyring/v1".utf8) + [0]

    public let token: String
    public let object: String
    let iv: [UInt8]
    let sealed: [UInt8]

    private struct FileModel: Decodable {
        let format: String
        let format_version: Int
        let custody: String
        let token: String
        let object: String
        let mechanism: String
        let iv: String
        let sealed: String
    }

    private struct Probe: Decodable { let format: String? }

    /// The associated data of a sealed keyring with this header.
    static func aad(custody: String, token: String, object: String, mechanism: String) -> [UInt8] {
        var out = aadLabel
        for field in [custody, token, object, mechanism] {
            let bytes = Array(field.utf8)
            let n = UInt32(truncatingIfNeeded: bytes.count).bigEndian
            withUnsafeBytes(of: n) { out.append(contentsOf: $0) }
            out.append(contentsOf: bytes)
        }
        return out
    }

    /// The sealed keyring in `bytes`, or nil when they are not one (a plain keyring, or
    /// anything the plain parser will name the problem of).
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws(KeyringError) -> SealedKeyring? {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return nil }
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
        guard let probe = try? JSONDecoder().decode(Probe.self, from: data), probe.format == format else { return nil }
        func fail(_ reason: String) -> KeyringError { KeyringError(kind: .malformed, path: path, reason: reason) }
        let model: FileModel
        do { model = try JSONDecoder().decode(FileModel.self, from: data) } catch {
            throw fail("a sealed keyring with a missing or mistyped field (format, format_version, custody, token, object, mechanism, iv, sealed)")
        }
        guard model.format_version == formatVersion else {
            throw fail("field format_version: sealed keyring version \(model.format_version) is not supported (this build reads \(formatVersion))")
        }
        guard model.custody == "pkcs11" else { throw fail("field custody: this build opens sealed keyrings of custody pkcs11") }
        guard model.mechanism == mechanism else { throw fail("field mechanism: this build unseals with \(mechanism)") }
        guard let iv = hexDecoded(model.iv), iv.count == 12 else { throw fail("field iv: expected 24 hex characters") }
        guard let sealed = hexDecoded(model.sealed), sealed.count > 16 else { throw fail("field sealed: expected the ciphertext and tag in hex") }
        guard !model.token.isEmpty, model.token.utf8.count <= 32, !model.object.isEmpty, model.object.utf8.count <= 256 else {
            throw fail("fields token and object: a token label (1 to 32 bytes) and a key label (1 to 256 bytes)")
        }
        return SealedKeyring(token: model.token, object: model.object, iv: iv, sealed: sealed)
    }

    /// The URI to unseal with: the operator's, with the token and object of the file when it
    /// names none; one that names another token or key is refused (it cannot be the sealing key).
    func resolve(_ uri: PKCS11URI, path: String) throws(KeyringError) -> PKCS11URI {
        var u = uri
        if let t = u.token, t != token {
            throw KeyringError(kind: .custody, path: path, reason: "the keyring is sealed on token \(PKCS11Token.quoted(token)), not on the URI's token \(PKCS11Token.quoted(t))")
        }
        if let o = u.object, o != object {
            throw KeyringError(kind: .custody, path: path, reason: "the keyring is sealed by key \(PKCS11Token.quoted(object)), not by the URI's object \(PKCS11Token.quoted(o))")
        }
        u.token = token
        u.object = object
        return u
    }

    /// Unseals through the token into a buffer wiped after `body` returns.
    func unseal<R>(with uri: PKCS11URI, path: String,
                   _ body: (UnsafeRawBufferPointer, PKCS11URI) throws(KeyringError) -> R) throws(KeyringError) -> R {
        let u = try resolve(uri, path: path)
        let aad = Self.aad(custody: "pkcs11", token: token, object: object, mechanism: Self.mechanism)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: sealed.count, alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        defer { OPENSSL_cleanse_bytes(buffer); buffer.deallocate() }
        let n = try PKCS11Token.withSession(u, place: path) { (session: PKCS11Session) throws(KeyringError) -> Int in
            let key = try session.sealingKey()
            return try session.gcmDecrypt(key: key, iv: iv, aad: aad, input: sealed, plaintextOut: buffer)
        }
        return try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), u)
    }

    /// The sealed file's bytes for the keyring JSON `plaintext`, sealed by the URI's key
    /// (which must name its token and object).
    static func seal(_ plaintext: UnsafeRawBufferPointer, with uri: PKCS11URI, path: String) throws(KeyringError) -> [UInt8] {
        guard let token = uri.token, let object = uri.object else {
            throw KeyringError(kind: .custody, path: path, reason: "sealing needs a URI that names the token and the key: pkcs11:token=LABEL;object=LABEL?module-path=...")
        }
        let aad = aad(custody: "pkcs11", token: token, object: object, mechanism: mechanism)
        let iv = SecureRandom.bytes(12)
        let sealed = try PKCS11Token.withSession(uri, place: path) { (session: PKCS11Session) throws(KeyringError) -> [UInt8] in
            let key = try session.sealingKey()
            return try session.gcmEncrypt(key: key, iv: iv, aad: aad, plaintext: plaintext)
        }
        var out = "{\n  \"format\": \"\(format)\",\n  \"format_version\": \(formatVersion),\n  \"custody\": \"pkcs11\",\n"
        out += "  \"token\": \(jsonString(token)),\n  \"object\": \(jsonString(object)),\n"
        out += "  \"mechanism\": \"\(mechanism)\",\n  \"iv\": \"\(hex(iv))\",\n  \"sealed\": \"\(hex(sealed))\"\n}\n"
        return Array(out.utf8)
    }

    private static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    private static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }

    private static func hexDecoded(_ s: String) -> [UInt8]? { Hex.decode(s) }
}

extension KeyCustody {
    /// Whether the root of trust can be reached now: nil when it can (always, for a file),
    /// else why not (the PKCS#11 token is not present). Needs no PIN and touches no key: the
    /// service's health check.
    public var unavailability: String? {
        switch self {
        case .file: nil
        case .pkcs11(let uri): PKCS11Token.problem(uri)
        }
    }
}

extension Keyring {
    /// Creates the sealing key the URI names on its token: AES-256, CKA_SENSITIVE true,
    /// CKA_EXTRACTABLE false, private, for encrypt and decrypt only. Refused when any object
    /// on the token already has that label.
    public static func createSealingKey(_ uri: PKCS11URI, place: String) throws(KeyringError) {
        guard uri.token != nil, uri.object != nil else {
            throw KeyringError(kind: .custody, path: place, reason: "creating a sealing key needs a URI that names the token and the key: pkcs11:token=LABEL;object=LABEL?module-path=...")
        }
        try PKCS11Token.withSession(uri, readWrite: true, place: place) { (session: PKCS11Session) throws(KeyringError) in
            try session.generateKey()
        }
    }
}

extension Keyring {
    /// The token and key a sealed keyring file names, or nil when the file is not a sealed
    /// keyring (or cannot be read). Opens nothing: for messages and the health probe.
    public static func sealedHeader(path: String) -> (token: String, object: String)? {
        let sealed = try? withFileBytes(path: path) { (bytes: UnsafeRawBufferPointer) throws(KeyringError) -> SealedKeyring? in
            try SealedKeyring.parse(bytes, path: path)
        }
        guard let s = sealed ?? nil else { return nil }
        return (s.token, s.object)
    }

    /// Whether `other` holds the same key versions with the same secrets (compared through
    /// their key-check keys), the same active version and the same retired versions.
    public func hasSameKeys(as other: Keyring) -> Bool {
        guard versions == other.versions, active == other.active else { return false }
        for v in versions {
            guard isRetired(v) == other.isRetired(v),
                  let a = try? derive(.keyCheck, version: v), let b = try? other.derive(.keyCheck, version: v), a == b
            else { return false }
        }
        return true
    }

    /// Renames `temporary` (a keyring just written and checked) over `path`, then overwrites
    /// the old file's bytes with zeros through a descriptor opened before the rename and
    /// fsyncs them: `path` names the old or the new keyring at every moment, and the old
    /// (plaintext) keyring's bytes do not stay in its inode. Best effort below the file system
    /// (copy-on-write file systems, SSD remapping and backups may keep old blocks: see
    /// docs/keys-and-encryption.md).
    public static func install(_ temporary: String, over path: String) throws(KeyringError) {
        let old = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
        defer { if old >= 0 { close(old) } }
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw KeyringError(kind: .io, path: path, reason: "cannot rename \(temporary) into place: \(String(cString: strerror(e)))")
        }
        syncDirectory(of: path)
        guard old >= 0 else { return }
        var st = stat()
        guard fstat(old, &st) == 0, st.st_size > 0, st.st_size <= off_t(maximumFileSize) else { return }
        let zeros = [UInt8](repeating: 0, count: Int(st.st_size))
        _ = zeros.withUnsafeBytes { pwrite(old, $0.baseAddress, $0.count, 0) }
        _ = fsync(old)
    }
}
