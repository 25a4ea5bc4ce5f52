import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file the product is about to write, for everything it hands out: exports, rejects,
/// artifacts, public keys, the tokens file (SPEC §12: "Every file the product writes is new
/// (O_EXCL, 0600) unless `--force`, and never the keyring, the store or the policy").
///
/// - Without `force` the file must be new: it is created with `O_CREAT | O_EXCL | O_NOFOLLOW |
///   O_CLOEXEC`, mode 0600, so an existing file, a symbolic link (even a dangling one) or a
///   hard link is never written through.
/// - With `force` an existing regular file is replaced, never written into: the content goes
///   to a new 0600 file beside it, which is fsynced and renamed over the target; then the
///   directory is fsynced. The old file's mode and owner do not survive (a 0666 file becomes a
///   0600 one). A symbolic link or anything but a regular file is still refused.
/// - Never, even with `force`, a protected file: one whose device and inode (of the path, and
///   of what a symbolic link there points at) are those of a protected path (the keyring, the
///   store, its `-wal` and `-shm`, the tokens file, `schema.yaml` and `policy.yaml`); a path
///   that names a protected file which does not exist yet (a store's `-wal`); or, whatever its
///   name, a file that is a ProfileVault keyring, a tokens file or an SQLite database (the
///   product never writes one of those as an output, and this protects the files a command
///   was not told about, such as the tokens file of a running service).
///
/// Every refusal and every failure to create is a ``VaultError`` of kind `.cannotCreate`
/// (exit 73) naming the path and the reason, and leaves nothing written. Content is only in
/// place after ``commit()``; a file that is never committed (an error on the way) is removed:
/// the new file this created, or the temporary file of a replacement. Nothing else is ever
/// removed.
public final class OutputFile {
    /// Where the content ends up.
    public let path: String
    /// The file being written: `path` itself for a new file, a temporary file beside it when
    /// replacing.
    private let writingPath: String
    private let replacing: Bool
    private let protected: [ProtectedFile]
    private var fd: Int32
    /// Identity of the file this created (to remove only that file, never a stranger's).
    private let created: FileIdentity
    private var finished = false

