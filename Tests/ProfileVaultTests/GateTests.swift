import Foundation
import Testing
import VaultAudit
@testable import ProfileVault

/// The sealed gate (issue 18): profilectl, VaultServer and pvbench reach the store only through
/// `Vault`. SwiftPM's `--explicit-target-dependency-import-check` lets a target import anything
/// in its dependency closure (ProfileVault depends on the store, so the store is in every
/// interface's closure), so this test reads the interfaces' sources: it fails when one of them
/// imports VaultStore, VaultCrypto or VaultAudit in any form, names a type of theirs by module,
/// declares them as a dependency in Package.swift, or uses the benchmark's SPI outside pvbench.
@Suite struct GateTests {
    static let interfaces = ["profilectl", "VaultServer", "pvbench"]
    static let sealed = ["VaultStore", "VaultCrypto", "VaultAudit", "VaultPostgres"]

    static func sources(_ target: String) throws -> [(path: String, text: String)] {
        let dir = CLI.repoRoot + "/Sources/" + target
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".swift") }.sorted()
        return try names.map { ("Sources/\(target)/\($0)", try String(contentsOfFile: dir + "/" + $0, encoding: .utf8)) }
    }

    /// Every line of `text` that imports or names `module`, with its number.
    static func offending(_ text: String, module: String) -> [Int] {
        var hits: [Int] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("//") { continue }
            let words = line.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" && $0 != "." }).map(String.init)
            // `import M`, `@testable import M`, `import struct M.T`, `@_exported public import M`.
            if let k = words.firstIndex(of: "import"), words[(k + 1)...].contains(where: { $0 == module || $0.hasPrefix(module + ".") }) {
                hits.append(i + 1)
            } else if words.contains(where: { $0.hasPrefix(module + ".") }) {
                hits.append(i + 1)   // a module-qualified name, e.g. VaultStore.ProfileStore
            }
        }
        return hits
    }

    @Test func interfacesImportNothingBelowTheGate() throws {
        var found: [String] = []
        for target in Self.interfaces {
            for (path, text) in try Self.sources(target) {
                for module in Self.sealed {
                    found += Self.offending(text, module: module).map { "\(path):\($0): \(module)" }
                }
            }
        }
        #expect(found.isEmpty, "interfaces reach below the Vault gate:\n\(found.joined(separator: "\n"))")
    }

    @Test func theCheckCatchesEveryFormOfImport() {
        for line in ["import VaultStore", "@testable import VaultStore", "public import VaultStore", "@preconcurrency import VaultStore",
                     "import struct VaultStore.ProfileStore", "@_exported import VaultStore", "let s: VaultStore.ProfileStore? = nil"] {
            #expect(Self.offending("import Foundation\n" + line, module: "VaultStore") == [2], "\(line)")
        }
        #expect(Self.offending("import VaultStoreKit\n// import VaultStore\nimport ProfileVault", module: "VaultStore").isEmpty)
    }

    /// Each interface's target declaration in Package.swift, from `.target(` or
    /// `.executableTarget(` with its name up to the next declaration of any kind (not the
    /// product of the same name, which comes first).
    static func targetBlock(_ manifest: String, _ target: String) -> String? {
        let starts = [".target(", ".executableTarget(", ".testTarget(", ".systemLibrary("]
        var searchFrom = manifest.startIndex
        while let open = starts.compactMap({ manifest.range(of: $0, range: searchFrom..<manifest.endIndex) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            let rest = manifest[open.upperBound...]
            let next = starts.compactMap { rest.range(of: $0)?.lowerBound }.min() ?? manifest.endIndex
            let block = String(manifest[open.lowerBound..<next])
            let head = block.drop { $0 != "(" }.dropFirst().drop { $0 == " " || $0 == "\n" }
            if head.hasPrefix("name: \"\(target)\"") { return block }
            searchFrom = open.upperBound
        }
        return nil
    }

    @Test func packageDeclaresNoSealedDependencyForAnInterface() throws {
        let manifest = try String(contentsOfFile: CLI.repoRoot + "/Package.swift", encoding: .utf8)
        for target in Self.interfaces {
            guard let block = Self.targetBlock(manifest, target) else {
                Issue.record("Package.swift declares no target \(target)"); continue
            }
            #expect(block.contains("\"ProfileVault\""), "\(target): \(block)")
            for module in Self.sealed {
                #expect(!block.contains("\"\(module)\""), "Package.swift: \(target) depends on \(module)")
            }
        }
        // The check itself finds a sealed dependency where there is one.
        let planted = manifest.replacingOccurrences(of: "name: \"pvbench\",\n            dependencies: [", with: "name: \"pvbench\",\n            dependencies: [\"VaultStore\", ")
        #expect(planted != manifest)
        #expect(Self.targetBlock(planted, "pvbench")?.contains("\"VaultStore\"") == true)
    }

    /// The gate hands out values, never what sits below it: no public declaration of
    /// ProfileVault (outside the benchmark's SPI) takes or returns the store, a keyring or a
    /// key. (`Vault.loadKeyring(path:)` was public and returned the `Keyring`, whose keys open
    /// every subject's ciphertext, to any interface, without a role.)
    @Test func noPublicDeclarationHandsOutTheStoreOrAKey() throws {
        let below: Set<String> = ["ProfileStore", "StorageEngine", "Keyring", "AESGCMKey", "Ed25519PrivateKey", "SecureBytes", "HMACKey"]
        var found: [String] = []
        for (path, text) in try Self.sources("ProfileVault") {
            var spi = false
            for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("//") { continue }
                // `@_spi(...)` on its own line applies to the declaration that follows.
                if line.hasPrefix("@_spi(") && !line.contains("public") { spi = true; continue }
                defer { spi = false }
                let words = line.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" }).map(String.init)
                guard words.contains("public"), !line.contains("@_spi("), !spi else { continue }
                // The declaration's signature: what comes before its body.
                let signature = line.split(separator: "{", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? line
                let named = signature.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "_" }).map(String.init)
                if let hit = named.first(where: below.contains) { found.append("\(path):\(i + 1): \(hit)") }
            }
        }
        #expect(found.isEmpty, "public declarations of ProfileVault hand out what is below the gate:\n\(found.joined(separator: "\n"))")
    }

    @Test func onlyTheBenchmarkUsesTheBenchmarkSPI() throws {
        let root = CLI.repoRoot + "/Sources"
        var users: [String] = []
        for target in try FileManager.default.contentsOfDirectory(atPath: root) where target != "ProfileVault" {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: root + "/" + target) else { continue }
            for f in files where f.hasSuffix(".swift") {
                let text = try String(contentsOfFile: root + "/" + target + "/" + f, encoding: .utf8)
                if text.contains("@_spi(Benchmark)") { users.append(target + "/" + f) }
            }
        }
        #expect(users == ["pvbench/main.swift"])
    }
}

