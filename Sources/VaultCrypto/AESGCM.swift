internal import COpenSSL

/// The AES-GCM ciphers, fetched once for the process.
///
/// `EVP_aes_256_gcm()` and friends are legacy handles: every `EVP_EncryptInit_ex` with one
/// fetches the provider's implementation again, under OpenSSL's method-store lock. A fetched
/// `EVP_CIPHER` skips that. `@unchecked Sendable`: fetched algorithms are immutable and
/// reference-counted atomically, and OpenSSL 3 allows sharing them between threads. They live as
/// long as the process (never freed).
final class FetchedCipher: @unchecked Sendable {
    static let aes128GCM = FetchedCipher("AES-128-GCM")
    static let aes192GCM = FetchedCipher("AES-192-GCM")
    static let aes256GCM = FetchedCipher("AES-256-GCM")
    let name: String
    let pointer: OpaquePointer?
    private init(_ name: String) {
        self.name = name
        pointer = EVP_CIPHER_fetch(nil, name, nil)
    }
}

/// AES-GCM under one fixed key (16, 24 or 32 bytes: AES-128/192/256), 12-byte nonces and
/// 16-byte tags.
///
/// The key is expanded once per direction: the instance owns one `EVP_CIPHER_CTX` for sealing
/// and one for opening, each created on first use (a key that only opens, such as a subject's
/// DEK on a read, never sets up a sealing context), and each call only sets a new IV on them
/// (`EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv)`), so no per-call context allocation or key
/// schedule happens. The instance keeps a reference to the key's ``SecureBytes`` for that, and
/// frees (cleanses) both contexts in `deinit`.
///
/// **Not thread-safe.** The contexts are mutated by every call: use one instance per thread or
/// task (it is deliberately not `Sendable`), or ``SharedAESGCMKey`` for a key many threads use.
/// Creating one costs about as much as a seal or two, paid on its first use in each direction.
///
/// Nonces must never repeat under one key. Callers that do not manage nonces themselves
/// should use ``Envelope``, which draws a fresh random 96-bit nonce for every seal.
public final class AESGCMKey {
    /// The only nonce length accepted (96 bits).
    public static let nonceByteCount = 12
    /// The tag length produced and required (128 bits).
    public static let tagByteCount = 16

    /// Key length in bytes: 16, 24 or 32.
    public let keyByteCount: Int

    private let key: SecureBytes
    private let cipher: OpaquePointer
    private var sealState: OpaquePointer?
    private var openState: OpaquePointer?

    /// Checks the key's length (16, 24 or 32 bytes); the cipher contexts are keyed on first use.
    public init(_ key: SecureBytes) throws(CryptoError) {
        let fetched: FetchedCipher
        switch key.count {
        case 16: fetched = .aes128GCM
        case 24: fetched = .aes192GCM
        case 32: fetched = .aes256GCM
        default: throw .invalidKeySize(key.count)
        }
        guard let cipher = fetched.pointer else { throw openSSLError("EVP_CIPHER_fetch(\(fetched.name))") }
        self.keyByteCount = key.count
        self.key = key
        self.cipher = cipher
    }

    /// Another instance under the same (already validated) key, with contexts of its own.
    init(sameKeyAs other: AESGCMKey) {
        self.keyByteCount = other.keyByteCount
        self.key = other.key
        self.cipher = other.cipher
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the expanded key schedule.
        if let sealState { EVP_CIPHER_CTX_free(sealState) }
        if let openState { EVP_CIPHER_CTX_free(openState) }
    }

    /// The keyed context for one direction, created (key expanded, IV length set) on first use.
    @inline(__always)
    private func context(sealing: Bool) throws(CryptoError) -> OpaquePointer {
        if let ready = sealing ? sealState : openState { return ready }
        return try makeContext(sealing: sealing)
    }

