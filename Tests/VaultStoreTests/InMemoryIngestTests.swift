import Foundation
import Testing
import VaultAudit
import VaultPolicy
@testable import VaultStore

/// Ingest from records in memory (`RecordSource.objects`, what the HTTP service uses so that no
/// body is ever written to a file): the same records, types and errors as a JSON Lines file,
/// messages that name `record N` and the field, and all or nothing.
@Suite struct InMemoryIngestTests {
    /// Profile `i` of the fixtures as a JSON object (age a number, income a number).
    static func object(_ i: Int) -> JSONValue {
        let r = Fixtures.row(i)
        let names = Fixtures.header.split(separator: ",").map(String.init)
        return .object(zip(names, r).map { name, value in
            switch name {
            case "age": (name, .int(Int64(value)!))
            case "annual_income": (name, .double(Double(value)!))
            default: (name, .string(value))
            }
        })
    }

    static func with(_ base: JSONValue, _ key: String, _ value: JSONValue?) -> JSONValue {
        guard case .object(var pairs) = base else { return base }
        pairs.removeAll { $0.0 == key }
        if let value { pairs.append((key, value)) }
        return .object(pairs)
    }

    /// Bad records, each as record 2 after a good one: (name, record, field or nil, text of the reason).
    static let bad: [(String, JSONValue, String?, String)] = [
        ("age out of bounds", with(object(2), "age", .int(150)), "age", ""),
        ("age a string", with(object(2), "age", .string("old")), "age", ""),
        ("age a boolean", with(object(2), "age", .bool(true)), "age", "found true or false"),
        ("income a boolean", with(object(2), "annual_income", .bool(false)), "annual_income", "found true or false"),
        ("email a number", with(object(2), "email", .int(5)), "email", "found a number"),
        ("nested object", with(object(2), "country", .object([("a", .int(1))])), "country", "nested"),
        ("unknown key", with(object(2), "favourite_colour", .string("blue")), "favourite_colour", "not a field of the schema"),
        ("missing customer ID", with(object(2), "customer_id", nil), "customer_id", "missing"),
        ("missing required field", with(object(2), "full_name", nil), "full_name", "missing required value"),
        ("not an object", .array([.string("Person.2@Example.ORG")]), nil, "expected a JSON object"),
    ]

    /// The reader over objects in memory yields, record for record, what the reader of a JSON
    /// Lines file holding the same objects yields: the same values and the same problems, only
    /// named `record N` instead of `FILE:N`.
    @Test func objectsReadExactlyAsTheirJSONLinesFileWould() throws {
        let t = try TempStore()
        let list = [Self.object(1)] + Self.bad.map(\.1) + [Self.with(Self.object(3), "annual_income", .double(0.5)), Self.with(Self.object(4), "phone", .string("+1 555 0100"))]
        let path = try t.write("same.jsonl", list.map { $0.rendered(pretty: false) }.joined(separator: "\n") + "\n")
        let columns = t.store.profileColumns, types = t.store.profileTypes
        let file = try RecordReader(path: path, format: .jsonl, columns: columns, required: [], types: types)
        let memory = RecordReader(objects: list, columns: columns, types: types)
        var n = 0, problems = 0
        while let a = try file.next() {
            let b = try #require(try memory.next())
            n += 1
            #expect(a.line == n && b.line == n)
            #expect(a.values == b.values, "record \(n)")
            #expect((a.problem == nil) == (b.problem == nil), "record \(n)")
            if a.problem != nil { problems += 1 }
            let fileMessage = a.problem.map { String($0.description.dropFirst(path.count + 1 + String(n).count)) }
            let memoryMessage = b.problem.map { String($0.description.dropFirst("record \(n)".count)) }
            if n == Self.bad.count + 1 {
                // Only the wording for a line that is no object differs.
                #expect(fileMessage == ": each line must be one JSON object" && memoryMessage == ": expected a JSON object")
            } else {
                #expect(fileMessage == memoryMessage, "record \(n)")
            }
        }
        #expect(try memory.next() == nil)
        #expect(n == list.count)
        // What the reader itself refuses: the booleans, the number for a string, the nested
        // object, the unknown key and the array (the rest is for validation to refuse).
        #expect(problems == 6)
    }

    /// Every bad record is refused with `record 2`, its field and reason, never a value, and
    /// the good record before it is not written: the list is all or nothing, even when the
    /// writer may commit a transaction per record (batch size 1, nothing held for validation).
    @Test(arguments: 0..<bad.count)
    func aBadRecordInMemoryIsRefusedWholeNamingRecordAndField(index: Int) throws {
        let (name, record, field, reason) = Self.bad[index]
        let t = try TempStore()
        _ = try t.store.ingestProfiles(path: t.write("seed.csv", Fixtures.profilesCSV(10..<13)))
        let before = try t.counts()
        let files = try FileManager.default.contentsOfDirectory(atPath: t.dir).sorted()
        var o = IngestOptions()
        o.batchSize = 1
        o.holdForValidation = 0
        do {
            _ = try t.store.ingestProfiles(.objects([Self.object(1), record, Self.object(3)]), options: o)
            Issue.record("\(name): accepted")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput, "\(name)")
            let at = field.map { "record 2: field \($0): " } ?? "record 2: "
            #expect(e.message.hasPrefix(at), "\(name): \(e.message)")
            if !reason.isEmpty { #expect(e.message.contains(reason), "\(name): \(e.message)") }
            #expect(!e.message.contains("Example.ORG") && !e.message.contains("blue") && !e.message.contains("CUST-2"), "\(name): echoes a value")
        }
        #expect(try t.counts() == before, "\(name): store changed")
        #expect(try t.store.profile(customerID: "CUST-1", fields: []) == nil, "\(name): the good record before was written")
        // Nothing new beside the store (a staged copy of the records, say).
        let after = try FileManager.default.contentsOfDirectory(atPath: t.dir).filter { !$0.hasPrefix("store.sqlite") }
        #expect(after.sorted() == files.filter { !$0.hasPrefix("store.sqlite") }, "\(name)")
    }

