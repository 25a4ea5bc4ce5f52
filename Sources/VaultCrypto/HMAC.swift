internal import COpenSSL

/// The "HMAC" `EVP_MAC`, fetched once for the process.
///
/// Fetching walks OpenSSL's provider method store under a global lock; doing it once instead
/// of per key keeps that lock off the request path. `@unchecked Sendable`: a fetched algorithm
/// is immutable and reference-counted atomically, and OpenSSL 3 allows sharing it between
/// threads. It lives as long as the process (never freed).
final class FetchedMAC: @unchecked Sendable {
    static let hmac = FetchedMAC("HMAC")
    let pointer: OpaquePointer?
    private init(_ name: String) { pointer = EVP_MAC_fetch(nil, name, nil) }
}

/// HMAC-SHA256 under one fixed key, reusable for many messages.
///
/// Owns one keyed `EVP_MAC_CTX` (OpenSSL "HMAC", digest SHA-256). Each ``mac(_:)-5zl0d``
/// re-initialises it with a NULL key, which reuses the precomputed inner/outer pad state
/// (measured faster than `EVP_MAC_CTX_dup` of a template per message: see docs).
///
/// **Not thread-safe**: the context is mutated by every call. Use one instance per thread or
/// task (deliberately not `Sendable`), or ``SharedHMACSHA256Key`` for a key many threads use.
public final class HMACSHA256Key {
    /// Length of a full HMAC-SHA256 tag.
    public static let byteCount = 32

    let context: OpaquePointer

    /// Keys a MAC context. Any key length is accepted, including 0 (keys longer than the
    /// 64-byte block are hashed first, as RFC 2104 says).
    public init(_ key: SecureBytes) throws(CryptoError) {
        guard let mac = FetchedMAC.hmac.pointer else { throw openSSLError("EVP_MAC_fetch(HMAC)") }
        guard let context = EVP_MAC_CTX_new(mac) else { throw openSSLError("EVP_MAC_CTX_new") }
        var placeholder: UInt8 = 0  // OpenSSL reads a NULL key as "keep the old key"; an empty key needs a real pointer
        let rc = key.withBytes { k in
            withUnsafePointer(to: &placeholder) { empty in
                pv_hmac_sha256_init(context, k.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty, k.count)
            }
        }
        guard rc == 1 else {
            let error = openSSLError("EVP_MAC_init(HMAC-SHA256)")
            EVP_MAC_CTX_free(context)
            throw error
        }
        self.context = context
    }

    /// Adopts a keyed context (an `EVP_MAC_CTX_dup` of another key's); frees it in `deinit`.
    init(adopting context: OpaquePointer) {
        self.context = context
    }

    deinit {
        EVP_MAC_CTX_free(context)  // cleanses the keyed state (the key copy and the pad digests)
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

    /// A new, independent instance under the same key (`EVP_MAC_CTX_dup`: copies the keyed
    /// pad state, no key schedule or algorithm fetch). Reads this context only.
    func duplicate() -> HMACSHA256Key {
        guard let copy = EVP_MAC_CTX_dup(context) else { preconditionFailure("\(openSSLError("EVP_MAC_CTX_dup"))") }
        return HMACSHA256Key(adopting: copy)
    }
}

/// HMAC-SHA256 under one fixed key, for many threads at once (e.g. a store's pseudonym key,
/// used by every request).
///
/// Keeps a keyed template context, set up once, and a pool of working contexts duplicated from
/// it (`EVP_MAC_CTX_dup`): a call borrows an idle one (or duplicates a new one), re-initialises
/// it for the message and returns it to the pool. So no call fetches the algorithm, allocates a
/// context or re-derives the pads once the pool has warmed up to the number of concurrent callers.
///
/// Every context holding key material is owned by this object and freed (cleansed by
/// `EVP_MAC_CTX_free`) in its `deinit`: nothing keyed outlives the key object. A borrowed
/// context never leaves `mac(_:)`, which keeps the object alive while it runs.
///
/// `@unchecked Sendable`: the template is only read (duplicated), and only under `lock`; the
/// pool array is only touched under `lock`; a borrowed context is used by one thread at a time.
public final class SharedHMACSHA256Key: @unchecked Sendable {
    /// Idle contexts kept for reuse; more concurrent callers than this still work, their extra
    /// contexts are freed after use.
    static let maximumIdle = 64

    private let template: HMACSHA256Key
    private let lock = CryptoLock()
    private var idle: [HMACSHA256Key] = []

    /// Keys the template context; the same key lengths as ``HMACSHA256Key/init(_:)``.
    public init(_ key: SecureBytes) throws(CryptoError) {
        template = try HMACSHA256Key(key)
    }

    /// The 32-byte HMAC-SHA256 of `message`. Safe to call from any number of threads at once.
    public func mac(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        let context = borrow()
        defer { giveBack(context) }
        return context.mac(message)
    }

    /// The 32-byte HMAC-SHA256 of `message`.
    public func mac(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { mac($0) }
    }

    /// Number of idle pooled contexts (for tests).
    var idleCount: Int { lock.withLock { idle.count } }

    /// The idle pooled contexts (for tests that check they go away with the key).
    func idleContextsForTesting() -> [HMACSHA256Key] { lock.withLock { idle } }

    private func borrow() -> HMACSHA256Key {
        lock.withLock { idle.popLast() ?? template.duplicate() }
    }

    /// Returns a context to the pool; one beyond ``maximumIdle`` is freed (and cleansed) when
    /// the caller's reference goes.
    private func giveBack(_ context: HMACSHA256Key) {
        lock.withLock {
            if idle.count < Self.maximumIdle { idle.append(context) }
        }
    }
}

/// A mutex from OpenSSL (`CRYPTO_THREAD_lock_new`), so VaultCrypto needs no Foundation.
/// `@unchecked Sendable`: it is a lock.
final class CryptoLock: @unchecked Sendable {
    private let lock: UnsafeMutableRawPointer

    init() {
        guard let lock = CRYPTO_THREAD_lock_new() else { preconditionFailure("CRYPTO_THREAD_lock_new failed") }
        self.lock = lock
    }

    deinit { CRYPTO_THREAD_lock_free(lock) }

    @inline(__always)
    func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        guard CRYPTO_THREAD_write_lock(lock) == 1 else { preconditionFailure("CRYPTO_THREAD_write_lock failed") }
        defer { CRYPTO_THREAD_unlock(lock) }
        return try body()
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
