/// The one error type that crosses module boundaries above the crypto and policy layers.
///
/// `kind` is a closed set that maps one-to-one onto the CLI exit statuses of SPEC §8 (and 73 of SPEC §12); `message`
/// names the input (file, line, field) and the reason. A message never contains a PII value:
/// every place that builds one takes care to name fields, never to echo their contents.
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

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
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
