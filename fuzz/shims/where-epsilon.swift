// Stand-in for DifferentialPrivacy's `Epsilon` (Release.swift, which needs VaultCrypto's noise)
// in the `where` fuzz target. That target compiles Sources/DifferentialPrivacy/Query.swift for
// `WhereCondition`; Query.swift names `Epsilon` only in declarations the parser never uses.
public struct Epsilon: Sendable {}
