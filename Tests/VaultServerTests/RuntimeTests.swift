import Foundation
import Logging
import ProfileVault
import Testing
@testable import VaultServer
import VaultValues

/// Running the service (issue 20 part 2): the config file, the listen address, JSON log lines,
/// the store and process figures of /metrics. The end-to-end checks against the built binary
/// (TLS with a client that checks the certificate, HTTP/2, the busy port, the logs of real
/// requests) are in scripts/serve-runtime-test.py, which .ci/run runs.
@Suite struct RuntimeTests {
    func parse(_ text: String, directory: String = "/etc/pv") throws -> ServeConfigFile {
        try ServeConfigFile.parse(Array(text.utf8), file: "/etc/pv/serve.yaml", directory: directory)
    }

    func refusal(_ text: String) -> VaultError? {
        do { _ = try parse(text); return nil } catch let e as VaultError { return e } catch { return nil }
    }

    @Test func configFileTakesTheFlagsKeys() throws {
        let c = try parse("""
            # every key
            listen: "0.0.0.0:8443"
            tokens: tokens.json
            tls-cert: /etc/tls/cert.pem
            tls-key: tls/key.pem
            insecure-http: false
            log-format: json
            log-level: notice
            publish-heads: /srv/heads.jsonl
            audit-stream: audit.jsonl
            retention-every: 24h
            max-body-bytes: 1048576
            request-timeout: 12.5
            store: postgres://pv@db:5432/profiles?sslmode=verify-full
            keys: /etc/pv/keys/keyring.json
            policy: policies
            allow-example-keys: false
            """)
        #expect(c.listen == "0.0.0.0:8443")
        // Relative paths are the config file's directory's; absolute ones and URLs as written.
        #expect(c.tokens == "/etc/pv/tokens.json")
        #expect(c.tlsCert == "/etc/tls/cert.pem")
        #expect(c.tlsKey == "/etc/pv/tls/key.pem")
        #expect(c.insecureHTTP == false)
        #expect(c.logFormat == "json" && c.logLevel == "notice")
        #expect(c.publishHeads == "/srv/heads.jsonl" && c.auditStream == "/etc/pv/audit.jsonl")
        #expect(c.retentionEvery == "24h" && c.maxBodyBytes == 1_048_576 && c.requestTimeout == 12.5)
        #expect(c.store == "postgres://pv@db:5432/profiles?sslmode=verify-full")
        #expect(c.keys == "/etc/pv/keys/keyring.json" && c.policy == "/etc/pv/policies")
        #expect(c.allowExampleKeys == false)
        #expect(c.lines["listen"] == 2 && c.lines["allow-example-keys"] == 17)
        // A SQLite store path is a path.
        #expect(try parse("store: data/store.sqlite\n").store == "/etc/pv/data/store.sqlite")
        // An integer is a number of seconds too.
        #expect(try parse("request-timeout: 30\n").requestTimeout == 30)
    }

