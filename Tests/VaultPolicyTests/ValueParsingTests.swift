import Testing
import VaultPolicy

private func spec(
    _ type: FieldType, pii: Bool = false, required: Bool = true, bounds: ClosedRange<Double>? = nil,
    domain: [String]? = nil, clamp: Bool = false, maxLength: Int = 65536
) -> FieldSpec {
    FieldSpec(
        name: "f", type: type, category: "user", pii: pii, required: required, bounds: bounds, domain: domain,
        onOutOfBounds: clamp ? .clamp : .reject, maxLength: maxLength)
}

private func error(_ s: FieldSpec, _ raw: String) -> String? {
    do {
        _ = try s.parse(raw[...])
        return nil
    } catch {
        return error.reason
    }
}

@Suite("Value validation")
struct ValueParsingTests {
    @Test("dates: real calendar days only")
    func dates() throws {
        let d = spec(.date)
        #expect(try d.parse("2024-02-29") == .date(19782))
        #expect(try d.parse(" 1970-01-01 ") == .date(0))
        #expect(try d.parse("1969-12-31") == .date(-1))
        #expect(try d.parse("2000-02-29") == .date(11016))
        for bad in ["2023-02-29", "2000-02-30", "1900-02-29", "2024-04-31", "2024-13-01", "2024-00-10", "2024-1-01",
                    "24-01-01", "2024/01/01", "2024-01-01T00:00", "0000-01-01", "abcd-ef-gh"] {
            #expect(error(d, bad) != nil, "\(bad)")
        }
        #expect(error(spec(.date, pii: true), "2023-02-29") == "value is not a calendar date YYYY-MM-DD")
    }

    @Test("ints: strict decimal Int64, bounds, clamp")
    func ints() throws {
        let age = spec(.int, bounds: 18...100)
        #expect(try age.parse("42") == .int(42))
        #expect(try age.parse(" +42\t") == .int(42))
        #expect(error(age, "130") == "value '130' is outside bounds [18, 100]")
        #expect(error(age, "17") != nil)
        #expect(error(age, "42.0") == "value '42.0' is not an integer")
        #expect(error(age, "4e1") != nil)
        #expect(error(age, "0x2A") != nil)
        #expect(error(age, "4 2") != nil)
        #expect(error(age, "-") != nil)
        #expect(try spec(.int, bounds: 18...100, clamp: true).parse("130") == .int(100))
        #expect(try spec(.int, bounds: 18...100, clamp: true).parse("-5") == .int(18))
        let wide = spec(.int)
        #expect(try wide.parse("9223372036854775807") == .int(.max))
        #expect(try wide.parse("-9223372036854775808") == .int(.min))
        #expect(error(wide, "9223372036854775808") == "value '9223372036854775808' does not fit a 64-bit integer")
        #expect(error(wide, "-9223372036854775809") != nil)
        #expect(error(wide, "99999999999999999999999") != nil)
    }

    @Test("floats: strict decimal, finite")
    func floats() throws {
        let income = spec(.float, bounds: 0...250_000)
        #expect(try income.parse("1234.5") == .float(1234.5))
        #expect(try income.parse("1.2345e3") == .float(1234.5))
        #expect(try income.parse(".5") == .float(0.5))
        #expect(try income.parse("5.") == .float(5))
        #expect(try income.parse("0") == .float(0))
        #expect(try income.parse("0.1") == .float(0.1))
        #expect(try income.parse("250000") == .float(250_000))
        #expect(error(income, "250000.01") != nil)
        #expect(try spec(.float, bounds: 0...250_000, clamp: true).parse("1e9") == .float(250_000))
        let any = spec(.float)
        for bad in ["1e400", "-1e400", "NaN", "nan", "inf", "-Infinity", "1e", "e5", ".", "1.2.3", "0x1p3", "1,5", "--1", "", "12abc"] {
            if bad.isEmpty { continue }
            #expect(error(any, bad) != nil, "\(bad)")
        }
        #expect(error(spec(.float, pii: true), "NaN") == "value is not a finite decimal number")
        // Exactness against the standard library's correctly rounded parser.
        for s in ["3.14159", "0.000123", "123456789012345", "1234567890123456789", "2.2250738585072014e-308",
                  "1.7976931348623157e308", "9007199254740993", "0.1e-5", "-17.25", "12345.678901234567890"] {
            #expect(try any.parse(s[...]) == .float(Double(s)!), "\(s)")
        }
        #expect(try any.parse("1e-400") == .float(0))
    }

