import Foundation
import GRDB
import Testing
import DifferentialPrivacy
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultStore

/// Issue 17.10: a store edited with raw SQL (a NULL where a required ciphertext belongs, a
/// key version of -1, an integer where a blob belongs, text in a number column) reads back as
/// an integrity error naming the subject's row, never as `null`, a silent count or a crash
/// (GRDB's `row["x"] as Data` traps on a wrong type).
@Suite struct StorageIntegrityTests {
    static let context = AuditContext(actor: "tester", role: "operator", requestID: "req-1")

    func populated(_ n: Int = 5) throws -> TempStore {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<n)))
        _ = try t.store.ingestEvents(path: t.write("e.csv", "customer_id,kind,item,value,time\nCUST-0,purchase,SKU-1,19.99,2026-10-01T12:00:00Z\nCUST-1,rating,SKU-1,4,2026-10-02T08:00:00Z\n"))
        return t
    }

    func sql(_ t: TempStore, _ statements: String) throws {
        try t.store.pool.writeWithoutTransaction { db in try db.execute(sql: statements) }
    }

    func column(_ t: TempStore, _ field: String) -> String {
        t.store.piiColumns.ciphertextColumn(id: t.store.piiFieldIDs[field] ?? -1) ?? "missing"
    }

    /// The call fails with an integrity error whose message contains every fragment and none of
    /// CUST-0's plaintext values.
    func expectIntegrity(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("read without an integrity error", sourceLocation: sourceLocation)
        } catch let e as VaultError {
            #expect(e.kind == .integrity, "\(e.message)", sourceLocation: sourceLocation)
            for f in fragments { #expect(e.message.contains(f), "\(e.message)", sourceLocation: sourceLocation) }
            for value in Fixtures.row(0).dropFirst() where value.count > 3 {
                #expect(!e.message.contains(value), "\(e.message)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func aNullCiphertextOfARequiredPIIFieldIsAnIntegrityErrorNotNull() throws {
        let t = try populated()
        try sql(t, "UPDATE pii SET \(column(t, "full_name")) = NULL WHERE subject_id = 1")
        expectIntegrity(["subject row 1", "full_name"]) { _ = try t.store.profile(customerID: "CUST-0", fields: t.allFields) }
        expectIntegrity(["subject row 1", "full_name"]) { _ = try t.store.accessExport(customerID: "CUST-0") }
        // A read that does not ask for the field is unaffected; so are other subjects.
        #expect(try t.store.profile(customerID: "CUST-0", fields: ["age"])?.fields.first?.value == .int(Int64(Fixtures.row(0)[5])!))
        #expect(try t.store.profile(customerID: "CUST-1", fields: t.allFields) != nil)
    }

    @Test func aTextOrIntegerWhereACiphertextBelongsIsAnIntegrityError() throws {
        let t = try populated()
        try sql(t, "UPDATE pii SET \(column(t, "email")) = 42 WHERE subject_id = 1")
        try sql(t, "UPDATE pii SET \(column(t, "phone")) = 'x' WHERE subject_id = 2")
        expectIntegrity(["subject row 1", "email", "an integer"]) { _ = try t.store.profile(customerID: "CUST-0", fields: ["email"]) }
        expectIntegrity(["subject row 2", "phone", "text"]) { _ = try t.store.profile(customerID: "CUST-1", fields: ["phone"]) }
        // The blind index still points at subject 1: the lookup confirms on a non-blob.
        expectIntegrity(["subject row 1", "email"]) { _ = try t.store.find(field: "email", value: Fixtures.row(0)[1]) }
    }

    @Test(arguments: ["-1", "4294967296", "x'01'", "1.5", "'one'"])
    func aKeyVersionThatIsNoKeyVersionIsAnIntegrityError(_ value: String) throws {
        let t = try populated()
        try sql(t, "UPDATE subjects SET kek_version = \(value) WHERE id = 1")
        expectIntegrity(["subject row 1", "key version"]) { _ = try t.store.profile(customerID: "CUST-0", fields: ["email"]) }
        expectIntegrity(["subject row 1"]) { _ = try t.store.accessExport(customerID: "CUST-0") }
        expectIntegrity(["subject row 1"]) { _ = try t.store.keyStatus(keyring: t.keyring) }
        // Rotation stops at the row, before writing anything of its batch.
        var ring = t.keyring
        _ = ring.addVersion()
        try t.store.adopt(keyring: ring)
        expectIntegrity(["subject row 1", "rotation stopped"]) { _ = try t.store.rewrapAll(audit: Self.context) }
        #expect(try t.store.subjects(wrappedWith: 2) == 0)
    }

    @Test(arguments: ["42", "'text'"])
    func aWrappedKeyThatIsNoBlobIsAnIntegrityError(_ value: String) throws {
        let t = try populated()
        // (The column is NOT NULL: SQLite itself refuses a NULL there.)
        try sql(t, "UPDATE subjects SET wrapped_dek = \(value) WHERE id = 1")
        expectIntegrity(["subject row 1", "wrapped data key"]) { _ = try t.store.profile(customerID: "CUST-0", fields: ["email"]) }
        expectIntegrity(["subject row 1", "wrapped data key"]) { _ = try t.store.accessExport(customerID: "CUST-0") }
        var ring = t.keyring
        _ = ring.addVersion()
        try t.store.adopt(keyring: ring)
        expectIntegrity(["subject row 1", "rotation stopped"]) { _ = try t.store.rewrapAll(audit: Self.context) }
        // Erasure needs no key: the damaged subject can still be erased.
        let receipts = try t.store.erase(customerIDs: [(1, "CUST-0")], file: nil, reason: "test", audit: Self.context)
        #expect(receipts.count == 1)
        #expect(try t.store.profile(customerID: "CUST-0", fields: ["email"]) == nil)
    }

    @Test func textInANumberAttributeIsAnIntegrityErrorForGetAndForAggregates() throws {
        let t = try populated(12)
        // INTEGER affinity keeps non-numeric text as text.
        try sql(t, "UPDATE attributes SET age = 'forty' WHERE subject_id = 3")
        expectIntegrity(["subject row 3", "age", "text"]) { _ = try t.store.profile(customerID: "CUST-2", fields: ["age"]) }
        let sums = { (c: [Coordinate]) in
            try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, predicates: [], groupBy: nil, coordinates: c))
        }
        // The schema's own bounds elide the clamp: text would have been summed as 0 and counted.
        expectIntegrity(["subject row 3", "attribute"]) { _ = try sums([.subjects, .attribute(name: "age", lower: 18, upper: 100, center: 0, grid: 1)]) }
        expectIntegrity(["subject row 3"]) { _ = try sums([.subjects, .nonNull(attribute: "age")]) }
        // A blob in a category attribute used to group.
        try sql(t, "UPDATE attributes SET age = 30 WHERE subject_id = 3; UPDATE attributes SET gender = x'00ff' WHERE subject_id = 4")
        expectIntegrity(["subject row 4"]) {
            _ = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, predicates: [], groupBy: (attribute: "gender", domain: ["female", "male", "other", "unknown"]), coordinates: [.subjects]))
        }
        expectIntegrity(["subject row 4", "gender"]) { _ = try t.store.profile(customerID: "CUST-3", fields: ["gender"]) }
    }

    @Test func aNumberOutsideTheSchemaBoundsIsAnIntegrityErrorForAggregates() throws {
        let t = try populated(12)
        // An integer a raw edit put beyond the declared bounds [18, 100]: summed unclamped (the
        // clamp is elided for bounds that cover the schema's), it would break the sensitivity.
        try sql(t, "UPDATE attributes SET age = 1000000000 WHERE subject_id = 5")
        expectIntegrity(["subject row 5"]) {
            _ = try t.store.aggregateSource.boundedSums(AggregateRequest(consentPurpose: nil, predicates: [], groupBy: nil,
                                                                          coordinates: [.attribute(name: "age", lower: 0, upper: 200, center: 0, grid: 1)]))
        }
    }

    @Test func anEventOfTheWrongTypeIsAnIntegrityErrorInTheExportAndInAggregates() throws {
        let t = try populated()
        let source = t.store.aggregateSource
        try sql(t, "UPDATE events SET time = 'yesterday' WHERE subject_id = 1")
        expectIntegrity(["subject row 1", "event's time"]) { _ = try t.store.accessExport(customerID: "CUST-0") }
        // Item sums read the time: text there traps GRDB's Int64 conversion, now an integrity error.
        expectIntegrity(["subject row 1", "event's time"]) {
            _ = try source.boundedSums(AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPresence(kind: "purchase", maxItems: 5)]))
        }
        // Text in a value: SQLite would sum it as 0 and count the event.
        try sql(t, "UPDATE events SET time = 0, value = 'a lot' WHERE subject_id = 1")
        expectIntegrity(["subject row 1"]) {
            _ = try source.boundedSums(AggregateRequest(consentPurpose: nil, predicates: [], groupBy: nil,
                                                        coordinates: [.events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 1, maxContributions: 10)]))
        }
        expectIntegrity(["subject row 1"]) {
            _ = try source.boundedSums(AggregateRequest(consentPurpose: nil, grouping: nil,
                                                        coordinates: [.attribute(name: "spend", lower: 0, upper: 1000, center: 0, grid: 1)],
                                                        derived: [DerivedAttribute(name: "spend", eventKind: "purchase", aggregate: .sum, lower: 0, upper: 1000)]))
        }
        // An intact store sums the same request (the check flags only the edited row).
        try sql(t, "UPDATE events SET value = 19.99 WHERE subject_id = 1")
        #expect(try source.boundedSums(AggregateRequest(consentPurpose: nil, predicates: [], groupBy: nil,
                                                        coordinates: [.events(kind: "purchase", lower: 0, upper: 1000, center: 0, grid: 1, maxContributions: 10)]))[""] == [20])
        try sql(t, "UPDATE events SET time = 0, value = x'01' WHERE subject_id = 1")
        expectIntegrity(["subject row 1", "event's value"]) { _ = try t.store.accessExport(customerID: "CUST-0") }
    }
}

