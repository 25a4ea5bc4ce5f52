import Testing
@testable import VaultPolicy

/// `requests: { deadline, extension }` (issue 19 §1): defaults, durations, and refusals that
/// name the file, line and field.
@Suite struct RequestDeadlineTests {
    static func with(_ requests: String) -> String { Fixtures.specPolicy + requests + "\n" }

    @Test func absentMeansThirtyAndSixtyDays() throws {
        let p = try Fixtures.policy()
        #expect(p.requests.deadlineSeconds == 30 * 86_400 && p.requests.extensionSeconds == 60 * 86_400)
    }

    @Test func givenValuesAndPartialKeys() throws {
        let s = try Fixtures.schema()
        let p = try PolicyLoader.parsePolicy(yaml: Self.with("requests: { deadline: 720h, extension: 14d }"), file: "policy.yaml", schema: s)
        #expect(p.requests.deadlineSeconds == 30 * 86_400 && p.requests.extensionSeconds == 14 * 86_400 && p.requests.deadlineText == "720h")
        let q = try PolicyLoader.parsePolicy(yaml: Self.with("requests: { deadline: 10d }"), file: "policy.yaml", schema: s)
        #expect(q.requests.deadlineSeconds == 10 * 86_400 && q.requests.extensionSeconds == 60 * 86_400)
    }

    @Test func badValuesNameTheLineAndField() throws {
        let line = Fixtures.specPolicy.split(separator: "\n", omittingEmptySubsequences: false).count
        for (text, field) in [("requests: { deadline: 30x }", "requests.deadline"), ("requests: { extension: 0d }", "requests.extension"),
                              ("requests: { deadline: -5d }", "requests.deadline"), ("requests: { deadline: 99999999999d }", "requests.deadline"),
                              ("requests: { grace: 5d }", "requests.grace"), ("requests: 30d", "requests")] {
            let d = try #require(Fixtures.policyError(Self.with(text)), "\(text)")
            #expect(d.field == field, "\(text): \(d)")
            #expect(d.line == line, "\(text): \(d)")
            #expect(d.description.contains("policy.yaml:\(line)"), "\(d)")
        }
    }
}
