import Foundation
public import DifferentialPrivacy
public import VaultAudit
public import VaultPolicy
public import VaultStore

/// The DP query door (SPEC §5): every release of data to analysts and models goes through here.
extension Vault {
    /// Default cap on one subject's events per query (`--max-contributions`).
    public static let defaultMaxContributions = 10

    public struct QueryRequest: Sendable {
        public var kind: QueryKind
        public var purpose: String
        /// The epsilon to spend; nil with `accuracy` (exactly one of the two).
        public var epsilon: Double?
        public var attribute: String?
        public var events: String?
        public var whereClause: String?
        public var groupBy: String?
        public var maxContributions: Int
        /// `--accuracy A`: spend the smallest epsilon whose interval half-width at `confidence` is
        /// at most A (measure units); instead of `epsilon`.
        public var accuracy: Double? = nil
        /// `--confidence C` (default 0.95): the level of `accuracy` and of the result's `interval`.
        public var confidence: Double? = nil
        /// `--bounds LO,HI`: clamp each value to these public bounds (inside the schema's).
        public var bounds: (lower: Double, upper: Double)? = nil
        /// `--dry-run`: quote (`quoteQuery`), charge nothing.
        public var dryRun = false
        /// `--rho R`: the rho to spend under a zCDP purpose (Vault+ZCDP.swift); refused under an epsilon purpose.
        public var rho: Double? = nil
        /// `--fresh`: do not answer from the release cache; pay for a new release, which replaces
        /// the stored one (Vault+ReleaseCache.swift).
        public var fresh = false
        /// `--report-clamped`: also release the count and share of values outside `bounds`,
        /// charging this extra epsilon (sum and mean of an attribute, with `bounds`).
        public var reportClamped: Double? = nil
        public init(kind: QueryKind, purpose: String, epsilon: Double?, attribute: String? = nil, events: String? = nil,
                    whereClause: String? = nil, groupBy: String? = nil, maxContributions: Int = Vault.defaultMaxContributions) {
            self.kind = kind
            self.purpose = purpose
            self.epsilon = epsilon
            self.attribute = attribute
            self.events = events
            self.whereClause = whereClause
            self.groupBy = groupBy
            self.maxContributions = maxContributions
        }
    }

    /// Parses `--where` (see `WhereParser.parse`). A malformed condition or unknown attribute is
    /// a usage error (exit 64); a PII field is refused by policy (exit 77).
    public static func parseWhere(_ text: String, schema: Schema) throws -> [WhereCondition] {
        try WhereParser.parse(text, schema: schema)
    }

    /// The epsilon a mean asked for by accuracy spends first on its noisy count (docs/differential-privacy.md).
    public static let meanAccuracyCountEpsilon = 0.05

    /// Refuses (exit 64) an accuracy-first mean that no store could be promised, before its first
    /// count release is charged: `reachable` asks for the mean's charge (epsilon or rho) over
    /// `QueryEngine.accuracyPopulationCap` values and throws when even that is out of range.
    static func requireReachableMeanAccuracy(_ reachable: (Double) throws -> Void) throws {
        do {
            try reachable(QueryEngine.accuracyPopulationCap)
        } catch let e as DPParameterError {
            throw VaultError(.usage, "--accuracy: \(e.reason), even over \(Int(QueryEngine.accuracyPopulationCap)) values; nothing was charged")
        }
    }

