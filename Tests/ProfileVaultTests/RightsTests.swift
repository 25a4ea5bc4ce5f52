import DifferentialPrivacy
import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import ProfileVault
@testable import VaultStore

/// A store with the repository's policies plus `marketing_offers`, a legitimate_interest
/// purpose that may read behaviour and e-mail addresses (objection applies), and 20 subjects.
final class RightsFixture {
    let dir: String
    let keys: String
    let policies: String
    let storePath: String

    init(profiles: Int = 20) throws {
        dir = NSTemporaryDirectory() + "pv-rights-" + UUID().uuidString
        policies = dir + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: policies + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "retention:\n", with: """
              marketing_offers:
                data_use: marketing.advertising.profiling
                legal_basis: legitimate_interest
                may_read: [user.behavior, user.location.imprecise]
                may_read_pii: [user.contact.email]
                dp_budget: { epsilon: 1000000, period: 30d }
            retention:

            """)
        try policy.write(toFile: policies + "/policy.yaml", atomically: true, encoding: .utf8)
        keys = dir + "/keyring.json"
        try Keyring.generate(note: "test").write(to: keys)
        storePath = dir + "/store.sqlite"
        let v = try Vault.initialize(config("operator"))
        var o = IngestOptions()
        o.format = .csv
        _ = try v.ingestProfiles(path: write("p.csv", CLIStore.rows(profiles)), options: o)
        _ = try v.ingestEvents(path: write("e.csv", "customer_id,kind,item,value,time\nC1,purchase,SKU-1,10,2026-01-01T00:00:00Z\nC2,purchase,SKU-2,20,2026-01-03T00:00:00Z\nC3,purchase,SKU-1,5,2026-01-04T00:00:00Z\n"), options: o)
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

    /// The store's bytes (file, WAL, shared memory), after a checkpoint.
    func fileBytes(_ v: Vault) throws -> Data {
        try v.store.checkpoint()
        return ["", "-wal", "-shm"].compactMap { FileManager.default.contents(atPath: storePath + $0) }.reduce(Data(), +)
    }
}

/// The SQLite engine under a vault.
func sqlite(_ v: Vault) -> ProfileStore {
    guard let s = v.store as? ProfileStore else { fatalError("the fixture's store is SQLite") }
    return s
}

/// The exact, pre-noise sums the engine hands the DP layer.
func exact(_ v: Vault, _ r: AggregateRequest) throws -> [String: [Int64]] { try v.store.aggregateSource.boundedSums(r) }

