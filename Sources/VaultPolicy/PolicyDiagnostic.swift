/// A problem found in a schema or policy file, located by file, line and field path.
///
/// Callers map it to exit status 78 (configuration error). The description has the form
/// `<file>:<line>: <field>: <reason>`; parts that are unknown are left out. It may quote the
/// offending YAML token (these are configuration files, not personal data) but never a secret.
public struct PolicyDiagnostic: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file the problem was found in, as given to the loader.
    public let file: String
    /// The 1-based line of the problem, when known.
    public let line: Int?
    /// The 1-based column (in Unicode scalars) of the problem, when known.
    public let column: Int?
    /// The dotted path of the offending key, e.g. `fields.age.bounds` or `retention[1].after`.
    public let field: String?
    /// A human-readable reason, starting in lower case.
    public let reason: String

    /// Creates a diagnostic.
    public init(file: String, line: Int? = nil, column: Int? = nil, field: String? = nil, reason: String) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.reason = reason
    }

    /// `<file>:<line>: <field>: <reason>`.
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let field, !field.isEmpty { text += "\(field): " }
        text += reason
        return text
    }
}
