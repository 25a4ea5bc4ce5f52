import Foundation
import VaultAudit
import VaultStore

/// What a long-running interface (the HTTP service) needs beyond the CLI's one-shot `Vault`.
extension Vault {
    /// The same store, schema and policy, acting as another actor in another role.
    ///
    /// The service opens the store once (one `DatabasePool` for the process) and serves every
    /// request through a `Vault` for the request's token: each one goes through the same
    /// `audited` / `require` gate as the CLI, with the token's actor and role recorded in the
    /// audit log. Creating one does no I/O.
    ///
    /// `requestID`, when given, is the request id of every audit entry the returned vault
    /// writes (the HTTP request's `x-request-id`), instead of a fresh id per call.
    public func acting(as actor: Actor, requestID: String? = nil) -> Vault {
        var c = configuration
        c.actor = actor
        return Vault(configuration: c, schema: schema, policy: policy, store: store, logger: logger, requestID: requestID,
                     policyFiles: policyFiles)
    }

    /// Refuses, and records the refusal in the audit log as `denied` under `action`, unless the
    /// actor's role grants `permission`. Succeeds silently (and writes nothing) when it does.
    ///
    /// The service calls it before reading a request body, so a caller in the wrong role learns
    /// nothing from input validation and the attempt is on the record.
    /// `subjectID`: the customer the request names (its path), whose pseudonym the refusal records.
    public func authorize(_ permission: String, action: String, purpose: String? = nil, subjectID: String? = nil) throws {
        try audited(action, .other, permission: permission, purpose: purpose, subjectID: subjectID) { _ in }
    }

    /// True when the actor's role grants `permission` (in memory, no audit entry).
    public func permits(_ permission: String) -> Bool {
        (try? require(permission)) != nil
    }

    /// Records a failed authentication of the HTTP service in the audit log: action
    /// `auth.failed`, outcome denied, actor `unauthenticated` in role `none`, and a detail that
    /// says the reason (`missing`, `malformed`, `unknown`, `revoked`, `expired`), the token id
    /// for a revoked or expired token (the entry's random id, not derived from the token) and
    /// the client address. Never the token, a part of it or its hash. `client` is recorded only
    /// when it looks like an address (an IPv4 address, or an IPv6 /64 prefix), else as
    /// `unknown`. The service calls it for the failures its rate limit lets through, which
    /// bounds how many such entries an attacker can cause (docs/threat-model.md).
    public func recordAuthenticationFailure(_ failure: AuthenticationFailure, client: String, requestID: String) throws {
        let address = Self.isAddressText(client) ? client : "unknown"
        var detail = "authentication failed: \(failure.kind)"
        switch failure {
        case .revoked(let id), .expired(let id):
            if Self.isAddressText(id) { detail += " token \(id)" }   // hex ids only
        default: break
        }
        detail += "; client \(address)"
        let context = AuditContext(actor: "unauthenticated", role: "none", requestID: requestID, policyVersion: policy.version)
        try store.audit([context.record("auth.failed", .other, outcome: .denied, detail: detail)])
    }

    /// Records a console sign-in or sign-out (docs/console.md) in the audit log: action
    /// `auth.sign_in` or `auth.sign_out`, outcome ok, as this vault's actor and role (the
    /// token's), with a detail naming the token id (the entry's random id, not derived from the
    /// token) and the client address as ``recordAuthenticationFailure(_:client:requestID:)``
    /// records them. Never the token, the session id or a cookie value.
    public func recordConsoleSession(signedIn: Bool, tokenID: String, client: String) throws {
        let address = Self.isAddressText(client) ? client : "unknown"
        var detail = signedIn ? "console sign-in" : "console sign-out"
        if Self.isAddressText(tokenID) { detail += "; token \(tokenID)" }
        detail += "; client \(address)"
        let context = AuditContext(actor: actor.name, role: actor.role, requestID: requestID ?? UUID().uuidString.lowercased(),
                                   policyVersion: policy.version)
        try store.audit([context.record(signedIn ? "auth.sign_in" : "auth.sign_out", .other, outcome: .ok, detail: detail)])
    }

    /// 1 to 64 characters of hex digits, `.`, `:` and `/` (an address, a /64 prefix or a token id).
    static func isAddressText(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy { b in
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"),
                 UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"):
                true
            default:
                false
            }
        }
    }
}
