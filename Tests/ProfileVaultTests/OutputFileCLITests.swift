import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Output paths on the command line (issue 17.1 and 17.4): every file the product writes is
/// new and 0600 unless --force, never the keyring, the store or a policy file, and its CSV is
/// formula-safe. Each test points an output where it must not go.
@Suite struct OutputFileCLITests {
    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }
    static func mode(_ path: String) -> Int {
        var st = stat()
        return lstat(path, &st) == 0 ? Int(st.st_mode & 0o7777) : -1
    }

    @Test func rejectsOntoTheKeyringIsRefusedAndTheKeyringUnchanged() throws {
        let s = try CLIStore()
        let keyring = s.dir + "/keyring.json"
        let before = Self.bytes(keyring)
        let input = try s.write("p.csv", CLIStore.rows(3) + "X9,a@b.c,N,+1 2,2000-02-30,26,female,DE,10\n")
        for extra in [[], ["--force"]] {
            let r = try s.run(["ingest", "profiles", input, "--skip-invalid", "--rejects", keyring] + extra)
            #expect(r.status == 73, "\(r.stderr)")
            #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains(keyring) && r.stderr.contains("keyring"), "\(r.stderr)")
        }
        #expect(Self.bytes(keyring) == before)
        // Nothing was ingested, and the keyring still opens the store.
        let st = try s.run(["status", "--json"])
        #expect(st.status == 0 && st.json?["subjects"] as? Int == 0, "\(st.stdout) \(st.stderr)")
    }

    @Test func auditExportOntoTheStoreIsRefusedEvenWithForce() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        let store = s.dir + "/store.sqlite"
        // A copy of the policies (the same files, so the same policy in force), to attack them too.
        let pol = s.dir + "/pol"
        try FileManager.default.createDirectory(atPath: pol, withIntermediateDirectories: true)
        for f in ["schema.yaml", "policy.yaml"] { try FileManager.default.copyItem(atPath: CLI.repoRoot + "/policies/" + f, toPath: pol + "/" + f) }
        // The policy declares catalogs.products: its file is protected too (an output over it
        // would change the item names the next job publishes).
        try FileManager.default.createDirectory(atPath: pol + "/catalogs", withIntermediateDirectories: true)
        try "SKU-1\nSKU-2\n".write(toFile: pol + "/catalogs/products.tsv", atomically: true, encoding: .utf8)
        let policyBytes = Self.bytes(pol + "/policy.yaml"), catalogBytes = Self.bytes(pol + "/catalogs/products.tsv")
        for target in [store, store + "-wal", s.dir + "/keyring.json", pol + "/policy.yaml", pol + "/schema.yaml", pol + "/catalogs/products.tsv"] {
            let r = try s.run(["audit", "export", "--out", target, "--force", "--role", "auditor", "--policy", pol])
            #expect(r.status == 73 && r.stderr.contains("even with --force"), "\(target): \(r.stderr)")
        }
        #expect(Self.bytes(pol + "/policy.yaml") == policyBytes)
        #expect(Self.bytes(pol + "/catalogs/products.tsv") == catalogBytes)
        let v = try s.run(["audit", "verify", "--role", "auditor", "--json"])
        #expect(v.status == 0 && v.json?["ok"] as? Bool == true, "\(v.stdout) \(v.stderr)")
        let st = try s.run(["status", "--json"])
        #expect(st.json?["subjects"] as? Int == 3)
    }

    @Test func exportIntoAnExisting0666FileNeedsForceAndEndsUp0600() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        let out = try s.write("shared.json", "someone else's file\n")
        chmod(out, 0o666)
        let args = ["export", "--subject", "C1", "--out", out, "--role", "privacy_officer"]
        let refused = try s.run(args)
        #expect(refused.status == 73 && refused.stderr.contains(out) && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "someone else's file\n")
        let forced = try s.run(args + ["--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(Self.mode(out) == 0o600)
        #expect(try String(contentsOfFile: out, encoding: .utf8).contains("user1@example.com"))
    }

    @Test func aLinkToTheKeyringOrTheStoreIsRefused() throws {
        let s = try CLIStore()
        let keyring = s.dir + "/keyring.json", store = s.dir + "/store.sqlite"
        let (keyBytes, storeBytes) = (Self.bytes(keyring), Self.bytes(store))
        let soft = s.dir + "/export.json"
        #expect(symlink(keyring, soft) == 0)
        let r1 = try s.run(["export", "--subject", "C1", "--out", soft, "--force", "--role", "privacy_officer"])
        #expect(r1.status == 73 && r1.stderr.contains("keyring"), "\(r1.stderr)")
        let pem = try s.run(["audit", "public-key", "--out", soft, "--force"])
        #expect(pem.status == 73, "\(pem.stderr)")
        let hard = s.dir + "/audit.csv"
        #expect(link(store, hard) == 0)
        let r2 = try s.run(["audit", "export", "--out", hard, "--format", "csv", "--force", "--role", "auditor"])
        #expect(r2.status == 73 && r2.stderr.contains("device and inode"), "\(r2.stderr)")
        #expect(Self.bytes(keyring) == keyBytes)
        let st = try s.run(["status", "--json"])
        #expect(st.status == 0, "\(st.stderr)")
        _ = storeBytes
    }

    @Test func newOutputsAre0600AndExistingOnesNeedForce() throws {
        let s = try CLIStore()
        let pem = s.dir + "/audit.pem", log = s.dir + "/audit.jsonl"
        #expect(try s.run(["audit", "public-key", "--out", pem]).status == 0)
        #expect(try s.run(["audit", "export", "--out", log, "--role", "auditor"]).status == 0)
        #expect(Self.mode(pem) == 0o600 && Self.mode(log) == 0o600)
        let again = try s.run(["audit", "export", "--out", log, "--role", "auditor"])
        #expect(again.status == 73, "\(again.stderr)")
        #expect(try s.run(["audit", "export", "--out", log, "--role", "auditor", "--force"]).status == 0)
        // The model file is opened before the job runs: a refused path trains nothing.
        let model = try s.write("model.json", "keep\n")
        let train = try s.run(["train", CLI.repoRoot + "/policies/examples/jobs/segment-customers.yaml", "--out", model, "--role", "trainer"])
        #expect(train.status == 73 && train.stderr.contains(model), "\(train.stderr)")
        #expect(try String(contentsOfFile: model, encoding: .utf8) == "keep\n")
        let rejects = try s.write("rejects.csv", "older rejects\n")
        let ingest = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(2)), "--skip-invalid", "--rejects", rejects])
        #expect(ingest.status == 73, "\(ingest.stderr)")
        #expect(try s.run(["ingest", "profiles", s.dir + "/p.csv", "--force"]).status == 64)   // --force needs --rejects
    }

    @Test func theTokensFileIsNeverTheKeyringOrTheStore() throws {
        let s = try CLIStore()
        let keyring = s.dir + "/keyring.json"
        let before = Self.bytes(keyring)
        for target in [keyring, s.dir + "/store.sqlite", s.dir + "/store.sqlite-wal"] {
            let r = try s.run(["tokens", "add", "--tokens", target, "--actor", "a", "--role", "support"])
            #expect(r.status == 73, "\(target): \(r.stderr)")
        }
        #expect(Self.bytes(keyring) == before)
        let tokens = s.dir + "/tokens.json"
        #expect(try s.run(["tokens", "add", "--tokens", tokens, "--actor", "a", "--role", "support"]).status == 0)
        #expect(Self.mode(tokens) == 0o600)
        // And no output of another command may replace the tokens file, named or not.
        let r = try s.run(["audit", "export", "--out", tokens, "--force", "--role", "auditor"])
        #expect(r.status == 73 && r.stderr.contains("tokens"), "\(r.stderr)")
    }

    @Test func aFormulaInADeniedRequestIsNeutralisedInTheCSVExport() throws {
        let s = try CLIStore()
        _ = try s.run(["ingest", "profiles", s.write("p.csv", CLIStore.rows(3))])
        let hostile = "=HYPERLINK(\"http://x\")"
        let denied = try s.run(["get", "--subject", "C1", "--purpose", "customer_support", "--actor", hostile])
        #expect(denied.status == 77)
        let out = s.dir + "/audit.csv"
        let r = try s.run(["audit", "export", "--out", out, "--format", "csv", "--role", "auditor"])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOfFile: out, encoding: .utf8)
        #expect(text.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "\(text)")
        #expect(!text.contains(",\"=HYPERLINK") && !text.contains(",=HYPERLINK"))
        #expect(Self.mode(out) == 0o600)
    }

    @Test func aFormulaInARejectedRecordIsNeutralised() throws {
        let s = try CLIStore()
        let good = #"{"customer_id":"C1","email":"a@b.c","full_name":"N","phone":"+1 2","birth_date":"2000-01-01","age":26,"gender":"female","country":"DE","annual_income":10}"#
        let input = try s.write("p.jsonl", good + "\n" + #"{"customer_id":"C2","=cmd|' /C calc'!A0":1}"# + "\n")
        let rejects = s.dir + "/rejects.csv"
        let r = try s.run(["ingest", "profiles", input, "--skip-invalid", "--rejects", rejects, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOfFile: rejects, encoding: .utf8)
        // The key is not a plain name, so the rejects file does not name it at all (issue 17.5);
        // a cell that did would start with ' (CSVCellTests).
        #expect(text.contains("\n2,") && !text.contains("=cmd"), "\(text)")
        #expect(Self.mode(rejects) == 0o600)
    }
}
