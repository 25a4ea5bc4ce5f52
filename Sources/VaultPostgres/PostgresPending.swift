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

struct PendingAccountant: BudgetAccountant {
    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState { throw notYet("the budget ledger") }
    func spend(purpose: String, epsilon: Epsilon, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState {
        throw notYet("the budget ledger")
    }
}

extension PostgresProfiles {
    // MARK: pgkeys
    public func close() throws {}
    public func checkpoint() throws {}
    public func startBackgroundCheckpoints(every interval: Double) throws {}
    public func adopt(keyring: Keyring) throws { throw notYet("key rotation") }
    public func rewrapAll(batchSize: Int, audit: AuditContext, progress: ((Int) -> Void)?) throws -> Int { throw notYet("key rotation") }
    public func keyStatus(keyring: Keyring) throws -> KeyStatus { throw notYet("key status") }
    public func subjects(wrappedWith version: UInt32) throws -> Int { throw notYet("key status") }
    public func markRetired(_ version: UInt32, audit: AuditContext) throws { throw notYet("key retirement") }
    /// No MAC (empty): an artifact can be neither made nor verified yet.
    public func modelArtifactMAC(_ message: [UInt8]) -> [UInt8] { [] }
    public func budgetAccountant(audit: AuditRecord, policy: (sha256: String, schemaSHA256: String)?) -> any BudgetAccountant { PendingAccountant() }
    public func budgetState(purpose: String, limit: Double, periodSeconds: Int) throws -> BudgetState { throw notYet("the budget ledger") }
    public func budgetState(purpose: String, limit: Double, deltaLimit: Double, periodSeconds: Int) throws -> BudgetState { throw notYet("the budget ledger") }
    public var auditPublicKey: Ed25519PublicKey { engine.auditPublicKey }
    public func audit(_ records: [AuditRecord]) throws { throw notYet("the audit log") }
    public func signedAuditHead() throws -> AuditCheckpoint? { throw notYet("the audit log") }
    public func publishAuditHeads(to path: String, protecting: [ProtectedFile]) throws { throw notYet("publishing audit heads") }
    public func verifyAudit(expectHead: String?) throws -> AuditVerification { throw notYet("audit verification") }
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat, to file: OutputFile) throws -> (entries: Int, head: String) {
        throw notYet("audit export")
    }
    public func exportAudit(sinceMillis: Int64?, untilMillis: Int64?, format: AuditExportFormat) throws -> (bytes: [UInt8], entries: Int, head: String) {
        throw notYet("audit export")
    }
    public func latestPolicy() throws -> PolicyRecord? { throw notYet("the policy ledger") }
    public func policyHistory() throws -> [PolicyRecord] { throw notYet("the policy ledger") }
    public func recordPolicy(_ record: PolicyRecord, previous: Int64?, periods: [String: Int], audit: AuditRecord) throws -> PolicyRecord {
        throw notYet("the policy ledger")
    }

    // MARK: pgagg
    public var aggregateSource: any AggregateSource { PendingAggregateSource() }
}
