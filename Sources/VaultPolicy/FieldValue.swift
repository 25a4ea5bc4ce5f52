/// A validated profile value, as ingest stores it.
public enum FieldValue: Sendable, Equatable {
    case null
    case int(Int64)
    case float(Double)
    case text(String)
    /// Days since 1970-01-01.
    case date(Int32)
    case bool(Bool)
}

/// Why a raw value was refused. For a PII field the reason never contains the value; `detail`
/// (what the audit log records) never contains any value.
public struct ValueError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    /// The reason without the value: "value is not an integer".
    public let detail: String
    public init(reason: String, detail: String? = nil) {
        self.reason = reason
        self.detail = detail ?? reason
    }
    public var description: String { reason }
}

extension FieldSpec {
    /// Validates and converts one raw value (a CSV cell or JSON scalar rendered as text).
    ///
    /// Non-string types are trimmed of ASCII whitespace. Empty is `.null` when the field is not
    /// required, an error otherwise. Numbers are strict decimals (`int`: no fraction or exponent;
    /// `float`: finite, optional exponent); dates are `YYYY-MM-DD` real calendar days; categories
    /// must be in the domain (case-sensitive); bounds reject or clamp per `onOutOfBounds`;
    /// strings are at most `maxLength` bytes.
    public func parse(_ raw: Substring) throws(ValueError) -> FieldValue {
        if type == .string {
            let n = raw.utf8.count
            if n == 0 {
                if required { throw ValueError(reason: "missing required value") }
                return .null
            }
            if n > maxLength { throw ValueError(reason: "longer than \(maxLength) bytes") }
            if let c = ControlCharacter.first(in: raw.utf8) { throw ControlCharacter.refusal(c) }
            return .text(String(raw))
        }
        let result: Result<FieldValue, ValueError> = DateParsing.withBytes(raw) { all in
            let (lo, hi) = ValueParsing.trim(all)
            if lo == hi {
                return required ? .failure(ValueError(reason: "missing required value")) : .success(.null)
            }
            let b = UnsafeBufferPointer(rebasing: all[lo..<hi])
            return parseTrimmed(b)
        }
        return try result.get()
    }

    /// The value for messages: quoted for attributes, never shown for PII.
    /// How an error names the bad value: quoted only when it looks like a number or a date
    /// (digits and `+-.eE:T`, at most 32 bytes). Anything else, and any value of a PII field,
    /// is just "value": a record whose columns are shifted can put a name or an e-mail into a
    /// non-PII column, and error messages never echo PII.
    private func shown(_ b: UnsafeBufferPointer<UInt8>) -> String {
        if pii { return "value" }
        return ValueParsing.safeQuote(b).map { "value " + $0 } ?? "value"
    }

    private func parseTrimmed(_ b: UnsafeBufferPointer<UInt8>) -> Result<FieldValue, ValueError> {
        switch type {
        case .int:
            switch ValueParsing.int64(b) {
            case .value(let v):
                guard let bounds else { return .success(.int(v)) }
                let lo = Int64(bounds.lowerBound), hi = Int64(bounds.upperBound)
                if v >= lo && v <= hi { return .success(.int(v)) }
                if onOutOfBounds == .clamp { return .success(.int(v < lo ? lo : hi)) }
                return .failure(refused(b, outOfBounds(bounds)))
            case .overflow:
                return .failure(refused(b, "does not fit a 64-bit integer"))
            case .syntax:
                return .failure(refused(b, "is not an integer"))
            }
        case .float:
            guard let v = ValueParsing.double(b) else {
                return .failure(refused(b, "is not a finite decimal number"))
            }
            guard let bounds else { return .success(.float(v)) }
            if bounds.contains(v) { return .success(.float(v)) }
            if onOutOfBounds == .clamp { return .success(.float(min(max(v, bounds.lowerBound), bounds.upperBound))) }
            return .failure(refused(b, outOfBounds(bounds)))
        case .date:
            guard b.count == 10, let d = DateParsing.parseDate(b, 0) else {
                return .failure(refused(b, "is not a calendar date YYYY-MM-DD"))
            }
            return .success(.date(Int32(d)))
        case .bool:
            guard let v = ValueParsing.bool(b) else {
                return .failure(refused(b, "is not a boolean (true/false, yes/no, 1/0)"))
            }
            return .success(.bool(v))
        case .category:
            if let v = lookupDomain(b) { return .success(.text(v)) }
            if onOutOfBounds == .clamp { return .success(.text("other")) }
            return .failure(refused(b, "is not in the domain of \(name)"))
        case .string:
            return .success(.text(String(decoding: b, as: UTF8.self)))
        }
    }

