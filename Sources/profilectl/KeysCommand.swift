import ArgumentParser
import ProfileVault
import VaultAudit
import VaultCrypto
import VaultStore

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Key management.", subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a fresh keyring (mode 0600; never overwrites).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Where to write the keyring.") var out: String

        func run() throws {
            let ring = Keyring.generate(note: "ProfileVault keyring. Keep it secret, mode 0600, apart from the store and its backups.")
            do {
                try ring.write(to: out)
            } catch {
                throw VaultError(.configuration, error.description)
            }
            options.emit(.object([
                ("path", .string(out)),
                ("versions", .array(ring.versions.map { .int(Int64($0)) })),
                ("active", .int(Int64(ring.active))),
            ]), text: "wrote keyring \(out) (version \(ring.active), mode 0600)")
        }
    }
}
