internal import COpenSSL
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// What a derived key is for. Each purpose gets its own HKDF label, so no key serves two purposes.
public enum KeyPurpose: Sendable, Hashable {
    /// Key-encryption key: wraps subjects' DEKs. Derived from the keyring's *active* version.
    case kek
    /// Pseudonym key: HMAC-SHA256 of normalized external IDs.
    case pseudonym
    /// Blind-index key for one lookup field.
    case blindIndex(field: String)
    /// Seed of the audit log's Ed25519 checkpoint-signing key.
    case auditSigning
    /// Key-check value: lets a store recognise the keyring it was created with.
    case keyCheck
    /// Pseudonym key for exports under one purpose, so exports of two purposes cannot be joined.
    case exportPseudonym(purpose: String)
    /// MAC key of model artifacts: `train` seals each artifact, and nothing loads one whose MAC
    /// does not verify under this key.
    case modelArtifact
    /// Seals the request register's free text and customer IDs (AES-256-GCM): the text a
    /// privacy officer records about a data-subject request never sits in the store in clear.
    case requestRegister
    /// MAC key of ingested records' digests: a re-ingested record equal to the stored one is
    /// recognised without decrypting anything.
    case recordDigest
    /// MAC key of the erasure journal (a file beside the store, or `audit erasures --out`):
    /// `restore` refuses a journal whose lines do not verify under it.
    case erasureJournal
    /// Seals the DP release cache's stored releases (AES-256-GCM): a release answered again at
    /// no cost is served only when it opens under this key (ReleaseCache.swift).
    case releaseCache
    /// MAC key of the release cache's lookup digests: the digest of a query (its canonical form,
    /// where values included) reveals nothing without the keyring.
    case releaseDigest

    /// The HKDF info label, without the "pv:" prefix.
    public var label: String {
        switch self {
        case .kek: return "kek"
        case .pseudonym: return "pseudonym"
        case .blindIndex(let field): return "blind-index:\(field)"
        case .auditSigning: return "audit-signing"
        case .keyCheck: return "key-check"
        case .exportPseudonym(let purpose): return "export-pseudonym:\(purpose)"
        case .modelArtifact: return "model-artifact"
        case .requestRegister: return "request-register"
        case .recordDigest: return "record-digest"
        case .erasureJournal: return "erasure-journal"
        case .releaseCache: return "release-cache"
        case .releaseDigest: return "release-digest"
        }
    }
}

/// A keyring problem. The description reads `keyring <path>: <reason>` and never contains
/// secret bytes.
public struct KeyringError: Error, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The file does not exist.
        case notFound
        /// The file is readable or writable by group or others, is owned by another user, or is
        /// not a regular file.
        case insecurePermissions
        /// The file is not a valid keyring; `reason` names the field.
        case malformed
        /// Reading or writing failed (including: refusing to overwrite an existing file).
        case io
        /// The requested key version is not in the keyring.
        case unknownVersion
        /// The version is retired, and the purpose may not use retired versions (the KEK).
        case retiredVersion
        /// The operation is not allowed in the keyring's state (e.g. retiring the active version).
        case invalidOperation
        /// A PKCS#11 URI that does not parse (a usage error).
        case invalidURI
        /// The key custody refused or is misconfigured: module not found, wrong PIN, no such
        /// key, a key that is extractable, a sealed keyring opened without a URI.
        case custody
        /// The PKCS#11 token is not there (absent, removed, unreachable): the same operation
        /// may succeed later (HTTP 503).
        case custodyUnavailable
        /// The sealed keyring does not open under the token's key: a modified file or another key.
        case sealIntegrity
    }

    public let kind: Kind
    public let path: String
    public let reason: String

    public init(kind: Kind, path: String, reason: String) {
        self.kind = kind
        self.path = path
        self.reason = reason
    }

    public var description: String { "keyring \(path): \(reason)" }
}

