import Foundation
import ProfileVault
import Testing
import VaultCrypto
import VaultStore

/// A model artifact's MAC binds it to the store that trained it, not only to the keyring: two
/// stores with the same keyring (the public example keyring, say) do not accept each other's
/// models.
@Suite struct ArtifactBindingTests {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    @Test func anArtifactFromAnotherStoreWithTheSameKeyringIsRefused() throws {
        let dir = NSTemporaryDirectory() + "pv-bind-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = dir + "/keyring.json"
        _ = try Keyring.generate(note: "test").write(to: keys)
        func store(_ name: String) throws -> Vault {
            try Vault.initialize(VaultConfiguration(storePath: dir + "/\(name).sqlite", keysPath: keys, policyDirectory: Self.repoRoot + "/policies",
                                                    actor: Actor(name: "t", role: "trainer")))
        }
        let a = try store("a"), b = try store("b")
        let job = dir + "/km.yaml"
        try "job: km\npurpose: model_training\nmodel: kmeans\nfeatures: [age, annual_income]\nparams: { k: 2 }\nepsilon: 1\n"
            .write(toFile: job, atomically: true, encoding: .utf8)
        let trained = try a.train(jobFile: job)
        let path = dir + "/km.json"
        try trained.json.write(to: URL(fileURLWithPath: path))
        _ = try a.loadArtifact(.file(path))   // its own store accepts it
        do {
            _ = try b.loadArtifact(.file(path))
            Issue.record("another store with the same keyring accepted the artifact")
        } catch let e as VaultError {
            #expect(e.kind == .integrity, "\(e)")
        }
    }
}

/// Names in a job (job, purpose, model, events, target, features, params.by) are plain: a value
/// pasted in their place is refused without being repeated, so it reaches neither the CLI line,
/// the HTTP answer nor the audit entry (an adversarial review of issue 17).
@Suite struct JobNameLeakTests {
    @Test func aValuePastedAsANameIsRefusedUnrepeated() throws {
        let secret = "alice@example.com +1 555 123 4567"
        for (key, doc) in [("features[0]", "job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [\"\(secret)\"]\nepsilon: 1\n"),
                           ("model", "job: j\npurpose: model_training\nmodel: \"\(secret)\"\nepsilon: 1\n"),
                           ("job", "job: \"\(secret)\"\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nepsilon: 1\n"),
                           ("target", "job: j\npurpose: model_training\nmodel: linear_regression\nfeatures: [age]\ntarget: \"\(secret)\"\nepsilon: 1\n"),
                           ("params.by", "job: j\npurpose: model_training\nmodel: segments\nfeatures: [age]\nparams: { by: \"\(secret)\" }\nepsilon: 1\n")] {
            do {
                _ = try Vault.parseJobs(text: doc, path: "job.yaml")
                Issue.record("\(key): accepted")
            } catch let e as VaultError {
                #expect(e.kind == .invalidInput && e.message.contains(key), "\(key): \(e.message)")
                #expect(!e.message.contains("alice") && !e.detail.contains("alice") && !e.message.contains("555"), "\(key): \(e.message)")
            }
        }
    }
}
