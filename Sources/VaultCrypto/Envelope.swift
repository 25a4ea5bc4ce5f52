internal import COpenSSL

/// The stored ciphertext formats of SPEC §3 (see docs/keys-and-encryption.md).
///
/// Both blobs have the layout
///
///     [formatVersion: 1 byte] [nonce: 12 bytes] [ciphertext: n bytes] [tag: 16 bytes]
///
/// sealed with AES-256-GCM under a fresh random 96-bit nonce (`RAND_bytes`), with associated
/// data that binds the blob to its purpose, format version, subject and field (or KEK
/// version), so a blob copied to another subject, field or KEK version fails to open:
///
///     field AAD = "pv:field:v1" || 0x00 || formatVersion || subject(32) || UTF8(fieldName)
///     DEK AAD   = "pv:dek:v1"   || 0x00 || formatVersion || subject(32) || kekVersion(UInt32 BE)
///
/// Every fixed-length part precedes the one variable-length part, so the encoding is unambiguous.
public enum Envelope {
    /// The version byte written in front of every blob.
    public static let formatVersion: UInt8 = 1
    /// Length of a subject pseudonym.
    public static let subjectByteCount = 32
    /// Bytes a blob adds to its plaintext: version + nonce + tag.
    public static let overheadByteCount = 1 + AESGCMKey.nonceByteCount + AESGCMKey.tagByteCount
    /// Length of a data-encryption key (AES-256).
    public static let dekByteCount = 32

    private static let headerByteCount = 1 + AESGCMKey.nonceByteCount

    // "pv:field:v1" and "pv:dek:v1" as bytes.
    private static let fieldLabel: [UInt8] = Array("pv:field:v1".utf8)
    private static let dekLabel: [UInt8] = Array("pv:dek:v1".utf8)

    // MARK: Fields

    /// Seals one PII field value of `subject` (its 32-byte pseudonym) under the subject's DEK.
    public static func sealField(_ plaintext: [UInt8], field: String, subject: [UInt8], dek: AESGCMKey) throws(CryptoError) -> [UInt8] {
        try checkKey(dek, role: "DEK")
        try checkSubject(subject)
        var field = field
        return try field.withUTF8Bytes { (name: UnsafeRawBufferPointer) throws(CryptoError) in
            try withAAD(label: fieldLabel, subject: subject, suffix: name) { (aad: UnsafeRawBufferPointer) throws(CryptoError) in
                try plaintext.withBytes { (p: UnsafeRawBufferPointer) throws(CryptoError) in
                    try seal(p, aad: aad, key: dek)
                }
            }
        }
    }

    /// Opens a blob made by ``sealField(_:field:subject:dek:)``. Throws
    /// ``CryptoError/unsupportedFormat(_:)`` for an unknown version byte and
    /// ``CryptoError/authenticationFailed`` for anything else that is wrong (truncated blob,
    /// modified byte, other subject, other field, other DEK).
    public static func openField(_ blob: [UInt8], field: String, subject: [UInt8], dek: AESGCMKey) throws(CryptoError) -> [UInt8] {
        try checkKey(dek, role: "DEK")
        try checkSubject(subject)
        var field = field
        return try field.withUTF8Bytes { (name: UnsafeRawBufferPointer) throws(CryptoError) in
            try withAAD(label: fieldLabel, subject: subject, suffix: name) { (aad: UnsafeRawBufferPointer) throws(CryptoError) in
                try blob.withBytes { (b: UnsafeRawBufferPointer) throws(CryptoError) in
                    let (ciphertext, nonce, tag) = try split(b)
                    return try dek.openToArray(ciphertext, tag: tag, nonce: nonce, aad: aad)
                }
            }
        }
    }

    // MARK: DEKs

    /// Wraps a subject's 32-byte DEK under the KEK of `kekVersion`.
    public static func wrapDEK(_ dek: SecureBytes, subject: [UInt8], kekVersion: UInt32, kek: AESGCMKey) throws(CryptoError) -> [UInt8] {
        guard dek.count == dekByteCount else { throw .invalidKeySize(dek.count) }
        try checkKey(kek, role: "KEK")
        try checkSubject(subject)
        return try withKEKVersion(kekVersion) { (suffix: UnsafeRawBufferPointer) throws(CryptoError) in
            try withAAD(label: dekLabel, subject: subject, suffix: suffix) { (aad: UnsafeRawBufferPointer) throws(CryptoError) in
                try dek.withBytes { (d: UnsafeRawBufferPointer) throws(CryptoError) in
                    try seal(d, aad: aad, key: kek)
                }
            }
        }
    }

