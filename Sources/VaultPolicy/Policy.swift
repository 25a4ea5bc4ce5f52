/// The GDPR legal basis of a purpose.
public enum LegalBasis: String, Sendable {
    case consent, contract, legal_obligation, legitimate_interest
}

/// A purpose's differential-privacy budget: `epsilon` and `delta` per period.
public struct DPBudget: Sendable, Equatable {
    public let epsilon: Double
    public let periodSeconds: Int
    /// The period as written, e.g. `30d`.
    public let periodText: String
    /// The delta of (epsilon, delta)-DP releases per period (0: pure DP only). Written as
    /// `dp_budget.delta`; when absent, ``defaultDelta`` for a purpose that lists a model of
    /// ``approximateDPModels``, else 0.
    public let delta: Double

    /// A zCDP purpose (`dp_budget: { rho: R, period: P }`): its rho per period, nil for an
    /// (epsilon, delta) purpose. A zCDP purpose has `epsilon` 0 and `delta` 0: every pure-DP
    /// charge is refused under it; its releases use the discrete Gaussian and charge rho.
    public let rho: Double?
    /// The delta at which a zCDP purpose's rho is shown as (epsilon, delta)-DP
    /// (epsilon = rho + 2 sqrt(rho ln(1/delta))): `dp_budget.delta` of a rho budget, default
    /// ``defaultConversionDelta``. Not a limit: zCDP releases charge no delta.
    public let conversionDelta: Double

    public init(epsilon: Double, periodSeconds: Int, periodText: String, delta: Double = 0) {
        self.epsilon = epsilon
        self.periodSeconds = periodSeconds
        self.periodText = periodText
        self.delta = delta
        self.rho = nil
        self.conversionDelta = Self.defaultConversionDelta
    }

    /// A zCDP budget: `rho` per period, shown as (epsilon, delta) at `conversionDelta`.
    public init(rho: Double, periodSeconds: Int, periodText: String, conversionDelta: Double = DPBudget.defaultConversionDelta) {
        self.epsilon = 0
        self.delta = 0
        self.periodSeconds = periodSeconds
        self.periodText = periodText
        self.rho = rho
        self.conversionDelta = conversionDelta
    }

    /// The delta a zCDP budget's conversion uses when `dp_budget.delta` is absent.
    public static let defaultConversionDelta = 1e-6
    /// The largest `dp_budget.rho` accepted (about epsilon 14 spent as epsilon²/2).
    public static let maxRho = 100.0

    /// Models whose training may use an (epsilon, delta) mechanism: private partition selection
    /// of event items when the job declares no catalog (`items_from`).
    public static let approximateDPModels: Set<String> = ["recommender", "association_rules"]
    /// `dp_budget.delta` when the purpose lists such a model and the key is absent.
    public static let defaultDelta = 1e-6
    /// The largest `dp_budget.delta` accepted (a job's delta is below 0.001 as well).
    public static let maxDelta = 1e-3
}

/// A purpose of processing and what it may read.
public struct Purpose: Sendable {
    public let name: String
    /// Its fideslang data use.
    public let dataUse: String
    public let legalBasis: LegalBasis
    /// Category prefixes whose attribute (non-PII) fields and events the purpose may read.
    public let mayRead: [String]
    /// Category prefixes whose PII fields the purpose may read.
    public let mayReadPII: [String]
    /// Model kinds the purpose may train.
    public let models: [String]
    public let dpBudget: DPBudget?
    /// The line of the purpose's declaration.
    public let line: Int
    /// Who receives data for this purpose (`recipients:`), shown in access exports.
    public let recipients: [String]

    public init(
        name: String, dataUse: String, legalBasis: LegalBasis, mayRead: [String] = [], mayReadPII: [String] = [],
        models: [String] = [], dpBudget: DPBudget? = nil, line: Int = 0, recipients: [String] = []
    ) {
        self.recipients = recipients
        self.name = name
        self.dataUse = dataUse
        self.legalBasis = legalBasis
        self.mayRead = mayRead
        self.mayReadPII = mayReadPII
        self.models = models
        self.dpBudget = dpBudget
        self.line = line
    }

    /// A non-PII field whose category is covered by a `may_read` entry. Never true for PII.
    public func mayReadAttribute(_ f: FieldSpec) -> Bool {
        !f.pii && mayRead.contains { Taxonomy.covers($0, f.category) }
    }