    @Test func configFileRefusalsNameFileLineAndKeyButNoValue() throws {
        let cases: [(text: String, words: String)] = [
            ("listen: \"127.0.0.1:1\"\nlistne: \"x\"\n", "/etc/pv/serve.yaml:2: unknown key 'listne' (keys: listen, tokens,"),
            ("tokens: a\ninsecure-http: SECRET-VALUE-1\n", "/etc/pv/serve.yaml:2: key insecure-http: expected true or false"),
            ("max-body-bytes: SECRET-VALUE-2\n", "/etc/pv/serve.yaml:1: key max-body-bytes: expected a whole number"),
            ("max-body-bytes: 1.5\n", "/etc/pv/serve.yaml:1: key max-body-bytes: expected a whole number"),
            ("max-body-bytes: 99999999999999999999999\n", "/etc/pv/serve.yaml:1: key max-body-bytes: expected a whole number"),
            ("request-timeout: .nan\n", "/etc/pv/serve.yaml:1: key request-timeout: expected a number"),
            ("request-timeout: SECRET-VALUE-3\n", "/etc/pv/serve.yaml:1: key request-timeout: expected a number"),
            ("tokens: 12345\n", "/etc/pv/serve.yaml:1: key tokens: expected a string"),
            ("tokens: [SECRET-VALUE-4]\n", "/etc/pv/serve.yaml:1: key tokens: expected a string"),
            ("tokens:\n", "/etc/pv/serve.yaml:1: key tokens: expected a string"),
            ("tokens: \"\"\n", "/etc/pv/serve.yaml:1: key tokens: expected a non-empty string"),
            ("tokens: a\ntokens: b\n", "/etc/pv/serve.yaml:2: key tokens is given twice"),
            ("- listen\n", "/etc/pv/serve.yaml:1: expected a mapping"),
            ("", "/etc/pv/serve.yaml:1: the file is empty"),
            ("listen: [SECRET-VALUE-5\n", "/etc/pv/serve.yaml:2: not valid YAML"),
            ("? [a, b]\n: SECRET-VALUE-6\n", "/etc/pv/serve.yaml:1: a key that is not a name"),
            ("\u{1}\u{2}SECRET-VALUE-7: x\n", "not valid YAML"),
        ]
        for (text, words) in cases {
            let e = refusal(text)
            #expect(e?.kind == .configuration, "\(text): \(String(describing: e))")
            #expect(e?.message.contains(words) == true, "\(text): \(e?.message ?? "accepted")")
            #expect(e?.message.contains("SECRET-VALUE") == false, "\(text): the value is echoed: \(e?.message ?? "")")
        }
        // An unknown key that is not a short printable name is not shown either.
        let long = refusal(String(repeating: "k", count: 200) + ": 1\n")
        #expect(long?.message.contains("(not shown") == true && long?.message.contains("kkkk") == false)
        // Not UTF-8.
        do {
            _ = try ServeConfigFile.parse([0x6C, 0xFF, 0x3A, 0x20, 0x31], file: "f.yaml", directory: ".")
            Issue.record("invalid UTF-8 accepted")
        } catch let e as VaultError {
            #expect(e.message == "--config f.yaml: not valid UTF-8")
        }
        // A missing file: configuration, naming it.
        do {
            _ = try ServeConfigFile.load(path: "/nonexistent/serve.yaml")
            Issue.record("a missing file accepted")
        } catch let e as VaultError {
            #expect(e.kind == .configuration && e.message == "--config /nonexistent/serve.yaml: no such file")
        }
    }

    @Test func listenAddressesAndLoopback() throws {
        #expect(ListenAddress.parse("127.0.0.1:8080") == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(ListenAddress.parse("[::1]:0") == ListenAddress(host: "::1", port: 0))
        for bad in ["", "8080", ":8080", "host:", "host:65536", "host:-1", "host:+80", "host:８０", "host:0x50", "host:123456"] {
            #expect(ListenAddress.parse(bad) == nil, "\(bad)")
        }
        for loop in ["127.0.0.1:1", "127.1.2.3:1", "localhost:1", "LOCALHOST:1", "[::1]:1", "[0:0:0:0:0:0:0:1]:1"] {
            #expect(ListenAddress.parse(loop)?.isLoopback == true, "\(loop)")
        }
        // Wildcards, other addresses and names may be reached from the network.
        for open in ["0.0.0.0:1", "[::]:1", "10.0.0.1:1", "128.0.0.1:1", "[::2]:1", "[::ffff:127.0.0.1]:1", "example.org:1", "localhost.example.org:1"] {
            #expect(ListenAddress.parse(open)?.isLoopback == false, "\(open)")
        }
        #expect(ListenAddress(host: "::1", port: 8443).description == "[::1]:8443")
    }

    @Test func jsonLogLinesAreOneObjectWithNumbers() throws {
        let line = ServiceLog.jsonLine(level: .info, label: "profilevault.http", message: "request",
                                       metadata: ["route": "/v1/subjects/{customer_id}", "status": .stringConvertible(404),
                                                  "duration_ms": .stringConvertible(1.25), "request_id": "r-1", "actor": "alice",
                                                  "msg": "not this one", "odd": .stringConvertible(Double.nan),
                                                  "text": "line\nbreak \"quoted\""],
                                       date: Date(timeIntervalSince1970: 1_765_000_000.5))
        #expect(!line.contains("\n"))
        let v = try JSONValue.parse(line)
        #expect(v["time"] == .string("2025-12-06T05:46:40.500Z"))
        #expect(v["level"] == .string("info") && v["msg"] == .string("request") && v["label"] == .string("profilevault.http"))
        #expect(v["status"] == .int(404) && v["duration_ms"] == .double(1.25))
        #expect(v["route"] == .string("/v1/subjects/{customer_id}") && v["request_id"] == .string("r-1") && v["actor"] == .string("alice"))
        #expect(v["odd"] == .string("nan") && v["text"] == .string("line\nbreak \"quoted\""))
        // The fixed keys come first and are not overwritten by metadata.
        #expect(line.hasPrefix(#"{"time":"#))
        #expect(!line.contains("not this one"))
    }

