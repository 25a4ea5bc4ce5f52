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
//   (count, sum, histogram); a mean first releases its noisy count at `meanAccuracyCountRho`
//   (`zcdpAccuracyMean`), then spends the least rho its joint interval needs.
//
// `--report-clamped C` adds rho C²/2 for the three clamped counts (Vault+Clamped.swift). An
// identical query of the same period is answered from the release cache (Vault+ReleaseCache.swift)
// at rho 0: the key holds the rho as charged and the purpose's zCDP budget.
extension Vault {
    /// The rho an accuracy-first mean's first count release spends under zCDP: the epsilon
    /// path's `meanAccuracyCountEpsilon` (0.05) as rho = 0.05²/2 = 0.00125.
    static let meanAccuracyCountRho = Rho(fromEpsilon: Vault.meanAccuracyCountEpsilon) ?? Rho(0.00125)!

    /// The purpose's zCDP budget, nil for an epsilon purpose (or an unknown one: `purpose(_:)` refuses it later).
    func zcdpBudget(_ purpose: String) -> DPBudget? {
        guard let b = policy.purpose(purpose)?.dpBudget, b.rho != nil else { return nil }
        return b
    }

    /// The rho a zCDP request spends (see the file's comment), or a usage error naming the flag;
    /// nil for a mean asked for by accuracy (its rho follows from its first count release).
    func zcdpRho(_ q: QueryRequest, _ dpq: DPQuery) throws -> Rho? {
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
        if q.kind == .mean {
            guard let a = q.accuracy, a.isFinite, a > 0 else { throw VaultError(.usage, "--accuracy: must be a positive number (in the measure's units)") }
            return nil
        }
        do {
            return try QueryEngine.rho(forAccuracy: q.accuracy ?? 0, dpq)
        } catch let e as DPParameterError {
            throw VaultError(.usage, "--accuracy: \(e.reason)")
        }
    }

