import Foundation
import Testing
import VaultAudit
import VaultCrypto
@testable import VaultPostgres
import VaultStore

/// Issue 19 part 5 on both engines, at the engine: a subject's selection (denied attempts
/// included), `--after-seq`, nested exports that verify and whose tampering is found at the
/// entry, the report's counts, the audit stream, and entries without a policy version.
@Suite struct PostgresAuditorTests {
    static func lines(_ bytes: [UInt8]) -> [String] { String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init) }

    static func seq(_ line: String) -> Int64? {
        guard let v = try? JSONValue.parse(line), let flat = AuditLog.flattened(v), case .int(let s)? = flat["metadata.sequence"] else { return nil }
        return s
    }

    static func verify(_ bytes: [UInt8], _ key: Ed25519PublicKey, dir: String) throws -> AuditVerification {
        let path = dir + "/v-\(UUID().uuidString).jsonl"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return try AuditExportVerifier.verify(path: path, publicKey: key, expectHead: nil)
    }

    /// The same walk on any engine (blocking: called on a plain thread).
    static func exercise(_ engine: any StorageEngine, dir: String) throws {
        let stream = dir + "/stream-\(UUID().uuidString).jsonl"
        let startedAt = try engine.signedAuditHead()?.sequence ?? 0
        try engine.streamAudit(to: stream, protecting: [])
        let context = AuditContext(actor: "sam", role: "support", requestID: "r1", policyVersion: "2026-11-01")
        let x = try engine.pseudonym(ofCustomerID: "CUST-X"), y = try engine.pseudonym(ofCustomerID: "CUST-Y")
        // An old-style entry (no policy version) first: it must still verify.
        try engine.audit([AuditRecord(actor: "old", role: "support", action: "get", activity: .read, subject: x, requestID: "r0")])
        // From several threads: several transactions, group commits, one stream in order.
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            var denied = AuditContext(actor: "tina", role: "trainer", requestID: "d\(i)", policyVersion: "2026-11-01")
                .record("get", .read, purpose: "customer_support", subject: i % 2 == 0 ? x : y, outcome: .denied, detail: "role trainer may not get")
            denied.epsilon = nil
            var spend = context.record("query.count", .read, purpose: "analytics")
            spend.epsilon = 0.25
            try? engine.audit([denied, context.record("get", .read, purpose: "customer_support", subject: y), spend])
        }
        let key = engine.auditPublicKey

        // The subject's selection: every entry naming X, denied ones included, nothing else.
        let sel = try engine.exportAudit(AuditExportOptions(subject: x, nested: true))
        let selLines = Self.lines(sel.bytes)
        #expect(selLines.first?.hasPrefix("{\"selection\"") == true)
        #expect(sel.entries == 5 && selLines.count == 7, "\(sel.entries)")   // the old entry and 4 denied gets
        #expect(selLines.dropFirst().dropLast().allSatisfy { $0.contains(AuditLog.hex(x)) && !$0.contains(AuditLog.hex(y)) })
        let sv = try Self.verify(sel.bytes, key, dir: dir)
        #expect(sv.ok && sv.entries == 5, "\(sv)")
        var dropped = selLines
        dropped.remove(at: 2)
        #expect(try !Self.verify(Array((dropped.joined(separator: "\n") + "\n").utf8), key, dir: dir).ok)

        // after-seq: two exports, nothing twice, no gap.
        let a = try engine.exportAudit(AuditExportOptions(nested: true))
        try engine.audit([context.record("get", .read, subject: x)])
        let b = try engine.exportAudit(AuditExportOptions(afterSequence: a.lastSequence, nested: true))
        let seqs = (Self.lines(a.bytes) + Self.lines(b.bytes)).compactMap(Self.seq)
        #expect(seqs == Array(1...Int64(seqs.count)) && Int64(seqs.count) == b.lastSequence, "\(seqs)")
        #expect(try Self.verify(b.bytes, key, dir: dir).ok)
        do {
            _ = try engine.exportAudit(AuditExportOptions(afterSequence: b.lastSequence + 5))
            Issue.record("an after-seq beyond the log was exported")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput, "\(e)")
        }

        // A nested export verifies; one changed byte fails at its entry.
        let all = try engine.exportAudit(AuditExportOptions(nested: true))
        var lines = Self.lines(all.bytes)
        #expect(try Self.verify(all.bytes, key, dir: dir).ok)
        let i = try #require(lines.firstIndex { $0.contains("\"name\":\"tina\"") })
        let target = try #require(Self.seq(lines[i]))
        lines[i] = lines[i].replacingOccurrences(of: "\"name\":\"tina\"", with: "\"name\":\"tinb\"")
        let tv = try Self.verify(Array((lines.joined(separator: "\n") + "\n").utf8), key, dir: dir)
        #expect(!tv.ok && tv.firstBad == target, "\(tv)")
        // The flat export of the same entries is the stored form; old entries have no version.
        let flat = Self.lines(try engine.exportAudit(AuditExportOptions()).bytes).dropLast()
        #expect(flat.contains { $0.contains("\"actor.user.name\":\"old\"") && !$0.contains("policy_version") })
        #expect(flat.filter { $0.contains("\"actor.user.name\":\"tina\"") }.allSatisfy { $0.contains("\"unmapped.policy_version\":\"2026-11-01\"") })
        #expect(try engine.verifyAudit(expectHead: nil).ok)

        // The report: the counts of the same entries, counted here.
        let report = try engine.auditReport(sinceMillis: nil, untilMillis: nil)
        let entries = flat.compactMap { try? JSONValue.parse($0) }.filter { (Self.seq($0.canonicalString()) ?? 0) <= (report.lastSequence ?? 0) }
        func count(_ key: String) -> [String: Int] {
            entries.reduce(into: [:]) { d, e in
                let k: String = if case .string(let s)? = e[key] { s } else { AuditReport.noPurpose }
                d[k, default: 0] += 1
            }
        }
        #expect(report.entries == entries.count)
        #expect(report.byActor == count("actor.user.name") && report.byAction == count("api.operation"))
        #expect(report.byOutcome == count("status") && report.byPurpose == count("unmapped.purpose"))
        #expect(report.deniedCount == 8 && report.denied.count == 8 && report.denied.allSatisfy { $0.actor == "tina" })
        #expect(abs((report.epsilonByPurpose["analytics"] ?? 0) - 2.0) < 1e-12)

        // The stream: exactly the exported lines committed since it started, in order.
        let streamed = try String(contentsOfFile: stream, encoding: .utf8).split(separator: "\n").map(String.init)
        let exported = Self.lines(all.bytes).dropLast().filter { (Self.seq($0) ?? 0) > startedAt }
        #expect(streamed.count > 10 && streamed == Array(exported))
    }

    @Test func auditorsOnPostgreSQL() async throws {
        try await ProfileCluster.with { cluster in
            let node = try await cluster.node()
            try await onThread { try Self.exercise(node, dir: cluster.dir) }
            try await onThread { try node.close() }
        }
    }

    @Test func auditorsOnSQLite() throws {
        let dir = NSTemporaryDirectory() + "pv-auditors-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try ProfileStore.create(path: dir + "/store.sqlite", keyring: Keyring.generate(note: "test"), schema: repositorySchema, policyVersion: "test")
        try Self.exercise(store, dir: dir)
        try store.close()
    }
}
