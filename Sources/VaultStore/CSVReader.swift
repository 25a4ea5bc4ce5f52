#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One record of a CSV file, as parsed by `CSVReader`.
public struct CSVRecord: Sendable {
    /// The line on which the record starts (1-based).
    public var line: Int
    public var fields: [String]
    /// Set when the record is malformed (broken quoting, invalid UTF-8). The reader always
    /// resynchronises at the end of the record, so the caller can reject it and go on.
    public var problem: CSVProblem?
}

public struct CSVProblem: Sendable, Equatable {
    /// 0-based index of the field where the problem was seen, when known.
    public var column: Int?
    public var reason: String
}

/// A streaming RFC 4180 reader over a file: bounded memory (one read buffer and one record),
/// quoted fields with `""` escapes and embedded line breaks, LF or CRLF line ends.
///
/// Strict where RFC 4180 is strict: a quote inside an unquoted field, a character after a
/// closing quote and an unterminated quoted field are problems, reported with the line. Every
/// field must be valid UTF-8. Empty lines between records are skipped.
public final class CSVReader {
    private let fd: Int32
    public let path: String
    private let delimiter: UInt8
    /// The read buffer. A `let` pointer, and the parse loop below works on locals: every access
    /// to a class's `var` is checked for exclusivity at run time, which cost more than the
    /// parsing itself at a few accesses per byte.
    private let buffer: UnsafeMutableRawBufferPointer
    private var count = 0
    private var position = 0
    private var eof = false
    private var line = 1
    private var skipLF = false
    private var fieldBytes: [UInt8] = []
    private var fields: [String] = []
    /// Total bytes consumed, for progress reports.
    public private(set) var bytesRead: Int = 0

    public init(path: String, delimiter: UInt8 = UInt8(ascii: ","), bufferSize: Int = 1 << 20) throws(VaultError) {
        self.path = path
        self.delimiter = delimiter
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw VaultError(.notFound, "\(path): no such file") }
            throw VaultError(.notFound, "\(path): cannot open (\(String(cString: strerror(code))))")
        }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw VaultError(.notFound, "\(path): is a directory")
        }
        self.fd = fd
        self.buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bufferSize), alignment: 1)
        fieldBytes.reserveCapacity(256)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    private func refill() throws(VaultError) {
        position = 0
        count = 0
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw VaultError(.internalFailure, "\(path): read failed (\(String(cString: strerror(errno))))")
            }
            if n == 0 { eof = true }
            count = n
            bytesRead += n
            return
        }
    }

    private enum State { case startField, unquoted, quoted, quoteInQuoted }

    /// The next record, or nil at the end of the file.
    public func next() throws(VaultError) -> CSVRecord? {
        // The state lives in locals for the loop and goes back into the object on every exit.
        var fields = self.fields, fieldBytes = self.fieldBytes
        self.fields = []
        self.fieldBytes = []
        fields.removeAll(keepingCapacity: true)
        fieldBytes.removeAll(keepingCapacity: true)
        var position = self.position, count = self.count, line = self.line, skipLF = self.skipLF
        let delimiter = self.delimiter
        let bytes = UnsafeRawBufferPointer(buffer)
        var state = State.startField
        var startLine = line
        var problem: CSVProblem?
        var sawAnything = false
        var quoteLine = line

        var highBits: UInt8 = 0   // OR of the field's bytes: ASCII needs no UTF-8 validation
        func endField() {
            if highBits & 0x80 == 0 {
                fields.append(String(decoding: fieldBytes, as: UTF8.self))
            } else if let s = String(validating: fieldBytes, as: UTF8.self) {
                fields.append(s)
            } else {
                fields.append("")
                if problem == nil { problem = CSVProblem(column: fields.count - 1, reason: "invalid UTF-8") }
            }
            fieldBytes.removeAll(keepingCapacity: true)
            highBits = 0
        }
        func finish() -> CSVRecord {
            let record = CSVRecord(line: startLine, fields: fields, problem: problem)
            self.position = position
            self.line = line
            self.skipLF = skipLF
            self.fields = fields
            self.fieldBytes = fieldBytes
            return record
        }

        while true {
            if position >= count {
                if eof { break }
                do { try refill() } catch {
                    self.position = self.count
                    throw error
                }
                position = 0
                count = self.count
                if count == 0 { break }
            }
            let byte = bytes[position]
            position += 1
            if skipLF {
                skipLF = false
                if byte == 0x0A { continue }
            }
            if !sawAnything {
                // Skip empty lines between records.
                if byte == 0x0A { line += 1; startLine = line; continue }
                if byte == 0x0D { line += 1; startLine = line; skipLF = true; continue }
                sawAnything = true
            }
            switch state {
            case .startField:
                if byte == 0x22 {
                    state = .quoted
                    quoteLine = line
                } else if byte == delimiter {
                    endField()
                } else if byte == 0x0A || byte == 0x0D {
                    endField()
                    line += 1
                    if byte == 0x0D { skipLF = true }
                    return finish()
                } else {
                    fieldBytes.append(byte); highBits |= byte
                    state = .unquoted
                }
            case .unquoted:
                if byte == delimiter {
                    endField()
                    state = .startField
                } else if byte == 0x0A || byte == 0x0D {
                    endField()
                    line += 1
                    if byte == 0x0D { skipLF = true }
                    return finish()
                } else {
                    if byte == 0x22, problem == nil {
                        problem = CSVProblem(column: fields.count, reason: "quote character inside an unquoted field")
                    }
                    fieldBytes.append(byte); highBits |= byte
                }
            case .quoted:
                if byte == 0x22 {
                    state = .quoteInQuoted
                } else {
                    if byte == 0x0A { line += 1 }
                    fieldBytes.append(byte); highBits |= byte
                }
            case .quoteInQuoted:
                if byte == 0x22 {
                    fieldBytes.append(byte); highBits |= byte
                    state = .quoted
                } else if byte == delimiter {
                    endField()
                    state = .startField
                } else if byte == 0x0A || byte == 0x0D {
                    endField()
                    line += 1
                    if byte == 0x0D { skipLF = true }
                    return finish()
                } else {
                    if problem == nil {
                        problem = CSVProblem(column: fields.count, reason: "unexpected character after a closing quote")
                    }
                    fieldBytes.append(byte); highBits |= byte
                    state = .unquoted
                }
            }
        }
        // End of file.
        if !sawAnything {
            _ = finish()
            return nil
        }
        if state == .quoted {
            if problem == nil {
                problem = CSVProblem(column: fields.count, reason: "quoted field opened on line \(quoteLine) is never closed")
            }
        }
        endField()
        return finish()
    }
}
