import Testing
import VaultCrypto

@Suite("AES-GCM")
struct AESGCMTests {
    @Test(arguments: [16, 24, 32])
    func roundTripsForEveryKeySize(keySize: Int) throws {
        let key = try AESGCMKey(.random(count: keySize))
        #expect(key.keyByteCount == keySize)
        for length in [0, 1, 15, 16, 17, 64, 1000] {
            let plaintext = SecureRandom.bytes(length)
            let nonce = SecureRandom.bytes(12)
            let aad = SecureRandom.bytes(length % 7)
            let (ciphertext, tag) = try key.seal(plaintext, nonce: nonce, aad: aad)
            #expect(ciphertext.count == length)
            #expect(tag.count == 16)
            #expect(try key.open(ciphertext, tag: tag, nonce: nonce, aad: aad) == plaintext)
        }
    }

    @Test func rejectsBadKeyAndNonceSizes() throws {
        #expect(throws: CryptoError.invalidKeySize(31)) { try AESGCMKey(.random(count: 31)) }
        #expect(throws: CryptoError.invalidKeySize(0)) { try AESGCMKey(SecureBytes(count: 0)) }
        let key = try AESGCMKey(.random(count: 32))
        #expect(throws: CryptoError.invalidNonceSize(16)) { try key.seal([1], nonce: [UInt8](repeating: 0, count: 16), aad: []) }
        #expect(throws: CryptoError.invalidNonceSize(8)) { try key.open([1], tag: [UInt8](repeating: 0, count: 16), nonce: [UInt8](repeating: 0, count: 8), aad: []) }
    }

    @Test func anyChangeFailsAuthenticationAndTheContextStaysUsable() throws {
        let key = try AESGCMKey(.random(count: 32))
        let nonce = SecureRandom.bytes(12), aad: [UInt8] = Array("aad".utf8), plaintext: [UInt8] = Array("secret value".utf8)
        let (ciphertext, tag) = try key.seal(plaintext, nonce: nonce, aad: aad)
        var badCiphertext = ciphertext; badCiphertext[3] ^= 1
        var badTag = tag; badTag[15] ^= 0x80
        var badNonce = nonce; badNonce[0] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try key.open(badCiphertext, tag: tag, nonce: nonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try key.open(ciphertext, tag: badTag, nonce: nonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try key.open(ciphertext, tag: Array(tag.prefix(12)), nonce: nonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try key.open(ciphertext, tag: tag, nonce: badNonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try key.open(ciphertext, tag: tag, nonce: nonce, aad: aad + [0]) }
        #expect(throws: CryptoError.authenticationFailed) { try AESGCMKey(.random(count: 32)).open(ciphertext, tag: tag, nonce: nonce, aad: aad) }
        // A failed open leaves the reused context in a good state.
        #expect(try key.open(ciphertext, tag: tag, nonce: nonce, aad: aad) == plaintext)
    }

    @Test func appendingToLeavesOutUnchangedOnError() throws {
        let key = try AESGCMKey(.random(count: 32))
        var out: [UInt8] = [1, 2, 3]
        let plaintext: [UInt8] = [9, 9]
        let badNonce: [UInt8] = [0, 0]
        #expect(throws: CryptoError.invalidNonceSize(2)) {
            try plaintext.withUnsafeBytes { p in
                try badNonce.withUnsafeBytes { n in try key.seal(p, nonce: n, aad: UnsafeRawBufferPointer(start: nil, count: 0), appendingTo: &out) }
            }
        }
        #expect(out == [1, 2, 3])
    }

    @Test func errorDescriptionsCarryNoData() {
        #expect(CryptoError.authenticationFailed.description.contains("authentication failed"))
        #expect(CryptoError.invalidKeySize(7).description == "invalid key size: 7 bytes")
        #expect(CryptoError.unsupportedFormat(9).description.contains("version 9"))
    }
}
