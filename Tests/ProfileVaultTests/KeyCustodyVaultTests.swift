import Foundation
import GRDB
import SoftHSMSupport
import Testing
import VaultCrypto
import VaultValues
@testable import ProfileVault
@testable import VaultStore

/// A store whose keyring is sealed by a SoftHSM2 key (issue 22), through the Vault and the CLI.
/// Fails, not skips, when PROFILEVAULT_REQUIRE_SOFTHSM=1 and SoftHSM2 is missing.
@Suite(.enabled(if: SoftHSM.shouldRun)) struct KeyCustodyVaultTests {
    final class Fixture {
        let dir: String
        let keys: String
        let storePath: String
        let token: SoftHSM.Token
        let uri: String

        init() throws {
            token = try SoftHSM.token()
            uri = token.uri()
            dir = NSTemporaryDirectory() + "pv-hsm-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            keys = dir + "/keyring.json"
            storePath = dir + "/store.sqlite"
            try Keyring.generate(note: "test").write(to: keys)
            let v = try Vault.initialize(config("operator", hsm: nil))
            var o = IngestOptions()
            o.format = .csv
            let csv = dir + "/p.csv"
            try CLIStore.rows(20).write(toFile: csv, atomically: true, encoding: .utf8)
            _ = try v.ingestProfiles(path: csv, options: o)
            // The sealing key on the token.
            try Keyring.createSealingKey(try PKCS11URI.parse(uri), place: "test")
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func config(_ role: String, hsm: String?) -> VaultConfiguration {
            var c = VaultConfiguration(storePath: storePath, keysPath: keys, policyDirectory: CLI.repoRoot + "/policies",
                                       actor: Actor(name: "t-\(role)", role: role))
            c.hsmURI = hsm
            return c
        }

        func vault(_ role: String) throws -> Vault { try Vault.open(config(role, hsm: uri)) }

        func seal() throws -> KeyCustodyResult {
            try Vault.open(config("privacy_officer", hsm: nil)).sealKeyring(hsm: uri)
        }

        /// The audit export's text (JSON Lines).
        func auditText() throws -> String {
            let v = try vault("auditor")
            let out = dir + "/audit-\(UUID().uuidString).jsonl"
            _ = try v.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out)
            return try String(contentsOfFile: out, encoding: .utf8)
        }
    }

    @Test func sealOpenThroughTheHSMRoundTripRotateAndUnseal() throws {
        let f = try Fixture()
        let before = try Vault.open(f.config("support", hsm: nil)).get(customerID: "C3", purpose: "customer_support")
        let plainBytes = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        let r = try f.seal()
        #expect(r.custody.name == "pkcs11")
        #expect(Keyring.sealedHeader(path: f.keys)?.token == f.token.label)
        #expect(!FileManager.default.fileExists(atPath: f.keys + ".sealed.new"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: f.keys)) != plainBytes)

        // The sealed keyring alone opens nothing: a configuration error that names --hsm.
        do {
            _ = try Vault.open(f.config("support", hsm: nil))
            Issue.record("the store opened without the HSM")
        } catch let e as VaultError {
            #expect(e.kind == .configuration)
            #expect(e.message.contains("--hsm"))
        }
        // Through the HSM: the same profile, ingest goes on, status says where the root is.
        let support = try f.vault("support")
        #expect(try support.get(customerID: "C3", purpose: "customer_support") == before)
        var o = IngestOptions()
        o.format = .csv
        let more = f.dir + "/more.csv"
        try (CLIStore.rows(1).split(separator: "\n")[0] + "\nC900,new@example.com,New Person,+49 30 9,1980-01-01,40,male,DE,1000\n")
            .write(toFile: more, atomically: true, encoding: .utf8)
        #expect(try f.vault("operator").ingestProfiles(path: more, options: o).inserted == 1)
        #expect(try f.vault("support").get(customerID: "C900", purpose: "customer_support").fields.isEmpty == false)
        let officer = try f.vault("privacy_officer")
        let status = try officer.keyStatus()
        guard case .pkcs11(let u) = status.rootOfTrust else { Issue.record("root of trust \(status.rootOfTrust)"); return }
        #expect(u.token == f.token.label && u.object == "pv-seal")
        let json = JSONForms.keyStatus(status, rewrapped: 0).rendered(pretty: false)
        #expect(json.contains(#""root_of_trust":{"custody":"pkcs11""#))
        #expect(!json.contains(f.token.pin) && !json.contains(f.token.pinFile))

        // Rotation works unchanged and the keyring stays sealed.
        let rotated = try officer.rotateKeys(resume: false)
        #expect(rotated.active == 2 && rotated.rewrapped == 21)
        #expect(Keyring.sealedHeader(path: f.keys) != nil)
        #expect(try f.vault("support").get(customerID: "C3", purpose: "customer_support") == before)

        // Sealing twice is refused; unseal writes a new plain keyring that opens the store alone.
        #expect(throws: VaultError.self) { try officer.sealKeyring(hsm: f.uri) }
        let out = f.dir + "/escrow.json"
        let u2 = try officer.unsealKeyring(to: out)
        #expect(u2.versions == [1, 2] && u2.custody == .file)
        let mode = try FileManager.default.attributesOfItem(atPath: out)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        var plain = f.config("support", hsm: nil)
        plain.keysPath = out
        #expect(try Vault.open(plain).get(customerID: "C3", purpose: "customer_support") == before)
        // Never over an existing file, and not for a role without `keys`.
        do { _ = try officer.unsealKeyring(to: out); Issue.record("unsealed over a file") } catch let e as VaultError { #expect(e.kind == .cannotCreate) }
        do { _ = try f.vault("operator").unsealKeyring(to: f.dir + "/x.json"); Issue.record("operator unsealed") } catch let e as VaultError { #expect(e.kind == .denied) }
        #expect(!FileManager.default.fileExists(atPath: f.dir + "/x.json"))
        let audit = try f.auditText()
        #expect(audit.contains("keys.seal") && audit.contains("keys.unseal") && audit.contains("keys.rotate"))
        #expect(!audit.contains(f.token.pin))
    }

    /// The reviewer's attack: a keyring reached through a symbolic link (a secrets mount) or
    /// with a second hard link. Sealing would replace the link and leave the plaintext target
    /// whole, or zero the other name's copy: both are refused (78) and nothing changes.
    @Test func sealRefusesALinkedKeyring() throws {
        let f = try Fixture()
        let target = f.dir + "/secrets-keyring.json"
        try FileManager.default.moveItem(atPath: f.keys, toPath: target)
        try FileManager.default.createSymbolicLink(atPath: f.keys, withDestinationPath: target)
        let before = try Data(contentsOf: URL(fileURLWithPath: target))
        do { _ = try f.seal(); Issue.record("sealed through a symbolic link") } catch let e as VaultError {
            #expect(e.kind == .configuration && e.message.contains("symbolic link"), "\(e.message)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == before)
        // A hard link instead.
        try FileManager.default.removeItem(atPath: f.keys)
        try FileManager.default.linkItem(atPath: target, toPath: f.keys)
        do { _ = try f.seal(); Issue.record("sealed a hard-linked keyring") } catch let e as VaultError {
            #expect(e.kind == .configuration && e.message.contains("hard links"), "\(e.message)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == before)
        #expect(!FileManager.default.fileExists(atPath: f.keys + ".sealed.new"))
    }

    @Test func failuresAreClearVaultErrorsWithoutThePIN() throws {
        let f = try Fixture()
        _ = try f.seal()
        // Wrong PIN: configuration (78), the PIN never in the message or the detail.
        let wrong = "bad-\(f.token.pin)"
        let wrongURI = f.token.uri(pinFile: try f.token.pinFile(holding: wrong))
        do {
            _ = try Vault.open(f.config("support", hsm: wrongURI))
            Issue.record("opened with a wrong PIN")
        } catch let e as VaultError {
            #expect(e.kind == .configuration && e.exitCode == 78)
            #expect(e.message.contains("CKR_PIN_INCORRECT"))
            for text in [e.message, e.detail] { #expect(!text.contains(wrong) && !text.contains(f.token.pin)) }
        }
        // pin-value in the URI: a usage error that does not echo it.
        do {
            _ = try Vault.open(f.config("support", hsm: "pkcs11:token=\(f.token.label);object=pv-seal?module-path=\(f.token.module)&pin-value=\(f.token.pin)"))
            Issue.record("pin-value accepted")
        } catch let e as VaultError {
            #expect(e.kind == .usage)
            #expect(!e.message.contains(f.token.pin))
        }
        // Module not found: configuration.
        do {
            _ = try Vault.open(f.config("support", hsm: "pkcs11:token=\(f.token.label);object=pv-seal?module-path=/nonexistent/libnone.so&pin-source=file:\(f.token.pinFile)"))
            Issue.record("opened with no module")
        } catch let e as VaultError {
            #expect(e.kind == .configuration)
            #expect(e.message.contains("not found"))
        }
        // Token absent: unavailable (69), retryable; back: opens.
        try f.token.remove()
        do {
            _ = try f.vault("support")
            Issue.record("opened without the token")
        } catch let e as VaultError {
            #expect(e.kind == .unavailable && e.exitCode == 69)
        }
        try f.token.restore()
        _ = try f.vault("support")
    }

    /// The tamper tests on a store opened through the HSM: a changed byte of a subject's wrapped
    /// data key is an integrity error, never a wrong value.
    @Test func tamperedCiphertextOfAStoreOpenedThroughTheHSMIsAnIntegrityError() throws {
        let f = try Fixture()
        _ = try f.seal()
        let v = try f.vault("support")
        let p = try v.store.pseudonym(ofCustomerID: "C4")
        let q = try DatabaseQueue(path: f.storePath)
        let original: Data = try q.read { db in try Data.fetchOne(db, sql: "SELECT wrapped_dek FROM subjects WHERE pseudonym = ?", arguments: [Data(p)])! }
        for i in [0, 1, 13, original.count / 2, original.count - 1] {
            var bytes = original
            bytes[i] ^= 0x40
            try q.write { db in try db.execute(sql: "UPDATE subjects SET wrapped_dek = ? WHERE pseudonym = ?", arguments: [bytes, Data(p)]) }
            do {
                _ = try f.vault("support").get(customerID: "C4", purpose: "customer_support")
                Issue.record("byte \(i) of the wrapped key changed and the profile still read")
            } catch let e as VaultError {
                #expect(e.kind == .integrity, "byte \(i): \(e.kind)")
            }
        }
        try q.write { db in try db.execute(sql: "UPDATE subjects SET wrapped_dek = ? WHERE pseudonym = ?", arguments: [original, Data(p)]) }
        _ = try f.vault("support").get(customerID: "C4", purpose: "customer_support")
    }

    /// The CLI: `keys generate --hsm` (and its refusal of an existing label), a store on it,
    /// `keys status` naming the token, the URI from PROFILEVAULT_HSM_URI, and the exit statuses.
    @Test func theCLIGeneratesSealsAndReportsTheRootOfTrust() throws {
        let token = try SoftHSM.token()
        let dir = NSTemporaryDirectory() + "pv-hsm-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let uri = token.uri(object: "cli-seal")
        let g = try CLI.run(["keys", "generate", "--hsm", uri, "--out", dir + "/keyring.json", "--json"])
        #expect(g.status == 0, "\(g.stderr)")
        #expect(g.json?["custody"] as? String == "pkcs11")
        // The label exists now: refused, nothing written.
        let again = try CLI.run(["keys", "generate", "--hsm", uri, "--out", dir + "/other.json"])
        #expect(again.status == 78 && again.stderr.contains("already exists"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/other.json"))
        let env = ["PROFILEVAULT_STORE": dir + "/store.sqlite", "PROFILEVAULT_KEYS": dir + "/keyring.json",
                   "PROFILEVAULT_POLICY": CLI.repoRoot + "/policies", "PROFILEVAULT_HSM_URI": uri]
        let i = try CLI.run(["init", "--json"], env: env)
        #expect(i.status == 0, "\(i.stderr)")
        let s = try CLI.run(["keys", "status", "--role", "privacy_officer", "--json"], env: env)
        #expect(s.status == 0, "\(s.stderr)")
        let root = s.json?["root_of_trust"] as? [String: Any]
        #expect(root?["custody"] as? String == "pkcs11" && root?["token"] as? String == token.label && root?["object"] as? String == "cli-seal")
        #expect(!s.stdout.contains(token.pin))
        // Without the URI: 78 and a message that says how.
        var noURI = env
        noURI["PROFILEVAULT_HSM_URI"] = nil
        let n = try CLI.run(["keys", "status", "--role", "privacy_officer"], env: noURI)
        #expect(n.status == 78 && n.stderr.contains("PROFILEVAULT_HSM_URI"))
        // Wrong PIN: 78, PIN not echoed; token away: 69.
        let wrong = try token.pinFile(holding: "not-the-pin-\(token.pin)")
        var bad = env
        bad["PROFILEVAULT_HSM_URI"] = token.uri(object: "cli-seal", pinFile: wrong)
        let w = try CLI.run(["keys", "status", "--role", "privacy_officer"], env: bad)
        #expect(w.status == 78 && w.stderr.contains("CKR_PIN_INCORRECT") && !w.stderr.contains(token.pin))
        try token.remove()
        let gone = try CLI.run(["keys", "rotate", "--role", "privacy_officer"], env: env)
        #expect(gone.status == 69, "\(gone.stderr)")
        try token.restore()
        let rot = try CLI.run(["keys", "rotate", "--role", "privacy_officer", "--json"], env: env)
        #expect(rot.status == 0 && rot.json?["active"] as? Int == 2, "\(rot.stderr)")
        // Unseal to a new file for the privacy officer.
        let u = try CLI.run(["keys", "unseal", "--role", "privacy_officer", "--out", dir + "/escrow.json", "--json"], env: env)
        #expect(u.status == 0 && u.json?["custody"] as? String == "file", "\(u.stderr)")
        // A plain keyring under a URI is refused (78), never opened as custody `file`: the
        // operator who names a token expects the root of trust to be in it.
        var plainUnderURI = env
        plainUnderURI["PROFILEVAULT_KEYS"] = dir + "/escrow.json"
        for args in [["keys", "status", "--role", "privacy_officer"], ["audit", "verify", "--role", "auditor"],
                     ["keys", "rotate", "--role", "privacy_officer"]] {
            let r = try CLI.run(args, env: plainUnderURI)
            #expect(r.status == 78 && r.stderr.contains("not sealed") && !r.stderr.contains(token.pin), "\(args): \(r.status) \(r.stderr)")
        }
        #expect(try Keyring.load(path: dir + "/escrow.json").versions == [1, 2])   // rotate did not run
        var plainAlone = plainUnderURI
        plainAlone["PROFILEVAULT_HSM_URI"] = nil
        let alone = try CLI.run(["keys", "status", "--role", "privacy_officer", "--json"], env: plainAlone)
        #expect(alone.status == 0 && (alone.json?["root_of_trust"] as? [String: Any])?["custody"] as? String == "file", "\(alone.stderr)")
        // `keys seal` is the one command that takes a URI with a plain keyring: it seals it.
        let sealed = try CLI.run(["keys", "seal", "--role", "privacy_officer", "--json"], env: plainUnderURI)
        #expect(sealed.status == 0 && sealed.json?["custody"] as? String == "pkcs11", "\(sealed.stderr)")
        let after = try CLI.run(["keys", "status", "--role", "privacy_officer", "--json"], env: plainUnderURI)
        #expect(after.status == 0 && (after.json?["root_of_trust"] as? [String: Any])?["custody"] as? String == "pkcs11", "\(after.stderr)")
    }
}
