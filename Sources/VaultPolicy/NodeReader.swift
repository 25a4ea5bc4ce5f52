import Yams

/// Typed, located access to a composed YAML tree; every failure is a ``PolicyDiagnostic``
/// carrying the file, the node's line and column, and the dotted field path.
struct NodeReader {
    let file: String

    func fail(_ node: Node?, _ path: String, _ reason: String) -> PolicyDiagnostic {
        PolicyDiagnostic(
            file: file, line: node?.mark?.line, column: node?.mark?.column,
            field: path.isEmpty ? nil : path, reason: reason)
    }

    static func join(_ base: String, _ key: String) -> String {
        base.isEmpty ? key : base + "." + key
    }

    /// A short description of what a node is, for "expected X, found Y" messages.
    static func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let s):
            if s.string.isEmpty && s.style == .plain { return "nothing" }
            let text = s.string.count > 40 ? String(s.string.prefix(40)) + "..." : s.string
            return "'\(text)'"
        }
    }

    /// A mapping's entries in file order, keyed by name.
    struct Entries {
        let node: Node
        let path: String
        let pairs: [(name: String, key: Node, value: Node)]

        subscript(_ name: String) -> Node? {
            pairs.first { $0.name == name }?.value
        }

        func keyNode(_ name: String) -> Node? {
            pairs.first { $0.name == name }?.key
        }
    }

    /// Reads a mapping whose keys are free-form names (fields, purposes, roles).
    func mapping(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> Entries {
        guard case .mapping(let mapping) = node else {
            throw fail(node, path, "expected a mapping, found \(Self.describe(node))")
        }
        var pairs: [(name: String, key: Node, value: Node)] = []
        pairs.reserveCapacity(mapping.count)
        for (key, value) in mapping {
            guard case .scalar(let s) = key, !s.string.isEmpty else {
                throw fail(key, path, "a mapping key must be a plain name, found \(Self.describe(key))")
            }
            pairs.append((s.string, key, value))
        }
        return Entries(node: node, path: path, pairs: pairs)
    }

    /// Reads a mapping with a fixed set of keys: unknown keys and missing required keys are errors.
    func object(
        _ node: Node, _ path: String, allowed: [String], required: [String]
    ) throws(PolicyDiagnostic) -> Entries {
        let entries = try mapping(node, path)
        for pair in entries.pairs where !allowed.contains(pair.name) {
            throw fail(
                pair.key, Self.join(path, pair.name),
                "unknown key '\(pair.name)' (expected one of: \(allowed.joined(separator: ", ")))")
        }
        for name in required where entries[name] == nil {
            throw fail(node, path, "missing required key '\(name)'")
        }
        return entries
    }

    func string(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> String {
        guard case .scalar(let s) = node, node.tagName == .str, !s.string.isEmpty else {
            throw fail(node, path, "expected a string, found \(Self.describe(node))")
        }
        return s.string
    }

    /// The raw text of any non-empty scalar (domain values, periods), whatever YAML would
    /// resolve it to (`no` stays the string "no").
    func scalarText(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> String {
        guard case .scalar(let s) = node, !s.string.isEmpty, node.tagName != .null else {
            throw fail(node, path, "expected a value, found \(Self.describe(node))")
        }
        return s.string
    }

    func int(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> Int {
        guard case .scalar = node, node.tagName == .int, let value = node.int else {
            throw fail(node, path, "expected an integer, found \(Self.describe(node))")
        }
        return value
    }

    func number(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> Double {
        guard case .scalar = node, node.tagName == .int || node.tagName == .float,
            let value = node.float
        else {
            throw fail(node, path, "expected a number, found \(Self.describe(node))")
        }
        guard value.isFinite else { throw fail(node, path, "expected a finite number, found \(Self.describe(node))") }
        return value
    }

    func bool(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> Bool {
        guard case .scalar = node, node.tagName == .bool, let value = node.bool else {
            throw fail(node, path, "expected true or false, found \(Self.describe(node))")
        }
        return value
    }

    func list(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> [Node] {
        guard case .sequence(let sequence) = node else {
            throw fail(node, path, "expected a list, found \(Self.describe(node))")
        }
        return Array(sequence)
    }

    /// A list of strings, each with its node (for locating later errors).
    func stringList(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> [(String, Node)] {
        var out: [(String, Node)] = []
        for (i, item) in try list(node, path).enumerated() {
            out.append((try string(item, path + "[\(i)]"), item))
        }
        return out
    }

    /// `[lo, hi]` with finite numbers and lo <= hi.
    func bounds(_ node: Node, _ path: String, integral: Bool) throws(PolicyDiagnostic) -> ClosedRange<Double> {
        guard case .sequence(let sequence) = node, sequence.count == 2 else {
            var found = Self.describe(node)
            if case .sequence(let sequence) = node { found = "a list of \(sequence.count)" }
            throw fail(node, path, "bounds must be a list [lo, hi] of two numbers, found \(found)")
        }
        let lo = try number(sequence[0], path + "[0]")
        let hi = try number(sequence[1], path + "[1]")
        guard lo <= hi else {
            throw fail(node, path, "bounds [lo, hi] need lo <= hi, found [\(formatNumber(lo)), \(formatNumber(hi))]")
        }
        let limit = 9_007_199_254_740_992.0  // 2^53: beyond it doubles skip integers
        guard abs(lo) <= limit, abs(hi) <= limit else {
            throw fail(node, path, "bounds must lie within +/-2^53")
        }
        if integral, lo.rounded() != lo || hi.rounded() != hi {
            throw fail(node, path, "bounds of an int value must be whole numbers")
        }
        return lo...hi
    }

    /// A period such as `30d` or `12h`, in seconds.
    func duration(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> (seconds: Int, text: String) {
        let text = try scalarText(node, path)
        let bytes = Array(text.utf8)
        let malformed = fail(
            node, path, "malformed period '\(text)' (expected a whole number of days or hours, e.g. 30d or 12h)")
        guard bytes.count >= 2, bytes.count <= 8 else { throw malformed }
        var n = 0
        for b in bytes.dropLast() {
            guard b >= 0x30, b <= 0x39 else { throw malformed }
            n = n * 10 + Int(b - 0x30)
        }
        guard n > 0 else { throw fail(node, path, "period '\(text)' must be longer than zero") }
        switch bytes.last {
        case UInt8(ascii: "d"): return (n * 86_400, text)
        case UInt8(ascii: "h"): return (n * 3_600, text)
        default: throw malformed
        }
    }

    func category(_ node: Node, _ path: String) throws(PolicyDiagnostic) -> String {
        let name = try string(node, path)
        guard Taxonomy.dataCategories.contains(name) else {
            throw fail(node, path, "unknown data category '\(name)'" + Self.suggestion(name, Taxonomy.dataCategories))
        }
        return name
    }

    /// "(did you mean 'x'?)" for a near miss: the known name at the smallest edit distance, if
    /// that distance is small (at most 2, or 3 for names of 12 characters or more).
    static func suggestion(_ name: String, _ known: Set<String>) -> String {
        let a = Array(name.utf8)
        let limit = a.count >= 12 ? 3 : 2
        var best: (String, Int)? = nil
        for candidate in known.sorted() {
            let b = Array(candidate.utf8)
            if abs(a.count - b.count) > limit { continue }
            let d = editDistance(a, b)
            if d <= limit, d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        guard let best else { return "" }
        return " (did you mean '\(best.0)'?)"
    }

    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...max(b.count, 1) where j <= b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    /// Field names: `^[A-Za-z][A-Za-z0-9_]{0,62}$`, so that a CSV export's own column names
    /// (`SeniorCitizen`, `MonthlyCharges`) need no renaming. They become quoted SQL column
    /// names; SQLite compares those without regard to case, so the loader refuses two fields
    /// that differ only by case.
    static func isFieldName(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 63, (first >= 0x61 && first <= 0x7A) || (first >= 0x41 && first <= 0x5A) else { return false }
        for b in u.dropFirst() {
            let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F
            if !ok { return false }
        }
        return true
    }

    func fieldName(_ name: String, _ keyNode: Node, _ path: String) throws(PolicyDiagnostic) {
        guard Self.isFieldName(name) else {
            throw fail(
                keyNode, path,
                "invalid field name '\(name)' (use letters, digits and _, starting with a letter, at most 63 characters)")
        }
    }

    /// Names that become SQL identifiers or CLI tokens: `^[a-z][a-z0-9_]{0,62}$`.
    static func isIdentifier(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 63, first >= 0x61, first <= 0x7A else { return false }
        for b in u.dropFirst() {
            let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x5F
            if !ok { return false }
        }
        return true
    }

    func identifier(_ name: String, _ keyNode: Node, _ path: String, what: String) throws(PolicyDiagnostic) {
        guard Self.isIdentifier(name) else {
            throw fail(
                keyNode, path,
                "invalid \(what) name '\(name)' (use lower-case letters, digits and _, starting with a letter, at most 63 characters)"
            )
        }
    }
}

/// Formats a bound or value without a useless ".0".
func formatNumber(_ x: Double) -> String {
    if x.rounded() == x, abs(x) < 1e15 { return String(Int64(x)) }
    return String(x)
}

extension Node {
    /// The resolved tag name (`Tag.name` itself is internal to Yams).
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
