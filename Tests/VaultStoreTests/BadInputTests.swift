import Foundation
import Testing
import VaultPolicy
@testable import VaultStore

/// Every kind of bad input is refused whole (exit 65 in the CLI), with an error naming file,
/// line and field, and leaves the store exactly as it was.
@Suite struct BadInputTests {
    static let good = Fixtures.csvLine(Fixtures.row(100))

    /// (name, file content, expected line, expected field or nil, text the message must contain)
    static let cases: [(String, String, Int, String?, String)] = [
        ("broken quoting", Fixtures.header + "\n" + good + "\nX1,\"a@b.c,Name,+1 2,2000-01-01,26,female,DE,10\n", 3, "email", "never closed"),
        ("text after closing quote", Fixtures.header + "\n" + good + "\nX1,\"a@b.c\"x,Name,+1 2,2000-01-01,26,female,DE,10\n", 3, "email", "closing quote"),
        ("wrong column count", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-01-01,26,female,DE\n", 3, nil, "8 fields, the header has 9"),
        ("impossible date", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-02-30,26,female,DE,10\n", 3, "birth_date", ""),
        ("not a date", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,01/02/2000,26,female,DE,10\n", 3, "birth_date", ""),
        ("age out of bounds", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-01-01,130,female,DE,10\n", 3, "age", ""),
        ("income out of bounds", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-01-01,26,female,DE,-5\n", 3, "annual_income", ""),
        ("age not a number", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-01-01,twenty,female,DE,10\n", 3, "age", ""),
        ("unknown category value", Fixtures.header + "\n" + good + "\nX1,a@b.c,Name,+1 2,2000-01-01,26,female,ES,10\n", 3, "country", ""),
        ("missing id", Fixtures.header + "\n" + good + "\n ,a@b.c,Name,+1 2,2000-01-01,26,female,DE,10\n", 3, "customer_id", "missing"),
        ("duplicate header", "customer_id,email,email,phone\nX1,a,b,c\n", 1, nil, "twice"),
        ("unknown header", Fixtures.header + ",shoe_size\n" + good + ",44\n", 1, nil, "not a field"),
        ("missing id column", "email,full_name\na@b.c,X\n", 1, nil, "customer_id"),
        ("empty file", "", 1, nil, "empty"),
    ]

    @Test(arguments: 0..<cases.count)
    func badFileIsRefusedWholeAndChangesNothing(index: Int) throws {
        let (name, text, line, field, contains) = Self.cases[index]
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("seed.csv", Fixtures.profilesCSV(0..<5)))
        let before = try t.counts()
        let path = try t.write("bad.csv", text)
        do {
            _ = try t.store.ingestProfiles(path: path)
            Issue.record("\(name): accepted")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput, "\(name)")
            #expect(e.message.hasPrefix("\(path):\(line):"), "\(name): \(e.message)")
            if let field { #expect(e.message.contains("field \(field)"), "\(name): \(e.message)") }
            if !contains.isEmpty { #expect(e.message.contains(contains), "\(name): \(e.message)") }
            #expect(!e.message.contains("a@b.c") && !e.message.contains("Name,"), "\(name): echoes input")
        }
        #expect(try t.counts() == before, "\(name): store changed")
        // The good record before the bad one was not written either.
        #expect(try t.store.profile(customerID: "CUST-100", fields: []) == nil, "\(name)")
    }

    @Test func invalidUTF8IsRefused() throws {
        let t = try TempStore()
        var bytes = Array((Fixtures.header + "\nX1,a@b.c,").utf8)
        bytes += [0xFF, 0xFE]
        bytes += Array(",+1 2,2000-01-01,26,female,DE,10\n".utf8)
        let p = try t.write("bad.csv", bytes: bytes)
        #expect(throws: VaultError(.invalidInput, "\(p):2: field full_name: invalid UTF-8")) { _ = try t.store.ingestProfiles(path: p) }
        #expect(try t.counts() == [0, 0, 0, 0, 0])
    }

    @Test func overlongFieldIsRefusedWithoutEchoingIt() throws {
        let t = try TempStore()
        let long = String(repeating: "x", count: 70_000)
        let p = try t.write("bad.csv", Fixtures.header + "\nX1,a@b.c,\(long),+1 2,2000-01-01,26,female,DE,10\n")
        do { _ = try t.store.ingestProfiles(path: p); Issue.record("accepted") } catch let e as VaultError {
            #expect(e.kind == .invalidInput)
            #expect(e.message.contains("field full_name"))
            #expect(!e.message.contains("xxxx"))
        }
    }

    @Test func skipInvalidWritesGoodRecordsAndReportsBadOnes() throws {
        let t = try TempStore()
        let text = Fixtures.profilesCSV(0..<3) + "X1,a@b.c,Name,+1 2,2000-02-30,26,female,DE,10\n" + Fixtures.csvLine(Fixtures.row(3)) + "\nX2,a@b.c,Name,+1 2,2000-01-01,26,female,XX,10\n"
        var o = IngestOptions()
        o.skipInvalid = true
        o.rejectsPath = t.dir + "/rejects.csv"
        let r = try t.store.ingestProfiles(path: t.write("mixed.csv", text), options: o)
        #expect(r.inserted == 4 && r.rejected == 2)
        let rejects = try String(contentsOfFile: o.rejectsPath!, encoding: .utf8)
        #expect(rejects.contains("5,\"birth_date\""))
        #expect(rejects.contains("7,\"country\""))
        let mode = try FileManager.default.attributesOfItem(atPath: o.rejectsPath!)[.posixPermissions] as! Int
        #expect(mode == 0o600)
    }

    @Test func eventForUnknownCustomerRefusesTheFile() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        let p = try t.write("e.csv", "customer_id,kind,item,value,time\nCUST-1,purchase,A,1,2026-01-01T00:00:00Z\nGHOST,purchase,A,1,2026-01-01T00:00:00Z\n")
        #expect(throws: VaultError(.invalidInput, "\(p):3: field customer_id: no subject with this customer ID in the store")) {
            _ = try t.store.ingestEvents(path: p)
        }
        #expect(try t.counts()[4] == 0)
    }

    @Test func badEventValuesAreRefused() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3)))
        let cases = [
            ("CUST-1,purchase,A,1001,2026-01-01T00:00:00Z", "value"),
            ("CUST-1,rating,A,6,2026-01-01T00:00:00Z", "value"),
            ("CUST-1,refund,A,1,2026-01-01T00:00:00Z", "kind"),
            ("CUST-1,purchase,A,1,yesterday", "time"),
            ("CUST-1,purchase,,1,2026-01-01T00:00:00Z", "item"),
        ]
        for (line, field) in cases {
            let p = try t.write("e.csv", "customer_id,kind,item,value,time\n" + line + "\n")
            do { _ = try t.store.ingestEvents(path: p); Issue.record("accepted \(line)") } catch let e as VaultError {
                #expect(e.kind == .invalidInput)
                #expect(e.message.hasPrefix("\(p):2: field \(field):"), "\(e.message)")
            }
        }
        #expect(try t.counts()[4] == 0)
    }

