import Foundation
import VaultCrypto

/// SoftHSM2 for the key-custody tests: one token directory per test process (a temp dir with
/// its own `softhsm2.conf`, named by `SOFTHSM2_CONF` for this process), one token per test
/// (`softhsm2-util --init-token --free`), a PIN file (0600) per token.
///
/// When SoftHSM2 is not installed the tests that need it return at once, unless
/// `PROFILEVAULT_REQUIRE_SOFTHSM=1` (set by .ci/run): then ``token(_:)`` throws and the test
/// FAILS, so CI cannot pass without running them.
public enum SoftHSM {
    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }

    public static let moduleCandidates = [
        "/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so",
    ]

    /// The module, when installed.
    public static let modulePath: String? = moduleCandidates.first { FileManager.default.fileExists(atPath: $0) }

    /// `softhsm2-util`, when installed.
    public static let utility: String? = ["/usr/bin/softhsm2-util", "/usr/local/bin/softhsm2-util"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Whether the tests must run (CI): SoftHSM missing is then a failure, not a skip.
    public static var required: Bool { ProcessInfo.processInfo.environment["PROFILEVAULT_REQUIRE_SOFTHSM"] == "1" }

    /// Whether a SoftHSM test should run its body (installed, or required: then it fails).
    public static var shouldRun: Bool { (modulePath != nil && utility != nil) || required }

    /// The process's token directory and configuration (created once; SOFTHSM2_CONF set).
    static let home: Result<String, Missing> = {
        guard modulePath != nil, utility != nil else {
            return .failure(Missing(description: "SoftHSM2 is not installed (apt-get install softhsm2) and PROFILEVAULT_REQUIRE_SOFTHSM=1 requires it"))
        }
        let dir = NSTemporaryDirectory() + "pv-softhsm-" + UUID().uuidString
        do {
            try FileManager.default.createDirectory(atPath: dir + "/tokens", withIntermediateDirectories: true)
            try "directories.tokendir = \(dir)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
                .write(toFile: dir + "/softhsm2.conf", atomically: true, encoding: .utf8)
        } catch {
            return .failure(Missing(description: "cannot create the SoftHSM2 directory: \(error)"))
        }
        setenv("SOFTHSM2_CONF", dir + "/softhsm2.conf", 1)
        return .success(dir)
    }()

    /// One initialised token.
    public final class Token: @unchecked Sendable {
        public let label: String
        public let pin: String
        public let pinFile: String
        public let module: String
        /// The token's own directory under the token directory.
        public let directory: String
        let home: String

        init(label: String, pin: String, pinFile: String, module: String, directory: String, home: String) {
            self.label = label
            self.pin = pin
            self.pinFile = pinFile
            self.module = module
            self.directory = directory
            self.home = home
        }

        /// `pkcs11:token=...;object=...?module-path=...&pin-source=file:...`.
        public func uri(object: String = "pv-seal", pinFile: String? = nil, token: String? = nil) -> String {
            "pkcs11:token=\(token ?? label);object=\(object)?module-path=\(module)&pin-source=file:\(pinFile ?? self.pinFile)"
        }

        /// A PIN file holding `pin` (0600), for the wrong-PIN tests.
        public func pinFile(holding pin: String) throws -> String {
            let path = home + "/pin-" + UUID().uuidString
            FileManager.default.createFile(atPath: path, contents: Data((pin + "\n").utf8), attributes: [.posixPermissions: 0o600])
            return path
        }

        /// Where ``remove()`` puts the token: outside the token directory (SoftHSM2 reads every
        /// directory inside it).
        var away: String { home + "/away-" + URL(fileURLWithPath: directory).lastPathComponent }

        /// Moves the token's directory out of the token directory: the token is gone.
        public func remove() throws {
            try withPKCS11Lock { try FileManager.default.moveItem(atPath: directory, toPath: away) }
        }

        /// Puts it back.
        public func restore() throws {
            try withPKCS11Lock { try FileManager.default.moveItem(atPath: away, toPath: directory) }
        }
    }

    /// A fresh token for one test (a unique label, user PIN random). Throws when SoftHSM is
    /// missing (the caller checked ``shouldRun``: missing and required is a failure).
    public static func token() throws -> Token {
        let home = try home.get()
        guard let module = modulePath, let utility else { throw Missing(description: "SoftHSM2 is not installed") }
        let label = "pv-" + String(UUID().uuidString.prefix(8)).lowercased()
        let pin = String(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12))
        // Under the PKCS#11 lock: no conversation of this process scans the token directory
        // while softhsm2-util adds a token to it.
        return try withPKCS11Lock { () throws -> Token in
        let before = Set((try? FileManager.default.contentsOfDirectory(atPath: home + "/tokens")) ?? [])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: utility)
        p.arguments = ["--init-token", "--free", "--label", label, "--so-pin", "so-" + pin, "--pin", pin]
        var env = ProcessInfo.processInfo.environment
        env["SOFTHSM2_CONF"] = home + "/softhsm2.conf"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Missing(description: "softhsm2-util --init-token failed: \(String(decoding: e, as: UTF8.self))")
        }
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: home + "/tokens"))
        guard let dir = after.subtracting(before).first else { throw Missing(description: "softhsm2-util created no token directory") }
        let pinFile = home + "/pin-" + label
        FileManager.default.createFile(atPath: pinFile, contents: Data((pin + "\n").utf8), attributes: [.posixPermissions: 0o600])
        return Token(label: label, pin: pin, pinFile: pinFile, module: module, directory: home + "/tokens/" + dir, home: home)
        }
    }
}
