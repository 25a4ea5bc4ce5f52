import Foundation
public import Logging
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// The private scratch directories earlier versions of the service staged request files in (a
/// training job's YAML, an audit export). No request writes a file any more: ingest bodies,
/// jobs and audit exports stay in memory. A process of such a version that died mid-request
/// (killed, crashed) left a directory `profilevault-scratch.<pid>.XXXXXX` (or the older
/// `profilevault-http.XXXXXX`) behind, possibly holding request data; ``sweep(roots:logger:)``
/// removes those when the service starts.
public enum ScratchSpace {
    /// The name of every scratch directory starts with this, followed by the creating
    /// process's id, a dot and `mkdtemp`'s six characters.
    public static let prefix = "profilevault-scratch."
    /// The name earlier versions gave their scratch directories (`profilevault-http.XXXXXX`, no
    /// process id): swept when untouched for ``legacyAge`` seconds.
    static let legacyPrefix = "profilevault-http."
    /// A directory of the earlier pattern is swept only when its modification time is this old
    /// (seconds): it names no process, and one request's directory lives far shorter.
    static let legacyAge: Double = 15 * 60

    /// Where scratch directories go by default: `/dev/shm` (memory, never on disk) when it is a
    /// writable directory, else the temporary directory.
    public static var defaultRoot: String {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &isDir) && isDir.boolValue
            && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory()
    }

    /// The directories a service with this configured root sweeps at start-up: that root, or
    /// (by default) both places a default root may have been.
    static func sweepRoots(configured: String?) -> [String] {
        if let configured { return [configured] }
        var roots = [NSTemporaryDirectory()]
        if defaultRoot == "/dev/shm" { roots.insert("/dev/shm", at: 0) }
        return roots
    }

    /// Whether the entry `name` of a scratch root, with `lstat` result `st`, is a scratch
    /// directory left by a process that is gone: a real directory (not a link) of this
    /// product's naming, owned by this process's user, and either naming a process id that is
    /// not running (never this process's own) or, for the earlier unnumbered naming, untouched
    /// for ``legacyAge`` seconds.
    static func isStale(name: String, _ st: stat, now: Double) -> Bool {
        guard (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == geteuid() else { return false }
        if name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let dot = rest.firstIndex(of: "."), rest[rest.index(after: dot)...].count == 6,
                  let pid = Int32(rest[..<dot]), pid > 0 else { return false }
            if pid == getpid() { return false }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        if name.hasPrefix(legacyPrefix), name.count == legacyPrefix.count + 6 {
            let modified = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
            return now - modified >= legacyAge
        }
        return false
    }

    /// Removes a scratch directory and everything in it; false when it could not.
    @discardableResult
    static func remove(_ dir: String) -> Bool {
        do {
            try FileManager.default.removeItem(atPath: dir)
            return true
        } catch {
            var st = stat()
            return lstat(dir, &st) != 0   // already gone
        }
    }

    /// Removes the stale scratch directories (``isStale(name:_:now:)``) directly under each of
    /// `roots`; returns how many. A root that cannot be listed is skipped.
    @discardableResult
    public static func sweep(roots: [String], logger: Logger? = nil) -> Int {
        var removed = 0
        let now = Date().timeIntervalSince1970
        for root in roots {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { continue }
            let base = root.hasSuffix("/") ? root : root + "/"
            for name in names where name.hasPrefix(prefix) || name.hasPrefix(legacyPrefix) {
                var st = stat()
                guard lstat(base + name, &st) == 0, isStale(name: name, st, now: now) else { continue }
                if remove(base + name) {
                    removed += 1
                } else {
                    logger?.warning("could not remove a stale scratch directory", metadata: ["root": .string(root)])
                }
            }
        }
        if removed > 0 {
            logger?.notice("removed stale scratch directories left by a process that ended without cleaning up",
                           metadata: ["count": .stringConvertible(removed)])
        }
        return removed
    }
}
