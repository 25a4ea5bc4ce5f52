import Foundation
public import Logging
import VaultCrypto
import VaultAudit
public import VaultStore
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

/// One entry of the tokens file as `tokens list` shows it: never the token or its hash.
public struct TokenListing: Sendable, Equatable {
    public var tokenID: String
    public var actor: String
    public var role: String
    /// When the token was made (`2026-11-22T13:00:00.000Z`); empty when the entry does not say.
    public var created: String
    /// When it stops working (Unix milliseconds); nil: never.
    public var expiresMillis: Int64?
    /// When it was revoked (Unix milliseconds); nil: it is not.
    public var revokedMillis: Int64?
}

/// Why a request's credentials were refused (401). None of them carries token material: the
/// token id of a revoked or expired token is the entry's random id, not derived from the token.
public enum AuthenticationFailure: Sendable, Equatable {
    /// No `Authorization` header.
    case missing
    /// An `Authorization` header that is not `Bearer TOKEN`, or a token that cannot be one
    /// (empty, over 512 bytes, or with bytes other than visible ASCII).
    case malformed
    /// A token that no entry of the tokens file holds.
    case unknown
    /// A token whose entry is revoked (`tokens revoke ID`).
    case revoked(tokenID: String)
    /// A token whose entry's expiry has passed.
    case expired(tokenID: String)

    /// The reason as one word (`missing`, `malformed`, `unknown`, `revoked`, `expired`): what
    /// the audit entry records.
    public var kind: String {
        switch self {
        case .missing: "missing"
        case .malformed: "malformed"
        case .unknown: "unknown"
        case .revoked: "revoked"
        case .expired: "expired"
        }
    }

    /// What the client is told (the 401's `error`). Saying that a token is revoked or expired
    /// tells only someone who holds that very token.
    public var message: String {
        switch self {
        case .missing: "missing bearer token (Authorization: Bearer TOKEN)"
        case .malformed: "the Authorization header is not of the form: Bearer TOKEN"
        case .unknown: "unknown token"
        case .revoked: "token revoked"
        case .expired: "token expired"
        }
    }
}

/// What a presented token is worth now.
public enum TokenCheck: Sendable, Equatable {
    case valid(TokenIdentity)
    case refused(AuthenticationFailure)
}