    @Test func jsonLinesIngestAndErrors() throws {
        let t = try TempStore()
        let good = #"{"customer_id":"J1","email":"j@x.org","full_name":"J","phone":"+1 555","birth_date":"1990-05-05","age":36,"gender":"male","country":"US","annual_income":52000.5}"#
        let r = try t.store.ingestProfiles(path: t.write("p.jsonl", good + "\n"))
        #expect(r.inserted == 1)
        let view = try #require(try t.store.profile(customerID: "J1", fields: ["age", "annual_income"]))
        #expect(view.fields.map(\.value) == [.int(36), .float(52000.5)])
        let bad = good + "\n" + #"{"customer_id":"J2","email":"j@x.org","age":"old"}"# + "\n{not json\n"
        let p = try t.write("bad.jsonl", bad)
        #expect(throws: VaultError(.invalidInput, "\(p):2: field full_name: missing required value")) { _ = try t.store.ingestProfiles(path: p) }
    }

    /// F8 (jsonl fuzz target): an unknown JSON key was named cut to 64 characters, and one
    /// character can hold any number of combining marks, so the error echoed a huge key whole.
    /// Now a key is named only when it is a plain name of at most 64 scalars (issue 17.6).
    @Test func unknownJSONKeyIsNamedOnlyWhenPlain() throws {
        let t = try TempStore()
        let key = "a" + String(repeating: "\u{301}", count: 5000)
        let p = try t.write("k.jsonl", #"{"customer_id":"K1",""# + key + #"":1}"# + "\n")
        do { _ = try t.store.ingestProfiles(path: p); Issue.record("accepted") } catch let e as VaultError {
            #expect(e.kind == .invalidInput)
            #expect(e.message.hasPrefix("\(p):1: a key that is not a field of the schema (not shown"), "\(e.message.prefix(100))")
            #expect(!e.message.unicodeScalars.contains("\u{301}"))
            #expect(e.message.unicodeScalars.count < p.unicodeScalars.count + 120, "\(e.message.unicodeScalars.count) scalars")
        }
        // A short unknown key is still named whole.
        let q = try t.write("k2.jsonl", #"{"customer_id":"K1","shoe_size":44}"# + "\n")
        #expect(throws: VaultError(.invalidInput, "\(q):1: field shoe_size: not a field of the schema")) { _ = try t.store.ingestProfiles(path: q) }
        // A key holding an e-mail or a control character is not named.
        for k in ["anna.secret@example.org", "x\\u001b[2J"] {
            let r = try t.write("k3.jsonl", #"{"customer_id":"K1",""# + k + #"":1}"# + "\n")
            do { _ = try t.store.ingestProfiles(path: r); Issue.record("accepted") } catch let e as VaultError {
                #expect(e.message.contains("not shown") && !e.message.contains("anna.secret") && !e.message.contains("\u{1B}"), "\(e.message)")
            }
        }
        #expect(try t.counts() == [0, 0, 0, 0, 0])
    }

    /// The in-memory entry point of the JSON Lines reader (the jsonl fuzz target's) reads the
    /// same records whatever the refill size, line numbers counting blank lines.
    @Test func jsonLinesInMemoryReadsTheSameRecordsForEveryRefillSize() throws {
        let text = "{\"customer_id\":\"A\",\"age\":30}\r\n\n  \n{\"customer_id\":\"B\",\"age\":true}\n{\"customer_id\":\"C\",\"shoe\":1}"
        let columns = ["customer_id", "age"]
        func read(_ chunk: Int) throws -> [(Int, [String?], String?)] {
            let r = RecordReader(jsonLines: Array(text.utf8), name: "mem.jsonl", columns: columns, types: ["customer_id": .string, "age": .int], chunk: chunk)
            var out: [(Int, [String?], String?)] = []
            while let rec = try r.next() { out.append((rec.line, rec.values, rec.problem?.description)) }
            return out
        }
        let whole = try read(1 << 20)
        #expect(whole.map(\.0) == [1, 4, 5])
        #expect(whole[0].1 == ["A", "30"] && whole[0].2 == nil)
        #expect(whole[1].2 == "mem.jsonl:4: field age: expected int, found true or false")
        #expect(whole[2].2 == "mem.jsonl:5: field shoe: not a field of the schema")
        for chunk in 1...9 {
            let r = try read(chunk)
            #expect(r.map(\.0) == whole.map(\.0) && r.map(\.1) == whole.map(\.1) && r.map(\.2) == whole.map(\.2), "chunk \(chunk)")
        }
        #expect(throws: VaultError(.invalidInput, "mem.jsonl:1: the file is empty (no JSON records)")) {
            _ = try RecordReader(jsonLines: Array(" \n\t\r\n".utf8), name: "mem.jsonl", columns: columns, types: [:], chunk: 2).next()
        }
    }
}
