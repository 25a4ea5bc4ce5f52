import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// The repository's schema (policies/schema.yaml: PII fields with two lookup fields, typed
/// attributes, two event kinds), with `phone` and `annual_income` optional so that absent
/// values (NULL ciphertext, NULL attribute) are stored too.
let repositorySchema: Schema = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    let dir = NSTemporaryDirectory() + "pvpg-policies-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try! FileManager.default.copyItem(atPath: url.path + "/policies/policy.yaml", toPath: dir + "/policy.yaml")
    try! FileManager.default.copyItem(atPath: url.path + "/policies/catalogs", toPath: dir + "/catalogs")
    var text = try! String(contentsOfFile: url.path + "/policies/schema.yaml", encoding: .utf8)
    text = text.replacingOccurrences(of: "pii: true, lookup: true }\n  birth_date", with: "pii: true, lookup: true, required: false }\n  birth_date")
    text = text.replacingOccurrences(of: "bounds: [0, 250000] }", with: "bounds: [0, 250000], required: false }")
    try! text.write(toFile: dir + "/schema.yaml", atomically: true, encoding: .utf8)
    let schema = try! PolicyLoader.load(directory: dir).schema
    precondition(schema.field(named: "phone")?.required == false && schema.field(named: "annual_income")?.required == false)
    return schema
}()

/// Runs a synchronous engine method on a thread of its own, as the Vault calls it (never on
/// Swift's cooperative pool: ``PostgresProfiles`` blocks its caller).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        let t = Thread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        t.start()
    }
}

/// A fresh database with the profile tables (created by the owner with a fresh keyring), a
/// node login role, and a temporary directory for input files.
struct ProfileCluster: Sendable {
    let db: TestDatabase
    let keyring: Keyring
    let dir: String

    static func with(_ body: (ProfileCluster) async throws -> Void) async throws {
        try await TestDatabase.with { db in
            let keyring = Keyring.generate(note: "test")
            let owner = try db.ownerEngine()
            do {
                try await PostgresProfiles.create(owner: owner, schema: repositorySchema, keyring: keyring,
                                                  options: .init(serviceRole: db.serviceRole, schemaVersion: "1", policyVersion: "test"))
            } catch {
                await owner.close()
                throw error
            }
            await owner.close()
            // Initialising again (as an upgrade does) revokes and grants again, the profile
            // tables included; it also creates the node's login role.
            try await db.initialize()
            let dir = NSTemporaryDirectory() + "pvpg-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try await body(ProfileCluster(db: db, keyring: keyring, dir: dir))
        }
    }

    /// A node: an engine logged in as the service role's member, with the profile store opened.
    func node(pool: Int = 4) async throws -> PostgresProfiles {
        let engine = try db.nodeEngine(pool: pool)
        do { return try await PostgresProfiles.open(engine: engine, schema: repositorySchema, keyring: keyring) } catch {
            await engine.close()
            throw error
        }
    }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}

enum Rows {
    static let header = "customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income"
    static let names = ["Zoë Müller", "Nguyễn Văn An", "O'Brien, Siobhan", "José Álvarez", "Aarav Sharma", "李 娜"]

    /// A customer ID long enough that finding it by chance in hex ciphertext is out of reach.
    static func id(_ i: Int) -> String { "PGCUST-\(100_000 + i)-Q" }
    static func email(_ i: Int) -> String { "Person.\(i).Longname@Example.ORG" }
    static func phone(_ i: Int) -> String { "+49 (30) \(10_000_000 + i)" }

    static func row(_ i: Int) -> [String] {
        let age = 18 + (i * 7) % 70
        // Every 7th customer has no phone and no income (NULL ciphertext and NULL attribute).
        return [id(i), email(i), names[i % names.count] + " \(i)", i % 7 == 3 ? "" : phone(i),
                String(format: "%04d-%02d-%02d", 2026 - age, 1 + i % 12, 1 + i % 28), String(age),
                ["female", "male", "other", "unknown"][i % 4], ["DE", "FR", "GB", "US", "other"][i % 5],
                i % 7 == 3 ? "" : String(Double(i % 2400) * 100.5)]
    }

