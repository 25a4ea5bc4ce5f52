import Foundation
import Testing
import VaultCrypto

// Project Wycheproof vectors (../shared/data/wycheproof, C2SP snapshot).
// Result semantics: "valid" must reproduce exactly; "acceptable" (none in these files) is
// treated like valid, since these primitives have no legacy behaviour to tolerate;
// "invalid" must be rejected (open throws, the MAC differs, derive throws).

private struct AeadFile: Decodable {
    struct Group: Decodable { let keySize: Int; let ivSize: Int; let tagSize: Int; let tests: [Vector] }
    struct Vector: Decodable {
        let tcId: Int; let comment: String; let flags: [String]
        let key: String; let iv: String; let aad: String; let msg: String; let ct: String; let tag: String; let result: String
    }
    let numberOfTests: Int
    let testGroups: [Group]
}

private struct MacFile: Decodable {
    struct Group: Decodable { let keySize: Int; let tagSize: Int; let tests: [Vector] }
    struct Vector: Decodable { let tcId: Int; let key: String; let msg: String; let tag: String; let result: String }
    let testGroups: [Group]
}

private struct HkdfFile: Decodable {
    struct Group: Decodable { let keySize: Int; let tests: [Vector] }
    struct Vector: Decodable {
        let tcId: Int; let ikm: String; let salt: String; let info: String; let size: Int; let okm: String; let result: String
    }
    let testGroups: [Group]
}