/// The methods the sealed gate added for the interfaces keep the gate's checks.
@Suite struct GateMethodTests {
    /// The audit log's entries as parsed JSON objects.
    static func auditEntries(_ f: VaultFixture) throws -> [JSONValue] {
        let path = f.dir + "/gate-\(UUID().uuidString).jsonl"
        _ = try f.vault("auditor").exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: path)
        return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
    }

    @Test func storedRowsNeedExportAndAreAudited() throws {
        let f = try VaultFixture(profiles: 3)
        // Every role without `export` is refused, and the refusal is recorded.
        for role in ["operator", "support", "app", "trainer", "auditor"] {
            #expect(throws: VaultError.self) { _ = try f.vault(role).storedRows(customerID: "C1") }
            do { _ = try f.vault(role).storedRows(customerID: "C1") } catch let e as VaultError { #expect(e.kind == .denied) }
        }
        let rows = try #require(try f.vault("privacy_officer").storedRows(customerID: "C1"))
        // Ciphertext only: the row view holds no plaintext PII of the subject.
        let shown = ([rows.pseudonymHex, rows.wrappedDEKHex] + rows.pii.map(\.ciphertextHex) + rows.blindIndex.map(\.macHex)).joined()
        #expect(!shown.contains("C1") && !shown.contains("@"))
        #expect(try f.vault("privacy_officer").storedRows(customerID: "nobody") == nil)
        let entries = try Self.auditEntries(f).filter { $0["api.operation"] == .string("inspect.stored") }
        let outcomes = entries.compactMap { e -> String? in if case .string(let s)? = e["status"] { return s }; return nil }
        #expect(outcomes.filter { $0 == "denied" }.count == 10)   // 5 roles, twice each
        // The unknown subject's view reads nothing, and is recorded (as get records one):
        // without that entry, the view would tell who is a customer without a trace.
        #expect(outcomes.filter { $0 == "ok" }.count == 1 && outcomes.filter { $0 == "error" }.count == 1 && outcomes.count == 12)
    }

    @Test func healthAndBudgetSnapshotReadNoSubject() throws {
        let f = try VaultFixture(profiles: 3)
        let v = try f.vault("none")
        try v.healthProbe()
        let snapshot = try v.budgetSnapshot()
        #expect(!snapshot.isEmpty && snapshot.allSatisfy { $0.spent == 0 && $0.limit > 0 })
        // The role-checked form refuses the same role.
        #expect(throws: VaultError.self) { _ = try v.budgetStatus() }
    }

    @Test func keyringGenerationNeverReplacesAFile() throws {
        let f = try VaultFixture(profiles: 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: f.keys))
        do {
            _ = try Vault.generateKeyring(at: f.keys, note: "x")
            Issue.record("an existing keyring was replaced")
        } catch let e as VaultError {
            #expect(e.kind == .cannotCreate)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: f.keys)) == before)
        #expect(!Vault.isExampleKeyring(path: f.keys))
        // A copy of the example keyring, private as a keyring must be, is still the example.
        let copy = f.dir + "/example.json"
        try FileManager.default.copyItem(atPath: CLI.repoRoot + "/keys-example/keyring.json", toPath: copy)
        chmod(copy, 0o600)
        #expect(Vault.isExampleKeyring(path: copy))
    }
}