    /// Opens the output `path` for writing. `protecting` lists the files no output may
    /// replace (see the type's documentation); `what` names the output in messages ("the
    /// export", "the rejects file").
    /// `replaceable` false: an output that is never replaced (an audit archive); an existing
    /// path is refused without suggesting `--force`.
    public init(path: String, force: Bool, protecting: [ProtectedFile], what: String = "the output file", replaceable: Bool = true) throws {
        func refuse(_ reason: String) -> VaultError { VaultError(.cannotCreate, "\(path): cannot create \(what): \(reason)") }
        let exists = replaceable ? "the file already exists; pass --force to replace it" : "the file already exists; \(what) is never replaced: name a new file"
        guard !path.isEmpty else { throw VaultError(.cannotCreate, "cannot create \(what): the path is empty") }
        self.path = path
        self.protected = protecting
        let existing = FileIdentity.ofLink(path)
        if let reason = Self.protectedReason(path, protecting: protecting) {
            throw refuse(reason + "; an output never replaces it, even with --force")
        }
        if existing != nil {
            if let reason = Self.unreplaceableReason(path) { throw refuse(reason) }
            guard force && replaceable else { throw refuse(exists) }
        }
        replacing = existing != nil
        writingPath = replacing ? Self.temporaryPath(beside: path) : path
        let fd = open(writingPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let e = errno
            if e == EEXIST && !replacing { throw refuse(exists) }
            throw refuse(replacing ? "cannot create a temporary file beside it: \(String(cString: strerror(e)))" : String(cString: strerror(e)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            unlink(writingPath)
            throw refuse(String(cString: strerror(e)))
        }
        self.fd = fd
        self.created = FileIdentity(st)
        // The umask may only have removed bits; make the mode exactly 0600 all the same.
        guard fchmod(fd, 0o600) == 0 else {
            let e = errno
            discard()
            throw refuse("cannot set mode 0600: \(String(cString: strerror(e)))")
        }
    }

    deinit { discard() }

    /// Appends bytes (retrying short writes and EINTR).
    public func write(_ bytes: [UInt8]) throws {
        guard !finished else { throw VaultError(.cannotCreate, "\(path): written after it was closed") }
        try bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw VaultError(.cannotCreate, "\(path): cannot write: \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }

    public func write(_ text: String) throws { try write(Array(text.utf8)) }

    /// Puts the content in place: fsyncs the file; when replacing, checks again that the
    /// target may be replaced, renames the temporary file over it and fsyncs the directory.
    /// On failure the file is removed and the error is `.cannotCreate` (exit 73).
    public func commit() throws {
        guard !finished else { return }
        func fail(_ reason: String) -> VaultError {
            discard()
            return VaultError(.cannotCreate, "\(path): cannot create the file: \(reason)")
        }
        guard fsync(fd) == 0 else { throw fail("cannot fsync: \(String(cString: strerror(errno)))") }
        if replacing {
            // The target may have changed since it was checked (a link to the keyring put there).
            if let reason = Self.protectedReason(path, protecting: protected) { throw fail(reason + "; an output never replaces it, even with --force") }
            if let reason = Self.unreplaceableReason(path) { throw fail(reason) }
            guard rename(writingPath, path) == 0 else { throw fail("cannot rename into place: \(String(cString: strerror(errno)))") }
        }
        close(fd)
        fd = -1
        finished = true
        Self.syncDirectory(of: path)
    }

    /// Removes what this created, unless committed: the new file, or the temporary file of a
    /// replacement (only if it is still the file this created).
    public func discard() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        if FileIdentity.ofLink(writingPath) == created { unlink(writingPath) }
    }

    // MARK: - Checks

    /// Why `path` may not be an output at all (a protected file, by identity or by name; with
    /// `sniff`, a keyring, tokens file or SQLite database by content), or nil.
    public static func protectedReason(_ path: String, protecting: [ProtectedFile], sniff: Bool = true) -> String? {
        let target = [FileIdentity.ofLink(path), FileIdentity.ofTarget(path)].compactMap { $0 }
        let canonicalTarget = canonicalPath(path)
        for p in protecting where !p.path.isEmpty {
            let ids = [FileIdentity.ofLink(p.path), FileIdentity.ofTarget(p.path)].compactMap { $0 }
            if target.contains(where: { ids.contains($0) }) {
                return "it is \(p.what) \(p.path) (the same file: device and inode)"
            }
            if let canonicalTarget, canonicalTarget == canonicalPath(p.path) {
                return "it is \(p.what) \(p.path)"
            }
        }
        if sniff, let kind = Self.sniff(path) { return "it is \(kind)" }
        return nil
    }

    /// Why an existing `path` cannot be replaced even with --force (not a regular file), or nil.
    static func unreplaceableReason(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFLNK: return "it is a symbolic link; an output is never written through one (remove it, or name the file itself)"
        case S_IFDIR: return "it is a directory"
        default: return "it is not a regular file"
        }
    }

    static func describe(_ p: String, protecting: [ProtectedFile]) -> String {
        let name = (p as NSString).lastPathComponent
        if name == "schema.yaml" || name == "policy.yaml" { return "the policy file \(p)" }
        if p.hasSuffix("-wal") || p.hasSuffix("-shm") { return "a file of the store (\(p))" }
        return "a file the product protects (\(p))"
    }

    /// What a file the product never writes as an output is, judged by its first bytes.
    static func sniff(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
        var head = [UInt8](repeating: 0, count: 512)
        let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        head.removeSubrange(n...)
        if head.starts(with: Array("SQLite format 3\u{0}".utf8)) { return "an SQLite database (a store?)" }
        // A write-ahead log: magic 0x377f0682 or 0x377f0683, big-endian.
        if head.count >= 4, head[0] == 0x37, head[1] == 0x7f, head[2] == 0x06, head[3] == 0x82 || head[3] == 0x83 {
            return "an SQLite write-ahead log (of a store?)"
        }
        let text = String(decoding: head, as: UTF8.self)
        if text.contains("\"profilevault-keyring\"") { return "a ProfileVault keyring" }
        if text.contains("\"profilevault-tokens\"") { return "a ProfileVault tokens file" }
        return nil
    }

    /// The path with its directory resolved (symbolic links, `.`, `..`), for a file that may
    /// not exist; nil when the directory does not exist.
    static func canonicalPath(_ path: String) -> String? {
        let ns = path as NSString
        let dir = ns.deletingLastPathComponent.isEmpty ? "." : ns.deletingLastPathComponent
        let name = ns.lastPathComponent
        guard let resolved = realpath(dir, nil) else { return nil }
        defer { free(resolved) }
        let base = String(cString: resolved)
        return (base.hasSuffix("/") ? base : base + "/") + name
    }

    static func temporaryPath(beside path: String) -> String {
        let ns = path as NSString
        let dir = ns.deletingLastPathComponent
        let random = (0..<6).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let name = "." + ns.lastPathComponent + ".profilevault-" + random + ".tmp"
        return dir.isEmpty ? name : dir + "/" + name
    }

    /// Best effort: makes the new directory entry durable.
    static func syncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    // MARK: - Convenience

    /// Writes `bytes` to a new file at `path` (or replaces it with `force`), all or nothing.
    public static func write(_ bytes: [UInt8], to path: String, force: Bool, protecting: [ProtectedFile], what: String = "the output file") throws {
        let file = try OutputFile(path: path, force: force, protecting: protecting, what: what)
        try file.write(bytes)
        try file.commit()
    }

    public static func write(_ text: String, to path: String, force: Bool, protecting: [ProtectedFile], what: String = "the output file") throws {
        try write(Array(text.utf8), to: path, force: force, protecting: protecting, what: what)
    }
}

/// A file no output may replace, and what it is (for the message).
public struct ProtectedFile: Sendable, Equatable {
    public var path: String
    /// "the keyring", "the store", "the tokens file", ...
    public var what: String
    public init(_ path: String, _ what: String) {
        self.path = path
        self.what = what
    }

    public static func keyring(_ path: String) -> ProtectedFile { ProtectedFile(path, "the keyring") }
    public static func tokens(_ path: String) -> ProtectedFile { ProtectedFile(path, "the tokens file") }
    /// The store and its `-wal` and `-shm` files.
    /// The store and the files SQLite keeps beside it. SQLite follows a symbolic link to the
    /// database and keeps `-wal`, `-shm` and `-journal` beside the file it reached, so those are
    /// protected at both the given path and the resolved one.
    public static func store(_ path: String) -> [ProtectedFile] {
        // A PostgreSQL store (`postgres://...`) has no file an output could replace.
        let lower = path.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") { return [] }
        var bases = [path]
        if let real = realpath(path, nil) {
            let resolved = String(cString: real)
            free(real)
            if resolved != path { bases.append(resolved) }
        }
        return bases.flatMap { base in
            [ProtectedFile(base, "the store"), ProtectedFile(base + "-wal", "the store's write-ahead log"),
             ProtectedFile(base + "-shm", "the store's shared-memory file"), ProtectedFile(base + "-journal", "the store's rollback journal")]
        }
    }
    /// `schema.yaml` and `policy.yaml` of a policy directory.
    public static func policy(directory: String) -> [ProtectedFile] {
        let dir = directory.hasSuffix("/") ? directory : directory + "/"
        return [ProtectedFile(dir + "schema.yaml", "the policy file"), ProtectedFile(dir + "policy.yaml", "the policy file")]
    }
}

/// Device and inode of a file.
struct FileIdentity: Equatable {
    var device: UInt64
    var inode: UInt64

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// Of the path itself (a symbolic link's own inode).
    static func ofLink(_ path: String) -> FileIdentity? {
        var st = stat()
        return lstat(path, &st) == 0 ? FileIdentity(st) : nil
    }

    /// Of what the path names, symbolic links followed.
    static func ofTarget(_ path: String) -> FileIdentity? {
        var st = stat()
        return stat(path, &st) == 0 ? FileIdentity(st) : nil
    }
}

extension ProfileStore {
    /// The store's own files, which no output may replace.
    public var ownFiles: [ProtectedFile] { ProtectedFile.store(path) }
}