    /// The audit record of an accuracy-first mean's first count release (the query's fields and
    /// detail, saying so).
    static func meanAccuracyFirstRecord(_ context: AuditContext, _ q: QueryRequest, _ prepared: PreparedQuery) -> AuditRecord {
        context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: prepared.fields,
                       detail: ([prepared.detail, "first count release of an accuracy-first mean"].compactMap { $0 }).joined(separator: "; "))
    }

    /// A query checked against schema, policy and the DP layer's parameters, not yet charged.
    struct PreparedQuery {
        var dpq: DPQuery
        var purpose: Purpose
        var limit: Double
        var deltaLimit: Double
        var periodSeconds: Int
        var fields: [String]
        var detail: String?
        var bounds: (lower: Double, upper: Double)?
    }

    /// Everything a query needs, checked before anything is charged or read: role and purpose
    /// (by the caller), numbers (epsilon xor accuracy, confidence, bounds, cap), fields, plan.
    func prepareQuery(_ q: QueryRequest) throws -> PreparedQuery {
        let p = try purpose(q.purpose)
        guard let budget = p.dpBudget else {
            throw VaultError(.denied, "purpose \(q.purpose) has no dp_budget in the policy: it may not run DP queries")
        }
        switch (q.epsilon, q.accuracy) {
        case (nil, nil): throw VaultError(.usage, "query: give --epsilon or --accuracy")
        case (.some, .some): throw VaultError(.usage, "query: give --epsilon or --accuracy, not both")
        default: break
        }
        var eps = Epsilon(1)!   // replaced below when the query is asked for by accuracy
        if let e = q.epsilon {
            guard let checked = Epsilon(e) else {
                throw VaultError(.usage, "--epsilon: must be a number from 2^-20 (about 9.54e-07) to 1000000")
            }
            eps = checked
        }
        if let a = q.accuracy, !(a.isFinite && a > 0) {
            throw VaultError(.usage, "--accuracy: must be a positive number (in the measure's units)")
        }
        let confidence = q.confidence ?? 0.95
        guard confidence >= 0.5, confidence <= 0.999999 else {
            throw VaultError(.usage, "--confidence: must be a number from 0.5 to 0.999999")
        }
        guard q.maxContributions >= 1 && q.maxContributions <= 10_000 else {
            throw VaultError(.usage, "--max-contributions must be between 1 and 10000")
        }
        if let b = q.bounds {
            guard b.lower.isFinite, b.upper.isFinite, b.lower <= b.upper else {
                throw VaultError(.usage, "--bounds: need two finite numbers LO,HI with LO <= HI")
            }
            guard q.kind == .sum || q.kind == .mean else {
                throw VaultError(.usage, "--bounds: only sum and mean clamp values (a count clamps nothing)")
            }
        }
        func readableAttribute(_ name: String, role: String) throws -> FieldSpec {
            guard let f = schema.field(named: name) else {
                throw VaultError(.usage, "\(role) \(name): not a field of the schema", detail: "\(role): not a field of the schema")
            }
            if f.pii { throw VaultError(.denied, "\(role) \(name): PII fields are never aggregated") }
            guard p.mayReadAttribute(f) else {
                throw VaultError(.denied, "purpose \(q.purpose) may not read \(name) (category \(f.category))")
            }
            return f
        }
        /// The query's bounds inside the schema's (65 naming the field), or the schema's.
        func clampBounds(_ schemaBounds: ClosedRange<Double>, field: String) throws -> (Double, Double) {
            guard let b = q.bounds else { return (schemaBounds.lowerBound, schemaBounds.upperBound) }
            guard b.lower >= schemaBounds.lowerBound, b.upper <= schemaBounds.upperBound else {
                throw VaultError(.invalidInput, "--bounds: must lie inside the schema bounds of \(field) [\(Self.number(schemaBounds.lowerBound)), \(Self.number(schemaBounds.upperBound))]",
                                 detail: "--bounds: outside the schema bounds of \(field)")
            }
            return (b.lower, b.upper)
        }
        func isInteger(_ x: Double) -> Bool { x == x.rounded() }
        var fields: [String] = []
        let predicates = try q.whereClause.map { try Vault.parseWhere($0, schema: schema) } ?? []
        for pr in predicates { _ = try readableAttribute(pr.attribute, role: "--where"); fields.append(pr.attribute) }

        var groupBy: (attribute: String, domain: [String])?
        if let g = q.groupBy ?? (q.kind == .histogram ? q.attribute : nil) {
            let f = try readableAttribute(g, role: q.groupBy != nil ? "--group-by" : "--attribute")
            guard f.type == .category, let domain = f.domain else {
                throw VaultError(.usage, "\(g) is not a categorical attribute: histograms and --group-by need a declared domain")
            }
            groupBy = (g, domain)
            fields.append(g)
        }
        if q.kind == .histogram && q.attribute == nil {
            throw VaultError(.usage, "query histogram needs --attribute (a categorical attribute)")
        }
        var measure = Measure.subjects
        var usedBounds: (lower: Double, upper: Double)?
        if let kind = q.events {
            guard let e = schema.eventKind(named: kind) else {
                throw VaultError(.usage, "--events \(kind): not an event kind of the schema", detail: "--events: not an event kind of the schema")
            }
            guard p.mayReadEvents(e) else { throw VaultError(.denied, "purpose \(q.purpose) may not read \(kind) events (category \(e.category))") }
            let (lo, hi) = try clampBounds(e.value.bounds, field: "events.\(kind)")
            measure = .events(kind: kind, lower: lo, upper: hi,
                              integral: e.value.type == .int && isInteger(lo) && isInteger(hi), maxContributions: q.maxContributions)
            if q.kind == .sum || q.kind == .mean { usedBounds = (lo, hi) }
            fields.append("events.\(kind)")
        } else if q.kind == .sum || q.kind == .mean {
            guard let a = q.attribute else { throw VaultError(.usage, "query \(q.kind.rawValue) needs --attribute or --events") }
            let f = try readableAttribute(a, role: "--attribute")
            guard let b = f.numericBounds, [.int, .float, .bool].contains(f.type) else {
                throw VaultError(.usage, "--attribute \(a): not a numeric attribute with bounds")
            }
            let (lo, hi) = try clampBounds(b, field: a)
            measure = .attribute(name: a, lower: lo, upper: hi, integral: f.type != .float && isInteger(lo) && isInteger(hi))
            usedBounds = (lo, hi)
            fields.append(a)
        } else if let a = q.attribute, q.kind == .count {
            _ = try readableAttribute(a, role: "--attribute")   // count counts subjects; the attribute only has to be readable
        }
        var dpq = DPQuery(kind: q.kind, measure: measure, consentPurpose: p.legalBasis == .consent ? p.name : nil,
                          predicates: predicates, groupBy: groupBy, epsilon: eps)
        dpq.objectionPurpose = Self.objectionPurpose(p)
        dpq.confidence = confidence
        // Everything the release needs is checked before the budget is charged.
        do {
            _ = try QueryEngine.plan(dpq)
            if let a = q.accuracy, q.kind != .mean {
                dpq.epsilon = try QueryEngine.epsilon(forAccuracy: a, dpq)
            }
        } catch let e as DPParameterError {
            if e.field == "accuracy" { throw VaultError(.usage, "--accuracy: \(e.reason)") }
            throw VaultError(.usage, Self.queryParameterMessage(e, measure: measure))
        }
        // The entry names each condition's attribute and operator, never its value (a
        // `where` may hold anything a caller typed); the bounds, accuracy and confidence are
        // public parameters of the release.
        var details: [String] = []
        if !predicates.isEmpty { details.append(Self.whereDetail(predicates)) }
        if let b = q.bounds { details.append("bounds [\(Self.number(b.lower)), \(Self.number(b.upper))]") }
        if let a = q.accuracy { details.append("accuracy \(Self.number(a)) at confidence \(Self.number(confidence))") }
        else if q.confidence != nil { details.append("confidence \(Self.number(confidence))") }
        return PreparedQuery(dpq: dpq, purpose: p, limit: budget.epsilon, deltaLimit: budget.delta, periodSeconds: budget.periodSeconds,
                             fields: fields, detail: details.isEmpty ? nil : details.joined(separator: "; "), bounds: usedBounds)
    }

    /// A number as the messages and audit details print it (`%g`-like, shortest exact form).
    static func number(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : "\(x)" }

    /// Runs a DP query: gate (role, purpose, categories), budget check-and-spend with its audit
    /// entry, exact sums in SQL over consenting subjects, noise. A request with `dryRun` is
    /// refused here (usage): it is `quoteQuery`'s.
    public func query(_ q: QueryRequest) throws -> QueryResult {
        try audited("query.\(q.kind.rawValue)", .read, permission: "query", purpose: q.purpose) { context in
            guard !q.dryRun else { throw VaultError(.usage, "query: a dry run is a quote (quoteQuery); nothing was run") }
            if let z = zcdpBudget(q.purpose) { return try zcdpQuery(q, budget: z, context: context) }
            if q.rho != nil { throw VaultError(.usage, "--rho: purpose \(q.purpose) accounts in epsilon, not zCDP; give --epsilon") }
            var prepared = try prepareQuery(q)
            let clampedEpsilon = try checkReportClamped(q, prepared)
            if let c = clampedEpsilon { prepared.detail = ([prepared.detail, "clamped count epsilon \(c.chargedValue)"].compactMap { $0 }).joined(separator: "; ") }
            // Pay once: an identical query of this period is answered from the release cache.
            let (slot, decision) = try lookupRelease(releaseKey(q, prepared), prepared: prepared, fresh: q.fresh)
            if case let .hit(payload, at) = decision {
                let budget = try store.budgetState(purpose: prepared.purpose.name, limit: prepared.limit, deltaLimit: prepared.deltaLimit,
                                                   periodSeconds: prepared.periodSeconds)
                var (result, clamped) = try StoredQueryRelease.decode(payload).result(budget: budget)
                result.releasedAtMillis = at
                result.clamped = clamped
                try recordCachedAnswer("query.\(q.kind.rawValue)", context: context, purpose: q.purpose, fields: prepared.fields,
                                       detail: prepared.detail, storedAtMillis: at)
                return result
            }
            let dpq = prepared.dpq, p = prepared.purpose
            let record = context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: prepared.fields, detail: prepared.detail)
            if let c = clampedEpsilon {
                var result = try runReportingClamped(q, prepared, clampedEpsilon: c, record: record)
                rememberRelease(StoredQueryRelease(result, clamped: result.clamped).encoded(), slot: slot, prepared: prepared,
                                periodStart: result.budget.periodStart)
                result.cached = false
                return result
            }
            let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
            var result: QueryResult
            do {
                if let a = q.accuracy, q.kind == .mean {
                    guard let first = Epsilon(Self.meanAccuracyCountEpsilon) else { throw VaultError(.internalFailure, "mean accuracy epsilon") }
                    try Self.requireReachableMeanAccuracy { _ = try QueryEngine.meanEpsilon(forAccuracy: a, dpq, countLowerBound: $0) }
                    let firstRecord = Self.meanAccuracyFirstRecord(context, q, prepared)
                    var rng = CSPRNGWords()
                    result = try engine.runMean(forAccuracy: a, dpq, first: first,
                                                firstAccountant: store.budgetAccountant(audit: firstRecord, policy: policyDigest),
                                                purpose: p.name, limit: prepared.limit, periodSeconds: prepared.periodSeconds, using: &rng)
                } else {
                    result = try engine.run(dpq, purpose: p.name, limit: prepared.limit, periodSeconds: prepared.periodSeconds)
                    result.accuracy = q.accuracy
                }
            } catch let e as BudgetExceeded {
                if q.accuracy != nil && q.kind == .mean {
                    throw VaultError(.denied, "budget exceeded: the first count release of an accuracy-first mean needs epsilon \(Self.meanAccuracyCountEpsilon); \(e.description); nothing was charged")
                }
                if let a = q.accuracy {
                    throw VaultError(.denied, "budget exceeded: --accuracy \(Self.number(a)) at confidence \(Self.number(dpq.confidence)) needs epsilon \(dpq.epsilon.chargedValue); \(e.description); nothing was charged")
                }
                throw VaultError(.denied, "budget exceeded: \(e.description)")
            } catch let e as MeanAccuracyRefused {
                if let b = e.budget { throw VaultError(.denied, "budget exceeded: \(e.reason); \(b.description)") }
                throw VaultError(.invalidInput, "--accuracy: \(e.reason)")
            }
            result.clampBounds = prepared.bounds
            result.boundsFromQuery = q.bounds != nil
            if case .subjects = dpq.measure, q.kind == .count || q.kind == .histogram { result.clampedShare = 0 }
            rememberRelease(StoredQueryRelease(result, clamped: nil).encoded(), slot: slot, prepared: prepared, periodStart: result.budget.periodStart)
            return result
        }
    }

    /// `--dry-run`: what the query would charge (epsilon, delta 0), its noise scale and interval
    /// half-width, and whether it fits the budget left. Checks everything `query` checks, reads
    /// no data, charges nothing, and is audited as a quote (`query.KIND.quote`).
    public func quoteQuery(_ q: QueryRequest) throws -> QueryQuote {
        try audited("query.\(q.kind.rawValue).quote", .read, permission: "query", purpose: q.purpose) { context in
            if let z = zcdpBudget(q.purpose) { return try zcdpQuote(q, budget: z, context: context) }
            if q.rho != nil { throw VaultError(.usage, "--rho: purpose \(q.purpose) accounts in epsilon, not zCDP; give --epsilon") }
            let prepared = try prepareQuery(q)
            if q.accuracy != nil && q.kind == .mean {
                throw VaultError(.usage, "--dry-run: a mean asked for by --accuracy needs a noisy count first (epsilon \(Self.meanAccuracyCountEpsilon)); quote it with --epsilon instead")
            }
            var quote: QueryQuote
            do {
                quote = try QueryEngine.quote(prepared.dpq)
            } catch let e as DPParameterError {
                throw VaultError(.usage, Self.queryParameterMessage(e, measure: prepared.dpq.measure))
            }
            if let c = try checkReportClamped(q, prepared) { quote.epsilon += c.chargedValue }
            quote.budget = try store.budgetState(purpose: prepared.purpose.name, limit: prepared.limit, deltaLimit: prepared.deltaLimit,
                                                 periodSeconds: prepared.periodSeconds)
            quote.clampBounds = prepared.bounds
            quote.accuracy = q.accuracy
            // Answered from the release cache: the quote says so, and that it would charge 0.
            if case let .hit(_, at) = try lookupRelease(releaseKey(q, prepared), prepared: prepared, fresh: q.fresh).decision {
                quote.cached = true
                try store.audit([context.record("query.\(q.kind.rawValue).quote", .read, purpose: q.purpose, fields: prepared.fields,
                                                detail: ([prepared.detail, "answered from the release cache (released \(AuditLog.isoMillis(at))); epsilon 0 quoted, nothing charged"].compactMap { $0 }).joined(separator: "; "))])
                return quote
            }
            try store.audit([context.record("query.\(q.kind.rawValue).quote", .read, purpose: q.purpose, fields: prepared.fields,
                                            detail: ([prepared.detail, "epsilon \(quote.epsilon) quoted, nothing charged"].compactMap { $0 }).joined(separator: "; "))])
            return quote
        }
    }

    /// `where age >= ?, country = ?`: the conditions as the audit log records them.
    static func whereDetail(_ predicates: [WhereCondition]) -> String {
        "where " + predicates.map { "\($0.attribute) \($0.op.rawValue) ?" }.joined(separator: ", ")
    }

    /// A refused plan as a usage error naming the flag (the HTTP body field has the same name
    /// without the dashes): epsilon, max contributions, or the schema bounds of the measure.
    static func queryParameterMessage(_ e: DPParameterError, measure: Measure) -> String {
        switch e.field {
        case "epsilon": return "--epsilon: \(e.reason)"
        case "max_contributions": return "--max-contributions: \(e.reason)"
        default:
            switch measure {
            case let .attribute(name, _, _, _): return "--attribute \(name): its schema bounds cannot be released: \(e.reason)"
            case let .events(kind, _, _, _, _): return "--events \(kind): its schema bounds cannot be released (with --max-contributions): \(e.reason)"
            case .subjects: return "query: \(e.description)"
            }
        }
    }

    /// Budget (epsilon and delta) spent and left per purpose with a dp_budget.
    public func budgetStatus() throws -> [BudgetState] {
        try require("query")
        return try policy.purposeOrder.compactMap { name -> BudgetState? in
            guard let b = policy.purpose(name)?.dpBudget else { return nil }
            if b.rho != nil { return try zcdpBudgetState(purpose: name, budget: b) }
            return try store.budgetState(purpose: name, limit: b.epsilon, deltaLimit: b.delta, periodSeconds: b.periodSeconds)
        }
    }
}
