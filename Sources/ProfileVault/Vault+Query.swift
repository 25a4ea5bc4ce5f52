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
        public var epsilon: Double
        public var attribute: String?
        public var events: String?
        public var whereClause: String?
        public var groupBy: String?
        public var maxContributions: Int
        public init(kind: QueryKind, purpose: String, epsilon: Double, attribute: String? = nil, events: String? = nil,
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

    /// Runs a DP query: gate (role, purpose, categories), budget check-and-spend with its audit
    /// entry, exact sums in SQL over consenting subjects, noise.
    public func query(_ q: QueryRequest) throws -> QueryResult {
        try audited("query.\(q.kind.rawValue)", .read, permission: "query", purpose: q.purpose) { context in
            let p = try purpose(q.purpose)
            guard let budget = p.dpBudget else {
                throw VaultError(.denied, "purpose \(q.purpose) has no dp_budget in the policy: it may not run DP queries")
            }
            guard let eps = Epsilon(q.epsilon) else {
                throw VaultError(.usage, "--epsilon: must be a number from 2^-20 (about 9.54e-07) to 1000000")
            }
            guard q.maxContributions >= 1 && q.maxContributions <= 10_000 else {
                throw VaultError(.usage, "--max-contributions must be between 1 and 10000")
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
            if let kind = q.events {
                guard let e = schema.eventKind(named: kind) else {
                    throw VaultError(.usage, "--events \(kind): not an event kind of the schema", detail: "--events: not an event kind of the schema")
                }
                guard p.mayReadEvents(e) else { throw VaultError(.denied, "purpose \(q.purpose) may not read \(kind) events (category \(e.category))") }
                measure = .events(kind: kind, lower: e.value.bounds.lowerBound, upper: e.value.bounds.upperBound,
                                  integral: e.value.type == .int, maxContributions: q.maxContributions)
                fields.append("events.\(kind)")
            } else if q.kind == .sum || q.kind == .mean {
                guard let a = q.attribute else { throw VaultError(.usage, "query \(q.kind.rawValue) needs --attribute or --events") }
                let f = try readableAttribute(a, role: "--attribute")
                guard let b = f.numericBounds, [.int, .float, .bool].contains(f.type) else {
                    throw VaultError(.usage, "--attribute \(a): not a numeric attribute with bounds")
                }
                measure = .attribute(name: a, lower: b.lowerBound, upper: b.upperBound, integral: f.type != .float)
                fields.append(a)
            } else if let a = q.attribute, q.kind == .count {
                _ = try readableAttribute(a, role: "--attribute")   // count counts subjects; the attribute only has to be readable
            }
            var dpq = DPQuery(kind: q.kind, measure: measure, consentPurpose: p.legalBasis == .consent ? p.name : nil,
                              predicates: predicates, groupBy: groupBy, epsilon: eps)
            dpq.objectionPurpose = Self.objectionPurpose(p)
            // Everything the release needs is checked before the budget is charged.
            do {
                _ = try QueryEngine.plan(dpq)
            } catch let e as DPParameterError {
                throw VaultError(.usage, Self.queryParameterMessage(e, measure: measure))
            }
            // The entry names each condition's attribute and operator, never its value (a
            // `where` may hold anything a caller typed).
            let record = context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: fields,
                                        detail: predicates.isEmpty ? nil : Self.whereDetail(predicates))
            let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
            do {
                return try engine.run(dpq, purpose: p.name, limit: budget.epsilon, periodSeconds: budget.periodSeconds)
            } catch let e as BudgetExceeded {
                throw VaultError(.denied, "budget exceeded: \(e.description)")
            }
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
            return try store.budgetState(purpose: name, limit: b.epsilon, deltaLimit: b.delta, periodSeconds: b.periodSeconds)
        }
    }
}
