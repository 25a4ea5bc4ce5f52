import Foundation
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import ProfileVault
@testable import VaultStore

/// A store in a temporary folder with the repository's policies plus one consent-based
/// purpose that may read PII (`newsletter`), and Vaults acting in any role.
final class VaultFixture {
    let dir: String
    let keys: String
    let policies: String
    let storePath: String

    init(profiles: Int = 20) throws {
        dir = NSTemporaryDirectory() + "pv-vault-" + UUID().uuidString
        policies = dir + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: policies + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "retention:\n", with: """
              newsletter:
                data_use: marketing.advertising.first_party
                legal_basis: consent
                may_read_pii: [user.contact.email]
            retention:

            """)
        try policy.write(toFile: policies + "/policy.yaml", atomically: true, encoding: .utf8)
        keys = dir + "/keyring.json"
        try Keyring.generate(note: "test").write(to: keys)
        storePath = dir + "/store.sqlite"
        let v = try Vault.initialize(config("operator"))
        if profiles > 0 {
            var o = IngestOptions()
            o.format = .csv
            _ = try v.ingestProfiles(path: write("p.csv", CLIStore.rows(profiles)), options: o)
            _ = try v.ingestEvents(path: write("e.csv", "customer_id,kind,item,value,time\nC1,purchase,SKU-1,10,2026-01-01T00:00:00Z\nC1,rating,SKU-1,5,2026-01-02T00:00:00Z\nC2,purchase,SKU-2,20,2026-01-03T00:00:00Z\n"), options: o)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ role: String) -> VaultConfiguration {
        VaultConfiguration(storePath: storePath, keysPath: keys, policyDirectory: policies, actor: Actor(name: "t-\(role)", role: role))
    }

    func vault(_ role: String) throws -> Vault { try Vault.open(config(role)) }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func fileBytes() throws -> [Data] {
        ["", "-wal", "-shm"].compactMap { FileManager.default.contents(atPath: storePath + $0) }
    }
}

func expectKind(_ kind: VaultError.Kind, _ fragment: String = "", _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected \(kind)", sourceLocation: sourceLocation)
    } catch let e as VaultError {
        #expect(e.kind == kind, "\(e.message)", sourceLocation: sourceLocation)
        if !fragment.isEmpty { #expect(e.message.contains(fragment), "\(e.message)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct ConsentTests {
    @Test func consentPurposeNeedsActiveConsentAndRevocationTakesEffectForTheNextRead() throws {
        let f = try VaultFixture()
        let support = try f.vault("support"), officer = try f.vault("privacy_officer")
        expectKind(.denied, "consent") { _ = try support.get(customerID: "C3", purpose: "newsletter") }
        #expect(try officer.setConsent(.one("C3"), purpose: "newsletter", granted: true, source: "web-form") == 1)
        let view = try support.get(customerID: "C3", purpose: "newsletter")
        #expect(view.fields.map(\.name) == ["email"])   // may_read_pii covers the e-mail only
        #expect(try officer.setConsent(.one("C3"), purpose: "newsletter", granted: false, source: "unsubscribe link") == 1)
        expectKind(.denied, "consent") { _ = try support.get(customerID: "C3", purpose: "newsletter") }
        // A contract purpose needs no consent.
        #expect(try support.get(customerID: "C3", purpose: "customer_support").customerID == "C3")
    }

    @Test func ledgerIsAppendOnlyAndRecordsWhoWhenSourceAndPolicyVersion() throws {
        let f = try VaultFixture()
        let officer = try f.vault("privacy_officer")
        _ = try officer.setConsent(.one("C4"), purpose: "analytics", granted: true, source: "app")
        #expect(try officer.setConsent(.one("C4"), purpose: "analytics", granted: true, source: "app") == 0)   // no change
        _ = try officer.setConsent(.one("C4"), purpose: "analytics", granted: false, source: nil)
        let h = try officer.consentHistory(customerID: "C4")
        #expect(h.map(\.granted) == [true, false])
        #expect(h[0].actor == "t-privacy_officer" && h[0].source == "app" && h[0].policyVersion == "2026-11-01")
        let status = try officer.consentStatus(customerID: "C4")
        #expect(status.first { $0.purpose == "analytics" }?.state.granted == false)
        #expect(status.first { $0.purpose == "customer_support" }?.needed == false)
        #expect(throws: (any Error).self) {
            try (officer.store as! ProfileStore).pool.write { db in try db.execute(sql: "UPDATE consent SET granted = 1") }
        }
    }

    @Test func bulkConsentRefusesAFileWithAnUnknownIDAndWritesNothing() throws {
        let f = try VaultFixture()
        let officer = try f.vault("privacy_officer")
        let list = try f.write("ids.txt", "C1\nC2\n\nNOPE\nC3\n")
        expectKind(.notFound, "ids.txt:4") { _ = try officer.setConsent(.file(list), purpose: "analytics", granted: true, source: nil) }
        #expect(try officer.consentHistory(customerID: "C1").isEmpty)
        #expect(try officer.setConsent(.file(try f.write("ok.txt", "C1\nC2\nC3\n")), purpose: "analytics", granted: true, source: nil) == 3)
    }

    @Test func consentNeedsTheRoleAndADeclaredPurpose() throws {
        let f = try VaultFixture()
        expectKind(.denied, "privacy_officer") { _ = try f.vault("support").setConsent(.one("C1"), purpose: "analytics", granted: true, source: nil) }
        expectKind(.denied, "not declared") { _ = try f.vault("privacy_officer").setConsent(.one("C1"), purpose: "lottery", granted: true, source: nil) }
    }
}