    @Test("categories: the domain, case-sensitive; clamp maps to other")
    func categories() throws {
        let country = spec(.category, domain: ["DE", "FR", "GB", "US", "other"])
        #expect(try country.parse("DE") == .text("DE"))
        #expect(try country.parse(" FR ") == .text("FR"))
        // Text is never echoed: a shifted record can put a name into a category column.
        #expect(error(country, "de") == "value is not in the domain of f")
        #expect(error(country, "Anna Müller")?.contains("Anna") == false)
        #expect(error(spec(.int, bounds: 18...100), "anna@example.org")?.contains("anna") == false)
        #expect(error(country, "ES") != nil)
        #expect(try spec(.category, domain: ["DE", "other"], clamp: true).parse("ES") == .text("other"))
        let big = spec(.category, domain: (0..<100).map { "c\($0)" })
        #expect(try big.parse("c99") == .text("c99"))
        #expect(error(big, "c100") != nil)
        #expect(error(spec(.category, pii: true, domain: ["a"]), "secret") == "value is not in the domain of f")
    }

    @Test("required false accepts empty as null; required refuses it")
    func required() throws {
        #expect(try spec(.int, required: false, bounds: 0...1).parse("") == .null)
        #expect(try spec(.float, required: false, bounds: 0...1).parse("   ") == .null)
        #expect(try spec(.string, required: false).parse("") == .null)
        #expect(try spec(.date, required: false).parse("") == .null)
        #expect(error(spec(.int, bounds: 0...1), "") == "missing required value")
        #expect(error(spec(.string), "") == "missing required value")
        #expect(error(spec(.category, domain: ["a"]), " ") == "missing required value")
    }

    @Test("strings: kept verbatim, at most maxLength bytes, PII never echoed")
    func strings() throws {
        let s = spec(.string, pii: true)
        #expect(try s.parse(" Ada Lovelace ") == .text(" Ada Lovelace "))
        let long = String(repeating: "é", count: 32769)  // 65538 bytes
        #expect(error(s, long) == "longer than 65536 bytes")
        #expect(try s.parse(String(repeating: "a", count: 65536)[...]) == .text(String(repeating: "a", count: 65536)))
        #expect(error(spec(.string, maxLength: 3), "abcd") == "longer than 3 bytes")
    }

    @Test("PII values never appear in a reason")
    func piiNeverEchoed() {
        let secret = "4242424242"
        for s in [spec(.int, pii: true, bounds: 0...10), spec(.float, pii: true, bounds: 0...10), spec(.date, pii: true),
                  spec(.bool, pii: true), spec(.category, pii: true, domain: ["x"])] {
            let reason = error(s, secret)
            #expect(reason != nil)
            #expect(reason?.contains(secret) == false, "\(s.type)")
        }
        #expect(error(spec(.int, pii: true, bounds: 0...10), "11") == "value is outside bounds [0, 10]")
    }

    @Test("bools: true/false, yes/no, 1/0")
    func bools() throws {
        let b = spec(.bool)
        #expect(try b.parse("yes") == .bool(true))
        #expect(try b.parse("No") == .bool(false))
        #expect(try b.parse("TRUE") == .bool(true))
        #expect(try b.parse("0") == .bool(false))
        #expect(error(b, "maybe") != nil)
        #expect(error(b, "2") != nil)
        #expect(b.numericBounds == 0...1)
    }

    @Test("event values: type, bounds, clamp; items")
    func eventValues() throws {
        let rating = EventValueSpec(type: .int, bounds: 1...5)
        #expect(try rating.parse("4") == 4)
        // The reason quotes the value (event values are not personal data); the detail, which
        // the audit log records, does not.
        #expect(throws: ValueError(reason: "value '6' is outside bounds [1, 5]", detail: "value is outside bounds [1, 5]")) { try rating.parse("6") }
        #expect(throws: ValueError(reason: "value '4.5' is not an integer", detail: "value is not an integer")) { try rating.parse("4.5") }
        #expect(throws: ValueError(reason: "missing value")) { try rating.parse("") }
        let purchase = EventValueSpec(type: .float, bounds: 0...1000)
        #expect(try purchase.parse("19.99") == 19.99)
        #expect(throws: ValueError.self) { try purchase.parse("1e400") }
        #expect(try EventValueSpec(type: .float, bounds: 0...1000, onOutOfBounds: .clamp).parse("5000") == 1000)
        let kind = EventKindSpec(name: "purchase", category: "user.behavior", itemType: .string, value: purchase)
        #expect(try kind.parseItem(" 85123A ") == "85123A")
        #expect(throws: ValueError(reason: "missing item")) { try kind.parseItem("  ") }
        let intKind = EventKindSpec(name: "view", category: "user.behavior", itemType: .int, value: purchase)
        #expect(try intKind.parseItem("+0042") == "42")
        #expect(throws: ValueError.self) { try intKind.parseItem("A1") }
    }
}

