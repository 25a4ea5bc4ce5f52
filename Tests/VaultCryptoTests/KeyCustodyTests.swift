import Foundation
import SoftHSMSupport
import Testing
@testable import VaultCrypto

/// RFC 7512 URIs: what is accepted, and that nothing secret is echoed by a refusal.
@Suite struct PKCS11URITests {
    @Test func theIssueFormAndTheRFCFormParseAlike() throws {
        let a = try PKCS11URI.parse("pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=vault;object=pv-seal?pin-source=file:/run/secrets/pin")
        let b = try PKCS11URI.parse("pkcs11:token=vault;object=pv-seal?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin")
        #expect(a == b)
        #expect(a.token == "vault" && a.object == "pv-seal" && a.pinFile == "/run/secrets/pin" && a.modulePath == "/usr/lib/softhsm/libsofthsm2.so")
        #expect(try PKCS11URI.parse(a.description) == a)
        #expect(try PKCS11URI.parse("pkcs11:token=my%20vault;object=k?module-path=/m.so").token == "my vault")
    }

    @Test(arguments: [
        "pkcs11:token=t;object=o?module-path=/m.so&pin-value=SECRET-PIN-1234",
        "pkcs11:token=t;object=o;pin-value=SECRET-PIN-1234?module-path=/m.so",
    ])
    func pinValueIsRefusedWithoutEchoingIt(_ uri: String) {
        do throws(KeyringError) {
            _ = try PKCS11URI.parse(uri)
            Issue.record("pin-value accepted")
        } catch {
            #expect(error.kind == .invalidURI)
            #expect(!error.description.contains("SECRET-PIN-1234"))
            #expect(error.description.contains("pin-source"))
        }
    }

