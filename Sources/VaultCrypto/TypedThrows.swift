// Typed-throws adapters for standard-library APIs that are still `rethrows` (their errors come
// back as `any Error`). Each routes the body's typed error through a `Result`.

extension Array where Element == UInt8 {
    @inline(__always)
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes { buffer in Result { () throws(E) -> R in try body(buffer) } }.get()
    }

    @inline(__always)
    mutating func withMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withUnsafeMutableBytes { buffer in Result { () throws(E) -> R in try body(buffer) } }.get()
    }

    /// A new array of exactly `count` bytes written by `body`, without zero-filling first.
    @inline(__always)
    static func filled<E: Error>(count: Int, _ body: (UnsafeMutableRawPointer?) throws(E) -> Void) throws(E) -> [UInt8] {
        var failure: E?
        let array = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            do throws(E) {
                try body(UnsafeMutableRawPointer(buffer.baseAddress))
                initialized = count
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        return array
    }
}

extension String {
    @inline(__always)
    mutating func withUTF8Bytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withUTF8 { utf8 in Result { () throws(E) -> R in try body(UnsafeRawBufferPointer(utf8)) } }.get()
    }
}
