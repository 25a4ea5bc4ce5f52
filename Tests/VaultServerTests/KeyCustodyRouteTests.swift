import Foundation
import Hummingbird
import HummingbirdTesting
import SoftHSMSupport
import Testing
import VaultCrypto
@testable import ProfileVault
@testable import VaultServer
import VaultValues

/// The service on a keyring sealed by a SoftHSM2 key (issue 22), and the token going away while
/// it runs: reads go on from the keys in memory; what needs the token (key status, rotation,
/// adopting a changed keyring file) answers 503 and the health check says degraded; all of it
/// works again when the token is back. Fails, not skips, when PROFILEVAULT_REQUIRE_SOFTHSM=1
/// and SoftHSM2 is missing.
@Suite(.enabled(if: SoftHSM.shouldRun)) struct KeyCustodyRouteTests {
    @Test func aTokenLostMidRunGives503AndRecovers() async throws {
        let f = try ServiceFixture()
        let token = try SoftHSM.token()
        let uri = token.uri()
        try Keyring.createSealingKey(try PKCS11URI.parse(uri), place: "test")
        let c = f.vault.configuration
        var officer = VaultConfiguration(storePath: c.storePath, keysPath: c.keysPath, policyDirectory: c.policyDirectory,
                                         actor: ProfileVault.Actor(name: "po", role: "privacy_officer"))
        _ = try Vault.open(officer).sealKeyring(hsm: uri)
        officer.hsmURI = uri
        var serve = officer
        serve.actor = ProfileVault.Actor(name: "serve", role: "none")
        let vault = try Vault.open(serve)
        let watcher = KeyringWatcher(vault: vault, every: 3600, logger: ServiceFixture.logger)
        let app = Application(router: buildRouter(vault: vault, tokens: f.tokenFile, options: f.options, metrics: f.metrics, logger: ServiceFixture.logger))
        let tokens = f.tokens
        let keys = serve.keysPath
        try await app.test(.router) { client in
            let c = Client(client: client, tokens: tokens)
            try await c.seed()
            var h = try await c.call(.get, "/healthz")
            #expect(h.status == .ok && h.json?["key_custody"] == .string("available"), "\(h.text)")
            var k = try await c.call(.get, "/v1/keys", as: "privacy_officer")
            #expect(k.status == .ok, "\(k.text)")
            #expect(k.json?["root_of_trust"]?["custody"] == .string("pkcs11"))
            #expect(k.json?["root_of_trust"]?["token"] == .string(token.label))
            #expect(!k.text.contains(token.pin) && !k.text.contains("pin"))

            try token.remove()
            // Reads and writes go on from memory.
            let g = try await c.call(.get, "/v1/subjects/C2?purpose=customer_support", as: "support")
            #expect(g.status == .ok, "\(g.text)")
            let ingest = try await c.call(.post, "/v1/profiles", as: "operator", body: #"[{"customer_id":"C7","email":"c7@example.com","full_name":"C Seven","phone":"+49 30 7","birth_date":"1990-01-01","age":30,"gender":"male","country":"DE","annual_income":1}]"#)
            #expect(ingest.status == .ok, "\(ingest.text)")
            // What needs the token: 503, with a message that says so; health degraded (200).
            h = try await c.call(.get, "/healthz")
            #expect(h.status == .ok && h.json?["status"] == .string("degraded") && h.json?["key_custody"] == .string("unavailable"), "\(h.text)")
            k = try await c.call(.get, "/v1/keys", as: "privacy_officer")
            #expect(k.status == .serviceUnavailable, "\(k.text)")
            #expect(k.error?.contains("key custody unavailable") == true)
            let r = try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer")
            #expect(r.status == .serviceUnavailable, "\(r.text)")
            // A keyring file that changed (same keys, new inode) cannot be adopted without the
            // token; the watcher tries again at its next look.
            let bytes = try Data(contentsOf: URL(fileURLWithPath: keys))
            _ = FileManager.default.createFile(atPath: keys + ".copy", contents: bytes, attributes: [.posixPermissions: 0o600])
            #expect(rename(keys + ".copy", keys) == 0)
            #expect(watcher.check() == false)

            try token.restore()
            #expect(watcher.check() == true)   // adopted now that the token is back
            h = try await c.call(.get, "/healthz")
            #expect(h.status == .ok && h.json?["status"] == .string("ok"), "\(h.text)")
            let r2 = try await c.call(.post, "/v1/keys/rotate", as: "privacy_officer")
            #expect(r2.status == .ok, "\(r2.text)")
            #expect(r2.json?["active"] == .int(2))
            let g2 = try await c.call(.get, "/v1/subjects/C7?purpose=customer_support", as: "support")
            #expect(g2.status == .ok, "\(g2.text)")
        }
    }
}
