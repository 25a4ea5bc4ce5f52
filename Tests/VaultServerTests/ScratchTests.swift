import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultServer
#if canImport(Glibc)
import Glibc
#endif

/// No plaintext PII in scratch files (issue 17.2): ingest bodies are ingested from memory,
/// never staged in a file; the scratch directories other routes still use are private and
/// removed; and those a dead process left behind are swept when the service starts.
@Suite struct ScratchTests {
    /// Profiles `ids` whose e-mail, name and customer ID all carry `tag`; record `badAt` (from 1)
    /// has an age out of bounds.
    static func profiles(_ tag: String, _ ids: Range<Int>, badAt: Int? = nil) -> String {
        "[" + ids.enumerated().map { n, i in
            #"{"customer_id":"SCR-\#(tag)-\#(i)","email":"scratch.\#(tag).\#(i)@example.com","full_name":"Scratchy \#(tag) \#(i)","phone":"+49 30 \#(1000 + i)","birth_date":"1980-01-02","age":\#(n + 1 == badAt ? 150 : 36),"gender":"female","country":"DE","annual_income":1}"#
        }.joined(separator: ",") + "]"
    }

    /// Regular files under `root` (links not followed) modified at or after `since` (nil: any
    /// time), of at most 64 MiB, whose bytes hold any of `needles`.
    static func filesHolding(_ needles: [String], under root: String, modifiedSince since: Date?) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root) else { return [] }
        let patterns = needles.map { Data($0.utf8) }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            let path = (root as NSString).appendingPathComponent(relative)
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= 64 << 20 else { continue }
            if let since, Double(st.st_mtim.tv_sec) + 1 < since.timeIntervalSince1970 { continue }
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            if patterns.contains(where: { data.range(of: $0) != nil }) { found.append(path) }
        }
        return found
    }

    /// After HTTP ingest of profiles and events (a good body, a failing body, a body over the
    /// limit, a body that is no JSON), no file under `/dev/shm`, the temporary directory or the
    /// store's directory holds any of the bodies' e-mails, names or customer IDs in plaintext,
    /// and no scratch directory is left.
    @Test func httpIngestLeavesNoPlaintextFileAnywhere() async throws {
        let started = Date()
        let tag = String(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16)).lowercased()
        var o = ServiceOptions()
        o.maxIngestBodyBytes = 64 << 10
        let f = try ServiceFixture(options: o)
        try await f.test { c in
            let good = try await c.call(.post, "/v1/profiles", as: "operator", body: Self.profiles(tag, 0..<20))
            #expect(good.status == .ok, "\(good.text)")
            #expect(good.json?["inserted"]?.intValue == 20)

            let bad = try await c.call(.post, "/v1/profiles", as: "operator", body: Self.profiles(tag, 100..<120, badAt: 7))
            #expect(bad.status == .badRequest)
            #expect(bad.error?.hasPrefix("record 7: field age: ") == true, "\(bad.text)")

            let over = Self.profiles(tag, 200..<800)
            #expect(over.utf8.count > 64 << 10)
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: over).status == .contentTooLarge)

            let broken = String(Self.profiles(tag, 300..<310).dropLast())
            #expect(try await c.call(.post, "/v1/profiles", as: "operator", body: broken).status == .badRequest)

            let events = "[" + (0..<5).map { i in
                #"{"customer_id":"SCR-\#(tag)-\#(i)","kind":"purchase","item":"SKU-1","value":2.5,"time":"2026-10-01T12:00:00Z"}"#
            }.joined(separator: ",") + "]"
            let e = try await c.call(.post, "/v1/events", as: "operator", body: events)
            #expect(e.status == .ok, "\(e.text)")
            let unknown = #"[{"customer_id":"SCR-\#(tag)-404","kind":"purchase","item":"SKU-1","value":2.5,"time":"2026-10-01T12:00:00Z"}]"#
            let u = try await c.call(.post, "/v1/events", as: "operator", body: unknown)
            #expect(u.status == .badRequest)
            #expect(u.error?.hasPrefix("record 1: field customer_id: ") == true, "\(u.text)")
        }
        let needles = ["scratch.\(tag)", "Scratchy \(tag)", "SCR-\(tag)"]
        for (root, since) in [("/dev/shm", Optional(started)), (NSTemporaryDirectory(), Optional(started)), (f.dir, nil)] {
            let leaks = Self.filesHolding(needles, under: root, modifiedSince: since)
            #expect(leaks.isEmpty, "plaintext PII in \(leaks)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: f.dir).filter { $0.hasPrefix("profilevault-") }
        #expect(left.isEmpty, "scratch left: \(left)")
    }

    /// No route touches the scratch directory: with one that cannot be created, profiles and
    /// events are still ingested, a bad body still names its record and field, and the audit
    /// export answers (before, bodies and exports were staged there and the request failed
    /// with 500).
    @Test func ingestOverHTTPNeedsNoScratchFile() async throws {
        let file = NSTemporaryDirectory() + "pv-not-a-directory-" + UUID().uuidString
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        var o = ServiceOptions()
        o.scratchDirectory = file + "/scratch"
        let f = try ServiceFixture(options: o)
        try await f.test { c in
            let r = try await c.call(.post, "/v1/profiles", as: "operator", body: ServiceFixture.profiles)
            #expect(r.status == .ok, "\(r.text)")
            #expect(r.json?["inserted"]?.intValue == 3)
            let ev = #"[{"customer_id":"C1","kind":"purchase","item":"SKU-1","value":12.5,"time":"2026-10-01T12:00:00Z"}]"#
            let e = try await c.call(.post, "/v1/events", as: "operator", body: ev)
            #expect(e.status == .ok, "\(e.text)")
            #expect(e.json?["inserted"]?.intValue == 1)
            let bad = #"[{"customer_id":"C9","age":36},{"customer_id":"C10","email":"ten@example.com","full_name":"Ten","phone":"+49 30 10","birth_date":"1980-01-02","age":150,"gender":"female","country":"DE","annual_income":1}]"#
            let b = try await c.call(.post, "/v1/profiles", as: "operator", body: bad)
            #expect(b.status == .badRequest)
            #expect(b.error?.hasPrefix("record 1: field ") == true, "\(b.text)")
            // Nor do the audit export and a training job: they too run in memory.
            #expect(try await c.call(.get, "/v1/audit", as: "auditor").status == .ok)
        }
        #expect(!FileManager.default.fileExists(atPath: file + "/scratch"))
    }

    /// A dead process's scratch directory is swept when the service starts; a live process's,
    /// another user's, a link, a file and anything not of the product's naming are left alone.
    @Test func staleScratchDirectoriesAreSweptWhenTheServiceStarts() async throws {
        let f = try ServiceFixture()
        let root = f.dir
        let fm = FileManager.default
        func makeDir(_ name: String, holding text: String = "{\"email\":\"stale@example.com\"}\n") throws -> String {
            let d = root + "/" + name
            try fm.createDirectory(atPath: d, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            try Data(text.utf8).write(to: URL(fileURLWithPath: d + "/profiles.jsonl"))
            return d
        }
        // No process can have this id: Linux pids stop at 2^22 (PID_MAX_LIMIT).
        let deadPID = 1 << 30
        let stale = try makeDir("\(ScratchSpace.prefix)\(deadPID).a1B2c3")
        let own = try makeDir("\(ScratchSpace.prefix)\(getpid()).d4E5f6")      // this process: alive
        let initPID = try makeDir("\(ScratchSpace.prefix)1.g7H8i9")             // pid 1 is always alive
        let legacyOld = try makeDir("profilevault-http.OLDold")
        let legacyNew = try makeDir("profilevault-http.NEWnew")
        let unrelated = try makeDir("profilevault-scratchpad")
        var hour = [timeval(tv_sec: time(nil) - 3600, tv_usec: 0), timeval(tv_sec: time(nil) - 3600, tv_usec: 0)]
        #expect(utimes(legacyOld, &hour) == 0)
        // A link of the product's naming to a directory elsewhere: neither it nor its target goes.
        let target = try makeDir("link-target")
        let link = root + "/\(ScratchSpace.prefix)\(deadPID).linkzz"
        try fm.createSymbolicLink(atPath: link, withDestinationPath: target)
        let plainFile = root + "/\(ScratchSpace.prefix)\(deadPID).filezz"
        try Data("x".utf8).write(to: URL(fileURLWithPath: plainFile))
        var othersDir: String?
        if geteuid() == 0 {
            let d = try makeDir("\(ScratchSpace.prefix)\(deadPID).others")
            #expect(chown(d, 65534, 65534) == 0)
            othersDir = d
        }

        _ = f.app   // starts the service: builds its router

        #expect(!fm.fileExists(atPath: stale), "a dead process's scratch directory was kept")
        #expect(!fm.fileExists(atPath: legacyOld), "an hour-old directory of the earlier naming was kept")
        for kept in [own, initPID, legacyNew, unrelated, target, target + "/profiles.jsonl", plainFile] {
            #expect(fm.fileExists(atPath: kept), "\(kept) was removed")
        }
        var st = stat()
        #expect(lstat(link, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "the link was removed")
        if let othersDir { #expect(fm.fileExists(atPath: othersDir), "another user's directory was removed") }
    }

    /// The audit export and jobs run in memory: the service's directory gains no file, a bad
    /// job body is refused naming `request body` (no line number: the body is one JSON line),
    /// and the refusal is audited like a bad job file.
    @Test func jobsAndAuditExportsWriteNoFile() async throws {
        let f = try ServiceFixture()
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: f.dir))
        try await f.test { c in
            try await c.seed()
            let bad = try await c.call(.post, "/v1/jobs", as: "trainer", body: #"{"name":"x","kind":"no-such-kind"}"#)
            #expect(bad.status == .badRequest, "\(bad.text)")
            #expect(bad.error?.hasPrefix("request body: ") == true, "\(bad.text)")
            let a = try await c.call(.get, "/v1/audit?flat=true", as: "auditor")
            #expect(a.status == .ok)
            let train = a.text.split(separator: "\n").filter { $0.contains(#""api.operation":"train""#) }
            #expect(train.count == 1 && train[0].contains(#""status":"error""#), "\(train)")
        }
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: f.dir))
        // Only the store's own files may appear (its -wal and -shm).
        #expect(after.subtracting(before).allSatisfy { $0.contains(".sqlite") }, "new files: \(after.subtracting(before))")
    }
}
