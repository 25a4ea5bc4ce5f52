import Foundation
import Yams

/// A YAML configuration file read into memory, with the checks that come before parsing
/// (size, UTF-8, tab indentation) and a mapping of Yams' errors to ``PolicyDiagnostic``.
struct YAMLSource {
    let file: String
    let text: String

    /// Largest configuration file accepted.
    static let maxBytes = 4 << 20

    static func read(path: String) throws(PolicyDiagnostic) -> YAMLSource {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw PolicyDiagnostic(file: path, reason: "file not found")
        }
        if isDirectory.boolValue {
            throw PolicyDiagnostic(file: path, reason: "is a directory, expected a YAML file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PolicyDiagnostic(file: path, reason: "file cannot be read (check its permissions)")
        }
        if data.count > maxBytes {
            throw PolicyDiagnostic(file: path, reason: "file is larger than \(maxBytes) bytes")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw PolicyDiagnostic(file: path, reason: "file is not valid UTF-8")
        }
        return YAMLSource(file: path, text: text)
    }

    /// Rejects a line whose indentation contains a tab (YAML forbids tabs there, and libyaml's
    /// own message for it is obscure).
    func checkTabs() throws(PolicyDiagnostic) {
        var line = 1
        var column = 1
        var inIndent = true
        var tabColumn: Int? = nil
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n":
                line += 1
                column = 1
                inIndent = true
                tabColumn = nil
                continue
            case "\t" where inIndent:
                if tabColumn == nil { tabColumn = column }
            case " " where inIndent, "\r" where inIndent:
                break
            default:
                if inIndent, let tabColumn {
                    throw PolicyDiagnostic(
                        file: file, line: line, column: tabColumn,
                        reason: "tab character used for indentation (indent with spaces)")
                }
                inIndent = false
            }
            column += 1
        }
    }

    /// Parses the single document of the file.
    func compose() throws(PolicyDiagnostic) -> Node {
        try checkTabs()
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw diagnostic(for: error)
        } catch {
            throw PolicyDiagnostic(file: file, reason: "YAML error: \(error)")
        }
        guard let root else {
            throw PolicyDiagnostic(file: file, line: 1, reason: "the file is empty; expected a mapping")
        }
        return root
    }

    private func diagnostic(for error: YamlError) -> PolicyDiagnostic {
        func withContext(_ problem: String, _ context: YamlError.Context?) -> String {
            guard let context, !context.text.isEmpty else { return problem }
            return "\(problem) (\(context.text) at line \(context.mark.line))"
        }
        switch error {
        case let .scanner(context, problem, mark, _),
            let .parser(context, problem, mark, _),
            let .composer(context, problem, mark, _):
            return PolicyDiagnostic(
                file: file, line: mark.line, column: mark.column,
                reason: "YAML syntax error: " + withContext(problem, context))
        case let .reader(problem, offset, _, _):
            var line: Int? = nil
            if let offset {
                let prefix = text.prefix(offset)
                line = prefix.reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
            }
            return PolicyDiagnostic(file: file, line: line, reason: "YAML reader error: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return duplicateDiagnostic(key: duplicates.first ?? "?", first: context.mark)
        default:
            return PolicyDiagnostic(file: file, reason: "YAML error: \(error)")
        }
    }

    // MARK: Duplicate keys

    /// Yams reports a duplicate key at its *first* occurrence; find the second one (the line the
    /// user has to fix) and its path, by scanning the text and re-parsing with it renamed.
    private func duplicateDiagnostic(key: String, first: Mark) -> PolicyDiagnostic {
        // Yams (libyaml) breaks lines at LF, CR and CRLF: so must this scan, or line numbers and
        // columns from its marks point past the end of a line.
        let normalized = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        let lines = normalized.split(separator: "\n", omittingEmptySubsequences: false).map { Array($0.unicodeScalars) }
        let keyScalars = Array(key.unicodeScalars)
        let second = Self.findSecondOccurrence(
            of: keyScalars, lines: lines, firstLine: first.line - 1, firstColumn: first.column - 1)
        guard let (line, column, length) = second else {
            return PolicyDiagnostic(
                file: file, line: first.line, column: first.column,
                reason: "duplicate key '\(key)' in this mapping")
        }
        // Rename the second occurrence and parse again to learn its path.
        var path: String? = nil
        var patched = lines
        patched[line].replaceSubrange(column..<(column + length), with: Array("\(key)__pv_duplicate__".unicodeScalars))
        let patchedText = patched.map { String(String.UnicodeScalarView($0)) }.joined(separator: "\n")
        if let root = try? Yams.compose(yaml: patchedText) {
            path = Self.keyPath(in: root, line: line + 1, column: column + 1, base: "").map {
                $0.hasSuffix("__pv_duplicate__") ? String($0.dropLast("__pv_duplicate__".count)) : $0
            }
        }
        return PolicyDiagnostic(
            file: file, line: line + 1, column: column + 1, field: path,
            reason: "duplicate key '\(key)' (first defined at line \(first.line))")
    }

    /// Returns (0-based line, 0-based column, token length) of the next key equal to `key` in the
    /// same mapping as the occurrence at (firstLine, firstColumn).
    static func findSecondOccurrence(
        of key: [Unicode.Scalar], lines: [[Unicode.Scalar]], firstLine: Int, firstColumn: Int
    ) -> (Int, Int, Int)? {
        guard firstLine >= 0, firstLine < lines.count, firstColumn >= 0, firstColumn <= lines[firstLine].count else { return nil }
        let firstText = lines[firstLine]
        // Flow mapping if the token is preceded by `{` or `,` on its line.
        var k = firstColumn - 1
        while k >= 0, firstText[k] == " " { k -= 1 }
        let isFlow = k >= 0 && (firstText[k] == "{" || firstText[k] == ",")

        func keyLength(at line: [Unicode.Scalar], _ col: Int) -> Int? {
            var candidates: [[Unicode.Scalar]] = [key]
            candidates.append(["\""] + key + ["\""])
            candidates.append(["'"] + key + ["'"])
            for c in candidates where col + c.count <= line.count && Array(line[col..<(col + c.count)]) == c {
                var j = col + c.count
                while j < line.count, line[j] == " " { j += 1 }
                if j < line.count, line[j] == ":" { return c.count }
            }
            return nil
        }

        if isFlow {
            var depth = 0
            var quote: Unicode.Scalar? = nil
            var line = firstLine
            var col = firstColumn + key.count
            var afterComma = false
            while line < lines.count {
                let text = lines[line]
                while col < text.count {
                    let c = text[col]
                    if let q = quote {
                        if c == q { quote = nil }
                        col += 1
                        continue
                    }
                    if afterComma, c != " " {
                        afterComma = false
                        if depth == 0, let len = keyLength(at: text, col) { return (line, col, len) }
                    }
                    switch c {
                    case "\"", "'": quote = c
                    case "{", "[": depth += 1
                    case "}", "]":
                        depth -= 1
                        if depth < 0 { return nil }
                    case ",": afterComma = true
                    case "#": col = text.count; continue
                    default: break
                    }
                    col += 1
                }
                line += 1
                col = 0
            }
            return nil
        }

        // Block mapping: a later line whose content starts at the same column.
        for line in (firstLine + 1)..<lines.count {
            let text = lines[line]
            var col = 0
            while col < text.count, text[col] == " " { col += 1 }
            if col >= text.count || text[col] == "#" || text[col] == "\r" { continue }
            if col < firstColumn { return nil }
            if col == firstColumn, let len = keyLength(at: text, col) { return (line, col, len) }
        }
        return nil
    }

    /// The dotted path of the mapping key at (line, column), both 1-based.
    static func keyPath(in node: Node, line: Int, column: Int, base: String) -> String? {
        switch node {
        case .mapping(let mapping):
            for (key, value) in mapping {
                let name = key.scalar?.string ?? "?"
                let path = base.isEmpty ? name : base + "." + name
                if let mark = key.mark, mark.line == line, mark.column == column { return path }
                if let found = keyPath(in: value, line: line, column: column, base: path) { return found }
            }
        case .sequence(let sequence):
            for (i, item) in sequence.enumerated() {
                if let found = keyPath(in: item, line: line, column: column, base: base + "[\(i)]") {
                    return found
                }
            }
        default:
            break
        }
        return nil
    }
}
