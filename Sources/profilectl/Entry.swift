import ArgumentParser
import Foundation
import Logging
import ProfileVault
import VaultServer
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// Runs the command line and turns every failure into one `error:` line on stderr and the exit
/// status of SPEC §8.
@main
enum Entry {
    static func main() {
        // Logs go to stderr (stdout is reserved for answers and --json), warnings and up unless
        // PROFILEVAULT_LOG_LEVEL says otherwise. Log metadata never carries personal data.
        let level = ProcessInfo.processInfo.environment["PROFILEVAULT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        // Text lines, or JSON lines once `serve --log-format json` turns ServiceLog.format.
        LoggingSystem.bootstrap { label in ServiceLog.handler(label: label, level: level) }
        do {
            var command = try Profilectl.parseAsRoot()
            try command.run()
        } catch let error as VaultError {
            fail(error.message, code: error.exitCode)
        } catch let error as ExitCode {
            exit(error.rawValue)
        } catch {
            let code = Profilectl.exitCode(for: error)
            if code == .success {
                Profilectl.exit(withError: error)   // --help and --version print and exit 0
            }
            if let unknown = unknownCommand(Array(CommandLine.arguments.dropFirst())) {
                fail(unknown, code: 64)
            }
            var message = Profilectl.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            if message.lowercased().hasPrefix("error: ") { message = String(message.dropFirst(7)) }
            if let first = message.first { message = first.lowercased() + message.dropFirst() }
            // ArgumentParser's own validation failures are usage errors (64).
            fail(message, code: code.rawValue == 0 ? 1 : code.rawValue)
        }
    }

    /// `unknown command 'frobnicate' (commands: ...)` when the arguments name a subcommand that
    /// does not exist (the first word that is not an option, under a command that has
    /// subcommands), else nil. ArgumentParser would report the word as an unexpected argument,
    /// or an option after it as unknown, which does not say what is wrong. The word is quoted
    /// when it is at most 64 printable ASCII characters.
    static func unknownCommand(_ args: [String]) -> String? {
        var command: any ParsableCommand.Type = Profilectl.self
        var path: [String] = []
        for word in args {
            let subcommands = command.configuration.subcommands
            guard !subcommands.isEmpty, !word.hasPrefix("-") else { return nil }
            if word == "help" { return nil }
            guard let next = subcommands.first(where: { $0._commandName == word || $0.configuration.aliases.contains(word) }) else {
                let shown = word.utf8.count <= 64 && !word.isEmpty && word.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
                    ? "'\(word)'" : "(not shown: not a short printable word)"
                let names = subcommands.map { $0._commandName }.joined(separator: ", ")
                let under = path.isEmpty ? "" : " of \(path.joined(separator: " "))"
                return "unknown command \(shown)\(under) (commands: \(names))"
            }
            command = next
            path.append(word)
        }
        return nil
    }

    static func fail(_ message: String, code: Int32) -> Never {
        // `error: ...`, or (serve --log-format json) a JSON line with level error.
        ServiceLog.announce(message.replacingOccurrences(of: "\n", with: " "), level: .error, textPrefix: "error: ")
        exit(code)
    }
}

struct Profilectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profilectl",
        abstract: "ProfileVault: a privacy-preserving customer-profile store.",
        discussion: "Store, keyring and policies come from --store/--keys/--policy or PROFILEVAULT_STORE, PROFILEVAULT_KEYS, PROFILEVAULT_POLICY. See docs/cli.md.",
        version: ProductVersion.current,
        subcommands: [Init.self, Migrate.self, Backup.self, Restore.self, Keys.self, Status.self, Ingest.self, Get.self, Find.self, Consent.self, Export.self, Erase.self, Requests.self, Restrict.self, Unrestrict.self, Rectify.self, Retention.self, Query.self, Budget.self, Train.self, Recommend.self, Score.self, AuditCommand.self, Tokens.self, Serve.self, Demo.self, PolicyCommand.self]
    )
}
