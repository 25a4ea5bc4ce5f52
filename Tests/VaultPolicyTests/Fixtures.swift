import Foundation
import VaultPolicy

/// Paths and YAML fixtures shared by the tests.
enum Fixtures {
    /// The repository root (the test file sits at Tests/VaultPolicyTests/), symlinks resolved so
    /// that a scratch package pointing at these sources still finds `policies/`.
    static let repoRoot: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var policiesDir: String { repoRoot.appendingPathComponent("policies").path }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// `../shared/data` beside the repository, if present.
    static var sharedData: String { repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data").path }

    /// The SPEC §2 schema.
    static let specSchema = """
        version: 1
        subject_id: { field: customer_id, category: user.unique_id }
        fields:
          email:         { type: string,   category: user.contact.email,          pii: true, lookup: true }
          full_name:     { type: string,   category: user.name,                   pii: true }
          phone:         { type: string,   category: user.contact.phone_number,   pii: true, lookup: true }
          birth_date:    { type: date,     category: user.demographic.date_of_birth, pii: true }
          age:           { type: int,      category: user.demographic.age_range,  bounds: [18, 100] }
          gender:        { type: category, category: user.demographic.gender,     domain: [female, male, other, unknown] }
          country:       { type: category, category: user.location.imprecise,    domain: [DE, FR, GB, US, other] }
          annual_income: { type: float,    category: user.financial,              bounds: [0, 250000] }
        events:
          purchase: { category: user.behavior.purchase_history, item: string, value: { type: float, bounds: [0, 1000] } }
          rating:   { category: user.behavior,                  item: string, value: { type: int,   bounds: [1, 5] } }

        """

    /// The SPEC §4 policy.
    static let specPolicy = """
        version: "2026-11-01"
        purposes:
          analytics:
            data_use: analytics.reporting
            legal_basis: consent
            may_read: [user.demographic, user.location.imprecise, user.financial, user.behavior]
            dp_budget: { epsilon: 4.0, period: 30d }
          model_training:
            data_use: personalize
            legal_basis: consent
            may_read: [user.demographic, user.location.imprecise, user.financial, user.behavior]
            models: [segments, kmeans, linear_regression, logistic_regression, recommender]
            dp_budget: { epsilon: 10.0, period: 30d }
          customer_support:
            data_use: essential.service
            legal_basis: contract
            may_read_pii: [user.contact.email, user.name, user.contact.phone_number]
        retention:
          - { category: user.behavior,  keep: 730d,  after: event_time }
          - { category: user.contact,   keep: 1095d, after: last_activity }
        roles:
          operator: [ingest]
          support: [get]
          app: [serve_recommendations, score]          # serving a subject; not analysis
          trainer: [query, train]
          privacy_officer: [consent, erase, export, retention, keys]
          auditor: [audit]

        """

    static func schema() throws -> Schema {
        try PolicyLoader.parseSchema(yaml: specSchema, file: "schema.yaml")
    }

    static func policy() throws -> Policy {
        try PolicyLoader.parsePolicy(yaml: specPolicy, file: "policy.yaml", schema: try schema())
    }

    /// The diagnostic for a schema text, or nil if it loads.
    static func schemaError(_ yaml: String) -> PolicyDiagnostic? {
        do {
            _ = try PolicyLoader.parseSchema(yaml: yaml, file: "schema.yaml")
            return nil
        } catch {
            return error
        }
    }

    /// The diagnostic for a policy text checked against the SPEC schema, or nil if it loads.
    static func policyError(_ yaml: String) -> PolicyDiagnostic? {
        do {
            _ = try PolicyLoader.parsePolicy(yaml: yaml, file: "policy.yaml", schema: try schema())
            return nil
        } catch let error as PolicyDiagnostic {
            return error
        } catch {
            return PolicyDiagnostic(file: "?", reason: "unexpected \(error)")
        }
    }

    /// The SPEC policy with one line replaced (1-based line number).
    static func policy(replacing line: Int, with text: String) -> String {
        var lines = specPolicy.components(separatedBy: "\n")
        lines[line - 1] = text
        return lines.joined(separator: "\n")
    }

    /// The SPEC schema with one line replaced (1-based line number).
    static func schema(replacing line: Int, with text: String) -> String {
        var lines = specSchema.components(separatedBy: "\n")
        lines[line - 1] = text
        return lines.joined(separator: "\n")
    }
}
