internal import COpenSSL

/// HMAC-SHA256 under one fixed key, reusable for many messages.
///
/// Owns one keyed `EVP_MAC_CTX` (OpenSSL "HMAC", digest SHA-256). Each ``mac(_:)-5zl0d``
/// re-initialises it with a NULL key, which reuses the precomputed inner/outer pad state
/// (measured faster than `EVP_MAC_CTX_dup` of a template per message: see docs).
///
/// **Not thread-safe**: the context is mutated by every call. Use one instance per thread or
/// task (deliberately not `Sendable`).
public final class HMACSHA256Key {
    /// Length of a full HMAC-SHA256 tag.
    public static let byteCount = 32

    private let mac: OpaquePointer
    private let context: OpaquePointer

    /// Keys a MAC context. Any key length is accepted, including 0 (keys longer than the
    /// 64-byte block are hashed first, as RFC 2104 says).
    public init(_ key: SecureBytes) throws(CryptoError) {
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else { throw openSSLError("EVP_MAC_fetch(HMAC)") }
        guard let context = EVP_MAC_CTX_new(mac) else {
            EVP_MAC_free(mac)
            throw openSSLError("EVP_MAC_CTX_new")
        }
        var placeholder: UInt8 = 0  // OpenSSL reads a NULL key as "keep the old key"; an empty key needs a real pointer
        let rc = key.withBytes { k in
            withUnsafePointer(to: &placeholder) { empty in
                pv_hmac_sha256_init(context, k.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty, k.count)
            }
        }
        guard rc == 1 else {
            let error = openSSLError("EVP_MAC_init(HMAC-SHA256)")
            EVP_MAC_CTX_free(context)
            EVP_MAC_free(mac)
            throw error
        }
        self.mac = mac
        self.context = context
    }

    deinit {
        EVP_MAC_CTX_free(context)  // cleanses the keyed state
        EVP_MAC_free(mac)
    }

    /// The 32-byte HMAC-SHA256 of `message`.
    ///
    /// Once the key is set up, OpenSSL can only fail here on memory exhaustion or a broken
    /// library; that stops the process (`preconditionFailure`) instead of returning a wrong MAC.
    public func mac(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.byteCount) { buffer, initialized in
            macRaw(message, out: buffer.baseAddress!)
            initialized = Self.byteCount
        }
    }

    /// The 32-byte HMAC-SHA256 of `message`.
    public func mac(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { mac($0) }
    }

    /// Writes the 32-byte MAC of `message` to `out`.
    @inline(__always)
    func macRaw(_ message: UnsafeRawBufferPointer, out: UnsafeMutablePointer<UInt8>) {
        guard pv_hmac_reinit(context) == 1 else {
            preconditionFailure("\(openSSLError("EVP_MAC_init(reinit)"))")
        }
        if message.count > 0 {
            guard EVP_MAC_update(context, message.baseAddress!.assumingMemoryBound(to: UInt8.self), message.count) == 1 else {
                preconditionFailure("\(openSSLError("EVP_MAC_update"))")
            }
        }
        var length = 0
        guard EVP_MAC_final(context, out, &length, Self.byteCount) == 1, length == Self.byteCount else {
            preconditionFailure("\(openSSLError("EVP_MAC_final"))")
        }
    }
}

/// One-shot HMAC-SHA256.
public enum HMACSHA256 {
    /// The 32-byte HMAC-SHA256 of `message` under `key` (any length).
    public static func mac(key: SecureBytes, message: [UInt8]) throws(CryptoError) -> [UInt8] {
        try HMACSHA256Key(key).mac(message)
    }
}

/// HKDF-SHA256 (RFC 5869), extract-then-expand, through OpenSSL's EVP_KDF "HKDF".
public enum HKDFSHA256 {
    /// The largest output HKDF-SHA256 allows: 255 blocks of 32 bytes.
    public static let maximumOutputByteCount = 255 * 32

    /// Derives `outputByteCount` bytes (1...8160). An empty `salt` means a salt of 32 zero
    /// bytes, as RFC 5869 says. Throws ``CryptoError/invalidInput(_:)`` for an output size
    /// outside that range.
    public static func derive(ikm: SecureBytes, salt: [UInt8], info: [UInt8], outputByteCount: Int) throws(CryptoError) -> SecureBytes {
        guard outputByteCount > 0, outputByteCount <= maximumOutputByteCount else {
            throw .invalidInput("HKDF-SHA256 output size must be 1...\(maximumOutputByteCount) bytes, got \(outputByteCount)")
        }
        guard let kdf = EVP_KDF_fetch(nil, "HKDF", nil) else { throw openSSLError("EVP_KDF_fetch(HKDF)") }
        defer { EVP_KDF_free(kdf) }
        guard let context = EVP_KDF_CTX_new(kdf) else { throw openSSLError("EVP_KDF_CTX_new") }
        defer { EVP_KDF_CTX_free(context) }  // cleanses the copied key
        return try SecureBytes(count: outputByteCount) { (out: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            let rc = ikm.withBytes { k in
                salt.withUnsafeBytes { s in
                    info.withUnsafeBytes { i in
                        pv_hkdf_sha256(
                            context,
                            k.baseAddress?.assumingMemoryBound(to: UInt8.self), k.count,
                            s.baseAddress?.assumingMemoryBound(to: UInt8.self), s.count,
                            i.baseAddress?.assumingMemoryBound(to: UInt8.self), i.count,
                            out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count)
                    }
                }
            }
            guard rc == 1 else { throw openSSLError("EVP_KDF_derive(HKDF-SHA256)") }
        }
    }
}