@Suite("Wycheproof vectors")
struct WycheproofTests {
    /// AES-GCM: every group with a 96-bit IV and 128-bit tag (128/192/256-bit keys).
    /// Skipped: groups with other IV sizes (0, 8...80, 120...2056 bits), because `AESGCMKey`
    /// accepts only 12-byte nonces by design (it throws `invalidNonceSize` for the rest).
    @Test func wycheproofAESGCM() throws {
        guard let file = try loadWycheproof("aes_gcm_test.json", as: AeadFile.self) else { return }
        var valid = 0, invalid = 0, skippedGroups = 0, skippedVectors = 0
        for group in file.testGroups {
            guard group.ivSize == 96, group.tagSize == 128, [128, 192, 256].contains(group.keySize) else {
                skippedGroups += 1
                skippedVectors += group.tests.count
                continue
            }
            for v in group.tests {
                let key = try AESGCMKey(SecureBytes(hexBytes(v.key)))
                let iv = hexBytes(v.iv), aad = hexBytes(v.aad), msg = hexBytes(v.msg), ct = hexBytes(v.ct), tag = hexBytes(v.tag)
                switch v.result {
                case "valid", "acceptable":
                    valid += 1
                    let sealed = try key.seal(msg, nonce: iv, aad: aad)
                    #expect(sealed.ciphertext == ct, "tcId \(v.tcId): ciphertext")
                    #expect(sealed.tag == tag, "tcId \(v.tcId): tag")
                    #expect(try key.open(ct, tag: tag, nonce: iv, aad: aad) == msg, "tcId \(v.tcId): open")
                    // A fresh key whose first use is an open (its sealing context is never made),
                    // and the shared (pooled) key, give the same answers.
                    #expect(try AESGCMKey(SecureBytes(hexBytes(v.key))).open(ct, tag: tag, nonce: iv, aad: aad) == msg, "tcId \(v.tcId): open first")
                    let shared = try SharedAESGCMKey(SecureBytes(hexBytes(v.key)))
                    #expect(try shared.withKey { try $0.open(ct, tag: tag, nonce: iv, aad: aad) } == msg, "tcId \(v.tcId): shared open")
                    #expect(try shared.withKey { try $0.seal(msg, nonce: iv, aad: aad) }.tag == tag, "tcId \(v.tcId): shared seal")
                    var appended: [UInt8] = [0xAA]
                    try msg.withUnsafeBytes { m in
                        try iv.withUnsafeBytes { n in
                            try aad.withUnsafeBytes { a in try key.seal(m, nonce: n, aad: a, appendingTo: &appended) }
                        }
                    }
                    #expect(appended == [0xAA] + ct + tag, "tcId \(v.tcId): appendingTo")
                default:
                    invalid += 1
                    #expect(throws: CryptoError.authenticationFailed, "tcId \(v.tcId) (\(v.comment)) must be rejected") {
                        try key.open(ct, tag: tag, nonce: iv, aad: aad)
                    }
                    #expect(throws: CryptoError.authenticationFailed, "tcId \(v.tcId): shared open must reject") {
                        try SharedAESGCMKey(SecureBytes(hexBytes(v.key))).withKey { try $0.open(ct, tag: tag, nonce: iv, aad: aad) }
                    }
                }
            }
        }
        print("Wycheproof aes_gcm_test.json: ran \(valid + invalid) vectors (\(valid) valid, \(invalid) invalid); skipped \(skippedGroups) groups / \(skippedVectors) vectors with IV size != 96 bits")
        #expect(valid + invalid > 0)
        #expect(invalid > 0)
    }

    /// HMAC-SHA256: all groups (keys of 16, 32 and 65 bytes); tags of tagSize bits are
    /// compared with that prefix of the full MAC (128-bit groups are truncated tags).
    @Test func wycheproofHMACSHA256() throws {
        guard let file = try loadWycheproof("hmac_sha256_test.json", as: MacFile.self) else { return }
        var valid = 0, invalid = 0
        for group in file.testGroups {
            for v in group.tests {
                let key = try HMACSHA256Key(SecureBytes(hexBytes(v.key)))
                let mac = key.mac(hexBytes(v.msg))
                #expect(mac.count == 32)
                // The shared key (a duplicated template context) gives the same MAC, twice.
                let shared = try SharedHMACSHA256Key(SecureBytes(hexBytes(v.key)))
                #expect(shared.mac(hexBytes(v.msg)) == mac, "tcId \(v.tcId): shared")
                #expect(shared.mac(hexBytes(v.msg)) == mac, "tcId \(v.tcId): shared, reused context")
                let prefix = Array(mac.prefix(group.tagSize / 8))
                let expected = hexBytes(v.tag)
                switch v.result {
                case "valid", "acceptable":
                    valid += 1
                    #expect(constantTimeEqual(prefix, expected), "tcId \(v.tcId)")
                    #expect(try HMACSHA256.mac(key: SecureBytes(hexBytes(v.key)), message: hexBytes(v.msg)) == mac)
                default:
                    invalid += 1
                    #expect(!constantTimeEqual(prefix, expected), "tcId \(v.tcId) must not verify")
                }
            }
        }
        print("Wycheproof hmac_sha256_test.json: ran \(valid + invalid) vectors (\(valid) valid, \(invalid) invalid); skipped none")
        #expect(valid + invalid > 0)
    }

    /// HKDF-SHA256: all groups; the invalid vectors ask for more than 255*32 bytes.
    @Test func wycheproofHKDFSHA256() throws {
        guard let file = try loadWycheproof("hkdf_sha256_test.json", as: HkdfFile.self) else { return }
        var valid = 0, invalid = 0
        for group in file.testGroups {
            for v in group.tests {
                let ikm = SecureBytes(hexBytes(v.ikm))
                switch v.result {
                case "valid", "acceptable":
                    valid += 1
                    let okm = try HKDFSHA256.derive(ikm: ikm, salt: hexBytes(v.salt), info: hexBytes(v.info), outputByteCount: v.size)
                    #expect(okm == SecureBytes(hexBytes(v.okm)), "tcId \(v.tcId)")
                default:
                    invalid += 1
                    #expect(throws: CryptoError.self, "tcId \(v.tcId) must be rejected") {
                        try HKDFSHA256.derive(ikm: ikm, salt: hexBytes(v.salt), info: hexBytes(v.info), outputByteCount: v.size)
                    }
                }
            }
        }
        print("Wycheproof hkdf_sha256_test.json: ran \(valid + invalid) vectors (\(valid) valid, \(invalid) invalid); skipped none")
        #expect(valid + invalid > 0)
    }
}

@Test func wycheproofLookupFindsNothingOutsideARepositoryTree() {
    // The skip path: without $PROFILEVAULT_SHARED and with no ../shared next to the package root,
    // the vector tests print a skip message instead of failing.
    guard ProcessInfo.processInfo.environment["PROFILEVAULT_SHARED"] == nil else { return }
    #expect(wycheproofDirectory(filePath: "/nonexistent/pkg/Tests/VaultCryptoTests/X.swift") == nil)
}
