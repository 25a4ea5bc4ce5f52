internal import COpenSSL

/// AES-GCM under one fixed key (16, 24 or 32 bytes: AES-128/192/256), 12-byte nonces and
/// 16-byte tags.
///
/// The key is expanded once: the instance owns one `EVP_CIPHER_CTX` for sealing and one for
/// opening, and each call only sets a new IV on them (`EVP_EncryptInit_ex(ctx, NULL, NULL,
/// NULL, iv)`), so no per-call context allocation or key schedule happens.
///
/// **Not thread-safe.** The contexts are mutated by every call: use one instance per thread or
/// task (it is deliberately not `Sendable`). Creating one costs about as much as a few seals.
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

    private let sealContext: OpaquePointer
    private let openContext: OpaquePointer

    /// Expands `key` (16, 24 or 32 bytes) into the two cipher contexts.
    public init(_ key: SecureBytes) throws(CryptoError) {
        let cipher: OpaquePointer?
        switch key.count {
        case 16: cipher = EVP_aes_128_gcm()
        case 24: cipher = EVP_aes_192_gcm()
        case 32: cipher = EVP_aes_256_gcm()
        default: throw .invalidKeySize(key.count)
        }
        guard let cipher else { throw openSSLError("EVP_aes_gcm") }
        guard let seal = EVP_CIPHER_CTX_new() else { throw openSSLError("EVP_CIPHER_CTX_new") }
        guard let open = EVP_CIPHER_CTX_new() else {
            EVP_CIPHER_CTX_free(seal)
            throw openSSLError("EVP_CIPHER_CTX_new")
        }
        let failure: CryptoError? = key.withBytes { keyBytes -> CryptoError? in
            let k = keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_EncryptInit_ex(seal, cipher, nil, k, nil) == 1 else { return openSSLError("EVP_EncryptInit_ex") }
            guard EVP_DecryptInit_ex(open, cipher, nil, k, nil) == 1 else { return openSSLError("EVP_DecryptInit_ex") }
            // 12 is OpenSSL's default IV length for GCM; set it explicitly so it never depends on that.
            guard pv_gcm_set_ivlen(seal, Int32(Self.nonceByteCount)) == 1,
                  pv_gcm_set_ivlen(open, Int32(Self.nonceByteCount)) == 1
            else { return openSSLError("EVP_CIPHER_CTX_ctrl(GCM_SET_IVLEN)") }
            return nil
        }
        if let failure {
            EVP_CIPHER_CTX_free(seal)
            EVP_CIPHER_CTX_free(open)
            throw failure
        }
        self.keyByteCount = key.count
        self.sealContext = seal
        self.openContext = open
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the expanded key schedule.
        EVP_CIPHER_CTX_free(sealContext)
        EVP_CIPHER_CTX_free(openContext)
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
        let ctx = sealContext
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
        let ctx = openContext
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
