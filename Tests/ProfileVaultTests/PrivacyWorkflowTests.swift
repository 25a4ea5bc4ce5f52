import Foundation
import Testing

/// Issue 19's "done when", walked from the command line as a privacy officer and an auditor
/// would: requests are opened, fulfilled through the right's operation (access, erasure,
/// objection, restriction, rectification) or denied, and the auditor then finds each of them,
/// and a refused attempt on a customer, in the audit report and in that customer's entries.
@Suite struct PrivacyWorkflowTests {
    static let officer = ["--role", "privacy_officer", "--actor", "petra"]
    static let auditor = ["--role", "auditor", "--actor", "audrey"]

    /// A store whose policy adds `marketing_offers`, a legitimate_interest purpose with a
    /// recipient (objection applies), and six customers with events.
    static func store() throws -> CLIStore {
        let s = try CLIStore(initialise: false)
        let policies = s.dir + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/schema.yaml", toPath: policies + "/schema.yaml")
        var policy = try String(contentsOfFile: CLI.repoRoot + "/policies/policy.yaml", encoding: .utf8)
        policy = policy.replacingOccurrences(of: "retention:\n", with: """
              marketing_offers:
                data_use: marketing.advertising.profiling
                legal_basis: legitimate_interest
                may_read: [user.behavior]
                recipients: [email-service-provider]
                dp_budget: { epsilon: 2.0, period: 30d }
            retention:

            """)
        // A clerk keeps the register but may not rectify.
        policy = policy.replacingOccurrences(of: "  auditor: [audit]\n", with: "  auditor: [audit]\n  clerk: [requests]\n")
        try policy.write(toFile: policies + "/policy.yaml", atomically: true, encoding: .utf8)
        s.env["PROFILEVAULT_POLICY"] = policies
        let g = try CLI.run(["keys", "generate", "--out", s.dir + "/keyring.json", "--json"])
        #expect(g.status == 0, "\(g.stderr)")
        let i = try s.run(["init", "--json"])
        #expect(i.status == 0, "\(i.stderr)")
        let p = try s.run(["ingest", "profiles", try s.write("p.csv", CLIStore.rows(6))])
        #expect(p.status == 0, "\(p.stderr)")
        let e = try s.run(["ingest", "events", try s.write("e.csv", "customer_id,kind,item,value,time\nC1,purchase,SKU-1,10,2026-01-01T00:00:00Z\nC3,purchase,SKU-2,20,2026-01-03T00:00:00Z\n")])
        #expect(e.status == 0, "\(e.stderr)")
        return s
    }

    func open(_ s: CLIStore, _ type: String, _ subject: String, _ extra: [String] = []) throws -> String {
        let r = try s.run(["requests", "open", "--type", type, "--subject", subject, "--json"] + extra + Self.officer)
        #expect(r.status == 0, "\(type): \(r.stderr)")
        return r.json?["request"] as? String ?? ""
    }

    func fulfil(_ s: CLIStore, _ id: String, _ extra: [String] = []) throws -> CLI.Result {
        try s.run(["requests", "fulfil", id, "--json"] + extra + Self.officer)
    }

    func outcome(_ r: CLI.Result) -> String? { (r.json?["request"] as? [String: Any])?["outcome"] as? String }

