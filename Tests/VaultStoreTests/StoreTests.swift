#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultStore

/// Byte search with memchr + memcmp (Data.range is slow in debug builds).
func contains(_ haystack: Data, _ needle: String) -> Bool {
    let n = Array(needle.utf8)
    guard let first = n.first else { return true }
    return haystack.withUnsafeBytes { h -> Bool in
        guard let base = h.baseAddress else { return false }
        var offset = 0
        while offset + n.count <= h.count {
            guard let hit = memchr(base + offset, Int32(first), h.count - offset - n.count + 1) else { return false }
            let at = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(base + at, n, n.count) == 0 { return true }
            offset = at + 1
        }
        return false
    }
}

@Suite struct StoreTests {
    @Test func ingestedProfileDecryptsToTheSameValues() throws {
        let t = try TempStore()
        let r = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<50)))
        #expect(r.inserted == 50 && r.updated == 0 && r.rejected == 0)
        for i in [0, 2, 5, 49] {
            let row = Fixtures.row(i)
            let view = try #require(try t.store.profile(customerID: row[0], fields: t.allFields))
            #expect(view.customerID == row[0])
            let byName = Dictionary(uniqueKeysWithValues: view.fields.map { ($0.name, $0.value) })
            #expect(byName["email"] == .text(row[1]))
            #expect(byName["full_name"] == .text(row[2]))
            #expect(byName["phone"] == .text(row[3]))
            #expect(byName["birth_date"] == .text(row[4]))
            #expect(byName["age"] == .int(Int64(row[5])!))
            #expect(byName["gender"] == .text(row[6]))
            #expect(byName["annual_income"] == .float(Double(row[8])!))
        }
        #expect(try t.store.profile(customerID: "nobody", fields: t.allFields) == nil)
    }

    @Test func reingestIsAnIdempotentUpsert() throws {
        let t = try TempStore()
        let p = try t.write("p.csv", Fixtures.profilesCSV(0..<20))
        _ = try t.store.ingestProfiles(path: p)
        let before = try t.counts()
        let r = try t.store.ingestProfiles(path: p)
        // The same records: unchanged, nothing written.
        #expect(r.inserted == 0 && r.updated == 0 && r.unchanged == 20)
        #expect(try t.counts() == before)
        var changed = Fixtures.row(3)
        changed[1] = "new.address@example.net"
        _ = try t.store.ingestProfiles(path: t.write("u.csv", Fixtures.header + "\n" + Fixtures.csvLine(changed) + "\n"))
        #expect(try t.store.find(field: "email", value: "NEW.address@example.net ") == ["CUST-3"])
        #expect(try t.store.find(field: "email", value: Fixtures.row(3)[1]).isEmpty)   // old index entry gone
    }

    /// A transaction larger than the pipeline's chunk (4,096 records): a customer repeated
    /// within it, across chunks, and across transactions is one subject with the last values;
    /// each transaction writes one audit entry whose lines and counts span all its chunks.
    @Test func transactionsSpanChunksAndRepeatedCustomersStayOneSubject() throws {
        let t = try TempStore()
        var rows = (0..<9_000).map { Fixtures.row($0) }
        var early = Fixtures.row(1); early[1] = "early@example.org"
        var late = Fixtures.row(1); late[1] = "late@example.org"
        rows[4_500] = early   // line 4,502: the second chunk of the first transaction, replaces CUST-4500
        rows[8_999] = late    // line 9,001: the second transaction
        let csv = ([Fixtures.header] + rows.map(Fixtures.csvLine)).joined(separator: "\n") + "\n"
        var o = IngestOptions()
        o.batchSize = 6_000
        o.holdForValidation = 0   // transaction boundaries that do not depend on the validation pass's timing
        o.audit = AuditContext(actor: "tester", role: "operator", requestID: "r")
        let r = try t.store.ingestProfiles(path: t.write("p.csv", csv), options: o)
        #expect(r.inserted == 8_998 && r.updated == 2)
        #expect(try t.counts()[0] == 8_998)
        #expect(try t.store.find(field: "email", value: "late@example.org") == ["CUST-1"])
        #expect(try t.store.find(field: "email", value: "early@example.org").isEmpty)
        #expect(try t.store.find(field: "email", value: Fixtures.row(1)[1]).isEmpty)
        let entries = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit ORDER BY seq") }.map { try JSONValue.parse($0) }
        #expect(entries.count == 2)
        let c = entries.map { $0["unmapped.counts"] }
        #expect(c[0]?["first_line"] == .int(2) && c[0]?["last_line"] == .int(6_001) && c[0]?["inserted"] == .int(5_999) && c[0]?["updated"] == .int(1))
        #expect(c[1]?["first_line"] == .int(6_002) && c[1]?["last_line"] == .int(9_001) && c[1]?["inserted"] == .int(2_999) && c[1]?["updated"] == .int(1))
    }

    /// Pass 1 (validation) runs beside the write pipeline: a bad record at the end of a file of
    /// many transactions still leaves the store untouched, whether the writer waits for the
    /// validation at its first commit or holds its first transaction open meanwhile. A good
    /// file's transactions still end on batch boundaries, and the audit entries cover every line.
    @Test(arguments: [0, IngestOptions.maxHeldForValidation]) func validationBesideThePipelineStillRefusesTheWholeFile(hold: Int) throws {
        let t = try TempStore()
        var o = IngestOptions()
        o.batchSize = 100
        o.holdForValidation = hold
        o.audit = AuditContext(actor: "tester", role: "operator", requestID: "r")
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<10)), options: o)
        let (counts, head) = (try t.counts(), try t.store.auditHead())
        var rows = (100..<20_100).map { Fixtures.row($0) }
        rows[19_990][5] = "old"   // age, line 19,992
        let bad = ([Fixtures.header] + rows.map(Fixtures.csvLine)).joined(separator: "\n") + "\n"
        do {
            _ = try t.store.ingestProfiles(path: t.write("bad.csv", bad), options: o)
            Issue.record("a file with a bad record was accepted")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput && e.message.contains("bad.csv:19992") && e.message.contains("age"), "\(e)")
        }
        #expect(try t.counts() == counts)
        #expect(try t.store.auditHead() == head)
        #expect(try t.store.profile(customerID: "CUST-100", fields: ["email"]) == nil)

        let r = try t.store.ingestProfiles(path: t.write("good.csv", Fixtures.profilesCSV(100..<20_100)), options: o)
        #expect(r.inserted == 20_000)
        let entries = try t.store.pool.read { db in try String.fetchAll(db, sql: "SELECT entry FROM audit ORDER BY seq") }
            .map { try JSONValue.parse($0)["unmapped.counts"] }.dropFirst()
        var next: Int64 = 2
        for (k, c) in entries.enumerated() {
            guard case .int(let first)? = c?["first_line"], case .int(let last)? = c?["last_line"], case .int(let ins)? = c?["inserted"] else {
                Issue.record("entry \(k) lacks its counts"); break
            }
            #expect(first == next && ins == last - first + 1)
            #expect(k == entries.count - 1 || ins % 100 == 0, "a transaction ended off a batch boundary: \(ins)")
            next = last + 1
        }
        #expect(next == 20_002)
        if hold == 0 { #expect(entries.count == 200) }
    }

    /// A store written in format 1 (full-length pseudonym index, 16-byte blind-index MACs, a
    /// `pii` row per field, a `blind_index` table) or format 2 (8-byte keys, the same tables) is
    /// rebuilt once on open into format 3 (one `pii` row per subject with its MACs): same ids,
    /// same ciphertexts and MACs, lookups and reads work, and they use their indexes.
    @Test(arguments: [1, 2]) func anOlderStoreIsMigratedToTheCurrentFormat(from format: Int) throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<50)))
        _ = try t.store.ingestProfiles(path: t.write("q.csv", Fixtures.header + "\nCUST-50,nobody@example.org,Nobody,none,1990-01-01,30,other,DE,1\n"))
        let before = try t.counts()
        func snapshot(_ db: Database) throws -> [[Data?]] {
            try Row.fetchAll(db, sql: "SELECT s.id, s.pseudonym, c0, c1, c2, c3, c4, m1, m3 FROM subjects s JOIN pii ON pii.subject_id = s.id ORDER BY s.id")
                .map { row in [Data(String(row[0] as Int64).utf8)] + (1..<9).map { row[$0] as Data? } }
        }
        let rowsBefore = try t.store.pool.read(snapshot)
        // CUST-50's phone has no digits: no blind-index entry (a NULL MAC).
        #expect(rowsBefore.count == 51 && rowsBefore[50][7] != nil && rowsBefore[50][8] == nil && before[2] == 101)
        // Put the store back in the shape of the older format: the narrow tables (a pii row per
        // non-empty field; format 1 stored 16-byte MACs whose first 8 bytes are the same), the
        // later migrations not yet recorded.
        try t.store.pool.writeWithoutTransaction { db in
            try db.execute(sql: """
                CREATE TABLE p1(subject_id INTEGER NOT NULL, field INTEGER NOT NULL, ciphertext BLOB NOT NULL, PRIMARY KEY(subject_id, field)) WITHOUT ROWID;
                CREATE TABLE b1(field INTEGER NOT NULL, mac BLOB NOT NULL, subject_id INTEGER NOT NULL, PRIMARY KEY(field, mac, subject_id)) WITHOUT ROWID;
                """)
            for id in 0...4 { try db.execute(sql: "INSERT INTO p1 SELECT subject_id, \(id), c\(id) FROM pii WHERE c\(id) IS NOT NULL") }
            for id in [1, 3] {
                for row in try Row.fetchAll(db, sql: "SELECT subject_id, m\(id) FROM pii WHERE m\(id) IS NOT NULL") {
                    let mac: Data = row[1]
                    try db.execute(sql: "INSERT INTO b1 VALUES (?, ?, ?)", arguments: [id, format == 1 ? mac + Data((0..<8).map { UInt8($0) }) : mac, row[0] as Int64])
                }
            }
            try db.execute(sql: """
                DROP TABLE pii; ALTER TABLE p1 RENAME TO pii; ALTER TABLE b1 RENAME TO blind_index;
                CREATE INDEX blind_index_subject ON blind_index(subject_id);
                UPDATE meta SET value = '\(format)' WHERE key = 'store_format';
                DELETE FROM grdb_migrations WHERE identifier = 'v6-one-pii-row';
                """)
            if format == 1 {
                try db.execute(sql: """
                    DROP INDEX subjects_pseudonym;
                    CREATE TABLE s1(id INTEGER PRIMARY KEY, pseudonym BLOB NOT NULL UNIQUE, kek_version INTEGER NOT NULL, wrapped_dek BLOB NOT NULL,
                        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_activity INTEGER NOT NULL);
                    INSERT INTO s1 SELECT id, pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity FROM subjects;
                    DROP TABLE subjects; ALTER TABLE s1 RENAME TO subjects;
                    DELETE FROM grdb_migrations WHERE identifier = 'v5-compact-lookup-keys';
                    DROP TABLE ingest_batches;
                    DELETE FROM grdb_migrations WHERE identifier = 'v11-ingest-sources';
                    """)
            }
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM pii") == before[1])
            #expect(try Int.fetchAll(db, sql: "SELECT DISTINCT length(mac) FROM blind_index") == [format == 1 ? 16 : 8])
        }
        try t.store.close()
        let s = try ProfileStore.open(path: t.store.path, keyring: t.keyring, schema: Fixtures.schema)
        defer { try? s.close() }
        let (rowsAfter, tables, indexes, storeFormat) = try s.pool.read { db in
            (try snapshot(db),
             try String.fetchAll(db, sql: "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('pii', 'blind_index') ORDER BY name"),
             try String.fetchAll(db, sql: "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN ('subjects', 'pii') ORDER BY name"),
             try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'store_format'"))
        }
        #expect(try s.storedCounts() == before)
        #expect(rowsAfter == rowsBefore)
        #expect(tables == ["pii"] && indexes == ["pii_m1", "pii_m3", "subjects_pseudonym"] && storeFormat == "3",
                "\(tables) \(indexes) \(String(describing: storeFormat))")
        #expect(try s.find(field: "email", value: Fixtures.row(7)[1]) == ["CUST-7"])
        #expect(try s.find(field: "phone", value: Fixtures.row(8)[3]) == ["CUST-8"])
        #expect(try s.profile(customerID: "CUST-7", fields: ["email"]) != nil)
        // Lookups use their indexes (a full scan would be a silent slowdown).
        let plans = try s.pool.read { db in
            try ["SELECT id FROM subjects WHERE \(ProfileStore.pseudonymMatch)", "SELECT subject_id FROM pii WHERE m1 = ?1 ORDER BY subject_id"].map { sql in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: [Data(count: 8)]).map { $0["detail"] as String }.joined(separator: "; ")
            }
        }
        #expect(plans[0].contains("USING INDEX subjects_pseudonym") && plans[1].contains("USING COVERING INDEX pii_m1"), "\(plans)")
        let r = try s.ingestProfiles(path: t.write("r.csv", Fixtures.profilesCSV(40..<60)))
        // CUST-50 changed; CUST-40..49 are the stored records: unchanged, except in the rebuilt
        // format-1 store, whose subjects predate the record digests (v11-ingest-sources).
        #expect(r.inserted == 9 && r.updated + r.unchanged == 11)
        #expect(r.unchanged == (format == 1 ? 0 : 10), "\(r)")
    }

    @Test func blindIndexLookupNormalisesEmailAndPhone() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<10)))
        #expect(try t.store.find(field: "email", value: "  PERSON.7@example.org") == ["CUST-7"])
        #expect(try t.store.find(field: "phone", value: "49301000007") == ["CUST-7"])
        #expect(try t.store.find(field: "phone", value: "+49-30-1000007") == ["CUST-7"])
        #expect(try t.store.find(field: "email", value: "person.77@example.org").isEmpty)
    }

    @Test func eventsAttachToSubjectsAndReingestAddsNothing() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<5)))
        let ev = "customer_id,kind,item,value,time\nCUST-1,purchase,SKU-1,19.99,2026-10-01T12:00:00Z\nCUST-2,rating,SKU-1,4,2026-10-02T08:00:00+02:00\n"
        let p = try t.write("e.csv", ev)
        let r1 = try t.store.ingestEvents(path: p)
        #expect(r1.inserted == 2)
        let r2 = try t.store.ingestEvents(path: p)
        #expect(r2.inserted == 0 && r2.updated == 2)
        #expect(try t.counts()[4] == 2)
    }

    @Test func flippedCiphertextByteIsAnIntegrityError() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        try t.store.pool.write { db in
            let blob = try Data.fetchOne(db, sql: "SELECT c1 FROM pii WHERE subject_id = 1")!
            var bytes = [UInt8](blob)
            bytes[bytes.count / 2] ^= 0x01
            try db.execute(sql: "UPDATE pii SET c1 = ? WHERE subject_id = 1", arguments: [Data(bytes)])
        }
        #expect(throws: VaultError(.integrity, "subject row 1: field email: ciphertext does not verify (modified, moved from another subject or field, or wrong keyring)")) {
            _ = try t.store.profile(customerID: "CUST-0", fields: ["email"])
        }
        // Other subjects are unaffected.
        #expect(try t.store.profile(customerID: "CUST-1", fields: ["email"]) != nil)
    }

    @Test func flippedWrappedKeyByteIsAnIntegrityError() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<2)))
        try t.store.pool.write { db in
            var w = [UInt8](try Data.fetchOne(db, sql: "SELECT wrapped_dek FROM subjects WHERE id = 1")!)
            w[w.count - 1] ^= 0x80
            try db.execute(sql: "UPDATE subjects SET wrapped_dek = ? WHERE id = 1", arguments: [Data(w)])
        }
        do {
            _ = try t.store.profile(customerID: "CUST-0", fields: ["email"])
            Issue.record("a modified wrapped key was accepted")
        } catch let e as VaultError {
            #expect(e.kind == .integrity)
        }
    }

    @Test func ciphertextMovedToAnotherSubjectOrFieldNeverDecrypts() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        // Copy subject 1's e-mail ciphertext over subject 2's e-mail, and subject 2's phone over its name.
        try t.store.pool.write { db in
            try db.execute(sql: "UPDATE pii SET c1 = (SELECT c1 FROM pii WHERE subject_id = 1) WHERE subject_id = 2")
            try db.execute(sql: "UPDATE pii SET c2 = c3 WHERE subject_id = 3")
        }
        for (id, field) in [("CUST-1", "email"), ("CUST-2", "full_name")] {
            do {
                let v = try t.store.profile(customerID: id, fields: [field])
                Issue.record("moved ciphertext decrypted to \(String(describing: v))")
            } catch let e as VaultError {
                #expect(e.kind == .integrity)
            }
        }
        // The DEK wrapped for one subject does not unwrap for another.
        try t.store.pool.write { db in
            try db.execute(sql: "UPDATE subjects SET wrapped_dek = (SELECT wrapped_dek FROM subjects WHERE id = 1) WHERE id = 2")
        }
        #expect(throws: VaultError.self) { _ = try t.store.profile(customerID: "CUST-1", fields: ["email"]) }
    }

    @Test func wrongKeyringIsRefusedAsAnIntegrityError() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        let other = Keyring.generate(note: "other")
        do {
            _ = try ProfileStore.open(path: t.store.path, keyring: other, schema: Fixtures.schema)
            Issue.record("a foreign keyring opened the store")
        } catch let e as VaultError {
            #expect(e.kind == .integrity)
            #expect(e.message.contains("does not match"))
        }
        // The right keyring still opens it.
        let again = try ProfileStore.open(path: t.store.path, keyring: t.keyring, schema: Fixtures.schema)
        #expect(try again.profile(customerID: "CUST-1", fields: ["email"]) != nil)
        try again.close()
    }

    @Test func noPlaintextPIIInDatabaseWALOrSHM() throws {
        let t = try TempStore()
        let n = 3000
        var opts = IngestOptions()
        opts.batchSize = 500
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<n)), options: opts)
        try FileManager.default.removeItem(atPath: t.dir + "/p.csv")
        var files: [Data] = []
        for suffix in ["", "-wal", "-shm"] {
            if let d = FileManager.default.contents(atPath: t.store.path + suffix) { files.append(d) }
        }
        #expect(files.count >= 2)   // the WAL is live: checked before any checkpoint
        var needles: Set<String> = []
        for i in stride(from: 0, to: n, by: 7) {
            let r = Fixtures.row(i)
            needles.formUnion([r[0], r[1], r[1].lowercased(), r[3], String(r[3].filter(\.isNumber))])
        }
        needles.formUnion(["Zoë Müller", "Nguyễn Văn An", "O'Brien, Siobhan", "José Álvarez", "Aarav Sharma"])
        for needle in needles {
            for f in files { #expect(!contains(f, needle), "plaintext found in the store files") }
        }
        try t.store.checkpoint()
        let main = FileManager.default.contents(atPath: t.store.path)!
        for needle in needles { #expect(!contains(main, needle)) }
        // The scan itself works: a value that is stored in plaintext (a category) is found.
        #expect(contains(main, "female"))
    }

    @Test func storeFileIsCreatedOwnerOnly() throws {
        let t = try TempStore()
        let mode = try FileManager.default.attributesOfItem(atPath: t.store.path)[.posixPermissions] as! Int
        #expect(mode & 0o077 == 0)
    }

    @Test func initRefusesAnExistingStore() throws {
        let t = try TempStore()
        #expect(throws: VaultError.self) {
            _ = try ProfileStore.create(path: t.store.path, keyring: t.keyring, schema: Fixtures.schema, policyVersion: "x")
        }
    }
}
