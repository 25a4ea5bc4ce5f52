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
        subcommands: [Add.self, List.self, Revoke.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token for an actor and role; prints it once.",
            discussion: "The tokens file (JSON, mode 0600, rewritten atomically) keeps the token's SHA-256, actor and role. A tokens file readable by group or others is refused.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The tokens file (created when absent).") var tokens: String
        @Option(help: ArgumentHelp("The token stops working after this long: a whole number of minutes, hours or days (30m, 12h, 90d; at most 3650d). Default: never.",
                                   valueName: "DURATION")) var expires: String?

        func validate() throws {
            guard let a = options.actor, !a.isEmpty, a.count <= 128, !a.contains(where: { $0.isNewline }) else {
                throw ValidationError("--actor NAME is required (at most 128 characters)")
            }
            guard let r = options.role, !r.isEmpty else { throw ValidationError("--role ROLE is required") }
            if let expires, TokenFile.lifetimeMillis(expires) == nil {
                throw ValidationError("--expires \(expires.prefix(32)): expected a duration such as 30m, 12h or 90d (from 1m to 3650d)")
            }
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
            var expiresMillis: Int64?
            if let expires {
                guard let lifetime = TokenFile.lifetimeMillis(expires) else { throw VaultError(.usage, "--expires \(expires.prefix(32)): expected a duration such as 30m, 12h or 90d") }
                expiresMillis = TokenFile.nowMillis + lifetime   // both bounded: no overflow
            }
            // Read, add and write under the file's lock: a revoke or add running at the same
            // time is never overwritten.
            let (token, id) = try TokenFile.changing(path: tokens) { () throws -> (String, String) in
                var file = try TokenFile.loadOrEmpty(path: tokens)
                let token = file.add(actor: actor, role: role, expiresMillis: expiresMillis)
                try file.save(protecting: protected)
                guard let id = file.identities.last?.tokenID else { throw VaultError(.internalFailure, "the new token is missing from the file") }
                return (token, id)
            }
            let expiry = expiresMillis.map { TokenFile.isoTime($0) }
            options.emit(.object([("token", .string(token)), ("id", .string(id)), ("actor", .string(actor)), ("role", .string(role)),
                                  ("expires", expiry.map(JSONValue.string) ?? .null)]),
                         text: "\(token)\n(token \(id) for \(actor) as \(role)\(expiry.map { ", expires \($0)" } ?? ""); shown once, only its hash is stored in \(tokens))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the tokens file's entries (ids, actors, roles, created, expires, revoked; never tokens or their hashes).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The tokens file.") var tokens: String

        func run() throws {
            let entries = try TokenFile.load(path: tokens).listing
            func time(_ ms: Int64?) -> JSONValue { ms.map { .string(TokenFile.isoTime($0)) } ?? .null }
            let now = TokenFile.nowMillis
            let rows = entries.map { e -> String in
                var state = "active"
                if let r = e.revokedMillis {
                    state = "revoked " + TokenFile.isoTime(r)
                } else if let x = e.expiresMillis, now >= x {
                    state = "expired " + TokenFile.isoTime(x)
                } else if let x = e.expiresMillis {
                    state = "expires " + TokenFile.isoTime(x)
                }
                return "\(e.tokenID)  \(e.actor)  \(e.role)  created \(e.created.isEmpty ? "-" : e.created)  \(state)"
            }
            options.emit(.object([("tokens", .array(entries.map {
                .object([("id", .string($0.tokenID)), ("actor", .string($0.actor)), ("role", .string($0.role)),
                         ("created", $0.created.isEmpty ? .null : .string($0.created)),
                         ("expires", time($0.expiresMillis)), ("revoked", time($0.revokedMillis))])
            }))]), text: rows.joined(separator: "\n"))
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token by its id (from `tokens list`); the service refuses it from its next request.",
            discussion: "The entry stays in the file, marked revoked (so `tokens list` shows when). Revoking a revoked token changes nothing. An unknown id: exit 66.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The tokens file.") var tokens: String
        @Argument(help: "The token's id.") var id: String

        func run() throws {
            let protected = options.protectedFiles
            if let reason = OutputFile.protectedReason(tokens, protecting: protected, sniff: false) {
                throw VaultError(.cannotCreate, "\(tokens): cannot use it as the tokens file: \(reason)")
            }
            try TokenFile.changing(path: tokens) {
                var file = try TokenFile.load(path: tokens)
                if try file.revoke(id: id) { try file.save(protecting: protected) }
            }
            options.emit(.object([("revoked", .string(id))]), text: "token \(id) revoked")
        }
    }
}
