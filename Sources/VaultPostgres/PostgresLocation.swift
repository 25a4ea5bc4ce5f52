import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a PostgreSQL store lives: `postgres://user@host:port/db?sslmode=...` (or
/// `postgresql://`), as libpq reads a connection URI, without the password.
///
/// A password inside the URL is refused: a URL ends up in shell histories, `ps` listings,
/// service files and logs. The password comes from `PGPASSWORD` or a passfile
/// (``PostgresLocation/password(environment:)``), as libpq takes it. So a location never holds
/// a secret and its ``description`` is the URL itself.
///
/// Query parameters: `sslmode` (`disable`, `prefer` (libpq's default), `require`, `verify-ca`,
/// `verify-full`), `sslrootcert` (a PEM file of trusted roots for `verify-ca`/`verify-full`;
/// the system's roots otherwise), `host` (a directory starting with `/` is a unix-socket
/// directory, as in libpq: the socket is `DIR/.s.PGSQL.PORT`; any other value replaces the
/// host), `port`, and `application_name`. Any other parameter is refused (a misspelt
/// `sslmode` must not silently mean "prefer").
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        /// A unix-socket directory (`?host=/path`): the socket file is `/path/.s.PGSQL.port`.
        case unixSocket(directory: String, port: Int)
    }

    public var user: String
    public var database: String
    public var endpoint: Endpoint
    public var sslMode: SSLMode
    public var sslRootCert: String?
    public var applicationName: String?

    /// libpq's default socket directory on Debian, used when the URL names no host at all.
    public static let defaultSocketDirectory = "/var/run/postgresql"

    public init(user: String, database: String, endpoint: Endpoint, sslMode: SSLMode = .prefer,
                sslRootCert: String? = nil, applicationName: String? = nil) {
        self.user = user
        self.database = database
        self.endpoint = endpoint
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
        self.applicationName = applicationName
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable, Equatable {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// True when `text` looks like a PostgreSQL location (so `--store` can tell it from a path).
    public static func isPostgresURL(_ text: String) -> Bool {
        let lower = text.lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    public var port: Int {
        switch endpoint {
        case .tcp(_, let p), .unixSocket(_, let p): p
        }
    }

    /// The host as libpq and a passfile name it: the TCP host, or the socket directory
    /// (`localhost` for the default socket directory, as libpq matches passfile lines).
    var passfileHost: [String] {
        switch endpoint {
        case .tcp(let h, _): [h]
        case .unixSocket(let d, _): d == Self.defaultSocketDirectory ? ["localhost", d] : [d]
        }
    }

    /// The socket file of a unix-socket endpoint.
    public var socketPath: String? {
        if case .unixSocket(let d, let p) = endpoint { return (d.hasSuffix("/") ? d : d + "/") + ".s.PGSQL.\(p)" }
        return nil
    }

    /// The URL again, canonical; there is no password to redact.
    public var description: String {
        var s = "postgres://\(Self.escape(user))@"
        var params: [String] = []
        switch endpoint {
        case .tcp(let h, let p):
            s += (h.contains(":") ? "[\(h)]" : h) + ":\(p)"
        case .unixSocket(let d, let p):
            s += ":\(p)"
            params.append("host=\(Self.escape(d, keepSlash: true))")
        }
        s += "/\(Self.escape(database))"
        params.append("sslmode=\(sslMode.rawValue)")
        if let sslRootCert { params.append("sslrootcert=\(Self.escape(sslRootCert, keepSlash: true))") }
        if let applicationName { params.append("application_name=\(Self.escape(applicationName))") }
        return s + "?" + params.joined(separator: "&")
    }

    static func escape(_ s: String, keepSlash: Bool = false) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        if keepSlash { allowed.insert("/") }
        var out = ""
        for scalar in s.unicodeScalars {
            if scalar.isASCII && allowed.contains(scalar) { out.unicodeScalars.append(scalar) } else {
                for b in String(scalar).utf8 { out += String(format: "%%%02X", b) }
            }
        }
        return out
    }

    /// Parses a location. Errors name the part that is wrong and never repeat a password.
    public init(parsing text: String) throws(Invalid) {
        guard text.utf8.count <= 4096 else { throw Invalid("the PostgreSQL URL is longer than 4096 bytes") }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw Invalid("the PostgreSQL URL holds a control character")
        }
        var rest: Substring
        let lower = text.lowercased()
        if lower.hasPrefix("postgres://") { rest = text.dropFirst("postgres://".count) }
        else if lower.hasPrefix("postgresql://") { rest = text.dropFirst("postgresql://".count) }
        else { throw Invalid("a PostgreSQL location starts with postgres:// or postgresql://") }
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        // The authority: [user[:password]@]host[:port]. The last "@" separates the user info
        // (a password may contain "@"; it is refused either way).
        var hostPort = rest
        var userText: Substring?
        if let at = rest.lastIndex(of: "@") {
            let info = rest[..<at]
            hostPort = rest[rest.index(after: at)...]
            if info.contains(":") {
                throw Invalid("the PostgreSQL URL holds a password; remove it and set PGPASSWORD or use a passfile (~/.pgpass or PGPASSFILE) instead")
            }
            userText = info
        }
        guard let userText, !userText.isEmpty else {
            throw Invalid("the PostgreSQL URL names no user (postgres://USER@host/db)")
        }
        let user = try Self.decode(userText, "the user name")
        var host = ""
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw Invalid("the PostgreSQL URL's IPv6 host has no closing ]") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw Invalid("the PostgreSQL URL has text after its IPv6 host") }
                portText = after.dropFirst()
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw Invalid("the PostgreSQL URL's IPv6 host is not an address")
            }
        } else {
            if let colon = hostPort.firstIndex(of: ":") {
                portText = hostPort[hostPort.index(after: colon)...]
                hostPort = hostPort[..<colon]
            }
            host = try Self.decode(hostPort, "the host")
            guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else {
                throw Invalid("the PostgreSQL URL's host is not a host name or address")
            }
        }
        var port = 5432
        if let portText { port = try Self.port(portText) }
        guard !path.isEmpty else { throw Invalid("the PostgreSQL URL names no database (postgres://user@host/DATABASE)") }
        guard !path.contains("/") else { throw Invalid("the PostgreSQL URL's database name holds a /") }
        let database = try Self.decode(path, "the database name")
        var sslMode = SSLMode.prefer
        var sslRootCert: String?
        var applicationName: String?
        var socketDirectory: String?
        var seen: Set<String> = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            guard let eq = pair.firstIndex(of: "=") else { throw Invalid("the PostgreSQL URL's parameter \(pair.prefix(40)) has no value") }
            let key = try Self.decode(pair[..<eq], "a parameter name")
            let valueText = pair[pair.index(after: eq)...]
            if key == "password" {
                throw Invalid("the PostgreSQL URL holds a password; remove it and set PGPASSWORD or use a passfile (~/.pgpass or PGPASSFILE) instead")
            }
            guard seen.insert(key).inserted else { throw Invalid("the PostgreSQL URL gives \(key.prefix(40)) twice") }
            let value = try Self.decode(valueText, "the value of \(key.prefix(40))")
            switch key {
            case "sslmode":
                guard let m = SSLMode(rawValue: value) else {
                    throw Invalid("sslmode must be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")); got \(value.prefix(40))")
                }
                sslMode = m
            case "sslrootcert":
                guard value.hasPrefix("/") else { throw Invalid("sslrootcert must be an absolute path to a PEM file") }
                sslRootCert = value
            case "host":
                if value.hasPrefix("/") {
                    socketDirectory = value
                } else {
                    guard !value.isEmpty, value.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" || $0 == ":" }) else {
                        throw Invalid("the host parameter is neither a socket directory (/path) nor a host name")
                    }
                    host = value
                }
            case "port":
                port = try Self.port(Substring(value))
            case "application_name":
                guard value.count <= 63 else { throw Invalid("application_name is longer than 63 characters") }
                applicationName = value
            default:
                throw Invalid("the PostgreSQL URL's parameter \(key.prefix(40)) is not supported (sslmode, sslrootcert, host, port, application_name)")
            }
        }
        let endpoint: Endpoint
        if let socketDirectory {
            endpoint = .unixSocket(directory: socketDirectory, port: port)
        } else if host.isEmpty {
            endpoint = .unixSocket(directory: Self.defaultSocketDirectory, port: port)
        } else {
            endpoint = .tcp(host: host, port: port)
        }
        self.init(user: user, database: database, endpoint: endpoint, sslMode: sslMode, sslRootCert: sslRootCert, applicationName: applicationName)
    }

    static func port(_ text: Substring) throws(Invalid) -> Int {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(text), (1...65535).contains(p) else {
            throw Invalid("the PostgreSQL URL's port must be a number from 1 to 65535")
        }
        return p
    }

    /// Percent-decodes one part; a part that does not decode to UTF-8 without NUL is refused.
    static func decode(_ part: Substring, _ what: String) throws(Invalid) -> String {
        guard let s = String(part).removingPercentEncoding else { throw Invalid("\(what) in the PostgreSQL URL has a bad %-escape") }
        guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw Invalid("\(what) in the PostgreSQL URL holds a control character")
        }
        guard s.utf8.count <= 1024 else { throw Invalid("\(what) in the PostgreSQL URL is too long") }
        return s
    }

    // MARK: - The password

    /// The password for this location, as libpq finds it: `PGPASSWORD` when set and not empty;
    /// otherwise the first matching line of the passfile (`PGPASSFILE`, or `~/.pgpass`), whose
    /// lines are `host:port:database:user:password` with `*` matching anything and `\:` and
    /// `\\` escaping; nil when neither gives one. A passfile readable or writable by group or
    /// others is refused (libpq ignores it with a warning; a password store must not be shared
    /// silently). Errors name the file and line, never a password.
    /// `environment`: the process's when nil.
    public func password(environment: [String: String]? = nil) throws(Invalid) -> String? {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if let p = environment["PGPASSWORD"], !p.isEmpty { return p }
        let file: String
        if let f = environment["PGPASSFILE"], !f.isEmpty {
            file = f
        } else if let home = environment["HOME"], !home.isEmpty {
            file = (home.hasSuffix("/") ? home : home + "/") + ".pgpass"
        } else {
            return nil
        }
        return try Self.passfilePassword(path: file, hosts: passfileHost, port: String(port), database: database, user: user)
    }

    static func passfilePassword(path: String, hosts: [String], port: String, database: String, user: String) throws(Invalid) -> String? {
        // One open file, checked and read through its descriptor: the mode and size checked are
        // those of the bytes read, not of whatever a rename put at the path in between.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }   // no passfile: no password from it
            throw Invalid("cannot read the passfile \(path) (errno \(errno))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Invalid("cannot read the passfile \(path) (errno \(errno))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw Invalid("the passfile \(path) is not a regular file") }
        guard st.st_mode & 0o077 == 0 else {
            throw Invalid("the passfile \(path) can be read or written by group or others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 0600 it")
        }
        let limit = 1 << 20
        guard st.st_size <= limit else { throw Invalid("the passfile \(path) is larger than 1 MiB") }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Invalid("cannot read the passfile \(path) (errno \(errno))")
            }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
            // A file that grew after fstat is still held to the limit.
            guard data.count <= limit else { throw Invalid("the passfile \(path) is larger than 1 MiB") }
        }
        let text = String(decoding: data, as: UTF8.self)
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line.isEmpty || line.hasPrefix("#") { continue }
            // Split on unescaped ':' into 5 fields; the last one (the password) takes the rest.
            var fields: [String] = []
            var current = ""
            var escaped = false
            for c in line {
                if escaped { current.append(c); escaped = false; continue }
                if c == "\\" { escaped = true; continue }
                if c == ":" && fields.count < 4 { fields.append(current); current = ""; continue }
                current.append(c)
            }
            fields.append(current)
            guard fields.count == 5 else { continue }   // libpq skips malformed lines
            func match(_ pattern: String, _ values: [String]) -> Bool { pattern == "*" || values.contains(pattern) }
            if match(fields[0], hosts) && match(fields[1], [port]) && match(fields[2], [database]) && match(fields[3], [user]) {
                return fields[4]
            }
        }
        return nil
    }
}
