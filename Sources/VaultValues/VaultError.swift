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
        /// A service the operation needs is not there right now and may come back: the PKCS#11
        /// token that seals the keyring (exit 69, EX_UNAVAILABLE; HTTP 503).
        case unavailable
    }

    /// Where in the input the problem is: a file's line or an in-memory record, and a field.
    /// The HTTP service sends it as the answer's `location` object, so a client finds the
    /// failing record and field without parsing text.
    public struct Location: Sendable, Equatable {
        /// The input file as given; nil for input held in memory (an HTTP body).
        public var file: String?
        /// The line of `file`, or the record's number (from 1) in memory.
        public var line: Int?
        public var field: String?

        public init(file: String?, line: Int?, field: String?) {
            self.file = file.flatMap { $0.isEmpty ? nil : $0 }
            self.line = line
            self.field = field
        }

        /// `FILE:LINE: field F`, `record N: field F` (with `fileName`, the file's last path
        /// component only, for what is recorded and sent).
        func text(fileName: Bool) -> String {
            var at: String
            if let file {
                at = fileName ? (file.split(separator: "/").last.map(String.init) ?? file) : file
                if let line { at += ":\(line)" }
            } else if let line {
                at = "record \(line)"
            } else {
                at = ""
            }
            if let field { at += at.isEmpty ? "field \(field)" : ": field \(field)" }
            return at
        }
    }

    public let kind: Kind
    public let message: String
    /// The reason without any input value or server directory: for the audit log and HTTP answers.
    public let detail: String
    /// Where in the input, when the thrower knew it as a structure (ingest records, job and
    /// policy files); nil otherwise (`message` may still name a place in its text).
    public let location: Location?
    /// The reason alone, without the location and without any input value.
    public let reason: String

    public init(_ kind: Kind, _ message: String, detail: String? = nil) {
        self.kind = kind
        self.message = message
        self.detail = Self.redacted(detail ?? message)
        self.location = nil
        self.reason = self.detail
    }

    private init(kind: Kind, message: String, detail: String, location: Location?, reason: String) {
        self.kind = kind
        self.message = message
        self.detail = detail
        self.location = location
        self.reason = reason
    }

    /// This error with each of `values` (request input that may be personal data) replaced by
    /// `(value)` in every text, longest first; values shorter than four characters are left
    /// alone (they would garble the text and identify no one). The location is kept.
    public func removing(values: [String]) -> VaultError {
        var m = message, d = detail, r = reason
        for v in values.sorted(by: { $0.count > $1.count }) where v.count >= 4 {
            m = m.replacingOccurrences(of: v, with: "(value)")
            d = d.replacingOccurrences(of: v, with: "(value)")
            r = r.replacingOccurrences(of: v, with: "(value)")
        }
        return VaultError(kind: kind, message: m, detail: d, location: location, reason: r)
    }

    /// An error at a place in the input. `reason` holds no input value; `shownReason` (the
    /// caller's terminal only) may quote a short value that is not personal data, as
    /// `message` always could. The input value itself is never kept: what is recorded and
    /// sent is built from `location` and `reason` alone.
    public init(_ kind: Kind, reason: String, shownReason: String? = nil, at location: Location) {
        self.kind = kind
        self.location = location
        self.reason = Self.redacted(reason)
        let at = location.text(fileName: false), atName = location.text(fileName: true)
        self.message = at.isEmpty ? (shownReason ?? reason) : "\(at): \(shownReason ?? reason)"
        self.detail = atName.isEmpty ? self.reason : "\(atName): \(self.reason)"
    }

    /// An error whose `message` is already written (a diagnostic's own form, such as
    /// `FILE:LINE: field: reason`), at a known place. `reason` holds no input value; the
    /// recorded `detail` is `message` redacted, as for any error.
    public init(_ kind: Kind, _ message: String, reason: String, at location: Location) {
        self.kind = kind
        self.location = location
        self.message = message
        self.detail = Self.redacted(message)
        self.reason = Self.redacted(reason)
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

    /// Two errors are equal when they say the same: kind, message and detail (the structured
    /// `location` and `reason` are derived from the same words).
    public static func == (a: VaultError, b: VaultError) -> Bool {
        a.kind == b.kind && a.message == b.message && a.detail == b.detail
    }

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
        case .unavailable: 69
        }
    }
}
