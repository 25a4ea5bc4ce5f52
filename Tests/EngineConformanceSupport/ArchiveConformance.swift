// Audit archiving on any engine (issue 20 §3): the same slice, the same refusals, the same
// anchor and the same live-chain verification, checked by the SQLite and PostgreSQL suites.

import Foundation
public import VaultStore
public import VaultAudit

public enum ArchiveConformance {
    /// Waits until the clock has passed `millis` (an ordering barrier: entries appended after
    /// it get a later time; nothing is measured).
    public static func waitPast(_ millis: Int64) {
        while AuditLog.nowMillis <= millis { usleep(2_000) }
    }

    /// Appends `n` transactions of two entries each (each under its own checkpoint), naming
    /// `subject` when given.
    static func appendBatches(_ engine: any StorageEngine, _ n: Int, audit: AuditContext, subject: [UInt8]?) throws {
        for i in 0..<n {
            try engine.audit([audit.record("get", .read, purpose: "customer_support", subject: subject, fields: ["email"]),
                              audit.record("conformance.note", .other, detail: "batch \(i)")])
        }
    }

    /// Runs the archive's checks on `engine` (whose subjects include `ids`, each distinctive)
    /// with files in `scratch`, and returns what failed (empty: all held).
    public static func run(_ engine: any StorageEngine, scratch: String, ids: [String], audit: AuditContext) throws -> [String] {
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }
        func kind(_ body: () throws -> Void) -> VaultError.Kind? {
            do { try body(); return nil } catch let e as VaultError { return e.kind } catch { return .internalFailure }
        }
        func out(_ name: String) -> String { scratch + "/" + name }
        let subject = try engine.pseudonym(ofCustomerID: ids[0])
        try appendBatches(engine, 3, audit: audit, subject: subject)
        let firstCut = AuditLog.nowMillis
        waitPast(firstCut)
        let firstHead = try engine.signedAuditHead()
        try appendBatches(engine, 2, audit: audit, subject: subject)

        // Nothing before the first entry: refused (65), no file left behind, nothing removed.
        let before = try engine.verifyAudit(expectHead: nil)
        check(kind { _ = try engine.archiveAudit(before: 1_000, to: try OutputFile(path: out("early.jsonl"), force: false, protecting: []), audit: audit) } == .invalidInput,
              "a date before the first entry is not refused as invalid input")
        check(!FileManager.default.fileExists(atPath: out("early.jsonl")), "a refused archive left its file")
        check(try engine.verifyAudit(expectHead: nil) == before, "a refused archive changed the log")

        // The first archive: every entry up to the head before the cut.
        let a1 = try engine.archiveAudit(before: firstCut + 1, to: try OutputFile(path: out("a1.jsonl"), force: false, protecting: []), audit: audit)
        check(a1.firstSequence == 1 && a1.lastSequence == firstHead?.sequence && a1.entries == Int(a1.lastSequence), "first archive covers 1...head before the cut")
        check(a1.head == firstHead.map { AuditLog.hex($0.hash) }, "the archive's head is the checkpointed head")
        let mode = ((try? FileManager.default.attributesOfItem(atPath: out("a1.jsonl")))?[.posixPermissions] as? NSNumber)?.intValue
        check(mode == 0o600, "the archive file is not mode 0600")
        let fileCheck = try AuditExportVerifier.verify(path: out("a1.jsonl"), publicKey: engine.auditPublicKey, expectHead: a1.head)
        check(fileCheck.ok && fileCheck.entries == a1.entries, "the archive file does not verify on its own: \(fileCheck.reason ?? "")")
        let v1 = try engine.verifyAudit(expectHead: nil)
        check(v1.ok && v1.archivedThrough == a1.lastSequence, "the store does not verify from the anchor: \(v1.reason ?? "")")
        // Nothing in the archive names a person in clear.
        let bytes = (try? Data(contentsOf: URL(fileURLWithPath: out("a1.jsonl")))).map { [UInt8]($0) } ?? []
        for id in ids { check(RegisterConformance.find(Array(id.utf8), in: bytes) == nil, "\(id) in the archive in clear") }
        check(RegisterConformance.find(Array(AuditLog.hex(subject).utf8), in: bytes) != nil, "the archive lacks the pseudonymised entries")

        // The same date again: nothing new, refused; the output path exists: refused (73).
        check(kind { _ = try engine.archiveAudit(before: firstCut + 1, to: try OutputFile(path: out("again.jsonl"), force: false, protecting: []), audit: audit) } == .invalidInput,
              "archiving the same range twice is not refused")
        check(kind { _ = try engine.archiveAudit(before: firstCut + 1, to: try OutputFile(path: out("a1.jsonl"), force: false, protecting: []), audit: audit) } == .cannotCreate,
              "an existing archive file is not refused")

        // The live chain: its entry names the range and the head; exports of it verify.
        let live = try engine.exportAudit(AuditExportOptions(format: .jsonl, nested: false))
        let liveText = String(decoding: live.bytes, as: UTF8.self)
        check(liveText.contains("\"audit.archive\"") && liveText.contains(a1.head), "the live chain does not record the archive with its head")
        try Data(live.bytes).write(to: URL(fileURLWithPath: out("live.jsonl")))
        let liveCheck = try AuditExportVerifier.verify(path: out("live.jsonl"), publicKey: engine.auditPublicKey, expectHead: nil)
        check(liveCheck.ok, "an export of the live chain after an archive does not verify: \(liveCheck.reason ?? "")")

        // A later archive covers only the entries since, and links to the first.
        let secondCut = AuditLog.nowMillis
        waitPast(secondCut)
        let secondHead = try engine.signedAuditHead()
        try appendBatches(engine, 1, audit: audit, subject: nil)
        let a2 = try engine.archiveAudit(before: secondCut + 1, to: try OutputFile(path: out("a2.jsonl"), force: false, protecting: []), audit: audit)
        check(a2.firstSequence == a1.lastSequence + 1 && a2.lastSequence == secondHead?.sequence, "second archive does not continue the first")
        let file2 = try AuditExportVerifier.verify(path: out("a2.jsonl"), publicKey: engine.auditPublicKey, expectHead: nil)
        check(file2.ok, "the second archive does not verify: \(file2.reason ?? "")")
        try appendBatches(engine, 1, audit: audit, subject: subject)
        let v2 = try engine.verifyAudit(expectHead: nil)
        check(v2.ok && v2.archivedThrough == a2.lastSequence, "the store does not verify after two archives: \(v2.reason ?? "")")
        check(try engine.signedAuditHead() != nil, "no signed head after the archives")
        check(try engine.archivedThrough() == a2.lastSequence, "archivedThrough")
        // A published head inside the archive is not checked against the live log; a bare head
        // hash there is refused with a message naming the archive.
        let bare = try engine.verifyAudit(expectHead: a2.head)
        check(bare.ok, "the anchor's own head is refused: \(bare.reason ?? "")")
        if let old = firstHead, old.sequence > 1 {
            let text = try String(contentsOfFile: out("a1.jsonl"), encoding: .utf8)
            if let line = text.split(separator: "\n").first, let v = try? JSONValue.parse(String(line)), case .string(let h)? = v["hash"] {
                let inside = try engine.verifyAudit(expectHead: h)
                check(!inside.ok && (inside.reason ?? "").contains("audit archives"), "an archived head is not explained: \(inside.reason ?? "")")
            }
        }
        return failures
    }
}
