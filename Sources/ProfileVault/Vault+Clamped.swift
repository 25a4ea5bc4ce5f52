import Foundation
public import DifferentialPrivacy
import VaultAudit
import VaultPolicy
import VaultStore

/// `--report-clamped` (issue 23): a private measure of how much per-query `--bounds` clamped.
///
/// With the query's own bounds [LO, HI] on a numeric attribute (sum or mean, ungrouped), the
/// extra epsilon E is split in three equal parts and spent on three noisy counts over the
/// query's population (its conditions, consent, objections, restrictions): B = #{x < LO},
/// A = #{x > HI} (values the clamp changed; a value at a bound is not changed) and N = #{x not
/// null} (the values counted). Each count has sensitivity 1 (one subject is in it or not), so
/// each is (E/3)-DP with the discrete Laplace of scale 3/E, and the three compose sequentially
/// to E; the query's own release composes with them, and one charge of epsilon + E pays for the
/// whole (docs/differential-privacy.md, "Clamped share").
///
/// Reported: the clamped count C = B + A with the interval C +/- (hB + hA), and the share
/// C / max(N, 1) in [0, 1] with the interval [(C - hB - hA) / (N + hN), (C + hB + hA) / (N - hN)]
/// (cut to [0, 1]; upper 1 when N - hN <= 0), where each h is its count's half-width at
/// 1 - 0.05/3. All three counts lie within their half-widths with probability at least 95%
/// (union bound), and then the true count and the true share lie in the intervals.
extension Vault {
    /// The default extra epsilon of `--report-clamped`.
    public static let defaultClampedEpsilon = 0.1

    /// The extra epsilon `q` asks for, checked (nil: not asked). Refused (usage) unless the
    /// query is an ungrouped sum or mean of an attribute with its own `--bounds`, asked for by
    /// `--epsilon` or (a sum) `--accuracy`.
    func checkReportClamped(_ q: QueryRequest, _ prepared: PreparedQuery) throws -> Epsilon? {
        guard let e = q.reportClamped else { return nil }
        try checkReportClampedShape(q, prepared)
        guard let eps = Epsilon(e), eps.split(3) != nil else {
            throw VaultError(.usage, "--clamped-epsilon: must be a number from 3 * 2^-20 to 1000000 (it is split over three counts)")
        }
        let (_, overflow) = prepared.dpq.epsilon.chargeUnits.addingReportingOverflow(eps.chargeUnits)
        guard !overflow, Epsilon(Double(prepared.dpq.epsilon.chargeUnits + eps.chargeUnits) / Double(Epsilon.unitsPerOne)) != nil else {
            throw VaultError(.usage, "--clamped-epsilon: epsilon plus the clamped count's epsilon must be at most 1000000")
        }
        return eps
    }

    /// What `--report-clamped` needs whatever the accounting: an ungrouped sum or mean of an
    /// attribute with its own `--bounds`, not a mean asked for by `--accuracy`.
    func checkReportClampedShape(_ q: QueryRequest, _ prepared: PreparedQuery) throws {
        guard q.kind == .sum || q.kind == .mean, case .attribute = prepared.dpq.measure else {
            throw VaultError(.usage, "--report-clamped: only for a sum or mean of an --attribute")
        }
        guard q.bounds != nil else {
            throw VaultError(.usage, "--report-clamped: give --bounds LO,HI (the schema's bounds clamp nothing: ingest refuses values outside them)")
        }
        guard q.groupBy == nil else { throw VaultError(.usage, "--report-clamped: not with --group-by") }
        if q.accuracy != nil && q.kind == .mean {
            throw VaultError(.usage, "--report-clamped: a mean asked for by --accuracy releases its count first; use --epsilon")
        }
    }

