import DifferentialPrivacy
import Testing
import VaultPolicy
import VaultStore
import ProfileVault

/// `--where` (WhereParser, fuzzed by fuzz/targets/where.swift): the parse itself and the
/// regression cases of findings F5-F7 in docs/reliability.md.
@Suite struct WhereParserTests {
    static let schema: Schema = try! PolicyLoader.parseSchema(yaml: """
        version: 1
        subject_id: { field: customer_id, category: user.unique_id }
        fields:
          email:  { type: string,   category: user.contact.email, pii: true, lookup: true }
          pin:    { type: int,      category: user.authorization.credentials, pii: true, bounds: [0, 9999] }
          age:    { type: int,      category: user.demographic.age_range, bounds: [18, 100] }
          score:  { type: float,    category: user.behavior, bounds: [0, 1] }
          vip:    { type: bool,     category: user.behavior }
          joined: { type: date,     category: user.behavior }
          city:   { type: category, category: user.location.imprecise, domain: [Köln, "Zürich", other] }
        """, file: "test/schema.yaml")

    func parse(_ text: String) throws -> [WhereCondition] { try WhereParser.parse(text, schema: Self.schema) }

    /// The error of `text` (which must fail).
    func failure(_ text: String) -> VaultError? {
        do { _ = try parse(text); Issue.record("\(text.prefix(60)) parsed"); return nil } catch let e as VaultError { return e } catch {
            Issue.record("\(error)"); return nil
        }
    }

    @Test func conditionsOfEveryTypeParse() throws {
        let c = try parse(" age >= 30,age<50 , score<=0.5,vip=TRUE,joined>2020-02-29,city!=Köln")
        #expect(c == [
            WhereCondition(attribute: "age", op: .ge, value: .int(30)),
            WhereCondition(attribute: "age", op: .lt, value: .int(50)),
            WhereCondition(attribute: "score", op: .le, value: .real(0.5)),
            WhereCondition(attribute: "vip", op: .eq, value: .int(1)),
            WhereCondition(attribute: "joined", op: .gt, value: .int(Int64(DateParsing.days(fromISODate: "2020-02-29")!))),
            WhereCondition(attribute: "city", op: .ne, value: .text("Köln")),
        ])
        // Vault.parseWhere forwards to the parser.
        #expect(try Vault.parseWhere("age=40", schema: Self.schema) == [WhereCondition(attribute: "age", op: .eq, value: .int(40))])
    }

    @Test func malformedConditionsAreUsageErrors() {
        for text in ["age>>3", "age", "age=", "=3", "age!3", "shoe=44", "age=x", "score=inf", "vip=yes", "joined=2023-02-29", "city<Köln", "city=Paris"] {
            #expect(failure(text)?.kind == .usage, "\(text)")
        }
        #expect(failure("age>>3")?.message == #"--where condition "age>>3": expected attribute, operator (= != < <= > >=) and value"#)
        #expect(failure("shoe=44")?.message == #"--where condition "shoe=44": shoe is not a field of the schema"#)
        #expect(failure("city=Paris")?.message == #"--where condition "city=Paris": Paris is not in the domain of city (Köln, Zürich, other)"#)
    }

    /// F5: errors echoed unbounded input: the empty-condition error the whole clause, the others
    /// the whole condition and an unknown name whole; a value was cut to 40 characters, which
    /// combining marks make as long as one likes.
    @Test func errorsNeverEchoAHugeInput() {
        let long = String(repeating: "x", count: 5000)
        let empty = failure("age>1,,segment=" + long)
        #expect(empty?.message == "--where: condition 2 is empty (two commas in a row, or a comma at the start or end)")
        #expect(failure(",age>1")?.message.contains("condition 1 is empty") == true)
        #expect(failure("age>1,")?.message.contains("condition 2 is empty") == true)

        let name = failure(long + "=1")
        #expect(name?.kind == .usage)
        #expect(name?.message == "--where condition \"\(String(repeating: "x", count: 64))…\": \(String(repeating: "x", count: 32))… is not a field of the schema")

        let cond = failure("age>" + String(repeating: "1", count: 5000) + "x")
        #expect(cond?.message == "--where condition \"age>\(String(repeating: "1", count: 60))…\": age is an integer")

        let marks = String(repeating: "\u{301}", count: 5000)
        let value = failure("city=a" + marks)
        #expect(value?.kind == .usage)
        #expect((value?.message.unicodeScalars.count ?? .max) < 200, "\(value?.message.unicodeScalars.count ?? 0) scalars")
        #expect(value?.message.hasSuffix("… is not in the domain of city (Köln, Zürich, other)") == true)
    }

    /// F6: a malformed condition on a PII field was quoted whole (its value included) by the
    /// syntax checks, which ran before the PII refusal.
    @Test func aConditionOnAPIIFieldIsRefusedWithoutShowingItsValue() {
        for text in ["email=anna.secret@example.org!", "email<>anna.secret@example.org", "email!anna.secret@example.org", "pin<0>>=1234", "age>1, pin = 1234"] {
            let e = failure(text)
            #expect(e?.kind == .denied, "\(text)")
            #expect(e?.message.hasSuffix(": PII fields are never used in aggregates") == true, "\(e?.message ?? "")")
            #expect(e?.message.contains("anna") == false && e?.message.contains("1234") == false, "\(e?.message ?? "")")
        }
    }

    /// F7: a category value was compared with Swift's `==` (canonical equivalence), so a
    /// decomposed "Zürich" was accepted and then, compared by bytes in SQL, matched no profile
    /// (and `!=` every one). It must be the domain's value byte for byte, as at ingest.
    @Test func aCategoryValueMustBeTheDomainsByteForByte() throws {
        let decomposed = "Zu\u{308}rich"
        #expect(decomposed == "Zürich" && Array(decomposed.utf8) != Array("Zürich".utf8))
        let e = failure("city=" + decomposed)
        #expect(e?.kind == .usage)
        #expect(e?.message.contains("is not in the domain of city") == true)
        let c = try parse("city=Zürich")
        guard case .text(let v) = c.first?.value else { Issue.record("\(c)"); return }
        #expect(Array(v.utf8) == Array("Zürich".utf8))
    }
}