    static func line(_ fields: [String]) -> String {
        fields.map { $0.contains(",") || $0.contains("\"") ? "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : $0 }.joined(separator: ",")
    }

    static func csv(_ range: Range<Int>, extra: [[String]] = []) -> String {
        ([header] + range.map { line(row($0)) } + extra.map(line)).joined(separator: "\n") + "\n"
    }
}

let context = AuditContext(actor: "tester", role: "admin", requestID: "req-1")

@Suite(.serialized) struct PostgresProfilesTests {
    /// The same files on both engines (with one customer twice, NULL values and a duplicate
    /// event): the same reports, pseudonyms, decrypted profiles, blind-index answers and counts.
    @Test func bothEnginesHoldTheSameProfiles() async throws {
        try await ProfileCluster.with { cluster in
            var again = Rows.row(4)
            again[2] = "Renamed Person"
            let profiles = try cluster.write("p.csv", Rows.csv(0..<40, extra: [again]))
            let events = try cluster.write("e.csv", """
                customer_id,kind,item,value,time
                \(Rows.id(1)),purchase,sku-1,19.5,2026-10-01T12:00:00Z
                \(Rows.id(1)),purchase,sku-1,19.5,2026-10-01T12:00:00Z
                \(Rows.id(2)),rating,film-9,4,2026-10-02T08:00:00Z
                \(Rows.id(3)),purchase,sku-2,5,2026-10-03T09:30:00Z

                """)
            let sqliteDir = cluster.dir + "/sqlite"
            try FileManager.default.createDirectory(atPath: sqliteDir, withIntermediateDirectories: true)
            let sqlite = try ProfileStore.create(path: sqliteDir + "/store.sqlite", keyring: cluster.keyring, schema: repositorySchema, policyVersion: "test")
            defer { try? sqlite.close() }
            let pg = try await cluster.node()
            var options = IngestOptions()
            options.batchSize = 16
            options.audit = context
            // SQLite's transaction boundaries independent of timing (its first transaction
            // otherwise grows while validation runs): 16, 16 and 9 records on both engines.
            options.holdForValidation = 0
            let o = options
            let (sp, pp) = (try sqlite.ingestProfiles(.file(profiles), options: o), try await onThread { try pg.ingestProfiles(.file(profiles), options: o) })
            #expect(sp.inserted == 40 && sp.updated == 1 && sp.rejected == 0)
            #expect(pp.inserted == sp.inserted && pp.updated == sp.updated && pp.rejected == sp.rejected)
            let (se, pe) = (try sqlite.ingestEvents(.file(events), options: o), try await onThread { try pg.ingestEvents(.file(events), options: o) })
            #expect(se.inserted == 3 && se.updated == 1)
            #expect(pe.inserted == se.inserted && pe.updated == se.updated && pe.rejected == se.rejected)
            let all = Set(repositorySchema.fields.map(\.name))
            for i in 0..<40 {
                #expect(try pg.pseudonym(ofCustomerID: Rows.id(i)) == (try sqlite.pseudonym(ofCustomerID: Rows.id(i))))
                let want = try #require(try sqlite.profile(customerID: Rows.id(i), fields: all))
                let got = try await onThread { try pg.profile(customerID: Rows.id(i), fields: all) }
                #expect(got == want, "customer \(i)")
                let some = try await onThread { try pg.profile(customerID: Rows.id(i), fields: ["email", "age"]) }
                #expect(some == (try sqlite.profile(customerID: Rows.id(i), fields: ["email", "age"])))
            }
            #expect(try await onThread { try pg.profile(customerID: Rows.id(4), fields: ["full_name"]) }?.fields.first?.value == .text("Renamed Person"))
            // Lookups: normalised (case, spaces, punctuation of phone numbers), confirmed by decryption.
            for (field, value) in [("email", "  person.7.longname@example.org "), ("phone", "+49 30 1000 0011"), ("email", "nobody@example.org"), ("phone", "")] {
                let want = try sqlite.find(field: field, value: value)
                #expect(try await onThread { try pg.find(field: field, value: value) } == want, "\(field)")
            }
            #expect(try await onThread { try pg.find(field: "email", value: Rows.email(7)) } == [Rows.id(7)])
            #expect(throws: VaultError.self) { try pg.find(field: "full_name", value: "x") }
            #expect(try await onThread { try pg.exists(customerID: " \(Rows.id(9)) ") })
            #expect(try await onThread { try pg.exists(customerID: "PGCUST-nobody") } == false)
            #expect(try await onThread { try pg.profile(customerID: "PGCUST-nobody", fields: all) } == nil)
            let (ss, ps) = (try sqlite.status(), try await onThread { try pg.status() })
            #expect(ps.subjects == ss.subjects && ps.events == ss.events && ps.keyVersions == ss.keyVersions)
            #expect(ps.identityKeyVersion == ss.identityKeyVersion && ps.auditEntries == ss.auditEntries && ps.auditEntries == 4)
            // Stored counts alike: subjects, encrypted fields, blind-index entries, attribute rows, events.
            #expect(try await onThread { try pg.storedCounts() } == (try sqlite.storedCounts()).map(Int64.init))
            #expect(try await pg.engine.verifyAudit().ok)
            // A consent-checked read without consent decrypts nothing, as on SQLite
            // (PostgresConsentTests covers consent in full).
            let p1 = try pg.pseudonym(ofCustomerID: Rows.id(1))
            #expect(try await onThread { try pg.readProfile(pseudonym: p1, fields: all, consentPurpose: "marketing") } == .consentMissing)
            #expect(try sqlite.readProfile(pseudonym: p1, fields: all, consentPurpose: "marketing") == .consentMissing)
            await pg.engine.close()
        }
    }

