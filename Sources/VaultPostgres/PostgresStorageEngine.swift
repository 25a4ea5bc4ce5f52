public import VaultStore

/// The PostgreSQL engine behind the `Vault` gate: `PostgresProfiles` implements every method
/// of the seam (subjects and PII, events, consent, erasure and retention, key custody, the
/// budget ledger, the audit chain, the policy ledger, the aggregate source) in the files of
/// this module, with the SQLite engine's semantics; the conformance suite runs on both.
extension PostgresProfiles: StorageEngine {}
