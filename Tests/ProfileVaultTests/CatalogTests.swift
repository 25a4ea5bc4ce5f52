import Foundation
@testable import ProfileVault
import Testing
import VaultPolicy
import VaultStore

/// Issue 17, item 3: `items_from` names a catalog the policy declares, so a training job cannot
/// copy a file of its choosing (the keyring) into an artifact's `items`.
extension TrainTests {
    func spent(_ s: CLIStore) throws -> Double? {
        let b = try s.run(["budget", "status", "--role", "trainer", "--json"])
        return ((b.json?["purposes"] as? [String: Any])?["model_training"] as? [String: Any])?["spent"] as? Double
    }

    @Test func aJobCannotCopyTheKeyringIntoAnArtifact() throws {
        let s = try store()
        let keyring = s.dir + "/keyring.json"
        // The attack that worked before: items_from a path, any path. Refused at parse (65),
        // naming the field and the fix; nothing is charged and no artifact is written.
        for target in [keyring, "../keyring.json", "keyring.json", "catalogs/products.tsv"] {
            let p = try job(s, "steal.yaml", "job: steal\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: \(target)\nepsilon: 1\n")
            let out = s.dir + "/stolen.json"
            let r = try s.run(["train", p, "--out", out, "--role", "trainer"])
            #expect(r.status == 65, "\(target): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: \(p):5: items_from: expected the name of a catalog declared in the policy, not a path"), "\(r.stderr)")
            #expect(r.stderr.contains("catalogs: { products: catalogs/products.tsv }"))
            #expect(!FileManager.default.fileExists(atPath: out))
            #expect(!r.stderr.contains("secret"))
        }
        #expect(try spent(s) == 0)
        // An undeclared name: 65, listing the declared catalogs; nothing charged.
        let p = try job(s, "other.yaml", "job: other\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: keyring\nepsilon: 1\n")
        let r = try s.run(["train", p, "--role", "trainer"])
        #expect(r.status == 65 && r.stderr.contains("items_from: keyring is not a catalog declared in the policy (catalogs: products)"), "\(r.stderr)")
        // The declared catalog, absent: 66; then present: trains and names its items.
        let missing = try s.run(["train", try job(s, "ok.yaml", "job: ok\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: products\nepsilon: 1\n"), "--role", "trainer"])
        #expect(missing.status == 66 && missing.stderr.contains("catalog products (catalogs/products.tsv in the policy directory): no such file"), "\(missing.stderr)")
        #expect(try spent(s) == 0)
        _ = try s.catalog((0..<12).map { "SKU-\($0)" }.joined(separator: "\n") + "\n")
        let ok = try s.run(["train", s.dir + "/ok.yaml", "--out", s.dir + "/ok.json", "--role", "trainer"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try spent(s) == 1)
    }

    @Test func aCatalogThatLeavesThePolicyDirectoryIsRefusedAtLoad() throws {
        let s = try store()
        let pol = s.dir + "/policies"
        let shipped = try String(contentsOfFile: pol + "/policy.yaml", encoding: .utf8)
        let line = shipped.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.hasPrefix("  products:") }.map { $0 + 1 } ?? 0
        #expect(line > 0, "the shipped policy declares catalogs.products")
        func expectRefused(_ path: String, _ reason: String) throws {
            try shipped.replacingOccurrences(of: "  products: catalogs/products.tsv", with: "  products: \(path)")
                .write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
            let r = try s.run(["budget", "status", "--role", "trainer"])
            #expect(r.status == 78, "\(path): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: \(pol)/policy.yaml:\(line):"), "\(r.stderr)")
            #expect(r.stderr.contains("catalogs.products: ") && r.stderr.contains(reason), "\(r.stderr)")
        }
        try expectRefused("../keyring.json", "leaves the policy directory (..)")
        try expectRefused("catalogs/../../keyring.json", "leaves the policy directory (..)")
        try expectRefused(s.dir + "/keyring.json", "is an absolute path")
        // A symbolic link inside the directory that leads to the keyring outside it.
        try FileManager.default.createDirectory(atPath: pol + "/catalogs", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: pol + "/catalogs/stolen.tsv", withDestinationPath: s.dir + "/keyring.json")
        try expectRefused("catalogs/stolen.tsv", "leads outside the policy directory (through a symbolic link)")
        // ... or through a linked directory, or a link to nowhere.
        try FileManager.default.createSymbolicLink(atPath: pol + "/up", withDestinationPath: s.dir)
        try expectRefused("up/keyring.json", "leads outside the policy directory")
        try FileManager.default.createSymbolicLink(atPath: pol + "/catalogs/dangling.tsv", withDestinationPath: s.dir + "/nothing-here")
        try expectRefused("catalogs/dangling.tsv", "symbolic link that leads nowhere")
        // A link that stays inside is followed.
        try shipped.write(toFile: pol + "/policy.yaml", atomically: true, encoding: .utf8)
        try "SKU-1\n".write(toFile: pol + "/catalogs/real.tsv", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: pol + "/catalogs/alias.tsv", withDestinationPath: "real.tsv")
        let policy = try PolicyLoader.load(directory: pol).policy
        #expect(policy.catalogs["products"]?.path == "catalogs/products.tsv")
        #expect(CatalogFile.resolve("catalogs/alias.tsv", policyDirectory: pol) == .inside(URL(fileURLWithPath: pol + "/catalogs/real.tsv").resolvingSymlinksInPath().path))
    }

