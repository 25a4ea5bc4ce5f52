import Foundation
public import VaultAudit
public import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

/// Input file formats for ingest.
public enum InputFormat: String, Sendable, CaseIterable {
    case csv, jsonl

    /// The format implied by a file name: `.jsonl`, `.ndjson` and `.json` mean JSON Lines.
    public static func guess(path: String) -> InputFormat {
        let lower = path.lowercased()
        if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") || lower.hasSuffix(".json") { return .jsonl }
        return .csv
    }
}

/// Where an ingest reads its records: a file (CSV or JSON Lines, as the CLI reads it), or JSON
/// objects already in memory (an HTTP body's array), which are never written anywhere.
public enum RecordSource: Sendable {
    /// A CSV or JSON Lines file; the format is `IngestOptions.format`, else guessed from the name.
    case file(String)
    /// One JSON object per record, keyed as in a JSON Lines file. Messages name `record N`
    /// (element N of the list, from 1) instead of a file and line.
    case objects([JSONValue])

    /// The name messages use for the input: the path, or "" for records in memory (then
    /// ``RecordIssue`` says `record N`).
    package var name: String {
        switch self {
        case .file(let path): path
        case .objects: ""
        }
    }

    /// The input's size in bytes (a file's, an estimate for records in memory), for progress
    /// and for sizing the ingest's subject filter.
    package var byteCount: Int {
        switch self {
        case .file(let path): (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        case .objects(let list): list.count.multipliedReportingOverflow(by: 128).overflow ? Int.max : list.count * 128
        }
    }
}

/// One input record, its values placed in a fixed column order chosen by the caller
/// (`nil` = the column is absent from the file or the JSON object).
package struct RawRecord {
    package var line: Int
    package var values: [String?]
    /// A structural problem with the record (broken quoting, invalid UTF-8, wrong column count,
    /// malformed JSON): the record is bad as a whole.
    package var problem: RecordIssue?
}

/// Why one record is bad: file, line, field and reason. Never carries a value of the record.
public struct RecordIssue: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input file; "" for records held in memory, where `line` is the record's number
    /// (from 1) and the description starts `record N:`.
    public var file: String
    public var line: Int
    public var field: String?
    public var reason: String
    /// The reason without any value (nil: `reason` holds none), for ``detail``.
    public var detailReason: String? = nil

    public var description: String {
        let at = file.isEmpty ? "record \(line)" : "\(file):\(line)"
        if let field { return "\(at): field \(field): \(reason)" }
        return "\(at): \(reason)"
    }

    /// The issue as a `VaultError` of `kind`, with its structured location.
    public func error(_ kind: VaultError.Kind = .invalidInput) -> VaultError {
        VaultError(kind, reason: detailReason ?? reason, shownReason: reason,
                   at: VaultError.Location(file: file, line: line, field: field))
    }

    /// The issue as the audit log records it (`VaultError.detail`): the reason without a value.
    public var detail: String {
        let r = detailReason ?? reason
        let at = file.isEmpty ? "record \(line)" : "\(file):\(line)"
        if let field { return "\(at): field \(field): \(r)" }
        return "\(at): \(r)"
    }
}