    @Test func goodRecordsInMemoryAreStoredAsTheirFileWouldStoreThem() throws {
        let t = try TempStore()
        let r = try t.store.ingestProfiles(.objects((0..<20).map(Self.object)))
        #expect(r.inserted == 20 && r.updated == 0 && r.rejected == 0)
        let u = try t.store.ingestProfiles(.objects([Self.with(Self.object(3), "age", .int(40))]))
        #expect(u.inserted == 0 && u.updated == 1)
        let view = try #require(try t.store.profile(customerID: "CUST-3", fields: ["email", "age"]))
        #expect(view.fields.map(\.value) == [.text("Person.3@Example.ORG"), .int(40)])
    }

    /// An object built in memory (not parsed) can repeat a key; it is refused, not overwritten.
    @Test func aRepeatedKeyIsRefused() throws {
        let t = try TempStore()
        guard case .object(let pairs) = Self.object(1) else { return }
        let twice = JSONValue.object(pairs + [("age", .int(50))])
        #expect(throws: VaultError(.invalidInput, "record 1: field age: appears twice in the object")) {
            _ = try t.store.ingestProfiles(.objects([twice]))
        }
        #expect(try t.counts() == [0, 0, 0, 0, 0])
    }

    @Test func anEmptyListIsRefused() throws {
        let t = try TempStore()
        #expect(throws: VaultError(.invalidInput, "no records (an empty list)")) { _ = try t.store.ingestProfiles(.objects([])) }
        #expect(throws: VaultError(.invalidInput, "no records (an empty list)")) { _ = try t.store.ingestEvents(.objects([])) }
        #expect(try t.counts() == [0, 0, 0, 0, 0])
    }

    /// With `skipInvalid`, bad records are counted and reported by record number.
    @Test func skipInvalidReportsRecordNumbers() throws {
        let t = try TempStore()
        var o = IngestOptions()
        o.skipInvalid = true
        o.rejectsPath = t.dir + "/rejects.csv"
        let r = try t.store.ingestProfiles(.objects([Self.object(1), Self.with(Self.object(2), "age", .int(150)), Self.object(3)]), options: o)
        #expect(r.inserted == 2 && r.rejected == 1)
        let rejects = try String(contentsOfFile: t.dir + "/rejects.csv", encoding: .utf8)
        #expect(rejects.split(separator: "\n").dropFirst().map { String($0.prefix(8)) } == [#"2,"age","#])
    }

    @Test func eventsInMemoryNameRecordAndFieldAndAreAllOrNothing() throws {
        let t = try TempStore()
        _ = try t.store.ingestProfiles(.objects([Self.object(1), Self.object(2)]))
        let event: (String, String) -> JSONValue = { id, time in
            .object([("customer_id", .string(id)), ("kind", .string("purchase")), ("item", .string("SKU-1")), ("value", .double(9.5)), ("time", .string(time))])
        }
        let before = try t.counts()
        #expect(throws: VaultError(.invalidInput, "record 2: field time: not an ISO 8601 time (e.g. 2026-10-01T12:00:00Z)")) {
            _ = try t.store.ingestEvents(.objects([event("CUST-1", "2026-10-01T12:00:00Z"), event("CUST-2", "yesterday")]))
        }
        #expect(throws: VaultError(.invalidInput, "record 2: field customer_id: no subject with this customer ID in the store")) {
            _ = try t.store.ingestEvents(.objects([event("CUST-1", "2026-10-01T12:00:00Z"), event("CUST-77", "2026-10-01T12:00:00Z")]))
        }
        #expect(try t.counts() == before)
        let r = try t.store.ingestEvents(.objects([event("CUST-1", "2026-10-01T12:00:00Z"), event("CUST-2", "2026-10-02T12:00:00Z")]))
        #expect(r.inserted == 2)
    }
}

/// An input is read twice (validation, then the writer): a FIFO would hand each reader part of
/// the data, so some records would be written without the whole input validated. It is refused
/// before it is opened (opening a FIFO would wait for a writer), and nothing is written.
@Suite struct NonRegularInputTests {
    @Test func aFIFOIsRefusedBeforeItIsOpened() throws {
        let t = try TempStore()
        let fifo = t.dir + "/profiles.csv"
        #expect(mkfifo(fifo, 0o600) == 0)
        for kind in ["profiles", "events"] {
            do {
                if kind == "profiles" { _ = try t.store.ingestProfiles(path: fifo) } else { _ = try t.store.ingestEvents(path: fifo) }
                Issue.record("a FIFO was read as \(kind) input")
            } catch let e as VaultError {
                #expect(e.kind == .invalidInput && e.message.contains("not a regular file"), "\(e.message)")
            }
        }
        #expect(try t.store.storedCounts().allSatisfy { $0 == 0 })
        // A regular file still reads.
        #expect(try t.store.ingestProfiles(path: t.write("p.csv", Fixtures.profilesCSV(0..<3))).inserted == 3)
    }
}
