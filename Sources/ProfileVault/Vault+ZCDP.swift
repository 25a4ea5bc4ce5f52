import Foundation
public import DifferentialPrivacy
import VaultAudit
import VaultPolicy
import VaultStore

// Queries under a zCDP purpose (`dp_budget: { rho: R, period: P }`; docs/differential-privacy.md,
// "zCDP and the discrete Gaussian"): the same gate, plan and audit as `query`, but the release
// uses the exact discrete Gaussian and charges rho on the purpose's zCDP ledger row
// (`Rho.ledgerKey`). What a request spends:
//
// - `--rho R` (HTTP `"rho"`): R, rounded down to 2^-30;
// - `--epsilon E`: rho = E²/2, the zCDP an E-DP release has (so the Gaussian's sigma equals
//   the Laplace scale the same epsilon would give a count);
// - `--accuracy A`: the least rho whose interval half-width at the confidence is at most A
//   (count, sum, histogram; a mean is asked for with --rho or --epsilon).
extension Vault {
    /// The purpose's zCDP budget, nil for an epsilon purpose (or an unknown one: `purpose(_:)` refuses it later).
    func zcdpBudget(_ purpose: String) -> DPBudget? {
        guard let b = policy.purpose(purpose)?.dpBudget, b.rho != nil else { return nil }
        return b
    }

    /// The rho a zCDP request spends (see the file's comment), or a usage error naming the flag.
    func zcdpRho(_ q: QueryRequest, _ dpq: DPQuery) throws -> Rho {
        let given = [q.rho != nil, q.epsilon != nil, q.accuracy != nil].filter { $0 }.count
        guard given == 1 else {
            throw VaultError(.usage, given == 0 ? "query: purpose \(q.purpose) accounts in zCDP: give --rho, --epsilon or --accuracy"
                                                 : "query: give one of --rho, --epsilon and --accuracy")
        }
        if let r = q.rho {
            guard let rho = Rho(r) else { throw VaultError(.usage, "--rho: must be a number from 2^-30 (about 9.3e-10) to \(Self.number(Rho.maximum))") }
            return rho
        }
        if let e = q.epsilon {
            guard let rho = Rho(fromEpsilon: e) else {
                throw VaultError(.usage, "--epsilon: under a zCDP purpose it spends rho = epsilon²/2, which must be from 2^-30 to \(Self.number(Rho.maximum)) (epsilon up to about 14.1)")
            }
            return rho
        }
        do {
            return try QueryEngine.rho(forAccuracy: q.accuracy ?? 0, dpq)
        } catch let e as DPParameterError {
            throw VaultError(.usage, "--accuracy: \(e.reason)")
        }
    }

    /// `prepareQuery` for a zCDP purpose: the request checked with a placeholder epsilon (the
    /// plan's coordinates do not depend on it), then its rho and the Gaussian plan checked.
    func prepareZCDPQuery(_ q: QueryRequest, budget: DPBudget) throws -> (PreparedQuery, Rho) {
        var probe = q
        probe.epsilon = 1
        probe.accuracy = nil
        probe.rho = nil
        var prepared = try prepareQuery(probe)
        let rho = try zcdpRho(q, prepared.dpq)
        do {
            _ = try QueryEngine.planGaussian(prepared.dpq, rho: rho)
        } catch let e as DPParameterError {
            if e.field == "rho" { throw VaultError(.usage, "--rho: \(e.reason)") }
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: prepared.dpq.measure))
        }
        var details: [String] = prepared.detail.map { [$0] } ?? []
        if let a = q.accuracy { details.append("accuracy \(Self.number(a)) at confidence \(Self.number(prepared.dpq.confidence))") }
        if q.epsilon != nil { details.append("epsilon \(Self.number(q.epsilon ?? 0)) spent as rho epsilon²/2") }
        details.append("discrete Gaussian")
        prepared.detail = details.joined(separator: "; ")
        return (prepared, rho)
    }

    /// A query under a zCDP purpose (called by `query` inside its audited block).
    func zcdpQuery(_ q: QueryRequest, budget: DPBudget, context: AuditContext) throws -> QueryResult {
        let (prepared, rho) = try prepareZCDPQuery(q, budget: budget)
        let dpq = prepared.dpq, p = prepared.purpose
        let record = context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: prepared.fields, detail: prepared.detail)
        let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
        var result: QueryResult
        do {
            result = try engine.runGaussian(dpq, rho: rho, ledgerKey: Rho.ledgerKey(purpose: p.name), rhoLimit: budget.rho ?? 0,
                                            conversionDelta: budget.conversionDelta, periodSeconds: budget.periodSeconds)
        } catch let e as BudgetExceeded {
            let s = e.state.asRho(limit: budget.rho ?? 0, conversionDelta: budget.conversionDelta)
            throw VaultError(.denied, "budget exceeded: purpose \(p.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP); this asks for rho \(rho.value); nothing was charged")
        } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
        }
        result.accuracy = q.accuracy
        result.clampBounds = prepared.bounds
        result.boundsFromQuery = q.bounds != nil
        if case .subjects = dpq.measure, q.kind == .count || q.kind == .histogram { result.clampedShare = 0 }
        return result
    }

    /// The zCDP budget state of a purpose (rho spent and left, read from its zCDP ledger row).
    func zcdpBudgetState(purpose: String, budget: DPBudget) throws -> BudgetState {
        let rhoLimit = budget.rho ?? 0
        let s = try store.budgetState(purpose: Rho.ledgerKey(purpose: purpose), limit: rhoLimit * Rho.ledgerScale, deltaLimit: 0,
                                      periodSeconds: budget.periodSeconds)
        var state = s.asRho(limit: rhoLimit, conversionDelta: budget.conversionDelta)
        state.purpose = purpose
        return state
    }

    /// `--dry-run` under a zCDP purpose (called by `quoteQuery` inside its audited block).
    func zcdpQuote(_ q: QueryRequest, budget: DPBudget, context: AuditContext) throws -> QueryQuote {
        let (prepared, rho) = try prepareZCDPQuery(q, budget: budget)
        var quote: QueryQuote
        do {
            quote = try QueryEngine.quoteGaussian(prepared.dpq, rho: rho, conversionDelta: budget.conversionDelta)
        } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: prepared.dpq.measure))
        }
        quote.budget = try zcdpBudgetState(purpose: prepared.purpose.name, budget: budget)
        quote.clampBounds = prepared.bounds
        quote.accuracy = q.accuracy
        try store.audit([context.record("query.\(q.kind.rawValue).quote", .read, purpose: q.purpose, fields: prepared.fields,
                                        detail: ([prepared.detail, "rho \(rho.value) quoted, nothing charged"].compactMap { $0 }).joined(separator: "; "))])
        return quote
    }
}