/// Reads records of a known column set from CSV (header = field names) or JSON Lines.
///
/// Header problems (unknown, duplicate or missing columns, an empty file) are file-level errors
/// and throw; record problems are reported on the record so a caller can reject just that one.
package final class RecordReader {
    let path: String
    let columns: [String]
    /// Input column name -> the field's name, for fields that declare `column:`.
    let aliases: [String: String]
    private let format: InputFormat
    private var csv: CSVReader?
    private var lines: LineReader?
    /// For CSV: file column index -> canonical column index.
    private var mapping: [Int] = []
    private var headerCount = 0

    /// - Parameters:
    ///   - columns: the canonical column names, in the order `RawRecord.values` uses.
    ///   - required: columns a CSV header must contain.
    /// Declared type of each column (for JSON Lines, whose values carry a type of their own).
    let types: [String: FieldType]

    init(path: String, format: InputFormat, delimiter: UInt8 = UInt8(ascii: ","), columns: [String], required: Set<String>, types: [String: FieldType] = [:],
         aliases: [String: String] = [:]) throws {
        // An input is read twice (the validation pass, then the writer's pass): a pipe, a FIFO
        // or a device would hand each reader part of the data, so half the records would be
        // written without the whole input having been validated. Checked before opening (opening
        // a FIFO waits for its writer).
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG, (st.st_mode & S_IFMT) != S_IFDIR {
            throw VaultError(.invalidInput, "\(path): not a regular file (an input is read twice, to validate it and then to write it; a pipe or a device cannot be)")
        }
        self.types = types
        self.path = path
        self.format = format
        self.columns = columns
        self.aliases = aliases
        switch format {
        case .csv:
            let reader = try CSVReader(path: path, delimiter: delimiter)
            guard let header = try reader.next() else {
                throw VaultError(.invalidInput, "\(path):1: the file is empty (a CSV file needs a header line naming the fields)")
            }
            if let p = header.problem {
                throw VaultError(.invalidInput, "\(path):\(header.line): header: \(p.reason)")
            }
            let index = Self.index(columns, aliases)
            var seen: Set<Int> = []
            for (i, rawName) in header.fields.enumerated() {
                let name = Normalization.trimmed(rawName.hasPrefix("\u{FEFF}") ? String(rawName.dropFirst()) : rawName)
                guard let target = index[name] else {
                    // Never echo the cell: when the header line is missing, it is a customer's data.
                    let known = header.fields.filter { index[Normalization.trimmed($0)] != nil }.count
                    // A real header (some column is known) names columns, which are not personal
                    // data: the unknown one is quoted when it is short printable text.
                    let hint = known == 0 ? "the first line is not a header: a CSV file must start with a line naming the fields (\(columns.joined(separator: ", ")))"
                                          : "not a field of the schema (expected one of \(columns.joined(separator: ", ")))"
                    let shown = known > 0 ? Self.columnName(name).map { " \"\($0)\"" } ?? "" : ""
                    throw VaultError(.invalidInput, "\(path):\(header.line): header column \(i + 1)\(shown): \(hint)")
                }
                guard seen.insert(target).inserted else {
                    throw VaultError(.invalidInput, "\(path):\(header.line): header: column \"\(name)\" appears twice (or with the field's other name)")
                }
                mapping.append(target)
            }
            let shownName = Dictionary(aliases.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
            for (i, r) in columns.enumerated() where required.contains(r) && !seen.contains(i) {
                throw VaultError(.invalidInput, "\(path):\(header.line): header: required column \"\(shownName[r] ?? r)\" is missing")
            }
            headerCount = header.fields.count
            csv = reader
        case .jsonl:
            let reader = try LineReader(path: path)
            lines = reader
        }
    }

    /// Input column name -> canonical column index: each column's own name, and the input name
    /// a field declares (`column:` in the schema, `aliases` maps it to the field's name).
    static func index(_ columns: [String], _ aliases: [String: String]) -> [String: Int] {
        var index: [String: Int] = [:]
        for (i, c) in columns.enumerated() { index[c] = i }
        for (alias, canonical) in aliases { if let i = index[canonical] { index[alias] = i } }
        return index
    }

    /// A header cell (or JSON key) as an error names it: at most 64 Unicode scalars, each a
    /// letter, digit or one of `_ . - space`; nil for anything else (never quoted).
    static func columnName(_ name: String) -> String? {
        guard !name.isEmpty, name.unicodeScalars.count <= 64,
              name.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || "_.- ".unicodeScalars.contains($0) })
        else { return nil }
        return name
    }

    /// JSON Lines held in memory, read exactly as a file of these bytes would be (`name` stands
    /// for the path in messages). `chunk` is how many bytes each refill of the line reader hands
    /// over, as `read(2)` would: tests and the `jsonl` fuzz target use small ones to cross the
    /// refill boundary anywhere.
    init(jsonLines bytes: [UInt8], name: String, columns: [String], types: [String: FieldType], chunk: Int = 1 << 20) {
        self.types = types
        self.path = name
        self.format = .jsonl
        self.columns = columns
        self.aliases = [:]
        lines = LineReader(bytes: bytes, name: name, chunk: chunk)
    }

    /// JSON objects held in memory, one per record: each is read as a JSON Lines line holding
    /// it would be (same types, same errors), without rendering or parsing any text. Records
    /// are numbered from 1 and the path is "" (messages say `record N`).
    init(objects: [JSONValue], columns: [String], types: [String: FieldType], aliases: [String: String] = [:]) {
        self.types = types
        self.path = ""
        self.format = .jsonl
        self.columns = columns
        self.aliases = aliases
        self.objects = objects
    }

    /// The reader of `source` (a file opened for reading, or the records in memory).
    package convenience init(source: RecordSource, format: InputFormat?, delimiter: UInt8 = UInt8(ascii: ","), columns: [String], required: Set<String>,
                     types: [String: FieldType], aliases: [String: String] = [:]) throws {
        switch source {
        case .file(let path):
            try self.init(path: path, format: format ?? InputFormat.guess(path: path), delimiter: delimiter, columns: columns, required: required, types: types,
                          aliases: aliases)
        case .objects(let list):
            self.init(objects: list, columns: columns, types: types, aliases: aliases)
        }
    }

    /// Records in memory (`init(objects:)`) and the index of the next one.
    private var objects: [JSONValue]?
    private var objectIndex = 0

    package var bytesRead: Int { csv?.bytesRead ?? lines?.bytesRead ?? 0 }
    private var sawRecord = false

    package func next() throws -> RawRecord? {
        switch format {
        case .csv:
            guard let rec = try csv!.next() else { return nil }
            sawRecord = true
            var values = [String?](repeating: nil, count: columns.count)
            if let p = rec.problem {
                let field = p.column.flatMap { $0 < mapping.count ? columns[mapping[$0]] : nil }
                return RawRecord(line: rec.line, values: values,
                                 problem: RecordIssue(file: path, line: rec.line, field: field, reason: p.reason))
            }
            if rec.fields.count != headerCount {
                return RawRecord(line: rec.line, values: values, problem: RecordIssue(
                    file: path, line: rec.line, field: nil,
                    reason: "the record has \(rec.fields.count) fields, the header has \(headerCount)"))
            }
            for (i, v) in rec.fields.enumerated() { values[mapping[i]] = v }
            return RawRecord(line: rec.line, values: values, problem: nil)
        case .jsonl:
            if let objects {
                guard objectIndex < objects.count else {
                    if objects.isEmpty { throw VaultError(.invalidInput, "no records (an empty list)") }
                    return nil
                }
                objectIndex += 1
                sawRecord = true
                return record(objectIndex, objects[objectIndex - 1])
            }
            while true {
                guard let (lineNo, bytes) = try lines!.next() else {
                    if !sawRecord {
                        throw VaultError(.invalidInput, "\(path):1: the file is empty (no JSON records)")
                    }
                    return nil
                }
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                sawRecord = true
                return parseJSONLine(lineNo, bytes)
            }
        }
    }

    private func parseJSONLine(_ line: Int, _ bytes: [UInt8]) -> RawRecord {
        let values = [String?](repeating: nil, count: columns.count)
        func bad(_ field: String?, _ reason: String) -> RawRecord {
            RawRecord(line: line, values: values, problem: RecordIssue(file: path, line: line, field: field, reason: reason))
        }
        guard String(validating: bytes, as: UTF8.self) != nil else { return bad(nil, "invalid UTF-8") }
        // The strict parser (RFC 8259, duplicate keys refused) keeps JSON's types apart:
        // JSONSerialization turns `true` into the number 1 on Linux.
        guard let object = try? JSONValue.parse(bytes) else { return bad(nil, "not a valid JSON object") }
        return record(line, object)
    }

    /// Column name -> canonical column index.
    private lazy var columnIndex: [String: Int] = Self.index(columns, aliases)

    /// The record a JSON value (a parsed line, or an object in memory) holds.
    private func record(_ line: Int, _ object: JSONValue) -> RawRecord {
        var values = [String?](repeating: nil, count: columns.count)
        func bad(_ field: String?, _ reason: String) -> RawRecord {
            RawRecord(line: line, values: values, problem: RecordIssue(file: path, line: line, field: field, reason: reason))
        }
        guard case .object(let pairs) = object else {
            return bad(nil, objects == nil ? "each line must be one JSON object" : "expected a JSON object")
        }
        let index = columnIndex
        for (key, value) in pairs {
            guard let i = index[key] else {
                // Named only when it is a plain name of at most 64 characters (as a CSV header
                // column is): a key holding an e-mail, a control character or a huge string is
                // never echoed.
                guard let shown = Self.columnName(key) else {
                    return bad(nil, "a key that is not a field of the schema (not shown: not a plain name of at most 64 characters)")
                }
                return bad(shown, "not a field of the schema")
            }
            // (A parsed line cannot repeat a key: the parser refuses it. An object built in memory can.)
            guard values[i] == nil else { return bad(key, "appears twice in the object") }
            let field = columns[i]   // the schema's name, also when the key is its column: alias
            let kind = types[field]
            switch value {
            case .null:
                values[i] = ""
            case .string(let s):
                values[i] = s
            case .int(let n):
                guard kind == nil || kind == .int || kind == .float else { return bad(field, "expected \(kind!.rawValue), found a number") }
                values[i] = String(n)
            case .double(let d):
                guard kind == nil || kind == .int || kind == .float else { return bad(field, "expected \(kind!.rawValue), found a number") }
                values[i] = d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
            case .bool(let b):
                guard kind == .bool else { return bad(field, "expected \(kind.map(\.rawValue) ?? "a string"), found true or false") }
                values[i] = b ? "true" : "false"
            case .array, .object:
                return bad(field, "nested arrays and objects are not allowed")
            }
        }
        return RawRecord(line: line, values: values, problem: nil)
    }
}

