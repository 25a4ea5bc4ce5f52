internal import COpenSSL

/// An immutable byte buffer for secrets that is wiped (`OPENSSL_cleanse`) when its last copy
/// goes away, and whose `==` runs in constant time for equal lengths.
///
/// The bytes live in one heap allocation owned by a private final class; copies of a
/// `SecureBytes` share it. It is `Sendable` because nothing can mutate the bytes after
/// initialisation. Printing a `SecureBytes` shows only its length.
public struct SecureBytes: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Owns the allocation. `@unchecked Sendable` is safe: `pointer` is written only inside
    /// `SecureBytes` initialisers, before the value is published, and is read-only afterwards.
    final class Storage: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
        let count: Int

        init(count: Int) {
            precondition(count >= 0, "SecureBytes count must not be negative")
            self.count = count
            self.pointer = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(count, 1), alignment: 16)
            self.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: Swift.max(count, 1))
        }

        deinit {
            OPENSSL_cleanse(pointer, Swift.max(count, 1))
            pointer.deallocate()
        }
    }

    let storage: Storage

    /// Copies `bytes`. The caller still owns (and should wipe, if it matters) its array.
    public init(_ bytes: [UInt8]) {
        storage = Storage(count: bytes.count)
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress { storage.pointer.copyMemory(from: base, byteCount: src.count) }
        }
    }

    /// `count` zero bytes.
    public init(count: Int) {
        storage = Storage(count: count)
    }

    /// Fills a fresh buffer of `count` bytes in place; the buffer is wiped if `body` throws.
    init<E: Error>(count: Int, initializingWith body: (UnsafeMutableRawBufferPointer) throws(E) -> Void) throws(E) {
        let storage = Storage(count: count)
        try body(UnsafeMutableRawBufferPointer(start: storage.pointer, count: count))
        self.storage = storage
    }

    /// `count` bytes from OpenSSL's private DRBG (`RAND_priv_bytes`), for key material.
    public static func random(count: Int) -> SecureBytes {
        SecureBytes(count: count, initializingWith: { (buffer: UnsafeMutableRawBufferPointer) in
            SecureRandom.fillPrivate(buffer)
        })
    }

    /// Number of bytes.
    public var count: Int { storage.count }

    /// Read access to the bytes. Do not let the pointer escape `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Typed-throws variant used inside the module.
    @inline(__always)
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Lowercase hex of the secret. The returned `String` cannot be wiped: use it only to
    /// write a keyring file, never for logs or errors.
    public var unsafeHex: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: count * 2) { out in
            let p = storage.pointer.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count {
                out[2 * i] = digits[Int(p[i] >> 4)]
                out[2 * i + 1] = digits[Int(p[i] & 0x0f)]
            }
            return count * 2
        }
    }

    /// Constant-time in the contents (`CRYPTO_memcmp`); lengths are not secret.
    public static func == (lhs: SecureBytes, rhs: SecureBytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 { return true }
        return CRYPTO_memcmp(lhs.storage.pointer, rhs.storage.pointer, lhs.count) == 0
    }

    public var description: String { "SecureBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}

/// Compares two byte arrays in time that depends only on their length (`CRYPTO_memcmp`).
/// Returns `false` at once when the lengths differ.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, pa.count) == 0 }
    }
}

/// Parses exactly `2 * count` lowercase hex digits into a new SecureBytes; nil on any other input.
func secureBytes(fromLowercaseHex hex: String, count: Int) -> SecureBytes? {
    var hex = hex
    return hex.withUTF8 { utf8 -> SecureBytes? in
        guard utf8.count == 2 * count else { return nil }
        var ok = true
        let result = SecureBytes(count: count, initializingWith: { (out: UnsafeMutableRawBufferPointer) in
            func nibble(_ c: UInt8) -> UInt8? {
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
                default: return nil
                }
            }
            for i in 0..<count {
                guard let hi = nibble(utf8[2 * i]), let lo = nibble(utf8[2 * i + 1]) else { ok = false; return }
                out[i] = hi << 4 | lo
            }
        })
        return ok ? result : nil
    }
}
