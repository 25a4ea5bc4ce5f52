import Foundation
import Testing

/// Runs the built `profilectl` binary, as scripts and users do.
enum CLI {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let binary: String = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidates = [beside.appendingPathComponent("profilectl").path]
        // The test runner may live inside an .xctest bundle.
        candidates.append(beside.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("profilectl").path)
        candidates.append(repoRoot + "/.build/debug/profilectl")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]
        }
    }

    static func run(_ args: [String], env: [String: String] = [:], cwd: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        var environment = ProcessInfo.processInfo.environment
        for k in ["PROFILEVAULT_STORE", "PROFILEVAULT_KEYS", "PROFILEVAULT_POLICY"] { environment[k] = nil }
        for (k, v) in env { environment[k] = v }
        p.environment = environment
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

/// A folder with a 0600 keyring, an initialised store and the repository's policies.
/// `@unchecked Sendable`: `env` is set in `init` (tests may adjust copies, never the shared one).
final class CLIStore: @unchecked Sendable {
    let dir: String
    var env: [String: String]

    init(initialise: Bool = true) throws {
        dir = NSTemporaryDirectory() + "pv-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        env = ["PROFILEVAULT_STORE": dir + "/store.sqlite", "PROFILEVAULT_KEYS": dir + "/keyring.json", "PROFILEVAULT_POLICY": CLI.repoRoot + "/policies"]
        if initialise {
            let g = try CLI.run(["keys", "generate", "--out", dir + "/keyring.json", "--json"])
            precondition(g.status == 0, g.stderr)
            let i = try CLI.run(["init", "--json"], env: env)
            precondition(i.status == 0, i.stderr)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func run(_ args: [String]) throws -> CLI.Result { try CLI.run(args, env: env) }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// Writes `text` as the catalog `products` the shipped policy declares
    /// (`catalogs/products.tsv` in this store's own policy directory) and returns its name, for
    /// a job's `items_from:`. Never writes into the repository's policies.
    func catalog(_ text: String) throws -> String {
        let policies = env["PROFILEVAULT_POLICY"] ?? ""
        precondition(!policies.isEmpty && policies.hasPrefix(dir + "/"), "catalog(_:) needs a store with its own policy directory")
        try FileManager.default.createDirectory(atPath: policies + "/catalogs", withIntermediateDirectories: true)
        try text.write(toFile: policies + "/catalogs/products.tsv", atomically: true, encoding: .utf8)
        return "products"
    }

    static let header = "customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income"
    static func rows(_ n: Int) -> String {
        ([header] + (0..<n).map { "C\($0),user\($0)@example.com,Test Person \($0),+49 30 \(1000 + $0),1980-01-0\(1 + $0 % 9),\(30 + $0 % 50),female,DE,\(1000 * ($0 % 250))" })
            .joined(separator: "\n") + "\n"
    }
}
