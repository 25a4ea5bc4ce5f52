import Foundation
import Testing
@testable import VaultPostgres

/// `--store postgres://...` (issue 18 §2): what is accepted, and the attacks on it.
@Suite struct PostgresLocationTests {
    func parse(_ s: String) throws -> PostgresLocation { try PostgresLocation(parsing: s) }

    func refusal(_ s: String) -> String? {
        do { _ = try PostgresLocation(parsing: s); return nil } catch { return error.description }
    }

    @Test func parsesWhatLibpqParses() throws {
        let l = try parse("postgres://app@db.internal:6432/profiles?sslmode=verify-full")
        #expect(l.user == "app" && l.database == "profiles" && l.sslMode == .verifyFull)
        #expect(l.endpoint == .tcp(host: "db.internal", port: 6432))
        let q = try parse("postgresql://app@127.0.0.1/pv")
        #expect(q.endpoint == .tcp(host: "127.0.0.1", port: 5432) && q.sslMode == .prefer)
        let v6 = try parse("postgres://app@[::1]:5433/pv?sslmode=require")
        #expect(v6.endpoint == .tcp(host: "::1", port: 5433) && v6.sslMode == .require)
        // A unix-socket directory, as libpq takes it: ?host=/path.
        let sock = try parse("postgres://app@/pv?host=/tmp/pg%20dir&port=5999&sslmode=disable")
        #expect(sock.endpoint == .unixSocket(directory: "/tmp/pg dir", port: 5999))
        #expect(sock.socketPath == "/tmp/pg dir/.s.PGSQL.5999")
        let dflt = try parse("postgres://app@/pv")
        #expect(dflt.endpoint == .unixSocket(directory: "/var/run/postgresql", port: 5432))
        // Percent-escapes in user and database names.
        let esc = try parse("postgres://app%2Bnode1@h/my%2Ddb")
        #expect(esc.user == "app+node1" && esc.database == "my-db")
        // The description is the URL again (there is no password to hide), and parses back.
        for l in [l, q, v6, sock, dflt, esc] {
            #expect(try parse(l.description) == l)
        }
    }

    @Test func aPasswordInTheURLIsRefusedWithoutRepeatingIt() throws {
        for url in ["postgres://app:s3cr3t-pw@h/db", "postgres://app:@h/db", "postgresql://app:s3cr3t-pw@h:5432/db?sslmode=disable",
                    "postgres://app:p%40ss@h/db", "postgres://app@h/db?password=s3cr3t-pw"] {
            let e = try #require(refusal(url), "\(url) was accepted")
            #expect(e.contains("PGPASSWORD") && e.contains("passfile"))
            #expect(!e.contains("s3cr3t") && !e.contains("p%40ss") && !e.contains("p@ss"))
        }
    }

    @Test func badPortsDatabasesUsersAndModesAreRefused() {
        for port in ["0", "65536", "-1", "abc", "99999999999999999999999", "", "5432x", "+80"] {
            #expect(refusal("postgres://app@h:\(port)/db")?.contains("port") == true, "port \(port)")
        }
        #expect(refusal("postgres://app@h/db?port=70000")?.contains("port") == true)
        #expect(refusal("postgres://app@h")?.contains("no database") == true)
        #expect(refusal("postgres://app@h/")?.contains("no database") == true)
        #expect(refusal("postgres://app@h/a/b") != nil)
        #expect(refusal("postgres://h/db")?.contains("no user") == true)
        #expect(refusal("postgres://@h/db")?.contains("no user") == true)
        for mode in ["allow", "verify_full", "VERIFY-FULL", "", "none"] {
            #expect(refusal("postgres://app@h/db?sslmode=\(mode)")?.contains("sslmode") == true, "sslmode \(mode)")
        }
        #expect(refusal("postgres://app@h/db?sslmode=disable&sslmode=require")?.contains("twice") == true)
        #expect(refusal("postgres://app@h/db?sslmdoe=require")?.contains("not supported") == true)
        #expect(refusal("postgres://app@h/db?sslrootcert=relative.pem") != nil)
        #expect(refusal("mysql://app@h/db") != nil)
        #expect(refusal("postgres://app@h/db\u{0}x") != nil)
        #expect(refusal("postgres://app@h/db%00x") != nil)
        #expect(refusal("postgres://app@h;rm -rf/db") != nil)
        #expect(refusal("postgres://app@h/" + String(repeating: "d", count: 5000)) != nil)
    }

