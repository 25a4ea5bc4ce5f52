import ArgumentParser
import ProfileVault
import VaultValues

extension ProfileValue {
    var text: String {
        switch self {
        case .null: "(none)"
        case .int(let i): String(i)
        case .float(let d): String(d)
        case .text(let s): s
        case .bool(let b): String(b)
        }
    }
}

extension ProfileView {
    var text: String {
        let width = max(11, fields.map(\.name.count).max() ?? 0)
        func pad(_ s: String) -> String { s + String(repeating: " ", count: max(0, width - s.count)) }
        return ([pad("customer_id") + "  " + customerID] + fields.map { pad($0.name) + "  " + $0.value.text }).joined(separator: "\n")
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A subject's decrypted profile, for a purpose that may read PII.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "The customer ID.") var subject: String
    @Option(help: "The purpose of the read (must be declared in policy.yaml with may_read_pii).") var purpose: String

    func run() throws {
        let view = try options.openVault().get(customerID: subject, purpose: purpose)
        options.emit(JSONForms.profile(view), text: view.text)
    }
}

struct Find: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Blind-index lookup on a lookup field (--field F --value V), or by e-mail or phone; prints the customer ID.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "A lookup field of the schema (pii: true, lookup: true), with --value.") var field: String?
    @Option(help: "The value to look up in --field (normalised like the stored values).") var value: String?
    @Option(help: "E-mail address (trimmed, case-insensitive).") var email: String?
    @Option(help: "Phone number (digits only are compared).") var phone: String?

    func validate() throws {
        if (field == nil) != (value == nil) { throw ValidationError("--field and --value go together") }
        if [field != nil, email != nil, phone != nil].filter({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --field F --value V, --email or --phone")
        }
    }

    func run() throws {
        let vault = try options.openVault()
        let ids: [String]
        if let field, let value {
            ids = try vault.find(field: field, value: value)
        } else if let email {
            ids = try vault.find(.email, value: email)
        } else {
            ids = try vault.find(.phone, value: phone ?? "")
        }
        options.emit(.object([("customer_id", .string(ids[0])), ("matches", .array(ids.map { .string($0) }))]),
                     text: ids.joined(separator: "\n"))
    }
}
