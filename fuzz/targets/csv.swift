// libFuzzer target: the streaming CSV reader (Sources/VaultStore/CSVReader.swift).
// Built by fuzz/run.sh together with CSVReader.swift and VaultError.swift.
//
// Properties:
// - the reader never crashes or hangs, and terminates with at most (bytes + 1) records;
// - record line numbers are >= 1, strictly increasing, and not past the file's line count + 1;
// - the records do not depend on the read-buffer size: a 1 MiB buffer and a tiny one (1..16
//   bytes, chosen by the input) give identical records (fields, lines, problems), which tests
//   every state change across a refill (CRLF split over two reads, "" split, UTF-8 split).
#if canImport(Glibc)
import Glibc
#endif

let scratchPath: String = {
    "/tmp/pv-fuzz-csv-\(getpid()).csv"
}()

func writeScratch(_ data: UnsafePointer<UInt8>, _ size: Int) {
    let fd = open(scratchPath, O_CREAT | O_TRUNC | O_WRONLY, 0o600)
    precondition(fd >= 0, "cannot write \(scratchPath)")
    var off = 0
    while off < size {
        let n = write(fd, data + off, size - off)
        precondition(n > 0, "write failed")
        off += n
    }
    close(fd)
}

struct Rec: Equatable {
    var line: Int
    var fields: [String]
    var problem: CSVProblem?
}

func readAll(bufferSize: Int, size: Int) -> [Rec] {
    let reader: CSVReader
    do { reader = try CSVReader(path: scratchPath, bufferSize: bufferSize) } catch { fatalError("open failed: \(error)") }
    var out: [Rec] = []
    while true {
        let r: CSVRecord?
        do { r = try reader.next() } catch { fatalError("read failed: \(error)") }
        guard let r else { break }
        out.append(Rec(line: r.line, fields: r.fields, problem: r.problem))
        precondition(out.count <= size + 1, "more records than bytes")
    }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let small = 1 + Int(data[0] % 16)
    writeScratch(data + 1, size - 1)
    let body = UnsafeBufferPointer(start: data + 1, count: size - 1)
    let newlines = body.reduce(0) { $0 + ($1 == 0x0A || $1 == 0x0D ? 1 : 0) }
    let big = readAll(bufferSize: 1 << 16, size: size)
    var last = 0
    for r in big {
        precondition(r.line >= 1 && r.line > last, "line numbers not increasing: \(last) then \(r.line)")
        precondition(r.line <= newlines + 1, "line \(r.line) past the end (\(newlines) line breaks)")
        last = r.line
    }
    let tiny = readAll(bufferSize: small, size: size)
    precondition(big == tiny, "records differ between buffer sizes 64 KiB and \(small)")
    return 0
}
