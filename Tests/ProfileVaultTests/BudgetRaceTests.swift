import Foundation
import Testing

/// SPEC §5: concurrent queries can never overspend. 20 processes race for a budget that fits 10.
@Suite struct BudgetRaceTests {
    @Test func twentyProcessesRacingForABudgetThatFitsTenSpendExactlyIt() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(30))])
        // analytics has epsilon 4.0 per period: ten queries of 0.4 fit, the eleventh does not.
        var env = ProcessInfo.processInfo.environment
        for (k, v) in s.env { env[k] = v }
        var processes: [(Process, Pipe)] = []
        for _ in 0..<20 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["query", "count", "--purpose", "analytics", "--epsilon", "0.4", "--fresh", "--role", "trainer", "--json"]
            p.environment = env
            let err = Pipe()
            p.standardOutput = Pipe()
            p.standardError = err
            processes.append((p, err))
        }
        for (p, _) in processes { try p.run() }
        var ok = 0, denied = 0, other: [String] = []
        for (p, err) in processes {
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            switch p.terminationStatus {
            case 0: ok += 1
            case 77: denied += 1
            default: other.append("exit \(p.terminationStatus): \(text)")
            }
        }
        #expect(other.isEmpty, "\(other)")
        #expect(ok == 10 && denied == 10)
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        let analytics = (b.json?["purposes"] as? [String: Any])?["analytics"] as? [String: Any]
        #expect((analytics?["spent"] as? Double).map { abs($0 - 4.0) < 1e-5 } == true)
        #expect((analytics?["left"] as? Double).map { abs($0) < 1e-5 } == true)
        // Every charge and every refusal is in the audit log, and the chain is intact.
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(v.json?["ok"] as? Bool == true)
        #expect(try s.run(["audit", "export", "--out", s.dir + "/a.jsonl", "--role", "auditor", "--flat"]).status == 0)
        let log = try String(contentsOfFile: s.dir + "/a.jsonl", encoding: .utf8)
        #expect(log.components(separatedBy: #""api.operation":"query.count""#).count - 1 == 20)
        #expect(log.components(separatedBy: #""status":"denied""#).count - 1 == 10)
    }

    @Test func queryFormsAndTheirFailurePaths() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(10))])
        func status(_ args: [String]) throws -> Int32 { try s.run(args + ["--role", "trainer"]).status }
        #expect(try status(["query", "count", "--purpose", "analytics", "--epsilon", "-1"]) == 64)
        #expect(try status(["query", "count", "--purpose", "analytics", "--epsilon", "0.1", "--where", "age>>3"]) == 64)
        #expect(try status(["query", "count", "--purpose", "analytics", "--epsilon", "0.1", "--where", "shoe=3"]) == 64)
        #expect(try status(["query", "count", "--purpose", "analytics", "--epsilon", "0.1", "--where", "email=x"]) == 77)
        #expect(try status(["query", "sum", "--purpose", "analytics", "--epsilon", "0.1", "--attribute", "birth_date"]) == 77)
        #expect(try status(["query", "count", "--purpose", "customer_support", "--epsilon", "0.1"]) == 77)   // no dp_budget
        #expect(try status(["query", "histogram", "--purpose", "analytics", "--epsilon", "0.1", "--attribute", "age"]) == 64)
        #expect(try s.run(["query", "count", "--purpose", "analytics", "--epsilon", "0.1"]).status == 77)   // operator may not query
        // Subjects without consent are not counted: nobody has consented yet, so the true count is 0.
        let r = try s.run(["query", "count", "--purpose", "analytics", "--epsilon", "3", "--role", "trainer", "--json"])
        #expect(r.status == 0)
        for k in ["value", "epsilon", "scale", "ci95", "budget_left"] { #expect(r.json?[k] != nil, "\(k)") }
        // Whether the 95% interval covers the true 0 is itself a 95% event (it failed CI once), so the
        // test checks the interval's shape (value ± an integer near b·ln 20, discrete Laplace) and that
        // the value is near 0: at b = 1/3, |noise| >= 20 b (7 or more) has probability
        // 2e^-21 / (1 + e^-3) = 1.4e-9 (12 b, 4 or more, was 1.2e-5); 10 subjects would be 30 b.
        let ci = r.json?["ci95"] as? [Double] ?? []
        let value = r.json?["value"] as? Double ?? .nan, scale = r.json?["scale"] as? Double ?? .nan
        #expect(ci.count == 2, "\(ci)")
        if ci.count == 2 {
            let half = value - ci[0]
            #expect(abs((ci[1] - value) - half) < 1e-9 && half == half.rounded() && abs(half - scale * log(20)) <= 1, "\(ci) \(value) \(scale)")
        }
        #expect(value == value.rounded() && abs(value) < 20 * scale, "\(value)")
    }
}
