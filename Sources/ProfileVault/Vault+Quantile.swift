import Foundation
public import DifferentialPrivacy
public import VaultStore
import VaultValues
import VaultAudit
import VaultPolicy

/// `query quantile` (issue 23): quantiles of a numeric attribute by the exponential mechanism
/// over its bounded domain (`QuantileMechanism`; proof in docs/differential-privacy.md).
extension Vault {
    public struct QuantileRequest: Sendable {
        public var purpose: String
        /// The epsilon to spend (under a zCDP purpose: rho = epsilon²/2); nil with `rho`.
        public var epsilon: Double?
        /// `--rho R`: the rho to spend under a zCDP purpose (refused under an epsilon purpose).
        public var rho: Double? = nil
        public var attribute: String
        /// The quantiles, each in [0, 1] (at most 20); the epsilon (or rho) is split evenly among them.
        public var quantiles: [Double]
        public var whereClause: String?
        public var groupBy: String?
        /// `--bounds LO,HI` (LO < HI, inside the schema's): the domain the values are clamped to.
        public var bounds: (lower: Double, upper: Double)?
        /// `--dry-run`: quote, charge nothing, read nothing.
        public var dryRun = false
        /// `--fresh`: do not answer from the release cache (Vault+ReleaseCache.swift).
        public var fresh = false
        public init(purpose: String, epsilon: Double?, attribute: String, quantiles: [Double], whereClause: String? = nil,
                    groupBy: String? = nil, bounds: (lower: Double, upper: Double)? = nil) {
            self.purpose = purpose
            self.epsilon = epsilon
            self.attribute = attribute
            self.quantiles = quantiles
            self.whereClause = whereClause
            self.groupBy = groupBy
            self.bounds = bounds
        }
    }

    public struct QuantileResult: Sendable {
        public var quantiles: [Double]
        /// Per group key ("" when ungrouped), one released value per quantile; empty for a dry run.
        public var values: [(key: String, values: [Double])]
        public var grouped: Bool
        /// The epsilon charged (or quoted) and each quantile's share; under a zCDP purpose
        /// `epsilon` is the (epsilon, delta) conversion of `rho` at `conversionDelta`, and
        /// `epsilonPerQuantile` the exponential mechanism's epsilon of each quantile.
        public var epsilon: Double
        public var epsilonPerQuantile: Double
        public var bins: Int
        public var binWidth: Double
        public var bounds: (lower: Double, upper: Double)
        public var boundsFromQuery: Bool
        /// The 95% bound on the released cell's rank error (`QuantileMechanism.rankError`), in values.
        public var rankError95: Double
        public var budget: BudgetState
        public var dryRun: Bool
        /// Answered from the release cache at no cost (a dry run: would be), and when the
        /// stored release was made.
        public var cached = false
        public var releasedAtMillis: Int64? = nil
        /// Per group, the released cell index of each quantile (`query bounds` rounds to its edges).
        public var cells: [[Int]] = []
        /// zCDP purpose: the rho charged (or quoted) and the delta of the conversion (nil otherwise).
        public var rho: Double? = nil
        public var conversionDelta: Double? = nil
    }

    /// Most quantiles one query may ask for.
    public static let maxQuantiles = 20

    /// Releases the quantiles (or quotes them with `dryRun`): every check of a sum of the
    /// attribute (purpose, role, fields, where, group-by, epsilon, bounds) and the quantiles' own
    /// (each in [0, 1], at most 20, epsilon / k at least 2^-20, LO < HI) before anything is
    /// charged; then one charge of epsilon, per group one exact cell histogram, and one draw of
    /// the exponential mechanism per quantile with epsilon / k. Audited as `query.quantile`
    /// (a dry run as `query.quantile.quote`).
    public func quantile(_ r: QuantileRequest) throws -> QuantileResult {
        try quantileRelease(r, name: "query.quantile")
    }

