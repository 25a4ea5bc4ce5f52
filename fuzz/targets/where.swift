// libFuzzer target: the `--where` parser (Sources/ProfileVault/WhereParser.swift).
// fuzz/run.sh compiles it with Sources/VaultPolicy/*.swift (Yams linked from .build-rel),
// Sources/DifferentialPrivacy/Query.swift (WhereCondition; `Epsilon` comes from
// fuzz/shims/where-epsilon.swift) and Sources/VaultStore/VaultError.swift, all in one module
// (their imports of project modules removed in a build copy).
//
// The input (UTF-8) is parsed as a where clause against a fixed schema with every field type,
// a PII field of each kind and a non-ASCII category value. Properties:
// - no crash or hang; a failure is a VaultError of kind usage or denied;
// - a success has one condition per comma-separated condition, each on a schema field that is
//   not PII, spelt byte for byte as in the schema, with a value of the field's type: int ->
//   .int, float -> finite .real, bool -> .int(0/1), date -> .int days of a year 1...9999,
//   category -> .text byte-equal to a domain value and only = or !=, string -> .text;
// - an error message is bounded (at most 300 characters, whatever the input's size); once the
//   condition's own quoted text ("...", cut to 64 Unicode scalars and an ellipsis) is taken out,
//   it holds no run of more than 40 consecutive Unicode scalars of the input;
// - an error about a condition on a PII field never contains that condition's value.
import Foundation

let schemaYAML = """
version: 1
subject_id: { field: customer_id, category: user.unique_id }
fields:
  email:      { type: string,   category: user.contact.email,   pii: true, lookup: true }
  full_name:  { type: string,   category: user.name,            pii: true }
  birth_date: { type: date,     category: user.demographic.date_of_birth, pii: true }
  pin:        { type: int,      category: user.authorization.credentials, pii: true, bounds: [0, 9999] }
  age:        { type: int,      category: user.demographic.age_range, bounds: [18, 100] }
  score:      { type: float,    category: user.behavior,        bounds: [0, 1], required: false }
  vip:        { type: bool,     category: user.behavior }
  joined:     { type: date,     category: user.behavior }
  city:       { type: category, category: user.location.imprecise, domain: [Köln, "Zürich", other] }
  gender:     { type: category, category: user.demographic.gender, domain: [female, male] }
  segment:    { type: string,   category: user.behavior }
"""

let schema: Schema = {
    do { return try PolicyLoader.parseSchema(yaml: schemaYAML, file: "fuzz/schema.yaml") } catch { fatalError("fuzz schema: \(error)") }
}()

/// The longest run of `message`'s scalars that also occurs in `input` exceeds `limit`?
func sharesRun(_ message: String, _ input: String, longerThan limit: Int) -> Bool {
    let m = message.unicodeScalars.map(\.value), t = input.unicodeScalars.map(\.value)
    let w = limit + 1
    guard m.count >= w, t.count >= w else { return false }
    var windows = Set<ArraySlice<UInt32>>()
    for i in 0...(t.count - w) { windows.insert(t[i..<(i + w)]) }
    for i in 0...(m.count - w) where windows.contains(m[i..<(i + w)]) { return true }
    return false
}

func check(_ text: String) {
    // The conditions as the parser sees them.
    let pieces = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    do {
        let conds = try WhereParser.parse(text, schema: schema)
        require(conds.count == pieces.count, "\(conds.count) conditions from \(pieces.count) pieces")
        for c in conds {
            guard let f = schema.field(named: c.attribute) else { fatalError("condition on \(c.attribute), not a field") }
            require(Array(c.attribute.utf8) == Array(f.name.utf8), "attribute \(c.attribute.debugDescription) is not spelt as field \(f.name)")
            require(!f.pii, "condition on PII field \(f.name)")
            switch (f.type, c.value) {
            case (.int, .int): break
            case (.float, .real(let d)): require(d.isFinite, "float \(d)")
            case (.bool, .int(let b)): require(b == 0 || b == 1, "bool \(b)")
            case (.date, .int(let d)): require(d >= -719_162 && d <= 2_932_896, "date \(d) days")
            case (.category, .text(let v)):
                require(f.domain!.contains { Array($0.utf8) == Array(v.utf8) }, "category value \(v.debugDescription) is not byte-equal to a domain value of \(f.name)")
                require(c.op == .eq || c.op == .ne, "category compared with \(c.op.rawValue)")
            case (.string, .text): break
            default: fatalError("field \(f.name) of type \(f.type) got \(c.value)")
            }
        }
    } catch let e as VaultError {
        require(e.kind == .usage || e.kind == .denied, "error kind \(e.kind)")
        var msg = e.message
        require(msg.unicodeScalars.count <= 300, "error message of \(msg.unicodeScalars.count) characters")
        // The failing condition: the parser goes left to right, so it is the first that fails alone.
        guard let bad = pieces.first(where: { (try? WhereParser.parse($0, schema: schema)) == nil }) else {
            fatalError("the clause fails but each of its conditions parses: \(e.message.prefix(200).debugDescription)")
        }
        // Take out its quoted text, in full or cut at 64 characters.
        let scalars = Array(bad.unicodeScalars)
        var cut = String.UnicodeScalarView()
        cut.append(contentsOf: scalars.prefix(64))
        let q = "\"" + String(cut) + (scalars.count > 64 ? "…" : "") + "\""
        if let r = msg.range(of: q) { msg.removeSubrange(r) }
        require(!sharesRun(msg, text, longerThan: 40), "error echoes more than 40 characters of the input: \(e.message.prefix(200).debugDescription)")
        // A condition on a PII field: its value is never shown.
        if let op = bad.firstIndex(where: { "=!<>".contains($0) }) {
            let name = bad[..<op].trimmingCharacters(in: .whitespaces)
            let value = bad[op...].drop(while: { "=!<>".contains($0) }).trimmingCharacters(in: .whitespaces)
            if schema.field(named: name)?.pii == true, value.count >= 4 {
                // Unless the value is a word of the message for a harmless value.
                var baseline = ""
                do { _ = try WhereParser.parse(name + "=QQQQ", schema: schema) } catch { baseline = "\(error)" }
                if !baseline.contains(value) {
                    require(!e.message.contains(value), "error shows the value of PII field \(name): \(e.message.prefix(200).debugDescription)")
                }
            }
        }
    } catch {
        fatalError("unexpected error type: \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let text = String(validating: UnsafeBufferPointer(start: data, count: size), as: UTF8.self) else { return 0 }
    check(text)
    return 0
}

/// `precondition` that keeps its message in an -O build (the crash log then says which property failed).
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { fatalError("property failed: \(message())", line: line) }
}
