// Stand-in for ProfileVault's `Vault` in the `dp` fuzz target: the target compiles the job-file
// part of Sources/ProfileVault/Vault+Train.swift (up to its "MARK: - Gate" line), which is an
// extension of `Vault` with static functions only.
public final class Vault: Sendable {}