    @Test(arguments: [
        "token=t;object=o?module-path=/m.so",               // no scheme
        "pkcs11:token=t;object=o",                          // no module
        "pkcs11:token=t;object=o?module-path=relative.so",  // not absolute
        "pkcs11:token=t;token=u?module-path=/m.so",         // twice
        "pkcs11:token=t%zz?module-path=/m.so",              // bad escape
        "pkcs11:token=t%00x?module-path=/m.so",             // NUL
        "pkcs11:tokn=t?module-path=/m.so",                  // unknown attribute
        "pkcs11:type=private?module-path=/m.so",            // not a secret key
        "pkcs11:token=t?module-path=/m.so&pin-source=relative",
        "pkcs11:token=012345678901234567890123456789012?module-path=/m.so",   // 33-byte label
    ])
    func malformedURIsAreUsageErrors(_ uri: String) {
        #expect(throws: KeyringError.self) { try PKCS11URI.parse(uri) }
        do throws(KeyringError) { _ = try PKCS11URI.parse(uri) } catch { #expect(error.kind == .invalidURI) }
    }

    @Test func aModuleThatIsNotThereIsAClearCustodyError() throws {
        let dir = try makeTemporaryDirectory().path
        let ring = Keyring.generate(note: nil)
        let uri = try PKCS11URI.parse("pkcs11:token=t;object=o?module-path=\(dir)/no-such-module.so")
        do throws(KeyringError) {
            try ring.withCustody(.pkcs11(uri)).write(to: dir + "/k.json")
            Issue.record("sealed without a module")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("not found"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/k.json"))
        // A module file (or its directory) others may write is never loaded: whoever can
        // replace it would run code in the process that holds the keys.
        FileManager.default.createFile(atPath: dir + "/open.so", contents: Data("not an ELF".utf8))
        chmod(dir + "/open.so", 0o666)
        let open = try PKCS11URI.parse("pkcs11:token=t;object=o?module-path=\(dir)/open.so")
        do throws(KeyringError) {
            try Keyring.createSealingKey(open, place: "test")
            Issue.record("loaded a world-writable module")
        } catch {
            #expect(error.kind == .custody && error.description.contains("writable by group or others"), "\(error)")
        }
        // A file that is not a PKCS#11 module.
        FileManager.default.createFile(atPath: dir + "/junk.so", contents: Data("not an ELF".utf8))
        let junk = try PKCS11URI.parse("pkcs11:token=t;object=o?module-path=\(dir)/junk.so")
        #expect(throws: KeyringError.self) { try Keyring.createSealingKey(junk, place: "test") }
    }
}

/// The keyring sealed by a PKCS#11 key, against SoftHSM2 (issue 22). Fails, not skips, when
/// PROFILEVAULT_REQUIRE_SOFTHSM=1 and SoftHSM2 is missing.
@Suite(.enabled(if: SoftHSM.shouldRun)) struct SealedKeyringTests {
    /// A token with a sealing key, a file keyring, and the same keyring sealed.
    struct Setup {
        let token: SoftHSM.Token
        let uri: PKCS11URI
        let dir: String
        let ring: Keyring
        let sealedPath: String
    }

    func setup() throws -> Setup {
        let token = try SoftHSM.token()
        let uri = try PKCS11URI.parse(token.uri())
        let dir = try makeTemporaryDirectory().path
        try Keyring.createSealingKey(uri, place: "test")
        var ring = Keyring.generate(note: "sealed test")
        ring.addVersion()
        let sealedPath = dir + "/sealed.json"
        try ring.withCustody(.pkcs11(uri)).write(to: sealedPath)
        return Setup(token: token, uri: uri, dir: dir, ring: ring, sealedPath: sealedPath)
    }

    @Test func sealThenOpenGivesTheSameKeysAndTheFileHoldsNoSecret() throws {
        let s = try setup()
        let opened = try Keyring.load(path: s.sealedPath, hsm: s.uri)
        #expect(opened.hasSameKeys(as: s.ring))
        #expect(opened.custody == .pkcs11(s.uri))
        for v in s.ring.versions {
            #expect(try opened.derive(.kek, version: v) == s.ring.derive(.kek, version: v))
        }
        // No root secret appears in the sealed file, in hex or raw.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: s.sealedPath))
        let text = String(decoding: bytes, as: UTF8.self)
        let plain = s.dir + "/plain.json"
        try s.ring.write(to: plain)
        let plainText = try String(contentsOfFile: plain, encoding: .utf8)
        for line in plainText.split(separator: "\n") where line.contains("\"secret\"") {
            let hex = line.split(separator: "\"")[5]
            #expect(hex.count == 64)
            #expect(!text.contains(hex))
        }
        #expect(text.contains("\"format\": \"profilevault-sealed-keyring\""))
        #expect(text.contains("\"custody\": \"pkcs11\""))
        // Mode 0600 like any keyring.
        let mode = try FileManager.default.attributesOfItem(atPath: s.sealedPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // A URI without token and object takes them from the file.
        let bare = PKCS11URI(modulePath: s.uri.modulePath, token: nil, object: nil, pinFile: s.uri.pinFile)
        #expect(try Keyring.load(path: s.sealedPath, hsm: bare).hasSameKeys(as: s.ring))
    }

    @Test func theSealedFileAloneOpensNothing() throws {
        let s = try setup()
        do throws(KeyringError) {
            _ = try Keyring.load(path: s.sealedPath)
            Issue.record("a sealed keyring opened without the HSM")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("sealed by PKCS#11 key \"pv-seal\""))
        }
        // Another token's key of the same label does not open it either (integrity).
        let other = try SoftHSM.token()
        let otherURI = try PKCS11URI.parse(other.uri())
        try Keyring.createSealingKey(otherURI, place: "test")
        var copy = try String(contentsOfFile: s.sealedPath, encoding: .utf8)
        copy = copy.replacingOccurrences(of: "\"token\": \"\(s.token.label)\"", with: "\"token\": \"\(other.label)\"")
        let moved = s.dir + "/moved.json"
        FileManager.default.createFile(atPath: moved, contents: Data(copy.utf8), attributes: [.posixPermissions: 0o600])
        do throws(KeyringError) {
            _ = try Keyring.load(path: moved, hsm: otherURI)
            Issue.record("opened under another token's key")
        } catch {
            #expect(error.kind == .sealIntegrity)
        }
    }

    /// Every single-byte change of the sealed file is refused: never a keyring, never a crash.
    /// A change inside `iv` or `sealed` (still hex) is an integrity error.
    @Test func everyFlippedByteIsRefused() throws {
        let s = try setup()
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: s.sealedPath)))
        let text = String(decoding: original, as: UTF8.self)
        let sealedStart = text.utf8.count - (text.split(separator: "\"sealed\": \"")[1].utf8.count)
        var integrity = 0
        for i in original.indices {
            var bytes = original
            // Stay printable where the byte was hex, so the change reaches the token.
            let flipped: UInt8 = bytes[i] == UInt8(ascii: "0") ? UInt8(ascii: "1") : (bytes[i] ^ 0x01)
            bytes[i] = flipped
            let path = s.dir + "/flip-\(i).json"
            FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
            defer { unlink(path) }
            do throws(KeyringError) {
                _ = try Keyring.load(path: path, hsm: s.uri)
                Issue.record("byte \(i) changed and the keyring still opened")
            } catch {
                if i >= sealedStart && i < original.count - 4 && isLowerHex(flipped) {
                    #expect(error.kind == .sealIntegrity, "byte \(i): \(error.kind)")
                }
                if error.kind == .sealIntegrity { integrity += 1 }
            }
        }
        #expect(integrity > 100)
    }

