import Foundation
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// Every file the product creates goes through `OutputFile`: new files only (0600), `force`
/// replaces by rename, and never a protected file (issue 17.1). These tests try to make it
/// write where it must not.
@Suite struct OutputFileTests {
    static func mode(_ path: String) -> Int {
        var st = stat()
        return lstat(path, &st) == 0 ? Int(st.st_mode & 0o7777) : -1
    }

    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    static func refused(_ body: () throws -> Void) -> VaultError? {
        do { try body() } catch let e as VaultError { return e } catch { return nil }
        return nil
    }

    static func protected(_ t: TempStore) -> [ProtectedFile] { [.keyring(t.dir + "/keyring.json")] + t.store.ownFiles }

    @Test func aNewFileIsCreatedWithMode0600() throws {
        let t = try TempStore()
        let path = t.dir + "/new.txt"
        try OutputFile.write("hello\n", to: path, force: false, protecting: Self.protected(t))
        #expect(Self.mode(path) == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "hello\n")
        #expect(VaultError(.cannotCreate, "x").exitCode == 73)
    }

    @Test func anExistingFileIsRefusedWithoutForceAndUntouched() throws {
        let t = try TempStore()
        let path = try t.write("exists.txt", "old content\n")
        let e = Self.refused { try OutputFile.write("new\n", to: path, force: false, protecting: Self.protected(t)) }
        #expect(e?.kind == .cannotCreate && e?.exitCode == 73)
        #expect(e?.message.contains(path) == true && e?.message.contains("--force") == true, "\(String(describing: e))")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old content\n")
    }

