import Testing
import VaultPolicy

/// One invalid file and the diagnostic it must produce.
struct BadFile: Sendable, CustomTestStringConvertible {
    let label: String
    let yaml: String
    let line: Int?
    let field: String?
    let reason: String
    var testDescription: String { label }

    init(_ label: String, _ yaml: String, line: Int?, field: String?, _ reason: String) {
        self.label = label
        self.yaml = yaml
        self.line = line
        self.field = field
        self.reason = reason
    }
}

private func check(_ diagnostic: PolicyDiagnostic?, _ c: BadFile, file: String) {
    guard let d = diagnostic else {
        Issue.record("\(c.label): loaded without error")
        return
    }
    #expect(d.file == file, "\(c.label)")
    #expect(d.line == c.line, "\(c.label): \(d)")
    #expect(d.field == c.field, "\(c.label): \(d)")
    #expect(d.reason.contains(c.reason), "\(c.label): \(d)")
}

let S = Fixtures.specSchema
let P = Fixtures.specPolicy

@Suite("Schema diagnostics: file, line, field, reason")
struct SchemaDiagnosticsTests {
    static let cases: [BadFile] = [
        BadFile("unknown category", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographics.age_range, bounds: [18, 100] }"),
                line: 8, field: "fields.age.category", "unknown data category 'user.demographics.age_range'"),
        BadFile("near-miss category suggests the right one", Fixtures.schema(replacing: 11, with: "  annual_income: { type: float, category: user.financials, bounds: [0, 1] }"),
                line: 11, field: "fields.annual_income.category", "(did you mean 'user.financial'?)"),
        BadFile("unknown subject_id category", Fixtures.schema(replacing: 2, with: "subject_id: { field: customer_id, category: user.uid }"),
                line: 2, field: "subject_id.category", "unknown data category 'user.uid'"),
        BadFile("duplicate field (block mapping)", S.replacingOccurrences(of: "events:\n", with: "  age: { type: int, category: user.demographic.age_range, bounds: [0, 120] }\nevents:\n"),
                line: 12, field: "fields.age", "duplicate key 'age' (first defined at line 8)"),
        BadFile("duplicate key inside a flow mapping", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18, 100], type: float }"),
                line: 8, field: "fields.age.type", "duplicate key 'type'"),
        BadFile("duplicate top-level key", S + "version: 2\n", line: 15, field: "version", "duplicate key 'version' (first defined at line 1)"),
        BadFile("tab indentation", Fixtures.schema(replacing: 9, with: "\tgender: { type: category, category: user.demographic.gender, domain: [f, m] }"),
                line: 9, field: nil, "tab character used for indentation"),
        BadFile("tab after spaces", Fixtures.schema(replacing: 9, with: "  \tgender: { type: category, category: user.demographic.gender, domain: [f, m] }"),
                line: 9, field: nil, "tab character used for indentation"),
        BadFile("unknown top-level key", S + "fieldz: {}\n", line: 15, field: "fieldz", "unknown key 'fieldz'"),
        BadFile("unknown field key", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18, 100], minimum: 3 }"),
                line: 8, field: "fields.age.minimum", "unknown key 'minimum'"),
        BadFile("unknown event key", Fixtures.schema(replacing: 14, with: "  rating: { category: user.behavior, item: string, value: { type: int, bounds: [1, 5] }, unit: stars }"),
                line: 14, field: "events.rating.unit", "unknown key 'unit'"),
        BadFile("missing field category", Fixtures.schema(replacing: 8, with: "  age: { type: int, bounds: [18, 100] }"),
                line: 8, field: "fields.age", "missing required key 'category'"),
        BadFile("missing top-level fields", "version: 1\nsubject_id: { field: customer_id, category: user.unique_id }\n",
                line: 1, field: nil, "missing required key 'fields'"),
        BadFile("missing event value bounds", Fixtures.schema(replacing: 14, with: "  rating: { category: user.behavior, item: string, value: { type: int } }"),
                line: 14, field: "events.rating.value", "missing required key 'bounds'"),
        BadFile("bad type name", Fixtures.schema(replacing: 8, with: "  age: { type: integer, category: user.demographic.age_range, bounds: [18, 100] }"),
                line: 8, field: "fields.age.type", "unknown type 'integer'"),
        BadFile("bad bool", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.name, pii: maybe }"),
                line: 5, field: "fields.full_name.pii", "expected true or false"),
        BadFile("version not an int", Fixtures.schema(replacing: 1, with: "version: one"),
                line: 1, field: "version", "expected an integer"),
        BadFile("unsupported version", Fixtures.schema(replacing: 1, with: "version: 2"),
                line: 1, field: "version", "unsupported schema version 2"),
        BadFile("fields not a mapping", "version: 1\nsubject_id: { field: customer_id, category: user.unique_id }\nfields: [age]\n",
                line: 3, field: "fields", "expected a mapping"),
        BadFile("bounds reversed", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [100, 18] }"),
                line: 8, field: "fields.age.bounds", "need lo <= hi"),
        BadFile("bounds with one number", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18] }"),
                line: 8, field: "fields.age.bounds", "bounds must be a list [lo, hi] of two numbers, found a list of 1"),
        BadFile("bounds not numbers", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [low, 100] }"),
                line: 8, field: "fields.age.bounds[0]", "expected a number"),
        BadFile("fractional bounds on int", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18.5, 100] }"),
                line: 8, field: "fields.age.bounds", "whole numbers"),
        BadFile("event value bounds reversed", Fixtures.schema(replacing: 13, with: "  purchase: { category: user.behavior.purchase_history, item: string, value: { type: float, bounds: [1000, 0] } }"),
                line: 13, field: "events.purchase.value.bounds", "need lo <= hi"),
        BadFile("numeric attribute without bounds", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range }"),
                line: 8, field: "fields.age", "missing required key 'bounds'"),
        BadFile("category without domain", Fixtures.schema(replacing: 9, with: "  gender: { type: category, category: user.demographic.gender }"),
                line: 9, field: "fields.gender", "missing required key 'domain'"),
        BadFile("empty domain", Fixtures.schema(replacing: 9, with: "  gender: { type: category, category: user.demographic.gender, domain: [] }"),
                line: 9, field: "fields.gender.domain", "non-empty domain"),
        BadFile("duplicate domain value", Fixtures.schema(replacing: 9, with: "  gender: { type: category, category: user.demographic.gender, domain: [f, m, f] }"),
                line: 9, field: "fields.gender.domain[2]", "duplicate domain value 'f'"),
        BadFile("bounds on a string", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.name, pii: true, bounds: [0, 10] }"),
                line: 5, field: "fields.full_name.bounds", "bounds apply only to int and float fields"),
        BadFile("domain on an int", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18, 100], domain: [a] }"),
                line: 8, field: "fields.age.domain", "domain applies only to category fields"),
        BadFile("lookup on a non-PII field", Fixtures.schema(replacing: 10, with: "  country: { type: category, category: user.location.imprecise, domain: [DE, other], lookup: true }"),
                line: 10, field: "fields.country.lookup", "lookup applies only to PII fields"),
        BadFile("subject_id field also in fields", S.replacingOccurrences(of: "fields:\n", with: "fields:\n  customer_id: { type: string, category: user.unique_id, pii: true }\n"),
                line: 4, field: "fields.customer_id", "is the subject_id field"),
        BadFile("field name starting with a digit", Fixtures.schema(replacing: 8, with: "  1age: { type: int, category: user.demographic.age_range, bounds: [18, 100] }"),
                line: 8, field: "fields.1age", "invalid field name '1age'"),
        // Issue 17.9: upper case is allowed, but SQL column names ignore case.
        BadFile("two fields that differ only by case", S.replacingOccurrences(of: "events:\n", with: "  Age: { type: int, category: user.demographic.age_range, bounds: [0, 120] }\nevents:\n"),
                line: 12, field: "fields.Age", "'Age' differs from field 'age' only by case"),
        BadFile("a field named like the attributes key column", S.replacingOccurrences(of: "events:\n", with: "  Subject_ID: { type: int, category: user.behavior, bounds: [0, 1] }\nevents:\n"),
                line: 12, field: "fields.Subject_ID", "rename the field"),
        BadFile("Consent in another case is reserved too", S.replacingOccurrences(of: "events:\n", with: "  Consent: { type: bool, category: user.privacy_preferences }\nevents:\n"),
                line: 12, field: "fields.Consent", "rename the field"),
        BadFile("field name with a dash", Fixtures.schema(replacing: 5, with: "  full-name: { type: string, category: user.name, pii: true }"),
                line: 5, field: "fields.full-name", "invalid field name 'full-name'"),
        BadFile("field name too long", Fixtures.schema(replacing: 5, with: "  a\(String(repeating: "b", count: 63)): { type: string, category: user.name, pii: true }"),
                line: 5, field: "fields.a\(String(repeating: "b", count: 63))", "invalid field name"),
        BadFile("clamp on a category without other", Fixtures.schema(replacing: 9, with: "  gender: { type: category, category: user.demographic.gender, domain: [f, m], on_out_of_bounds: clamp }"),
                line: 9, field: "fields.gender.on_out_of_bounds", "must contain"),
        BadFile("bad on_out_of_bounds", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18, 100], on_out_of_bounds: wrap }"),
                line: 8, field: "fields.age.on_out_of_bounds", "unknown value 'wrap'"),
        BadFile("max_length above 64 KiB", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.name, pii: true, max_length: 70000 }"),
                line: 5, field: "fields.full_name.max_length", "between 1 and 65536"),
        BadFile("event item type", Fixtures.schema(replacing: 14, with: "  rating: { category: user.behavior, item: date, value: { type: int, bounds: [1, 5] } }"),
                line: 14, field: "events.rating.item", "unknown type 'date'"),
        BadFile("YAML syntax: unclosed flow mapping", Fixtures.schema(replacing: 8, with: "  age: { type: int, category: user.demographic.age_range, bounds: [18, 100]"),
                line: 9, field: nil, "YAML syntax error"),
        BadFile("YAML syntax: mapping value in a plain scalar", Fixtures.schema(replacing: 8, with: "  age: type: int"),
                line: 8, field: nil, "YAML syntax error: mapping values are not allowed"),
        // Issue 17.7: an identifying category without pii: true would be stored in plaintext
        // and usable in --where.
        BadFile("e-mail without pii", Fixtures.schema(replacing: 4, with: "  email: { type: string, category: user.contact.email }"),
                line: 4, field: "fields.email", "category 'user.contact.email' identifies a person (user.contact) but the field is not PII; add pii: true"),
        BadFile("e-mail with pii: false and lookup", Fixtures.schema(replacing: 4, with: "  email: { type: string, category: user.contact.email, pii: false, lookup: true }"),
                line: 4, field: "fields.email", "add pii: true"),
        BadFile("name without pii", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.name.last }"),
                line: 5, field: "fields.full_name", "category 'user.name.last' identifies a person (user.name)"),
        BadFile("birth date as an attribute", Fixtures.schema(replacing: 7, with: "  birth_date: { type: date, category: user.demographic.date_of_birth }"),
                line: 7, field: "fields.birth_date", "(user.demographic.date_of_birth) but the field is not PII; add pii: true"),
        BadFile("IP address as a category attribute", Fixtures.schema(replacing: 10, with: "  country: { type: category, category: user.device.ip_address, domain: [a, b] }"),
                line: 10, field: "fields.country", "(user.device)"),
        BadFile("precise location as a number", Fixtures.schema(replacing: 11, with: "  annual_income: { type: float, category: user.location.precise, bounds: [0, 1] }"),
                line: 11, field: "fields.annual_income", "(user.location.precise)"),
        BadFile("government ID child", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.government_id.passport_number }"),
                line: 5, field: "fields.full_name", "(user.government_id)"),
        BadFile("pseudonymous unique id", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.unique_id.pseudonymous }"),
                line: 5, field: "fields.full_name", "(user.unique_id)"),
        BadFile("credit card number", Fixtures.schema(replacing: 5, with: "  full_name: { type: string, category: user.financial.credit_card }"),
                line: 5, field: "fields.full_name", "(user.financial.credit_card)"),
        BadFile("bank account (block style: the category's line)",
                S.replacingOccurrences(of: "events:\n", with: "  iban:\n    type: string\n    category: user.financial.bank_account\nevents:\n"),
                line: 14, field: "fields.iban", "(user.financial.bank_account)"),
        BadFile("event kind of an identifying category", Fixtures.schema(replacing: 14, with: "  rating: { category: user.contact.email, item: string, value: { type: int, bounds: [1, 5] } }"),
                line: 14, field: "events.rating.category", "events are stored in plaintext"),
        // Issue 17.8: a field named like a key of the product's own answers.
        BadFile("field named consent", S.replacingOccurrences(of: "events:\n", with: "  consent: { type: bool, category: user.privacy_preferences }\nevents:\n"),
                line: 12, field: "fields.consent", "'consent' is a key the product itself writes in get and export answers"),
        BadFile("field named customer_id beside another subject_id field",
                S.replacingOccurrences(of: "field: customer_id", with: "field: client_id")
                    .replacingOccurrences(of: "events:\n", with: "  customer_id: { type: string, category: user.unique_id, pii: true }\nevents:\n"),
                line: 12, field: "fields.customer_id", "reserved: access_log, accesses, accesses_archived_through, categories, consent, created_at, customer_id"),
        BadFile("field named events", Fixtures.schema(replacing: 9, with: "  events: { type: category, category: user.behavior, domain: [a, b] }"),
                line: 9, field: "fields.events", "'events' is a key"),
        BadFile("field named pseudonym", Fixtures.schema(replacing: 5, with: "  pseudonym: { type: string, category: user.name, pii: true }"),
                line: 5, field: "fields.pseudonym", "rename the field"),
        BadFile("field named last_activity", Fixtures.schema(replacing: 8, with: "  last_activity: { type: int, category: user.behavior, bounds: [0, 9] }"),
                line: 8, field: "fields.last_activity", "'last_activity' is a key"),
        BadFile("empty file", "", line: 1, field: nil, "the file is empty"),
        BadFile("top level not a mapping", "- a\n- b\n", line: 1, field: nil, "expected a mapping"),
    ]

    @Test("an invalid schema is rejected with file, line, field and reason", arguments: cases)
    func invalidSchema(_ c: BadFile) {
        check(Fixtures.schemaError(c.yaml), c, file: "schema.yaml")
    }

    @Test("field names may use upper case, as CSV exports do (issue 17.9)")
    func upperCaseFieldNames() throws {
        let yaml = S.replacingOccurrences(of: "events:\n", with: "  SeniorCitizen: { type: bool, category: user.demographic }\n  MonthlyCharges: { type: float, category: user.financial, bounds: [0, 200] }\nevents:\n")
        let schema = try PolicyLoader.parseSchema(yaml: yaml, file: "schema.yaml")
        #expect(schema.field(named: "SeniorCitizen")?.type == .bool)
        #expect(schema.field(named: "MonthlyCharges")?.bounds == 0...200)
    }

    @Test("the SPEC schema itself loads")
    func specSchemaLoads() throws {
        #expect(Fixtures.schemaError(S) == nil)
    }

    @Test("description is file:line: field: reason")
    func descriptionFormat() {
        let d = PolicyDiagnostic(file: "policies/schema.yaml", line: 8, column: 3, field: "fields.age.bounds", reason: "bounds [lo, hi] need lo <= hi")
        #expect(d.description == "policies/schema.yaml:8: fields.age.bounds: bounds [lo, hi] need lo <= hi")
        #expect(PolicyDiagnostic(file: "p.yaml", reason: "file not found").description == "p.yaml: file not found")
        #expect(PolicyDiagnostic(file: "p.yaml", line: 2, reason: "tab").description == "p.yaml:2: tab")
    }
}