    /// No e-mail, name, phone number, customer ID or birth date in any row of any table of the
    /// schema, as text or as the hex of its bytes (how `bytea` renders). Each needle is at least
    /// 14 bytes, so meeting its hex by chance in the random ciphertexts (about 10^6 hex digits
    /// here) has a probability below 10^6 / 2^112.
    @Test func noPlaintextPIIInAnyTable() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let profiles = try cluster.write("p.csv", Rows.csv(0..<30))
            var options = IngestOptions()
            options.audit = context
            let o = options
            _ = try await onThread { try pg.ingestProfiles(.file(profiles), options: o) }
            _ = try await onThread { try pg.erase(customerIDs: [(1, Rows.id(2))], file: nil, reason: "request", audit: context) }
            var needles: [String] = []
            for i in 0..<30 {
                let r = Rows.row(i)
                needles += [r[0], r[1], r[1].lowercased(), r[2], r[4]]
                if !r[3].isEmpty { needles += [r[3], Normalization.phone(r[3])] }
            }
            let tables = try await TestDatabase.strings(cluster.db, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'profilevault' ORDER BY 1")
            #expect(Set(tables).isSuperset(of: ["subjects", "pii", "attributes", "events", "suppressed", "audit_log", "key_versions", "meta"]))
            var scanned = 0
            for table in tables {
                // Every column of every row, as PostgreSQL renders it (bytea as \x hex).
                let dump = try await TestDatabase.strings(cluster.db, "SELECT t::text FROM profilevault.\(table) t").joined(separator: "\n").lowercased()
                scanned += dump.utf8.count
                for n in needles where n.utf8.count >= 14 {
                    let hex = AuditLog.hex(Array(n.utf8))
                    #expect(!dump.contains(n.lowercased()) && !dump.contains(hex), "a PII value in table \(table)")
                }
            }
            #expect(scanned > 10_000)
            #expect(needles.filter { $0.utf8.count >= 14 }.count >= 100)
            await pg.engine.close()
        }
    }