    @Test func aLinkSwappedInAfterTheLoadIsRefusedAtTrainTime() throws {
        let s = try store()
        let pol = s.dir + "/policies"
        _ = try s.catalog("SKU-1\n")
        let trainer = try Vault.open(VaultConfiguration(storePath: s.dir + "/store.sqlite", keysPath: s.dir + "/keyring.json",
                                                        policyDirectory: pol, actor: ProfileVault.Actor(name: "t", role: "trainer")))
        defer { try? trainer.store.close() }
        // After the policy loaded, the catalog becomes a link to the keyring.
        try FileManager.default.removeItem(atPath: pol + "/catalogs/products.tsv")
        try FileManager.default.createSymbolicLink(atPath: pol + "/catalogs/products.tsv", withDestinationPath: s.dir + "/keyring.json")
        let p = try job(s, "r.yaml", "job: r\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: products\nepsilon: 1\n")
        do {
            _ = try trainer.train(jobFile: p)
            Issue.record("a catalog linked to the keyring was read")
        } catch let e as VaultError {
            #expect(e.kind == .configuration)
            #expect(e.message.contains("catalog products (catalogs/products.tsv in the policy directory): catalogs/products.tsv leads outside the policy directory"), "\(e.message)")
        }
        #expect(try trainer.budgetStatus().first { $0.purpose == "model_training" }?.spent == 0)
        // And every fresh load now refuses the policy (the link leads outside): 78.
        #expect(try s.run(["budget", "status", "--role", "trainer"]).status == 78)
    }

    @Test func catalogContentIsPlainItemLines() throws {
        func parse(_ text: String) -> Result<CatalogFile.Contents, CatalogProblem> { CatalogFile.parse(Array(text.utf8)) }
        #expect(try parse("# public\nA\tRed bag\r\n\nB\nA\tagain\n  C  \n").get()
                == CatalogFile.Contents(items: ["A", "B", "C"], descriptions: ["Red bag", "", ""]))
        #expect(try parse("A\nB").get() == CatalogFile.Contents(items: ["A", "B"], descriptions: nil))
        #expect(parse("A\nB\u{0}C\n") == .failure(CatalogProblem(line: 2, reason: "control character (catalog lines are plain text: ITEM or ITEM<TAB>DESCRIPTION)")))
        #expect(parse("A\n\u{1b}[31mB\n") == .failure(CatalogProblem(line: 2, reason: "control character (catalog lines are plain text: ITEM or ITEM<TAB>DESCRIPTION)")))
        #expect(parse("A\r\nB\rC\n").map(\.items) == .failure(CatalogProblem(line: 2, reason: "control character (catalog lines are plain text: ITEM or ITEM<TAB>DESCRIPTION)")))
        #expect(parse(String(repeating: "x", count: 257) + "\n") == .failure(CatalogProblem(line: 1, reason: "item longer than 256 bytes")))
        #expect(CatalogFile.parse([0x41, 0x0A, 0xFF, 0xFE, 0x0A]) == .failure(CatalogProblem(line: 2, reason: "not UTF-8 text")))
        // At most 1,000,000 items: the 1,000,001st distinct item is refused, naming its line
        // (after a comment line); repeats do not count.
        var big: [UInt8] = Array("# many\n".utf8)
        big.reserveCapacity(9_000_000)
        for i in 0...1_000_000 { big.append(contentsOf: String(i, radix: 36).utf8); big.append(0x0A) }
        #expect(CatalogFile.parse(big) == .failure(CatalogProblem(line: 1_000_002, reason: "more than 1000000 items")))
        #expect(try CatalogFile.parse(Array(big.dropLast(String(1_000_000, radix: 36).utf8.count + 1)) + Array("0\n1\n".utf8)).get().items.count == 1_000_000)
        // Paths, as text.
        #expect(CatalogFile.pathProblem("catalogs/products.tsv") == nil)
        #expect(CatalogFile.pathProblem("/etc/passwd")?.contains("absolute path") == true)
        #expect(CatalogFile.pathProblem("a/../../b")?.contains("(..)") == true)
        #expect(CatalogFile.pathProblem("a\u{0}b") == "the path holds a control character")
        #expect(CatalogFile.pathProblem("") != nil)
    }
}
