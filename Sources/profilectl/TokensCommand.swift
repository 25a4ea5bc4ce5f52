import ArgumentParser
import Foundation
import ProfileVault
import VaultServer
import VaultValues

/// `tokens add`: bearer tokens for the HTTP service (SPEC §10). Needs no role of the policy:
/// it touches no subject's data; whoever can write the tokens file decides who may call the
/// service.
struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bearer tokens for `profilectl serve` (the file stores only their SHA-256).",
        subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token for an actor and role; prints it once.",
            discussion: "The tokens file (JSON, mode 0600, rewritten atomically) keeps the token's SHA-256, actor and role. A tokens file readable by group or others is refused.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The tokens file (created when absent).") var tokens: String

        func validate() throws {
            guard let a = options.actor, !a.isEmpty, a.count <= 128, !a.contains(where: { $0.isNewline }) else {
                throw ValidationError("--actor NAME is required (at most 128 characters)")
            }
            guard let r = options.role, !r.isEmpty else { throw ValidationError("--role ROLE is required") }
        }

        func run() throws {
            let actor = options.actor!, role = options.role!
            // When the policy can be read, the role must be one of its roles (a typo would make
            // a token that every route refuses).
            if let policy = try? Vault.loadPolicies(directory: options.policyDirectory).policy, policy.roles[role] == nil {
                throw VaultError(.usage, "--role \(role): not a role of \(policy.file) (roles: \(policy.roles.keys.sorted().joined(separator: ", ")))")
            }
            // The tokens file is rewritten (0600, atomically), so it may never be the keyring,
            // the store or a policy file (exit 73), whatever the path looks like.
            let protected = options.protectedFiles
            if let reason = OutputFile.protectedReason(tokens, protecting: protected, sniff: false) {
                throw VaultError(.cannotCreate, "\(tokens): cannot use it as the tokens file: \(reason)")
            }
            var file = try TokenFile.loadOrEmpty(path: tokens)
            let token = file.add(actor: actor, role: role)
            try file.save(protecting: protected)
            let id = file.identities.last!.tokenID
            options.emit(.object([("token", .string(token)), ("id", .string(id)), ("actor", .string(actor)), ("role", .string(role))]),
                         text: "\(token)\n(token \(id) for \(actor) as \(role); shown once, only its hash is stored in \(tokens))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the tokens file's entries (ids, actors, roles; never tokens).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The tokens file.") var tokens: String

        func run() throws {
            let ids = try TokenFile.load(path: tokens).identities
            options.emit(.object([("tokens", .array(ids.map { .object([("id", .string($0.tokenID)), ("actor", .string($0.actor)), ("role", .string($0.role))]) }))]),
                         text: ids.map { "\($0.tokenID)  \($0.actor)  \($0.role)" }.joined(separator: "\n"))
        }
    }
}