    /// A bad record anywhere in a file writes nothing, however many transactions the good
    /// records before it would fill; with skipInvalid the good ones land and the bad one is
    /// reported.
    @Test func aBadRecordInAFileWritesNothing() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            var bad = Rows.row(99)
            bad[5] = "not-a-number"
            let file = try cluster.write("p.csv", Rows.csv(0..<25, extra: [bad]))
            var options = IngestOptions()
            options.batchSize = 4
            options.audit = context
            let o = options
            do {
                _ = try await onThread { try pg.ingestProfiles(.file(file), options: o) }
                Issue.record("a file with a bad record was ingested")
            } catch let e as VaultError {
                #expect(e.kind == .invalidInput && e.message.contains(":27") && e.message.contains("age"))
                #expect(!e.message.contains("not-a-number") || e.detail.contains("not-a-number") == false)
            }
            #expect(try await onThread { try pg.storedCounts() } == [0, 0, 0, 0, 0])
            #expect(try await pg.engine.auditHead().entries == 0)
            // An event for a customer who is not a subject refuses the events file too.
            let events = try cluster.write("e.csv", "customer_id,kind,item,value,time\n\(Rows.id(1)),purchase,sku,1,2026-10-01T12:00:00Z\n")
            await #expect(throws: VaultError.self) { try await onThread { try pg.ingestEvents(.file(events), options: o) } }
            #expect(try await onThread { try pg.storedCounts() } == [0, 0, 0, 0, 0])
            var skip = o
            skip.skipInvalid = true
            let skipping = skip
            let report = try await onThread { try pg.ingestProfiles(.file(file), options: skipping) }
            #expect(report.inserted == 25 && report.rejected == 1)
            #expect(try await onThread { try pg.storedCounts() }[0] == 25)
            #expect(try await pg.engine.auditHead().entries == 7)   // ceil(26 / 4) transactions
            #expect(try await pg.engine.verifyAudit().ok)
            await pg.engine.close()
        }
    }

    /// Two nodes ingest different files at the same time, in many small transactions each:
    /// both land whole, and the one audit chain holds every batch of both and verifies.
    @Test func twoNodesIngestAtOnce() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            let fa = try cluster.write("a.csv", Rows.csv(0..<300)), fb = try cluster.write("b.csv", Rows.csv(300..<600))
            var options = IngestOptions()
            options.batchSize = 50
            options.audit = context
            let o = options
            async let ra = onThread { try a.ingestProfiles(.file(fa), options: o) }
            async let rb = onThread { try b.ingestProfiles(.file(fb), options: o) }
            let (x, y) = try await (ra, rb)
            #expect(x.inserted == 300 && y.inserted == 300)
            #expect(try await onThread { try a.status() }.subjects == 600)
            #expect(try await a.engine.auditHead().entries == 12)
            #expect(try await b.engine.verifyAudit().ok)
            #expect(try await onThread { try b.find(field: "email", value: Rows.email(17)) } == [Rows.id(17)])
            #expect(try await onThread { try a.find(field: "email", value: Rows.email(417)) } == [Rows.id(417)])
            await a.engine.close()
            await b.engine.close()
        }
    }

    /// An erasure on one node: the other node's next read finds no subject, the wrapped DEK row
    /// and every row of the subject are gone, the pseudonym is suppressed (a stale import is
    /// refused on either node unless --allow-reingest), and the receipt is in the chain.
    @Test func anErasureOnOneNodeIsSeenByTheOther() async throws {
        try await ProfileCluster.with { cluster in
            let a = try await cluster.node(), b = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<10))
            var options = IngestOptions()
            options.audit = context
            let o = options
            _ = try await onThread { try a.ingestProfiles(.file(file), options: o) }
            let events = try cluster.write("e.csv", "customer_id,kind,item,value,time\n\(Rows.id(5)),purchase,sku,1,2026-10-01T12:00:00Z\n\(Rows.id(6)),purchase,sku,1,2026-10-01T12:00:00Z\n")
            _ = try await onThread { try a.ingestEvents(.file(events), options: o) }
            let all = Set(repositorySchema.fields.map(\.name))
            #expect(try await onThread { try b.profile(customerID: Rows.id(5), fields: all) } != nil)
            let p5 = AuditLog.hex(try a.pseudonym(ofCustomerID: Rows.id(5)))
            let subjectID = try await cluster.db.count("SELECT id FROM profilevault.subjects WHERE pseudonym = '\\x\(p5)'::bytea")
            // An unknown ID refuses the whole call: nothing erased.
            await #expect(throws: VaultError.self) {
                try await onThread { try a.erase(customerIDs: [(1, Rows.id(5)), (2, "PGCUST-nobody")], file: "ids.txt", reason: "request", audit: context) }
            }
            #expect(try await onThread { try b.exists(customerID: Rows.id(5)) })
            let receipts = try await onThread { try a.erase(customerIDs: [(1, Rows.id(5))], file: nil, reason: "request", audit: context) }
            let r = try #require(receipts.first)
            let removed = Dictionary(uniqueKeysWithValues: r.removed)
            #expect(removed["wrapped_data_key"] == 1 && removed["events"] == 1 && removed["attribute_rows"] == 1)
            #expect(removed["pii_fields"] == 5 && removed["blind_index_entries"] == 2)
            // The other node's next reads.
            #expect(try await onThread { try b.profile(customerID: Rows.id(5), fields: all) } == nil)
            #expect(try await onThread { try b.readProfile(pseudonym: try b.pseudonym(ofCustomerID: Rows.id(5)), fields: all, consentPurpose: nil) } == .notFound)
            #expect(try await onThread { try b.exists(customerID: Rows.id(5)) } == false)
            #expect(try await onThread { try b.find(field: "email", value: Rows.email(5)) } == [])
            #expect(try await onThread { try b.erasedAt(customerID: Rows.id(5)) } == r.erasedAtMillis)
            // The DEK row and every row of the subject are gone; the others are untouched.
            #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.subjects WHERE pseudonym = '\\x\(p5)'::bytea") == 0)
            for table in ["pii", "attributes", "events"] {
                #expect(try await cluster.db.count("SELECT count(*) FROM profilevault.\(table) WHERE subject_id = \(subjectID)") == 0)
            }
            // Ten subjects with five encrypted fields and two blind-index entries each, but for
            // customer 3 (no phone); one erased; one event left.
            let left: [Int64] = try await onThread { try b.storedCounts() }
            #expect(left == [9, 44, 17, 9, 1])
            // An ingest on the other node that read the suppression list before this erasure
            // (simulated: its sealed batch reaches the writer now) is refused in its transaction.
            let sealer = try ProfileSealer(schema: repositorySchema, keys: b.keys, piiFieldIDs: b.piiFieldIDs, piiColumns: b.piiColumns)
            guard case .success(let valid) = ProfileStore.validateProfile(RawRecord(line: 7, values: Rows.row(5), problem: nil), file: "stale.csv",
                                                                          schema: repositorySchema) else { Issue.record("row 5 is invalid"); return }
            let stale = try sealer.seal(valid)
            do {
                let packed = try PackedProfiles([stale], piiWidth: b.piiColumns.valueColumns.count, attributeCount: repositorySchema.attributeFields.count)
                _ = try await b.writeProfiles(packed, file: "stale.csv", rejected: 0, firstLine: 7, lastLine: 7, audit: context, allowReingest: false)
                Issue.record("an erased customer was written back by a batch sealed before the erasure")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .invalidInput && e.message.contains("stale.csv:7") && e.message.contains("erased"))
            }
            #expect(try await onThread { try b.exists(customerID: Rows.id(5)) } == false)
            // A stale import is refused on the other node; --allow-reingest makes a new subject.
            await #expect(throws: VaultError.self) { try await onThread { try b.ingestProfiles(.file(file), options: o) } }
            var allow = o
            allow.allowReingest = true
            let reingest = allow
            let again = try await onThread { try b.ingestProfiles(.file(file), options: reingest) }
            #expect(again.inserted == 1 && again.updated == 0 && again.unchanged == 9)
            #expect(try await onThread { try a.erasedAt(customerID: Rows.id(5)) } == nil)
            // The receipt is the erasure's entry in the one chain.
            let v = try await a.engine.verifyAudit()
            #expect(v.ok && v.entries >= r.auditSequence)
            await a.engine.close()
            await b.engine.close()
        }
    }

    /// Rows edited in the database (a ciphertext moved to another subject, a wrapped key
    /// swapped, a key version that is no version) are integrity errors on read, never another
    /// customer's data and never a crash.
    @Test func editedRowsAreIntegrityErrors() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let file = try cluster.write("p.csv", Rows.csv(0..<3))
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            let all = Set(repositorySchema.fields.map(\.name))
            let ids = (0..<3).map { AuditLog.hex(try! pg.pseudonym(ofCustomerID: Rows.id($0))) }
            func subject(_ i: Int) -> String { "(SELECT id FROM profilevault.subjects WHERE pseudonym = '\\x\(ids[i])'::bytea)" }
            func expectIntegrity(_ i: Int, _ what: String) async {
                do {
                    _ = try await onThread { try pg.profile(customerID: Rows.id(i), fields: all) }
                    Issue.record("\(what) was not noticed")
                } catch let e as VaultError {
                    #expect(e.kind == .integrity, "\(what)")
                } catch {
                    Issue.record("\(what): \(error)")
                }
            }
            // Customer 0's e-mail ciphertext copied onto customer 1.
            try await cluster.db.superuser(["UPDATE profilevault.pii SET c1 = (SELECT c1 FROM profilevault.pii WHERE subject_id = \(subject(0))) WHERE subject_id = \(subject(1))"])
            await expectIntegrity(1, "a ciphertext moved between subjects")
            // Customer 2's wrapped key replaced by customer 0's.
            try await cluster.db.superuser(["UPDATE profilevault.subjects SET wrapped_dek = (SELECT wrapped_dek FROM profilevault.subjects WHERE id = \(subject(0))) WHERE id = \(subject(2))"])
            await expectIntegrity(2, "a wrapped key moved between subjects")
            // Customer 0's key version set to one the keyring lacks.
            try await cluster.db.superuser(["UPDATE profilevault.subjects SET kek_version = 4294967295 WHERE id = \(subject(0))"])
            await expectIntegrity(0, "an unknown key version")
            await pg.engine.close()
        }
    }

    /// The service role holds only what ingest, reads and erasure need: it cannot TRUNCATE or
    /// DROP the new tables, nor write the key tables, nor UPDATE events.
    @Test func theServiceRoleCannotTruncateOrDropTheNewTables() async throws {
        try await ProfileCluster.with { cluster in
            let db = cluster.db
            var refused: [String] = []
            for table in ["subjects", "pii", "attributes", "events", "suppressed", "key_versions", "pii_fields"] {
                for sql in ["TRUNCATE profilevault.\(table)", "DROP TABLE profilevault.\(table)", "ALTER TABLE profilevault.\(table) ADD COLUMN x int"] {
                    let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                    #expect(e?.kind == .denied && e?.sqlState == "42501", "\(sql)")
                    if e?.sqlState == "42501" { refused.append(sql) }
                }
            }
            // Key versions: a node may add one and retire one (PostgresKeysPolicyTests), nothing else.
            for sql in ["DELETE FROM profilevault.key_versions", "UPDATE profilevault.key_versions SET key_check = '\\x00'",
                        "INSERT INTO profilevault.pii_fields(id, name) VALUES (99, 'x')", "UPDATE profilevault.events SET value = 0",
                        "CREATE INDEX x ON profilevault.subjects(created_at)",
                        // A subject's identity is written once: no node may re-point a row at
                        // another pseudonym, nor rewrite when or by which run it was created.
                        "UPDATE profilevault.subjects SET pseudonym = sha256(pseudonym)",
                        "UPDATE profilevault.subjects SET created_at = 0", "UPDATE profilevault.subjects SET created_batch = NULL",
                        "UPDATE profilevault.subjects SET kek_version = 1, pseudonym = pseudonym"] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.kind == .denied && e?.sqlState == "42501", "\(sql)")
            }
            #expect(refused.count == 21)
            // What a node needs works.
            #expect(try await db.attempt("DELETE FROM profilevault.suppressed WHERE false", as: db.node, password: db.nodePassword) == nil)
            #expect(try await db.attempt("UPDATE profilevault.subjects SET updated_at = updated_at, last_activity = last_activity, kek_version = kek_version, wrapped_dek = wrapped_dek, record_digest = record_digest, updated_batch = updated_batch WHERE false",
                                         as: db.node, password: db.nodePassword) == nil)
            #expect(try await db.attempt("SELECT count(*) FROM profilevault.pii", as: db.node, password: db.nodePassword) == nil)
        }
    }

    /// SQL written into PII fields and into an event's item is stored and returned as data:
    /// every statement binds its values.
    @Test func aSQLishValueIsStoredAsData() async throws {
        try await ProfileCluster.with { cluster in
            let pg = try await cluster.node()
            let name = "Robert'); DROP TABLE profilevault.subjects; --"
            let email = "x'or'1'='1--@example.org"
            var row = Rows.row(1)
            row[1] = email
            row[2] = name
            let file = try cluster.write("p.csv", Rows.csv(0..<0, extra: [row]))
            _ = try await onThread { try pg.ingestProfiles(.file(file), options: IngestOptions()) }
            let item = "'); DELETE FROM profilevault.events; --"
            let events = try cluster.write("e.csv", "customer_id,kind,item,value,time\n" + Rows.line([Rows.id(1), "purchase", item, "3", "2026-10-01T12:00:00Z"]) + "\n")
            _ = try await onThread { try pg.ingestEvents(.file(events), options: IngestOptions()) }
            let view = try #require(try await onThread { try pg.profile(customerID: Rows.id(1), fields: ["full_name", "email"]) })
            #expect(view.fields.map(\.value) == [.text(email), .text(name)])
            #expect(try await onThread { try pg.find(field: "email", value: email.uppercased()) } == [Rows.id(1)])
            #expect(try await TestDatabase.strings(cluster.db, "SELECT item FROM profilevault.events") == [item])
            #expect(try await onThread { try pg.status() }.subjects == 1)
            // The same event again is a duplicate, not a second row.
            let again = try await onThread { try pg.ingestEvents(.file(events), options: IngestOptions()) }
            #expect(again.inserted == 0 && again.updated == 1)
            await pg.engine.close()
        }
    }

    /// A node with another keyring, or another schema, is refused before it reads or writes.
    @Test func aNodeWithAnotherKeyringOrSchemaIsRefused() async throws {
        try await ProfileCluster.with { cluster in
            let engine = try cluster.db.nodeEngine()
            do {
                _ = try await PostgresProfiles.open(engine: engine, schema: repositorySchema, keyring: Keyring.generate(note: "other"))
                Issue.record("another keyring was accepted")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .integrity)
            }
            var fields = repositorySchema.fields
            fields.removeLast()
            let other = Schema(version: 1, subjectIDField: repositorySchema.subjectIDField, subjectIDCategory: repositorySchema.subjectIDCategory,
                               fields: fields, events: repositorySchema.events, file: "other.yaml")
            do {
                _ = try await PostgresProfiles.open(engine: engine, schema: other, keyring: cluster.keyring)
                Issue.record("another schema was accepted")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .configuration)
            }
            await engine.close()
        }
    }
}

extension TestDatabase {
    /// The text column of every row of a query run as the superuser.
    static func strings(_ db: TestDatabase, _ sql: String) async throws -> [String] {
        let engine = try PostgresEngine(location: db.owner, password: db.ownerPassword, auditSigningKey: testAuditKey, maximumConnections: 1)
        do {
            let out = try await engine.transaction("test query") { conn -> [String] in
                try await engine.rows(conn, PostgresQuery(unsafeSQL: sql)).map { try $0.decode(String?.self) ?? "" }
            }
            await engine.close()
            return out
        } catch {
            await engine.close()
            throw error
        }
    }
}