    @Test func forceReplacesAWorldWritableFileWithA0600One() throws {
        let t = try TempStore()
        let path = try t.write("shared.json", "old\n")
        chmod(path, 0o666)
        let before = FileIdentity.ofLink(path)
        try OutputFile.write("decrypted export\n", to: path, force: true, protecting: Self.protected(t))
        #expect(Self.mode(path) == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "decrypted export\n")
        // Replaced by rename (a new inode), never written into the old 0666 file.
        #expect(FileIdentity.ofLink(path) != before)
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.dir).filter { $0.contains(".profilevault-") }.isEmpty)
    }

    @Test func theKeyringAndTheStoreAreRefusedEvenWithForce() throws {
        let t = try TempStore()
        let keyring = t.dir + "/keyring.json", store = t.dir + "/store.sqlite"
        let (keyBytes, storeBytes) = (Self.bytes(keyring), Self.bytes(store))
        for target in [keyring, store] {
            for force in [false, true] {
                let e = Self.refused { try OutputFile.write("x\n", to: target, force: force, protecting: Self.protected(t)) }
                #expect(e?.kind == .cannotCreate, "\(target) force \(force)")
                #expect(e?.message.contains("even with --force") == true, "\(String(describing: e))")
            }
        }
        #expect(Self.bytes(keyring) == keyBytes)
        #expect(Self.bytes(store) == storeBytes)
    }

    @Test func aSymbolicLinkToTheKeyringIsRefused() throws {
        let t = try TempStore()
        let keyring = t.dir + "/keyring.json"
        let before = Self.bytes(keyring)
        let link = t.dir + "/innocent.csv"
        #expect(symlink(keyring, link) == 0)
        for force in [false, true] {
            let e = Self.refused { try OutputFile.write("x\n", to: link, force: force, protecting: Self.protected(t)) }
            #expect(e?.kind == .cannotCreate && e?.message.contains("the keyring") == true, "\(String(describing: e))")
        }
        #expect(Self.bytes(keyring) == before)
        // Through a relative link in another directory too.
        let sub = t.dir + "/sub"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        #expect(symlink("../keyring.json", sub + "/k") == 0)
        #expect(Self.refused { try OutputFile.write("x\n", to: sub + "/k", force: true, protecting: Self.protected(t)) }?.kind == .cannotCreate)
        #expect(Self.bytes(keyring) == before)
    }

    @Test func aHardLinkToTheStoreIsRefusedByInode() throws {
        let t = try TempStore()
        let store = t.dir + "/store.sqlite"
        let other = t.dir + "/elsewhere"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        let hard = other + "/report.csv"
        #expect(link(store, hard) == 0)
        let before = Self.bytes(store)
        let e = Self.refused { try OutputFile.write("x\n", to: hard, force: true, protecting: Self.protected(t)) }
        #expect(e?.kind == .cannotCreate && e?.message.contains("device and inode") == true, "\(String(describing: e))")
        #expect(Self.bytes(store) == before)
    }

    @Test func theStoresWALIsRefusedByNameBeforeItExists() throws {
        let t = try TempStore()
        try t.store.close()
        let wal = t.dir + "/store.sqlite-wal"
        try? FileManager.default.removeItem(atPath: wal)
        let e = Self.refused { try OutputFile.write("x\n", to: t.dir + "/./store.sqlite-wal", force: true, protecting: Self.protected(t)) }
        #expect(e?.kind == .cannotCreate, "\(String(describing: e))")
        #expect(!FileManager.default.fileExists(atPath: wal))
    }

    @Test func keyringsTokenFilesAndDatabasesNobodyNamedAreRefusedByContent() throws {
        let t = try TempStore()
        // Another keyring and another store the command was not told about.
        let otherKeys = t.dir + "/old-keyring.json"
        try Keyring.generate(note: "other").write(to: otherKeys)
        let tokens = try t.write("tokens.json", "{\n  \"format\": \"profilevault-tokens\",\n  \"version\": 1,\n  \"tokens\": []\n}\n")
        let otherStore = t.dir + "/other.sqlite"
        try FileManager.default.copyItem(atPath: t.dir + "/store.sqlite", toPath: otherStore)
        for path in [otherKeys, tokens, otherStore] {
            let before = Self.bytes(path)
            let e = Self.refused { try OutputFile.write("x\n", to: path, force: true, protecting: []) }
            #expect(e?.kind == .cannotCreate, "\(path)")
            #expect(Self.bytes(path) == before)
        }
    }

    @Test func forceNeverWritesThroughALinkOrIntoADirectory() throws {
        let t = try TempStore()
        let target = try t.write("target.txt", "target\n")
        let link = t.dir + "/link.txt"
        #expect(symlink(target, link) == 0)
        let e = Self.refused { try OutputFile.write("x\n", to: link, force: true, protecting: []) }
        #expect(e?.kind == .cannotCreate && e?.message.contains("symbolic link") == true)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "target\n")
        // A dangling link: O_EXCL | O_NOFOLLOW never creates its target.
        let dangling = t.dir + "/dangling"
        #expect(symlink(t.dir + "/nowhere", dangling) == 0)
        #expect(Self.refused { try OutputFile.write("x\n", to: dangling, force: false, protecting: []) }?.kind == .cannotCreate)
        #expect(!FileManager.default.fileExists(atPath: t.dir + "/nowhere"))
        #expect(Self.refused { try OutputFile.write("x\n", to: t.dir, force: true, protecting: []) }?.kind == .cannotCreate)
    }

    @Test func aTargetSwappedForTheKeyringBeforeTheRenameIsRefused() throws {
        let t = try TempStore()
        let path = try t.write("out.csv", "old\n")
        let file = try OutputFile(path: path, force: true, protecting: Self.protected(t))
        try file.write("new\n")
        // Between the check and the rename, the target becomes a hard link to the keyring.
        try FileManager.default.removeItem(atPath: path)
        #expect(link(t.dir + "/keyring.json", path) == 0)
        let keyring = Self.bytes(t.dir + "/keyring.json")
        #expect(Self.refused { try file.commit() }?.kind == .cannotCreate)
        #expect(Self.bytes(t.dir + "/keyring.json") == keyring)
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.dir).filter { $0.contains(".profilevault-") }.isEmpty)
    }

    @Test func anUncommittedFileIsRemovedAndAReplacedOneKept() throws {
        let t = try TempStore()
        let fresh = t.dir + "/fresh.csv"
        do {
            let f = try OutputFile(path: fresh, force: false, protecting: [])
            try f.write("partial")
        }
        #expect(!FileManager.default.fileExists(atPath: fresh))
        let existing = try t.write("existing.csv", "keep me\n")
        do {
            let f = try OutputFile(path: existing, force: true, protecting: [])
            try f.write("partial")
            f.discard()
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "keep me\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.dir).filter { $0.contains(".profilevault-") }.isEmpty)
    }

    // MARK: - The store's outputs

    @Test func anAuditExportOntoTheStoreIsRefusedEvenWithForce() throws {
        let t = try TempStore()
        try t.store.audit([AuditContext(actor: "a", role: "auditor", requestID: "r").record("get", .read)])
        let store = t.dir + "/store.sqlite"
        for force in [false, true] {
            let e = Self.refused { _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .csv, to: store, force: force) }
            #expect(e?.kind == .cannotCreate, "\(String(describing: e))")
        }
        #expect(try t.store.verifyAudit(expectHead: nil).ok)
        let out = t.dir + "/audit.jsonl"
        _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out)
        #expect(Self.mode(out) == 0o600)
        // A second export to the same path needs --force, and its result is 0600 too.
        #expect(Self.refused { _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: out) }?.kind == .cannotCreate)
        chmod(out, 0o644)
        _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .csv, to: out, force: true)
        #expect(Self.mode(out) == 0o600)
    }

    @Test func aFailedAuditExportRemovesOnlyTheFileItCreated() throws {
        let t = try TempStore()
        try t.store.audit([AuditContext(actor: "a", role: "auditor", requestID: "r").record("get", .read)])
        // Break the chain: the export fails with an integrity error.
        try t.store.pool.write { db in
            try db.execute(sql: "DROP TRIGGER IF EXISTS audit_no_update")
            try db.execute(sql: "UPDATE audit SET entry = replace(entry, '\"a\"', '\"b\"')")
        }
        let fresh = t.dir + "/fresh.jsonl"
        #expect(Self.refused { _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: fresh) }?.kind == .integrity)
        #expect(!FileManager.default.fileExists(atPath: fresh))
        let older = try t.write("older.jsonl", "an earlier export\n")
        #expect(Self.refused { _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: older, force: true) }?.kind == .integrity)
        #expect(try String(contentsOfFile: older, encoding: .utf8) == "an earlier export\n")
    }

    @Test func publishedHeadsAppendButNeverToAProtectedFile() throws {
        let t = try TempStore()
        try t.store.audit([AuditContext(actor: "a", role: "auditor", requestID: "r").record("get", .read)])
        let keyring = t.dir + "/keyring.json"
        let tokens = try t.write("tokens.json", "{}\n")
        let before = (Self.bytes(keyring), Self.bytes(tokens))
        for path in [keyring, t.dir + "/store.sqlite", t.dir + "/store.sqlite-shm", tokens] {
            let e = Self.refused { try t.store.publishAuditHeads(to: path, protecting: Self.protected(t) + [.tokens(tokens)]) }
            #expect(e?.kind == .cannotCreate, "\(path): \(String(describing: e))")
        }
        #expect((Self.bytes(keyring), Self.bytes(tokens)) == before)
        // An existing heads file is appended to, on purpose.
        let heads = try t.write("heads.jsonl", "{\"earlier\":true}\n")
        try t.store.publishAuditHeads(to: heads, protecting: Self.protected(t))
        let text = try String(contentsOfFile: heads, encoding: .utf8)
        #expect(text.hasPrefix("{\"earlier\":true}\n") && text.split(separator: "\n").count == 2)
    }

    @Test func theRejectsFileCannotBeTheKeyring() throws {
        let t = try TempStore()
        let keyring = t.dir + "/keyring.json"
        let before = Self.bytes(keyring)
        var o = IngestOptions()
        o.skipInvalid = true
        o.rejectsPath = keyring
        o.rejectsForce = true
        o.protectedFiles = [.keyring(keyring)]
        let p = try t.write("p.csv", Fixtures.profilesCSV(0..<3) + "X1,a@b.c,N,+1 2,2000-02-30,26,female,DE,10\n")
        #expect(Self.refused { _ = try t.store.ingestProfiles(path: p, options: o) }?.kind == .cannotCreate)
        #expect(Self.bytes(keyring) == before)
        #expect(try t.counts()[0] == 0)
        // Not even named as protected: a keyring is recognised by its content.
        o.protectedFiles = []
        #expect(Self.refused { _ = try t.store.ingestProfiles(path: p, options: o) }?.kind == .cannotCreate)
        #expect(Self.bytes(keyring) == before)
        // The store itself, by inode through a hard link.
        let hard = t.dir + "/rejects.csv"
        #expect(link(t.dir + "/store.sqlite", hard) == 0)
        o.rejectsPath = hard
        #expect(Self.refused { _ = try t.store.ingestProfiles(path: p, options: o) }?.kind == .cannotCreate)
    }
}

