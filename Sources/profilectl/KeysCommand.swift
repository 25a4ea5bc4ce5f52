import ArgumentParser
import ProfileVault
import VaultValues

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Key management.", subcommands: [Generate.self, Rotate.self, Retire.self, Status.self, Seal.self, Unseal.self])

    static func emit(_ s: KeyStatus, rewrapped: Int, options: GlobalOptions) {
        options.emit(JSONForms.keyStatus(s, rewrapped: rewrapped), text: """
            active KEK version \(s.active); usable \(s.versions.map(String.init).joined(separator: ", "))\(s.retired.isEmpty ? "" : "; retired " + s.retired.map(String.init).joined(separator: ", "))
            subjects per version: \(s.subjectsPerVersion.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", "))
            \(rewrapped > 0 ? "re-wrapped \(rewrapped) data keys\n" : "")identity keys (pseudonyms, blind indexes, audit signing) from version \(s.identityVersion)
            root of trust: \(rootOfTrust(s.rootOfTrust))
            """)
    }

    /// Where the root of trust lives, in words (never a PIN nor its file).
    static func rootOfTrust(_ c: KeyCustody) -> String {
        switch c {
        case .file: "the keyring file (custody file)"
        case .pkcs11(let uri): "PKCS#11 token \"\(uri.token ?? "")\", key \"\(uri.object ?? "")\" (custody pkcs11, module \(uri.moduleName))"
        }
    }

    static func emit(_ r: KeyCustodyResult, verb: String, options: GlobalOptions) {
        options.emit(.object([
            ("path", .string(r.path)),
            ("versions", .array(r.versions.map { .int(Int64($0)) })),
            ("active", .int(Int64(r.active))),
            ("custody", .string(r.custody.name)),
            ("root_of_trust", JSONForms.rootOfTrust(r.custody)),
        ]), text: "\(verb) keyring \(r.path) (version \(r.active), mode 0600); root of trust: \(rootOfTrust(r.custody))")
    }

    struct Seal: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seal the store's file keyring by a key in a PKCS#11 token, in place (--hsm URI; role privacy_officer).",
            discussion: "The sealed keyring is written beside the keyring, opened again through the token and compared key for key; only then does it replace the file keyring, whose bytes are overwritten. Audited as keys.seal.")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            guard let hsm = options.hsmURI else {
                throw VaultError(.usage, "keys seal needs --hsm URI (or PROFILEVAULT_HSM_URI): the PKCS#11 key to seal the keyring with")
            }
            // The file keyring opens the store; the token seals it.
            var o = options
            o.hsm = nil
            let vault = try Vault.open(try o.configuration(storePathOverride: nil, hsm: nil))
            Keys.emit(try vault.sealKeyring(hsm: hsm), verb: "sealed", options: options)
        }
    }

    struct Unseal: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the sealed keyring's keys to a new plain keyring file (--hsm URI --out FILE; role privacy_officer; audited).",
            discussion: "The output is new (mode 0600, never over an existing file) and holds every root secret in clear: whoever reads it holds the data. The sealed keyring stays as it is. Audited as keys.unseal.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The new plain keyring file.") var out: String

        func run() throws {
            let vault = try options.openVault()
            Keys.emit(try vault.unsealKeyring(to: out), verb: "unsealed", options: options)
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a KEK version and re-wrap every data key under it (role privacy_officer).")
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Add no version; finish re-wrapping to the active one (after an interrupted rotation).") var resume = false

        func run() throws {
            let vault = try options.openVault()
            let r = try vault.rotateKeys(resume: resume) { n in note("re-wrapped \(n)") }
            Keys.emit(try vault.keyStatus(), rewrapped: r.rewrapped, options: options)
        }
    }

    struct Retire: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retire a KEK version no data key uses any more (role privacy_officer).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The version to retire.") var version: UInt32

        func run() throws {
            let s = try options.openVault().retireKey(version: version)
            Keys.emit(s, rewrapped: 0, options: options)
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Key versions and how many data keys each wraps (role privacy_officer).")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            Keys.emit(try options.openVault().keyStatus(), rewrapped: 0, options: options)
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a fresh keyring (mode 0600; never overwrites).",
            discussion: "With --hsm URI: first create the URI's AES-256 sealing key on the PKCS#11 token (sensitive, not extractable; refused when its label exists), then write the keyring sealed by it.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Where to write the keyring.") var out: String

        func run() throws {
            if let hsm = options.hsmURI {
                let r = try Vault.generateSealedKeyring(at: out, hsm: hsm, note: "ProfileVault keyring, sealed by a PKCS#11 key. The file alone opens nothing.")
                Keys.emit(r, verb: "wrote sealed", options: options)
                return
            }
            // A keyring is never replaced, not even with --force, which this command does not
            // take: an existing --out is exit 73.
            let ring = try Vault.generateKeyring(at: out, note: "ProfileVault keyring. Keep it secret, mode 0600, apart from the store and its backups.")
            options.emit(.object([
                ("path", .string(out)),
                ("versions", .array(ring.versions.map { .int(Int64($0)) })),
                ("active", .int(Int64(ring.active))),
                ("custody", .string("file")),
            ]), text: "wrote keyring \(out) (version \(ring.active), mode 0600)")
        }
    }
}
