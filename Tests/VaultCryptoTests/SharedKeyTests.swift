import Dispatch
import Testing
@testable import VaultCrypto

/// The keys many threads share (a store's pseudonym key and KEKs): the same answers as the
/// single-thread types, from many threads at once, with contexts reused from a pool.
@Suite("Shared HMAC and AES-GCM keys")
struct SharedKeyTests {
    @Test func sharedHMACMatchesTheOneShotMACFromManyThreadsAndReusesContexts() throws {
        let keyBytes = SecureBytes.random(count: 32)
        let shared = try SharedHMACSHA256Key(keyBytes)
        let messages = (0..<64).map { i in Array("customer-\(i)".utf8) }
        let expected = try messages.map { try HMACSHA256.mac(key: keyBytes, message: $0) }
        let mismatches = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<200 {
                let i = (worker * 31 + round) % messages.count
                if shared.mac(messages[i]) != expected[i] { mismatches.add() }
            }
        }
        #expect(mismatches.value == 0)
        // At most one context per concurrent caller was made, and they are kept for reuse.
        #expect(shared.idleCount >= 1 && shared.idleCount <= 8)
        let before = shared.idleCount
        _ = shared.mac(messages[0])
        #expect(shared.idleCount == before)
        // The RFC 4231 case 2 answer, and an empty key.
        #expect(try SharedHMACSHA256Key(SecureBytes(Array("Jefe".utf8))).mac(Array("what do ya want for nothing?".utf8))
                == hexBytes("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
        #expect(try SharedHMACSHA256Key(SecureBytes([])).mac([]) == hexBytes("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"))
    }

    @Test func sharedAESGCMOpensWhatOtherThreadsSealed() throws {
        let keyBytes = SecureBytes.random(count: 32)
        let shared = try SharedAESGCMKey(keyBytes)
        #expect(shared.keyByteCount == 32)
        let single = try AESGCMKey(keyBytes)
        let sealed = try (0..<32).map { i -> (nonce: [UInt8], plaintext: [UInt8], ciphertext: [UInt8], tag: [UInt8]) in
            let nonce = SecureRandom.bytes(12), plaintext = SecureRandom.bytes(i * 3)
            let (c, t) = try single.seal(plaintext, nonce: nonce, aad: [UInt8(i)])
            return (nonce, plaintext, c, t)
        }
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<100 {
                let s = sealed[(worker + round) % sealed.count]
                let aad = [UInt8((worker + round) % sealed.count)]
                let opened = try? shared.withKey { try $0.open(s.ciphertext, tag: s.tag, nonce: s.nonce, aad: aad) }
                if opened != s.plaintext { failures.add() }
                // A wrong tag fails and leaves the lent instance usable for the next caller.
                var bad = s.tag
                bad[0] ^= 1
                if (try? shared.withKey { try $0.open(s.ciphertext, tag: bad, nonce: s.nonce, aad: aad) }) != nil { failures.add() }
            }
        }
        #expect(failures.value == 0)
        #expect(shared.idleCount >= 1 && shared.idleCount <= 8)
        #expect(throws: CryptoError.invalidKeySize(31)) { try SharedAESGCMKey(.random(count: 31)) }
    }

    /// No keyed context outlives its key object: when the shared key goes, so does every pooled
    /// context (their `deinit` frees, and OpenSSL cleanses, the keyed state).
    @Test func pooledContextsGoAwayWithTheirKey() throws {
        weak var weakMAC: SharedHMACSHA256Key?
        weak var weakAES: SharedAESGCMKey?
        var weakContexts: [Weak<HMACSHA256Key>] = []
        var weakKeys: [Weak<AESGCMKey>] = []
        do {
            let mac = try SharedHMACSHA256Key(.random(count: 32))
            let aes = try SharedAESGCMKey(.random(count: 32))
            let nonce = SecureRandom.bytes(12)
            let (c, t) = try aes.withKey { try $0.seal([1, 2, 3], nonce: nonce, aad: []) }
            DispatchQueue.concurrentPerform(iterations: 4) { i in
                for _ in 0..<50 {
                    _ = mac.mac([UInt8(i)])
                    _ = try? aes.withKey { try $0.open(c, tag: t, nonce: nonce, aad: []) }
                }
            }
            weakContexts = mac.idleContextsForTesting().map(Weak.init)
            weakKeys = aes.idleKeysForTesting().map(Weak.init)
            #expect(!weakContexts.isEmpty && !weakKeys.isEmpty)
            weakMAC = mac
            weakAES = aes
        }
        #expect(weakMAC == nil && weakAES == nil)
        #expect(weakContexts.allSatisfy { $0.value == nil })
        #expect(weakKeys.allSatisfy { $0.value == nil })
    }

    @Test func aKeyUsedOnlyForOpeningOrOnlyForSealingWorks() throws {
        let keyBytes = SecureBytes.random(count: 16)
        let nonce = SecureRandom.bytes(12)
        let (c, t) = try AESGCMKey(keyBytes).seal([1, 2, 3], nonce: nonce, aad: [])   // seal only
        #expect(try AESGCMKey(keyBytes).open(c, tag: t, nonce: nonce, aad: []) == [1, 2, 3])   // open only
        #expect(throws: CryptoError.authenticationFailed) { try AESGCMKey(.random(count: 16)).open(c, tag: t, nonce: nonce, aad: []) }
    }
}

/// A thread-safe counter for the tests above.
/// `@unchecked Sendable`: `count` is only touched under `lock`.
private final class Counter: @unchecked Sendable {
    private let lock = CryptoLock()
    private var count = 0
    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

private struct Weak<T: AnyObject> {
    weak var value: T?
    init(_ value: T) { self.value = value }
}
