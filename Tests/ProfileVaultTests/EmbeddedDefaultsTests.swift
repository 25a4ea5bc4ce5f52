import Foundation
import ProfileVault
import Testing

/// The demo's embedded keyring and policies are the repository's files, byte for byte
/// (regenerate with scripts/embed-defaults.sh).
@Suite struct EmbeddedDefaultsTests {
    @Test(arguments: [("keys-example/keyring.json", EmbeddedDefaults.keyringJSON),
                      ("policies/schema.yaml", EmbeddedDefaults.schemaYAML),
                      ("policies/policy.yaml", EmbeddedDefaults.policyYAML),
                      ("policies/catalogs/products.tsv", EmbeddedDefaults.productsCatalog)])
    func embeddedCopyMatchesTheFile(path: String, embedded: String) throws {
        let file = try String(contentsOfFile: CLI.repoRoot + "/" + path, encoding: .utf8)
        #expect(embedded + "\n" == file, "\(path) changed: run scripts/embed-defaults.sh")
    }

    @Test func exampleKeyringSaysItIsAnExample() {
        #expect(EmbeddedDefaults.keyringJSON.contains("EXAMPLE ONLY"))
    }
}
