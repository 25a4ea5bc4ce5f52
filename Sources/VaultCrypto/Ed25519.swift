internal import COpenSSL

/// Owns one `EVP_PKEY` and frees it in `deinit`.
///
/// `@unchecked Sendable` is safe: the key is never modified after creation, and OpenSSL 3
/// allows concurrent signing and verification with one `EVP_PKEY` (each operation uses its own
/// `EVP_MD_CTX`; the key's internal caches are lock-protected).
final class EVPKey: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }  // private key bytes are cleansed by OpenSSL
}

/// An Ed25519 signing key (RFC 8032), e.g. the audit log's checkpoint signer.
public struct Ed25519PrivateKey: Sendable {
    private let key: EVPKey
    /// The matching verification key.
    public let publicKey: Ed25519PublicKey

    /// The key whose 32-byte RFC 8032 private key ("seed") is `seed`.
    public init(seed: SecureBytes) throws(CryptoError) {
        guard seed.count == 32 else { throw .invalidKeySize(seed.count) }
        let pkey = seed.withBytes { s in
            EVP_PKEY_new_raw_private_key(pv_evp_pkey_ed25519(), nil, s.baseAddress!.assumingMemoryBound(to: UInt8.self), s.count)
        }
        guard let pkey else { throw openSSLError("EVP_PKEY_new_raw_private_key(ED25519)") }
        let key = EVPKey(pkey)
        var raw = [UInt8](repeating: 0, count: 32)
        var length = raw.count
        guard EVP_PKEY_get_raw_public_key(pkey, &raw, &length) == 1, length == 32 else {
            throw openSSLError("EVP_PKEY_get_raw_public_key")
        }
        self.key = key
        self.publicKey = try Ed25519PublicKey(rawRepresentation: raw)
    }

    /// The 64-byte Ed25519 signature of `message` (deterministic).
    public func signature(for message: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw openSSLError("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestSignInit(md, nil, nil, nil, key.pointer) == 1 else { throw openSSLError("EVP_DigestSignInit") }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = signature.count
        var placeholder: UInt8 = 0
        let rc = message.withUnsafeBytes { m in
            withUnsafePointer(to: &placeholder) { empty in
                EVP_DigestSign(md, &signature, &length, m.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty, m.count)
            }
        }
        guard rc == 1, length == 64 else { throw openSSLError("EVP_DigestSign") }
        return signature
    }
}

/// An Ed25519 verification key. Auditors need only this to check signed audit checkpoints.
public struct Ed25519PublicKey: Sendable, Equatable {
    private let key: EVPKey
    /// The 32-byte RFC 8032 encoding.
    public let rawRepresentation: [UInt8]

    /// The key with the 32-byte RFC 8032 encoding `rawRepresentation`.
    public init(rawRepresentation: [UInt8]) throws(CryptoError) {
        guard rawRepresentation.count == 32 else { throw .invalidKeySize(rawRepresentation.count) }
        let pkey = rawRepresentation.withUnsafeBytes { r in
            EVP_PKEY_new_raw_public_key(pv_evp_pkey_ed25519(), nil, r.baseAddress!.assumingMemoryBound(to: UInt8.self), r.count)
        }
        guard let pkey else { throw openSSLError("EVP_PKEY_new_raw_public_key(ED25519)") }
        self.key = EVPKey(pkey)
        self.rawRepresentation = rawRepresentation
    }

    /// Parses a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) holding an Ed25519 key.
    public init(pemRepresentation: String) throws(CryptoError) {
        var pem = pemRepresentation
        let pkey: OpaquePointer? = pem.withUTF8 { utf8 in
            guard utf8.count <= Int(Int32.max), let bio = BIO_new_mem_buf(utf8.baseAddress, Int32(utf8.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        guard let pkey else {
            clearOpenSSLErrors()
            throw .invalidInput("not a PEM public key (expected -----BEGIN PUBLIC KEY-----)")
        }
        let key = EVPKey(pkey)
        guard EVP_PKEY_get_id(pkey) == pv_evp_pkey_ed25519() else {
            throw .invalidInput("PEM public key is not an Ed25519 key")
        }
        var raw = [UInt8](repeating: 0, count: 32)
        var length = raw.count
        guard EVP_PKEY_get_raw_public_key(pkey, &raw, &length) == 1, length == 32 else {
            throw openSSLError("EVP_PKEY_get_raw_public_key")
        }
        self.key = key
        self.rawRepresentation = raw
    }

    /// SubjectPublicKeyInfo PEM, `-----BEGIN PUBLIC KEY-----` ... with a trailing newline.
    public var pemRepresentation: String {
        guard let bio = BIO_new(BIO_s_mem()) else { preconditionFailure("\(openSSLError("BIO_new"))") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PUBKEY(bio, key.pointer) == 1 else { preconditionFailure("\(openSSLError("PEM_write_bio_PUBKEY"))") }
        var data: UnsafeMutablePointer<CChar>?
        let length = pv_bio_get_mem_data(bio, &data)
        guard length > 0, let data else { preconditionFailure("\(openSSLError("BIO_get_mem_data"))") }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }

    /// True when `signature` is a valid Ed25519 signature of `message` by this key.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        guard let md = EVP_MD_CTX_new() else { clearOpenSSLErrors(); return false }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit(md, nil, nil, nil, key.pointer) == 1 else { clearOpenSSLErrors(); return false }
        var placeholder: UInt8 = 0
        let rc = signature.withUnsafeBytes { s in
            message.withUnsafeBytes { m in
                withUnsafePointer(to: &placeholder) { empty in
                    EVP_DigestVerify(md, s.baseAddress!.assumingMemoryBound(to: UInt8.self), s.count,
                                     m.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty, m.count)
                }
            }
        }
        if rc != 1 { clearOpenSSLErrors() }
        return rc == 1
    }

    public static func == (lhs: Ed25519PublicKey, rhs: Ed25519PublicKey) -> Bool {
        lhs.rawRepresentation == rhs.rawRepresentation
    }
}