    /// The query and its clamped counts under one charge of epsilon + E (audited by `record`).
    func runReportingClamped(_ q: QueryRequest, _ prepared: PreparedQuery, clampedEpsilon c: Epsilon, record: AuditRecord) throws -> QueryResult {
        let dpq = prepared.dpq
        guard case let .attribute(name, lo, hi, _) = dpq.measure, let third = c.split(3),
              let field = schema.field(named: name) else { throw VaultError(.internalFailure, "report-clamped: not an attribute query") }
        let plan: [(Coordinate, Epsilon)]
        do { plan = try QueryEngine.plan(dpq) } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
        }
        guard let total = Epsilon(Double(dpq.epsilon.chargeUnits + c.chargeUnits) / Double(Epsilon.unitsPerOne)) else {
            throw VaultError(.usage, "--clamped-epsilon: epsilon plus the clamped count's epsilon must be at most 1000000")
        }
        let accountant = store.budgetAccountant(audit: record, policy: policyDigest)
        let budget: BudgetState
        do {
            budget = try accountant.spend(purpose: prepared.purpose.name, epsilon: total, limit: prepared.limit, periodSeconds: prepared.periodSeconds)
        } catch let e as BudgetExceeded {
            if let a = q.accuracy {
                throw VaultError(.denied, "budget exceeded: --accuracy \(Self.number(a)) needs epsilon \(dpq.epsilon.chargedValue) and --report-clamped \(c.chargedValue); \(e.description); nothing was charged")
            }
            throw VaultError(.denied, "budget exceeded: \(e.description)")
        }
        let source = store.aggregateSource
        var request = AggregateRequest(consentPurpose: dpq.consentPurpose, predicates: dpq.predicates, groupBy: dpq.groupBy, coordinates: plan.map(\.0))
        request.objectionPurpose = dpq.objectionPurpose
        var rng = CSPRNGWords()
        var result = try QueryEngine.release(dpq, plan: plan, sums: try source.boundedSums(request), budget: budget, using: &rng)
        result.epsilon = total.chargedValue
        result.accuracy = q.accuracy
        result.clampBounds = prepared.bounds
        result.boundsFromQuery = true
        let (below, above, n) = try clampedCounts(dpq, attribute: name, lower: lo, upper: hi, integral: field.type != .float) { exact in
            try BoundedSum.release(sums: [exact], bound: 1, epsilon: third, grid: 1, alpha: 0.05 / 3, using: &rng)[0]
        }
        result.clamped = Self.clampedReport(below: below, above: above, counted: n, epsilon: c.chargedValue)
        result.clampedShare = result.clamped?.share
        return result
    }

    /// The three exact counts B, A, N of the query's population (see the type's comment), each
    /// released by `noise`.
    func clampedCounts(_ dpq: DPQuery, attribute name: String, lower lo: Double, upper hi: Double, integral: Bool,
                       noise: (Int64) throws -> NoisyValue) throws -> (below: NoisyValue, above: NoisyValue, counted: NoisyValue) {
        let source = store.aggregateSource
        // x < LO and x > HI as the conditions the where parser makes: an integer attribute
        // compares with integers (x < ceil(LO), x > floor(HI)), a float one with the bounds.
        func bound(_ x: Double, up: Bool) -> WhereCondition.Value {
            guard integral else { return .real(x) }
            let r = up ? x.rounded(.up) : x.rounded(.down)
            return Int64(exactly: r).map { .int($0) } ?? .real(x)
        }
        func count(_ extra: [WhereCondition], _ coordinate: Coordinate) throws -> NoisyValue {
            var r = AggregateRequest(consentPurpose: dpq.consentPurpose, predicates: dpq.predicates + extra, groupBy: nil, coordinates: [coordinate])
            r.objectionPurpose = dpq.objectionPurpose
            return try noise(try source.boundedSums(r)[""]?.first ?? 0)
        }
        let below = try count([WhereCondition(attribute: name, op: .lt, value: bound(lo, up: true))], .subjects)
        let above = try count([WhereCondition(attribute: name, op: .gt, value: bound(hi, up: false))], .subjects)
        let n = try count([], .nonNull(attribute: name))
        return (below, above, n)
    }

    /// `--report-clamped C` under a zCDP purpose: the rho it adds, rho_c = C²/2 (the same rule
    /// as `--epsilon` there), checked with the query's rho (nil: not asked). Usage errors as
    /// `checkReportClamped`'s, and when rho_c / 2 is below 2^-30 or rho + rho_c above 100.
    func checkZCDPReportClamped(_ q: QueryRequest, _ prepared: PreparedQuery, rho: Rho) throws -> (clamped: Rho, total: Rho)? {
        guard let c = q.reportClamped else { return nil }
        try checkReportClampedShape(q, prepared)
        guard let rc = Rho(fromEpsilon: c), rc.split(2) != nil else {
            throw VaultError(.usage, "--clamped-epsilon: under a zCDP purpose it spends rho = epsilon²/2, which must be from 2^-29 to \(Self.number(Rho.maximum))")
        }
        guard let total = rho.adding(rc) else {
            throw VaultError(.usage, "--clamped-epsilon: the query's rho plus the clamped counts' rho (epsilon²/2) must be at most \(Self.number(Rho.maximum))")
        }
        return (rc, total)
    }

    /// The query and its clamped counts under a zCDP purpose, one charge of rho + rho_c on the
    /// purpose's zCDP row (audited by `record`). The three counts (B, A, N) are one vector of L2
    /// sensitivity sqrt(2) (a subject is in at most one of B and A, and in N; docs/
    /// differential-privacy.md, "Clamped share under zCDP"), released with N_Z(0, 1/rho_c) on
    /// each coordinate: rho_c-zCDP; with the query's rho-zCDP release, rho + rho_c.
    func runZCDPReportingClamped(_ q: QueryRequest, _ prepared: PreparedQuery, rho: Rho, clamped: (clamped: Rho, total: Rho), budget b: DPBudget,
                                 record: AuditRecord) throws -> QueryResult {
        let dpq = prepared.dpq
        guard case let .attribute(name, lo, hi, _) = dpq.measure, let half = clamped.clamped.split(2), let charge = clamped.total.ledgerCharge,
              let field = schema.field(named: name) else { throw VaultError(.internalFailure, "report-clamped: not an attribute query") }
        let plan: [(Coordinate, Rho)]
        do { plan = try QueryEngine.planGaussian(dpq, rho: rho) } catch let e as DPParameterError {
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: dpq.measure))
        }
        let rhoLimit = b.rho ?? 0
        let ledger: BudgetState
        do {
            ledger = try store.budgetAccountant(audit: record, policy: policyDigest)
                .spend(purpose: Rho.ledgerKey(purpose: prepared.purpose.name), epsilon: charge, limit: rhoLimit * Rho.ledgerScale, periodSeconds: b.periodSeconds)
        } catch let e as BudgetExceeded {
            let s = e.state.asRho(limit: rhoLimit, conversionDelta: b.conversionDelta)
            throw VaultError(.denied, "budget exceeded: purpose \(prepared.purpose.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP); this asks for rho \(clamped.total.value) (the query's \(rho.value) and --report-clamped \(clamped.clamped.value)); nothing was charged")
        }
        var request = AggregateRequest(consentPurpose: dpq.consentPurpose, predicates: dpq.predicates, groupBy: dpq.groupBy, coordinates: plan.map(\.0))
        request.objectionPurpose = dpq.objectionPurpose
        var rng = CSPRNGWords()
        var result = try QueryEngine.releaseGaussian(dpq, plan: plan, rho: rho, conversionDelta: b.conversionDelta, sums: try store.aggregateSource.boundedSums(request),
                                                     budget: ledger.asRho(limit: rhoLimit, conversionDelta: b.conversionDelta), using: &rng)
        result.rho = clamped.total.value
        result.epsilon = Rho.epsilon(rho: clamped.total.value, delta: b.conversionDelta)
        result.accuracy = q.accuracy
        result.clampBounds = prepared.bounds
        result.boundsFromQuery = true
        // Sensitivity sqrt(2) as l2 1 at rho_c / 2: sigma² = 1 / (2 · rho_c / 2) = 2 / (2 · rho_c).
        let (below, above, n) = try clampedCounts(dpq, attribute: name, lower: lo, upper: hi, integral: field.type != .float) { exact in
            try BoundedSum.releaseGaussian(sums: [exact], l2: 1, rho: half, grid: 1, alpha: 0.05 / 3, using: &rng)[0]
        }
        result.clamped = Self.clampedReport(below: below, above: above, counted: n, epsilon: q.reportClamped ?? 0)
        result.clamped?.rho = clamped.clamped.value
        result.clampedShare = result.clamped?.share
        return result
    }

    /// The post-processing of the three noisy counts (see the type's comment).
    static func clampedReport(below: NoisyValue, above: NoisyValue, counted n: NoisyValue, epsilon: Double) -> ClampedReport {
        let count = below.value + above.value
        let h = below.halfWidth + above.halfWidth
        let share = min(1, max(0, count / max(n.value, 1)))
        let low = n.value + n.halfWidth > 0 ? max(0, (count - h) / (n.value + n.halfWidth)) : 0
        let high = n.value - n.halfWidth > 0 ? min(1, max(0, (count + h) / (n.value - n.halfWidth))) : 1
        return ClampedReport(epsilon: epsilon, count: count, countInterval: (max(0, count - h), max(0, count + h)),
                             share: share, shareInterval: (min(low, share), max(high, share)))
    }
}
