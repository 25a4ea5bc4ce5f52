import Foundation
public import DifferentialPrivacy
import PostgresNIO
public import VaultStore
public import VaultAudit

/// Delta in integer units of 10^-15: the SQLite ledger's own `DeltaUnits` (a limit rounds
/// down, a charge rounds up, a value within 10^-3 of a unit is that unit), so both engines
/// count a delta identically.
public typealias PostgresDeltaUnits = DeltaUnits

extension PostgresEngine {
    /// Start of the current budget window: consecutive intervals of `periodSeconds` counted
    /// from the store's creation, on the server's clock (as the SQLite store computes it, with
    /// the same checked arithmetic: a `created_at` far from now cannot trap).
    static func periodStart(created: Int64, now: Int64, periodSeconds: Int64) -> Int64 {
        let p = max(1, periodSeconds)
        let (elapsed, overflow) = now.subtractingReportingOverflow(created)
        guard !overflow, elapsed >= 0 else { return min(created, now) }
        return created + (elapsed / p) * p
    }

    /// Epsilon and delta units the window `[start, start + periodSeconds)` of `purpose` has spent:
    /// every ledger row whose own window overlaps it counts in full, whatever period length it
    /// was charged under (as `windowSpent` of the SQLite store).
    func windowSpent(_ conn: PostgresConnection, purpose: String, start: Int64, periodSeconds: Int64) async throws -> (epsilon: Int64, delta: Int64) {
        guard let row = try await rows(conn, """
            SELECT LEAST(COALESCE(SUM(spent_units), 0), 9223372036854775807)::bigint,
                   LEAST(COALESCE(SUM(delta_spent_units), 0), 9223372036854775807)::bigint
            FROM profilevault.dp_budget
            WHERE purpose = \(purpose) AND period_start < \(start) + \(periodSeconds) AND period_start + period_seconds > \(start)
            """).first else { return (0, 0) }
        return try row.decode((Int64, Int64).self)
    }

    /// The window start for `periodSeconds` now, from the store's `created_at` and the server's clock.
    func currentPeriodStart(_ conn: PostgresConnection, periodSeconds: Int64) async throws -> Int64 {
        guard let row = try await rows(conn, """
            SELECT (SELECT value FROM profilevault.meta WHERE key = 'created_at'), floor(extract(epoch FROM statement_timestamp()))::bigint
            """).first else { throw PostgresStoreError(.internalFailure, "reading the server's clock returned no row") }
        let (createdText, now) = try row.decode((String?, Int64).self)
        guard let createdText, let created = Int64(createdText) else {
            throw PostgresStoreError(.integrity, "the store's created_at is missing or not a number: the database was edited (or init did not finish)")
        }
        return Self.periodStart(created: created, now: now, periodSeconds: periodSeconds)
    }

    /// The longest budget period (2^40 seconds, about 34,800 years; a policy's longest,
    /// 9999999d, is shorter): window ends (`start + period`) are computed in SQL as bigint, and
    /// a longer period would overflow there (`bigint out of range`) instead of being refused.
    static let maximumPeriodSeconds = 1 << 40

    /// The limits in ledger units, refusing what no policy can mean (before anything is read or written).
    static func units(epsilon: Double, delta: Double, limit: Double, deltaLimit: Double, periodSeconds: Int)
        throws -> (epsilon: Epsilon, charge: Int64, delta: Int64, limit: Int64, deltaLimit: Int64, period: Int64) {
        guard let e = Epsilon(epsilon) else {
            throw PostgresStoreError(.usage, "epsilon must be a finite number between \(Epsilon.minimum) and 1000000")
        }
        guard let deltaCharge = PostgresDeltaUnits.charge(delta) else { throw PostgresStoreError(.usage, "delta must be between 0 and 1") }
        guard limit.isFinite, limit >= 0 else { throw PostgresStoreError(.configuration, "a budget's epsilon limit must be a finite number of at least 0") }
        guard let deltaLimitUnits = PostgresDeltaUnits.limit(deltaLimit) else {
            throw PostgresStoreError(.configuration, "a budget's delta limit must be between 0 and 1")
        }
        guard periodSeconds >= 1 else { throw PostgresStoreError(.configuration, "a budget period must be longer than zero") }
        guard periodSeconds <= maximumPeriodSeconds else { throw PostgresStoreError(.configuration, "a budget period must be at most 2^40 seconds") }
        // A limit beyond 2^40 epsilon is as good as unlimited; clamped, it cannot overflow.
        let limitUnits = Int64((min(limit, 0x1p40) * Double(Epsilon.unitsPerOne)).rounded(.down))
        guard let charge = Int64(exactly: e.chargeUnits) else { throw PostgresStoreError(.usage, "epsilon is too large") }
        return (e, charge, deltaCharge, limitUnits, deltaLimitUnits, Int64(periodSeconds))
    }