/// Versioned 256-bit root secrets and the derivation of purpose keys from them (SPEC §3).
///
/// The file format and the key hierarchy are described in docs/keys-and-encryption.md.
/// Root secrets live in ``SecureBytes``; the JSON parser (Foundation) makes transient copies of
/// the hex text that cannot be wiped, which is why the file itself must be 0600.
public struct Keyring: Sendable {
    /// The identifier in the file's `"format"` field.
    public static let format = "profilevault-keyring"
    /// The file format version this build reads and writes.
    public static let formatVersion = 1
    /// HKDF salt for every purpose key.
    public static let hkdfSalt: [UInt8] = Array("profilevault/v1".utf8)

    struct Entry: Sendable {
        var secret: SecureBytes
        var created: String
        var retired: Bool
    }

    /// Where the keyring was loaded from or last written to; nil for a fresh in-memory one.
    public let path: String?
    /// Where the root of trust lives: the file itself, or a PKCS#11 token that seals it. A
    /// keyring written (``write(to:)``, ``replace(at:)``) is sealed by this custody.
    public let custody: KeyCustody
    /// The version new KEK wraps use.
    public private(set) var active: UInt32
    /// Free text stored in the file (e.g. "EXAMPLE ONLY").
    public var note: String?
    private var entries: [UInt32: Entry]

    /// All key versions, ascending.
    public var versions: [UInt32] { entries.keys.sorted() }

    /// Whether `version` is retired (false for unknown versions).
    public func isRetired(_ version: UInt32) -> Bool { entries[version]?.retired ?? false }

    /// The creation time (ISO 8601) of `version`, if known.
    public func created(_ version: UInt32) -> String? { entries[version]?.created }

    private init(path: String?, active: UInt32, note: String?, entries: [UInt32: Entry], custody: KeyCustody = .file) {
        self.path = path
        self.custody = custody
        self.active = active
        self.note = note
        self.entries = entries
    }

    // MARK: Custody

    /// The same keys under another custody (``write(to:)`` and ``replace(at:)`` then seal
    /// with it, or write the secrets in clear for `.file`).
    public func withCustody(_ custody: KeyCustody) -> Keyring {
        Keyring(path: path, active: active, note: note, entries: entries, custody: custody)
    }

    /// Where to read this keyring again (the file and its custody), for a store that rereads
    /// a rotated keyring file; nil for one that was never in a file.
    public var location: KeyringLocation? { path.map { KeyringLocation(path: $0, custody: custody) } }

    // MARK: Creating

    /// A new keyring with version 1 (32 random bytes from the private DRBG), active.
    public static func generate(note: String?) -> Keyring {
        Keyring(path: nil, active: 1, note: note,
                entries: [1: Entry(secret: .random(count: 32), created: now(), retired: false)])
    }

    /// Adds a version with a fresh random secret and makes it active (for key rotation).
    /// Returns the new version number.
    @discardableResult
    public mutating func addVersion() -> UInt32 {
        let version = (entries.keys.max() ?? 0) + 1
        entries[version] = Entry(secret: .random(count: 32), created: Self.now(), retired: false)
        active = version
        return version
    }

    /// Marks `version` retired: its KEK may no longer be derived (re-wrap every DEK first).
    /// Identity purposes (pseudonym, blind index, audit signing, key check) stay derivable,
    /// because a store's identity version is fixed at init. The active version cannot be retired.
    public mutating func retire(_ version: UInt32) throws(KeyringError) {
        guard entries[version] != nil else { throw unknownVersion(version) }
        guard version != active else {
            throw KeyringError(kind: .invalidOperation, path: displayPath,
                               reason: "version \(version) is the active version; rotate to a new version before retiring it")
        }
        entries[version]!.retired = true
    }

    // MARK: Deriving

    /// HKDF-SHA256(ikm: root secret of `version`, salt: "profilevault/v1",
    /// info: "pv:" + purpose label, 32 bytes).
    ///
    /// Throws `.unknownVersion` for a version not in the keyring, and `.retiredVersion` for
    /// the KEK of a retired version.
    public func derive(_ purpose: KeyPurpose, version: UInt32) throws(KeyringError) -> SecureBytes {
        guard let entry = entries[version] else { throw unknownVersion(version) }
        if case .kek = purpose, entry.retired {
            throw KeyringError(kind: .retiredVersion, path: displayPath,
                               reason: "key version \(version) is retired; its KEK can no longer be used")
        }
        do {
            return try HKDFSHA256.derive(ikm: entry.secret, salt: Self.hkdfSalt,
                                         info: Array("pv:\(purpose.label)".utf8), outputByteCount: 32)
        } catch {
            throw KeyringError(kind: .io, path: displayPath, reason: "key derivation failed: \(error)")
        }
    }