    /// Unwraps a blob made by ``wrapDEK(_:subject:kekVersion:kek:)``; the same errors as
    /// ``openField(_:field:subject:dek:)``.
    public static func unwrapDEK(_ blob: [UInt8], subject: [UInt8], kekVersion: UInt32, kek: AESGCMKey) throws(CryptoError) -> SecureBytes {
        try checkKey(kek, role: "KEK")
        try checkSubject(subject)
        return try withKEKVersion(kekVersion) { (suffix: UnsafeRawBufferPointer) throws(CryptoError) in
            try withAAD(label: dekLabel, subject: subject, suffix: suffix) { (aad: UnsafeRawBufferPointer) throws(CryptoError) in
                try blob.withBytes { (b: UnsafeRawBufferPointer) throws(CryptoError) in
                    let (ciphertext, nonce, tag) = try split(b)
                    guard ciphertext.count == dekByteCount else { throw .authenticationFailed }
                    return try SecureBytes(count: dekByteCount) { (out: UnsafeMutableRawBufferPointer) throws(CryptoError) in
                        // On failure SecureBytes' storage (with any unauthenticated bytes) is wiped on release.
                        try kek.openRaw(ciphertext, tag: tag, nonce: nonce, aad: aad, plaintextOut: out.baseAddress)
                    }
                }
            }
        }
    }

    // MARK: Internals

    /// One allocation: version byte, random nonce, then ciphertext and tag sealed in place.
    @inline(__always)
    private static func seal(_ plaintext: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer, key: AESGCMKey) throws(CryptoError) -> [UInt8] {
        let n = plaintext.count
        let total = overheadByteCount + n
        return try [UInt8].filled(count: total) { (buffer: UnsafeMutableRawPointer?) throws(CryptoError) in
            let base = buffer!
            base.storeBytes(of: formatVersion, as: UInt8.self)
            let nonce = base + 1
            NoncePool.fill(nonce, count: AESGCMKey.nonceByteCount)
            let ciphertext = base + headerByteCount
            try key.sealRaw(plaintext, nonce: nonce, aad: aad, ciphertextOut: ciphertext, tagOut: ciphertext + n)
        }
    }

    /// Splits a blob into (ciphertext, nonce, tag) after checking its version and minimum length.
    @inline(__always)
    private static func split(_ blob: UnsafeRawBufferPointer) throws(CryptoError) -> (UnsafeRawBufferPointer, UnsafeRawPointer, UnsafeRawPointer) {
        guard blob.count >= 1 else { throw .authenticationFailed }
        guard blob[0] == formatVersion else { throw .unsupportedFormat(blob[0]) }
        guard blob.count >= overheadByteCount else { throw .authenticationFailed }
        let base = blob.baseAddress!
        let ciphertextCount = blob.count - overheadByteCount
        let ciphertext = UnsafeRawBufferPointer(start: base + headerByteCount, count: ciphertextCount)
        return (ciphertext, base + 1, base + headerByteCount + ciphertextCount)
    }

    /// Builds `label || 0x00 || formatVersion || subject || suffix` in a stack buffer.
    @inline(__always)
    private static func withAAD<R>(
        label: [UInt8], subject: [UInt8], suffix: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) throws(CryptoError) -> R
    ) throws(CryptoError) -> R {
        let count = label.count + 2 + subjectByteCount + suffix.count
        return try withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { (buffer: UnsafeMutableRawBufferPointer) throws(CryptoError) -> R in
            var p = buffer.baseAddress!
            label.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            p += label.count
            p.storeBytes(of: 0, as: UInt8.self)
            (p + 1).storeBytes(of: formatVersion, as: UInt8.self)
            p += 2
            subject.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: subjectByteCount) }
            p += subjectByteCount
            if suffix.count > 0 { p.copyMemory(from: suffix.baseAddress!, byteCount: suffix.count) }
            return try body(UnsafeRawBufferPointer(buffer))
        }
    }

    @inline(__always)
    private static func withKEKVersion<R>(_ version: UInt32, _ body: (UnsafeRawBufferPointer) throws(CryptoError) -> R) throws(CryptoError) -> R {
        var bigEndian = version.bigEndian
        return try withUnsafeBytes(of: &bigEndian) { (b: UnsafeRawBufferPointer) throws(CryptoError) -> R in try body(b) }
    }

    @inline(__always)
    private static func checkSubject(_ subject: [UInt8]) throws(CryptoError) {
        guard subject.count == subjectByteCount else {
            throw .invalidInput("subject pseudonym must be \(subjectByteCount) bytes, got \(subject.count)")
        }
    }

    @inline(__always)
    private static func checkKey(_ key: AESGCMKey, role: String) throws(CryptoError) {
        guard key.keyByteCount == 32 else {
            throw .invalidInput("the \(role) must be an AES-256 key (32 bytes), got \(key.keyByteCount) bytes")
        }
    }
}