/// Issue 17.9: a CSV's own upper-case column names are field names; nothing needs renaming.
@Suite struct UpperCaseFieldTests {
    @Test func upperCaseFieldsIngestReadAndAggregate() throws {
        let schema = try PolicyLoader.parseSchema(yaml: """
            version: 1
            subject_id: { field: customerID, category: user.unique_id }
            fields:
              Email: { type: string, category: user.contact.email, pii: true, lookup: true }
              SeniorCitizen: { type: bool, category: user.demographic }
              MonthlyCharges: { type: float, category: user.financial, bounds: [0, 200] }

            """, file: "schema.yaml")
        let t = try TempStore(schema: schema)
        let csv = "customerID,Email,SeniorCitizen,MonthlyCharges\n7590-VHVEG,a@example.com,0,29.85\n5575-GNVDE,b@example.com,1,56.95\n"
        #expect(try t.store.ingestProfiles(path: t.write("telco.csv", csv)).inserted == 2)
        let view = try #require(try t.store.profile(customerID: "5575-GNVDE", fields: ["Email", "SeniorCitizen", "MonthlyCharges"]))
        #expect(view.fields.map(\.value) == [.text("b@example.com"), .bool(true), .float(56.95)])
        #expect(try t.store.find(field: "Email", value: "A@example.com") == ["7590-VHVEG"])
        let sums = try t.store.aggregateSource.boundedSums(AggregateRequest(
            consentPurpose: nil, predicates: [WhereCondition(attribute: "SeniorCitizen", op: .eq, value: .int(1))], groupBy: nil,
            coordinates: [.subjects, .attribute(name: "MonthlyCharges", lower: 0, upper: 200, center: 0, grid: 1)]))
        #expect(sums[""] == [1, 57])
    }
}

