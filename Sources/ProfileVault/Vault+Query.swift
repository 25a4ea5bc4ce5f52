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

    /// Parses `--where`: comma-separated conditions joined by AND, `attr OP value` with OP one of
    /// `= != < <= > >=`, e.g. `country=DE,age>=30,age<50`. A malformed condition or unknown
    /// attribute is a usage error (exit 64); a PII field is refused by policy (exit 77).
    public static func parseWhere(_ text: String, schema: Schema) throws -> [WhereCondition] {
        var out: [WhereCondition] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
            let cond = raw.trimmingCharacters(in: .whitespaces)
            guard !cond.isEmpty else { throw VaultError(.usage, "--where \(text): empty condition") }
            guard let opStart = cond.firstIndex(where: { "=!<>".contains($0) }) else {
                throw VaultError(.usage, "--where condition \"\(cond)\": expected attribute, operator (= != < <= > >=) and value")
            }
            let name = cond[..<opStart].trimmingCharacters(in: .whitespaces)
            var rest = cond[opStart...]
            let op: WhereCondition.Op
            if let o = [WhereCondition.Op.le, .ge, .ne].first(where: { rest.hasPrefix($0.rawValue) }) { op = o } else if let o = [WhereCondition.Op.eq, .lt, .gt].first(where: { rest.hasPrefix($0.rawValue) }) { op = o } else {
                throw VaultError(.usage, "--where condition \"\(cond)\": unknown operator")
            }
            rest = rest.dropFirst(op.rawValue.count)
            let valueText = rest.trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, !valueText.isEmpty, !valueText.contains(where: { "=!<>".contains($0) }) else {
                throw VaultError(.usage, "--where condition \"\(cond)\": expected attribute, operator (= != < <= > >=) and value")
            }
            guard let field = schema.field(named: name) else {
                throw VaultError(.usage, "--where condition \"\(cond)\": \(name) is not a field of the schema")
            }
            if field.pii { throw VaultError(.denied, "--where \(name): PII fields are never used in aggregates") }
            let value: WhereCondition.Value
            switch field.type {
            case .int:
                guard let i = Int64(valueText) else { throw VaultError(.usage, "--where condition \"\(cond)\": \(name) is an integer") }
                value = .int(i)
            case .float:
                guard let d = Double(valueText), d.isFinite else { throw VaultError(.usage, "--where condition \"\(cond)\": \(name) is a number") }
                value = .real(d)
            case .bool:
                guard let b = ["true": 1, "false": 0, "1": 1, "0": 0][valueText.lowercased()] else { throw VaultError(.usage, "--where condition \"\(cond)\": \(name) is true or false") }
                value = .int(Int64(b))
            case .date:
                guard let d = DateParsing.days(fromISODate: Substring(valueText)) else { throw VaultError(.usage, "--where condition \"\(cond)\": \(name) is a date YYYY-MM-DD") }
                value = .int(Int64(d))
            case .category:
                guard field.domain?.contains(valueText) == true else {
                    throw VaultError(.usage, "--where condition \"\(cond)\": \(valueText.prefix(40)) is not in the domain of \(name) (\(field.domain?.joined(separator: ", ") ?? ""))")
                }
                if op != .eq && op != .ne { throw VaultError(.usage, "--where condition \"\(cond)\": a category compares with = or != only") }
                value = .text(valueText)
            case .string:
                value = .text(valueText)
            }
            out.append(WhereCondition(attribute: name, op: op, value: value))
        }
        return out
    }

    /// Runs a DP query: gate (role, purpose, categories), budget check-and-spend with its audit
    /// entry, exact sums in SQL over consenting subjects, noise.
    public func query(_ q: QueryRequest) throws -> QueryResult {
        try audited("query.\(q.kind.rawValue)", .read, permission: "query", purpose: q.purpose) { context in
            let p = try purpose(q.purpose)
            guard let budget = p.dpBudget else {
                throw VaultError(.denied, "purpose \(q.purpose) has no dp_budget in \(policy.file): it may not run DP queries")
            }
            guard let eps = Epsilon(q.epsilon) else {
                throw VaultError(.usage, "--epsilon \(q.epsilon): must be a positive number (at least 2^-20)")
            }
            guard q.maxContributions >= 1 && q.maxContributions <= 10_000 else {
                throw VaultError(.usage, "--max-contributions must be between 1 and 10000")
            }
            func readableAttribute(_ name: String, role: String) throws -> FieldSpec {
                guard let f = schema.field(named: name) else { throw VaultError(.usage, "\(role) \(name): not a field of the schema") }
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
                guard let e = schema.eventKind(named: kind) else { throw VaultError(.usage, "--events \(kind): not an event kind of the schema") }
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
            let dpq = DPQuery(kind: q.kind, measure: measure, consentPurpose: p.legalBasis == .consent ? p.name : nil,
                              predicates: predicates, groupBy: groupBy, epsilon: eps)
            let record = context.record("query.\(q.kind.rawValue)", .read, purpose: q.purpose, fields: fields,
                                        detail: q.whereClause.map { "where \($0)" })
            let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record))
            do {
                return try engine.run(dpq, purpose: p.name, limit: budget.epsilon, periodSeconds: budget.periodSeconds)
            } catch let e as BudgetExceeded {
                throw VaultError(.denied, "budget exceeded: \(e.description)")
            }
        }
    }

    /// Budget spent and left per purpose with a dp_budget.
    public func budgetStatus() throws -> [BudgetState] {
        try require("query")
        return try policy.purposeOrder.compactMap { name -> BudgetState? in
            guard let b = policy.purpose(name)?.dpBudget else { return nil }
            return try store.budgetState(purpose: name, limit: b.epsilon, periodSeconds: b.periodSeconds)
        }
    }
}
