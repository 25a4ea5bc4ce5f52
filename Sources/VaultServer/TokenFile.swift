import Foundation
import VaultStore
import VaultAudit
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Who a bearer token speaks for: an actor name and a policy role.
public struct TokenIdentity: Sendable, Equatable {
    /// A short random id of the token (not secret), for logs and `tokens` listings.
    public var tokenID: String
    public var actor: String
    public var role: String
}

/// The service's token file: one entry per bearer token, holding only the token's SHA-256,
/// never the token.
///
/// ```json
/// {"format": "profilevault-tokens", "version": 1,
///  "tokens": [{"id": "3f9a0c1d2e4b", "sha256": "<64 hex>", "actor": "alice", "role": "trainer", "created": "2026-11-22T13:00:00Z"}]}
/// ```
///
/// Like the keyring, a file that grants anything to group or others is refused (whoever reads
/// the hashes can at least enumerate actors and roles), and it is rewritten atomically
/// (`FILE.new-*` with mode 0600, fsync, rename).
public struct TokenFile: Sendable {
    public static let format = "profilevault-tokens"
    public static let formatVersion = 1
    static let maximumFileSize = 4 << 20

    struct Entry: Sendable {
        var id: String
        var hash: [UInt8]
        var actor: String
        var role: String
        var created: String
    }

    public let path: String
    var entries: [Entry]

    /// The identities the file holds, in file order (for listings; no hashes).
    public var identities: [TokenIdentity] { entries.map { TokenIdentity(tokenID: $0.id, actor: $0.actor, role: $0.role) } }

    init(path: String, entries: [Entry]) {
        self.path = path
        self.entries = entries
    }

    // MARK: - Loading

    /// Reads and validates a token file. Refuses, before reading a byte, a file that is not a
    /// regular file or whose mode grants anything to group or others. Every problem is a
    /// configuration error naming the file (exit 78 on the CLI).
    public static func load(path: String) throws -> TokenFile {
        guard let file = try loadIfPresent(path: path) else {
            throw VaultError(.configuration, "tokens file \(path): no such file (create one with: profilectl tokens add --tokens \(path) --actor NAME --role ROLE)")
        }
        return file
    }

    /// Like ``load(path:)``, but an absent file is an empty token file (for `tokens add`).
    public static func loadOrEmpty(path: String) throws -> TokenFile {
        try loadIfPresent(path: path) ?? TokenFile(path: path, entries: [])
    }

    static func loadIfPresent(path: String) throws -> TokenFile? {
        func fail(_ reason: String) -> VaultError { VaultError(.configuration, "tokens file \(path): \(reason)") }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let e = errno
            if e == ENOENT { return nil }
            throw fail("cannot open: \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("cannot stat: \(String(cString: strerror(errno)))") }
        let mode = UInt32(st.st_mode)
        guard mode & 0o170000 == 0o100000 else { throw fail("is not a regular file") }
        let permissions = mode & 0o7777
        if permissions & 0o077 != 0 {
            let what = permissions & 0o044 != 0 ? "is readable by group or others" : "is accessible by group or others"
            throw fail("\(what) (mode \(String(format: "%04o", permissions))); run: chmod 600 \(path)")
        }
        guard Int(st.st_size) <= maximumFileSize else { throw fail("larger than 4 MiB; not a tokens file") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            offset += n
        }
        bytes.removeSubrange(offset...)
        return TokenFile(path: path, entries: try parse(bytes, fail: fail))
    }

    static func parse(_ bytes: [UInt8], fail: (String) -> VaultError) throws -> [Entry] {
        let doc: JSONValue
        do { doc = try JSONValue.parse(bytes) } catch { throw fail("not valid JSON (\(error.description))") }
        guard doc["format"] == .string(format) else { throw fail("format: expected \"\(format)\"") }
        guard doc["version"] == .int(Int64(formatVersion)) else { throw fail("version: expected \(formatVersion)") }
        guard case .array(let items)? = doc["tokens"] else { throw fail("tokens: expected an array") }
        var out: [Entry] = []
        var ids: Set<String> = []
        for (i, item) in items.enumerated() {
            func string(_ key: String) throws -> String {
                guard case .string(let s)? = item[key], !s.isEmpty else { throw fail("tokens[\(i)].\(key): expected a non-empty string") }
                return s
            }
            let hex = try string("sha256")
            guard let hash = bytesFromHex(hex), hash.count == SHA256.byteCount else {
                throw fail("tokens[\(i)].sha256: expected 64 lowercase hex digits")
            }
            let id = try string("id")
            guard ids.insert(id).inserted else { throw fail("tokens[\(i)].id: duplicate id") }
            out.append(Entry(id: id, hash: hash, actor: try string("actor"), role: try string("role"),
                             created: (item["created"].flatMap { if case .string(let s) = $0 { s } else { nil } }) ?? ""))
        }
        return out
    }

    // MARK: - Tokens

    /// Adds a new token for `actor` in `role` and returns it: the only time it is ever shown.
    /// The token is 32 bytes from OpenSSL's CSPRNG, base64url without padding (43 characters).
    public mutating func add(actor: String, role: String) -> String {
        let token = Self.base64url(SecureRandom.bytes(32))
        var id: String
        repeat { id = Self.hex(SecureRandom.bytes(6)) } while entries.contains { $0.id == id }
        entries.append(Entry(id: id, hash: SHA256.hash(Array(token.utf8)), actor: actor, role: role,
                             created: AuditLog.isoMillis(AuditLog.nowMillis)))
        return token
    }

    /// The identity a presented token maps to, or nil. Compares the token's SHA-256 with every
    /// entry in constant time (no early exit), so timing tells nothing about which entry matched
    /// or how much of a hash agreed.
    public func identity(forToken token: String) -> TokenIdentity? {
        guard !token.isEmpty, token.utf8.count <= 512 else { return nil }
        let presented = SHA256.hash(Array(token.utf8))
        var match: Entry?
        for e in entries where constantTimeEqual(e.hash, presented) { match = e }
        return match.map { TokenIdentity(tokenID: $0.id, actor: $0.actor, role: $0.role) }
    }

    // MARK: - Saving

    /// Atomically replaces the file with the current entries (mode 0600).
    public func save() throws {
        let doc = JSONValue.object([
            ("format", .string(Self.format)),
            ("version", .int(Int64(Self.formatVersion))),
            ("tokens", .array(entries.map { e in
                .object([("id", .string(e.id)), ("sha256", .string(Self.hex(e.hash))), ("actor", .string(e.actor)),
                         ("role", .string(e.role)), ("created", .string(e.created))])
            })),
        ])
        try Self.atomicWrite(Array((doc.rendered(pretty: true) + "\n").utf8), to: path)
    }

    static func atomicWrite(_ content: [UInt8], to path: String) throws {
        func fail(_ reason: String) -> VaultError { VaultError(.configuration, "tokens file \(path): \(reason)") }
        let temporary = path + ".new-" + hex(SecureRandom.bytes(4))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw fail("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            guard fchmod(fd, 0o600) == 0 else { throw fail("cannot chmod 600: \(String(cString: strerror(errno)))") }
            var offset = 0
            while offset < content.count {
                let n = content.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw fail("cannot write: \(String(cString: strerror(errno)))")
                }
                offset += n
            }
            guard fsync(fd) == 0 else { throw fail("cannot fsync: \(String(cString: strerror(errno)))") }
        }
        guard rename(temporary, path) == 0 else { throw fail("cannot rename into place: \(String(cString: strerror(errno)))") }
        ok = true
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let dfd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    // MARK: - Encoding

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func bytesFromHex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
