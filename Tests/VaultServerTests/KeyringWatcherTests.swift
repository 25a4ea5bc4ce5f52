import Foundation
import Testing
import VaultCrypto
@testable import ProfileVault
@testable import VaultServer
import VaultValues

/// `serve`'s keyring watch (KeyringWatcher): a keyring file rotated by another process is
/// adopted on the next look (audited as `keys.adopt`), an unchanged file is not looked at
/// again, and a foreign or older file is not adopted (the keys in use stay).
@Suite struct KeyringWatcherTests {
    @Test func aRotatedFileIsAdoptedOnceAndAForeignOneNever() throws {
        let f = try ServiceFixture()
        let watcher = KeyringWatcher(vault: f.vault, every: 3600, logger: ServiceFixture.logger)
        #expect(watcher.check() == false)   // unchanged since the watcher started
        let officer = try Vault.open(VaultConfiguration(storePath: f.vault.configuration.storePath, keysPath: f.vault.configuration.keysPath,
                                                        policyDirectory: f.vault.configuration.policyDirectory,
                                                        actor: ProfileVault.Actor(name: "po", role: "privacy_officer")))
        _ = try officer.rotateKeys(resume: false)
        #expect(watcher.check() == true)
        #expect(watcher.check() == false)   // adopted once; the file has not changed since
        let adoptions = try f.auditEntries().filter { "\($0)".contains("keys.adopt") }
        #expect(adoptions.count == 1)
        // Another keyring in the file's place: refused, nothing adopted, the service still reads.
        var foreign = Keyring.generate(note: "foreign")
        _ = foreign.addVersion()
        _ = try foreign.replace(at: f.vault.configuration.keysPath)
        #expect(watcher.check() == false)
        #expect(try f.auditEntries().filter { "\($0)".contains("keys.adopt") }.count == 2)   // the refusal is on the record too
        _ = try f.vault.status()
    }
}