    private func makeContext(sealing: Bool) throws(CryptoError) -> OpaquePointer {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw openSSLError("EVP_CIPHER_CTX_new") }
        let failure: CryptoError? = key.withBytes { keyBytes -> CryptoError? in
            let k = keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            if sealing {
                guard EVP_EncryptInit_ex(ctx, cipher, nil, k, nil) == 1 else { return openSSLError("EVP_EncryptInit_ex") }
            } else {
                guard EVP_DecryptInit_ex(ctx, cipher, nil, k, nil) == 1 else { return openSSLError("EVP_DecryptInit_ex") }
            }
            // 12 is OpenSSL's default IV length for GCM; set it explicitly so it never depends on that.
            guard pv_gcm_set_ivlen(ctx, Int32(Self.nonceByteCount)) == 1 else { return openSSLError("EVP_CIPHER_CTX_ctrl(GCM_SET_IVLEN)") }
            return nil
        }
        if let failure {
            EVP_CIPHER_CTX_free(ctx)
            throw failure
        }
        if sealing { sealState = ctx } else { openState = ctx }
        return ctx
    }

    // MARK: Sealing

    /// Encrypts `plaintext` and returns the ciphertext (same length) and the 16-byte tag.
    public func seal(
        _ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer
    ) throws(CryptoError) -> (ciphertext: [UInt8], tag: [UInt8]) {
        guard nonce.count == Self.nonceByteCount else { throw .invalidNonceSize(nonce.count) }
        var tag = [UInt8](repeating: 0, count: Self.tagByteCount)
        let ciphertext = try [UInt8].filled(count: plaintext.count) { (out: UnsafeMutableRawPointer?) throws(CryptoError) in
            try tag.withMutableBytes { (tagOut: UnsafeMutableRawBufferPointer) throws(CryptoError) in
                try sealRaw(plaintext, nonce: nonce.baseAddress!, aad: aad, ciphertextOut: out, tagOut: tagOut.baseAddress!)
            }
        }
        return (ciphertext, tag)
    }

    /// Encrypts `plaintext` and returns the ciphertext (same length) and the 16-byte tag.
    public func seal(_ plaintext: [UInt8], nonce: [UInt8], aad: [UInt8]) throws(CryptoError) -> (ciphertext: [UInt8], tag: [UInt8]) {
        try plaintext.withBytes { (p: UnsafeRawBufferPointer) throws(CryptoError) in
            try nonce.withBytes { (n: UnsafeRawBufferPointer) throws(CryptoError) in
                try aad.withBytes { (a: UnsafeRawBufferPointer) throws(CryptoError) in
                    try seal(p, nonce: n, aad: a)
                }
            }
        }
    }

    /// Appends `ciphertext || tag` (plaintext.count + 16 bytes) to `out`. On error `out` is
    /// left as it was. The fast path for building stored blobs.
    public func seal(
        _ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        appendingTo out: inout [UInt8]
    ) throws(CryptoError) {
        guard nonce.count == Self.nonceByteCount else { throw .invalidNonceSize(nonce.count) }
        let start = out.count
        let n = plaintext.count
        out.append(contentsOf: repeatElement(0, count: n + Self.tagByteCount))
        do throws(CryptoError) {
            try out.withMutableBytes { (buffer: UnsafeMutableRawBufferPointer) throws(CryptoError) in
                let base = buffer.baseAddress! + start
                try sealRaw(plaintext, nonce: nonce.baseAddress!, aad: aad, ciphertextOut: base, tagOut: base + n)
            }
        } catch {
            out.removeSubrange(start...)
            throw error
        }
    }

    /// The one sealing routine. `nonce` points at 12 bytes; `ciphertextOut` has room for
    /// `plaintext.count` bytes (may be nil when empty); `tagOut` for 16. The output may not
    /// overlap the inputs except exactly (in-place), which OpenSSL allows.
    @inline(__always)
    func sealRaw(
        _ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
        ciphertextOut: UnsafeMutableRawPointer?, tagOut: UnsafeMutableRawPointer
    ) throws(CryptoError) {
        guard plaintext.count <= Int(Int32.max), aad.count <= Int(Int32.max) else {
            throw .invalidInput("plaintext and associated data must each be smaller than 2 GiB")
        }
        let ctx = try context(sealing: true)
        guard EVP_EncryptInit_ex(ctx, nil, nil, nil, nonce.assumingMemoryBound(to: UInt8.self)) == 1 else {
            throw openSSLError("EVP_EncryptInit_ex")
        }
        var outLength: Int32 = 0
        if aad.count > 0 {
            guard EVP_EncryptUpdate(ctx, nil, &outLength, aad.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(aad.count)) == 1 else {
                throw openSSLError("EVP_EncryptUpdate(aad)")
            }
        }
        let out = (ciphertextOut ?? tagOut).assumingMemoryBound(to: UInt8.self)
        if plaintext.count > 0 {
            guard EVP_EncryptUpdate(ctx, out, &outLength, plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)) == 1,
                  Int(outLength) == plaintext.count
            else { throw openSSLError("EVP_EncryptUpdate") }
        }
        // GCM is a stream mode: Final writes nothing, it finishes GHASH.
        guard EVP_EncryptFinal_ex(ctx, out + plaintext.count, &outLength) == 1, outLength == 0 else {
            throw openSSLError("EVP_EncryptFinal_ex")
        }
        guard pv_gcm_get_tag(ctx, tagOut.assumingMemoryBound(to: UInt8.self), Int32(Self.tagByteCount)) == 1 else {
            throw openSSLError("EVP_CIPHER_CTX_ctrl(GCM_GET_TAG)")
        }
    }

    // MARK: Opening

    /// Verifies the tag and decrypts. Throws ``CryptoError/authenticationFailed`` when anything
    /// (key, nonce, aad, ciphertext, tag) differs from what was sealed; no plaintext is
    /// returned in that case.
    public func open(_ ciphertext: [UInt8], tag: [UInt8], nonce: [UInt8], aad: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard nonce.count == Self.nonceByteCount else { throw .invalidNonceSize(nonce.count) }
        guard tag.count == Self.tagByteCount else { throw .authenticationFailed }
        return try ciphertext.withBytes { (c: UnsafeRawBufferPointer) throws(CryptoError) in
            try tag.withBytes { (t: UnsafeRawBufferPointer) throws(CryptoError) in
                try nonce.withBytes { (n: UnsafeRawBufferPointer) throws(CryptoError) in
                    try aad.withBytes { (a: UnsafeRawBufferPointer) throws(CryptoError) in
                        try openToArray(c, tag: t.baseAddress!, nonce: n.baseAddress!, aad: a)
                    }
                }
            }
        }
    }

    /// Decrypts into a new array; the array is wiped before it is dropped on failure.
    func openToArray(
        _ ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawPointer, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer
    ) throws(CryptoError) -> [UInt8] {
        try [UInt8].filled(count: ciphertext.count) { (out: UnsafeMutableRawPointer?) throws(CryptoError) in
            do throws(CryptoError) {
                try openRaw(ciphertext, tag: tag, nonce: nonce, aad: aad, plaintextOut: out)
            } catch {
                if let out, ciphertext.count > 0 { OPENSSL_cleanse(out, ciphertext.count) }
                throw error
            }
        }
    }

    /// The one opening routine. On failure the caller must wipe `plaintextOut` (it may hold
    /// unauthenticated plaintext).
    @inline(__always)
    func openRaw(
        _ ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawPointer, nonce: UnsafeRawPointer,
        aad: UnsafeRawBufferPointer, plaintextOut: UnsafeMutableRawPointer?
    ) throws(CryptoError) {
        guard ciphertext.count <= Int(Int32.max), aad.count <= Int(Int32.max) else {
            throw .invalidInput("ciphertext and associated data must each be smaller than 2 GiB")
        }
        let ctx = try context(sealing: false)
        guard EVP_DecryptInit_ex(ctx, nil, nil, nil, nonce.assumingMemoryBound(to: UInt8.self)) == 1 else {
            throw openSSLError("EVP_DecryptInit_ex")
        }
        guard pv_gcm_set_tag(ctx, tag.assumingMemoryBound(to: UInt8.self), Int32(Self.tagByteCount)) == 1 else {
            throw openSSLError("EVP_CIPHER_CTX_ctrl(GCM_SET_TAG)")
        }
        var outLength: Int32 = 0
        if aad.count > 0 {
            guard EVP_DecryptUpdate(ctx, nil, &outLength, aad.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(aad.count)) == 1 else {
                throw openSSLError("EVP_DecryptUpdate(aad)")
            }
        }
        var scratch: UInt8 = 0
        try withUnsafeMutablePointer(to: &scratch) { (scratchPointer: UnsafeMutablePointer<UInt8>) throws(CryptoError) in
            let out = plaintextOut?.assumingMemoryBound(to: UInt8.self) ?? scratchPointer
            if ciphertext.count > 0 {
                guard EVP_DecryptUpdate(ctx, out, &outLength, ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(ciphertext.count)) == 1,
                      Int(outLength) == ciphertext.count
                else { throw openSSLError("EVP_DecryptUpdate") }
            }
            // Final compares the tag (in constant time); 1 means authentic.
            guard EVP_DecryptFinal_ex(ctx, plaintextOut == nil ? out : out + ciphertext.count, &outLength) == 1 else {
                clearOpenSSLErrors()
                throw .authenticationFailed
            }
        }
    }
}

