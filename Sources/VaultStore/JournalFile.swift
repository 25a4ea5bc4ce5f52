import Foundation
import VaultAudit
import VaultCrypto
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// File operations of the append-only erasure journal (``ProfileStore/appendToErasureJournal(at:pseudonyms:mark:merging:catchUp:)``):
/// reading and verifying only its header and last record, appending durably, and reading it whole.
enum JournalFile {
    /// Reads `count` bytes at `offset`; nil on a read error or a short read.
    static func read(_ fd: Int32, at offset: off_t, count: Int) -> [UInt8]? {
        guard count >= 0 else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return -1 }
                return pread(fd, base + done, count - done, offset + off_t(done))
            }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { return nil }
            done += n
        }
        return out
    }

    static func readAll(_ fd: Int32, size: off_t, path: String) throws -> [UInt8] {
        guard let count = Int(exactly: size), let bytes = read(fd, at: 0, count: count) else {
            throw VaultError(.cannotCreate, "\(path): cannot read the erasure journal: \(String(cString: strerror(errno)))")
        }
        return bytes
    }

    /// The number and MAC of the last record of the format-2 journal of `storeID` open at `fd`,
    /// when its header verifies (MAC, format, record 0, store) and its last record verifies
    /// against the MAC of the record before it and carries the next number. Nil otherwise (no
    /// such journal, another format, a damaged or cut tail): the caller then reads it whole.
    static func verifiedTail(_ fd: Int32, size: off_t, key: SharedHMACSHA256Key, storeID: String) -> (last: Int64, mac: [UInt8])? {
        guard size > 0, let head = read(fd, at: 0, count: Int(min(size, 4096))), let end = head.firstIndex(of: UInt8(ascii: "\n")),
              let (hbody, hmac) = ErasureJournal.split(Array(head[..<end])),
              constantTimeEqual(key.mac([UInt8](repeating: 0, count: 32) + hbody), hmac),
              let header = try? JSONValue.parse(hbody), header["format"] == .string(ErasureJournal.appendOnlyFormat),
              header["n"] == .int(0), header["store"] == .string(storeID) else { return nil }
        if off_t(end + 1) == size { return (0, hmac) }
        guard read(fd, at: size - 1, count: 1) == [UInt8(ascii: "\n")] else { return nil }
        // The last two lines: read back from the end until both are inside the window.
        var window: off_t = min(size, 65_536)
        while true {
            guard let count = Int(exactly: window), let bytes = read(fd, at: size - window, count: count) else { return nil }
            let body = bytes.dropLast()
            if let lastStart = body.lastIndex(of: UInt8(ascii: "\n")).map({ $0 + 1 }) {
                let before = body[..<(lastStart - 1)]
                let previousStart = before.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 }
                if previousStart != nil || window == size {
                    let previous = Array(before[(previousStart ?? before.startIndex)...])
                    let last = Array(body[lastStart...])
                    guard let (pbody, pmac) = ErasureJournal.split(previous), let (lbody, lmac) = ErasureJournal.split(last),
                          constantTimeEqual(key.mac(pmac + lbody), lmac),
                          let p = try? JSONValue.parse(pbody), case .int(let pn)? = p["n"],
                          let l = try? JSONValue.parse(lbody), case .int(let ln)? = l["n"], pn < Int64.max, ln == pn + 1 else { return nil }
                    return (ln, lmac)
                }
            }
            guard window < size else { return nil }
            window = min(size, window * 4)
        }
    }

    /// Writes `bytes` whole (retrying short writes and EINTR).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                guard let base = buffer.baseAddress else { return false }
                let n = write(fd, base + offset, buffer.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
    }

    /// Appends `bytes` to the file open at `fd` (O_APPEND, `size` bytes long) and fsyncs it.
    /// On failure the file is cut back to `size` (no half record stays) and the reason returned.
    static func append(_ fd: Int32, _ bytes: [UInt8], restoringSize size: off_t) -> String? {
        guard writeAll(fd, bytes), fsync(fd) == 0 else {
            let why = String(cString: strerror(errno))
            _ = ftruncate(fd, size)
            _ = fsync(fd)
            return why
        }
        return nil
    }

    /// fsyncs the directory holding `path` (so a rename into it survives a crash).
    static func syncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}
