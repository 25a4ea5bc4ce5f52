import Foundation
import ProfileVault
import VaultValues
import Yams

/// `serve --config FILE`: a YAML mapping with the same keys as `serve`'s flags (without the
/// dashes in front), each optional; a flag given on the command line wins over the file.
///
/// ```yaml
/// listen: "0.0.0.0:8443"
/// tokens: /etc/profilevault/tokens.json
/// tls-cert: /etc/profilevault/tls/cert.pem
/// log-format: json
/// ```
///
/// Refused (configuration, exit 78), naming the file, the line and the key, never a value: a
/// file that is not a mapping, an unknown key, a key given twice, a value of the wrong type.
/// A relative path in the file is taken relative to the file's directory (a unit file's
/// working directory is `/`); a PostgreSQL store location is taken as written.
public struct ServeConfigFile: Sendable, Equatable {
    public var listen: String?
    public var tokens: String?
    public var tlsCert: String?
    public var tlsKey: String?
    public var insecureHTTP: Bool?
    public var logFormat: String?
    public var logLevel: String?
    public var publishHeads: String?
    public var auditStream: String?
    public var retentionEvery: String?
    public var maxBodyBytes: Int?
    public var requestTimeout: Double?
    public var store: String?
    public var keys: String?
    /// The PKCS#11 URI of the key that seals the keyring (as `--hsm`).
    public var hsm: String?
    public var policy: String?
    public var allowExampleKeys: Bool?
    /// The line of each key given, for errors about its value found later (`serve` checks
    /// ranges and formats as it checks its flags).
    public var lines: [String: Int] = [:]

    public init() {}

    enum Kind { case string, path, storeLocation, bool, int, number }

    /// Every key, with its type.
    static let keys: [(name: String, kind: Kind)] = [
        ("listen", .string), ("tokens", .path), ("tls-cert", .path), ("tls-key", .path), ("insecure-http", .bool),
        ("log-format", .string), ("log-level", .string), ("publish-heads", .path), ("audit-stream", .path),
        ("retention-every", .string), ("max-body-bytes", .int), ("request-timeout", .number),
        ("store", .storeLocation), ("keys", .path), ("policy", .path), ("allow-example-keys", .bool),
        ("hsm", .string),
    ]

    /// The largest file read.
    static let maximumSize = 1 << 20

    /// Reads and checks `path`.
    public static func load(path: String) throws -> ServeConfigFile {
        let bytes = try ConfigurationFile.contents(of: path, what: "--config", secret: false, trusted: true)
        let directory = (path as NSString).deletingLastPathComponent
        return try parse(bytes, file: path, directory: directory.isEmpty ? "." : directory)
    }

    /// Parses a file's bytes; `file` names it in errors, `directory` anchors relative paths.
    public static func parse(_ bytes: [UInt8], file: String, directory: String) throws -> ServeConfigFile {
        func fail(_ line: Int?, _ reason: String) -> VaultError {
            VaultError(.configuration, "--config \(file)\(line.map { ":\($0)" } ?? ""): \(reason)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw fail(nil, "not valid UTF-8") }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch let e as YamlError {
            // The problem and where, never Yams' description (it quotes the line).
            switch e {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                throw fail(mark.line, "not valid YAML (\(problem))")
            case .duplicatedKeysInMapping(let duplicates, let context):
                // Name a known key (never anything else) and the line it is given again on.
                guard let key = duplicates.sorted().first(where: { d in keys.contains { $0.name == d } }) else {
                    throw fail(context.mark.line, "a key is given twice")
                }
                let again = text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                    .filter { $0.element.hasPrefix(key) && $0.element.dropFirst(key.count).drop(while: { $0 == " " }).first == ":" }
                    .dropFirst().first.map { $0.offset + 1 }
                throw fail(again ?? context.mark.line, "key \(key) is given twice")
            default:
                throw fail(nil, "not valid YAML")
            }
        } catch {
            throw fail(nil, "not valid YAML")
        }
        guard let root else { throw fail(1, "the file is empty; expected a mapping of serve's options (listen, tokens, ...)") }
        guard case .mapping(let mapping) = root else {
            throw fail(root.mark?.line, "expected a mapping of serve's options (listen: ..., tokens: ...)")
        }
        var out = ServeConfigFile()
        var seen: Set<String> = []
        for (keyNode, value) in mapping {
            let line = keyNode.mark?.line
            guard case .scalar(let keyScalar) = keyNode, keyNode.tagName == .str else {
                throw fail(line, "a key that is not a name")
            }
            let key = keyScalar.string
            guard let kind = keys.first(where: { $0.name == key })?.kind else {
                let shown = key.utf8.count <= 64 && !key.isEmpty && key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
                    ? "'\(key)'" : "(not shown: not a short printable name)"
                throw fail(line, "unknown key \(shown) (keys: \(keys.map(\.name).joined(separator: ", ")))")
            }
            guard seen.insert(key).inserted else { throw fail(line, "key \(key) is given twice") }
            out.lines[key] = line
            let at = value.mark?.line ?? line
            func string() throws -> String {
                guard case .scalar(let s) = value, value.tagName == .str else {
                    throw fail(at, "key \(key): expected a string (quote it if it looks like a number or a boolean)")
                }
                guard !s.string.isEmpty else { throw fail(at, "key \(key): expected a non-empty string") }
                guard !s.string.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                    throw fail(at, "key \(key): control characters are not allowed")
                }
                return s.string
            }
            func anchored(_ p: String) -> String {
                p.hasPrefix("/") ? p : (directory as NSString).appendingPathComponent(p)
            }
            switch kind {
            case .string, .path, .storeLocation:
                var s = try string()
                if kind == .path || (kind == .storeLocation && !s.hasPrefix("postgres://") && !s.hasPrefix("postgresql://")) {
                    s = anchored(s)
                }
                switch key {
                case "listen": out.listen = s
                case "tokens": out.tokens = s
                case "tls-cert": out.tlsCert = s
                case "tls-key": out.tlsKey = s
                case "log-format": out.logFormat = s
                case "log-level": out.logLevel = s
                case "publish-heads": out.publishHeads = s
                case "audit-stream": out.auditStream = s
                case "retention-every": out.retentionEvery = s
                case "store": out.store = s
                case "keys": out.keys = s
                case "hsm": out.hsm = s
                case "policy": out.policy = s
                default: break
                }
            case .bool:
                guard case .scalar = value, value.tagName == .bool, let b = value.bool else {
                    throw fail(at, "key \(key): expected true or false")
                }
                if key == "insecure-http" { out.insecureHTTP = b } else { out.allowExampleKeys = b }
            case .int:
                guard case .scalar = value, value.tagName == .int, let n = value.int else {
                    throw fail(at, "key \(key): expected a whole number")
                }
                out.maxBodyBytes = n
            case .number:
                guard case .scalar = value, value.tagName == .int || value.tagName == .float, let d = value.float, d.isFinite else {
                    throw fail(at, "key \(key): expected a number")
                }
                out.requestTimeout = d
            }
        }
        return out
    }
}

extension Node {
    /// The resolved tag name (`Tag.name` itself is internal to Yams).
    fileprivate var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
