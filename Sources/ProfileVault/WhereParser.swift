import Foundation
public import DifferentialPrivacy
public import VaultPolicy
import VaultStore

/// The `--where` parser of DP queries (`query --where`, the `where` of `POST /v1/queries`).
///
/// It needs only the schema (VaultPolicy), `WhereCondition` (DifferentialPrivacy) and
/// `VaultError` (VaultStore), so the libFuzzer target `fuzz/targets/where.swift` compiles it
/// without the rest of ProfileVault.
public enum WhereParser {
    /// Parses `--where`: comma-separated conditions joined by AND, `attr OP value` with OP one of
    /// `= != < <= > >=`, e.g. `country=DE,age>=30,age<50`. A malformed condition or unknown
    /// attribute is a usage error (exit 64); a PII field is refused by policy (exit 77), before
    /// anything else about its condition is checked, so the message never shows its value.
    ///
    /// Messages quote the failing condition cut to `quotedLimit` Unicode scalars, and any other
    /// piece of the input (an unknown name, a value) cut to `shownLimit`: a huge `--where` is
    /// never echoed whole. A category value must be one of the domain's byte for byte, as at
    /// ingest (a differently normalised spelling would compare unequal in SQL).
    public static func parse(_ text: String, schema: Schema) throws -> [WhereCondition] {
        var out: [WhereCondition] = []
        for (n, raw) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let cond = raw.trimmingCharacters(in: .whitespaces)
            guard !cond.isEmpty else {
                throw VaultError(.usage, "--where: condition \(n + 1) is empty (two commas in a row, or a comma at the start or end)")
            }
            let quoted = "--where condition \"\(cut(cond, quotedLimit))\""
            // What is recorded (the audit entry) and told HTTP clients: the condition's number,
            // never its text.
            let at = "--where condition \(n + 1)"
            guard let opStart = cond.firstIndex(where: { "=!<>".contains($0) }) else {
                throw VaultError(.usage, "\(quoted): expected attribute, operator (= != < <= > >=) and value", detail: "\(at): expected attribute, operator (= != < <= > >=) and value")
            }
            let name = cond[..<opStart].trimmingCharacters(in: .whitespaces)
            let field = schema.field(named: name)
            if let field, field.pii { throw VaultError(.denied, "--where \(field.name): PII fields are never used in aggregates") }
            if name == schema.subjectIDField {
                throw VaultError(.denied, "--where \(name): the customer ID is PII; PII fields are never used in aggregates")
            }
            var rest = cond[opStart...]
            let op: WhereCondition.Op
            if let o = [WhereCondition.Op.le, .ge, .ne].first(where: { rest.hasPrefix($0.rawValue) }) { op = o } else if let o = [WhereCondition.Op.eq, .lt, .gt].first(where: { rest.hasPrefix($0.rawValue) }) { op = o } else {
                throw VaultError(.usage, "\(quoted): unknown operator", detail: "\(at): unknown operator")
            }
            rest = rest.dropFirst(op.rawValue.count)
            let valueText = rest.trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, !valueText.isEmpty, !valueText.contains(where: { "=!<>".contains($0) }) else {
                throw VaultError(.usage, "\(quoted): expected attribute, operator (= != < <= > >=) and value", detail: "\(at): expected attribute, operator (= != < <= > >=) and value")
            }
            guard let field else {
                throw VaultError(.usage, "\(quoted): \(cut(name, shownLimit)) is not a field of the schema", detail: "\(at): not a field of the schema")
            }
            let value: WhereCondition.Value
            switch field.type {
            case .int:
                guard let i = Int64(valueText) else { throw VaultError(.usage, "\(quoted): \(field.name) is an integer", detail: "\(at): \(field.name) is an integer") }
                value = .int(i)
            case .float:
                guard let d = Double(valueText), d.isFinite else { throw VaultError(.usage, "\(quoted): \(field.name) is a number", detail: "\(at): \(field.name) is a number") }
                value = .real(d)
            case .bool:
                guard let b = ["true": 1, "false": 0, "1": 1, "0": 0][valueText.lowercased()] else { throw VaultError(.usage, "\(quoted): \(field.name) is true or false", detail: "\(at): \(field.name) is true or false") }
                value = .int(Int64(b))
            case .date:
                guard let d = DateParsing.days(fromISODate: Substring(valueText)) else { throw VaultError(.usage, "\(quoted): \(field.name) is a date YYYY-MM-DD", detail: "\(at): \(field.name) is a date YYYY-MM-DD") }
                value = .int(Int64(d))
            case .category:
                guard let v = field.domain?.first(where: { $0.utf8.elementsEqual(valueText.utf8) }) else {
                    throw VaultError(.usage, "\(quoted): \(cut(valueText, shownLimit)) is not in the domain of \(field.name) (\(field.domain?.joined(separator: ", ") ?? ""))", detail: "\(at): value is not in the domain of \(field.name) (\(field.domain?.joined(separator: ", ") ?? ""))")
                }
                if op != .eq && op != .ne { throw VaultError(.usage, "\(quoted): a category compares with = or != only", detail: "\(at): a category compares with = or != only") }
                value = .text(v)
            case .string:
                value = .text(valueText)
            }
            out.append(WhereCondition(attribute: field.name, op: op, value: value))
        }
        return out
    }

    /// How much of the failing condition a message quotes, in Unicode scalars.
    static let quotedLimit = 64
    /// How much of any other piece of the input (a name, a value) a message shows.
    static let shownLimit = 32

    /// `text` cut to `limit` Unicode scalars, with an ellipsis when cut. Scalars, not
    /// characters: one character can hold any number of combining marks.
    static func cut(_ text: some StringProtocol, _ limit: Int) -> String {
        let scalars = text.unicodeScalars
        guard scalars.count > limit else { return String(text) }
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars.prefix(limit))
        return String(s) + "…"
    }
}