@Suite struct RestrictionTests {
    /// Every aggregate shape leaves a restricted subject out, and counts it again once the
    /// restriction is lifted: plain, consent, grouped, items, the nearest-centroid Swift scan.
    @Test func aRestrictedSubjectIsInNoAggregate() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        _ = try officer.setConsent(.list((0..<20).map { "C\($0)" }), purpose: "analytics", granted: true, source: "test")
        let age = ScaledFeature(name: "age", lower: 18, upper: 100)
        let requests: [AggregateRequest] = [
            AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects, .attribute(name: "age", lower: 18, upper: 100, center: 0, grid: 1)]),
            AggregateRequest(consentPurpose: "analytics", grouping: nil, coordinates: [.subjects]),
            AggregateRequest(consentPurpose: "analytics", grouping: .attribute(name: "country", domain: ["DE", "FR"]), coordinates: [.subjects]),
            AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: ["SKU-1", "SKU-2"]), coordinates: [.itemPresence(kind: "purchase", maxItems: 2)]),
            AggregateRequest(consentPurpose: "analytics", grouping: .nearest(features: [age], centroids: [[0.1], [0.9]]), coordinates: [.subjects]),
            AggregateRequest(consentPurpose: nil, grouping: .cell(features: [age], bins: 4), coordinates: [.subjects]),
        ]
        let before = try requests.map { try exact(officer, $0) }
        #expect(before[0][""]?.first == 20)
        #expect(try officer.setRestriction(customerID: "C1", restricted: true))
        #expect(try officer.setRestriction(customerID: "C1", restricted: true) == false)   // already: no change
        let during = try requests.map { try exact(officer, $0) }
        #expect(during[0][""]?.first == 19)
        #expect(during[1][""] == [19])
        #expect(during[2]["DE"] == [19])
        #expect(during[3]["SKU-1"] == [1])   // C1 and C3 bought SKU-1; C1 is left out
        #expect(during[4].values.map { $0[0] }.reduce(0, +) == 19)
        #expect(during[5].values.map { $0[0] }.reduce(0, +) == 19)
        #expect(try officer.setRestriction(customerID: "C1", restricted: false))
        #expect(try requests.map { try exact(officer, $0) } == before)
    }

    /// `get` refuses a restricted subject (77, naming Art. 18) while `export` still works;
    /// a recommendation is not served; lifting the restriction serves `get` again.
    @Test func getIsRefusedWhileRestrictedButExportWorks() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer"), support = try f.vault("support")
        #expect(try support.get(customerID: "C3", purpose: "customer_support").customerID == "C3")
        _ = try officer.setRestriction(customerID: "C3", restricted: true)
        expectKind(.denied, "Art. 18") { _ = try support.get(customerID: "C3", purpose: "customer_support") }
        #expect(try officer.accessExport(customerID: "C3").customerID == "C3")
        #expect(try officer.store.restricted(customerID: "C3") == true)
        _ = try officer.setRestriction(customerID: "C3", restricted: false)
        #expect(try support.get(customerID: "C3", purpose: "customer_support").customerID == "C3")
    }

    @Test func restrictionNeedsItsPermissionAndAKnownSubjectAndIsAudited() throws {
        let f = try RightsFixture()
        for role in ["support", "trainer", "operator", "auditor"] {
            expectKind(.denied, "restrict") { _ = try f.vault(role).setRestriction(customerID: "C1", restricted: true) }
        }
        #expect(try f.vault("privacy_officer").store.restricted(customerID: "C1") == false)
        expectKind(.notFound) { _ = try f.vault("privacy_officer").setRestriction(customerID: "nobody", restricted: true) }
        let officer = try f.vault("privacy_officer")
        _ = try officer.setRestriction(customerID: "C2", restricted: true)
        let entries = try sqlite(officer).pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit ORDER BY seq") }
        #expect(entries.contains { $0.contains("\"api.operation\":\"restrict\"") && $0.contains("\"status\":\"ok\"") })
        #expect(entries.contains { $0.contains("\"api.operation\":\"restrict\"") && $0.contains("\"status\":\"denied\"") })
    }

    /// An erased subject leaves no restriction row behind.
    @Test func erasureRemovesTheRestriction() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        _ = try officer.setRestriction(customerID: "C4", restricted: true)
        _ = try officer.erase(.one("C4"), reason: "test")
        #expect(try sqlite(officer).pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM restriction") } == 0)
    }
}

@Suite struct ObjectionTests {
    @Test func anObjectionLeavesTheSubjectOutOfThePurposeOnly() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer"), app = try f.vault("support")
        var r = AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects])
        r.objectionPurpose = "marketing_offers"
        #expect(try exact(officer, r)[""] == [20])
        #expect(try officer.object(.one("C5"), purpose: "marketing_offers") == 1)
        #expect(try officer.object(.one("C5"), purpose: "marketing_offers") == 0)   // already objecting
        #expect(try exact(officer, r)[""] == [19])
        // Another purpose is not affected.
        #expect(try exact(officer, AggregateRequest(consentPurpose: nil, grouping: nil, coordinates: [.subjects]))[""] == [20])
        // Reads under the purpose are refused; under another purpose they are not.
        expectKind(.denied, "objected") { _ = try app.get(customerID: "C5", purpose: "marketing_offers") }
        #expect(try app.get(customerID: "C6", purpose: "marketing_offers").customerID == "C6")
        #expect(try app.get(customerID: "C5", purpose: "customer_support").customerID == "C5")
        // In the ledger: granted false, source objection.
        let last = try officer.consentHistory(customerID: "C5").last
        #expect(last?.purpose == "marketing_offers" && last?.granted == false && last?.source == "objection")
    }

    @Test func objectionToAnotherBasisAndConsentChangesOfANonConsentBasisAreRefused() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        expectKind(.invalidInput, "legal basis consent") { _ = try officer.object(.one("C1"), purpose: "analytics") }
        expectKind(.invalidInput, "legal basis contract") { _ = try officer.object(.one("C1"), purpose: "customer_support") }
        expectKind(.invalidInput, "legal basis contract") { _ = try officer.setConsent(.one("C1"), purpose: "customer_support", granted: false, source: nil) }
        expectKind(.invalidInput, "legal basis contract") { _ = try officer.setConsent(.one("C1"), purpose: "customer_support", granted: true, source: nil) }
        expectKind(.invalidInput, "legitimate_interest") { _ = try officer.setConsent(.one("C1"), purpose: "marketing_offers", granted: false, source: nil) }
        #expect(try officer.consentHistory(customerID: "C1").isEmpty)
        expectKind(.denied) { _ = try f.vault("support").object(.one("C1"), purpose: "marketing_offers") }
    }
}