    private var displayPath: String { path ?? "<in memory>" }

    private func unknownVersion(_ version: UInt32) -> KeyringError {
        KeyringError(kind: .unknownVersion, path: displayPath,
                     reason: "no key version \(version) (versions: \(versions.map(String.init).joined(separator: ", ")))")
    }

    private static func now() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ",
                      Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
    }

    // MARK: The example keyring

    /// SHA-256 (hex) of the key-check key (``KeyPurpose/keyCheck``) of the example keyring's
    /// secret (`keys-example/keyring.json`, embedded for `profilectl demo`). That secret is
    /// public; a keyring holding it, under any path and any version number, protects nothing.
    static let exampleKeyCheckFingerprint = "8226f6f3423e06fc2b7faef46a56539c221a95e445f776e18347ac8ca3d29921"

    /// Whether any version of this keyring holds the public example secret (a copy of
    /// `keys-example/keyring.json`, rotated or not). Recognised by content, not by path or note.
    public var isExample: Bool {
        versions.contains { version in
            guard let check = try? derive(.keyCheck, version: version) else { return false }
            let digest = check.withUnsafeBytes { SHA256.hash($0) }
            return digest.map { String(format: "%02x", $0) }.joined() == Self.exampleKeyCheckFingerprint
        }
    }

    // MARK: Loading

    private struct FileModel: Decodable {
        let format: String
        let format_version: Int
        let note: String?
        let active: Double  // any JSON number; checked below so that 1.5 or -1 gets a message naming the field
        let keys: [KeyModel]
    }

    private struct KeyModel: Decodable {
        let version: Double
        let secret: String
        let created: String
        let retired: Bool?
    }

    /// The largest keyring file accepted (a keyring is a few hundred bytes per version).
    static let maximumFileSize = 1 << 20

    /// Reads and validates a keyring file.
    ///
    /// Refuses, before reading a byte, a file that is not a regular file, whose mode grants
    /// anything to group or others (`mode & 0o077 != 0`), like ssh does with private keys, or
    /// that another user owns (``SecretFile/problem(mode:owner:euid:path:)``); the error says
    /// which `chmod` or `chown` fixes it. Malformed content names the offending field.
    ///
    /// A sealed keyring (``SealedKeyring``: `"format": "profilevault-sealed-keyring"`) is
    /// recognised by its content and opened through `hsm`, the PKCS#11 URI of its sealing key;
    /// without one it is refused (`.custody`): the sealed file alone opens nothing. A plain
    /// keyring given with a URI is refused too (`.custody`): the URI promises a token's custody.
    public static func load(path: String, hsm: PKCS11URI? = nil) throws(KeyringError) -> Keyring {
        try withFileBytes(path: path) { (bytes: UnsafeRawBufferPointer) throws(KeyringError) -> Keyring in
            if let sealed = try SealedKeyring.parse(bytes, path: path) {
                guard let hsm else {
                    throw KeyringError(kind: .custody, path: path, reason: "the keyring is sealed by PKCS#11 key \(PKCS11Token.quoted(sealed.object)) on token \(PKCS11Token.quoted(sealed.token)): pass --hsm URI or set PROFILEVAULT_HSM_URI (pkcs11:token=...;object=...?module-path=...&pin-source=file:...)")
                }
                return try sealed.unseal(with: hsm, path: path) { (plain: UnsafeRawBufferPointer, uri: PKCS11URI) throws(KeyringError) -> Keyring in
                    try parse(plain, path: path, custody: .pkcs11(uri))
                }
            }
            // A URI says the operator expects the root of trust in a token: a plain keyring under
            // it would silently keep every root secret in a file, so it is refused (78), never
            // opened as custody `file`. `keys seal` opens the plain keyring without the URI.
            if hsm != nil {
                throw KeyringError(kind: .custody, path: path, reason: "the keyring is a plain file keyring, not sealed, but a PKCS#11 URI was given (--hsm or PROFILEVAULT_HSM_URI): seal it with `profilectl keys seal --hsm URI`, or open it without the URI")
            }
            return try parse(bytes, path: path, custody: .file)
        }
    }

    /// Reads the whole file after the permission checks into a buffer wiped afterwards.
    static func withFileBytes<R>(path: String, _ body: (UnsafeRawBufferPointer) throws(KeyringError) -> R) throws(KeyringError) -> R {
        func fail(_ kind: KeyringError.Kind, _ reason: String) -> KeyringError {
            KeyringError(kind: kind, path: path, reason: reason)
        }
        // Open first and fstat the descriptor, so the checked file is the file read.
        // O_NONBLOCK keeps a FIFO from blocking the open; it does not affect regular files.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let e = errno
            if e == ENOENT { throw fail(.notFound, "no such file (create one with: profilectl keys generate --out \(path))") }
            throw fail(.io, "cannot open: \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail(.io, "cannot stat: \(String(cString: strerror(errno)))") }
        let mode = UInt32(st.st_mode)
        if let problem = SecretFile.problem(mode: mode, owner: UInt32(st.st_uid), euid: UInt32(geteuid()), path: path) {
            throw fail(.insecurePermissions, problem)
        }
        guard Int(st.st_size) <= maximumFileSize else { throw fail(.malformed, "file is larger than 1 MiB; not a keyring") }

        // Read into a buffer we wipe afterwards.
        let capacity = Int(st.st_size) + 1
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer {
            OPENSSL_cleanse_bytes(buffer)
            buffer.deallocate()
        }
        var length = 0
        while length < capacity {
            let n = read(fd, buffer.baseAddress! + length, capacity - length)
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw fail(.io, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            length += n
        }
        guard length < capacity else { throw fail(.malformed, "file grew while it was read") }

        return try body(UnsafeRawBufferPointer(start: buffer.baseAddress, count: length))
    }

    /// Parses and validates the keyring's JSON (the file's bytes, or a sealed keyring's
    /// plaintext).
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String, custody: KeyCustody) throws(KeyringError) -> Keyring {
        func fail(_ kind: KeyringError.Kind, _ reason: String) -> KeyringError {
            KeyringError(kind: kind, path: path, reason: reason)
        }
        guard let base = bytes.baseAddress, bytes.count > 0 else { throw fail(.malformed, "not valid JSON") }
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
        let model: FileModel
        do {
            model = try JSONDecoder().decode(FileModel.self, from: data)
        } catch let error as DecodingError {
            throw fail(.malformed, describe(error))
        } catch {
            throw fail(.malformed, "not valid JSON")
        }

        guard model.format == Self.format else {
            throw fail(.malformed, "field format: expected \"\(Self.format)\"")
        }
        guard model.format_version == Self.formatVersion else {
            throw fail(.malformed, "field format_version: version \(model.format_version) is not supported (this build reads \(Self.formatVersion))")
        }
        guard !model.keys.isEmpty else { throw fail(.malformed, "field keys: no key versions") }
        var entries: [UInt32: Entry] = [:]
        for (i, key) in model.keys.enumerated() {
            guard key.version >= 1, let version = UInt32(exactly: key.version) else {
                throw fail(.malformed, "field keys[\(i)].version: must be an integer in 1...\(UInt32.max)")
            }
            guard entries[version] == nil else { throw fail(.malformed, "field keys[\(i)].version: version \(version) appears twice") }
            guard let secret = secureBytes(fromLowercaseHex: key.secret, count: 32) else {
                throw fail(.malformed, "field keys[\(i)].secret: expected 64 lowercase hex characters (32 bytes)")
            }
            guard isISO8601UTC(key.created) else {
                throw fail(.malformed, "field keys[\(i)].created: expected an ISO 8601 UTC time like 2026-11-22T12:00:00Z")
            }
            entries[version] = Entry(secret: secret, created: key.created, retired: key.retired ?? false)
        }
        guard let active = UInt32(exactly: model.active), let activeEntry = entries[active] else {
            throw fail(.malformed, "field active: \(number(model.active)) is not the version of an entry in keys")
        }
        guard !activeEntry.retired else { throw fail(.malformed, "field active: version \(active) is retired") }
        return Keyring(path: path, active: active, note: model.note, entries: entries, custody: custody)
    }

    private static func number(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
    }

    private static func describe(_ error: DecodingError) -> String {
        func field(_ path: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            var s = ""
            for key in path + (last.map { [$0] } ?? []) {
                if let i = key.intValue { s += "[\(i)]" } else { s += s.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return s.isEmpty ? "(top level)" : s
        }
        // Never echo debugDescription: it could quote a value.
        switch error {
        case .keyNotFound(let key, let context): return "missing field \(field(context.codingPath, key))"
        case .typeMismatch(let type, let context): return "field \(field(context.codingPath)): wrong type (expected \(type))"
        case .valueNotFound(let type, let context): return "field \(field(context.codingPath)): missing or null (expected \(type))"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "field \(field(context.codingPath)): invalid value (out of range?)"
        @unknown default: return "not a valid keyring"
        }
    }

    private static func isISO8601UTC(_ s: String) -> Bool {
        // YYYY-MM-DDTHH:MM:SSZ, optionally with fractional seconds.
        let u = Array(s.utf8)
        guard u.count >= 20, u.last == UInt8(ascii: "Z") else { return false }
        let digits: [Int] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
        let separators: [(Int, Character)] = [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")]
        for i in digits where !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(u[i]) { return false }
        for (i, c) in separators where u[i] != c.asciiValue! { return false }
        if u.count > 20 {
            guard u[19] == UInt8(ascii: "."), u.count > 21 else { return false }
            for i in 20..<(u.count - 1) where !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(u[i]) { return false }
        }
        return true
    }

    // MARK: Writing

    /// Writes the keyring to a new file at `path`, mode 0600, and fsyncs it and its directory.
    ///
    /// Refuses to overwrite an existing file (`O_CREAT | O_EXCL`): losing a keyring loses the data.
    /// Returns the keyring with `path` set.
    @discardableResult
    public func write(to path: String) throws(KeyringError) -> Keyring {
        try Self.writeNewFile(try fileContent(path: path), to: path)
        return Keyring(path: path, active: active, note: note, entries: entries, custody: custody)
    }

    /// Atomically replaces the keyring file at `path` (e.g. after ``addVersion()``): writes
    /// `path.new` (0600, O_EXCL), fsyncs, then renames it over `path`.
    @discardableResult
    public func replace(at path: String) throws(KeyringError) -> Keyring {
        let temporary = path + ".new"
        try Self.writeNewFile(try fileContent(path: path), to: temporary)
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw KeyringError(kind: .io, path: path, reason: "cannot rename \(temporary) into place: \(String(cString: strerror(e)))")
        }
        Self.syncDirectory(of: path)
        return Keyring(path: path, active: active, note: note, entries: entries, custody: custody)
    }

    /// What the file holds under this keyring's custody: the JSON with its secrets (`.file`),
    /// or that JSON sealed by the PKCS#11 key (``SealedKeyring``).
    private func fileContent(path: String) throws(KeyringError) -> [UInt8] {
        switch custody {
        case .file:
            return serialized()
        case .pkcs11(let uri):
            var plain = serialized()
            defer { plain.withUnsafeMutableBytes { OPENSSL_cleanse_bytes($0) } }
            return try plain.withBytes { (p: UnsafeRawBufferPointer) throws(KeyringError) -> [UInt8] in
                try SealedKeyring.seal(p, with: uri, path: path)
            }
        }
    }

    static func writeNewFile(_ content: [UInt8], to path: String) throws(KeyringError) {
        var content = content
        defer { content.withUnsafeMutableBytes { OPENSSL_cleanse_bytes($0) } }
        func fail(_ reason: String) -> KeyringError { KeyringError(kind: .io, path: path, reason: reason) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 {
            let e = errno
            if e == EEXIST {
                throw fail("already exists; refusing to overwrite a keyring (move it away first, or choose another path)")
            }
            throw fail("cannot create: \(String(cString: strerror(e)))")
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(path) }
        }
        guard fchmod(fd, 0o600) == 0 else { throw fail("cannot chmod 600: \(String(cString: strerror(errno)))") }
        var failure: KeyringError?
        content.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = posixWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = fail("cannot write: \(String(cString: strerror(errno)))")
                    return
                }
                offset += n
            }
        }
        if let failure { throw failure }
        guard fsync(fd) == 0 else { throw fail("cannot fsync: \(String(cString: strerror(errno)))") }
        ok = true
        syncDirectory(of: path)
    }

    /// Best effort: makes the new directory entry durable.
    static func syncDirectory(of path: String) {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// The file content, fields in a fixed order, secrets as lowercase hex.
    private func serialized() -> [UInt8] {
        var out: [UInt8] = []
        // Sized up front so the buffer holding hex secrets is never reallocated (which would leave an unwiped copy).
        out.reserveCapacity(512 + 6 * (note?.utf8.count ?? 0) + 256 * entries.count)
        func put(_ s: String) { out.append(contentsOf: s.utf8) }
        func putString(_ s: String) {
            out.append(UInt8(ascii: "\""))
            for u in s.unicodeScalars {
                switch u {
                case "\"": put("\\\"")
                case "\\": put("\\\\")
                case "\n": put("\\n")
                case "\r": put("\\r")
                case "\t": put("\\t")
                case _ where u.value < 0x20: put(String(format: "\\u%04x", u.value))
                default: out.append(contentsOf: String(u).utf8)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
        put("{\n  \"format\": "); putString(Self.format)
        put(",\n  \"format_version\": \(Self.formatVersion)")
        if let note { put(",\n  \"note\": "); putString(note) }
        put(",\n  \"active\": \(active)")
        put(",\n  \"keys\": [")
        let hexDigits = Array("0123456789abcdef".utf8)
        for (i, version) in versions.enumerated() {
            let entry = entries[version]!
            put(i == 0 ? "\n    " : ",\n    ")
            put("{\"version\": \(version), \"secret\": \"")
            entry.secret.withUnsafeBytes { secret in
                for b in secret {
                    out.append(hexDigits[Int(b >> 4)])
                    out.append(hexDigits[Int(b & 0x0f)])
                }
            }
            put("\", \"created\": "); putString(entry.created)
            put(", \"retired\": \(entry.retired)}")
        }
        put("\n  ]\n}\n")
        return out
    }
}

@inline(__always)
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

@inline(__always)
func OPENSSL_cleanse_bytes(_ buffer: UnsafeMutableRawBufferPointer) {
    if let base = buffer.baseAddress, buffer.count > 0 { OPENSSL_cleanse(base, buffer.count) }
}

/// The checks every secret file (keyring, tokens file) passes before a byte of it is read.
public enum SecretFile {
    /// Why a secret file with this mode and owner must not be used, or nil when it may: it must
    /// be a regular file, grant nothing to group or others (`mode & 0o077 == 0`), and be owned
    /// by the effective user (`owner == euid`; another user's file is one that user can read,
    /// replace or chmod behind our back). The reason names the path and the command that fixes
    /// it. `mode` and `owner` are `st_mode` and `st_uid` of an `fstat` of the opened file.
    public static func problem(mode: UInt32, owner: UInt32, euid: UInt32, path: String) -> String? {
        guard mode & 0o170000 == 0o100000 else { return "is not a regular file" }
        let permissions = mode & 0o7777
        if permissions & 0o077 != 0 {
            let what = permissions & 0o044 != 0 ? "is readable by group or others" : "is accessible by group or others"
            return "\(what) (mode \(String(format: "%04o", permissions))); run: chmod 600 \(path)"
        }
        if owner != euid {
            return "is owned by uid \(owner), not by the user running this (uid \(euid)); run: chown \(euid) \(path) (or run as its owner)"
        }
        return nil
    }
}
