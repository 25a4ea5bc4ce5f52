import Foundation
import Testing

/// Issue 17, items 5 and 6: input values never reach the audit log (entries name the field and
/// the reason), string fields refuse control characters, and the CLI names an unknown CSV column
/// and an unknown command.
@Suite struct InputValueLeakTests {
    /// The whole audit log as exported (JSON Lines), by the auditor.
    static func auditText(_ s: CLIStore) throws -> String {
        let out = s.dir + "/audit-\(UUID().uuidString).jsonl"
        let ex = try s.run(["audit", "export", "--out", out, "--role", "auditor", "--flat"])
        #expect(ex.status == 0, "\(ex.stderr)")
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    /// The export's entries as objects.
    static func entries(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }

    /// Every entry's `status_detail` and purpose, one per line: where a number of the input could
    /// show (the whole export also holds hashes and times, whose digits could match by chance).
    static func details(_ text: String) -> String {
        entries(text).map { "\($0["status_detail"] as? String ?? "") \($0["unmapped.purpose"] as? String ?? "")" }.joined(separator: "\n")
    }

    @Test func aPhoneNumberTypedIntoAgeIsNotAudited() throws {
        let s = try CLIStore()
        let line = "CX-LEAK-77,leak.victim@example.org,Lena Leakmann,+49 30 5550199,1980-01-01,+4915112345678,female,DE,12345"
        let r = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.header + "\n" + line + "\n")])
        #expect(r.status == 65, "\(r.stderr)")
        #expect(r.stderr.contains("p.csv:2") && r.stderr.contains("field age"))
        let text = try Self.auditText(s)
        let failed = try #require(Self.entries(text).first { ($0["api.operation"] as? String) == "ingest.profiles" })
        let detail = try #require(failed["status_detail"] as? String)
        #expect(detail.contains("field age") && detail.contains("p.csv:2"), "\(detail)")
        // Neither the phone number (in any spelling) nor any other value of the line.
        for v in ["4915112345678", "CX-LEAK-77", "leak.victim", "Leakmann"] {
            #expect(!text.contains(v), "\(v) in the audit log")
        }
        for v in ["5550199", "12345", "+49"] { #expect(!Self.details(text).contains(v), "\(v) in the audit log") }
        // The recorded detail names no directory of the machine either.
        #expect(!detail.contains(s.dir))
    }

    @Test func wrongTypesAndBoundsAreAuditedWithoutTheValue() throws {
        let s = try CLIStore()
        for (i, (column, value)) in [("age", "4711"), ("annual_income", "-98765.4321"), ("birth_date", "1999-99-99")].enumerated() {
            var row = ["customer_id": "CN-\(i)", "email": "a\(i)@example.org", "full_name": "A B", "phone": "+49 1", "birth_date": "1980-01-01",
                       "age": "40", "gender": "female", "country": "DE", "annual_income": "1000"]
            row[column] = value
            let text = CLIStore.header + "\n" + CLIStore.header.split(separator: ",").map { row[String($0)]! }.joined(separator: ",") + "\n"
            let r = try s.run(["ingest", "profiles", s.write("p\(i).csv", text)])
            #expect(r.status == 65, "\(r.stderr)")
            let audit = try Self.auditText(s)
            #expect(!Self.details(audit).contains(value), "\(value) in the audit log")
            #expect(r.stderr.contains("field \(column)"))
            #expect(audit.contains("field \(column)"))
        }
    }

    @Test func aWhereClauseIsAuditedAsFieldAndOperatorOnly() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(30))])
        let attempts: [([String], Int32)] = [
            (["--where", "customer_id=CX-WHERE-SECRET-42"], 77),     // the customer ID: PII, refused
            (["--where", "email=where.secret@example.org"], 77),     // a PII field, refused
            (["--where", "custmer_id=CX-WHERE-SECRET-43"], 64),      // not a field: usage
            (["--where", "country=ZZ-WHERE-SECRET-44"], 64),         // not in the domain
            (["--where", "age>=31337,country=DE"], 0),               // allowed: charged and audited
        ]
        for (args, status) in attempts {
            let r = try s.run(["query", "count", "--purpose", "model_training", "--epsilon", "0.5", "--role", "trainer"] + args)
            #expect(r.status == status, "\(args): \(r.stderr)")
        }
        // The CLI line of a refused customer ID does not show it.
        let id = try s.run(["query", "count", "--purpose", "model_training", "--epsilon", "0.5", "--role", "trainer", "--where", "customer_id=CX-WHERE-SECRET-42"])
        #expect(!id.stderr.contains("CX-WHERE-SECRET-42"))
        let text = try Self.auditText(s)
        for v in ["CX-WHERE-SECRET", "where.secret", "ZZ-WHERE"] {
            #expect(!text.contains(v), "\(v) in the audit log")
        }
        #expect(!Self.details(text).contains("31337"))
        let ok = try #require(Self.entries(text).first { ($0["api.operation"] as? String) == "query.count" && ($0["status"] as? String) == "ok" })
        let detail = try #require(ok["status_detail"] as? String)
        #expect(detail.hasPrefix("where age >= ?, country = ?"), "\(detail)")
    }

    @Test func anUndeclaredPurposeIsNotRecorded() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        let secret = "purpose-with-SECRET-123"
        let q = try s.run(["query", "count", "--purpose", secret, "--epsilon", "0.5", "--role", "trainer"])
        #expect(q.status == 77)
        // The CLI may name a short, printable, non-PII name...
        #expect(q.stderr.contains("is not declared"))
        let g = try s.run(["get", "--subject", "C1", "--purpose", secret, "--role", "support"])
        #expect(g.status == 77)
        // ...but a purpose that is no short printable word is never echoed.
        let odd = try s.run(["get", "--subject", "C1", "--purpose", "x@SECRET mail.example", "--role", "support"])
        #expect(odd.status == 77 && !odd.stderr.contains("SECRET"), "\(odd.stderr)")
        let text = try Self.auditText(s)
        #expect(!text.contains("SECRET"), "the undeclared purpose in the audit log")
        let refused = Self.entries(text).filter { ($0["status"] as? String) == "denied" && ["query.count", "get"].contains($0["api.operation"] as? String ?? "") }
        #expect(refused.count == 3)
        for e in refused {
            #expect(e["unmapped.purpose"] is NSNull || e["unmapped.purpose"] == nil, "\(e)")
            #expect((e["status_detail"] as? String)?.hasPrefix("undeclared purpose") == true, "\(e)")
        }
    }

    // MARK: - Item 6

    @Test func controlCharactersInStringFieldsAreRefused() throws {
        let s = try CLIStore()
        for (i, c) in ["\u{0}", "\u{1B}", "\r", "\u{7}"].enumerated() {
            let csv = CLIStore.header + "\nCN-\(i),\"ctl\(c)secret@example.org\",Ctl Person,+49 1,1980-01-01,40,female,DE,1000\n"
            let r = try s.run(["ingest", "profiles", s.write("ctl\(i).csv", csv)])
            #expect(r.status == 65, "\(i): \(r.stderr)")
            #expect(r.stderr.contains("ctl\(i).csv:2") && r.stderr.contains("field email") && r.stderr.contains("control character"), "\(r.stderr)")
            #expect(!r.stderr.contains("secret@example.org"))
        }
        // JSON Lines: an escaped NUL in a name, a line feed in the customer ID.
        let j = try s.run(["ingest", "profiles", s.write("p.jsonl", #"{"customer_id":"CN-9","email":"a@b.example","full_name":"Nul\u0000Person","birth_date":"1980-01-01","age":40}"# + "\n")])
        #expect(j.status == 65 && j.stderr.contains("p.jsonl:1") && j.stderr.contains("field full_name"), "\(j.stderr)")
        let k = try s.run(["ingest", "profiles", s.write("q.jsonl", #"{"customer_id":"CN-\nforged","email":"a@b.example","full_name":"P","birth_date":"1980-01-01","age":40}"# + "\n")])
        #expect(k.status == 65 && k.stderr.contains("field customer_id"), "\(k.stderr)")
        // Nothing was stored; a tab is still fine.
        #expect(try s.run(["status", "--json"]).json?["subjects"] as? Int == 0)
        let tab = try s.run(["ingest", "profiles", s.write("tab.csv", CLIStore.header + "\nCN-T,t@example.org,Tab\tPerson,+49 1,1980-01-01,40,female,DE,1000\n")])
        #expect(tab.status == 0, "\(tab.stderr)")
        // An event item too.
        let e = try s.run(["ingest", "events", s.write("e.csv", "customer_id,kind,item,value,time\nCN-T,purchase,\"sku\u{0}1\",3,2026-10-01T12:00:00Z\n")])
        #expect(e.status == 65 && e.stderr.contains("field item") && e.stderr.contains("control character"), "\(e.stderr)")
    }

    @Test func anUnknownColumnIsNamed() throws {
        let s = try CLIStore()
        let r = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.header + ",favourite_colour\nCN-1,a@example.org,A B,+49 1,1980-01-01,40,female,DE,1000,blue\n")])
        #expect(r.status == 65)
        #expect(r.stderr.contains("p.csv:1") && r.stderr.contains("\"favourite_colour\"") && r.stderr.contains("not a field"), "\(r.stderr)")
        // A header cell that is no short printable name is not quoted.
        let long = String(repeating: "x", count: 65)
        let l = try s.run(["ingest", "profiles", s.write("l.csv", CLIStore.header + ",\(long)\nCN-1,a@example.org,A B,+49 1,1980-01-01,40,female,DE,1000,blue\n")])
        #expect(l.status == 65 && !l.stderr.contains(long) && l.stderr.contains("header column 10"), "\(l.stderr)")
    }

    @Test func anUnknownCommandIsNamed() throws {
        for args in [["frobnicate"], ["frobnicate", "--json"]] {
            let r = try CLI.run(args)
            #expect(r.status == 64)
            #expect(r.stderr.hasPrefix("error: unknown command 'frobnicate'"), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1)
        }
        let sub = try CLI.run(["audit", "frobnicate", "--json"])
        #expect(sub.status == 64 && sub.stderr.hasPrefix("error: unknown command 'frobnicate' of audit"), "\(sub.stderr)")
        // A word that is no short printable name is not echoed.
        let odd = try CLI.run(["x@SECRET.example\u{1B}[2J"])
        #expect(odd.status == 64 && odd.stderr.hasPrefix("error: unknown command") && !odd.stderr.contains("SECRET"), "\(odd.stderr)")
        // Known commands still parse as before.
        #expect(try CLI.run(["keys", "--help"]).status == 0)
    }
}