    /// Charges `epsilon` (and `delta`) to `purpose`'s current window, or refuses: in ONE
    /// transaction that also appends the audit entry, so across every node of the cluster the
    /// ledger is never overspent and every grant and refusal is in the chain.
    ///
    /// The transaction: an advisory lock on the purpose (charges of one purpose queue here, so
    /// the sum over rows of other period lengths below cannot change under it); the window row
    /// created if missing (`INSERT ... ON CONFLICT DO NOTHING`); then
    /// `UPDATE dp_budget SET spent_units = spent_units + e, ... WHERE ... AND spent_units + e +
    /// others <= limit AND delta_spent_units + d + others <= delta limit RETURNING ...`. A row
    /// back is a grant: `audit` is appended with the epsilon charged (and `delta X` in its
    /// detail, as the SQLite accountant writes it). No row is a refusal: `audit` is appended as
    /// denied (no fields, no epsilon, `budget exceeded: ...` as detail, as the Vault records a
    /// refused query on SQLite), the transaction commits that entry only, and
    /// ``BudgetExceeded`` is thrown.
    ///
    /// Amounts are integer units (epsilon 2^-20 as `Epsilon.chargeUnits`, delta 10^-15), so
    /// sums and comparisons are exact. Non-finite, negative or out-of-range numbers are refused
    /// before anything is read or written.
    ///
    /// With `policy` (the SHA-256s of the policy and schema files the caller loaded), the charge
    /// is refused (configuration) when the newest `policy_history` record is another policy,
    /// checked under the policy lock a policy record takes exclusively (PostgresPolicy.swift),
    /// so no charge commits under a policy superseded meanwhile. `recordRefusal: false` (the
    /// `BudgetAccountant` of the Vault, which records the refusal itself as on SQLite) commits
    /// a refusal without an entry (nothing is charged).
    public func charge(purpose: String, epsilon: Double, delta: Double = 0, limit: Double, deltaLimit: Double = 0,
                       periodSeconds: Int, audit: AuditRecord, policy: (sha256: String, schemaSHA256: String)? = nil,
                       recordRefusal: Bool = true) async throws -> BudgetState {
        let u = try Self.units(epsilon: epsilon, delta: delta, limit: limit, deltaLimit: deltaLimit, periodSeconds: periodSeconds)
        guard !purpose.isEmpty, purpose.utf8.count <= 256 else {
            throw PostgresStoreError(.usage, "a purpose name must have 1 to 256 bytes")
        }
        let outcome: (BudgetState?, BudgetExceeded?, AuditCheckpoint?) = try await transaction("charging the privacy budget") { conn in
            try await exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceBudget), hashtext(\(purpose)))")
            if let policy { try await checkPolicyInForce(conn, policy) }
            let start = try await currentPeriodStart(conn, periodSeconds: u.period)
            try await exec(conn, """
                INSERT INTO profilevault.dp_budget(purpose, period_start, period_seconds) VALUES (\(purpose), \(start), \(u.period))
                ON CONFLICT DO NOTHING
                """)
            let granted = try await rows(conn, """
                UPDATE profilevault.dp_budget AS b
                SET spent_units = b.spent_units + \(u.charge), delta_spent_units = b.delta_spent_units + \(u.delta)
                FROM (SELECT COALESCE(SUM(o.spent_units), 0) AS eps, COALESCE(SUM(o.delta_spent_units), 0) AS del
                      FROM profilevault.dp_budget o
                      WHERE o.purpose = \(purpose) AND o.period_start < \(start) + \(u.period) AND o.period_start + o.period_seconds > \(start)
                        AND NOT (o.period_start = \(start) AND o.period_seconds = \(u.period))) AS others
                WHERE b.purpose = \(purpose) AND b.period_start = \(start) AND b.period_seconds = \(u.period)
                  AND b.spent_units + \(u.charge) + others.eps <= \(u.limit)
                  AND b.delta_spent_units + \(u.delta) + others.del <= \(u.deltaLimit)
                RETURNING LEAST(b.spent_units + others.eps, 9223372036854775807)::bigint,
                          LEAST(b.delta_spent_units + others.del, 9223372036854775807)::bigint
                """)
            if let row = granted.first {
                let (spent, deltaSpent) = try row.decode((Int64, Int64).self)
                var record = audit
                record.epsilon = u.epsilon.chargedValue   // what is charged, as the SQLite accountant records it
                if Rho.isLedgerKey(purpose) {   // a zCDP purpose's row: the charge is rho, as on SQLite
                    record.epsilon = nil
                    record.detail = (record.detail.map { $0 + "; " } ?? "") + Rho.auditDetail(ofLedgerCharge: u.epsilon)
                }
                if delta > 0 { record.detail = (record.detail.map { $0 + "; " } ?? "") + "delta \(AuditLog.decimal(delta))" }
                let head = try await appendLocked(conn, [record])
                let state = BudgetState(purpose: purpose, limit: limit, spent: Double(spent) / Double(Epsilon.unitsPerOne), periodStart: start,
                                        deltaLimit: deltaLimit, deltaSpent: PostgresDeltaUnits.value(deltaSpent))
                return (state, nil, head.checkpoint)
            }
            let spent = try await windowSpent(conn, purpose: purpose, start: start, periodSeconds: u.period)
            let current = BudgetState(purpose: purpose, limit: limit, spent: Double(spent.epsilon) / Double(Epsilon.unitsPerOne), periodStart: start,
                                      deltaLimit: deltaLimit, deltaSpent: PostgresDeltaUnits.value(spent.delta))
            // Which limit did not fit: epsilon first, as the SQLite accountant checks.
            let (after, overflow) = spent.epsilon.addingReportingOverflow(u.charge)
            let deltaExceeded = !(overflow || after > u.limit)
            let exceeded = BudgetExceeded(state: current, requested: u.epsilon.chargedValue, requestedDelta: delta, deltaExceeded: deltaExceeded)
            // Nothing charged; what commits is at most the window's empty row.
            guard recordRefusal else { return (nil, exceeded, nil) }
            var denied = AuditRecord(actor: audit.actor, role: audit.role, action: audit.action, activity: audit.activity, purpose: audit.purpose,
                                     outcome: .denied, requestID: audit.requestID, detail: "budget exceeded: \(exceeded.description)",
                                     policyVersion: audit.policyVersion)
            denied.subject = nil
            let head = try await appendLocked(conn, [denied])
            return (nil, exceeded, head.checkpoint)
        }
        if let cp = outcome.2 { trustedCheckpoint.withLock { $0 = cp.digest } }
        if let exceeded = outcome.1 { throw exceeded }
        guard let state = outcome.0 else { throw PostgresStoreError(.internalFailure, "the budget transaction ended without a result") }
        return state
    }

    /// The budget of `purpose` in its current window (nothing spent yet: 0).
    public func budgetState(purpose: String, limit: Double, deltaLimit: Double = 0, periodSeconds: Int) async throws -> BudgetState {
        guard periodSeconds >= 1 else { throw PostgresStoreError(.configuration, "a budget period must be longer than zero") }
        guard periodSeconds <= Self.maximumPeriodSeconds else { throw PostgresStoreError(.configuration, "a budget period must be at most 2^40 seconds") }
        let period = Int64(periodSeconds)
        return try await transaction("reading the privacy budget") { conn in
            let start = try await currentPeriodStart(conn, periodSeconds: period)
            let spent = try await windowSpent(conn, purpose: purpose, start: start, periodSeconds: period)
            return BudgetState(purpose: purpose, limit: limit, spent: Double(spent.epsilon) / Double(Epsilon.unitsPerOne), periodStart: start,
                               deltaLimit: deltaLimit, deltaSpent: PostgresDeltaUnits.value(spent.delta))
        }
    }
}