    private func isLowerHex(_ b: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b)
    }

    @Test func aWrongPINIsRefusedAndNeverEchoed() throws {
        let s = try setup()
        let wrong = "WRONG-\(s.token.pin)-PIN"
        let wrongFile = try s.token.pinFile(holding: wrong)
        let uri = try PKCS11URI.parse(s.token.uri(pinFile: wrongFile))
        do throws(KeyringError) {
            _ = try Keyring.load(path: s.sealedPath, hsm: uri)
            Issue.record("a wrong PIN opened the keyring")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("CKR_PIN_INCORRECT"))
            #expect(!error.description.contains(wrong))
            #expect(!error.description.contains(s.token.pin))
        }
        // A PIN file others can read is refused before the token sees it.
        chmod(s.token.pinFile, 0o644)
        defer { chmod(s.token.pinFile, 0o600) }
        do throws(KeyringError) {
            _ = try Keyring.load(path: s.sealedPath, hsm: s.uri)
            Issue.record("a world-readable PIN file was used")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("chmod 600"))
        }
    }

    @Test func anExtractableKeyIsRefused() throws {
        let token = try SoftHSM.token()
        let uri = try PKCS11URI.parse(token.uri(object: "extractable"))
        try PKCS11Token.withSession(uri, readWrite: true, place: "test") { (session: PKCS11Session) throws(KeyringError) in
            try session.generateKey(extractable: true)
        }
        let dir = try makeTemporaryDirectory().path
        do throws(KeyringError) {
            try Keyring.generate(note: nil).withCustody(.pkcs11(uri)).write(to: dir + "/k.json")
            Issue.record("sealed under an extractable key")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("extractable"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/k.json"))
    }

    @Test func aMissingKeyAndAnExistingLabelAreRefused() throws {
        let s = try setup()
        let missing = try PKCS11URI.parse(s.token.uri(object: "no-such-key"))
        #expect(throws: KeyringError.self) { try Keyring.load(path: s.sealedPath, hsm: missing) }   // the file names pv-seal
        do throws(KeyringError) {
            try Keyring.generate(note: nil).withCustody(.pkcs11(missing)).write(to: s.dir + "/k.json")
            Issue.record("sealed with a key that does not exist")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("no secret key \"no-such-key\""))
        }
        // generate refuses a label that exists.
        do throws(KeyringError) {
            try Keyring.createSealingKey(s.uri, place: "test")
            Issue.record("a second key with the same label")
        } catch {
            #expect(error.kind == .custody)
            #expect(error.description.contains("already exists"))
        }
    }

    /// The token goes away: unseal and seal fail as unavailable (retryable), and work again
    /// when it is back, in the same process.
    @Test func aTokenThatGoesAwayIsUnavailableAndComesBack() throws {
        let s = try setup()
        #expect(KeyCustody.pkcs11(s.uri).unavailability == nil)
        try s.token.remove()
        do throws(KeyringError) {
            _ = try Keyring.load(path: s.sealedPath, hsm: s.uri)
            Issue.record("opened without the token")
        } catch {
            #expect(error.kind == .custodyUnavailable)
            #expect(!error.description.contains(s.token.pin))
        }
        do throws(KeyringError) {
            _ = try Keyring.load(path: s.sealedPath, hsm: s.uri).replace(at: s.sealedPath)
            Issue.record("rotated without the token")
        } catch {
            #expect(error.kind == .custodyUnavailable)
        }
        #expect(KeyCustody.pkcs11(s.uri).unavailability != nil)
        try s.token.restore()
        #expect(KeyCustody.pkcs11(s.uri).unavailability == nil)
        var ring = try Keyring.load(path: s.sealedPath, hsm: s.uri)
        ring.addVersion()
        try ring.replace(at: s.sealedPath)
        #expect(try Keyring.load(path: s.sealedPath, hsm: s.uri).versions == [1, 2, 3])
    }

    /// The Wycheproof AES-GCM vectors (256-bit keys, 96-bit IV, 128-bit tag) through the module's
    /// CKM_AES_GCM, as the sealing uses it: same ciphertexts and tags, and every invalid vector
    /// refused as an integrity failure.
    @Test func wycheproofAESGCMThroughTheToken() throws {
        struct File: Decodable {
            struct Group: Decodable { let keySize: Int; let ivSize: Int; let tagSize: Int; let tests: [Vector] }
            struct Vector: Decodable { let tcId: Int; let key: String; let iv: String; let aad: String; let msg: String; let ct: String; let tag: String; let result: String }
            let testGroups: [Group]
        }
        guard let file = try loadWycheproof("aes_gcm_test.json", as: File.self) else { return }
        let token = try SoftHSM.token()
        let uri = try PKCS11URI.parse(token.uri())
        var valid = 0, invalid = 0
        try PKCS11Token.withSession(uri, place: "wycheproof") { (session: PKCS11Session) throws(KeyringError) in
            for group in file.testGroups where group.keySize == 256 && group.ivSize == 96 && group.tagSize == 128 {
                for v in group.tests {
                    let key = try session.importSessionKey(hexBytes(v.key))
                    defer { session.destroy(key) }
                    let iv = hexBytes(v.iv), aad = hexBytes(v.aad), msg = hexBytes(v.msg)
                    let sealed = hexBytes(v.ct) + hexBytes(v.tag)
                    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(sealed.count, 1), alignment: 16)
                    defer { out.deallocate() }
                    if v.result == "valid" || v.result == "acceptable" {
                        valid += 1
                        let ct = try msg.withBytes { (p: UnsafeRawBufferPointer) throws(KeyringError) in
                            try session.gcmEncrypt(key: key, iv: iv, aad: aad, plaintext: p)
                        }
                        #expect(ct == sealed, "tcId \(v.tcId): ciphertext and tag")
                        let n = try session.gcmDecrypt(key: key, iv: iv, aad: aad, input: sealed, plaintextOut: out)
                        #expect(Array(UnsafeRawBufferPointer(rebasing: out[0..<n])) == msg, "tcId \(v.tcId): open")
                    } else {
                        invalid += 1
                        do throws(KeyringError) {
                            _ = try session.gcmDecrypt(key: key, iv: iv, aad: aad, input: sealed, plaintextOut: out)
                            Issue.record("tcId \(v.tcId): an invalid vector opened")
                        } catch {
                            #expect(error.kind == .sealIntegrity, "tcId \(v.tcId)")
                        }
                    }
                }
            }
        }
        #expect(valid > 10 && invalid > 10)
    }
}
