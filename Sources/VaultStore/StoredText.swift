package import VaultValues

/// Free text an engine stores as it is given (a consent source, an erasure reason, an actor, a
/// policy version, a policy record's text). PostgreSQL's `text` cannot hold U+0000 and SQLite
/// would keep only what comes before it (GRDB binds text up to its first NUL), so every engine,
/// and the gate before it, refuses such text the same way before anything is read, written or
/// charged: invalid input (65) naming the field, never quoting the value.
package enum StoredText {
    /// Refuses `value` (nil: nothing given) when it holds U+0000.
    package static func check(_ value: String?, _ field: String) throws(VaultError) {
        guard let value, value.utf8.contains(0) else { return }
        throw VaultError(.invalidInput, "the \(field) contains the control character U+0000")
    }

    /// The consent change's stored text: its purpose, source, policy version and actor.
    package static func checkConsent(purpose: String, source: String?, policyVersion: String, actor: String) throws(VaultError) {
        try check(purpose, "purpose")
        try check(source, "consent source")
        try check(policyVersion, "policy version")
        try check(actor, "actor")
    }

    /// A policy record's stored text.
    package static func checkPolicyRecord(version: String, actor: String, role: String, summary: String, changes: String) throws(VaultError) {
        try check(version, "policy version")
        try check(actor, "actor")
        try check(role, "role")
        try check(summary, "policy summary")
        try check(changes, "policy changes")
    }
}
