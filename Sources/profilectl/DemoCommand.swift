import ArgumentParser
import Foundation
import ProfileVault
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// The whole story on a fresh embedded store: generate, ingest, read, look up, show the raw
/// bytes, status. Uses the embedded example keyring and policies, so it runs anywhere.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Walk through ProfileVault end to end on a fresh store.")
    @Option(help: "Folder for the demo store (default: a new temporary folder).") var dir: String?
    @Option(help: "Customers to generate.") var customers = 10_000

    func run() throws {
        let fm = FileManager.default
        let folder: String
        if let dir {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            folder = (dir as NSString).standardizingPath
        } else {
            var template = Array(((NSTemporaryDirectory() as NSString).appendingPathComponent("profilevault-demo.XXXXXX")).utf8CString)
            guard let p = mkdtemp(&template) else { throw VaultError(.internalFailure, "cannot create a temporary folder") }
            folder = String(cString: p)
        }
        let store = folder + "/store.sqlite"
        if fm.fileExists(atPath: store) {
            throw VaultError(.configuration, "\(store) already exists: run the demo in a fresh folder (--dir)")
        }
        func say(_ s: String = "") { print(s); fflush(nil) }
        /// Every file the demo writes is new (mode 0600): an existing one is never replaced
        /// (exit 73 naming it), so `--dir` cannot clobber a real keyring or store.
        func put(_ text: String, _ path: String) throws { try OutputFile.write(text, to: path, force: false, protecting: []) }
        func step(_ s: String) { say(); say("== " + s) }

        say("ProfileVault demo in \(folder)")
        step("1. Example keyring and policies")
        let keys = folder + "/keyring.json"
        try put(EmbeddedDefaults.keyringJSON + "\n", keys)
        let policies = folder + "/policies"
        try fm.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try put(EmbeddedDefaults.schemaYAML + "\n", policies + "/schema.yaml")
        try put(EmbeddedDefaults.policyYAML + "\n", policies + "/policy.yaml")
        // The catalog `products` the policy declares (catalogs/products.tsv): the demo's 400 items
        // with their descriptions.
        try fm.createDirectory(atPath: policies + "/catalogs", withIntermediateDirectories: true)
        try put(EmbeddedDefaults.productsCatalog + "\n", policies + "/catalogs/products.tsv")
        say("copied the EXAMPLE keyring to \(keys) (mode 0600) and the default policies and their catalog to \(policies)/")
        say("(a real deployment runs `profilectl keys generate --out PATH` and keeps that file apart from the store)")

        step("2. Generate \(customers) customers and their purchases (deterministic)")
        let population = DemoPopulation(count: customers)
        let profilesCSV = folder + "/profiles.csv", eventsCSV = folder + "/events.csv"
        let eventCount = try population.writeCSV(profilesPath: profilesCSV, eventsPath: eventsCSV)
        say("wrote \(profilesCSV) (\(customers) profiles) and \(eventsCSV) (\(eventCount) events)")
        for i in 0..<3 { say("  " + population.profile(i).csvFields.joined(separator: ", ")) }

        step("3. Create the store and ingest")
        let operatorConfig = VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "operator"))
        let vault = try Vault.initialize(operatorConfig)
        say("$ profilectl init --store \(store) --keys \(keys) --policy \(policies)")
        var opts = IngestOptions()
        opts.format = .csv
        let rp = try vault.ingestProfiles(path: profilesCSV, options: opts)
        say("$ profilectl ingest profiles \(profilesCSV)")
        say(String(format: "  %d inserted, %d updated, %d rejected in %.2f s (%.0f profiles/s)", rp.inserted, rp.updated, rp.rejected, rp.seconds, Double(rp.inserted + rp.updated) / max(rp.seconds, 1e-9)))
        let re = try vault.ingestEvents(path: eventsCSV, options: opts)
        say("$ profilectl ingest events \(eventsCSV)")
        say(String(format: "  %d inserted, %d updated, %d rejected in %.2f s", re.inserted, re.updated, re.rejected, re.seconds))

        let badCSV = folder + "/bad.csv"
        var bad = DemoPopulation.profileHeader.joined(separator: ",") + "\n"
        bad += population.profile(0).csvFields.joined(separator: ",") + "\n"
        bad += "C-9999999,new@example.com,New Person,+49 30 1,2000-02-30,26,female,DE,1000\n"
        try put(bad, badCSV)
        say("$ profilectl ingest profiles \(badCSV)      # one impossible birth date")
        do {
            _ = try vault.ingestProfiles(path: badCSV, options: opts)
            say("  unexpectedly accepted")
        } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode); nothing written)")
        }

        let sample = population.profile(42)
        step("4. Read a profile for a purpose that may read PII (role support)")
        let support = try Vault.open(VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "support")))
        say("$ profilectl get --subject \(sample.customerID) --purpose customer_support --role support")
        say(try support.get(customerID: sample.customerID, purpose: "customer_support").text.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        say("$ profilectl get --subject \(sample.customerID) --purpose customer_support      # as operator")
        do { _ = try vault.get(customerID: sample.customerID, purpose: "customer_support") } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode))")
        }
        say("$ profilectl get --subject \(sample.customerID) --purpose analytics --role support")
        do { _ = try support.get(customerID: sample.customerID, purpose: "analytics") } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode))")
        }

        step("5. Blind-index lookup")
        let messy = "  " + sample.email.uppercased() + " "
        say("$ profilectl find --email '\(messy)' --role support")
        say("  " + (try support.find(.email, value: messy)).joined(separator: ", "))
        say("$ profilectl find --phone '\(sample.phone)' --role support")
        say("  " + (try support.find(.phone, value: sample.phone)).joined(separator: ", "))

        step("6. What the database file holds for \(sample.customerID): ciphertext only")
        // The stored-rows view needs a role that may already read the subject's whole record
        // (export, the privacy officer's); it is audited like that read.
        let officer = try Vault.open(VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "privacy_officer")))
        if let raw = try officer.storedRows(customerID: sample.customerID) {
            func short(_ h: String) -> String { h.count > 72 ? String(h.prefix(72)) + "… (\(h.count / 2) bytes)" : h }
            say("  subjects.pseudonym    \(raw.pseudonymHex)")
            say("  subjects.wrapped_dek  \(short(raw.wrappedDEKHex))  (KEK version \(raw.kekVersion))")
            for (f, h) in raw.pii { say("  pii[\(f)]".padding(toLength: 23, withPad: " ", startingAt: 0) + short(h)) }
            for (f, h) in raw.blindIndex { say("  blind_index[\(f)]".padding(toLength: 23, withPad: " ", startingAt: 0) + h) }
            say("  attributes            " + raw.attributes.map { "\($0.name)=\($0.value)" }.joined(separator: " "))
            say("  (attributes are plaintext but reachable only through the DP query layer; the customer ID, name,")
            say("   e-mail, phone and birth date exist only as AES-256-GCM ciphertext under this subject's own key)")
        }
        try vault.checkpoint()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: store))
        let leaked = [sample.email, sample.customerID, sample.fullName, sample.phone].filter { bytes.range(of: Data($0.utf8)) != nil }
        say("  scanning \(bytes.count) bytes of \(store) for this customer's e-mail, ID, name, phone: " + (leaked.isEmpty ? "none found" : "FOUND \(leaked.count)"))

        step("7. Privacy operations (role privacy_officer)")
        say("$ profilectl consent grant --purpose analytics --subject \(sample.customerID) --source web-form --role privacy_officer")
        say("  changed \(try officer.setConsent(.one(sample.customerID), purpose: "analytics", granted: true, source: "web-form"))")
        say("$ profilectl consent status --subject \(sample.customerID) --role privacy_officer")
        for s in try officer.consentStatus(customerID: sample.customerID) {
            say("  \(s.purpose): \(s.state.granted ? "granted" : "not granted")\(s.needed ? "" : " (legal basis is not consent)")")
        }
        say("$ profilectl export --subject \(sample.customerID) --role privacy_officer")
        let access = try officer.accessExport(customerID: sample.customerID)
        say("  \(access.profile.fields.count) profile fields decrypted, \(access.events.count) events, \(access.consent.count) consent entries, \(access.auditEntries.count) access-log entries about them")
        let gone = population.profile(7)
        say("$ profilectl erase --subject \(gone.customerID) --reason 'art. 17 request' --role privacy_officer")
        let receipt = try officer.erase(.one(gone.customerID), reason: "art. 17 request")[0]
        say("  erased at \(Vault.isoTime(millis: receipt.erasedAtMillis)): " + receipt.removed.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        say("  receipt (hash of audit entry \(receipt.auditSequence)): \(receipt.receipt)")
        say("$ profilectl get --subject \(gone.customerID) --purpose customer_support --role support")
        do { _ = try support.get(customerID: gone.customerID, purpose: "customer_support") } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode))")
        }
        say("$ profilectl ingest profiles \(profilesCSV)      # a stale re-import of the original file")
        do { _ = try vault.ingestProfiles(path: profilesCSV, options: opts) } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode))")
        }

        step("8. Differentially private queries (role trainer): the only way analysts see the data")
        let everyone = folder + "/consenting.txt"
        try put((0..<customers).filter { $0 % 10 != 3 && $0 != 7 }.map { DemoPopulation.customerID($0) }.joined(separator: "\n"), everyone)
        say("$ profilectl consent grant --purpose analytics --subjects \(everyone) --role privacy_officer   # 90% consent")
        say("  changed \(try officer.setConsent(.file(everyone), purpose: "analytics", granted: true, source: "demo"))")
        let trainer = try Vault.open(VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "trainer")))
        func show(_ title: String, _ r: Vault.QueryRequest) throws {
            say("$ profilectl query \(title)")
            let res = try trainer.query(r)
            if let v = res.value {
                say(String(format: "  %.2f   95%% interval [%.2f, %.2f]   epsilon %g, noise scale %.3g, budget left %.3g", v.value, v.ci95.0, v.ci95.1, res.epsilon, res.scale, res.budget.left))
            } else {
                say("  " + res.groups.map { String(format: "%@ %.1f", $0.key, $0.value.value) }.joined(separator: "   "))
                say(String(format: "  epsilon %g, noise scale %.3g, budget left %.3g", res.epsilon, res.scale, res.budget.left))
            }
        }
        try show("count --purpose analytics --epsilon 0.5", .init(kind: .count, purpose: "analytics", epsilon: 0.5))
        try show("mean --attribute age --where country=DE --purpose analytics --epsilon 0.5",
                 .init(kind: .mean, purpose: "analytics", epsilon: 0.5, attribute: "age", whereClause: "country=DE"))
        try show("histogram --attribute country --purpose analytics --epsilon 0.5", .init(kind: .histogram, purpose: "analytics", epsilon: 0.5, attribute: "country"))
        try show("mean --attribute annual_income --group-by gender --purpose analytics --epsilon 1",
                 .init(kind: .mean, purpose: "analytics", epsilon: 1, attribute: "annual_income", groupBy: "gender"))
        try show("sum --events purchase --purpose analytics --epsilon 0.5", .init(kind: .sum, purpose: "analytics", epsilon: 0.5, events: "purchase"))
        say("$ profilectl query count --purpose analytics --epsilon 2      # more than is left")
        do { _ = try trainer.query(.init(kind: .count, purpose: "analytics", epsilon: 2)) } catch let e as VaultError {
            say("  error: \(e.message)   (exit \(e.exitCode); nothing computed, nothing spent)")
        }
        say("$ profilectl budget status --role trainer")
        for b in try trainer.budgetStatus() { say(String(format: "  %@: spent %.3g of %.3g", b.purpose, b.spent, b.limit)) }

        step("9. Training jobs (role trainer): models trained on DP releases only")
        say("$ profilectl consent grant --purpose model_training --subjects \(everyone) --role privacy_officer")
        say("  changed \(try officer.setConsent(.file(everyone), purpose: "model_training", granted: true, source: "demo"))")
        let kmJob = folder + "/segment-customers.yaml"
        try put("""
            job: segment-customers
            purpose: model_training
            model: kmeans
            features: [age, annual_income]
            params: { k: 4, iterations: 5 }
            epsilon: 1.0

            """, kmJob)
        say("$ profilectl train \(kmJob) --out \(folder)/segments.json --role trainer")
        let km = try trainer.train(jobFile: kmJob)
        for w in km.warnings { say("  warning: \(w)") }
        try OutputFile.write([UInt8](km.json), to: folder + "/segments.json", force: false, protecting: [])
        for (i, c) in (km.artifact.centroids ?? []).enumerated() {
            let size = km.artifact.clusterSizes.map { i < $0.count ? String(format: "%.0f", $0[i]) : "?" } ?? "?"
            say(String(format: "  segment %d: age %.1f, annual income %.0f   (noisy size %@)", i, c[0], c.count > 1 ? c[1] : 0, size))
        }
        say(String(format: "  epsilon %.2g charged once for the job; model_training budget left %.3g", km.artifact.privacy?.epsilon ?? 0, km.budget.left))
        let recJob = folder + "/recommend-products.yaml"
        try put("""
            job: recommend-products
            purpose: model_training
            model: recommender
            events: purchase
            items_from: products
            params: { max_items_per_subject: 20 }
            epsilon: 1.0

            """, recJob)
        say("$ profilectl train \(recJob) --out \(folder)/recommender.json --role trainer")
        let rec = try trainer.train(jobFile: recJob)
        for w in rec.warnings { say("  warning: \(w)") }
        let recPath = folder + "/recommender.json"
        try OutputFile.write([UInt8](rec.json), to: recPath, force: false, protecting: [])
        say("  \(rec.artifact.items?.count ?? 0) catalog items; budget left \(String(format: "%.3g", rec.budget.left))")
        // Serving a subject is the app's (serve_recommendations), not the trainer's: analysis and
        // serving are separate roles.
        let app = try Vault.open(VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "app")))
        say("$ profilectl recommend --model \(recPath) --subject \(sample.customerID) --top 5 --role app")
        for r in try app.recommend(modelPath: recPath, .one(sample.customerID), top: 5) {
            say("  {\"customer_id\":\"\(r.customerID)\",\"items\":[\(r.items.map { "\"\($0)\"" }.joined(separator: ","))]}")
        }

        step("10. The audit log: every operation above, denied attempts included, hash-chained and signed")
        let auditor = try Vault.open(VaultConfiguration(storePath: store, keysPath: keys, policyDirectory: policies, actor: Actor(name: "demo", role: "auditor")))
        let exportPath = folder + "/audit.jsonl", pemPath = folder + "/audit-public.pem"
        let exported = try auditor.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: exportPath)
        say("$ profilectl audit export --out \(exportPath) --role auditor")
        say("  \(exported.entries) entries; signed head \(exported.head)")
        let lines = try String(contentsOfFile: exportPath, encoding: .utf8).split(separator: "\n")
        var tally: [String: Int] = [:]
        var rows: [String] = []
        for line in lines {
            guard let e = try? JSONValue.parse(String(line)), e["metadata.sequence"] != nil else { continue }
            func f(_ k: String, _ w: Int) -> String {
                var t: String
                switch e[k] {
                case .string(let s)?: t = s
                case .int(let i)?: t = String(i)
                default: t = "-"
                }
                if k == "unmapped.subject", t.count > 16 { t = String(t.prefix(12)) + "…" }
                return t.padding(toLength: w, withPad: " ", startingAt: 0)
            }
            tally[f("api.operation", 40).trimmingCharacters(in: .whitespaces) + " " + f("status", 8).trimmingCharacters(in: .whitespaces), default: 0] += 1
            rows.append("  " + f("metadata.sequence", 4) + " " + f("time_dt", 25) + " " + f("unmapped.role", 16) + " "
                        + f("api.operation", 16) + " " + f("unmapped.purpose", 17) + " " + f("status", 7) + " " + f("unmapped.epsilon", 8) + " " + f("unmapped.subject", 14))
        }
        say("  entries by operation and outcome: " + tally.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        say("  seq  time                      role             operation        purpose           status  epsilon  subject")
        for r in rows.suffix(12) { say(r) }
        try put(auditor.auditPublicKeyPEM, pemPath)
        say("$ profilectl audit public-key --out \(pemPath)")
        let check = try Vault.verifyAuditExport(path: exportPath, publicKeyPEM: auditor.auditPublicKeyPEM, keyName: pemPath, expectHead: nil)
        say("$ profilectl audit verify --file \(exportPath) --public-key \(pemPath)      # no keyring needed")
        say("  ok \(check.ok), \(check.entries) entries")
        var tampered = try String(contentsOfFile: exportPath, encoding: .utf8)
        tampered = tampered.replacingOccurrences(of: "\"actor.user.name\":\"demo\"", with: "\"actor.user.name\":\"someone-else\"")
        let tamperedPath = folder + "/audit-tampered.jsonl"
        try put(tampered, tamperedPath)
        let badCheck = try Vault.verifyAuditExport(path: tamperedPath, publicKeyPEM: auditor.auditPublicKeyPEM, keyName: pemPath, expectHead: nil)
        say("$ profilectl audit verify --file \(tamperedPath) --public-key \(pemPath)   # actor names edited")
        say("  ok \(badCheck.ok), first bad entry \(badCheck.firstBad.map(String.init) ?? "-"): \(badCheck.reason ?? "")   (exit 1)")

        step("11. Status")
        say("$ profilectl status")
        let s = try vault.status()
        say("  subjects \(s.subjects), events \(s.events), key versions \(s.keyVersions.map(String.init).joined(separator: ",")), audit entries \(s.auditEntries), file \(s.fileBytes) bytes")
        say()
        say("Try it yourself:")
        say("  export PROFILEVAULT_STORE=\(store) PROFILEVAULT_KEYS=\(keys) PROFILEVAULT_POLICY=\(policies)")
        say("  (the commands warn that this is the public example keyring; --allow-example-keys silences it, for demos only)")
        say("  swift run -c release profilectl get --subject \(sample.customerID) --purpose customer_support --role support --json")
    }
}
