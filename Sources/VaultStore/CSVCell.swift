/// One cell of a CSV file the product writes (the audit export's CSV, the rejects file), made
/// safe to open in a spreadsheet: a formula-injection guard, then CSV quoting.
///
/// - A cell whose first character (after any leading spaces) is `=`, `+`, `-`, `@`, a tab, a
///   carriage return, or one of the full-width forms `＝ ＋ － ＠`, is prefixed with `'`, so a
///   spreadsheet shows it as text instead of evaluating it (`=HYPERLINK(...)` becomes
///   `'=HYPERLINK(...)`).
/// - Exception: a cell that is entirely a decimal number (`-5`, `+1.5`, `-2.5e-3`) is left
///   alone: it cannot be a formula, and `'-5` would turn a number into text. `-1+1`, `+1 2` or
///   `-5)` are not numbers and get the prefix.
/// - Control characters (U+0000–U+001F except tab, U+007F, U+0080–U+009F) are written as the
///   six characters `\u00XX` (lower-case hex): no NUL, carriage return or line feed reaches the
///   file. A tab inside a cell is kept. Backslashes are not escaped: the CSV is a view for
///   people; the JSON Lines export is the exact, verifiable form of the audit log.
/// - Then the cell is quoted (`"..."`, inner quotes doubled) when it holds a comma, a quote or
///   begins or ends with a space, or always with `alwaysQuote`.
public enum CSVCell {
    public static func field(_ text: String, alwaysQuote: Bool = false) -> String {
        var cell = escapeControls(text)
        if needsPrefix(cell) { cell = "'" + cell }
        let quote = alwaysQuote || cell.contains(",") || cell.contains("\"") || cell.hasPrefix(" ") || cell.hasSuffix(" ")
        return quote ? "\"" + cell.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : cell
    }

    /// A CSV line (no line terminator) of the cells, each through ``field(_:alwaysQuote:)``.
    public static func row(_ cells: [String], alwaysQuote: Bool = false) -> String {
        cells.map { field($0, alwaysQuote: alwaysQuote) }.joined(separator: ",")
    }

    /// Whether a spreadsheet could read the cell as a formula.
    static func needsPrefix(_ cell: String) -> Bool {
        guard let first = cell.unicodeScalars.first(where: { $0 != " " }) else { return false }
        switch first {
        case "=", "+", "-", "@", "\t", "\r", "\u{FF1D}", "\u{FF0B}", "\u{FF0D}", "\u{FF20}":
            return !isNumber(cell)
        default:
            return false
        }
    }

    /// `[+-]?(digits[.digits*]|.digits)([eE][+-]?digits)?`, nothing else (no spaces).
    static func isNumber(_ cell: String) -> Bool {
        var s = cell.unicodeScalars[...]
        func digits() -> Int {
            var n = 0
            while let c = s.first, c >= "0" && c <= "9" { s.removeFirst(); n += 1 }
            return n
        }
        if let c = s.first, c == "+" || c == "-" { s.removeFirst() }
        var mantissa = digits()
        if s.first == "." {
            s.removeFirst()
            mantissa += digits()
        }
        guard mantissa > 0 else { return false }
        if let c = s.first, c == "e" || c == "E" {
            s.removeFirst()
            if let c = s.first, c == "+" || c == "-" { s.removeFirst() }
            guard digits() > 0 else { return false }
        }
        return s.isEmpty
    }

    static func escapeControls(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isEscaped) else { return text }
        var out = String.UnicodeScalarView()
        let digits = Array("0123456789abcdef".unicodeScalars)
        for u in text.unicodeScalars {
            if isEscaped(u) {
                out.append(contentsOf: "\\u00".unicodeScalars)
                out.append(digits[Int(u.value >> 4)])
                out.append(digits[Int(u.value & 15)])
            } else {
                out.append(u)
            }
        }
        return String(out)
    }

    static func isEscaped(_ u: Unicode.Scalar) -> Bool {
        (u.value < 0x20 && u != "\t") || (u.value >= 0x7F && u.value <= 0x9F)
    }
}