@Suite struct AccessExportTests {
    @Test func exportHoldsEverythingDecryptedWithConsentAndAccessLog() throws {
        let f = try VaultFixture()
        let officer = try f.vault("privacy_officer")
        _ = try officer.setConsent(.one("C1"), purpose: "analytics", granted: true, source: "app")
        _ = try f.vault("support").get(customerID: "C1", purpose: "customer_support")
        let e = try officer.accessExport(customerID: "C1")
        #expect(e.customerID == "C1")
        let fields = Dictionary(uniqueKeysWithValues: e.profile.fields.map { ($0.name, $0.value) })
        #expect(fields["email"] == .text("user1@example.com") && fields["birth_date"] == .text("1980-01-02") && fields["age"] == .int(31))
        #expect(e.events.count == 2)
        #expect(e.consent.count == 1)
        let ops = e.auditEntries.compactMap { try? JSONValue.parse($0)["api.operation"] }
        #expect(ops.contains(.string("get")) && ops.contains(.string("consent.grant")) && ops.contains(.string("export")))
        expectKind(.notFound) { _ = try officer.accessExport(customerID: "ghost") }
    }
}

@Suite struct ErasureTests {
    @Test func erasedSubjectIsGoneFromEveryReadAndLeavesNoTraceInTheFile() throws {
        let f = try VaultFixture(profiles: 200)
        let officer = try f.vault("privacy_officer"), support = try f.vault("support")
        _ = try officer.setConsent(.one("C1"), purpose: "analytics", granted: true, source: nil)
        // The bytes that identify C1 in the file before erasure.
        let raw = try #require(try officer.store.rawRows(customerID: "C1"))
        let secrets = [raw.wrappedDEKHex] + raw.pii.map(\.ciphertextHex) + raw.blindIndex.map(\.macHex)
        let receipts = try officer.erase(.one("C1"), reason: "request 42")
        #expect(receipts.count == 1 && receipts[0].customerID == "C1")
        #expect(receipts[0].removed.first { $0.0 == "events" }?.1 == 2)
        // The one `pii` row held the customer ID and the PII fields, and the lookup fields' MACs.
        #expect(raw.pii.count >= 2 && raw.blindIndex.count >= 1)
        #expect(receipts[0].removed.first { $0.0 == "pii_fields" }?.1 == Int64(raw.pii.count))
        #expect(receipts[0].removed.first { $0.0 == "blind_index_entries" }?.1 == Int64(raw.blindIndex.count))
        expectKind(.notFound) { _ = try support.get(customerID: "C1", purpose: "customer_support") }
        expectKind(.notFound) { _ = try support.find(.email, value: "user1@example.com") }
        expectKind(.notFound) { _ = try officer.accessExport(customerID: "C1") }
        expectKind(.notFound) { _ = try officer.erase(.one("C1"), reason: "again") }
        for file in try f.fileBytes() {
            for hexString in secrets {
                let bytes = Data(AuditLog.unhex(hexString)!)
                #expect(file.range(of: bytes) == nil, "erased bytes still in the store files")
            }
        }
        // The receipt is the hash of the audit entry that records the erasure, in a log that verifies.
        let auditor = try f.vault("auditor")
        let v = try auditor.verifyAudit(expectHead: receipts[0].receipt)
        #expect(v.ok)
        // Other subjects are untouched.
        #expect(try support.get(customerID: "C2", purpose: "customer_support").customerID == "C2")
    }

