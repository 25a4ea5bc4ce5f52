import ArgumentParser
import ProfileVault
import VaultValues

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Key management.", subcommands: [Generate.self, Rotate.self, Retire.self, Status.self])

    static func emit(_ s: KeyStatus, rewrapped: Int, options: GlobalOptions) {
        options.emit(JSONForms.keyStatus(s, rewrapped: rewrapped), text: """
            active KEK version \(s.active); usable \(s.versions.map(String.init).joined(separator: ", "))\(s.retired.isEmpty ? "" : "; retired " + s.retired.map(String.init).joined(separator: ", "))
            subjects per version: \(s.subjectsPerVersion.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", "))
            \(rewrapped > 0 ? "re-wrapped \(rewrapped) data keys\n" : "")identity keys (pseudonyms, blind indexes, audit signing) from version \(s.identityVersion)
            """)
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
        static let configuration = CommandConfiguration(abstract: "Write a fresh keyring (mode 0600; never overwrites).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Where to write the keyring.") var out: String

        func run() throws {
            // A keyring is never replaced, not even with --force, which this command does not
            // take: an existing --out is exit 73.
            let ring = try Vault.generateKeyring(at: out, note: "ProfileVault keyring. Keep it secret, mode 0600, apart from the store and its backups.")
            options.emit(.object([
                ("path", .string(out)),
                ("versions", .array(ring.versions.map { .int(Int64($0)) })),
                ("active", .int(Int64(ring.active))),
            ]), text: "wrote keyring \(out) (version \(ring.active), mode 0600)")
        }
    }
}