    private func outOfBounds(_ bounds: ClosedRange<Double>) -> String {
        "is outside bounds [\(formatNumber(bounds.lowerBound)), \(formatNumber(bounds.upperBound))]"
    }

    /// The refusal of `b`: the message names the value as ``shown(_:)`` does, the detail says
    /// just "value".
    private func refused(_ b: UnsafeBufferPointer<UInt8>, _ why: String) -> ValueError {
        ValueError(reason: "\(shown(b)) \(why)", detail: "value \(why)")
    }

    /// The domain's own string for these bytes (no allocation for small domains).
    @inline(__always)
    private func lookupDomain(_ b: UnsafeBufferPointer<UInt8>) -> String? {
        guard let domain else { return nil }
        if domain.count <= 16 {
            for d in domain where d.utf8.count == b.count && d.utf8.elementsEqual(b) { return d }
            return nil
        }
        let s = String(decoding: b, as: UTF8.self)
        return domainSet?.contains(s) == true ? s : nil
    }
}

extension EventValueSpec {
    /// Validates an event value: trimmed, a strict int or finite float, within bounds (or clamped
    /// when `onOutOfBounds` is `.clamp`). Event values are not personal data, so messages quote them.
    public func parse(_ raw: Substring) throws(ValueError) -> Double {
        let result: Result<Double, ValueError> = DateParsing.withBytes(raw) { all in
            let (lo, hi) = ValueParsing.trim(all)
            if lo == hi { return .failure(ValueError(reason: "missing value")) }
            let b = UnsafeBufferPointer(rebasing: all[lo..<hi])
            let v: Double
            if type == .int {
                switch ValueParsing.int64(b) {
                case .value(let i): v = Double(i)
                case .overflow: return .failure(ValueError(reason: "value \(ValueParsing.safeQuote(b) ?? "") does not fit a 64-bit integer".replacingOccurrences(of: "value  ", with: "value "), detail: "value does not fit a 64-bit integer"))
                case .syntax: return .failure(ValueError(reason: "value \(ValueParsing.safeQuote(b) ?? "") is not an integer".replacingOccurrences(of: "value  ", with: "value "), detail: "value is not an integer"))
                }
            } else {
                guard let d = ValueParsing.double(b) else {
                    return .failure(ValueError(reason: "value \(ValueParsing.safeQuote(b) ?? "") is not a finite decimal number".replacingOccurrences(of: "value  ", with: "value "), detail: "value is not a finite decimal number"))
                }
                v = d
            }
            if bounds.contains(v) { return .success(v) }
            if onOutOfBounds == .clamp { return .success(min(max(v, bounds.lowerBound), bounds.upperBound)) }
            return .failure(
                ValueError(
                    reason:
                        "value \(ValueParsing.quote(b)) is outside bounds [\(formatNumber(bounds.lowerBound)), \(formatNumber(bounds.upperBound))]",
                    detail: "value is outside bounds [\(formatNumber(bounds.lowerBound)), \(formatNumber(bounds.upperBound))]"
                ))
        }
        return try result.get()
    }
}

extension EventKindSpec {
    /// The longest item key accepted, in bytes.
    public static let maxItemLength = 256