    @Test func aMonthOfRequestsEndsInTheAuditorsReport() throws {
        let s = try Self.store()
        // A trainer tries to read C1 directly: refused, and the refusal names C1's pseudonym.
        let snoop = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--role", "trainer", "--actor", "mallory"])
        #expect(snoop.status == 77)

        // 1. Access (received 2026-11-01 by e-mail): due a month later, overdue by now.
        let access = try open(s, "access", "C1", ["--received", "2026-11-01", "--channel", "email", "--note", "asked by letter of 31 Oct"])
        let overdue = try s.run(["requests", "list", "--status", "overdue", "--json"] + Self.officer)
        let overdueRows = (overdue.json?["requests"] as? [[String: Any]]) ?? []
        #expect(overdueRows.map { $0["request"] as? String } == [access])
        #expect((overdueRows.first?["due"] as? String)?.hasPrefix("2026-12-01") == true)
        #expect(((overdueRows.first?["days_left"] as? Int) ?? 0) < 0)
        let out = s.dir + "/access-C1.json"
        let a = try fulfil(s, access, ["--out", out])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(outcome(a)?.hasPrefix("sha256:") == true)
        // The export answers Art. 15: purposes with legal basis and recipients, sources, and
        // who accessed the data, the trainer's refused attempt included.
        let export = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        let purposes = (export["purposes"] as? [[String: Any]]) ?? []
        let marketing = try #require(purposes.first { $0["purpose"] as? String == "marketing_offers" })
        #expect(marketing["legal_basis"] as? String == "legitimate_interest")
        #expect(marketing["recipients"] as? [String] == ["email-service-provider"])
        #expect(export["sources"] != nil && export["retention"] != nil && export["categories"] != nil)
        let accesses = (export["accesses"] as? [[String: Any]]) ?? []
        #expect(accesses.contains { $0["actor"] as? String == "mallory" && $0["outcome"] as? String != "Success" })

        // 2. Erasure: fulfil erases and attaches the receipt; C2 is then "erased on DATE".
        let erasure = try open(s, "erasure", "C2")
        let e = try fulfil(s, erasure)
        #expect(e.status == 0, "\(e.stderr)")
        let receipt = try #require(outcome(e)?.replacingOccurrences(of: "receipt:", with: ""))
        #expect(receipt.count == 64)
        let gone = try s.run(["get", "--subject", "C2", "--purpose", "customer_support", "--role", "support"])
        #expect(gone.status == 66 && gone.stderr.contains(receipt), "\(gone.stderr)")

        // 3. Objection: refused until the objection is recorded, then attached.
        let objection = try open(s, "objection", "C3")
        #expect(try fulfil(s, objection).status == 65)
        let o = try s.run(["consent", "object", "--purpose", "marketing_offers", "--subject", "C3", "--json"] + Self.officer)
        #expect(o.status == 0, "\(o.stderr)")
        let oc = try fulfil(s, objection)
        #expect(oc.status == 0, "\(oc.stderr)")
        #expect(outcome(oc) == "objection:marketing_offers")

        // 4. Restriction: fulfil restricts; support can no longer read C4.
        let restriction = try open(s, "restriction", "C4")
        let r = try fulfil(s, restriction)
        #expect(r.status == 0 && outcome(r) == "restricted", "\(r.stderr)")
        #expect(try s.run(["get", "--subject", "C4", "--purpose", "customer_support", "--role", "support"]).status == 77)

        // 5. Rectification: the officer rectifies, then confirms.
        let rectification = try open(s, "rectification", "C5")
        #expect(try s.run(["rectify", "--subject", "C5", "--set", "email=new-address@example.org"] + Self.officer).status == 0)
        #expect(outcome(try fulfil(s, rectification, ["--done"])) == "confirmed")

        // 6. A request whose requester could not be identified is denied; it stays closed.
        let denied = try open(s, "access", "C0")
        #expect(try s.run(["requests", "deny", denied, "--reason", "identity not verified"] + Self.officer).status == 0)
        #expect(try fulfil(s, denied, ["--out", s.dir + "/x.json"]).status == 65)
        let done = try s.run(["requests", "list", "--status", "done", "--json"] + Self.officer)
        #expect(Set(((done.json?["requests"] as? [[String: Any]]) ?? []).compactMap { $0["request"] as? String })
                == [access, erasure, objection, restriction, rectification])

        // The auditor's report: the refused attempt comes first, and every step is counted.
        let report = try s.run(["audit", "report", "--json"] + Self.auditor)
        #expect(report.status == 0, "\(report.stderr)")
        let json = try #require(report.json)
        let byAction = (json["by_action"] as? [String: Int]) ?? [:]
        #expect(byAction["requests.open"] == 6)
        #expect(byAction["requests.fulfil"] == 5 + 2)   // five done, the objection refused once and the denied one refused
        #expect(byAction["requests.deny"] == 1)
        #expect(byAction["consent.object"] == 1 && byAction["restrict"] == 1 && byAction["rectify"] == 1)
        let denials = (json["denied"] as? [[String: Any]]) ?? []
        #expect(denials.first?["actor"] as? String == "mallory")
        #expect(((json["denied_count"] as? Int) ?? 0) >= 1)

