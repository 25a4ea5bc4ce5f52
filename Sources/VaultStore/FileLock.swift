import Foundation
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock (`flock`) on a lock file of its own (created 0600, never through
/// a symbolic link, owned by this user), held while `body` runs: how two processes take turns
/// at a read-change-write of a file they both replace by rename (the tokens file, the erasure
/// journal). Readers of the file need no lock: a rename is atomic.
package enum FileLock {
    package static func exclusive<T>(_ lockPath: String, what: String, _ body: () throws -> T) throws -> T {
        func fail(_ why: String) -> VaultError { VaultError(.cannotCreate, "\(what): lock file \(lockPath): \(why)") }
        let fd = open(lockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid() else {
            throw fail("not a regular file of this user")
        }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw fail(String(cString: strerror(errno))) }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }
}