/// Issue 17.9: a `;`-separated file (the bank-marketing data set) ingests with `delimiter`.
@Suite struct DelimiterTests {
    @Test func semicolonSeparatedProfilesIngestWithTheDelimiterAndAreRefusedWithout() throws {
        let t = try TempStore()
        let rows = (0..<3).map { Fixtures.row($0).map { $0.contains(";") || $0.contains("\"") ? "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : $0 }.joined(separator: ";") }
        let path = try t.write("p.csv", ([Fixtures.header.replacingOccurrences(of: ",", with: ";")] + rows).joined(separator: "\n") + "\n")
        // Read with the default ',' the header is one unknown column: refused, nothing written.
        #expect(throws: VaultError.self) { _ = try t.store.ingestProfiles(path: path) }
        #expect(try t.counts()[0] == 0)
        var o = IngestOptions()
        o.delimiter = UInt8(ascii: ";")
        #expect(try t.store.ingestProfiles(path: path, options: o).inserted == 3)
        // A comma inside a value is data under ';' ("O'Brien, Siobhan" of row 2).
        #expect(try t.store.profile(customerID: "CUST-2", fields: ["full_name"])?.fields.first?.value == .text(Fixtures.row(2)[2]))
    }
}

/// Issue 17.9: a field may name its source column (`column: SeniorCitizen`), so a CRM export
/// ingests as it is while the schema keeps its own names.
@Suite struct SourceColumnTests {
    static let schemaYAML = """
        version: 1
        subject_id: { field: customer_id, category: user.unique_id }
        fields:
          email: { type: string, category: user.contact.email, pii: true, lookup: true, column: "E-Mail Address" }
          senior_citizen: { type: bool, category: user.demographic, column: SeniorCitizen }
          monthly_charges: { type: float, category: user.financial, bounds: [0, 200], column: MonthlyCharges }

        """

    @Test func aFieldReadsItsDeclaredColumnInCSVAndJSONLines() throws {
        let schema = try PolicyLoader.parseSchema(yaml: Self.schemaYAML, file: "schema.yaml")
        #expect(schema.fields.map(\.column) == ["E-Mail Address", "SeniorCitizen", "MonthlyCharges"])
        let t = try TempStore(schema: schema)
        let csv = "customer_id,E-Mail Address,SeniorCitizen,MonthlyCharges\n7590-VHVEG,a@example.com,0,29.85\n"
        #expect(try t.store.ingestProfiles(path: t.write("telco.csv", csv)).inserted == 1)
        var o = IngestOptions()
        o.format = .jsonl
        let jsonl = #"{"customer_id":"5575-GNVDE","E-Mail Address":"b@example.com","SeniorCitizen":true,"MonthlyCharges":56.95}"# + "\n"
        #expect(try t.store.ingestProfiles(path: t.write("telco.jsonl", jsonl), options: o).inserted == 1)
        let view = try #require(try t.store.profile(customerID: "5575-GNVDE", fields: ["email", "senior_citizen", "monthly_charges"]))
        #expect(view.fields.map(\.value) == [.text("b@example.com"), .bool(true), .float(56.95)])
        // The field's own name is accepted too; both at once is one column twice.
        #expect(try t.store.ingestProfiles(path: t.write("own.csv", "customer_id,email,senior_citizen,monthly_charges\nX-1,c@example.com,1,10\n")).inserted == 1)
        #expect(throws: VaultError.self) {
            _ = try t.store.ingestProfiles(path: t.write("both.csv", "customer_id,email,SeniorCitizen,senior_citizen,MonthlyCharges\nX-2,d@example.com,1,1,10\n"))
        }
        // A file without the required e-mail column is refused, naming the field.
        do {
            _ = try t.store.ingestProfiles(path: t.write("missing.csv", "customer_id,SeniorCitizen,MonthlyCharges\nX-3,1,10\n"))
            Issue.record("a file without the e-mail column was accepted")
        } catch let e as VaultError {
            #expect(e.message.contains("field email"), "\(e.message)")
        }
        #expect(try t.counts()[0] == 3)
    }

    @Test func columnNamesAreCheckedAtLoad() throws {
        func refused(_ yaml: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                _ = try PolicyLoader.parseSchema(yaml: yaml, file: "schema.yaml")
                Issue.record("accepted", sourceLocation: sourceLocation)
            } catch {
                #expect(error.description.contains(fragment), "\(error.description)", sourceLocation: sourceLocation)
            }
        }
        let base = "version: 1\nsubject_id: { field: customer_id, category: user.unique_id }\nfields:\n"
        refused(base + "  a: { type: bool, category: user.demographic, column: X }\n  b: { type: bool, category: user.demographic, column: X }\n", "already the column of field a")
        refused(base + "  a: { type: bool, category: user.demographic }\n  b: { type: bool, category: user.demographic, column: a }\n", "already the column of field a")
        refused(base + "  a: { type: bool, category: user.demographic, column: customer_id }\n", "the subject_id field")
        refused(base + "  a: { type: bool, category: user.demographic, column: \"x,y\" }\n", "fields.a.column")
        refused(base + "  a: { type: bool, category: user.demographic, column: \"\" }\n", "fields.a.column")
        refused(base + "  a: { type: bool, category: user.demographic, column: \" padded\" }\n", "fields.a.column")
    }
}

