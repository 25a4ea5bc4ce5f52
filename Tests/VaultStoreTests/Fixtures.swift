import Foundation
import VaultCrypto
import VaultPolicy
@testable import VaultStore

/// Shared test fixtures: the repository's policies, a fresh keyring and store per test in its
/// own temporary directory.
enum Fixtures {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let policies: (schema: Schema, policy: Policy) = {
        try! PolicyLoader.load(directory: repoRoot + "/policies")
    }()

    static var schema: Schema { policies.schema }

    static let header = "customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income"

    /// A deterministic generated profile row in the default schema's columns.
    static func row(_ i: Int) -> [String] {
        let names = ["Zoë Müller", "Nguyễn Văn An", "O'Brien, Siobhan", "José Álvarez", "Aarav Sharma", "李 娜"]
        let age = 18 + (i * 7) % 70
        return ["CUST-\(i)", "Person.\(i)@Example.ORG", names[i % names.count], "+49 (30) \(1_000_000 + i)",
                String(format: "%04d-%02d-%02d", 2026 - age, 1 + i % 12, 1 + i % 28), String(age),
                ["female", "male", "other", "unknown"][i % 4], ["DE", "FR", "GB", "US", "other"][i % 5], String(Double(i % 2400) * 100.5)]
    }

    static func csvLine(_ fields: [String]) -> String {
        fields.map { $0.contains(",") || $0.contains("\"") ? "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : $0 }.joined(separator: ",")
    }

    static func profilesCSV(_ range: Range<Int>) -> String {
        ([header] + range.map { csvLine(row($0)) }).joined(separator: "\n") + "\n"
    }
}

/// One temporary directory with a keyring and a store, removed at deinit.
final class TempStore {
    let dir: String
    let keyring: Keyring
    let store: ProfileStore

    init(schema: Schema = Fixtures.schema) throws {
        dir = NSTemporaryDirectory() + "pv-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        keyring = Keyring.generate(note: "test")
        try keyring.write(to: dir + "/keyring.json")
        store = try ProfileStore.create(path: dir + "/store.sqlite", keyring: keyring, schema: schema, policyVersion: "test")
    }

    deinit {
        try? store.close()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func write(_ name: String, bytes: [UInt8]) throws -> String {
        let p = dir + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    var allFields: Set<String> { Set(Fixtures.schema.fields.map(\.name)) }

    /// Subjects, encrypted PII fields, blind-index entries, attribute rows, events.
    func counts() throws -> [Int] { try store.storedCounts() }
}
