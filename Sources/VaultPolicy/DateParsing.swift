/// Allocation-free parsing and formatting of ISO 8601 dates and times (UTC), for the ingest hot
/// path. No `DateFormatter`, no regular expressions; the proleptic Gregorian calendar with the
/// days-from-civil algorithm (H. Hinnant).
public enum DateParsing {
    /// Days since 1970-01-01 for a `YYYY-MM-DD` date (years 0001-9999), or nil if it is malformed
    /// or not a real calendar day (2023-02-29, 2000-02-30).
    public static func days(fromISODate s: Substring) -> Int32? {
        withBytes(s) { b in
            guard b.count == 10, let d = parseDate(b, 0) else { return nil }
            return Int32(d)
        }
    }

    /// `YYYY-MM-DD` for a day count since 1970-01-01.
    public static func isoDate(days: Int32) -> String {
        let (y, m, d) = civil(fromDays: Int(days))
        return pad(y, 4) + "-" + pad(m, 2) + "-" + pad(d, 2)
    }

    /// Seconds since the Unix epoch for an ISO 8601 / RFC 3339 time, or nil if malformed.
    ///
    /// Accepts `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS`, optional fractional seconds
    /// (truncated), and an optional zone `Z`, `+hh:mm`, `+hhmm` or `+hh`; a space may stand for `T`
    /// (`2011-09-30 17:22`, as in the Online Retail data). A time without zone is taken as UTC.
    public static func unixSeconds(fromISO8601 s: Substring) -> Int64? {
        withBytes(s) { b in parseTimestamp(b) }
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
    public static func iso8601(unixSeconds: Int64) -> String {
        var days = unixSeconds / 86_400
        var rest = unixSeconds % 86_400
        if rest < 0 {
            rest += 86_400
            days -= 1
        }
        let (y, m, d) = civil(fromDays: Int(days))
        let r = Int(rest)
        return pad(y, 4) + "-" + pad(m, 2) + "-" + pad(d, 2) + "T" + pad(r / 3600, 2) + ":"
            + pad(r / 60 % 60, 2) + ":" + pad(r % 60, 2) + "Z"
    }

    // MARK: Calendar

    @inline(__always)
    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    @inline(__always)
    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: isLeap(y) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a valid civil date.
    @inline(__always)
    static func days(fromCivil y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = m > 2 ? m - 3 : m + 9
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(abs(v))
        let body = s.count < width ? String(repeating: "0", count: width - s.count) + s : s
        return v < 0 ? "-" + body : body
    }

    // MARK: Byte-level parsing

    @inline(__always)
    static func withBytes<R>(_ s: Substring, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let r = s.utf8.withContiguousStorageIfAvailable(body) { return r }
        let copy = Array(s.utf8)
        return copy.withUnsafeBufferPointer(body)
    }

    /// Two or four ASCII digits at `i`, or -1.
    @inline(__always)
    static func digits(_ b: UnsafeBufferPointer<UInt8>, _ i: Int, _ n: Int) -> Int {
        guard i + n <= b.count else { return -1 }
        var v = 0
        for k in i..<(i + n) {
            let c = b[k] &- 0x30
            if c > 9 { return -1 }
            v = v * 10 + Int(c)
        }
        return v
    }

    /// Parses `YYYY-MM-DD` at offset `i`; days since the epoch.
    @inline(__always)
    static func parseDate(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int? {
        guard i + 10 <= b.count, b[i + 4] == 0x2D, b[i + 7] == 0x2D else { return nil }
        let y = digits(b, i, 4), m = digits(b, i + 5, 2), d = digits(b, i + 8, 2)
        guard y >= 1, m >= 1, m <= 12, d >= 1, d <= daysInMonth(y, m) else { return nil }
        return days(fromCivil: y, m, d)
    }

    static func parseTimestamp(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard let day = parseDate(b, 0) else { return nil }
        var seconds = Int64(day) * 86_400
        if b.count == 10 { return seconds }
        // Time part.
        let sep = b[10]
        guard sep == 0x54 || sep == 0x74 || sep == 0x20 else { return nil }  // T t space
        let hh = digits(b, 11, 2), mm = digits(b, 14, 2)
        guard hh >= 0, hh <= 23, mm >= 0, mm <= 59, b.count >= 16, b[13] == 0x3A else { return nil }
        seconds += Int64(hh * 3600 + mm * 60)
        var i = 16
        if i < b.count, b[i] == 0x3A {
            let ss = digits(b, i + 1, 2)
            guard ss >= 0, ss <= 60 else { return nil }
            seconds += Int64(ss)
            i += 3
            if i < b.count, b[i] == 0x2E || b[i] == 0x2C {  // . or ,
                i += 1
                let start = i
                while i < b.count, b[i] &- 0x30 <= 9 { i += 1 }
                guard i > start else { return nil }
            }
        }
        if i == b.count { return seconds }
        // Zone.
        switch b[i] {
        case 0x5A, 0x7A:  // Z z
            return i + 1 == b.count ? seconds : nil
        case 0x2B, 0x2D:  // + -
            let sign: Int64 = b[i] == 0x2B ? 1 : -1
            let oh = digits(b, i + 1, 2)
            guard oh >= 0, oh <= 23 else { return nil }
            var om = 0
            var j = i + 3
            if j < b.count {
                if b[j] == 0x3A { j += 1 }
                om = digits(b, j, 2)
                guard om >= 0, om <= 59 else { return nil }
                j += 2
            }
            guard j == b.count else { return nil }
            return seconds - sign * Int64(oh * 3600 + om * 60)
        default:
            return nil
        }
    }
}