    /// `quantile` under the audit action `name` (`query.quantile`, `query.bounds`).
    func quantileRelease(_ r: QuantileRequest, name: String) throws -> QuantileResult {
        let action = r.dryRun ? name + ".quote" : name
        return try audited(action, .read, permission: "query", purpose: r.purpose) { context in
            guard !r.quantiles.isEmpty, r.quantiles.count <= Self.maxQuantiles else {
                throw VaultError(.usage, "--q: give 1 to \(Self.maxQuantiles) quantiles, each from 0 to 1")
            }
            var qUnits: [UInt64] = []
            for q in r.quantiles {
                guard let u = try? QuantileMechanism.units(q: q) else { throw VaultError(.usage, "--q: each quantile must be a number from 0 to 1") }
                qUnits.append(u)
            }
            // Under a zCDP purpose the request is checked with a placeholder epsilon (nothing
            // in the plan depends on it) and spends rho (`quantileRho`).
            let zcdp = zcdpBudget(r.purpose)
            if zcdp == nil, r.rho != nil { throw VaultError(.usage, "--rho: purpose \(r.purpose) accounts in epsilon, not zCDP; give --epsilon") }
            if zcdp == nil, r.epsilon == nil { throw VaultError(.usage, "query: give --epsilon") }
            var carrier = QueryRequest(kind: .sum, purpose: r.purpose, epsilon: zcdp == nil ? r.epsilon : 1, attribute: r.attribute,
                                       whereClause: r.whereClause, groupBy: r.groupBy)
            carrier.bounds = r.bounds
            var prepared = try prepareQuery(carrier)
            guard case let .attribute(attribute, lo, hi, integral) = prepared.dpq.measure else {
                throw VaultError(.usage, "query quantile needs --attribute (a numeric attribute)")
            }
            guard lo < hi else { throw VaultError(.usage, "--bounds: a quantile needs LO < HI") }
            let share: Epsilon
            var zrho: (total: Rho, budget: DPBudget)?
            if let z = zcdp {
                let (total, perQuantile) = try quantileRho(r, budget: z)
                share = perQuantile
                zrho = (total, z)
                prepared.detail = ([prepared.detail, "epsilon \(perQuantile.noiseValue) per quantile spent as rho epsilon²/2"].compactMap { $0 }).joined(separator: "; ")
            } else {
                guard let s = prepared.dpq.epsilon.split(r.quantiles.count) else {
                    throw VaultError(.usage, "--epsilon: each of the \(r.quantiles.count) quantiles gets epsilon / \(r.quantiles.count), which must be at least 2^-20")
                }
                share = s
            }
            let bins = QuantileMechanism.bins(lower: lo, upper: hi, integral: integral)
            // Cells of a subnormal (or zero) width have edges that underflow: a released value
            // could lie outside [LO, HI].
            guard (hi - lo).isFinite, ((hi - lo) / Double(bins)).isNormal else {
                throw VaultError(.usage, "--bounds: LO and HI are too close together to split into \(bins) cells")
            }
            let oneCellPerInteger = integral && Double(bins) == hi - lo + 1
            let detail = ([prepared.detail, "q " + r.quantiles.map { Self.number($0) }.joined(separator: ", ")].compactMap { $0 }).joined(separator: "; ")
            var result = QuantileResult(quantiles: r.quantiles, values: [], grouped: r.groupBy != nil,
                                        epsilon: zrho.map { Rho.epsilon(rho: $0.total.value, delta: $0.budget.conversionDelta) } ?? prepared.dpq.epsilon.chargedValue,
                                        epsilonPerQuantile: share.noiseValue, bins: bins,
                                        binWidth: oneCellPerInteger ? 1 : (hi - lo) / Double(bins), bounds: (lo, hi), boundsFromQuery: r.bounds != nil,
                                        rankError95: QuantileMechanism.rankError(epsilon: share, bins: bins),
                                        budget: BudgetState(purpose: r.purpose, limit: prepared.limit, spent: 0, periodStart: 0), dryRun: r.dryRun)
            result.rho = zrho?.total.value
            result.conversionDelta = zrho?.budget.conversionDelta
            /// The budget as it stands (rho under a zCDP purpose).
            func budgetNow() throws -> BudgetState {
                if let z = zrho { return try zcdpBudgetState(purpose: prepared.purpose.name, budget: z.budget) }
                return try store.budgetState(purpose: prepared.purpose.name, limit: prepared.limit, deltaLimit: prepared.deltaLimit,
                                             periodSeconds: prepared.periodSeconds)
            }
            let quoted = zrho.map { "rho \($0.total.value) (epsilon \(result.epsilon) at delta \($0.budget.conversionDelta))" } ?? "epsilon \(result.epsilon)"
            // Pay once: an identical release of this period is answered from the release cache.
            var key = ReleaseKey()
            key.add("kind", name)
            key.add(prepared)
            key.add("quantiles", Int64(qUnits.count))
            for u in qUnits { key.add("q_units", Int64(clamping: u)) }
            if let z = zrho {
                key.add("rho_units", Int64(clamping: z.total.units))
            } else {
                key.add("epsilon_units", Int64(clamping: prepared.dpq.epsilon.chargeUnits))
            }
            key.add("bounds_from_query", r.bounds != nil)
            let (slot, decision) = try lookupRelease(key, prepared: prepared, fresh: r.fresh)
            if case let .hit(payload, at) = decision {
                let stored = try StoredQuantileRelease.decode(payload, quantiles: r.quantiles.count)
                result.budget = try budgetNow()
                result.cached = true
                result.releasedAtMillis = at
                if r.dryRun {
                    try store.audit([context.record(action, .read, purpose: r.purpose, fields: prepared.fields,
                                                    detail: detail + "; answered from the release cache (released \(AuditLog.isoMillis(at))); \(zrho == nil ? "epsilon" : "rho") 0 quoted, nothing charged")])
                    return result
                }
                result.values = zip(stored.keys, stored.values).map { (key: $0.0, values: $0.1) }
                result.cells = stored.cells
                try recordCachedAnswer(action, context: context, purpose: r.purpose, fields: prepared.fields, detail: detail, storedAtMillis: at)
                return result
            }
            if r.dryRun {
                result.budget = try budgetNow()
                try store.audit([context.record(action, .read, purpose: r.purpose, fields: prepared.fields,
                                                detail: detail + "; \(quoted) quoted, nothing charged")])
                return result
            }
            let record = context.record(action, .read, purpose: r.purpose, fields: prepared.fields, detail: detail)
            let accountant = store.budgetAccountant(audit: record, policy: policyDigest)
            do {
                if let z = zrho {
                    guard let charge = z.total.ledgerCharge else { throw VaultError(.internalFailure, "quantile rho out of the ledger's range") }
                    let rhoLimit = z.budget.rho ?? 0
                    result.budget = try accountant.spend(purpose: Rho.ledgerKey(purpose: prepared.purpose.name), epsilon: charge,
                                                         limit: rhoLimit * Rho.ledgerScale, periodSeconds: prepared.periodSeconds)
                        .asRho(limit: rhoLimit, conversionDelta: z.budget.conversionDelta)
                    result.budget.purpose = prepared.purpose.name
                } else {
                    result.budget = try accountant.spend(purpose: prepared.purpose.name, epsilon: prepared.dpq.epsilon, limit: prepared.limit,
                                                         periodSeconds: prepared.periodSeconds)
                }
            } catch let e as BudgetExceeded {
                if let z = zrho {
                    let st = e.state.asRho(limit: z.budget.rho ?? 0, conversionDelta: z.budget.conversionDelta)
                    throw VaultError(.denied, "budget exceeded: purpose \(prepared.purpose.name) has rho \(Self.number(st.left)) of \(Self.number(st.limit)) left in this period (zCDP); this asks for rho \(z.total.value); nothing was charged")
                }
                throw VaultError(.denied, "budget exceeded: \(e.description)")
            }
            let source = store.aggregateSource
            let feature = ScaledFeature(name: attribute, lower: lo, upper: hi)
            var rng = CSPRNGWords()
            for key in prepared.dpq.groupBy?.domain ?? [""] {
                var predicates = prepared.dpq.predicates
                if let g = prepared.dpq.groupBy { predicates.append(WhereCondition(attribute: g.attribute, op: .eq, value: .text(key))) }
                var request = AggregateRequest(consentPurpose: prepared.dpq.consentPurpose, predicates: predicates, grouping: .cell(features: [feature], bins: bins),
                                               coordinates: [.subjects])
                request.objectionPurpose = prepared.dpq.objectionPurpose
                let sums = try source.boundedSums(request)
                let counts = (0..<bins).map { sums[String($0)]?.first ?? 0 }
                var values: [Double] = []
                var cells: [Int] = []
                for u in qUnits {
                    let j = try QuantileMechanism.sample(counts: counts, qUnits: u, epsilon: share, using: &rng)
                    values.append(QuantileMechanism.value(bin: j, bins: bins, lower: lo, upper: hi, integral: integral))
                    cells.append(j)
                }
                result.values.append((key, values))
                result.cells.append(cells)
            }
            rememberRelease(StoredQuantileRelease(keys: result.values.map(\.key), values: result.values.map(\.values), cells: result.cells).encoded(),
                            slot: slot, prepared: prepared, periodStart: result.budget.periodStart)
            return result
        }
    }
}

