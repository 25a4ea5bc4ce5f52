internal import COpenSSL

/// A failure of a VaultCrypto primitive.
///
/// Descriptions never contain key material, plaintext or ciphertext: only sizes, the name of
/// the OpenSSL function that failed and OpenSSL's own error string.
public enum CryptoError: Error, CustomStringConvertible, Equatable {
    /// Authenticated decryption failed: wrong key, wrong nonce, wrong associated data, a
    /// modified ciphertext or tag, or a truncated blob. Deliberately says nothing more.
    case authenticationFailed
    /// A key of an unsupported length (in bytes) was supplied.
    case invalidKeySize(Int)
    /// A nonce of an unsupported length (in bytes) was supplied (AES-GCM here takes 12).
    case invalidNonceSize(Int)
    /// An argument was out of range or malformed; the string says which and why.
    case invalidInput(String)
    /// A versioned blob (see ``Envelope``) starts with a format version this build cannot read.
    case unsupportedFormat(UInt8)
    /// An OpenSSL call failed unexpectedly. `detail` comes from `ERR_error_string_n`.
    case openssl(function: String, detail: String)

    public var description: String {
        switch self {
        case .authenticationFailed:
            return "authentication failed: the ciphertext, its associated data or the key is not the one it was sealed with"
        case .invalidKeySize(let n):
            return "invalid key size: \(n) bytes"
        case .invalidNonceSize(let n):
            return "invalid nonce size: \(n) bytes (expected 12)"
        case .invalidInput(let reason):
            return "invalid input: \(reason)"
        case .unsupportedFormat(let v):
            return "unsupported ciphertext format version \(v) (this build reads version \(Envelope.formatVersion))"
        case .openssl(let function, let detail):
            return "OpenSSL \(function) failed: \(detail)"
        }
    }
}

/// Pops the calling thread's OpenSSL error queue into a ``CryptoError/openssl(function:detail:)``.
func openSSLError(_ function: String) -> CryptoError {
    var buffer = [CChar](repeating: 0, count: 256)
    let code = buffer.withUnsafeMutableBufferPointer { pv_err_pop_string($0.baseAddress, $0.count) }
    let detail: String
    if code == 0 {
        detail = "no OpenSSL error queued"
    } else {
        let bytes = buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
        detail = String(decoding: bytes, as: UTF8.self)
    }
    return .openssl(function: function, detail: detail)
}

/// Discards whatever OpenSSL queued (used where a failure is an expected answer, e.g. a bad tag).
@inline(__always)
func clearOpenSSLErrors() {
    ERR_clear_error()
}
