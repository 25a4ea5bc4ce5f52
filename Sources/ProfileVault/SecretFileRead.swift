import Foundation
import VaultCrypto
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// Reading the small files `serve` is configured with (the TLS certificate and private key)
/// under the rules the keyring and the tokens file follow. Errors are configuration errors
/// (exit 78) that name the file as given and never quote its content.
public enum ConfigurationFile {
    /// The largest file read (a PEM chain or key is a few KiB).
    public static let maximumSize = 1 << 20

    /// The bytes of `path`. With `secret`, refuses before reading a byte a file that is not a
    /// regular file, that grants anything to group or others, or that another user owns (the
    /// keyring's rule: `SecretFile.problem`). `what` names the file in errors (`--tls-key FILE`).
    ///
    /// With `trusted` (a file that decides how the service runs: `serve --config`), refuses a
    /// file that group or others may write, or that neither this user nor root owns: whoever
    /// can change it can turn TLS off, point the service at another store or keyring, or allow
    /// the example keys.
    public static func contents(of path: String, what: String, secret: Bool, trusted: Bool = false) throws -> [UInt8] {
        func fail(_ reason: String) -> VaultError { VaultError(.configuration, "\(what) \(path): \(reason)") }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let e = errno
            if e == ENOENT { throw fail("no such file") }
            throw fail("cannot open: \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("cannot stat: \(String(cString: strerror(errno)))") }
        if secret, let problem = SecretFile.problem(mode: UInt32(st.st_mode), owner: UInt32(st.st_uid), euid: UInt32(geteuid()), path: path) {
            throw fail(problem)
        }
        if trusted {
            let permissions = UInt32(st.st_mode) & 0o7777
            if permissions & 0o022 != 0 {
                throw fail("can be written by group or others (mode \(String(format: "%04o", permissions))); run: chmod go-w \(path)")
            }
            if st.st_uid != geteuid() && st.st_uid != 0 {
                throw fail("is owned by uid \(st.st_uid), neither the user running this (uid \(geteuid())) nor root")
            }
        }
        guard UInt32(st.st_mode) & 0o170000 == 0o100000 else { throw fail("is not a regular file") }
        guard st.st_size >= 0, st.st_size <= maximumSize else { throw fail("larger than 1 MiB") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var length = 0
        while length < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + length, $0.count - length) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw fail("cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            length += n
        }
        guard length < bytes.count else { throw fail("grew while it was read") }
        bytes.removeSubrange(length...)
        return bytes
    }
}