@Suite struct RectificationTests {
    /// The raw `pii` and `attributes` rows of a subject, as stored.
    func rawRows(_ v: Vault, _ id: String) throws -> [Row] {
        let p = try v.store.pseudonym(ofCustomerID: id)
        return try sqlite(v).pool.read { db in
            let sid = try Int64.fetchOne(db, sql: "SELECT id FROM subjects WHERE \(ProfileStore.pseudonymMatch)", arguments: [Data(p)]) ?? -1
            return try Row.fetchAll(db, sql: "SELECT * FROM pii WHERE subject_id = ?", arguments: [sid])
                + Row.fetchAll(db, sql: "SELECT * FROM attributes WHERE subject_id = ?", arguments: [sid])
                + Row.fetchAll(db, sql: "SELECT * FROM subjects WHERE id = ?", arguments: [sid])
        }
    }

    @Test func oneBadFieldWritesNothingAndNamesTheFieldNotTheValue() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        let before = try rawRows(officer, "C7")
        for (set, field) in [([("email", "fresh-7@example.org"), ("age", "not-a-number-91")], "age"),
                             ([("country", "Atlantis-91"), ("full_name", "New Name 91")], "country"),
                             ([("age", "250")], "age"),
                             ([("birth_date", "2023-02-30")], "birth_date")] {
            do {
                _ = try officer.rectify(customerID: "C7", set: set)
                Issue.record("accepted \(set)")
            } catch let e as VaultError {
                #expect(e.kind == .invalidInput && e.message.contains("field \(field)"), "\(e.message)")
                #expect(!e.message.contains("91") && !e.message.contains("Atlantis") && !e.message.contains("2023-02-30"), "\(e.message)")
            }
        }
        expectKind(.invalidInput, "nosuchfield") { _ = try officer.rectify(customerID: "C7", set: [("nosuchfield", "x")]) }
        expectKind(.invalidInput, "customer ID") { _ = try officer.rectify(customerID: "C7", set: [("customer_id", "C99")]) }
        expectKind(.notFound) { _ = try officer.rectify(customerID: "nobody", set: [("age", "40")]) }
        expectKind(.denied, "rectify") { _ = try f.vault("support").rectify(customerID: "C7", set: [("age", "40")]) }
        #expect(try rawRows(officer, "C7") == before)
        _ = try officer.erase(.one("C8"), reason: "test")
        expectKind(.notFound) { _ = try officer.rectify(customerID: "C8", set: [("age", "40")]) }
    }

    @Test func rectifiedPIIIsSealedAgainIndexedAndNeverStoredInTheClear() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer"), support = try f.vault("support")
        let newEmail = "rectified-zq9x@example.org"
        let oldCipher = try rawRows(officer, "C9")[0]["c1"] as Data?
        let changed = try officer.rectify(customerID: "C9", set: [("age", "77"), ("email", newEmail), ("country", "FR"), ("full_name", "Test Person 9")])
        #expect(changed == ["email", "age", "country"])   // schema order; the name was already that
        let view = try support.get(customerID: "C9", purpose: "customer_support")
        #expect(view.fields.first { $0.name == "email" }?.value == .text(newEmail))
        #expect(try rawRows(officer, "C9")[0]["c1"] as Data? != oldCipher)
        #expect(try support.find(.email, value: newEmail) == ["C9"])
        expectKind(.notFound) { _ = try support.find(.email, value: "user9@example.com") }
        #expect(try exact(officer, AggregateRequest(consentPurpose: nil, grouping: .attribute(name: "country", domain: ["DE", "FR"]), coordinates: [.subjects]))["FR"] == [1])
        let bytes = try f.fileBytes(officer)
        #expect(bytes.range(of: Data(newEmail.utf8)) == nil, "the new e-mail address is in the store file in the clear")
        // Audited with field names only.
        let entries = try sqlite(officer).pool.read { db in try String.fetchAll(db, sql: #"SELECT entry FROM audit WHERE entry LIKE '%"api.operation":"rectify"%'"#) }
        #expect(entries.count == 1 && entries[0].contains("email") && !entries[0].contains("rectified-zq9x"))
        #expect(try officer.rectify(customerID: "C9", set: [("email", newEmail)]).isEmpty)
    }
}