    /// Validates an event's item key: trimmed, non-empty, at most 256 bytes; for `int` items a
    /// strict integer, returned in canonical decimal form.
    public func parseItem(_ raw: Substring) throws(ValueError) -> String {
        let result: Result<String, ValueError> = DateParsing.withBytes(raw) { all in
            let (lo, hi) = ValueParsing.trim(all)
            if lo == hi { return .failure(ValueError(reason: "missing item")) }
            let b = UnsafeBufferPointer(rebasing: all[lo..<hi])
            if b.count > Self.maxItemLength {
                return .failure(ValueError(reason: "item longer than \(Self.maxItemLength) bytes"))
            }
            if let c = ControlCharacter.first(in: b) { return .failure(ControlCharacter.refusal(c, what: "item")) }
            if itemType == .int {
                guard case .value(let v) = ValueParsing.int64(b) else {
                    return .failure(ValueError(reason: "item \(ValueParsing.safeQuote(b) ?? "") is not an integer".replacingOccurrences(of: "item  ", with: "item "), detail: "item is not an integer"))
                }
                return .success(String(v))
            }
            return .success(String(decoding: b, as: UTF8.self))
        }
        return try result.get()
    }
}

/// Strict, allocation-free number and boolean scanning over UTF-8 bytes.
enum ValueParsing {
    enum IntResult { case value(Int64), overflow, syntax }