/// The audit export as a value: the HTTP service's in-memory form matches the file form, and a
/// `since` after the newest entry selects nothing (it once fell back to the whole log).
@Suite struct AuditExportSinkTests {
    @Test func memoryExportMatchesTheFileAndAFutureSinceIsEmpty() throws {
        let f = try VaultFixture(profiles: 3)
        let auditor = try f.vault("auditor")
        let mem = try auditor.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl)
        let path = f.dir + "/a.jsonl"
        let file = try auditor.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: path)
        // The file form was exported after the memory form, so it holds one entry more (its own).
        #expect(file.entries == mem.entries + 1)
        let fileText = try String(contentsOfFile: path, encoding: .utf8)
        #expect(fileText.hasPrefix(String(decoding: mem.bytes.dropLast(), as: UTF8.self).split(separator: "\n").dropLast().joined(separator: "\n")))
        let pem = auditor.auditPublicKeyPEM
        let memPath = f.dir + "/m.jsonl"
        try Data(mem.bytes).write(to: URL(fileURLWithPath: memPath))
        #expect(try Vault.verifyAuditExport(path: memPath, publicKeyPEM: pem, keyName: "k", expectHead: nil).ok)

        let future = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
        let empty = try auditor.exportAudit(sinceMillis: future, untilMillis: nil, format: .jsonl)
        #expect(empty.entries == 0)
        let emptyFile = try auditor.exportAudit(sinceMillis: future, untilMillis: nil, format: .jsonl, to: f.dir + "/e.jsonl")
        #expect(emptyFile.entries == 0)
    }
}