/// AES-GCM under one fixed key, for many threads at once (e.g. a store's key-encryption key,
/// which every read uses to unwrap a subject's DEK).
///
/// Keeps a pool of ``AESGCMKey`` instances under the key: ``withKey(_:)`` lends one to a single
/// caller (or makes a new one when all are busy) and takes it back afterwards, so the key is
/// expanded once per pooled instance, not once per call. Every pooled instance, and with it
/// every keyed cipher context, is owned by this object and freed (cleansed) in its `deinit`.
///
/// `@unchecked Sendable`: the pool array is only touched under `lock`, and a lent instance is
/// used by one caller at a time (it must not escape `withKey`'s body).
public final class SharedAESGCMKey: @unchecked Sendable {
    /// Idle instances kept for reuse; extra ones made for a burst of callers are freed after use.
    static let maximumIdle = 64

    /// Key length in bytes: 16, 24 or 32.
    public let keyByteCount: Int

    private let template: AESGCMKey
    private let lock = CryptoLock()
    private var idle: [AESGCMKey] = []

    /// Checks the key's length as ``AESGCMKey/init(_:)`` does.
    public init(_ key: SecureBytes) throws(CryptoError) {
        template = try AESGCMKey(key)
        keyByteCount = key.count
    }

    /// Runs `body` with an ``AESGCMKey`` under this key that no other caller uses meanwhile.
    /// `body` must not keep the instance beyond the call.
    public func withKey<R, E: Error>(_ body: (AESGCMKey) throws(E) -> R) throws(E) -> R {
        let key = lock.withLock { idle.popLast() } ?? AESGCMKey(sameKeyAs: template)
        defer {
            lock.withLock {
                if idle.count < Self.maximumIdle { idle.append(key) }
            }
        }
        return try body(key)
    }

    /// Number of idle pooled instances (for tests).
    var idleCount: Int { lock.withLock { idle.count } }

    /// The idle pooled instances (for tests that check they go away with the key).
    func idleKeysForTesting() -> [AESGCMKey] { lock.withLock { idle } }
}