@Suite("ISO 8601 dates and times")
struct DateParsingTests {
    @Test("days round-trip over years 1-9999")
    func roundTrip() {
        #expect(DateParsing.days(fromISODate: "0001-01-01") == -719162)
        #expect(DateParsing.days(fromISODate: "9999-12-31") == 2932896)
        var day: Int32 = -719162
        while day <= 2932896 {
            let s = DateParsing.isoDate(days: day)
            #expect(DateParsing.days(fromISODate: s[...]) == day, "\(s)")
            day += 997
        }
        #expect(DateParsing.isoDate(days: 19782) == "2024-02-29")
        #expect(DateParsing.isoDate(days: -1) == "1969-12-31")
    }

    @Test("timestamps: Z, offsets, fractions, date-only, space separator")
    func timestamps() {
        let t = 1_790_856_000 as Int64  // 2026-10-01T12:00:00Z
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00Z") == t)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00.123456Z") == t)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00") == t)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00") == t)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00+02:00") == 1_790_848_800)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00+0200") == 1_790_848_800)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00+02") == 1_790_848_800)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01T12:00:00-05:30") == 1_790_875_800)
        #expect(DateParsing.unixSeconds(fromISO8601: "2026-10-01") == t - 12 * 3600)
        #expect(DateParsing.unixSeconds(fromISO8601: "2011-09-30 17:22") == 1_317_403_320)
        #expect(DateParsing.unixSeconds(fromISO8601: "1969-12-31T23:59:59Z") == -1)
        for bad in ["2026-10-01T24:00:00Z", "2026-10-01T12:60Z", "2026-10-01T12:00:61Z", "2026-10-01T12", "2026-10-01X12:00",
                    "2026-10-01T12:00:00ZZ", "2026-10-01T12:00:00+2", "2026-10-01T12:00:00.Z", "2026-02-30T00:00Z", "",
                    "2026-10-01T12:00:00+02:00:00"] {
            #expect(DateParsing.unixSeconds(fromISO8601: bad[...]) == nil, "\(bad)")
        }
        #expect(DateParsing.iso8601(unixSeconds: t) == "2026-10-01T12:00:00Z")
        #expect(DateParsing.iso8601(unixSeconds: -1) == "1969-12-31T23:59:59Z")
        #expect(DateParsing.iso8601(unixSeconds: 0) == "1970-01-01T00:00:00Z")
    }
}

/// The control-character scan every string value of every record goes through: the same verdict
/// on contiguous bytes (its loop) and on any other sequence (the generic path).
@Suite struct ControlCharacterTests {
    @Test func everyC0ButTabIsFoundWhereverTheBytesLive() {
        for c in UInt8(0)...UInt8(0x7F) {
            let bytes: [UInt8] = Array("ab".utf8) + [c] + Array("cd\u{1}".utf8)
            let expected: UInt8? = (c < 0x20 && c != 0x09) ? c : 0x01
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(ControlCharacter.first(in: bytes) == expected)
            #expect(ControlCharacter.first(in: text.utf8) == expected)
            #expect(ControlCharacter.first(in: Substring(text).dropFirst().utf8) == expected)
            #expect(ControlCharacter.first(in: bytes.lazy.map { $0 }) == expected)
            #expect(ControlCharacter.first(in: AnySequence(bytes)) == expected)
        }
        #expect(ControlCharacter.first(in: [UInt8]()) == nil)
        #expect(ControlCharacter.first(in: "tab\there, DEL \u{7F}, é".utf8) == nil)
        #expect(ControlCharacter.first(in: AnySequence("no control".utf8)) == nil)
    }
}
