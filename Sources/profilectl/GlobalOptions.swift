import ArgumentParser
import Foundation
import ProfileVault
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// The options every command takes (SPEC §8).
struct GlobalOptions: ParsableArguments {
    @Option(help: "The store file (env PROFILEVAULT_STORE).")
    var store: String?

    @Option(help: "The keyring file (env PROFILEVAULT_KEYS).")
    var keys: String?

    @Option(help: ArgumentHelp("The PKCS#11 URI of the HSM key that seals the keyring (env PROFILEVAULT_HSM_URI): pkcs11:token=T;object=K?module-path=/path/lib.so&pin-source=file:/path/pin.",
                               valueName: "uri"))
    var hsm: String?

    @Option(help: "The policy directory with schema.yaml and policy.yaml (env PROFILEVAULT_POLICY; default policies/).")
    var policy: String?

    @Option(help: "Who acts, recorded in the audit log (default: $USER).")
    var actor: String?

    @Option(help: "The policy role to act in (default: operator).")
    var role: String?

    @Flag(help: "Machine-readable output: one JSON document on stdout.")
    var json = false

    @Flag(name: .customLong("allow-example-keys"),
          help: "Accept the public example keyring (keys-example/): no warning, and serve runs with it. For demos only, never for real data.")
    var allowExampleKeys = false

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    func storePath() throws -> String {
        guard let s = store ?? environment["PROFILEVAULT_STORE"], !s.isEmpty else {
            throw VaultError(.usage, "no store given: pass --store PATH or set PROFILEVAULT_STORE")
        }
        // Every command that works on a store (status and policy status too, which read no key).
        if let k = keys ?? environment["PROFILEVAULT_KEYS"], !k.isEmpty { try checkExampleKeys(path: k, refuse: false) }
        return s
    }

    func keysPath() throws -> String {
        guard let k = keys ?? environment["PROFILEVAULT_KEYS"], !k.isEmpty else {
            throw VaultError(.usage, "no keyring given: pass --keys PATH or set PROFILEVAULT_KEYS (create one with `profilectl keys generate --out PATH`)")
        }
        return k
    }

    var policyDirectory: String { policy ?? environment["PROFILEVAULT_POLICY"] ?? "policies" }

    /// `--hsm`, else `PROFILEVAULT_HSM_URI`; nil when neither is given (a sealed keyring is then
    /// refused with a message that says so).
    var hsmURI: String? {
        guard let u = hsm ?? environment["PROFILEVAULT_HSM_URI"], !u.isEmpty else { return nil }
        return u
    }

    var actorValue: Actor {
        Actor(name: actor ?? environment["USER"] ?? "cli", role: role ?? "operator")
    }

    /// The files no output may replace that these options name, for a command that opens no
    /// vault (`tokens add`); one that does uses `Vault.protectedFiles`.
    var protectedFiles: [ProtectedFile] {
        var files = ProtectedFile.policy(directory: policyDirectory)
        if let k = keys ?? environment["PROFILEVAULT_KEYS"], !k.isEmpty { files.append(.keyring(k)) }
        if let s = store ?? environment["PROFILEVAULT_STORE"], !s.isEmpty { files += ProtectedFile.store(s) }
        return files
    }

    func configuration(storePath override: String? = nil) throws -> VaultConfiguration {
        try configuration(storePathOverride: override, hsm: hsmURI)
    }

    func configuration(storePathOverride override: String?, hsm: String?) throws -> VaultConfiguration {
        var c = VaultConfiguration(storePath: try override ?? storePath(), keysPath: try keysPath(), policyDirectory: policyDirectory, actor: actorValue)
        c.hsmURI = hsm
        return c
    }

    /// The public example keyring (`keys-example/keyring.json` or any copy of it, recognised by
    /// its content: ``Keyring/isExample``) protects nothing. `serve` refuses it (`refuse`, exit
    /// 78); every other command that works on a store warns on stderr (``storePath()``: one
    /// `warning:` line; stdout and `--json` are untouched). `--allow-example-keys` silences both, for demos. A keyring
    /// that cannot be loaded is left to the command's own load, which reports why.
    func checkExampleKeys(path: String, refuse: Bool) throws {
        guard !allowExampleKeys, Vault.isExampleKeyring(path: path) else { return }
        if refuse {
            throw VaultError(.configuration, "keyring \(path): the example keyring is public: generate one with profilectl keys generate (--allow-example-keys runs with it anyway, for demos only)")
        }
        warn("keyring \(path) is the public example keyring: anyone can decrypt what it protects; generate one with profilectl keys generate (--allow-example-keys silences this, for demos only)")
    }

    /// Opens the vault; `checkPolicy: false` only for `policy apply` and the read-only audit
    /// verification (every other command refuses a policy that is not the one in force).
    func openVault(checkPolicy: Bool = true) throws -> Vault { try Vault.open(configuration(), checkPolicy: checkPolicy) }

    /// Prints the JSON document with `--json`, the text otherwise.
    func emit(_ json: JSONValue, text: @autoclosure () -> String) {
        if self.json {
            print(json.rendered(pretty: true))
        } else {
            print(text())
        }
    }
}

/// True when stderr is a terminal: progress and notices only go there then.
var stderrIsTerminal: Bool { isatty(2) != 0 }

func note(_ s: String) {
    if stderrIsTerminal { FileHandle.standardError.write(Data((s + "\n").utf8)) }
}

/// A warning about the result (always printed on stderr, terminal or not): `warning: ...`.
func warn(_ s: String) {
    FileHandle.standardError.write(Data(("warning: " + s + "\n").utf8))
}