@Suite struct ConsentImportTests {
    @Test func aBadThirdLineWritesNothingAndIsNamed() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        let path = try f.write("consent.csv", """
            customer_id,purpose,granted,time,source
            C1,analytics,true,2025-03-01T10:00:00Z,paper-form
            C2,analytics,maybe,2025-03-01T10:00:00Z,paper-form
            C3,analytics,true,1740823200000,web

            """)
        expectKind(.invalidInput, "consent.csv:3: granted") { _ = try officer.importConsent(path: path) }
        #expect(try officer.consentHistory(customerID: "C1").isEmpty)
        for (line, bad, field) in [("C2,analytics,true,yesterday,x", "", "time"), ("C2,nosuch,true,2025-03-01,x", "", "purpose"),
                                   ("C2,customer_support,true,2025-03-01,x", "", "purpose"), ("C2,analytics,true,2999-01-01,x", "", "time"),
                                   ("nobody,analytics,true,2025-03-01,x", "", "")] {
            _ = bad
            let p = try f.write("c-\(UUID().uuidString).csv", "customer_id,purpose,granted,time,source\nC1,analytics,true,2025-03-01,x\n\(line)\n")
            do {
                _ = try officer.importConsent(path: p)
                Issue.record("accepted \(line)")
            } catch let e as VaultError {
                #expect(e.message.contains(":3"), "\(e.message)")
                if !field.isEmpty { #expect(e.message.contains(field), "\(e.message)") }
            }
        }
        #expect(try officer.consentHistory(customerID: "C1").isEmpty)
    }

    @Test func importedEvidenceKeepsItsTimesAndMovesTheState() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer")
        let path = try f.write("consent.csv", """
            customer_id,purpose,granted,time,source
            C1,analytics,true,2025-03-01T10:00:00Z,paper-form
            C2,analytics,true,1740823200000,web
            C2,analytics,false,1740000000000,old-revocation
            C3,marketing_offers,false,2025-01-01,letter

            """)
        #expect(try officer.importConsent(path: path) == 4)
        let h1 = try officer.consentHistory(customerID: "C1")
        #expect(h1.count == 1 && h1[0].timeMillis == 1_740_823_200_000 && h1[0].source == "paper-form" && h1[0].granted)
        // The older revocation is evidence, but the state is the most recent row's.
        #expect(try officer.store.hasConsent(customerID: "C2", purpose: "analytics"))
        #expect(try officer.consentHistory(customerID: "C2").count == 2)
        // A false row for a legitimate_interest purpose is an objection.
        #expect(try officer.consentHistory(customerID: "C3").last?.source == "objection")
        #expect(try exact(officer, AggregateRequest(consentPurpose: "analytics", grouping: nil, coordinates: [.subjects]))[""] == [2])
        expectKind(.denied) { _ = try f.vault("support").importConsent(path: path) }
    }
}