    /// A PII field whose category is covered by a `may_read_pii` entry.
    public func mayReadPII(_ f: FieldSpec) -> Bool {
        f.pii && mayReadPII.contains { Taxonomy.covers($0, f.category) }
    }

    /// `mayReadPII` for a PII field, `mayReadAttribute` otherwise.
    public func mayRead(_ f: FieldSpec) -> Bool {
        f.pii ? mayReadPII(f) : mayReadAttribute(f)
    }

    /// Events whose category is covered by a `may_read` entry.
    public func mayReadEvents(_ e: EventKindSpec) -> Bool {
        mayRead.contains { Taxonomy.covers($0, e.category) }
    }

    /// Whether the purpose lists this model kind.
    public func allowsModel(_ model: String) -> Bool {
        models.contains(model)
    }
}

/// What a retention period counts from.
public enum RetentionAnchor: String, Sendable {
    /// The event's own time (applies to events).
    case eventTime = "event_time"
    /// The subject's last activity (profile change or latest event); past it the subject is shredded.
    case lastActivity = "last_activity"
}

/// One retention rule.
public struct RetentionRule: Sendable {
    public let category: String
    public let keepSeconds: Int
    /// The period as written, e.g. `730d`.
    public let keepText: String
    public let after: RetentionAnchor
    public let line: Int

    public init(category: String, keepSeconds: Int, keepText: String, after: RetentionAnchor, line: Int = 0) {
        self.category = category
        self.keepSeconds = keepSeconds
        self.keepText = keepText
        self.after = after
        self.line = line
    }
}

/// The request register's deadlines (`requests: { deadline: 30d, extension: 60d }`): a
/// data-subject request is due `deadline` after it was received, and may be extended once by
/// `extension` (GDPR Art. 12(3): one month, extendable by two). Absent: 30d and 60d.
public struct RequestDeadlines: Sendable, Equatable {
    public let deadlineSeconds: Int
    public let deadlineText: String
    public let extensionSeconds: Int
    public let extensionText: String
    /// Where `requests:` is in policy.yaml (0 when absent).
    public let line: Int

    public init(deadlineSeconds: Int, deadlineText: String, extensionSeconds: Int, extensionText: String, line: Int = 0) {
        self.deadlineSeconds = deadlineSeconds
        self.deadlineText = deadlineText
        self.extensionSeconds = extensionSeconds
        self.extensionText = extensionText
        self.line = line
    }

    /// 30 days, extendable by 60.
    public static let standard = RequestDeadlines(deadlineSeconds: 30 * 86_400, deadlineText: "30d",
                                                  extensionSeconds: 60 * 86_400, extensionText: "60d")

    public static func == (a: RequestDeadlines, b: RequestDeadlines) -> Bool {
        a.deadlineSeconds == b.deadlineSeconds && a.extensionSeconds == b.extensionSeconds
    }
}

/// The policy (`policies/policy.yaml`): purposes, retention rules, roles.
public struct Policy: Sendable {
    /// The policy version, e.g. `2026-11-01`; recorded in the consent ledger.
    public let version: String
    public let purposes: [String: Purpose]
    /// Purpose names in file order.
    public let purposeOrder: [String]
    public let retention: [RetentionRule]
    /// Role name -> permissions.
    public let roles: [String: Set<String>]
    public let file: String
    /// Catalogs training jobs may name (`catalogs:`; `items_from: NAME`), by name.
    public let catalogs: [String: CatalogDeclaration]
    /// The request register's deadlines (`requests:`; ``RequestDeadlines/standard`` when absent).
    public let requests: RequestDeadlines

    public init(
        version: String, purposes: [String: Purpose], purposeOrder: [String], retention: [RetentionRule],
        roles: [String: Set<String>], file: String, catalogs: [String: CatalogDeclaration] = [:],
        requests: RequestDeadlines = .standard
    ) {
        self.requests = requests
        self.version = version
        self.purposes = purposes
        self.purposeOrder = purposeOrder
        self.retention = retention
        self.roles = roles
        self.file = file
        self.catalogs = catalogs
    }

    /// The directory policy.yaml is in: declared catalog paths are relative to it.
    public var directory: String {
        guard let slash = file.lastIndex(of: "/") else { return "." }
        return slash == file.startIndex ? "/" : String(file[..<slash])
    }

    /// The purpose with this name, if declared.
    public func purpose(_ name: String) -> Purpose? { purposes[name] }

    /// Whether the role exists and holds the permission.
    public func role(_ name: String, allows permission: String) -> Bool {
        roles[name]?.contains(permission) ?? false
    }
}
