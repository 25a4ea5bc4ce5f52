internal import COpenSSL

/// Cryptographically secure random numbers from OpenSSL's DRBG.
///
/// OpenSSL's RAND fails only when it cannot seed itself from the operating system (no
/// entropy source at all), which leaves no safe way to continue: these functions then stop
/// the process with `fatalError` rather than hand out predictable bytes.
public enum SecureRandom {
    /// `count` random bytes (`RAND_bytes`), e.g. for nonces.
    public static func bytes(_ count: Int) -> [UInt8] {
        precondition(count >= 0, "SecureRandom.bytes: negative count")
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }

    /// Fills `buffer` with random bytes (`RAND_bytes`).
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        fill(buffer, privateDRBG: false)
    }

    /// Fills `buffer` from the private DRBG (`RAND_priv_bytes`), for long-term secrets.
    static func fillPrivate(_ buffer: UnsafeMutableRawBufferPointer) {
        fill(buffer, privateDRBG: true)
    }

    @inline(__always)
    private static func fill(_ buffer: UnsafeMutableRawBufferPointer, privateDRBG: Bool) {
        guard var p = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var left = buffer.count
        while left > 0 {
            let n = Swift.min(left, Int(Int32.max))
            let rc = privateDRBG ? RAND_priv_bytes(p, Int32(n)) : RAND_bytes(p, Int32(n))
            guard rc == 1 else {
                fatalError("OpenSSL RAND failed (no entropy source?): \(openSSLError(privateDRBG ? "RAND_priv_bytes" : "RAND_bytes"))")
            }
            p += n
            left -= n
        }
    }

    /// A uniformly distributed integer in `0..<upperBound` (`upperBound > 0`), by rejection
    /// sampling: draws below `2^64 mod upperBound` are rejected, so every residue is equally
    /// likely (no modulo bias). Expected draws < 2.
    public static func uniform(below upperBound: UInt64) -> UInt64 {
        precondition(upperBound > 0, "SecureRandom.uniform(below:) needs upperBound > 0")
        // (2^64 - upperBound) % upperBound == 2^64 % upperBound: the size of the biased tail.
        let threshold = (0 &- upperBound) % upperBound
        while true {
            var r: UInt64 = 0
            withUnsafeMutableBytes(of: &r) { fill($0) }
            if r >= threshold { return r % upperBound }
        }
    }
}

// MARK: - Nonce pool

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Random bytes for AES-GCM nonces, drawn from `RAND_bytes` in batches.
///
/// One `RAND_bytes` call costs about 1 µs in OpenSSL 3.0 whatever its size (the CTR-DRBG
/// re-keys itself after every request), four times the cost of sealing a 64-byte field. So each
/// thread keeps a small buffer filled by one `RAND_bytes` call and hands out every byte at most
/// once. The nonces are exactly as random as direct calls; only the call count drops (see
/// docs/keys-and-encryption.md, "Nonces").
///
/// Fork safety: a child process inherits the parent's buffer, and both would hand out the same
/// nonces. A `pthread_atfork` child handler bumps `forkGeneration`, and a buffer filled in
/// another generation is discarded before use.
enum NoncePool {
    /// Bytes per refill: 128 nonces of 12 bytes.
    static let capacity = 128 * 12

    final class Buffer {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: NoncePool.capacity, alignment: 16)
        var available = 0
        var generation: UInt = 0
        deinit {
            OPENSSL_cleanse(bytes, NoncePool.capacity)
            bytes.deallocate()
        }
    }

    /// Incremented only by the atfork child handler, which runs while the child has one thread;
    /// in any one process it is therefore never written concurrently with a read.
    nonisolated(unsafe) static var forkGeneration: UInt = 0

    /// The thread-local slot; created (with the atfork handler) on first use.
    static let key: pthread_key_t = {
        var key = pthread_key_t()
        #if canImport(Darwin)
        let destructor: @convention(c) (UnsafeMutableRawPointer) -> Void = { Unmanaged<Buffer>.fromOpaque($0).release() }
        #else
        let destructor: @convention(c) (UnsafeMutableRawPointer?) -> Void = { if let p = $0 { Unmanaged<Buffer>.fromOpaque(p).release() } }
        #endif
        guard pthread_key_create(&key, destructor) == 0 else { fatalError("pthread_key_create failed") }
        guard pthread_atfork(nil, nil, { NoncePool.forkGeneration &+= 1 }) == 0 else { fatalError("pthread_atfork failed") }
        return key
    }()

    @inline(__always)
    static func buffer() -> Buffer {
        if let p = pthread_getspecific(key) {
            return Unmanaged<Buffer>.fromOpaque(p).takeUnretainedValue()
        }
        let buffer = Buffer()
        guard pthread_setspecific(key, Unmanaged.passRetained(buffer).toOpaque()) == 0 else {
            fatalError("pthread_setspecific failed")
        }
        return buffer
    }

    /// Writes `count` (<= capacity) fresh random bytes to `out`.
    @inline(__always)
    static func fill(_ out: UnsafeMutableRawPointer, count: Int) {
        let pool = buffer()
        let generation = forkGeneration
        if pool.available < count || pool.generation != generation {
            SecureRandom.fill(UnsafeMutableRawBufferPointer(start: pool.bytes, count: capacity))
            pool.available = capacity
            pool.generation = generation
        }
        let start = pool.bytes + (capacity - pool.available)
        out.copyMemory(from: start, byteCount: count)
        start.initializeMemory(as: UInt8.self, repeating: 0, count: count)  // never hand out twice
        pool.available -= count
    }
}

extension SecureRandom {
    /// Fills `buffer` (at most 1536 bytes) with random bytes for a nonce, from the calling
    /// thread's batch of `RAND_bytes` output; every byte is handed out at most once.
    public static func fillNonce(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        precondition(buffer.count <= NoncePool.capacity, "fillNonce: at most \(NoncePool.capacity) bytes")
        NoncePool.fill(base, count: buffer.count)
    }
}
