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
