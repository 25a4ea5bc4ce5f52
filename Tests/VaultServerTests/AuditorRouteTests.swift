import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import VaultAudit
import Testing
import VaultServer

/// Issue 19 part 5 over HTTP: `GET /v1/audit?subject=&after_seq=&flat=`, `GET /v1/audit/report`,
/// `GET /v1/audit/head`, and the service's audit stream (`serve --audit-stream`).
@Suite struct AuditorRouteTests {
    static func lines(_ text: String) -> [JSONValue] {
        text.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
    }

    static func seq(_ v: JSONValue) -> Int64? {
        if case .int(let s)? = v["metadata"]?["sequence"] { return s }
        if case .int(let s)? = v["metadata.sequence"] { return s }
        return nil
    }

    /// A refused read through a subject's route carries the subject's pseudonym (the route's
    /// 403 comes before the body is read, and was recorded without a subject before); the
    /// customer's export finds it; the stream holds exactly the exported lines.
    @Test func deniedRouteAttemptsAreInTheSubjectsExportAndTheStreamEqualsTheExport() async throws {
        let f = try ServiceFixture()
        let stream = f.dir + "/stream.jsonl"
        try f.vault.streamAudit(to: stream)
        // Never the keyring, the store or the tokens file.
        #expect(throws: VaultError.self) { try f.vault.streamAudit(to: f.dir + "/keyring.json") }
        #expect(throws: VaultError.self) { try f.vault.streamAudit(to: f.dir + "/store.sqlite") }
        try await f.test { c in
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: ServiceFixture.profiles).status == .ok)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "trainer").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1/export", as: "support").status == .forbidden)
            #expect(try await c.call(.delete, "/v1/subjects/C1", as: "auditor").status == .forbidden)
            #expect(try await c.call(.get, "/v1/subjects/C1?purpose=customer_support", as: "support").status == .ok)
            #expect(try await c.call(.get, "/v1/audit?subject=C1", as: "support").status == .forbidden)

            let sel = try await c.call(.get, "/v1/audit?subject=C1", as: "auditor")
            #expect(sel.status == .ok, "\(sel.text)")
            #expect(!sel.text.contains("\"C1\""))
            let entries = Self.lines(sel.text).filter { $0["head"] == nil && $0["selection"] == nil }
            func ops(_ status: String) -> [String] {
                entries.filter { $0["status"] == .string(status) }.compactMap { if case .string(let s)? = $0["api"]?["operation"] { s } else { nil } }
            }
            #expect(ops("denied").sorted() == ["audit.export", "erase", "export", "get"], "\(ops("denied"))")
            #expect(ops("ok").sorted() == ["audit.resolve_subject", "get"])
            #expect(entries.allSatisfy { $0["unmapped"]?["policy_version"] == .string("2026-11-01") })

            // after_seq: the rest of the log, nothing twice.
            let one = try await c.call(.get, "/v1/audit?flat=true", as: "auditor")
            let last = try #require(Int64(one.headers[HTTPFields.Element.Name("x-audit-last-sequence")!] ?? ""))
            let two = try await c.call(.get, "/v1/audit?after_seq=\(last)", as: "auditor")
            #expect(two.status == .ok)
            let seqs = (Self.lines(one.text) + Self.lines(two.text)).compactMap(Self.seq)
            #expect(seqs == Array(1...Int64(seqs.count)), "\(seqs)")
            for bad in ["after_seq=-1", "after_seq=x", "after_seq=999999", "format=xml", "flat=maybe"] {
                let r = try await c.call(.get, "/v1/audit?\(bad)", as: "auditor")
                #expect(r.status == .badRequest, "\(bad): \(r.status)")
            }
            let csv = try await c.call(.get, "/v1/audit?format=csv", as: "auditor")
            #expect(csv.status == .ok && csv.text.hasPrefix("metadata.sequence,"))

            // The report and the head.
            let report = try await c.call(.get, "/v1/audit/report?since=2020-01-01", as: "auditor")
            #expect(report.status == .ok, "\(report.text)")
            let r = try JSONValue.parse(report.text)
            for k in ["by_actor", "by_action", "by_outcome", "epsilon_by_purpose", "by_purpose", "denied"] { #expect(r[k] != nil, "\(k)") }
            #expect(r["by_outcome"]?["denied"] != nil)
            #expect(try await c.call(.get, "/v1/audit/report", as: "trainer").status == .forbidden)
            #expect(try await c.call(.get, "/v1/audit/report?until=never", as: "auditor").status == .badRequest)
            let head = try await c.call(.get, "/v1/audit/head", as: "auditor")
            #expect(head.status == .ok)
            for k in ["seq", "hash", "signature", "time"] { #expect(try JSONValue.parse(head.text)[k] != nil, "\(k)") }
            #expect(try await c.call(.get, "/v1/audit/head", as: "support").status == .forbidden)

            // The stream: every entry committed since it started, as the export writes it.
            let full = try await c.call(.get, "/v1/audit", as: "auditor")
            let exported = full.text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("{\"head\"") }
            let streamed = try String(contentsOfFile: stream, encoding: .utf8).split(separator: "\n").map(String.init)
            #expect(!streamed.isEmpty)
            let firstStreamed = try #require(try Self.seq(JSONValue.parse(streamed[0])))
            #expect(firstStreamed == 2)   // the store's first entry (init) came before the stream
            let comparable = exported.filter { (try? Self.seq(JSONValue.parse($0)) ?? 0) ?? 0 >= firstStreamed }
            #expect(streamed == comparable)
        }
        var st = stat()
        #expect(stat(stream, &st) == 0 && st.st_mode & 0o777 == 0o600)
    }
}
