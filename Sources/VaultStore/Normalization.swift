public import VaultPolicy

/// Normalisation of identifiers before they are keyed (pseudonyms, blind indexes).
///
/// Two spellings that a human would call the same value must produce the same key, or a lookup
/// misses and an erased customer could be re-imported as a new one.
public enum Normalization {
    /// Customer IDs: surrounding whitespace removed; otherwise exact (IDs are case-sensitive).
    public static func customerID(_ raw: String) -> String {
        trimmed(raw)
    }

    /// E-mail addresses: trimmed and lower-cased.
    public static func email(_ raw: String) -> String {
        trimmed(raw).lowercased()
    }

    /// Phone numbers: digits only (`+49 (30) 123-45` becomes `493012345`).
    public static func phone(_ raw: String) -> String {
        String(String.UnicodeScalarView(raw.unicodeScalars.filter { $0.value >= 48 && $0.value <= 57 }))
    }

    /// The blind-index normalisation of a lookup field, chosen by its data category.
    public static func lookupValue(_ raw: String, for field: FieldSpec) -> String {
        if Taxonomy.covers("user.contact.email", field.category) { return email(raw) }
        if Taxonomy.covers("user.contact.phone_number", field.category) { return phone(raw) }
        return trimmed(raw)
    }

    package static func trimmed(_ raw: String) -> String {
        let scalars = raw.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isSpace($0) })!
        return String(scalars[first...last])
    }

    private static func isSpace(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s == "\u{0B}" || s == "\u{0C}"
    }
}
