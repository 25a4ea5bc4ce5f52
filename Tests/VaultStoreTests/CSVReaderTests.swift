import Foundation
import Testing
@testable import VaultStore

/// RFC 4180 parsing: quoting, embedded line breaks, line numbers, and every malformation a
/// reader must report rather than silently repair.
@Suite struct CSVReaderTests {
    func records(_ text: [UInt8]) throws -> [CSVRecord] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("x.csv").path
        try Data(text).write(to: URL(fileURLWithPath: path))
        let reader = try CSVReader(path: path, bufferSize: 7) // tiny buffer: exercise refills mid-token
        var out: [CSVRecord] = []
        while let r = try reader.next() { out.append(r) }
        return out
    }

    func records(_ text: String) throws -> [CSVRecord] { try records(Array(text.utf8)) }

    @Test func quotedFieldsWithDelimitersQuotesAndNewlinesRoundTrip() throws {
        let r = try records("a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\nplain,,last\n")
        #expect(r.count == 3)
        #expect(r[1].fields == ["x, y", "say \"hi\"", "two\nlines"])
        #expect(r[1].line == 2)
        #expect(r[2].line == 4)   // the record after a quoted line break starts on line 4
        #expect(r[2].fields == ["plain", "", "last"])
        #expect(r.allSatisfy { $0.problem == nil })
    }

    @Test func crlfLineEndsAndMissingFinalNewline() throws {
        let r = try records("a,b\r\n1,2\r\n3,4")
        #expect(r.map(\.fields) == [["a", "b"], ["1", "2"], ["3", "4"]])
        #expect(r.map(\.line) == [1, 2, 3])
    }

    @Test func emptyLinesAreSkippedButCounted() throws {
        let r = try records("a\n\n\nb\n")
        #expect(r.map(\.fields) == [["a"], ["b"]])
        #expect(r[1].line == 4)
    }

    @Test func unterminatedQuoteIsAProblemNamingTheOpeningLine() throws {
        let r = try records("a,b\n1,\"open\n2,3\n")
        #expect(r.count == 2)
        #expect(r[1].problem?.reason.contains("opened on line 2") == true)
        #expect(r[1].problem?.column == 1)
    }

    @Test func characterAfterClosingQuoteIsAProblem() throws {
        let r = try records("a,b\n\"x\"y,2\n3,4\n")
        #expect(r[1].problem?.reason.contains("after a closing quote") == true)
        #expect(r[2].problem == nil)   // resynchronised at the end of the bad record
        #expect(r[2].fields == ["3", "4"])
    }

    @Test func quoteInsideUnquotedFieldIsAProblem() throws {
        let r = try records("a,b\nx\"y,2\n")
        #expect(r[1].problem?.column == 0)
    }

    @Test func invalidUTF8IsAProblemInItsColumn() throws {
        var bytes = Array("a,b\nok,".utf8)
        bytes += [0xC3, 0x28]
        bytes += Array("\n".utf8)
        let r = try records(bytes)
        #expect(r[1].problem == CSVProblem(column: 1, reason: "invalid UTF-8"))
    }

    @Test func missingFileIsNotFound() {
        #expect(throws: VaultError.self) { _ = try CSVReader(path: "/nonexistent/x.csv") }
        do { _ = try CSVReader(path: "/nonexistent/x.csv") } catch { #expect(error.kind == .notFound) }
    }
}