    @Test func staleImportCannotResurrectAnErasedCustomer() throws {
        let f = try VaultFixture()
        let officer = try f.vault("privacy_officer"), op = try f.vault("operator")
        _ = try officer.erase(.one("C5"), reason: "request")
        var o = IngestOptions()
        o.format = .csv
        let again = try f.write("again.csv", CLIStore.rows(8))
        expectKind(.invalidInput, "erased") { _ = try op.ingestProfiles(path: again, options: o) }
        expectKind(.notFound) { _ = try f.vault("support").get(customerID: "C5", purpose: "customer_support") }
        o.allowReingest = true
        let r = try op.ingestProfiles(path: again, options: o)
        // The seven others are the profiles already stored: unchanged.
        #expect(r.inserted == 1 && r.updated == 0 && r.unchanged == 7)
        #expect(try f.vault("support").get(customerID: "C5", purpose: "customer_support").customerID == "C5")
    }

    @Test func bulkEraseFromAFile() throws {
        let f = try VaultFixture(profiles: 50)
        let officer = try f.vault("privacy_officer")
        let ids = (10..<40).map { "C\($0)" }.joined(separator: "\n")
        let receipts = try officer.erase(.file(try f.write("ids.txt", ids)), reason: "bulk")
        #expect(receipts.count == 30)
        #expect(try officer.status().subjects == 20)
        #expect(try f.vault("auditor").verifyAudit(expectHead: nil).ok)
    }
}

@Suite struct RetentionTests {
    @Test func eventsAreDeletedExactlyAfterTheirPeriodAndDryRunChangesNothing() throws {
        let f = try VaultFixture(profiles: 3)
        let officer = try f.vault("privacy_officer")
        // Events of C1 at 2026-01-01 and 2026-01-02, of C2 at 2026-01-03; purchases keep 730 days.
        let jan2 = DateParsing.unixSeconds(fromISO8601: "2026-01-02T00:00:00Z")!
        let boundary = jan2 + 730 * 86_400   // as of this moment, the 2026-01-02 event is exactly 730 days old: kept
        var r = try officer.applyRetention(asOf: boundary, dryRun: true)
        #expect(r.eventsDeleted == 1 && r.subjectsErased == 0)   // only 2026-01-01 is older
        #expect(try officer.status().events == 3)                 // the dry run changed nothing
        r = try officer.applyRetention(asOf: boundary, dryRun: false)
        #expect(r.eventsDeleted == 1)
        #expect(try officer.status().events == 2)
        r = try officer.applyRetention(asOf: boundary + 1, dryRun: false)
        #expect(r.eventsDeleted == 1)   // now 2026-01-02 is one second past its period
    }

