import Foundation
import Synchronization
@testable import ProfileVault
import Testing

/// `tokens add --expires`, `tokens list` and `tokens revoke` (SPEC §12), as scripts run them.
@Suite struct TokensCLITests {
    /// The review's race: `tokens add` and `tokens revoke` at once each read the file, change
    /// it and rename their copy over it; without a lock the last one wins, and a revoked token
    /// came back (3 runs in 6) or an added one was lost. Under the file's lock every change
    /// lands, whatever the interleaving.
    @Test func concurrentAddsAndARevokeAllLand() throws {
        let s = try CLIStore()
        let path = s.dir + "/tokens.json"
        let victim = try s.run(["tokens", "add", "--tokens", path, "--actor", "victim", "--role", "auditor", "--json"])
        let id = try #require(victim.json?["id"] as? String)
        let statuses = Mutex<[Int32]>([])
        DispatchQueue.concurrentPerform(iterations: 9) { i in
            let args = i == 4 ? ["tokens", "revoke", "--tokens", path, id]
                              : ["tokens", "add", "--tokens", path, "--actor", "a\(i)", "--role", "auditor"]
            let status = (try? s.run(args).status) ?? -1
            statuses.withLock { $0.append(status) }
        }
        #expect(statuses.withLock { $0 } == [Int32](repeating: 0, count: 9))
        let rows = try #require(try s.run(["tokens", "list", "--tokens", path, "--json"]).json?["tokens"] as? [[String: Any]])
        #expect(rows.count == 9)
        #expect(!((rows.first { $0["id"] as? String == id }?["revoked"]) is NSNull))
    }

    @Test func addWithExpiryListAndRevokeShowEverythingButTheSecret() throws {
        let s = try CLIStore()
        let path = s.dir + "/tokens.json"
        let before = TokenFile.nowMillis
        let a = try s.run(["tokens", "add", "--tokens", path, "--actor", "alice", "--role", "trainer", "--expires", "90d", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        let token = try #require(a.json?["token"] as? String)
        let id = try #require(a.json?["id"] as? String)
        let b = try s.run(["tokens", "add", "--tokens", path, "--actor", "bob", "--role", "auditor", "--json"])
        let other = try #require(b.json?["id"] as? String)
        #expect(b.json?["expires"] is NSNull)

        let list = try s.run(["tokens", "list", "--tokens", path, "--json"])
        #expect(list.status == 0, "\(list.stderr)")
        let rows = try #require(list.json?["tokens"] as? [[String: Any]])
        #expect(rows.count == 2)
        let alice = try #require(rows.first { $0["id"] as? String == id })
        #expect(alice["actor"] as? String == "alice" && alice["role"] as? String == "trainer")
        #expect(alice["revoked"] is NSNull && (alice["created"] as? String)?.hasSuffix("Z") == true)
        // 90 days from the moment of `add`, give or take the run time of the command.
        let expires = try #require(alice["expires"] as? String)
        let ninety: Int64 = 90 * 86_400_000
        let ms = try #require(Self.millis(expires))
        #expect(ms >= before + ninety && ms <= TokenFile.nowMillis + ninety, "\(expires)")
        #expect((rows.first { $0["id"] as? String == other }?["expires"]) is NSNull)
        // Neither the token nor its hash appears in a listing.
        let hash = try String(contentsOfFile: path, encoding: .utf8).components(separatedBy: "\"sha256\": \"").dropFirst().map { String($0.prefix(64)) }
        #expect(hash.count == 2)
        for text in [list.stdout, try s.run(["tokens", "list", "--tokens", path]).stdout] {
            #expect(!text.contains(token) && !hash.contains { text.contains($0) })
            #expect(text.contains(id))
        }

        let r = try s.run(["tokens", "revoke", "--tokens", path, id, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.json?["revoked"] as? String == id)
        let after = try #require(try s.run(["tokens", "list", "--tokens", path, "--json"]).json?["tokens"] as? [[String: Any]])
        #expect(after.first { $0["id"] as? String == id }?["revoked"] is String)
        #expect(after.first { $0["id"] as? String == other }?["revoked"] is NSNull)
        // The file keeps its mode, and the service would refuse the token.
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let file = try TokenFile.load(path: path)
        #expect(file.check(token: token, nowMillis: TokenFile.nowMillis) == .refused(.revoked(tokenID: id)))
        // Revoking again changes nothing; an unknown id is 66.
        #expect(try s.run(["tokens", "revoke", "--tokens", path, id]).status == 0)
        let unknown = try s.run(["tokens", "revoke", "--tokens", path, "ffffffffffff"])
        #expect(unknown.status == 66 && unknown.stderr.contains("ffffffffffff"), "\(unknown.stderr)")
    }

    @Test func aBadExpiryIsAUsageErrorNamingTheFlagAndWritesNothing() throws {
        let s = try CLIStore()
        let path = s.dir + "/tokens.json"
        for bad in ["0d", "0m", "3651d", "99999999d", "12", "d", "1.5d", "12x", "-1d", "9223372036854775807d", " 1d", "1d "] {
            let r = try s.run(["tokens", "add", "--tokens", path, "--actor", "a", "--role", "trainer", "--expires=\(bad)"])
            #expect(r.status == 64 && r.stderr.contains("--expires"), "\(bad): \(r.status) \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        for good in ["1m", "12h", "3650d"] {
            #expect(try s.run(["tokens", "add", "--tokens", path, "--actor", "a", "--role", "trainer", "--expires", good]).status == 0, "\(good)")
        }
    }

    @Test func aTamperedFieldIsRefusedNamingTheFileAndTheField() throws {
        let s = try CLIStore()
        let path = s.dir + "/tokens.json"
        let id = try #require(try s.run(["tokens", "add", "--tokens", path, "--actor", "a", "--role", "trainer", "--expires", "1d", "--json"]).json?["id"] as? String)
        #expect(try s.run(["tokens", "revoke", "--tokens", path, id]).status == 0)
        let good = try String(contentsOfFile: path, encoding: .utf8)
        func replacing(_ key: String, with value: String) -> String {
            good.replacingOccurrences(of: "\"\(key)\": (\"[^\"]*\"|[0-9]+)", with: "\"\(key)\": \(value)", options: .regularExpression)
        }
        let cases: [(String, String)] = [
            (replacing("expires", with: "\"tomorrow\""), "tokens[0].expires"),
            (replacing("expires", with: "1"), "tokens[0].expires"),
            (replacing("expires", with: "\"2026-13-01T00:00:00.000Z\""), "tokens[0].expires"),
            (replacing("created", with: "\"2026-02-30T00:00:00.000Z\""), "tokens[0].created"),
            (replacing("revoked", with: "\"yes\""), "tokens[0].revoked"),
            (good.replacingOccurrences(of: "\"role\":", with: "\"scope\": \"all\", \"role\":"), "tokens[0].scope: unknown field"),
            (replacing("version", with: "3"), "version"),
            (replacing("sha256", with: "\"abc\""), "tokens[0].sha256"),
        ]
        for (text, field) in cases { #expect(text != good, "\(field): the case changes nothing") }
        for (text, field) in cases {
            try TokenFile.atomicWrite(Array(text.utf8), to: path)
            let r = try s.run(["tokens", "list", "--tokens", path])
            #expect(r.status == 78 && r.stderr.contains(path) && r.stderr.contains(field), "\(field): \(r.status) \(r.stderr)")
            let revoke = try s.run(["tokens", "revoke", "--tokens", path, "abc"])
            #expect(revoke.status == 78, "\(revoke.stderr)")
        }
    }

    static func millis(_ iso: String) -> Int64? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: iso).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }
}