/// Issue 17.10, the store's own tables: a value of the wrong type in `meta`, `key_versions` or
/// `pii_fields` makes opening the store an integrity error, never a trap.
@Suite struct StoreTablesIntegrityTests {
    @Test func wrongTypesInTheStoresOwnTablesAreIntegrityErrors() throws {
        for edit in ["UPDATE key_versions SET key_check = 5", "UPDATE key_versions SET version = -1",
                     "UPDATE meta SET value = x'00' WHERE key = 'identity_key_version'",   // (an integer becomes text: the column has TEXT affinity)
                     "UPDATE pii_fields SET name = 12 WHERE id = (SELECT min(id) FROM pii_fields)"] {
            let t = try TempStore()
            try t.store.pool.writeWithoutTransaction { db in try db.execute(sql: edit) }
            do {
                _ = try ProfileStore.open(path: t.store.path, keyring: t.keyring, schema: Fixtures.schema)
                Issue.record("\(edit): the store opened")
            } catch let e as VaultError {
                #expect(e.kind == .integrity || e.kind == .configuration, "\(edit): \(e)")
            }
        }
    }
}

/// An adversarial review of issue 17: the consent, suppression and policy tables, edited with
/// sqlite3 (INSERT is not blocked by the append-only triggers), read back as integrity errors.
@Suite struct LedgerTablesIntegrityTests {
    func expectIntegrity(_ what: String, _ body: () throws -> Void) {
        do { try body(); Issue.record("\(what): no error") } catch let e as VaultError {
            #expect(e.kind == .integrity, "\(what): \(e)")
        } catch { Issue.record("\(what): \(error)") }
    }

