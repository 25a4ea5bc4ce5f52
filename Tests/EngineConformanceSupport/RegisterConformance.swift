// The request register on any engine (issue 19 §1): the same refusals, the same sealing, the
// same effect of erasure, checked by the SQLite and the PostgreSQL suites alike.

import Foundation
public import VaultStore
import VaultAudit

public enum RegisterConformance {
    public static let note = "Caller Wilhelmina Quaxenberg-Oort, +31 6 9988 7766"
    public static let reason = "Identity of Bartholomeus Vandersnoot not verified"

    /// Runs the register's checks on `engine`, whose subjects include `ids` (at least three,
    /// each long and distinctive), and returns what failed (empty: all held). `storedBytes`
    /// returns what the engine keeps of the register and the suppression list as bytes (the
    /// SQLite file and WAL; PostgreSQL's rows as text): none may hold an ID, the note or a
    /// reason, in clear or as hex. `call` runs an engine call (the PostgreSQL suite runs them
    /// off the cooperative pool).
    public static func run(_ engine: any StorageEngine, ids: [String], audit: AuditContext,
                           storedBytes: () throws -> [UInt8]) throws -> [String] {
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }
        func kind(_ body: () throws -> Void) -> VaultError.Kind? {
            do { try body(); return nil } catch let e as VaultError { return e.kind } catch { return .internalFailure }
        }
        let day: Int64 = 86_400_000
        let received: Int64 = 1_780_000_000_000
        func new(_ type: RequestType, _ id: String, note: String? = nil) -> NewRequest {
            NewRequest(id: RequestRegister.newID(), type: type, customerID: id, receivedMillis: received, dueMillis: received + 30 * day,
                       channel: .email, note: note)
        }
        // An unknown subject is refused, nothing recorded.
        check(kind { _ = try engine.openRequest(new(.access, "NOBODY-AT-ALL-0000-UNKNOWN"), audit: audit) } == .notFound, "unknown subject not refused")
        let r1 = try engine.openRequest(new(.access, ids[0], note: note), audit: audit)
        let r2 = try engine.openRequest(new(.erasure, ids[1]), audit: audit)
        let r3 = try engine.openRequest(new(.objection, ids[2]), audit: audit)
        check(try engine.requests(status: nil).count == 3, "three requests listed")
        check(try engine.requestCustomerID(id: r1.id) == ids[0], "customer ID opens")
        check(try engine.request(id: r1.id) == r1, "request reads back")
        // Extended once, never twice.
        let x = try engine.changeRequest(id: r1.id, .extend(extensionMillis: 60 * day, reason: reason), audit: audit)
        check(x.extendedDueMillis == received + 90 * day && x.currentDueMillis == received + 90 * day, "extension moves the due date")
        check(kind { _ = try engine.changeRequest(id: r1.id, .extend(extensionMillis: day, reason: "again"), audit: audit) } == .invalidInput,
              "second extension not refused")
        // Denied, then closed for good.
        check(try engine.changeRequest(id: r3.id, .deny(reason: reason), audit: audit).status == .denied, "deny")
        check(kind { _ = try engine.changeRequest(id: r3.id, .fulfil(outcome: "confirmed"), audit: audit) } == .invalidInput, "fulfil after deny")
        check(kind { _ = try engine.changeRequest(id: r3.id, .extend(extensionMillis: day, reason: "x"), audit: audit) } == .invalidInput, "extend after deny")
        check(kind { _ = try engine.changeRequest(id: "req_0000000000000000", .deny(reason: "x"), audit: audit) } == .notFound, "unknown id")
        check(kind { _ = try engine.changeRequest(id: "not an id", .deny(reason: "x"), audit: audit) } == .notFound, "malformed id")
        check(kind { _ = try engine.changeRequest(id: r1.id, .deny(reason: "a\u{0}b"), audit: audit) } == .invalidInput, "U+0000 reason")
        // Nothing that names the person is stored in clear (nor as hex, PostgreSQL's bytea text).
        let bytes = try storedBytes()
        for needle in ids.prefix(3) + ["Wilhelmina", "Quaxenberg", "Vandersnoot", "Bartholomeus"] {
            check(find(Array(needle.utf8), in: bytes) == nil, "\(needle) stored in clear")
            let hex = Array(needle.utf8).map { String(format: "%02x", $0) }.joined()
            check(find(Array(hex.utf8), in: bytes) == nil, "\(needle) stored as hex")
        }
        // Erasure: the receipt goes on the suppression list, the sealed columns go, the request stays.
        let p1 = try engine.pseudonym(ofCustomerID: ids[1])
        check(try engine.erasure(pseudonym: p1) == nil, "not erased yet")
        let receipts = try engine.erase(customerIDs: [(1, ids[1])], file: nil, reason: "request \(r2.id)", audit: audit)
        let record = try engine.erasure(pseudonym: p1)
        check(record?.receipt == receipts.first?.receipt && record?.auditSequence == receipts.first?.auditSequence
              && record?.erasedAtMillis == receipts.first?.erasedAtMillis, "suppression list names the receipt")
        check(try engine.requestCustomerID(id: r2.id) == nil, "customer ID of an erased subject still readable")
        check(try engine.request(id: r2.id)?.status == .open, "the request outlives the erasure")
        let done = try engine.changeRequest(id: r2.id, .fulfil(outcome: "receipt:\(receipts.first?.receipt ?? "")"), audit: audit)
        check(done.status == .done && done.outcome == "receipt:\(receipts.first?.receipt ?? "")", "fulfil attaches the receipt")
        check(try engine.requests(status: .open).map(\.id) == [r1.id], "open filter")
        check(try engine.requests(status: .done).map(\.id) == [r2.id], "done filter")
        check(try engine.requestCustomerID(id: r1.id) == ids[0], "another subject's request untouched")
        return failures
    }

    static func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        let first = needle[0]
        var i = 0
        while i <= hay.count - needle.count {
            if hay[i] == first, Array(hay[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}
