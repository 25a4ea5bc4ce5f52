public import VaultValues
import PostgresNIO

/// The error every VaultPostgres operation throws. `kind` mirrors `VaultError.Kind` (same names,
/// same exit statuses) so the Vault maps it one to one when the engine is wired in; `message`
/// names what failed and why, and never holds a password nor a value bound to a statement
/// (``PostgresStoreError/server(_:_:)`` keeps only the server's SQLSTATE and primary message,
/// never its DETAIL line, which may quote a row's values).
public struct PostgresStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case usage, invalidInput, notFound, denied, configuration, integrity, internalFailure
    }

    public let kind: Kind
    public let message: String
    /// The server's SQLSTATE when the error came from PostgreSQL (`42501`: permission denied).
    public let sqlState: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
    }

    public var description: String { message }

    /// The exit status of SPEC §8 for this error (as `VaultError.exitCode`).
    public var exitCode: Int32 { vaultError.exitCode }

    /// Wraps anything PostgresNIO throws: `what` says which operation failed. A server error keeps
    /// its SQLSTATE and primary message (insufficient privilege becomes `denied`); a connection
    /// error says so (configuration: the location, the password or the server is wrong). The
    /// query text and its bound values, which `PSQLError` carries, are never rendered.
    static func wrap(_ error: any Error, _ what: String) -> PostgresStoreError {
        if let e = error as? PostgresStoreError { return e }
        if let e = error as? PSQLError {
            if let info = e.serverInfo {
                let state = info[.sqlState]
                let message = info[.message] ?? "server error"
                let kind: Kind = switch state {
                case "42501": .denied                       // insufficient_privilege
                case "28000", "28P01", "3D000": .configuration // authorization, password, no such database
                case "23503": .notFound                     // foreign_key_violation: a subject erased meanwhile
                default: .internalFailure
                }
                return PostgresStoreError(kind, "\(what): PostgreSQL refused it (\(state ?? "?")): \(message)", sqlState: state)
            }
            switch e.code {
            case .connectionError, .sslUnsupported, .failedToAddSSLHandler, .authMechanismRequiresPassword,
                 .unsupportedAuthMechanism, .saslError, .serverClosedConnection, .poolClosed:
                return PostgresStoreError(.configuration, "\(what): cannot talk to the PostgreSQL server (\(e.code))")
            default:
                return PostgresStoreError(.internalFailure, "\(what): PostgreSQL client error (\(e.code))")
            }
        }
        // The pool's own error (its module is not imported here): it gave up connecting.
        if String(describing: type(of: error)) == "ConnectionPoolError" {
            return PostgresStoreError(.configuration, "\(what): no connection to the PostgreSQL server could be made (\(error)); check the location, the password and the server")
        }
        if let e = error as? PostgresDecodingError {
            return PostgresStoreError(.integrity, "\(what): a column holds a value of another type than the schema's (\(e.code)): the database was edited")
        }
        return PostgresStoreError(.internalFailure, "\(what): \(type(of: error))")
    }
}


extension PostgresStoreError {
    /// The same error as the gate's `VaultError` (same kind, same message, which never holds a
    /// bound value): what the synchronous ``PostgresProfiles`` methods throw, as the SQLite
    /// engine does.
    public var vaultError: VaultError {
        let k: VaultError.Kind = switch kind {
        case .usage: .usage
        case .invalidInput: .invalidInput
        case .notFound: .notFound
        case .denied: .denied
        case .configuration: .configuration
        case .integrity: .integrity
        case .internalFailure: .internalFailure
        }
        return VaultError(k, message)
    }

    /// Any error of an engine operation as a `VaultError`.
    static func vaultError(_ error: any Error, _ what: String) -> VaultError {
        if let e = error as? VaultError { return e }
        return wrap(error, what).vaultError
    }
}