/// CSV cells the auditor and the analyst open in a spreadsheet (issue 17.4).
@Suite struct CSVCellTests {
    @Test func formulaStartsArePrefixed() {
        #expect(CSVCell.field("=HYPERLINK(\"http://x\")") == "\"'=HYPERLINK(\"\"http://x\"\")\"")
        #expect(CSVCell.field("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0")
        #expect(CSVCell.field("+1 555 0100") == "'+1 555 0100")
        #expect(CSVCell.field("-1+1") == "'-1+1")
        #expect(CSVCell.field("@SUM(A1:A2)") == "'@SUM(A1:A2)")
        #expect(CSVCell.field("\t=1+1") == "'\t=1+1")
        #expect(CSVCell.field("  =1+1") == "'  =1+1")
        #expect(CSVCell.field("＝1+1") == "'＝1+1")
        #expect(CSVCell.field("-") == "'-")
        #expect(CSVCell.field("--5") == "'--5")
    }

    @Test func numbersAndOrdinaryTextAreLeftAlone() {
        for n in ["-5", "+3", "-2.5", "-.5", "+1e5", "-2.5E-3", "42", "0.1"] { #expect(CSVCell.field(n) == n, "\(n)") }
        for s in ["alice", "get", "a-b", "x=1", "", "2026-11-01T12:00:00.000Z"] { #expect(CSVCell.field(s) == s, "\(s)") }
        for s in ["-5e", "-e5", "-.", "- 5", "-5 "] { #expect(CSVCell.field(s).contains("'"), "\(s)") }
    }

    @Test func controlCharactersAreEscaped() {
        #expect(CSVCell.field("a\u{0}b") == "a\\u0000b")
        #expect(CSVCell.field("\r=1+1") == "\\u000d=1+1")
        #expect(CSVCell.field("line1\nline2") == "line1\\u000aline2")
        #expect(CSVCell.field("a\u{7F}\u{85}b") == "a\\u007f\\u0085b")
        #expect(CSVCell.field("a\tb") == "a\tb")
        let escaped = CSVCell.field(String(decoding: (0..<32).map { UInt8($0) }, as: UTF8.self))
        #expect(!escaped.unicodeScalars.contains { $0.value < 0x20 && $0 != "\t" })
    }

    @Test func quotingStillWorks() {
        #expect(CSVCell.field("a,b") == "\"a,b\"")
        #expect(CSVCell.field("say \"hi\"") == "\"say \"\"hi\"\"\"")
        #expect(CSVCell.field("x", alwaysQuote: true) == "\"x\"")
        #expect(CSVCell.row(["1", "=x", "a,b"]) == "1,'=x,\"a,b\"")
    }

    @Test func aFormulaInARejectedRecordIsPrefixed() throws {
        let t = try TempStore()
        let path = t.dir + "/rejects.csv"
        var o = IngestOptions()
        o.skipInvalid = true
        o.rejectsPath = path
        o.format = .jsonl
        let good = "{\"customer_id\":\"CUST-1\",\"email\":\"a@b.c\",\"full_name\":\"N\",\"phone\":\"+1 2\",\"birth_date\":\"2000-01-01\",\"age\":26,\"gender\":\"female\",\"country\":\"DE\",\"annual_income\":10}"
        let p = try t.write("p.jsonl", good + "\n{\"customer_id\":\"CUST-2\",\"=cmd|' /C calc'!A0\":1}\n{\"customer_id\":\"CUST-3\",\"-2+3\":1}\n")
        let r = try t.store.ingestProfiles(path: p, options: o)
        #expect(r.inserted == 1 && r.rejected == 2)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        // Keys that are not plain names are not named at all (issue 17.5): the formula never
        // reaches the file; where text does, CSVCell prefixes it (the tests above).
        #expect(text.contains("\n2,") && text.contains("\n3,"), "\(text)")
        #expect(!text.contains("=cmd") && !text.contains("-2+3"), "\(text)")
        #expect(OutputFileTests.mode(path) == 0o600)
    }

    @Test func aFormulaInAnAuditEntryIsPrefixedInTheCSVExport() throws {
        let t = try TempStore()
        let hostile = "=HYPERLINK(\"http://x\")"
        try t.store.audit([AuditContext(actor: hostile, role: "support", requestID: "r").record(
            "get", .read, purpose: "+purpose", outcome: .denied, detail: "@detail\u{0}with a NUL")])
        let path = t.dir + "/audit.csv"
        _ = try t.store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .csv, to: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "\(text)")
        #expect(!text.contains(",\"=HYPERLINK"))
        #expect(text.contains(",'+purpose,"))
        #expect(text.contains("'@detail\\u0000with a NUL"))
        #expect(!text.utf8.contains(0))
        #expect(OutputFileTests.mode(path) == 0o600)
    }
}
