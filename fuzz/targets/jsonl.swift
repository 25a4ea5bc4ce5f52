// libFuzzer target: the JSON Lines record reader (RecordReader / LineReader in
// Sources/VaultStore/RecordSources.swift), and the per-field validation ingest applies to its
// records (FieldSpec.parse, as in ProfileStore.validateProfile). fuzz/run.sh compiles it with
// CSVReader.swift, Normalization.swift, VaultError.swift, VaultAudit's JSONValue.swift and
// JSONParsing.swift and Sources/VaultPolicy/*.swift (Yams linked from .build-rel), in one module.
//
// The first input byte picks a refill size of 1-16 bytes; the rest is a JSON Lines profile file
// read in memory (RecordReader(jsonLines:)) against a fixed schema with every field type, four
// PII fields and a non-ASCII category value. Properties:
// - no crash or hang; the only error thrown is "the file is empty", at line 1;
// - the records do not depend on the refill size (the whole input at once or 1-16 bytes a time);
// - line numbers are >= 1, strictly increasing and at most the number of line feeds + 1;
// - every record has exactly the schema's columns (customer_id + fields, in schema order); a
//   record without problem is one JSON object whose keys are all columns, each value in its
//   column (null as "", numbers only in int/float columns, booleans only in bool columns);
// - a rejected record's issue is at its own line, its message starts with "file:line: ", is at
//   most 200 characters long, names a column or the offending key (cut to 64 Unicode scalars),
//   and never contains a PII value of the line (customer_id, email, full_name, birth_date,
//   phone); neither does a field error of a PII field.
import Foundation

let schemaYAML = """
version: 1
subject_id: { field: customer_id, category: user.unique_id }
fields:
  email:      { type: string,   category: user.contact.email,   pii: true, lookup: true }
  full_name:  { type: string,   category: user.name,            pii: true, max_length: 64 }
  birth_date: { type: date,     category: user.demographic.date_of_birth, pii: true, required: false }
  phone:      { type: string,   category: user.contact.phone_number, pii: true, lookup: true, required: false }
  age:        { type: int,      category: user.demographic.age_range, bounds: [18, 100] }
  score:      { type: float,    category: user.behavior,        bounds: [0, 1], required: false }
  vip:        { type: bool,     category: user.behavior,        required: false }
  joined:     { type: date,     category: user.behavior,        required: false }
  city:       { type: category, category: user.location.imprecise, domain: [Köln, "Zürich", other], on_out_of_bounds: clamp }
  gender:     { type: category, category: user.demographic.gender, domain: [female, male], required: false }
"""

let schema: Schema = {
    do { return try PolicyLoader.parseSchema(yaml: schemaYAML, file: "fuzz/schema.yaml") } catch { fatalError("fuzz schema: \(error)") }
}()
let columns = [schema.subjectIDField] + schema.fields.map(\.name)
let types: [String: FieldType] = {
    var t: [String: FieldType] = [schema.subjectIDField: .string]
    for f in schema.fields { t[f.name] = f.type }
    return t
}()
let piiColumns: Set<String> = Set([schema.subjectIDField] + schema.piiFields.map(\.name))
let name = "fuzz.jsonl"
/// Words of the reader's and validator's fixed messages: a PII "value" that is one of them is
/// not an echo.
let messageWords = """
invalid UTF-8 | not a valid JSON object | each line must be one JSON object | not a field of the schema |
expected string int float date category bool a string, found a number | found true or false |
nested arrays and objects are not allowed | missing required value | longer than 64 bytes | value is not a
calendar date YYYY-MM-DD | fuzz.jsonl field
"""

struct Rec: Equatable {
    var line: Int
    var values: [String?]
    var problem: RecordIssue?
}

func readAll(_ bytes: [UInt8], chunk: Int) -> (records: [Rec], error: VaultError?) {
    let reader = RecordReader(jsonLines: bytes, name: name, columns: columns, types: types, chunk: chunk)
    var out: [Rec] = []
    do {
        while let r = try reader.next() {
            out.append(Rec(line: r.line, values: r.values, problem: r.problem))
            require(out.count <= bytes.count + 1, "more records than bytes")
        }
    } catch let e as VaultError {
        return (out, e)
    } catch {
        fatalError("unexpected error type: \(error)")
    }
    return (out, nil)
}

/// The PII values of a line, as far as it parses (its string values of PII keys).
func piiValues(_ line: [UInt8]) -> [String] {
    guard let v = try? JSONValue.parse(line), case .object(let pairs) = v else { return [] }
    return pairs.compactMap { k, v in
        guard piiColumns.contains(k), case .string(let s) = v else { return nil }
        let t = s.trimmingCharacters(in: .whitespaces)
        return t.count >= 4 && !messageWords.contains(t) ? t : nil
    }
}