/// The service's token file: one entry per bearer token, holding only the token's SHA-256,
/// never the token.
///
/// ```json
/// {"format": "profilevault-tokens", "version": 2,
///  "tokens": [{"id": "3f9a0c1d2e4b", "sha256": "<64 hex>", "actor": "alice", "role": "trainer", "created": "2026-11-22T13:00:00.000Z",
///              "expires": "2027-02-20T13:00:00.000Z", "revoked": "2026-12-01T08:00:00.000Z"}]}
/// ```
///
/// `expires` and `revoked` are optional (absent: no expiry, not revoked), UTC times as written
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`, or without the milliseconds). A file is written as version 1
/// (the format before either key existed) while no entry has either, and as version 2 once one
/// has: an older `profilectl`, which would ignore the keys and accept a revoked token, refuses a
/// version 2 file instead (fail closed). Both versions are read. Any other key, or a value of
/// the wrong form, is refused naming the file and the field (`tokens[3].expires: ...`).
///
/// Like the keyring, a file that grants anything to group or others, or that another user owns,
/// is refused (whoever reads the hashes can at least enumerate actors and roles), and it is
/// rewritten atomically
/// (`FILE.new-*` with mode 0600, fsync, rename).
public struct TokenFile: Sendable {
    public static let format = "profilevault-tokens"
    /// The version written when no entry has `expires` or `revoked`.
    public static let formatVersion = 1
    /// The version written when one does; the newest this code reads.
    public static let lifecycleFormatVersion = 2
    static let maximumFileSize = 4 << 20
    /// The longest lifetime `tokens add --expires` accepts (10 years).
    public static let maximumLifetimeMillis: Int64 = 3650 * 86_400_000

    struct Entry: Sendable {
        var id: String
        var hash: [UInt8]
        var actor: String
        var role: String
        var created: String
        var expires: Int64? = nil
        var revoked: Int64? = nil
    }

    public let path: String
    var entries: [Entry]

    /// The identities the file holds, in file order (for listings; no hashes).
    public var identities: [TokenIdentity] { entries.map { TokenIdentity(tokenID: $0.id, actor: $0.actor, role: $0.role) } }

    /// The entries as `tokens list` shows them, in file order (no hashes).
    public var listing: [TokenListing] {
        entries.map { TokenListing(tokenID: $0.id, actor: $0.actor, role: $0.role, created: $0.created,
                                   expiresMillis: $0.expires, revokedMillis: $0.revoked) }
    }

    init(path: String, entries: [Entry]) {
        self.path = path
        self.entries = entries
    }

    // MARK: - Loading

    /// Reads and validates a token file. Refuses, before reading a byte, a file that is not a
    /// regular file, whose mode grants anything to group or others, or that another user owns
    /// (`SecretFile.problem`). Every problem is a
    /// configuration error naming the file (exit 78 on the CLI).
    public static func load(path: String) throws -> TokenFile {
        guard let file = try loadIfPresent(path: path) else { throw missing(path: path) }
        return file
    }

    static func missing(path: String) -> VaultError {
        VaultError(.configuration, "tokens file \(path): no such file (create one with: profilectl tokens add --tokens \(path) --actor NAME --role ROLE)")
    }

    /// Like ``load(path:)``, but an absent file is an empty token file (for `tokens add`).
    public static func loadOrEmpty(path: String) throws -> TokenFile {
        try loadIfPresent(path: path) ?? TokenFile(path: path, entries: [])
    }

    static func loadIfPresent(path: String) throws -> TokenFile? {
        try loadIfPresentWithVersion(path: path)?.file
    }

    /// Like ``loadIfPresent(path:)``, with the ``FileVersion`` of the bytes it read (from the
    /// same open file), so a reload can tell whether the file changed since.
    static func loadIfPresentWithVersion(path: String) throws -> (file: TokenFile, version: FileVersion)? {
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
        let version = FileVersion(st)
        if let problem = SecretFile.problem(mode: UInt32(st.st_mode), owner: UInt32(st.st_uid), euid: UInt32(geteuid()), path: path) {
            throw fail(problem)
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
        return (TokenFile(path: path, entries: try parse(bytes, fail: fail)), version)
    }

    static let topLevelKeys: Set<String> = ["format", "version", "tokens"]
    static let entryKeys: Set<String> = ["id", "sha256", "actor", "role", "created", "expires", "revoked"]

    static func parse(_ bytes: [UInt8], fail: (String) -> VaultError) throws -> [Entry] {
        let doc: JSONValue
        do { doc = try JSONValue.parse(bytes) } catch { throw fail("not valid JSON (\(error.description))") }
        guard case .object(let top) = doc else { throw fail("expected a JSON object") }
        guard doc["format"] == .string(format) else { throw fail("format: expected \"\(format)\"") }
        guard doc["version"] == .int(Int64(formatVersion)) || doc["version"] == .int(Int64(lifecycleFormatVersion)) else {
            throw fail("version: expected \(formatVersion) or \(lifecycleFormatVersion) (a newer profilectl may have written it)")
        }
        // An unknown key may be a restriction a newer version added: refused, not ignored.
        if let key = top.first(where: { !topLevelKeys.contains($0.0) })?.0 { throw fail("\(printable(key)): unknown field") }
        guard case .array(let items)? = doc["tokens"] else { throw fail("tokens: expected an array") }
        var out: [Entry] = []
        var ids: Set<String> = []
        for (i, item) in items.enumerated() {
            guard case .object(let pairs) = item else { throw fail("tokens[\(i)]: expected an object") }
            if let key = pairs.first(where: { !entryKeys.contains($0.0) })?.0 { throw fail("tokens[\(i)].\(printable(key)): unknown field") }
            func string(_ key: String) throws -> String {
                guard case .string(let s)? = item[key], !s.isEmpty else { throw fail("tokens[\(i)].\(key): expected a non-empty string") }
                return s
            }
            /// An optional time: absent or null is nil.
            func time(_ key: String) throws -> Int64? {
                switch item[key] {
                case nil, .null?: return nil
                case .string(let s)?:
                    guard let ms = millis(fromISO: s) else {
                        throw fail("tokens[\(i)].\(key): expected a UTC time such as 2026-11-22T13:00:00.000Z")
                    }
                    return ms
                default: throw fail("tokens[\(i)].\(key): expected a UTC time such as 2026-11-22T13:00:00.000Z")
                }
            }
            let hex = try string("sha256")
            guard let hash = bytesFromHex(hex), hash.count == SHA256.byteCount else {
                throw fail("tokens[\(i)].sha256: expected 64 lowercase hex digits")
            }
            let id = try string("id")
            guard ids.insert(id).inserted else { throw fail("tokens[\(i)].id: duplicate id") }
            // `created` is informational; files of earlier versions may hold "" there.
            var created = ""
            switch item["created"] {
            case nil, .null?: break
            case .string(let s)?:
                guard s.isEmpty || millis(fromISO: s) != nil else {
                    throw fail("tokens[\(i)].created: expected a UTC time such as 2026-11-22T13:00:00.000Z")
                }
                created = s
            default: throw fail("tokens[\(i)].created: expected a UTC time such as 2026-11-22T13:00:00.000Z")
            }
            out.append(Entry(id: id, hash: hash, actor: try string("actor"), role: try string("role"), created: created,
                             expires: try time("expires"), revoked: try time("revoked")))
        }
        return out
    }

    /// A key of the file as an error message may show it: at most 64 printable ASCII characters.
    static func printable(_ key: String) -> String {
        let cleaned = String(key.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f ? Character($0) : "?" })
        return key.unicodeScalars.count > 64 ? cleaned + "..." : cleaned
    }

    /// Unix milliseconds for `YYYY-MM-DDTHH:MM:SS.mmmZ` (what the file is written with) or
    /// `YYYY-MM-DDTHH:MM:SSZ`; nil for anything else, or a day that does not exist.
    static func millis(fromISO s: String) -> Int64? {
        let b = Array(s.utf8)
        guard b.count == 20 || b.count == 24, b.last == UInt8(ascii: "Z") else { return nil }
        func digits(_ range: Range<Int>) -> Int64? {
            var n: Int64 = 0
            for i in range {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) else { return nil }
                n = n * 10 + Int64(b[i] - UInt8(ascii: "0"))
            }
            return n
        }
        guard b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let year = digits(0..<4), let month = digits(5..<7), let day = digits(8..<10),
              let hour = digits(11..<13), let minute = digits(14..<16), let second = digits(17..<19),
              year >= 1970, (1...12).contains(month), hour < 24, minute < 60, second < 60 else { return nil }
        var ms: Int64 = 0
        if b.count == 24 {
            guard b[19] == UInt8(ascii: "."), let m = digits(20..<23) else { return nil }
            ms = m
        }
        // Days from civil (H. Hinnant); the round trip through isoMillis refuses 2026-02-30.
        let y = month <= 2 ? year - 1 : year
        let era = y / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let total = ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + ms
        let canonical = AuditLog.isoMillis(total)
        guard canonical == s || (b.count == 20 && canonical == String(decoding: b[0..<19], as: UTF8.self) + ".000Z") else { return nil }
        return total
    }

    /// A time as the file writes it (`2026-11-22T13:00:00.000Z`).
    public static func isoTime(_ ms: Int64) -> String { AuditLog.isoMillis(ms) }

    /// Now, in Unix milliseconds (the clock expiry is checked against).
    public static var nowMillis: Int64 { AuditLog.nowMillis }

    /// `--expires`: a whole number with a unit `m` (minutes), `h` or `d`, from 1 minute to
    /// ``maximumLifetimeMillis``; the lifetime in milliseconds, or nil.
    public static func lifetimeMillis(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["m": 60_000, "h": 3_600_000, "d": 86_400_000]
        guard let unit = text.last, let factor = units[unit], text.count >= 2, text.count <= 8,
              text.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int64(text.dropLast()), n >= 1,
              case (let millis, false) = n.multipliedReportingOverflow(by: factor), millis <= maximumLifetimeMillis else { return nil }
        return millis
    }

    // MARK: - Tokens

    /// Adds a new token for `actor` in `role` and returns it: the only time it is ever shown.
    /// The token is 32 bytes from OpenSSL's CSPRNG, base64url without padding (43 characters).
    /// `expiresMillis`: when it stops working (Unix milliseconds; nil: never).
    public mutating func add(actor: String, role: String, expiresMillis: Int64? = nil) -> String {
        let token = Self.base64url(SecureRandom.bytes(32))
        var id: String
        repeat { id = Self.hex(SecureRandom.bytes(6)) } while entries.contains { $0.id == id }
        entries.append(Entry(id: id, hash: SHA256.hash(Array(token.utf8)), actor: actor, role: role,
                             created: AuditLog.isoMillis(AuditLog.nowMillis), expires: expiresMillis))
        return token
    }

    /// Marks the entry `id` revoked at `nowMillis`. Returns false (and changes nothing) when it
    /// already was; throws not found (exit 66) when no entry has that id.
    @discardableResult
    public mutating func revoke(id: String, nowMillis: Int64 = TokenFile.nowMillis) throws -> Bool {
        guard let i = entries.firstIndex(where: { $0.id == id }) else {
            throw VaultError(.notFound, "tokens file \(path): no token with id \(Self.printable(id)) (tokens list shows the ids)")
        }
        if entries[i].revoked != nil { return false }
        entries[i].revoked = nowMillis
        return true
    }

    /// The identity a presented token maps to when it is valid now, or nil (``check(token:nowMillis:)``).
    public func identity(forToken token: String) -> TokenIdentity? {
        if case .valid(let id) = check(token: token, nowMillis: AuditLog.nowMillis) { return id }
        return nil
    }

    /// What a presented token is worth at `nowMillis`: its identity, or why it is refused. Compares
    /// the token's SHA-256 with every entry in constant time (no early exit), so timing tells
    /// nothing about which entry matched or how much of a hash agreed; the matched entry's
    /// revocation and expiry are looked at after the loop.
    public func check(token: String, nowMillis: Int64) -> TokenCheck {
        guard !token.isEmpty, token.utf8.count <= 512, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            return .refused(.malformed)
        }
        let presented = SHA256.hash(Array(token.utf8))
        var match: Entry?
        for e in entries where constantTimeEqual(e.hash, presented) { match = e }
        guard let e = match else { return .refused(.unknown) }
        if e.revoked != nil { return .refused(.revoked(tokenID: e.id)) }
        if let expires = e.expires, nowMillis >= expires { return .refused(.expired(tokenID: e.id)) }
        return .valid(TokenIdentity(tokenID: e.id, actor: e.actor, role: e.role))
    }

    // MARK: - Saving

    /// Atomically replaces the file with the current entries (mode 0600). Refused (exit 73)
    /// when the path is one of `protecting` (the keyring, the store, a policy file), compared
    /// by device and inode, checked again just before the rename.
    /// Runs a read-change-write of the tokens file at `path` under an exclusive lock
    /// (`flock` on `PATH.lock`, created 0600 beside it), so two `tokens` commands at once cannot
    /// lose each other's change: without it, an `add` that read the file before a `revoke`
    /// wrote it would rename its copy over the revocation, and the revoked token would work
    /// again. Readers (the service) need no lock: the file is replaced by an atomic rename.
    public static func changing<T>(path: String, _ body: () throws -> T) throws -> T {
        try FileLock.exclusive(path + ".lock", what: "tokens file \(path)", body)
    }

    public func save(protecting: [ProtectedFile] = []) throws {
        let lifecycle = entries.contains { $0.expires != nil || $0.revoked != nil }
        let doc = JSONValue.object([
            ("format", .string(Self.format)),
            ("version", .int(Int64(lifecycle ? Self.lifecycleFormatVersion : Self.formatVersion))),
            ("tokens", .array(entries.map { e in
                var pairs: [(String, JSONValue)] = [("id", .string(e.id)), ("sha256", .string(Self.hex(e.hash))), ("actor", .string(e.actor)),
                                                    ("role", .string(e.role)), ("created", .string(e.created))]
                if let expires = e.expires { pairs.append(("expires", .string(AuditLog.isoMillis(expires)))) }
                if let revoked = e.revoked { pairs.append(("revoked", .string(AuditLog.isoMillis(revoked)))) }
                return .object(pairs)
            })),
        ])
        try Self.atomicWrite(Array((doc.rendered(pretty: true) + "\n").utf8), to: path, protecting: protecting)
    }

    static func atomicWrite(_ content: [UInt8], to path: String, protecting: [ProtectedFile] = []) throws {
        func fail(_ reason: String) -> VaultError { VaultError(.cannotCreate, "tokens file \(path): \(reason)") }
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
        if let reason = OutputFile.protectedReason(path, protecting: protecting, sniff: false) {
            throw fail("cannot replace it: \(reason)")
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

    static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }

    static func bytesFromHex(_ s: String) -> [UInt8]? { Hex.decode(s) }
}

/// What identifies one version of a file without reading it: device, inode (an atomic rewrite
/// by rename gives a new one), size, modification and status-change times (a `chmod` changes
/// the latter), and mode.
struct FileVersion: Equatable, Sendable {
    var device: UInt64, inode: UInt64, size: Int64, mode: UInt32
    var modified: Int64, modifiedNanoseconds: Int
    var changed: Int64, changedNanoseconds: Int

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        mode = UInt32(st.st_mode)
        modified = Int64(st.st_mtim.tv_sec)
        modifiedNanoseconds = Int(st.st_mtim.tv_nsec)
        changed = Int64(st.st_ctim.tv_sec)
        changedNanoseconds = Int(st.st_ctim.tv_nsec)
    }

    /// The version of the file at `path` now; nil when there is none (or it cannot be stat'ed).
    static func current(path: String) -> FileVersion? {
        var st = stat()
        return stat(path, &st) == 0 ? FileVersion(st) : nil
    }
}

/// The service's tokens, reread from the tokens file when it changes, so `profilectl tokens add`
/// (or removing an entry) takes effect without a restart.
///
/// ``current()`` looks at the file's ``FileVersion`` (one `stat`) at most once per `checkEvery`
/// (zero in the service: before every request's token is checked, so a `tokens revoke` by any
/// node sharing the file refuses the token on the very next request), and rereads it when it
/// changed; ``reload()`` rereads it at once (the service calls it on SIGHUP). A reread applies
/// every check ``TokenFile/load(path:)`` makes.
///
/// It fails closed: when the file is gone, unreadable, not valid, or readable by group or
/// others, no token is accepted (``current()`` answers nil and the service answers 503 to routes
/// that need a token) until a later version of the file loads; each such change is logged. The
/// previous tokens are not kept: a file that was made readable by others may have leaked its
/// hashes, and a token someone removed must stop working even if the edit broke the file.
///
/// `@unchecked Sendable`: `file`, `version` and `lastCheck` are only touched under `lock`;
/// rereads are serialised by `reloadLock`.
public final class ReloadingTokenFile: @unchecked Sendable {
    public let path: String
    let checkEvery: Duration
    let logger: Logger
    private let lock = NSLock()
    private let reloadLock = NSLock()
    private var file: TokenFile?
    private var version: FileVersion?
    private var lastCheck: ContinuousClock.Instant

    /// Loads the file now (throws as ``TokenFile/load(path:)`` does: the service does not start
    /// with an unusable tokens file).
    public convenience init(path: String, checkEvery: Duration = .zero, logger: Logger) throws {
        guard let (file, version) = try TokenFile.loadIfPresentWithVersion(path: path) else { throw TokenFile.missing(path: path) }
        self.init(file, version: version, checkEvery: checkEvery, logger: logger)
    }

    /// Starts from an already loaded file, taken to be the version of `file.path` on disk now
    /// (or, when there is none, an in-memory file kept until one appears).
    public convenience init(_ file: TokenFile, checkEvery: Duration = .zero, logger: Logger) {
        self.init(file, version: FileVersion.current(path: file.path), checkEvery: checkEvery, logger: logger)
    }

    init(_ file: TokenFile, version: FileVersion?, checkEvery: Duration, logger: Logger) {
        self.path = file.path
        self.file = file
        self.version = version
        self.checkEvery = checkEvery
        self.logger = logger
        self.lastCheck = ContinuousClock.now
    }

    /// The tokens to check a request against, after rereading the file if it is due and
    /// changed; nil while the file is unusable (fail closed).
    public func current() -> TokenFile? {
        let now = ContinuousClock.now
        let due: Bool = lock.withLock {
            guard now - lastCheck >= checkEvery else { return false }
            lastCheck = now
            return true
        }
        // The common case, an unchanged file, costs one stat and no reread lock.
        if due, FileVersion.current(path: path) != lock.withLock({ version }) { reload(force: false) }
        return lock.withLock { file }
    }

    /// Rereads the file now, changed or not (SIGHUP). Returns whether tokens are usable after it.
    @discardableResult
    public func reload() -> Bool {
        reload(force: true)
        return lock.withLock { file != nil }
    }

    private func reload(force: Bool) {
        reloadLock.lock()
        defer { reloadLock.unlock() }
        let seen = FileVersion.current(path: path)
        // Unchanged: nothing to do, whether that version loaded or was refused (it is not
        // retried, or logged again, until it changes).
        if !force && seen == lock.withLock({ version }) { return }
        var fresh: TokenFile?
        var freshVersion = seen
        var problem: String?
        do {
            if let (f, v) = try TokenFile.loadIfPresentWithVersion(path: path) {
                fresh = f
                freshVersion = v
            } else {
                problem = "tokens file \(path): no such file"
            }
        } catch let e as VaultError {
            problem = e.message
        } catch {
            problem = "tokens file \(path): \(error)"
        }
        lock.withLock {
            file = fresh
            version = freshVersion
        }
        if let fresh {
            logger.info("tokens file reloaded", metadata: ["tokens": .stringConvertible(fresh.entries.count)])
        } else {
            logger.error("tokens file unusable: no token is accepted until it is fixed",
                         metadata: ["reason": .string(problem ?? "unknown")])
        }
    }
}