    /// `prepareQuery` for a zCDP purpose: the request checked with a placeholder epsilon (the
    /// plan's coordinates do not depend on it), then its rho and the Gaussian plan checked.
    func prepareZCDPQuery(_ q: QueryRequest, budget: DPBudget) throws -> (PreparedQuery, Rho?) {
        var probe = q
        probe.epsilon = 1
        probe.accuracy = nil
        probe.rho = nil
        var prepared = try prepareQuery(probe)
        let rho = try zcdpRho(q, prepared.dpq)
        do {
            // An accuracy-first mean: the plan checked at the first count's rho (its count) and
            // at the largest rho (its coordinates); the rest after the count.
            _ = try QueryEngine.planGaussian(prepared.dpq, rho: rho ?? Rho(Rho.maximum)!)
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

    /// `--report-clamped` under zCDP, checked (nil: not asked); for an accuracy-first mean
    /// (no rho yet) only its shape, which refuses it.
    func zcdpClamped(_ q: QueryRequest, _ prepared: PreparedQuery, rho: Rho?) throws -> (clamped: Rho, total: Rho)? {
        guard q.reportClamped != nil else { return nil }
        guard let rho else {
            try checkReportClampedShape(q, prepared)
            throw VaultError(.usage, "--report-clamped: a mean asked for by --accuracy releases its count first; use --rho or --epsilon")
        }
        return try checkZCDPReportClamped(q, prepared, rho: rho)
    }

    /// A query under a zCDP purpose (called by `query` inside its audited block): checks, the
    /// release cache, then one charge of rho (plus the clamped counts' rho) and the release.
    func zcdpQuery(_ q: QueryRequest, budget: DPBudget, context: AuditContext) throws -> QueryResult {
        let (checked, rho) = try prepareZCDPQuery(q, budget: budget)
        var prepared = checked
        let clamped = try zcdpClamped(q, prepared, rho: rho)
        if let c = clamped { prepared.detail = ([prepared.detail, "clamped count rho \(c.clamped.value)"].compactMap { $0 }).joined(separator: "; ") }
        let dpq = prepared.dpq, p = prepared.purpose
        // Pay once: an identical query of this period is answered from the release cache (rho 0).
        let (slot, decision) = try lookupRelease(releaseKey(q, prepared, zcdp: (rho, clamped?.clamped)), prepared: prepared, fresh: q.fresh)
        if case let .hit(payload, at) = decision {
            var (result, report) = try StoredQueryRelease.decode(payload).result(budget: try zcdpBudgetState(purpose: p.name, budget: budget))
            result.releasedAtMillis = at
            result.clamped = report
            try recordCachedAnswer("query.\(q.kind.rawValue)", context: context, purpose: q.purpose, fields: prepared.fields,
                                   detail: prepared.detail, storedAtMillis: at)
            return result
        }
        let record = context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: prepared.fields, detail: prepared.detail)
        var result: QueryResult
        if let rho, let c = clamped {
            result = try runZCDPReportingClamped(q, prepared, rho: rho, clamped: c, budget: budget, record: record)
        } else if let rho {
            let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
            do {
                result = try engine.runGaussian(dpq, rho: rho, ledgerKey: Rho.ledgerKey(purpose: p.name), rhoLimit: budget.rho ?? 0,
                                                conversionDelta: budget.conversionDelta, periodSeconds: budget.periodSeconds)
            } catch let e as BudgetExceeded {
                let s = e.state.asRho(limit: budget.rho ?? 0, conversionDelta: budget.conversionDelta)
                throw VaultError(.denied, "budget exceeded: purpose \(p.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP); this asks for rho \(rho.value); nothing was charged")
            } catch let e as DPParameterError {
                throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
            }
        } else {
            result = try zcdpAccuracyMean(q, prepared, budget: budget, context: context, record: record)
        }
        result.accuracy = q.accuracy
        result.clampBounds = prepared.bounds
        result.boundsFromQuery = q.bounds != nil
        if case .subjects = dpq.measure, q.kind == .count || q.kind == .histogram { result.clampedShare = 0 }
        rememberRelease(StoredQueryRelease(result, clamped: result.clamped).encoded(), slot: slot, prepared: prepared, periodStart: result.budget.periodStart)
        return result
    }

    /// `query mean --accuracy A` under a zCDP purpose (docs/differential-privacy.md, "Accuracy
    /// first under zCDP"): the epsilon path's method with Gaussian noise.
    ///
    /// 1. charge rho0 = `meanAccuracyCountRho` (its own audit entry) and release the mean's
    ///    denominator per group with N_Z(0, Δ²/2rho0) (Δ the count coordinate's bound);
    /// 2. n = the smallest over the groups of (noisy count - its 95% half-width); n < 1 refuses
    ///    (exit 65, rho0 stays charged);
    /// 3. rho = `QueryEngine.meanRho`: the least rho whose Gaussian joint interval at the
    ///    worst-case mean over n counted values is at most A on each side;
    /// 4. the mean runs at rho (refused, exit 77, when it does not fit; rho0 stays charged).
    /// Both releases are zCDP with their own rho, the second chosen from the first's output:
    /// adaptive composition gives rho0 + rho, the result's `rho`.
    func zcdpAccuracyMean(_ q: QueryRequest, _ prepared: PreparedQuery, budget b: DPBudget, context: AuditContext, record: AuditRecord) throws -> QueryResult {
        let dpq = prepared.dpq, p = prepared.purpose
        let first = Self.meanAccuracyCountRho
        let a = q.accuracy ?? 0
        let rhoLimit = b.rho ?? 0
        let plan: [(Coordinate, Epsilon)]
        do { plan = try QueryEngine.plan(dpq) } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
        }
        guard plan.count == 2, let firstCharge = first.ledgerCharge else { throw VaultError(.internalFailure, "accuracy-first mean: not a mean") }
        let countCoordinate = plan[1].0
        do {
            _ = try DiscreteGaussian.forRelease(l2: countCoordinate.bound, rho: first)
        } catch let e as DPParameterError {
            throw VaultError(.usage, "--accuracy: the first count release cannot be made: \(e.reason)")
        }
        // An accuracy no store could be promised (not even at the largest rho) is refused before
        // the first release is charged.
        try Self.requireReachableMeanAccuracy { _ = try QueryEngine.meanRho(forAccuracy: a, dpq, countLowerBound: $0) }
        let firstRecord = Self.meanAccuracyFirstRecord(context, q, prepared)
        do {
            _ = try store.budgetAccountant(audit: firstRecord, policy: policyDigest)
                .spend(purpose: Rho.ledgerKey(purpose: p.name), epsilon: firstCharge, limit: rhoLimit * Rho.ledgerScale, periodSeconds: b.periodSeconds)
        } catch let e as BudgetExceeded {
            let s = e.state.asRho(limit: rhoLimit, conversionDelta: b.conversionDelta)
            throw VaultError(.denied, "budget exceeded: the first count release of an accuracy-first mean needs rho \(first.value); purpose \(p.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP); nothing was charged")
        }
        var request = AggregateRequest(consentPurpose: dpq.consentPurpose, predicates: dpq.predicates, groupBy: dpq.groupBy, coordinates: [countCoordinate])
        request.objectionPurpose = dpq.objectionPurpose
        let sums = try store.aggregateSource.boundedSums(request)
        var rng = CSPRNGWords()
        var lowest = Double.infinity
        for key in dpq.groupBy?.domain ?? [""] {
            let v = try BoundedSum.releaseGaussian(sums: [sums[key]?.first ?? 0], l2: countCoordinate.bound, rho: first, grid: 1, alpha: 0.05, using: &rng)[0]
            lowest = min(lowest, v.value - v.halfWidth)
        }
        guard lowest >= 1 else {
            throw VaultError(.invalidInput, "--accuracy: the first count release (rho \(first.value), charged) found too few values to promise this accuracy")
        }
        let rho: Rho
        do {
            rho = try QueryEngine.meanRho(forAccuracy: a, dpq, countLowerBound: lowest)
        } catch let e as DPParameterError {
            throw VaultError(.invalidInput, "--accuracy: \(e.reason) (the first count release charged rho \(first.value))")
        }
        let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
        var result: QueryResult
        do {
            result = try engine.runGaussian(dpq, rho: rho, ledgerKey: Rho.ledgerKey(purpose: p.name), rhoLimit: rhoLimit,
                                            conversionDelta: b.conversionDelta, periodSeconds: b.periodSeconds)
        } catch let e as BudgetExceeded {
            let s = e.state.asRho(limit: rhoLimit, conversionDelta: b.conversionDelta)
            throw VaultError(.denied, "budget exceeded: this accuracy needs rho \(rho.value) more after the first count release (rho \(first.value), charged); purpose \(p.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP)")
        } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
        }
        let total = rho.adding(first) ?? rho
        result.rho = total.value
        result.epsilon = Rho.epsilon(rho: total.value, delta: b.conversionDelta)
        result.accuracyCountRho = first.value
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
        let (prepared, asked) = try prepareZCDPQuery(q, budget: budget)
        guard let rho = asked else {
            throw VaultError(.usage, "--dry-run: a mean asked for by --accuracy needs a noisy count first (rho \(Self.meanAccuracyCountRho.value)); quote it with --rho or --epsilon instead")
        }
        let clamped = try zcdpClamped(q, prepared, rho: rho)
        var quote: QueryQuote
        do {
            quote = try QueryEngine.quoteGaussian(prepared.dpq, rho: rho, conversionDelta: budget.conversionDelta)
        } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: prepared.dpq.measure))
        }
        if let c = clamped {
            quote.rho = c.total.value
            quote.epsilon = Rho.epsilon(rho: c.total.value, delta: budget.conversionDelta)
        }
        quote.budget = try zcdpBudgetState(purpose: prepared.purpose.name, budget: budget)
        quote.clampBounds = prepared.bounds
        quote.accuracy = q.accuracy
        let detail = ([prepared.detail, clamped.map { "clamped count rho \($0.clamped.value)" }].compactMap { $0 }).joined(separator: "; ")
        // Answered from the release cache: the quote says so, and that it would charge rho 0.
        if case let .hit(_, at) = try lookupRelease(releaseKey(q, prepared, zcdp: (rho, clamped?.clamped)), prepared: prepared, fresh: q.fresh).decision {
            quote.cached = true
            try store.audit([context.record("query.\(q.kind.rawValue).quote", .read, purpose: q.purpose, fields: prepared.fields,
                                            detail: ([detail, "answered from the release cache (released \(AuditLog.isoMillis(at))); rho 0 quoted, nothing charged"].filter { !$0.isEmpty }).joined(separator: "; "))])
            return quote
        }
        try store.audit([context.record("query.\(q.kind.rawValue).quote", .read, purpose: q.purpose, fields: prepared.fields,
                                        detail: ([detail, "rho \(quote.rho ?? rho.value) quoted, nothing charged"].filter { !$0.isEmpty }).joined(separator: "; "))])
        return quote
    }
}
