public import DifferentialPrivacy
public import VaultAudit
public import VaultCrypto
public import VaultPolicy
public import VaultStore
import VaultValues

// The parts of the seam the PostgreSQL engine does not implement yet: each refuses with a
// configuration error naming the operation, so a store on PostgreSQL fails clearly (exit 78)
// instead of doing something else. This file shrinks to nothing as they land.

func notYet(_ what: String) -> VaultError {
    VaultError(.configuration, "\(what) is not available on the PostgreSQL engine yet; use a SQLite store for it")
}

struct PendingAggregateSource: AggregateSource {
    func boundedSums(_ request: AggregateRequest) throws -> [String: [Int64]] { throw notYet("a DP aggregate") }
}

extension PostgresProfiles {
    // MARK: pgagg
    public var aggregateSource: any AggregateSource { PendingAggregateSource() }
}
