import Foundation
import Testing
import VaultCrypto

@Suite("Keyring")
struct KeyringTests {
    @Test func writeThenLoadRoundTripsWithMode0600() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keyring.json").path
        var keyring = Keyring.generate(note: "test \"quoted\" note\nline two")
        keyring.addVersion()
        try keyring.retire(1)
        let written = try keyring.write(to: path)
        #expect(written.path == path)
        #expect(try posixMode(path) == 0o600)

        let loaded = try Keyring.load(path: path)
        #expect(loaded.path == path)
        #expect(loaded.active == 2)
        #expect(loaded.versions == [1, 2])
        #expect(loaded.isRetired(1))
        #expect(!loaded.isRetired(2))
        #expect(loaded.note == keyring.note)
        #expect(loaded.created(1) == keyring.created(1))
        for version in [UInt32(1), 2] {
            #expect(try loaded.derive(.pseudonym, version: version) == keyring.derive(.pseudonym, version: version))
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("\"format\": \"profilevault-keyring\""))
        #expect(text.contains("\"format_version\": 1"))
    }

    @Test func groupOrWorldAccessIsRefusedWithTheFix() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keyring.json").path
        try Keyring.generate(note: nil).write(to: path)
        for mode in [0o644, 0o640, 0o604, 0o660] {
            #expect(chmod(path, mode_t(mode)) == 0)
            let error = #expect(throws: KeyringError.self) { try Keyring.load(path: path) }
            #expect(error?.kind == .insecurePermissions)
            #expect(error?.description.contains("chmod 600 \(path)") == true)
            #expect(error?.description.hasPrefix("keyring \(path): ") == true)
        }
        #expect(chmod(path, 0o644) == 0)
        let error = try #require(throws: KeyringError.self) { try Keyring.load(path: path) }
        #expect(error.reason == "is readable by group or others (mode 0644); run: chmod 600 \(path)")
        #expect(chmod(path, 0o400) == 0)
        #expect(try Keyring.load(path: path).versions == [1])
    }

    @Test func anotherUsersFileIsRefusedByTheCheckItself() {
        let regular: UInt32 = 0o100000
        #expect(SecretFile.problem(mode: regular | 0o600, owner: 1000, euid: 1000, path: "/k") == nil)
        #expect(SecretFile.problem(mode: regular | 0o400, owner: 0, euid: 0, path: "/k") == nil)
        let other = SecretFile.problem(mode: regular | 0o600, owner: 65534, euid: 1000, path: "/srv/keyring.json")
        #expect(other == "is owned by uid 65534, not by the user running this (uid 1000); run: chown 1000 /srv/keyring.json (or run as its owner)")
        // Root is not exempt: a root process refuses a keyring someone else owns (and could swap).
        #expect(SecretFile.problem(mode: regular | 0o600, owner: 1000, euid: 0, path: "/k")?.contains("owned by uid 1000") == true)
        // Mode problems are reported first; a directory is no secret file.
        #expect(SecretFile.problem(mode: regular | 0o644, owner: 65534, euid: 0, path: "/k")?.contains("chmod 600 /k") == true)
        #expect(SecretFile.problem(mode: 0o040000 | 0o700, owner: 0, euid: 0, path: "/k") == "is not a regular file")
    }

    @Test func aKeyringOwnedByAnotherUserIsRefused() throws {
        guard geteuid() == 0 else {
            print("SKIP aKeyringOwnedByAnotherUserIsRefused: needs root to chown a file to another uid (the unit test above covers the check)")
            return
        }
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keyring.json").path
        try Keyring.generate(note: nil).write(to: path)
        #expect(chown(path, 65534, 65534) == 0)
        let error = #expect(throws: KeyringError.self) { try Keyring.load(path: path) }
        #expect(error?.kind == .insecurePermissions)
        #expect(error?.description == "keyring \(path): is owned by uid 65534, not by the user running this (uid 0); run: chown 0 \(path) (or run as its owner)")
        #expect(chown(path, 0, 0) == 0)
        #expect(try Keyring.load(path: path).versions == [1])
    }

    @Test func theExampleKeyringIsRecognisedByContentNotPath() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // <root>/Tests/VaultCryptoTests/KeyringTests.swift -> <root>/keys-example/keyring.json
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var text = try String(contentsOf: root.appendingPathComponent("keys-example/keyring.json"), encoding: .utf8)
        // A copy under another name, with its note removed: still the example.
        text = text.replacingOccurrences(of: #""note": "EXAMPLE ONLY"#, with: #""note": "production"#)
        let path = try writeRaw(text, in: dir)
        var copy = try Keyring.load(path: path)
        #expect(copy.isExample)
        // Rotating it to a fresh version does not make it private: version 1 is still public.
        copy.addVersion()
        #expect(copy.isExample)
        #expect(!Keyring.generate(note: "EXAMPLE ONLY").isExample)
    }

    @Test func refusesToOverwriteAndRefusesNonRegularFiles() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keyring.json").path
        let first = Keyring.generate(note: "first")
        try first.write(to: path)
        let error = #expect(throws: KeyringError.self) { try Keyring.generate(note: "second").write(to: path) }
        #expect(error?.reason.contains("refusing to overwrite") == true)
        #expect(try Keyring.load(path: path).note == "first")

        let notFound = #expect(throws: KeyringError.self) { try Keyring.load(path: dir.appendingPathComponent("missing.json").path) }
        #expect(notFound?.kind == .notFound)
        let directory = #expect(throws: KeyringError.self) { try Keyring.load(path: dir.path) }
        #expect(directory?.kind == .insecurePermissions)

        // replace(at:) is the explicit way to update a keyring file.
        var rotated = try Keyring.load(path: path)
        rotated.addVersion()
        try rotated.replace(at: path)
        #expect(try Keyring.load(path: path).active == 2)
        #expect(try posixMode(path) == 0o600)
    }

    private func writeRaw(_ text: String, in dir: URL) throws -> String {
        let path = dir.appendingPathComponent("raw-\(UUID().uuidString).json").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]))
        return path
    }

    @Test func malformedFilesNameTheField() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = String(repeating: "ab", count: 32)
        func file(secret: String = good, active: String = "1", version: String = "1", format: String = "profilevault-keyring", formatVersion: String = "1") -> String {
            """
            {"format": "\(format)", "format_version": \(formatVersion), "active": \(active),
             "keys": [{"version": \(version), "secret": "\(secret)", "created": "2026-11-22T12:00:00Z", "retired": false}]}
            """
        }
        let cases: [(String, String)] = [
            (file(secret: String(repeating: "zz", count: 32)), "keys[0].secret"),
            (file(secret: String(repeating: "AB", count: 32)), "keys[0].secret"),
            (file(secret: String(repeating: "ab", count: 31)), "keys[0].secret"),
            (file(active: "2"), "active"),
            (file(version: "\"one\""), "keys[0].version"),
            (file(version: "-1"), "keys[0].version"),
            (file(version: "4294967296"), "keys[0].version"),
            (file(version: "1.5"), "keys[0].version"),
            (file(active: "-3"), "active"),
            (file(format: "something-else"), "format"),
            (file(formatVersion: "2"), "format_version"),
            ("{\"format\": \"profilevault-keyring\"", "JSON"),
            ("{\"format\": \"profilevault-keyring\", \"format_version\": 1, \"active\": 1}", "keys"),
        ]
        for (text, fieldName) in cases {
            let path = try writeRaw(text, in: dir)
            let error = #expect(throws: KeyringError.self) { try Keyring.load(path: path) }
            #expect(error?.kind == .malformed, "\(fieldName)")
            #expect(error?.reason.contains(fieldName) == true, "reason '\(error?.reason ?? "")' should name \(fieldName)")
            #expect(error?.description.contains("zz") == false)
        }
        #expect(try Keyring.load(path: writeRaw(file(), in: dir)).versions == [1])
    }

    @Test func deriveIsDeterministicAndSeparatesPurposesAndVersions() throws {
        var keyring = Keyring.generate(note: nil)
        keyring.addVersion()
        let purposes: [KeyPurpose] = [.kek, .pseudonym, .blindIndex(field: "email"), .blindIndex(field: "phone"),
                                      .auditSigning, .keyCheck, .exportPseudonym(purpose: "analytics"), .exportPseudonym(purpose: "support"),
                                      .erasureJournal]
        var seen: [String] = []
        for version in keyring.versions {
            for purpose in purposes {
                let key = try keyring.derive(purpose, version: version)
                #expect(key.count == 32)
                #expect(try keyring.derive(purpose, version: version) == key)
                seen.append(key.unsafeHex)
            }
        }
        #expect(Set(seen).count == purposes.count * 2)
        let unknown = #expect(throws: KeyringError.self) { try keyring.derive(.kek, version: 9) }
        #expect(unknown?.kind == .unknownVersion)
    }

    @Test func deriveMatchesTheDocumentedHKDF() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let secretHex = String(repeating: "0f", count: 32)
        let path = try writeRaw("""
            {"format": "profilevault-keyring", "format_version": 1, "active": 1,
             "keys": [{"version": 1, "secret": "\(secretHex)", "created": "2026-11-22T12:00:00Z"}]}
            """, in: dir)
        let keyring = try Keyring.load(path: path)
        let expected = try HKDFSHA256.derive(ikm: SecureBytes(hexBytes(secretHex)), salt: Array("profilevault/v1".utf8),
                                             info: Array("pv:blind-index:email".utf8), outputByteCount: 32)
        #expect(try keyring.derive(.blindIndex(field: "email"), version: 1) == expected)
    }

    @Test func retireRules() throws {
        var keyring = Keyring.generate(note: nil)
        let active = #expect(throws: KeyringError.self) { try keyring.retire(1) }
        #expect(active?.kind == .invalidOperation)
        #expect(keyring.addVersion() == 2)
        try keyring.retire(1)
        #expect(keyring.isRetired(1))
        let kek = #expect(throws: KeyringError.self) { try keyring.derive(.kek, version: 1) }
        #expect(kek?.kind == .retiredVersion)
        // Identity purposes of a retired version stay derivable (a store's identity version is fixed).
        _ = try keyring.derive(.pseudonym, version: 1)
        let unknown = #expect(throws: KeyringError.self) { try keyring.retire(5) }
        #expect(unknown?.kind == .unknownVersion)
    }

    @Test func descriptionsNeverContainSecrets() throws {
        let keyring = Keyring.generate(note: nil)
        let secretHex = try keyring.derive(.kek, version: 1).unsafeHex
        #expect(!"\(try keyring.derive(.kek, version: 1))".contains(secretHex))
        #expect("\(try keyring.derive(.kek, version: 1))" == "SecureBytes(32 bytes, redacted)")
        #expect(!String(describing: keyring).contains(secretHex))
    }
}
