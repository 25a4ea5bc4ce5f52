import Foundation
import Testing
import VaultPolicy
@testable import VaultStore

/// `VaultError.detail`, what the audit log records and HTTP clients are told: no quoted input
/// value and no directory, whatever the CLI message says.
@Suite struct VaultErrorDetailTests {
    @Test func quotedValuesAndDirectoriesNeverReachTheDetail() {
        let cases: [(String, String)] = [
            ("/srv/vault/in/p.csv:3: field age: value '+4915112345678' is outside bounds [18, 100]",
             "p.csv:3: field age: value (value) is outside bounds [18, 100]"),
            ("job j refused: model x (see /etc/profilevault/policies/policy.yaml)", "job j refused: model x (see policy.yaml)"),
            ("purpose 'unterminated SECRET", "purpose (value)"),
            ("the subject's consent is not active", "the subject's consent is not active"),
            ("a boolean (true/false, yes/no, 1/0)", "a boolean (true/false, yes/no, 1/0)"),
            ("/", "(path)"),
        ]
        for (message, detail) in cases {
            #expect(VaultError(.invalidInput, message).detail == detail, "\(message)")
            #expect(VaultError(.invalidInput, message).message == message)
        }
        // An explicit detail is used (and redacted too).
        let e = VaultError(.denied, "purpose x-SECRET is not declared", detail: "undeclared purpose ('x-SECRET')")
        #expect(e.detail == "undeclared purpose ((value))")
    }

    @Test func valueErrorsCarryAValueFreeDetail() throws {
        let spec = try #require(Fixtures.schema.field(named: "age"))
        #expect(throws: ValueError.self) { try spec.parse("+4915112345678") }
        do {
            _ = try spec.parse("+4915112345678")
        } catch {
            #expect(error.reason.contains("4915112345678"))   // the CLI line may quote a number
            #expect(!error.detail.contains("4915112345678") && error.detail.hasPrefix("value is outside bounds"))
        }
        let email = try #require(Fixtures.schema.field(named: "email"))
        for c: UInt8 in [0, 1, 0x0A, 0x0D, 0x1B, 0x1F] {
            let raw = "a" + String(UnicodeScalar(c)) + "b@example.org"
            do {
                _ = try email.parse(Substring(raw))
                Issue.record("control character \(c) accepted")
            } catch {
                #expect(error.reason.contains("control character U+00") && !error.reason.contains("example.org"))
            }
        }
        #expect(try email.parse("a\tb@example.org") == .text("a\tb@example.org"))
    }
}

/// Issue 18: an error at a place in the input carries the place as a structure, and its reason
/// apart from any value.
@Suite struct VaultErrorLocationTests {
    @Test func aRecordIssueKeepsItsPlaceAndNoValue() {
        let issue = RecordIssue(file: "/srv/in/p.csv", line: 7, field: "age",
                                reason: "value '+4915112345678' is not an integer", detailReason: "value is not an integer")
        let e = issue.error()
        #expect(e.kind == .invalidInput)
        #expect(e.location == VaultError.Location(file: "/srv/in/p.csv", line: 7, field: "age"))
        #expect(e.reason == "value is not an integer")
        // The terminal line names the file as given; what is recorded and sent names the file only.
        #expect(e.message == "/srv/in/p.csv:7: field age: value '+4915112345678' is not an integer")
        #expect(e.detail == "p.csv:7: field age: value is not an integer")
        #expect(!e.detail.contains("4915112345678") && !e.reason.contains("4915112345678"))
    }

    @Test func aRecordInMemoryIsNamedByItsNumber() {
        let e = RecordIssue(file: "", line: 3, field: "email", reason: "missing required value").error()
        #expect(e.location == VaultError.Location(file: nil, line: 3, field: "email"))
        #expect(e.message == "record 3: field email: missing required value")
        #expect(e.detail == e.message)
    }

    @Test func aQuotedValueInTheReasonIsRedactedEvenWhenTheThrowerForgot() {
        let e = VaultError(.invalidInput, reason: "value 'alice@example.com' is not allowed", at: .init(file: nil, line: 1, field: "x"))
        #expect(e.detail == "record 1: field x: value (value) is not allowed")
        #expect(e.reason == "value (value) is not allowed")
    }
}