/// Streams the lines of a file (or of bytes in memory) as bytes, with bounded memory.
final class LineReader {
    /// -1 when reading from `memory`.
    private let fd: Int32
    private let memory: [UInt8]
    private var memoryOffset = 0
    let path: String
    private var buffer: [UInt8]
    private var count = 0
    private var position = 0
    private var eof = false
    private var line = 0
    private(set) var bytesRead = 0
    private var current: [UInt8] = []

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            throw VaultError(.notFound, "\(path): no such file")
        }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw VaultError(.notFound, "\(path): is a directory")
        }
        self.fd = fd
        memory = []
        buffer = [UInt8](repeating: 0, count: 1 << 20)
    }

    /// The lines of `bytes`, handed to the line scanner `chunk` bytes per refill.
    init(bytes: [UInt8], name: String, chunk: Int = 1 << 20) {
        path = name
        fd = -1
        memory = bytes
        buffer = [UInt8](repeating: 0, count: max(1, chunk))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Refills `buffer` from the file or from memory: the number of bytes, 0 at the end.
    private func fill() -> Int {
        if fd < 0 {
            let n = min(buffer.count, memory.count - memoryOffset)
            buffer.replaceSubrange(0..<n, with: memory[memoryOffset..<(memoryOffset + n)])
            memoryOffset += n
            return n
        }
        return buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    }

    func next() throws -> (Int, [UInt8])? {
        current.removeAll(keepingCapacity: true)
        var any = false
        while true {
            if position >= count {
                if eof { break }
                let n = fill()
                if n < 0 {
                    if errno == EINTR { continue }
                    throw VaultError(.internalFailure, "\(path): read failed")
                }
                if n == 0 { eof = true; break }
                count = n
                position = 0
                bytesRead += n
            }
            // Scan for the next newline in the buffer.
            let start = position
            var end = start
            while end < count && buffer[end] != 0x0A { end += 1 }
            current.append(contentsOf: buffer[start..<end])
            any = true
            if end < count {
                position = end + 1
                line += 1
                return (line, current)
            }
            position = count
        }
        if any && !current.isEmpty {
            line += 1
            return (line, current)
        }
        return nil
    }
}
