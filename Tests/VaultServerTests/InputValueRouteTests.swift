import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import VaultAudit

/// Issue 17, item 5, over HTTP: an error answer quotes no input value and no path of the server,
/// and neither does the audit entry the request leaves.
@Suite struct InputValueRouteTests {
    /// Every recorded `status_detail` and purpose of the log, one entry per line.
    static func recorded(_ f: ServiceFixture) throws -> String {
        try f.auditEntries().map { e in
            "\(e["status_detail"]?.stringValue ?? "") \(e["unmapped.purpose"]?.stringValue ?? "")"
        }.joined(separator: "\n")
    }

    @Test func errorAnswersAndTheirAuditEntriesHoldNoValueAndNoServerPath() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let cases: [(String, String, String, [String])] = [
                // A phone number typed into age (a JSON number: the record redaction sees only strings).
                ("/v1/profiles", #"[{"customer_id":"CX-HTTP-1","email":"h@example.org","full_name":"H P","phone":"+49 1","birth_date":"1980-01-01","age":4915112345678,"gender":"female","country":"DE"}]"#,
                 "operator", ["4915112345678", "CX-HTTP-1"]),
                ("/v1/profiles", #"[{"customer_id":"CX-HTTP-2","email":"h\u0000x@example.org","full_name":"H P","phone":"+49 1","birth_date":"1980-01-01","age":40,"gender":"female","country":"DE"}]"#,
                 "operator", ["CX-HTTP-2", "h\\u0000x"]),
                ("/v1/queries", #"{"kind":"count","purpose":"purpose-with-SECRET-123","epsilon":0.1}"#, "trainer", ["SECRET"]),
                ("/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"custmer_id=CX-SECRET-9"}"#, "trainer", ["CX-SECRET"]),
                ("/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"customer_id=CX-SECRET-8"}"#, "trainer", ["CX-SECRET"]),
                ("/v1/queries", #"{"kind":"count","purpose":"analytics","epsilon":0.1,"where":"age=31337x"}"#, "trainer", ["31337"]),
                ("/v1/jobs", #"{"job":"j","purpose":"purpose-with-SECRET-456","model":"kmeans","features":["age"],"epsilon":0.1}"#, "trainer", ["SECRET"]),
                ("/v1/jobs", #"{"job":"j","purpose":"model_training","model":"kmeans","features":["no_such_field"],"epsilon":0.1}"#, "trainer", []),
            ]
            for (uri, body, role, values) in cases {
                let r = try await c.call(.post, uri, as: role, body: body)
                #expect([400, 403].contains(r.status.code), "\(uri) \(body): \(r.status) \(r.text)")
                for v in values { #expect(!r.text.contains(v), "\(uri): the answer quotes \(v): \(r.text)") }
                #expect(!r.text.contains(f.dir) && !r.text.contains("profilevault-http") && !r.text.contains("/dev/shm"), "\(r.text)")
            }
            // A made-up method is no metrics label.
            _ = try await c.call(try #require(HTTPRequest.Method("SECRETMETHOD")), "/v1/profiles", as: "operator")
            let m = try await c.call(.get, "/metrics")
            #expect(!m.text.contains("SECRETMETHOD") && m.text.contains(#"method="other""#), "\(m.text)")
            let recorded = try Self.recorded(f)
            for v in ["4915112345678", "CX-HTTP", "SECRET", "31337", "h\\u0000x"] {
                #expect(!recorded.contains(v), "the audit log records \(v)")
            }
            #expect(!recorded.contains(f.dir) && !recorded.contains("profilevault-http"), "a server path in the audit log: \(recorded)")
            // The refusals are still there, each naming what was wrong.
            for s in ["field age", "undeclared purpose", "control character"] { #expect(recorded.contains(s), "\(s) not in: \(recorded)") }
            let entries = try f.auditEntries()
            let undeclared = entries.filter { $0["status_detail"]?.stringValue?.contains("undeclared purpose") == true }
            #expect(undeclared.count == 2)
            for e in undeclared { #expect(e["unmapped.purpose"] == .null, "\(e)") }
        }
    }
}

/// Issue 18: a 400 about one record of a body says where, as a structure: the record's number
/// and the field, never the value.
@Suite struct ErrorLocationRouteTests {
    @Test func aBadRecordIsLocatedByNumberAndField() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let body = #"[{"customer_id":"CL-1","email":"a@example.org","full_name":"A B","phone":"+49 1","birth_date":"1980-01-01","age":40,"gender":"female","country":"DE","annual_income":1},"#
                + #"{"customer_id":"CL-2","email":"b@example.org","full_name":"B C","phone":"+49 2","birth_date":"1980-01-01","age":"4915112345678","gender":"female","country":"DE","annual_income":1}]"#
            let r = try await c.call(.post, "/v1/profiles", as: "operator", body: body)
            #expect(r.status == .badRequest)
            guard case .object(let at)? = r.json?["location"] else {
                Issue.record("no location object: \(r.text)"); return
            }
            #expect(at.count == 2)
            #expect(r.json?["location"]?["record"] == .int(2))
            #expect(r.json?["location"]?["field"] == .string("age"))
            #expect(!r.text.contains("4915112345678") && !r.text.contains("CL-2"))
            // An answer that is not about a record has no location.
            let q = try await c.call(.post, "/v1/queries", as: "trainer", body: #"{"kind":"count","purpose":"analytics","epsilon":"x"}"#)
            #expect(q.status == .badRequest && q.json?["location"] == nil, "\(q.text)")
        }
    }
}