    @inline(__always)
    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }

    @inline(__always)
    static func trim(_ b: UnsafeBufferPointer<UInt8>) -> (Int, Int) {
        var lo = 0, hi = b.count
        while lo < hi, isSpace(b[lo]) { lo += 1 }
        while hi > lo, isSpace(b[hi - 1]) { hi -= 1 }
        return (lo, hi)
    }

    /// `[+-]?[0-9]+`, within Int64.
    static func int64(_ b: UnsafeBufferPointer<UInt8>) -> IntResult {
        var i = 0
        var negative = false
        if i < b.count, b[i] == 0x2B || b[i] == 0x2D {
            negative = b[i] == 0x2D
            i += 1
        }
        guard i < b.count else { return .syntax }
        var v: Int64 = 0
        var overflow = false
        while i < b.count {
            let d = b[i] &- 0x30
            guard d <= 9 else { return .syntax }
            if !overflow {
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                // Accumulate negatively so that Int64.min parses.
                let (s, o2) = m.subtractingReportingOverflow(Int64(d))
                if o1 || o2 { overflow = true } else { v = s }
            }
            i += 1
        }
        if overflow { return .overflow }
        if negative { return .value(v) }
        let (p, o) = (0 as Int64).subtractingReportingOverflow(v)
        return o ? .overflow : .value(p)
    }

    private static let powersOf10: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
        1e19, 1e20, 1e21, 1e22,
    ]

    /// `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`, finite. Correctly rounded: a fast
    /// exact path for up to 15 significant digits and small exponents, the standard library's
    /// parser otherwise.
    static func double(_ b: UnsafeBufferPointer<UInt8>) -> Double? {
        var i = 0
        var negative = false
        if i < b.count, b[i] == 0x2B || b[i] == 0x2D {
            negative = b[i] == 0x2D
            i += 1
        }
        var mantissa: UInt64 = 0
        var significant = 0
        var scale = 0
        var intDigits = 0, fracDigits = 0
        var leading = true
        while i < b.count, b[i] &- 0x30 <= 9 {
            let d = b[i] &- 0x30
            if leading && d == 0 {
            } else {
                leading = false
                if significant < 19 {
                    mantissa = mantissa * 10 + UInt64(d)
                    significant += 1
                } else {
                    scale += 1
                    significant += 1
                }
            }
            intDigits += 1
            i += 1
        }
        if i < b.count, b[i] == 0x2E {
            i += 1
            while i < b.count, b[i] &- 0x30 <= 9 {
                let d = b[i] &- 0x30
                if leading && d == 0 {
                    scale -= 1
                } else {
                    leading = false
                    if significant < 19 {
                        mantissa = mantissa * 10 + UInt64(d)
                        significant += 1
                        scale -= 1
                    } else {
                        significant += 1
                    }
                }
                fracDigits += 1
                i += 1
            }
        }
        guard intDigits + fracDigits > 0 else { return nil }
        var exponent = 0
        if i < b.count, b[i] == 0x65 || b[i] == 0x45 {
            i += 1
            var expNegative = false
            if i < b.count, b[i] == 0x2B || b[i] == 0x2D {
                expNegative = b[i] == 0x2D
                i += 1
            }
            let start = i
            while i < b.count, b[i] &- 0x30 <= 9 {
                if exponent < 100_000 { exponent = exponent * 10 + Int(b[i] &- 0x30) }
                i += 1
            }
            guard i > start else { return nil }
            if expNegative { exponent = -exponent }
        }
        guard i == b.count else { return nil }
        let e10 = scale + exponent
        var value: Double
        if mantissa == 0 {
            value = 0
        } else if significant <= 15, e10 >= -22, e10 <= 22 {
            // Both the mantissa (< 2^53) and 10^|e| are exact doubles: one rounding, correct.
            value = Double(mantissa)
            value = e10 < 0 ? value / powersOf10[-e10] : value * powersOf10[e10]
        } else {
            guard let parsed = Double(String(decoding: b, as: UTF8.self)), parsed.isFinite else { return nil }
            return parsed
        }
        if negative { value = -value }
        return value.isFinite ? value : nil
    }

    static func bool(_ b: UnsafeBufferPointer<UInt8>) -> Bool? {
        // Lower-case ASCII compare against a few spellings.
        func eq(_ s: StaticString) -> Bool {
            guard s.utf8CodeUnitCount == b.count else { return false }
            let p = s.utf8Start
            for k in 0..<b.count where (b[k] | 0x20) != p[k] { return false }
            return true
        }
        if eq("true") || eq("yes") || (b.count == 1 && b[0] == 0x31) { return true }
        if eq("false") || eq("no") || (b.count == 1 && b[0] == 0x30) { return false }
        return nil
    }

    /// The value quoted for a message, cut to 64 bytes.
    /// `quote(b)` when every byte is a digit or one of `+-.eE:T` and there are at most 32, else nil.
    static func safeQuote(_ b: UnsafeBufferPointer<UInt8>) -> String? {
        guard b.count <= 32, b.allSatisfy({ ($0 >= 48 && $0 <= 57) || "+-.eE:T".utf8.contains($0) }) else { return nil }
        return quote(b)
    }

    static func quote(_ b: UnsafeBufferPointer<UInt8>) -> String {
        let cut = b.count > 64 ? UnsafeBufferPointer(rebasing: b[0..<64]) : b
        return "'" + String(decoding: cut, as: UTF8.self) + (b.count > 64 ? "...'" : "'")
    }
}

/// C0 control characters in text values.
public enum ControlCharacter {
    /// The first C0 control character (U+0000 to U+001F) other than tab, if any: string values
    /// refuse them (a NUL cuts a C string short; line breaks and escapes forge log and CSV lines).
    /// Inlinable, with a loop over contiguous bytes: called for every string value of every
    /// ingested record, where a generic call across modules (unspecialised) cost a tenth of
    /// validation.
    @inlinable
    public static func first(in bytes: some Sequence<UInt8>) -> UInt8? {
        let contiguous: UInt8?? = bytes.withContiguousStorageIfAvailable { b in
            for c in b where c < 0x20 && c != 0x09 { return c }
            return nil
        }
        if let contiguous { return contiguous }
        return bytes.first { $0 < 0x20 && $0 != 0x09 }
    }

    /// The refusal of a control character: its code point, never the value.
    public static func refusal(_ c: UInt8, what: String = "value") -> ValueError {
        let hex = String(c, radix: 16, uppercase: true)
        let reason = "\(what) contains the control character U+\(String(repeating: "0", count: 4 - hex.count))\(hex) (only tab is allowed)"
        return ValueError(reason: reason, detail: reason)
    }
}