    func passfile(_ text: String, mode: mode_t) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-\(UUID().uuidString)").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    @Test func thePasswordComesFromPGPASSWORDOrAPrivatePassfile() throws {
        let l = try parse("postgres://app@db.internal:6432/profiles")
        // PGPASSWORD first, as libpq.
        #expect(try l.password(environment: ["PGPASSWORD": "from-env", "PGPASSFILE": "/nonexistent"]) == "from-env")
        // No password anywhere: nil (trust or peer authentication).
        #expect(try l.password(environment: ["PGPASSFILE": "/nonexistent/pgpass"]) == nil)
        #expect(try l.password(environment: [:]) == nil)
        // The first matching line wins; * matches anything; \: and \\ are escapes.
        let f = try passfile("""
            # comment
            other.host:6432:profiles:app:wrong
            db.internal:5432:profiles:app:wrong-port
            db.internal:*:profiles:app:pa\\:ss\\\\word:with:colons
            *:*:*:*:fallback
            """, mode: 0o600)
        defer { unlink(f) }
        #expect(try l.password(environment: ["PGPASSFILE": f]) == "pa:ss\\word:with:colons")
        let other = try parse("postgres://someone@elsewhere/x")
        #expect(try other.password(environment: ["PGPASSFILE": f]) == "fallback")
        // An empty PGPASSWORD falls through to the passfile.
        #expect(try l.password(environment: ["PGPASSWORD": "", "PGPASSFILE": f]) == "pa:ss\\word:with:colons")
        // ~/.pgpass when PGPASSFILE is not set.
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("home-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        try Data("db.internal:6432:profiles:app:home-pw\n".utf8).write(to: URL(fileURLWithPath: home + "/.pgpass"))
        chmod(home + "/.pgpass", 0o600)
        #expect(try l.password(environment: ["HOME": home]) == "home-pw")
    }

    @Test func aPassfileOthersCanReadIsRefusedWithoutShowingItsContent() throws {
        let l = try parse("postgres://app@db.internal:6432/profiles")
        for mode: mode_t in [0o644, 0o640, 0o604, 0o660, 0o606] {
            let f = try passfile("*:*:*:*:top-secret-pw\n", mode: mode)
            defer { unlink(f) }
            do {
                _ = try l.password(environment: ["PGPASSFILE": f])
                Issue.record("a passfile of mode \(String(mode, radix: 8)) was read")
            } catch {
                #expect(error.description.contains("chmod 0600"))
                #expect(!error.description.contains("top-secret"))
            }
        }
        // A directory in its place is refused too.
        #expect(throws: PostgresLocation.Invalid.self) { try l.password(environment: ["PGPASSFILE": "/tmp"]) }
        // A FIFO (nobody writing) is refused at once: the file is opened without blocking and
        // checked through its descriptor before anything is read.
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-fifo-\(UUID().uuidString)").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(throws: PostgresLocation.Invalid.self) { try l.password(environment: ["PGPASSFILE": fifo]) }
        // A private symbolic link to a private passfile is followed, as libpq does; the mode
        // checked is the file's own.
        let target = try passfile("*:*:*:*:linked-pw\n", mode: 0o600)
        defer { unlink(target) }
        let link = target + ".link"
        #expect(symlink(target, link) == 0)
        defer { unlink(link) }
        #expect(try l.password(environment: ["PGPASSFILE": link]) == "linked-pw")
        chmod(target, 0o644)
        #expect(throws: PostgresLocation.Invalid.self) { try l.password(environment: ["PGPASSFILE": link]) }
    }
}