    @Test func subjectsPastTheirPeriodAreErasedWithReasonRetention() throws {
        let f = try VaultFixture(profiles: 4)
        let officer = try f.vault("privacy_officer")
        let now = Int64(Date().timeIntervalSince1970)
        #expect(try officer.applyRetention(asOf: now + 1094 * 86_400, dryRun: false).subjectsErased == 0)
        let r = try officer.applyRetention(asOf: now + 1096 * 86_400, dryRun: false)
        #expect(r.subjectsErased == 4)
        #expect(try officer.status().subjects == 0)
        let exported = f.dir + "/a.jsonl"
        _ = try f.vault("auditor").exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: exported)
        let text = try String(contentsOfFile: exported, encoding: .utf8)
        #expect(text.components(separatedBy: #""status_detail":"reason retention""#).count - 1 == 4)
    }
}

@Suite struct KeyRotationTests {
    @Test func rotationRewrapsEveryKeyWhileReadersKeepReading() throws {
        let f = try VaultFixture(profiles: 300)
        let officer = try f.vault("privacy_officer")
        let reader = try f.vault("support")   // opened before the rotation: knows version 1 only
        let stop = Flag()
        let failures = Counter()
        let readerThread = Thread {
            var i = 0
            while !stop.value {
                do { _ = try reader.get(customerID: "C\(i % 300)", purpose: "customer_support") } catch { failures.add() }
                i += 1
            }
        }
        readerThread.start()
        let r = try officer.rotateKeys(resume: false)
        stop.set()
        Thread.sleep(forTimeInterval: 0.1)
        #expect(r.active == 2 && r.rewrapped == 300)
        #expect(failures.value == 0)
        #expect(try officer.keyStatus().subjectsPerVersion == [2: 300])
        // Field data still decrypts, through a reader that had only version 1 loaded.
        #expect(try reader.get(customerID: "C7", purpose: "customer_support").fields.first { $0.name == "email" }?.value == .text("user7@example.com"))
        // Version 1 can now be retired; the active version cannot.
        let s = try officer.retireKey(version: 1)
        #expect(s.retired == [1] && s.versions == [2])
        expectKind(.configuration, "active") { _ = try officer.retireKey(version: 2) }
        // Pseudonyms did not change: lookups still work after retirement.
        #expect(try f.vault("support").find(.email, value: "user9@example.com") == ["C9"])
        #expect(try f.vault("auditor").verifyAudit(expectHead: nil).ok)
    }

    @Test func retireIsRefusedWhileAnyKeyStillUsesTheVersion() throws {
        let f = try VaultFixture(profiles: 5)
        // A keyring that gained version 2 without re-wrapping (an interrupted rotation).
        var ring = try Keyring.load(path: f.keys)
        _ = ring.addVersion()
        _ = try ring.replace(at: f.keys)
        let officer = try f.vault("privacy_officer")
        expectKind(.configuration, "5 subjects") { _ = try officer.retireKey(version: 1) }
        #expect(try officer.rotateKeys(resume: true).rewrapped == 5)
        #expect(try officer.retireKey(version: 1).retired == [1])
    }
}