        // "Who touched C3?": the auditor's per-subject export holds the objection and the request.
        let c3 = s.dir + "/audit-C3.jsonl"
        let x = try s.run(["audit", "export", "--subject", "C3", "--out", c3, "--json"] + Self.auditor)
        #expect(x.status == 0, "\(x.stderr)")
        let lines = try String(contentsOfFile: c3, encoding: .utf8)
        #expect(lines.contains("consent.object") && lines.contains("requests.fulfil") && lines.contains("requests.open"))
        #expect(!lines.contains("\"C3\""))
        // And the whole log still verifies.
        #expect(try s.run(["audit", "verify", "--json"] + Self.auditor).status == 0)
    }

    /// A restricted subject cannot be found by a role that may not lift the restriction; found
    /// again once it is lifted.
    @Test func findLeavesARestrictedSubjectOutForSupport() throws {
        let s = try Self.store()
        let find = ["find", "--field", "email", "--value", "user1@example.com", "--role", "support", "--json"]
        #expect(try s.run(find).json?["customer_id"] as? String == "C1")
        #expect(try s.run(["restrict", "--subject", "C1"] + Self.officer).status == 0)
        let refused = try s.run(find)
        #expect(refused.status == 77 && refused.stderr.contains("restricted"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("C1") && !refused.stderr.contains("user1@"))
        #expect(try s.run(["unrestrict", "--subject", "C1"] + Self.officer).status == 0)
        #expect(try s.run(find).json?["customer_id"] as? String == "C1")
    }

    /// A value typed as the field name (an e-mail address) is not echoed, in the error or in
    /// the audit log.
    @Test func findNeverEchoesAnUnknownFieldName() throws {
        let s = try Self.store()
        let r = try s.run(["find", "--field", "jane.doe@example.com", "--value", "x", "--role", "support"])
        #expect(r.status == 65)
        #expect(!r.stderr.contains("jane.doe"), "\(r.stderr)")
        let log = s.dir + "/log.jsonl"
        #expect(try s.run(["audit", "export", "--flat", "--out", log] + Self.auditor).status == 0)
        #expect(!(try String(contentsOfFile: log, encoding: .utf8)).contains("jane.doe"))
    }

    /// `--expect-head` cannot be checked on a subject's selection: refused, never passed.
    @Test func expectHeadIsRefusedOnASubjectSelection() throws {
        let s = try Self.store()
        #expect(try s.run(["audit", "public-key", "--out", s.dir + "/k.pem"]).status == 0)
        let sel = s.dir + "/sel.jsonl"
        #expect(try s.run(["audit", "export", "--subject", "C1", "--out", sel] + Self.auditor).status == 0)
        let plain = try CLI.run(["audit", "verify", "--file", sel, "--public-key", s.dir + "/k.pem", "--json"])
        #expect(plain.status == 0, "\(plain.stdout) \(plain.stderr)")
        let pinned = try CLI.run(["audit", "verify", "--file", sel, "--public-key", s.dir + "/k.pem", "--expect-head",
                                  String(repeating: "1", count: 64), "--json"])
        #expect(pinned.status == 1)
        #expect(pinned.json?["ok"] as? Bool == false)
    }

    /// A fulfilment's rectification is confirmed only by a role that may rectify.
    @Test func confirmingARectificationNeedsTheRectifyPermission() throws {
        let s = try Self.store()
        let id = try open(s, "rectification", "C1")
        let r = try s.run(["requests", "fulfil", id, "--done", "--role", "clerk"])
        #expect(r.status == 77 && r.stderr.contains("rectify"), "\(r.stderr)")
        #expect(outcome(try fulfil(s, id, ["--done"])) == "confirmed")
    }
}
