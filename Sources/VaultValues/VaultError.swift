/// The one error type that crosses module boundaries above the crypto and policy layers.
///
/// `kind` is a closed set that maps one-to-one onto the CLI exit statuses of SPEC §8 (and 73 of SPEC §12); `message`
/// names the input (file, line, field) and the reason. A message never contains a PII value:
/// every place that builds one takes care to name fields, never to echo their contents.
///
/// Two forms of the reason: `message` is for the caller's terminal (the CLI's `error:` line),
/// which may quote a short value that is not personal data (a number typed into a number field,
/// a purpose name); `detail` is what is *recorded* (the audit entry's `status_detail`) and what
/// an HTTP client is told: it holds no input value at all and no directory of the server (a
/// path is cut to its last component). A thrower that quotes input in `message` passes a
/// `detail:` without it; otherwise `detail` is `message` with single-quoted segments replaced by
/// `(value)` and absolute paths cut to their file name (``redacted(_:)``).
public struct VaultError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// A command line that does not parse (exit 64).
        case usage
        /// Invalid input data: profile and event files, job files, JSON bodies (exit 65).
        case invalidInput
        /// An input file or a subject that does not exist (exit 66).
        case notFound
        /// Denied by policy: role, purpose, consent, budget (exit 77).
        case denied
        /// Schema, policy or keyring problems; a store that cannot be opened as configured (exit 78).
        case configuration
        /// A ciphertext or the audit chain does not verify; a keyring that does not match (exit 1).
        case integrity
        /// An output file could not be created: it exists (without --force), it is a protected
        /// file (keyring, store, tokens, policy), or the system refused (exit 73, SPEC §12).
        case cannotCreate
        /// Anything else: I/O and SQLite failures (exit 1 as well, but reported differently).
        case internalFailure
    }

    public let kind: Kind
    public let message: String
    /// The reason without any input value or server directory: for the audit log and HTTP answers.
    public let detail: String

    public init(_ kind: Kind, _ message: String, detail: String? = nil) {
        self.kind = kind
        self.message = message
        self.detail = Self.redacted(detail ?? message)
    }

    /// `text` with each single-quoted segment (`'...'`, how messages quote an input value)
    /// replaced by `(value)`, and each absolute path (a `/` at the start of a word, up to a
    /// space, `:`, `,`, `)` or `"`) cut to its last component.
    public static func redacted(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        var chars = Array(text)
        var i = 0
        // A quote that opens a segment: at the start or after a space, `(`, `=` or `:`; a quote
        // inside a word (an apostrophe: "subject's") is kept.
        func opensQuote(_ k: Int) -> Bool { k == 0 || " (=:\"".contains(chars[k - 1]) }
        while i < chars.count {
            let c = chars[i]
            if c == "'", opensQuote(i) {
                if let close = chars[(i + 1)...].firstIndex(of: "'") {
                    out += "(value)"
                    i = close + 1
                    continue
                }
                // An unclosed quote: everything after it may be the value.
                out += "(value)"
                break
            }
            if c == "/", i == 0 || " (\"=".contains(chars[i - 1]) {
                var end = i
                while end < chars.count, !" :,)\"".contains(chars[end]) { end += 1 }
                let path = chars[i..<end]
                let last = path.split(separator: "/").last.map { String($0) } ?? ""
                out += last.isEmpty ? "(path)" : last
                i = end
                continue
            }
            out.append(c)
            i += 1
        }
        chars.removeAll()
        return out
    }

    public var description: String { message }

    /// The exit status of SPEC §8 for this error.
    public var exitCode: Int32 {
        switch kind {
        case .usage: 64
        case .invalidInput: 65
        case .notFound: 66
        case .denied: 77
        case .configuration: 78
        case .cannotCreate: 73
        case .integrity, .internalFailure: 1
        }
    }
}