    @Test func metricsCarryStoreAndProcessFigures() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let m = try await c.call(.get, "/metrics")
            #expect(m.status == .ok)
            #expect(m.text.contains(#"profilevault_store_subjects{engine="sqlite"} 3"#), "\(m.text)")
            #expect(m.text.contains(#"profilevault_build_info{version="\#(ProductVersion.current)"} 1"#))
            for name in ["profilevault_store_size_bytes{engine=\"sqlite\"}", "profilevault_store_audit_entries{engine=\"sqlite\"}",
                         "profilevault_store_events{engine=\"sqlite\"}", "profilevault_store_wal_bytes", "process_resident_memory_bytes",
                         "process_open_fds", "process_max_fds", "process_start_time_seconds", "profilevault_budget_spent_epsilon"] {
                let line = m.text.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
                #expect(line != nil, "\(name) missing")
                if let line, let value = Double(line.split(separator: " ").last ?? "") {
                    #expect(value >= 0 && value.isFinite, "\(line)")
                    if name.hasPrefix("process_resident") || name.hasPrefix("profilevault_store_size") { #expect(value > 0, "\(line)") }
                }
            }
            for pii in ["ada@example.com", "Ada", "C1", "C2", "Lovelace", "+49"] { #expect(!m.text.contains(pii), "metrics contain \(pii)") }
        }
    }

    @Test func storeFiguresComeThroughTheVault() throws {
        let f = try ServiceFixture()
        let figures = try f.vault.storeFigures()
        #expect(figures.engine == "sqlite" && figures.subjects == 0 && figures.pool == nil)
        #expect(figures.storeBytes > 0 && figures.walBytes != nil && figures.auditEntries >= 1)
    }
}

extension RuntimeTests {
    /// The example of docs/deployment.md is a valid config file.
    @Test func shippedConfigExampleParses() throws {
        // Parsed as installed (a private copy: the checkout's mode depends on the umask).
        let bytes = try #require(FileManager.default.contents(atPath: ServiceFixture.repoRoot + "/deploy/profilevault.yaml"))
        let c = try ServeConfigFile.parse(Array(bytes), file: "/etc/profilevault/profilevault.yaml", directory: "/etc/profilevault")
        #expect(c.listen == "0.0.0.0:8443" && c.tlsCert != nil && c.tlsKey != nil && c.logFormat == "json")
        #expect(c.tokens == "/etc/profilevault/tokens.json" && c.retentionEvery == "24h" && c.insecureHTTP == nil)
    }

    /// The review's writable config: a config file others may write (or another user owns)
    /// could turn TLS off or point the service elsewhere; refused before it is read.
    @Test func aConfigFileOthersMayWriteIsRefused() throws {
        let dir = NSTemporaryDirectory() + "pv-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/serve.yaml"
        try "listen: \"0.0.0.0:18778\"\ninsecure-http: true\n".write(toFile: path, atomically: true, encoding: .utf8)
        for mode: mode_t in [0o666, 0o664, 0o646, 0o620] {
            chmod(path, mode)
            do {
                _ = try ServeConfigFile.load(path: path)
                Issue.record("a config file of mode \(String(mode, radix: 8)) was read")
            } catch let e as VaultError {
                #expect(e.kind == .configuration && e.message.contains("written by group or others") && !e.message.contains("18778"))
            }
        }
        for mode: mode_t in [0o600, 0o644, 0o640] {
            chmod(path, mode)
            #expect(try ServeConfigFile.load(path: path).insecureHTTP == true)
        }
    }
}