extension Vault {
    /// The rho a quantile (or `query bounds`) release spends under a zCDP purpose, and the
    /// exponential mechanism's epsilon for each of its k quantiles (docs/differential-privacy.md,
    /// "Quantiles under zCDP"). Exactly one of `--rho R` and `--epsilon E` (rho = E²/2); the
    /// rho is split in k equal shares of whole 2^-30 units, each quantile runs the exponential
    /// mechanism at the largest grid epsilon e with e²/2 <= its share (`Rho.pureEpsilon`), and
    /// the charge is the k shares' sum (at most the rho asked for). Checked before any charge.
    func quantileRho(_ r: QuantileRequest, budget: DPBudget) throws -> (total: Rho, perQuantile: Epsilon) {
        let k = r.quantiles.count
        let asked: Rho
        switch (r.rho, r.epsilon) {
        case (nil, nil): throw VaultError(.usage, "query: purpose \(r.purpose) accounts in zCDP: give --rho or --epsilon")
        case (.some, .some): throw VaultError(.usage, "query: give one of --rho and --epsilon")
        case let (rho?, nil):
            guard let x = Rho(rho) else { throw VaultError(.usage, "--rho: must be a number from 2^-30 (about 9.3e-10) to \(Self.number(Rho.maximum))") }
            asked = x
        case let (nil, e?):
            guard let x = Rho(fromEpsilon: e) else {
                throw VaultError(.usage, "--epsilon: under a zCDP purpose it spends rho = epsilon²/2, which must be from 2^-30 to \(Self.number(Rho.maximum)) (epsilon up to about 14.1)")
            }
            asked = x
        }
        guard let share = asked.split(k), let total = share.times(k), let e = share.pureEpsilon else {
            throw VaultError(.usage, "--rho: each of the \(k) quantiles gets rho / \(k), which must be at least 2^-30")
        }
        return (total, e)
    }
}