@Suite struct RightsThroughTheGateTests {
    /// A trainer's DP count (through the gate, noise and all) leaves out restricted subjects
    /// and, for a legitimate_interest purpose, objecting ones. Epsilon 100,000 per query: the
    /// noise scale is 1e-5, so |noise| >= 0.5 has probability about e^-50000 (never).
    @Test func aQueryLeavesOutRestrictedAndObjectingSubjects() throws {
        let f = try RightsFixture()
        let officer = try f.vault("privacy_officer"), trainer = try f.vault("trainer")
        func count() throws -> Double {
            try trainer.query(Vault.QueryRequest(kind: .count, purpose: "marketing_offers", epsilon: 100_000)).value?.value ?? -1
        }
        #expect(abs(try count() - 20) < 0.5)
        _ = try officer.setRestriction(customerID: "C1", restricted: true)
        _ = try officer.object(.list(["C2", "C3"]), purpose: "marketing_offers")
        #expect(abs(try count() - 17) < 0.5)
        _ = try officer.setRestriction(customerID: "C1", restricted: false)
        #expect(abs(try count() - 18) < 0.5)
    }
}

@Suite struct RightsCLITests {
    @Test func theRightsCommandsAnswerTheirJSONAndExitStatuses() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(5))])
        let r = try s.run(["restrict", "--subject", "C1", "--role", "privacy_officer", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.json?["customer_id"] as? String == "C1" && r.json?["changed"] as? Bool == true)
        let get = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"])
        #expect(get.status == 77 && get.stderr.contains("Art. 18"), "\(get.stderr)")
        let export = try s.run(["export", "--subject", "C1", "--role", "privacy_officer"])
        #expect(export.status == 0 && export.stdout.contains("user1@example.com"))
        #expect(try s.run(["unrestrict", "--subject", "C1", "--role", "privacy_officer", "--json"]).json?["changed"] as? Bool == true)
        #expect(try s.run(["restrict", "--subject", "C1", "--role", "support"]).status == 77)
        #expect(try s.run(["restrict", "--subject", "nobody", "--role", "privacy_officer"]).status == 66)

        let rect = try s.run(["rectify", "--subject", "C2", "--set", "age=44", "--set", "email=renamed-c2@example.org", "--role", "privacy_officer", "--json"])
        #expect(rect.status == 0 && (rect.json?["changed"] as? [String]) == ["email", "age"], "\(rect.stdout) \(rect.stderr)")
        let bad = try s.run(["rectify", "--subject", "C2", "--set", "age=secret-77", "--role", "privacy_officer"])
        #expect(bad.status == 65 && bad.stderr.contains("age") && !bad.stderr.contains("secret-77"), "\(bad.stderr)")
        #expect(try s.run(["rectify", "--subject", "C2", "--set", "shoe=1", "--role", "privacy_officer"]).status == 65)
        #expect(try s.run(["rectify", "--subject", "nobody", "--set", "age=40", "--role", "privacy_officer"]).status == 66)
        #expect(try s.run(["rectify", "--subject", "C2", "--set", "age=40", "--role", "support"]).status == 77)

        let obj = try s.run(["consent", "object", "--purpose", "analytics", "--subject", "C3", "--role", "privacy_officer"])
        #expect(obj.status == 65 && obj.stderr.contains("legitimate_interest"), "\(obj.stderr)")
        let revoke = try s.run(["consent", "revoke", "--purpose", "customer_support", "--subject", "C3", "--role", "privacy_officer"])
        #expect(revoke.status == 65 && revoke.stderr.contains("contract"), "\(revoke.stderr)")

        let file = try s.write("consent.csv", "customer_id,purpose,granted,time,source\nC1,analytics,true,2025-03-01T10:00:00Z,paper\nC2,analytics,ja,2025-03-01,paper\n")
        let imp = try s.run(["consent", "import", file, "--role", "privacy_officer"])
        #expect(imp.status == 65 && imp.stderr.contains("consent.csv:3: granted"), "\(imp.stderr)")
        let good = try s.write("good.csv", "customer_id,purpose,granted,time,source\nC1,analytics,true,2025-03-01T10:00:00Z,paper\n")
        let ok = try s.run(["consent", "import", good, "--role", "privacy_officer", "--json"])
        #expect(ok.status == 0 && ok.json?["changed"] as? Int == 1, "\(ok.stderr)")
    }
}