@Suite("Policy diagnostics: file, line, field, reason")
struct PolicyDiagnosticsTests {
    static let cases: [BadFile] = [
        BadFile("unknown data use", Fixtures.policy(replacing: 4, with: "    data_use: analytics.reports"),
                line: 4, field: "purposes.analytics.data_use", "unknown data use 'analytics.reports' (did you mean 'analytics.reporting'?)"),
        BadFile("unknown category in may_read", Fixtures.policy(replacing: 6, with: "    may_read: [user.demographic, user.locations]"),
                line: 6, field: "purposes.analytics.may_read[1]", "unknown data category 'user.locations'"),
        BadFile("unknown model", Fixtures.policy(replacing: 12, with: "    models: [segments, deep_net]"),
                line: 12, field: "purposes.model_training.models[1]", "unknown model 'deep_net'"),
        BadFile("epsilon zero", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 0, period: 30d }"),
                line: 7, field: "purposes.analytics.dp_budget.epsilon", "epsilon must be > 0"),
        BadFile("epsilon negative", Fixtures.policy(replacing: 13, with: "    dp_budget: { epsilon: -1.5, period: 30d }"),
                line: 13, field: "purposes.model_training.dp_budget.epsilon", "epsilon must be > 0 and at most 1e6, found -1.5"),
        BadFile("epsilon absurd", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 1.0e300, period: 30d }"),
                line: 7, field: "purposes.analytics.dp_budget.epsilon", "at most 1e6"),
        BadFile("epsilon not a number", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: lots, period: 30d }"),
                line: 7, field: "purposes.analytics.dp_budget.epsilon", "expected a number"),
        BadFile("epsilon infinite", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: .inf, period: 30d }"),
                line: 7, field: "purposes.analytics.dp_budget.epsilon", "expected a finite number"),
        BadFile("period in weeks", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 4.0, period: 4w }"),
                line: 7, field: "purposes.analytics.dp_budget.period", "malformed period '4w'"),
        BadFile("period in words", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 4.0, period: 30 days }"),
                line: 7, field: "purposes.analytics.dp_budget.period", "malformed period '30 days'"),
        BadFile("period without unit", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 4.0, period: 30 }"),
                line: 7, field: "purposes.analytics.dp_budget.period", "malformed period '30'"),
        BadFile("period zero", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 4.0, period: 0d }"),
                line: 7, field: "purposes.analytics.dp_budget.period", "longer than zero"),
        BadFile("budget without period", Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 4.0 }"),
                line: 7, field: "purposes.analytics.dp_budget", "missing required key 'period'"),
        BadFile("may_read naming only PII", Fixtures.policy(replacing: 6, with: "    may_read: [user.demographic, user.contact.email]"),
                line: 6, field: "purposes.analytics.may_read[1]", "'user.contact.email' covers only PII fields (email)"),
        BadFile("may_read of user.name", Fixtures.policy(replacing: 11, with: "    may_read: [user.name]"),
                line: 11, field: "purposes.model_training.may_read[0]", "covers only PII fields (full_name)"),
        BadFile("may_read_pii covering no PII", Fixtures.policy(replacing: 17, with: "    may_read_pii: [user.contact.email, user.demographic.age_range]"),
                line: 17, field: "purposes.customer_support.may_read_pii[1]", "'user.demographic.age_range' covers no PII field"),
        BadFile("duplicate purpose", P.replacingOccurrences(of: "retention:\n", with: "  analytics:\n    data_use: analytics\n    legal_basis: consent\nretention:\n"),
                line: 18, field: "purposes.analytics", "duplicate key 'analytics' (first defined at line 3)"),
        BadFile("duplicate key inside a purpose", Fixtures.policy(replacing: 16, with: "    legal_basis: contract\n    data_use: essential.service"),
                line: 17, field: "purposes.customer_support.data_use", "duplicate key 'data_use' (first defined at line 15)"),
        BadFile("duplicate key in a retention rule", Fixtures.policy(replacing: 19, with: "  - { category: user.behavior,  keep: 730d,  after: event_time, keep: 10d }"),
                line: 19, field: "retention[0].keep", "duplicate key 'keep'"),
        BadFile("duplicate role", P + "  operator: [get]\n", line: 28, field: "roles.operator", "duplicate key 'operator' (first defined at line 22)"),
        BadFile("tab indentation", Fixtures.policy(replacing: 5, with: "\t\tlegal_basis: consent"),
                line: 5, field: nil, "tab character used for indentation"),
        BadFile("unknown top-level key", P + "budgets: {}\n", line: 28, field: "budgets", "unknown key 'budgets'"),
        BadFile("unknown purpose key", Fixtures.policy(replacing: 17, with: "    may_write: [user.contact.email]"),
                line: 17, field: "purposes.customer_support.may_write", "unknown key 'may_write'"),
        BadFile("missing legal_basis", Fixtures.policy(replacing: 16, with: ""),
                line: 15, field: "purposes.customer_support", "missing required key 'legal_basis'"),
        BadFile("missing roles", P.components(separatedBy: "roles:")[0], line: 1, field: nil, "missing required key 'roles'"),
        BadFile("unknown legal basis", Fixtures.policy(replacing: 5, with: "    legal_basis: vibes"),
                line: 5, field: "purposes.analytics.legal_basis", "unknown legal basis 'vibes'"),
        BadFile("models without a budget", Fixtures.policy(replacing: 13, with: ""),
                line: 12, field: "purposes.model_training.models", "needs a dp_budget"),
        BadFile("unknown permission", Fixtures.policy(replacing: 23, with: "  support: [get, delete]"),
                line: 23, field: "roles.support[1]", "unknown permission 'delete'"),
        // Issue 16: recommending is serving (serve_recommendations, role app); an old policy
        // giving the trainer `recommend` is refused with that advice, not silently disarmed.
        BadFile("retired permission recommend", Fixtures.policy(replacing: 25, with: "  trainer: [query, train, recommend]"),
                line: 25, field: "roles.trainer[2]", "permission 'recommend' no longer exists: recommend was replaced by serve_recommendations"),
        BadFile("retention category unknown", Fixtures.policy(replacing: 19, with: "  - { category: user.behaviour, keep: 730d, after: event_time }"),
                line: 19, field: "retention[0].category", "unknown data category 'user.behaviour' (did you mean 'user.behavior'?)"),
        BadFile("retention after unknown", Fixtures.policy(replacing: 20, with: "  - { category: user.contact, keep: 1095d, after: creation }"),
                line: 20, field: "retention[1].after", "unknown value 'creation' (expected event_time or last_activity)"),
        BadFile("retention keep malformed", Fixtures.policy(replacing: 20, with: "  - { category: user.contact, keep: 3y, after: last_activity }"),
                line: 20, field: "retention[1].keep", "malformed period '3y'"),
        BadFile("retention rule missing after", Fixtures.policy(replacing: 20, with: "  - { category: user.contact, keep: 3d }"),
                line: 20, field: "retention[1]", "missing required key 'after'"),
        BadFile("version not a string", Fixtures.policy(replacing: 1, with: "version: 3"),
                line: 1, field: "version", "expected a string such as \"2026-11-01\""),
        BadFile("purpose name invalid", Fixtures.policy(replacing: 14, with: "  Customer-Support:"),
                line: 14, field: "purposes.Customer-Support", "invalid purpose name"),
        BadFile("YAML syntax error", Fixtures.policy(replacing: 6, with: "    may_read: [user.demographic, user.financial"),
                line: 7, field: nil, "YAML syntax error"),
    ]

    @Test("an invalid policy is rejected with file, line, field and reason", arguments: cases)
    func invalidPolicy(_ c: BadFile) {
        check(Fixtures.policyError(c.yaml), c, file: "policy.yaml")
    }

    @Test("an unquoted date version is accepted as its text")
    func unquotedVersion() throws {
        let policy = try PolicyLoader.parsePolicy(
            yaml: Fixtures.policy(replacing: 1, with: "version: 2026-11-01"), file: "policy.yaml", schema: try Fixtures.schema())
        #expect(policy.version == "2026-11-01")
    }

    @Test("hours are accepted as a period")
    func hoursPeriod() throws {
        let policy = try PolicyLoader.parsePolicy(
            yaml: Fixtures.policy(replacing: 7, with: "    dp_budget: { epsilon: 0.5, period: 12h }"), file: "policy.yaml",
            schema: try Fixtures.schema())
        #expect(policy.purpose("analytics")?.dpBudget == DPBudget(epsilon: 0.5, periodSeconds: 43200, periodText: "12h"))
    }
}