extension JSONForms {
    /// `query quantile --json` and `POST /v1/queries` with `"kind": "quantile"`.
    public static func quantile(_ r: Vault.QuantileResult) -> JSONValue {
        func list(_ values: [Double]) -> JSONValue {
            .array(zip(r.quantiles, values).map { .object([("q", .double($0.0)), ("value", num($0.1))]) })
        }
        var pairs: [(String, JSONValue)] = []
        if r.dryRun {
            pairs.append(("dry_run", .bool(true)))
        } else if r.grouped {
            pairs.append(("groups", .object(r.values.map { ($0.key, list($0.values)) })))
        } else {
            pairs.append(("quantiles", list(r.values.first?.values ?? [])))
        }
        pairs += [
            ("epsilon", .double(r.epsilon)), ("delta", .double(r.conversionDelta ?? 0)), ("epsilon_per_quantile", .double(r.epsilonPerQuantile)),
            ("mechanism", .string("exponential mechanism over a bounded domain, user-level" + (r.rho != nil ? " (epsilon-DP per quantile, charged as rho = epsilon²/2 zCDP)" : ""))),
            ("bins", .int(Int64(r.bins))), ("bin_width", num(r.binWidth)),
            ("bounds", .array([num(r.bounds.lower), num(r.bounds.upper)])), ("bounds_source", .string(r.boundsFromQuery ? "query" : "schema")),
            ("rank_error_95", num(r.rankError95)),
            ("budget_left", num(r.budget.left)), ("budget_spent", num(r.budget.spent)),
            ("cached", .bool(r.cached)), ("epsilon_charged", .double(r.cached ? 0 : r.epsilon)),
            ("clamped_share", .string("not measured")), ("warnings", .array([])),
        ]
        pairs += zcdpPairs(rho: r.rho, conversionDelta: r.conversionDelta, cached: r.cached)
        if let t = r.releasedAtMillis { pairs.append(("released_at", isoMillis(t))) }
        return .object(pairs)
    }

    /// A quantile or bounds release under a zCDP purpose (whose `epsilon` and `delta` are the
    /// conversion of rho at the purpose's delta): rho, what this answer charged in rho (0 from
    /// the release cache), the budget's unit and the conversion's delta.
    static func zcdpPairs(rho: Double?, conversionDelta: Double?, cached: Bool) -> [(String, JSONValue)] {
        guard let rho else { return [] }
        return [("rho", .double(rho)), ("rho_charged", .double(cached ? 0 : rho)), ("budget_unit", .string("rho")),
                ("conversion_delta", .double(conversionDelta ?? 0))]
    }
}

/// A quantile (or `query bounds`) release as the release cache stores it (inside the seal).
struct StoredQuantileRelease: Codable {
    var version = 1
    var keys: [String]
    var values: [[Double]]
    var cells: [[Int]]

    init(keys: [String], values: [[Double]], cells: [[Int]]) {
        self.keys = keys
        self.values = values
        self.cells = cells
    }

    func encoded() -> [UInt8]? {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return (try? e.encode(self)).map { [UInt8]($0) }
    }

    static func decode(_ bytes: [UInt8], quantiles: Int) throws -> StoredQuantileRelease {
        guard let r = try? JSONDecoder().decode(StoredQuantileRelease.self, from: Data(bytes)), r.version == 1,
              r.keys.count == r.values.count, r.cells.count == r.values.count,
              r.values.allSatisfy({ $0.count == quantiles }), r.cells.allSatisfy({ $0.count == quantiles }) else {
            throw StoredQueryRelease.damaged()
        }
        return r
    }
}
