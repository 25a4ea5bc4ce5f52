import Testing
import VaultCrypto

@Suite("SecureBytes, random, HMAC, HKDF")
struct PrimitivesTests {
    @Test func secureBytesEquality() {
        let a = SecureBytes([1, 2, 3, 4])
        #expect(a == SecureBytes([1, 2, 3, 4]))
        #expect(a != SecureBytes([1, 2, 3, 5]))
        #expect(a != SecureBytes([1, 2, 3]))
        #expect(a != SecureBytes([1, 2, 3, 4, 0]))
        #expect(SecureBytes([]) == SecureBytes(count: 0))
        #expect(SecureBytes(count: 3) == SecureBytes([0, 0, 0]))
        #expect(a.count == 4)
        #expect(a.unsafeHex == "01020304")
        #expect(a.withUnsafeBytes { Array($0) } == [1, 2, 3, 4])
        #expect(a.description == "SecureBytes(4 bytes, redacted)")
        let r = SecureBytes.random(count: 32)
        #expect(r.count == 32)
        #expect(r != SecureBytes.random(count: 32))
    }

    @Test func constantTimeEqualSemantics() {
        #expect(constantTimeEqual([], []))
        #expect(constantTimeEqual([1, 2], [1, 2]))
        #expect(!constantTimeEqual([1, 2], [1, 3]))
        #expect(!constantTimeEqual([1, 2], [1, 2, 3]))
        #expect(!constantTimeEqual([1], []))
    }

    @Test func randomBytes() {
        #expect(SecureRandom.bytes(0).isEmpty)
        #expect(SecureRandom.bytes(33).count == 33)
        #expect(SecureRandom.bytes(32) != SecureRandom.bytes(32))
        var nonce = [UInt8](repeating: 0, count: 12)
        var nonces = Set<[UInt8]>()
        for _ in 0..<500 {
            nonce.withUnsafeMutableBytes { SecureRandom.fillNonce($0) }
            nonces.insert(nonce)
        }
        #expect(nonces.count == 500)
    }

    @Test(arguments: [UInt64(1), 2, 3, 7, 10, 1000, UInt64(1) << 63 + 1, UInt64.max])
    func uniformStaysInRange(bound: UInt64) {
        for _ in 0..<2000 { #expect(SecureRandom.uniform(below: bound) < bound) }
    }

    @Test func uniformCoversSmallRangesEvenly() {
        var counts = [Int](repeating: 0, count: 6)
        let draws = 60_000
        for _ in 0..<draws { counts[Int(SecureRandom.uniform(below: 6))] += 1 }
        // Expected 10,000 each; 5 standard deviations is about ±460.
        for c in counts { #expect(abs(c - draws / 6) < 600, "counts \(counts)") }
        #expect(SecureRandom.uniform(below: 1) == 0)
    }

    @Test func hmacKnownAnswersAndReuse() throws {
        // RFC 4231 test case 2.
        let key = try HMACSHA256Key(SecureBytes(Array("Jefe".utf8)))
        let expected = hexBytes("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(key.mac(Array("what do ya want for nothing?".utf8)) == expected)
        #expect(key.mac(Array("what do ya want for nothing?".utf8)) == expected)  // the reused context resets
        #expect(key.mac([]) != expected)
        // Empty key and message.
        #expect(try HMACSHA256.mac(key: SecureBytes([]), message: []) == hexBytes("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"))
        // A key longer than the block size is hashed first (RFC 4231 test case 6).
        let long = try HMACSHA256.mac(key: SecureBytes([UInt8](repeating: 0xaa, count: 131)),
                                      message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        #expect(long == hexBytes("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))
    }

    @Test func hkdfLimits() throws {
        let ikm = SecureBytes.random(count: 32)
        #expect(try HKDFSHA256.derive(ikm: ikm, salt: [], info: [], outputByteCount: 8160).count == 8160)
        #expect(throws: CryptoError.self) { try HKDFSHA256.derive(ikm: ikm, salt: [], info: [], outputByteCount: 8161) }
        #expect(throws: CryptoError.self) { try HKDFSHA256.derive(ikm: ikm, salt: [], info: [], outputByteCount: 0) }
        // An empty salt equals 32 zero bytes (RFC 5869).
        #expect(try HKDFSHA256.derive(ikm: ikm, salt: [], info: [1], outputByteCount: 32)
                == HKDFSHA256.derive(ikm: ikm, salt: [UInt8](repeating: 0, count: 32), info: [1], outputByteCount: 32))
    }

    @Test func benchmarkFunctionRuns() {
        #expect(CryptoBenchmark.sealThroughput(bytes: 64, seconds: 0.05) > 0)
        for mode in CryptoBenchmark.NonceMode.allCases {
            #expect(CryptoBenchmark.sealThroughput(bytes: 64, seconds: 0.02, nonce: mode) > 0)
        }
    }
}

@Suite("SHA-256") struct SHA256Tests {
    func hex(_ b: [UInt8]) -> String { b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    @Test func knownAnswers() {
        // FIPS 180-2 examples.
        #expect(hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex(SHA256.hash([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hash(Array("ab".utf8), Array("c".utf8)) == SHA256.hash(Array("abc".utf8)))
    }
}