extension KeyRotationTests {
    /// A long-running node (a Vault opened before another process rotated the keys) reads the
    /// re-wrapped keys at once, wraps new keys under its old version until it adopts the
    /// rotated file, and under the new one after. A keyring file of another lineage put in
    /// its place is refused by the key checks, and the node keeps its keys and pseudonyms.
    @Test func aRunningNodeAdoptsARotatedKeyringAndRefusesAForeignOne() throws {
        let f = try VaultFixture(profiles: 20)
        let node = try f.vault("operator")
        let reader = try f.vault("support")
        let officer = try f.vault("privacy_officer")
        _ = try officer.rotateKeys(resume: false)
        #expect(try officer.keyStatus().subjectsPerVersion == [2: 20])
        var o = IngestOptions()
        o.format = .csv
        func ingest(_ id: String) throws {
            _ = try node.ingestProfiles(path: f.write("\(id).csv", CLIStore.header + "\n\(id),\(id)@example.com,Test \(id),+49 30 9999,1980-01-01,40,female,DE,1000\n"), options: o)
        }
        // Re-wrapped under a version this node has not loaded: it reads the keyring file again.
        #expect(try reader.get(customerID: "C4", purpose: "customer_support").fields.first { $0.name == "email" }?.value == .text("user4@example.com"))
        try ingest("N1")
        #expect(try officer.keyStatus().subjectsPerVersion == [1: 1, 2: 20])
        let adopted = try node.adoptKeyringFile()
        #expect(adopted.active == 2 && adopted.versions == [1, 2])
        try ingest("N2")
        #expect(try officer.keyStatus().subjectsPerVersion == [1: 1, 2: 21])
        // Another keyring (same version numbers, other secrets) in the file's place.
        let mine = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        var foreign = Keyring.generate(note: "foreign")
        _ = foreign.addVersion()
        _ = try foreign.replace(at: f.keys)
        expectKind(.integrity, "key check") { _ = try node.adoptKeyringFile() }
        try ingest("N3")
        #expect(try officer.keyStatus().subjectsPerVersion == [1: 1, 2: 22])
        try mine.write(to: URL(fileURLWithPath: f.keys))
        #expect(try f.vault("support").find(.email, value: "N3@example.com") == ["N3"])
        // A reader meeting a version it lacks while a foreign file is in place takes nothing
        // from it: the read fails, and succeeds once the real file is back; its pseudonym and
        // index keys never changed.
        _ = try officer.rotateKeys(resume: false)   // version 3 in the real file
        let real = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        _ = foreign.addVersion()
        _ = try foreign.replace(at: f.keys)
        expectKind(.integrity) { _ = try reader.get(customerID: "C5", purpose: "customer_support") }
        try real.write(to: URL(fileURLWithPath: f.keys))
        #expect(try reader.get(customerID: "C5", purpose: "customer_support").fields.first { $0.name == "email" }?.value == .text("user5@example.com"))
        #expect(try reader.find(.email, value: "user6@example.com") == ["C6"])
        #expect(try f.vault("auditor").verifyAudit(expectHead: nil).ok)
    }
}

extension KeyRotationTests {
    /// The review's stale keyring: an older copy of the keyring file put back in place (active
    /// version 1, without version 2 that every data key now uses, and later with version 1
    /// retired in the store) is not adopted; the node keeps its keys and still reads.
    @Test func anOlderKeyringIsNotAdopted() throws {
        let f = try VaultFixture(profiles: 5)
        let reader = try f.vault("support")
        let officer = try f.vault("privacy_officer")
        let old = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        _ = try officer.rotateKeys(resume: false)
        let new = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        #expect(try reader.adoptKeyringFile().active == 2)
        try old.write(to: URL(fileURLWithPath: f.keys))
        expectKind(.configuration, "version 2") { _ = try reader.adoptKeyringFile() }
        try new.write(to: URL(fileURLWithPath: f.keys))
        _ = try officer.retireKey(version: 1)
        try old.write(to: URL(fileURLWithPath: f.keys))
        expectKind(.configuration, "retired") { _ = try reader.adoptKeyringFile() }
        #expect(try reader.get(customerID: "C2", purpose: "customer_support").fields.first { $0.name == "email" }?.value == .text("user2@example.com"))
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var v = false
    var value: Bool { lock.lock(); defer { lock.unlock() }; return v }
    func set() { lock.lock(); v = true; lock.unlock() }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var v = 0
    var value: Int { lock.lock(); defer { lock.unlock() }; return v }
    func add() { lock.lock(); v += 1; lock.unlock() }
}
