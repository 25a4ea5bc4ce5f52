import Testing
import VaultCrypto

@Suite("Envelope (SPEC §3 blobs)")
struct EnvelopeTests {
    let dek: AESGCMKey
    let dekBytes: SecureBytes
    let kek: AESGCMKey
    let subject = SecureRandom.bytes(32)

    init() throws {
        dekBytes = .random(count: 32)
        dek = try AESGCMKey(dekBytes)
        kek = try AESGCMKey(.random(count: 32))
    }

    @Test func fieldRoundTripAndLayout() throws {
        for plaintext in [[], Array("alice@example.com".utf8), SecureRandom.bytes(5000)] {
            let blob = try Envelope.sealField(plaintext, field: "email", subject: subject, dek: dek)
            #expect(blob.count == 1 + 12 + plaintext.count + 16)
            #expect(blob[0] == Envelope.formatVersion)
            #expect(try Envelope.openField(blob, field: "email", subject: subject, dek: dek) == plaintext)
        }
    }

    @Test func fieldBlobMatchesTheDocumentedAAD() throws {
        // Recompute the blob's tag with the raw AES-GCM API and the AAD written out by hand.
        let plaintext = Array("+49 30 1234567".utf8)
        let blob = try Envelope.sealField(plaintext, field: "phone", subject: subject, dek: dek)
        let nonce = Array(blob[1..<13])
        let ciphertext = Array(blob[13..<(blob.count - 16)])
        let tag = Array(blob.suffix(16))
        let aad = Array("pv:field:v1".utf8) + [0x00, 0x01] + subject + Array("phone".utf8)
        #expect(try dek.open(ciphertext, tag: tag, nonce: nonce, aad: aad) == plaintext)
    }

    @Test func everyFlippedByteIsDetected() throws {
        let blob = try Envelope.sealField(Array("Alice".utf8), field: "full_name", subject: subject, dek: dek)
        for i in blob.indices {
            var bad = blob
            bad[i] ^= 0x01
            #expect(throws: CryptoError.self, "byte \(i)") {
                try Envelope.openField(bad, field: "full_name", subject: subject, dek: dek)
            }
        }
        var truncated = blob; truncated.removeLast()
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(truncated, field: "full_name", subject: subject, dek: dek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(Array(blob.prefix(20)), field: "full_name", subject: subject, dek: dek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField([], field: "full_name", subject: subject, dek: dek) }
    }

    @Test func wrongFieldSubjectOrKeyFails() throws {
        let blob = try Envelope.sealField(Array("alice@example.com".utf8), field: "email", subject: subject, dek: dek)
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(blob, field: "phone", subject: subject, dek: dek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(blob, field: "email ", subject: subject, dek: dek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(blob, field: "email", subject: SecureRandom.bytes(32), dek: dek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.openField(blob, field: "email", subject: subject, dek: AESGCMKey(.random(count: 32))) }
        #expect(throws: CryptoError.self) { try Envelope.openField(blob, field: "email", subject: [1, 2, 3], dek: dek) }
    }

    @Test func unknownVersionByteIsRefused() throws {
        var blob = try Envelope.sealField([1, 2, 3], field: "email", subject: subject, dek: dek)
        blob[0] = 2
        #expect(throws: CryptoError.unsupportedFormat(2)) { try Envelope.openField(blob, field: "email", subject: subject, dek: dek) }
        blob[0] = 0
        #expect(throws: CryptoError.unsupportedFormat(0)) { try Envelope.openField(blob, field: "email", subject: subject, dek: dek) }
    }

    @Test func noncesDifferBetweenSealsOfTheSamePlaintext() throws {
        var nonces = Set<[UInt8]>()
        var blobs = Set<[UInt8]>()
        for _ in 0..<1000 {
            let blob = try Envelope.sealField(Array("same".utf8), field: "email", subject: subject, dek: dek)
            nonces.insert(Array(blob[1..<13]))
            blobs.insert(blob)
        }
        #expect(nonces.count == 1000)
        #expect(blobs.count == 1000)
    }

    @Test func dekWrapRoundTripAndBinding() throws {
        let blob = try Envelope.wrapDEK(dekBytes, subject: subject, kekVersion: 3, kek: kek)
        #expect(blob.count == 1 + 12 + 32 + 16)
        #expect(try Envelope.unwrapDEK(blob, subject: subject, kekVersion: 3, kek: kek) == dekBytes)
        // The documented AAD.
        let aad = Array("pv:dek:v1".utf8) + [0x00, 0x01] + subject + [0, 0, 0, 3]
        let raw = try kek.open(Array(blob[13..<45]), tag: Array(blob.suffix(16)), nonce: Array(blob[1..<13]), aad: aad)
        #expect(SecureBytes(raw) == dekBytes)

        #expect(throws: CryptoError.authenticationFailed) { try Envelope.unwrapDEK(blob, subject: subject, kekVersion: 4, kek: kek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.unwrapDEK(blob, subject: SecureRandom.bytes(32), kekVersion: 3, kek: kek) }
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.unwrapDEK(blob, subject: subject, kekVersion: 3, kek: AESGCMKey(.random(count: 32))) }
        for i in blob.indices {
            var bad = blob
            bad[i] ^= 0x40
            #expect(throws: CryptoError.self, "byte \(i)") { try Envelope.unwrapDEK(bad, subject: subject, kekVersion: 3, kek: kek) }
        }
        var newVersion = blob; newVersion[0] = 7
        #expect(throws: CryptoError.unsupportedFormat(7)) { try Envelope.unwrapDEK(newVersion, subject: subject, kekVersion: 3, kek: kek) }
        // A field blob is not a DEK blob, even under the same key.
        let fieldBlob = try Envelope.sealField(SecureRandom.bytes(32), field: "email", subject: subject, dek: kek)
        #expect(throws: CryptoError.authenticationFailed) { try Envelope.unwrapDEK(fieldBlob, subject: subject, kekVersion: 3, kek: kek) }
    }

    @Test func keysMustBeAES256() throws {
        let small = try AESGCMKey(.random(count: 16))
        #expect(throws: CryptoError.self) { try Envelope.sealField([1], field: "email", subject: subject, dek: small) }
        #expect(throws: CryptoError.invalidKeySize(16)) { try Envelope.wrapDEK(.random(count: 16), subject: subject, kekVersion: 1, kek: kek) }
    }
}
