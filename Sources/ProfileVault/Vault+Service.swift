import Foundation
import VaultAudit

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
}