func check(_ bytes: [UInt8], chunk: Int) {
    // The whole input in one refill (as a 1 MiB read would, without allocating 1 MiB per run).
    let big = readAll(bytes, chunk: max(1, bytes.count))
    let small = readAll(bytes, chunk: chunk)
    require(big.records == small.records && big.error == small.error, "records differ between refills of \(bytes.count) and \(chunk) bytes")
    let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
    if let e = big.error {
        require(e.kind == .invalidInput && e.message.hasPrefix("\(name):1: ") && e.message.contains("empty"), "error \(e.message)")
        require(big.records.isEmpty, "records and then an error")
        require(lines.allSatisfy { $0.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } }, "a file with a non-blank line is called empty")
    }
    var last = 0
    for r in big.records {
        require(r.line >= 1 && r.line > last && r.line <= lines.count, "line \(r.line) after \(last), \(lines.count) lines")
        last = r.line
        require(r.values.count == columns.count, "\(r.values.count) values for \(columns.count) columns")
        let line = lines[r.line - 1]
        if let p = r.problem {
            require(p.line == r.line && p.file == name, "issue at \(p.file):\(p.line) for line \(r.line)")
            let text = p.description
            require(text.hasPrefix("\(name):\(r.line): "), "issue text \(text.prefix(200).debugDescription)")
            require(text.unicodeScalars.count <= 200, "issue text of \(text.unicodeScalars.count) characters: \(text.prefix(200).debugDescription)")
            var keys: Set<String> = []
            if let v = try? JSONValue.parse(line), case .object(let pairs) = v {
                // A key is named as it is, or cut to 64 Unicode scalars and an ellipsis.
                keys = Set(pairs.map { k, _ in
                    let u = Array(k.unicodeScalars)
                    var c = String.UnicodeScalarView()
                    c.append(contentsOf: u.prefix(64))
                    return u.count > 64 ? String(c) + "…" : k
                })
            }
            if let f = p.field { require(columns.contains(f) || keys.contains(f), "issue names field \(f.prefix(80).debugDescription)") }
            for v in piiValues(line) {
                require(!p.reason.contains(v), "issue reason echoes PII value: \(text.prefix(200))")
                if let f = p.field, f.contains(v) { continue }   // the value is also a key the issue names
                require(!text.contains(v), "issue echoes PII value: \(text.prefix(200))")
            }
            continue
        }
        // A record without problem: one JSON object of columns, each value in its column.
        guard let v = try? JSONValue.parse(line), case .object(let pairs) = v else { fatalError("line \(r.line) accepted but is not a JSON object") }
        var expected = [String?](repeating: nil, count: columns.count)
        for (k, value) in pairs {
            guard let i = columns.firstIndex(where: { Array($0.utf8) == Array(k.utf8) }) else { fatalError("key \(k.debugDescription) accepted") }
            switch value {
            case .null: expected[i] = ""
            case .string(let s): expected[i] = s
            case .int(let n): require(types[k] == .int || types[k] == .float, "number in \(k)"); expected[i] = String(n)
            case .double: require(types[k] == .int || types[k] == .float, "number in \(k)"); expected[i] = r.values[i]
            case .bool(let b): require(types[k] == .bool, "boolean in \(k)"); expected[i] = b ? "true" : "false"
            case .array, .object: fatalError("nested value accepted in \(k)")
            }
        }
        require(expected == r.values, "values \(r.values) for \(expected)")
        // Ingest's validation of each field: a PII field's error never shows its value.
        for (i, f) in schema.fields.enumerated() {
            let raw = r.values[i + 1] ?? ""
            do {
                _ = try f.parse(Substring(raw))
            } catch {
                let t = raw.trimmingCharacters(in: .whitespaces)
                if f.pii && t.count >= 2 && !messageWords.contains(t) {
                    require(!error.reason.contains(t), "field \(f.name) error shows its PII value: \(error.reason.prefix(200))")
                }
                for v in piiValues(line) where !(raw.contains(v)) {
                    require(!error.reason.contains(v), "field \(f.name) error shows a PII value: \(error.reason.prefix(200))")
                }
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    check(Array(UnsafeBufferPointer(start: data + 1, count: size - 1)), chunk: 1 + Int(data[0] % 16))
    return 0
}

/// `precondition` that keeps its message in an -O build (the crash log then says which property failed).
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { fatalError("property failed: \(message())", line: line) }
}