    @Test func wrongTypesInLedgersAreIntegrityErrors() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        try t.store.pool.writeWithoutTransaction { db in
            try db.execute(sql: "INSERT INTO consent_state(subject_id, purpose, granted, since) VALUES (1, 'analytics', 1, 'abc')")
            try db.execute(sql: "INSERT INTO consent(subject_id, purpose, granted, time, actor, source, policy_version) VALUES (2, 'analytics', 1, 'x', 'a', NULL, 'v')")
            try db.execute(sql: "INSERT INTO suppressed(pseudonym, erased_at, reason) VALUES (x'00', 'x', 'r')")
            try db.execute(sql: "INSERT INTO policy_history(seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes) VALUES (99, 'v', 's', 's', 'x', 'a', 'r', '{}', '[]')")
        }
        expectIntegrity("consent status") { _ = try t.store.consentState(customerID: "CUST-0") }
        expectIntegrity("consent history") { _ = try t.store.consentHistory(customerID: "CUST-1") }
        expectIntegrity("ingest over a damaged suppression list") { _ = try t.store.ingestProfiles(path: t.write("q.csv", Fixtures.profilesCSV(3..<4))) }
        expectIntegrity("policy history") { _ = try t.store.policyHistory() }
    }

    /// SQLite keeps `-wal` beside the file a symbolic link reaches: an output may not replace it.
    @Test func theWALOfAStoreOpenedThroughASymlinkIsProtected() throws {
        let t = try TempStore()
        let linkDir = t.dir + "/L"
        try FileManager.default.createDirectory(atPath: linkDir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: linkDir + "/link.sqlite", withDestinationPath: t.store.path)
        let protected = ProtectedFile.store(linkDir + "/link.sqlite")
        for target in [t.store.path + "-wal", t.store.path + "-shm", t.store.path + "-journal"] {
            #expect(throws: VaultError.self, "\(target)") { _ = try OutputFile(path: target, force: true, protecting: protected) }
        }
    }
}
