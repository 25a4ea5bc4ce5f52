import Testing
import VaultAudit
import VaultCrypto

/// The byte-exact canonical form auditors recompute hashes over (docs/audit.md).
@Suite struct CanonicalJSONTests {
    @Test func keysAreSortedByBytesAndNothingIsSpaced() throws {
        let v = try JSONValue.parse(#"{ "b": 1, "a": [true, null, "x"], "A": {"z": -2, "y": "é"} }"#)
        #expect(v.canonicalString() == #"{"A":{"y":"é","z":-2},"a":[true,null,"x"],"b":1}"#)
    }

    @Test func stringsEscapeOnlyQuoteBackslashAndControls() throws {
        let v = JSONValue.string("a\"b\\c\n\u{01}/ü😀")
        #expect(v.canonicalString() == "\"a\\\"b\\\\c\\u000a\\u0001/ü😀\"")
        // Parsing the canonical form gives the same value back, and canonicalising is idempotent.
        let again = try JSONValue.parse(v.canonicalString())
        #expect(again == v)
        #expect(again.canonicalString() == v.canonicalString())
    }

    @Test func parserDecodesEscapesAndSurrogatePairs() throws {
        #expect(try JSONValue.parse(#""\u00e9\ud83d\ude00\/\t""#) == .string("é😀/\t"))
        #expect(try JSONValue.parse("123") == .int(123))
        #expect(try JSONValue.parse("-0.5e1") == .double(-5))
    }

    @Test(arguments: [
        #"{"a":1,"a":2}"#, #"{"a":1"#, #"[1,]"#, #"{"a":01}"#, "\"\u{01}\"", #""\ud800""#, "tru", "1 2", #"{"a" 1}"#, "",
    ])
    func malformedJSONIsRejected(text: String) {
        #expect(throws: JSONValue.ParseError.self) { _ = try JSONValue.parse(text) }
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: JSONValue.ParseError.self) { _ = try JSONValue.parse([0x22, 0xFF, 0x22]) }
    }

    @Test func entryLayoutIsStableAndCarriesNoPlaintextIdentifier() {
        let r = AuditRecord(actor: "ann", role: "support", action: "get", activity: .read, purpose: "customer_support",
                            subject: [UInt8](repeating: 0xAB, count: 32), fields: ["email"], epsilon: 0.5,
                            requestID: "r1", counts: [("inserted", 3)])
        let e = r.entry(sequence: 7, timeMillis: 1_700_000_000_123)
        #expect(e.canonicalString() == #"{"activity_id":2,"actor.user.name":"ann","api.operation":"get","api.request.uid":"r1","category_uid":6,"class_uid":6003,"metadata.sequence":7,"status":"ok","status_detail":null,"status_id":1,"time":1700000000123,"time_dt":"2023-11-14T22:13:20.123Z","unmapped.counts":{"inserted":3},"unmapped.epsilon":"0.5","unmapped.fields":["email"],"unmapped.purpose":"customer_support","unmapped.role":"support","unmapped.subject":"abababababababababababababababababababababababababababababababab"}"#)
    }

    @Test func chainIsSHA256OfPreviousAndCanonicalEntry() {
        let e = JSONValue.object([("k", .int(1))])
        let h = AuditLog.chain(previous: AuditLog.genesis, entry: e)
        #expect(h == SHA256.hash(AuditLog.genesis + Array(#"{"k":1}"#.utf8)))
    }

    @Test func isoMillisFormatsCivilTime() {
        #expect(AuditLog.isoMillis(0) == "1970-01-01T00:00:00.000Z")
        #expect(AuditLog.isoMillis(951_782_400_001) == "2000-02-29T00:00:00.001Z")
        #expect(AuditLog.isoMillis(-1) == "1969-12-31T23:59:59.999Z")
        #expect(AuditLog.isoMillis(-1000) == "1969-12-31T23:59:59.000Z")
        #expect(AuditLog.isoMillis(-86_400_000) == "1969-12-31T00:00:00.000Z")
    }

    /// A time read back from a database may be anything: the extremes format, never trap (a
    /// register row with due = Int64.min once killed `requests list`).
    @Test func isoMillisIsTotalOverInt64() {
        for ms in [Int64.min, Int64.min + 1, Int64.max, Int64.max - 1] {
            #expect(!AuditLog.isoMillis(ms).isEmpty)
        }
    }
}
