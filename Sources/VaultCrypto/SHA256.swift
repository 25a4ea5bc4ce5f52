internal import COpenSSL

/// SHA-256 (OpenSSL `EVP_Digest`), for the audit log's hash chain.
public enum SHA256 {
    /// Length of a SHA-256 digest.
    public static let byteCount = 32

    /// The SHA-256 digest of `message`. OpenSSL fails here only on memory exhaustion or a
    /// broken library; that stops the process instead of returning a wrong digest.
    public static func hash(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            var length: UInt32 = 0
            let rc = EVP_Digest(message.baseAddress, message.count, buffer.baseAddress, &length, EVP_sha256(), nil)
            precondition(rc == 1 && length == 32, "EVP_Digest(SHA-256) failed")
            initialized = byteCount
        }
    }

    public static func hash(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { hash($0) }
    }

    /// SHA-256 of the concatenation `a || b`, without building it (EVP_DigestUpdate twice).
    public static func hash(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        guard let ctx = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(ctx) }
        precondition(EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1, "EVP_DigestInit_ex failed")
        a.withUnsafeBytes { precondition(EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) == 1) }
        b.withUnsafeBytes { precondition(EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) == 1) }
        return [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            var length: UInt32 = 0
            precondition(EVP_DigestFinal_ex(ctx, buffer.baseAddress, &length) == 1 && length == 32, "EVP_DigestFinal_ex failed")
            initialized = byteCount
        }
    }
}
