public import DifferentialPrivacy
public import Foundation

/// The model kinds this module trains (SPEC §6).
public enum ModelKind: String, Sendable, CaseIterable, Codable {
    case segments, kmeans, linear_regression, logistic_regression, recommender, association_rules, random_forest

    /// Models that name event items (a catalog, or private selection with the job's delta).
    public var namesItems: Bool { self == .recommender || self == .association_rules }
}

/// One DP release a model made, for the artifact's record of how the job's epsilon was split.
public struct ReleaseRecord: Codable, Sendable, Equatable {
    public var release: String
    public var epsilon: Double
    /// Per coordinate, the per-subject L1 bound (over all groups) in the coordinate's units.
    public var l1Bounds: [Double]
}

/// The `privacy` block of a model artifact (SPEC §6).
public struct PrivacyBlock: Codable, Sendable, Equatable {
    public var purpose: String
    public var epsilon: Double
    public var delta: Double
    public var mechanism: String
    public var contributionBounds: [String: Double]
    public var policyVersion: String
    public var job: String
    public var trainedAt: String
    public var budgetSplit: [ReleaseRecord]
    /// The noisy number of subjects the job trained on (derived from one of its releases, the
    /// most precise) and that count's noise scale; `train` warns below 5 scales.
    public var noisySubjects: Double?
    public var noisySubjectsScale: Double?
    /// Models that learn from events: the noisy number of (subject, distinct item) interactions
    /// counted (each subject's capped at max_items_per_subject), and its noise scale.
    public var noisyEvents: Double?
    public var noisyEventsScale: Double?
    public init(purpose: String, epsilon: Double, delta: Double, mechanism: String, contributionBounds: [String: Double],
                policyVersion: String, job: String, trainedAt: String, budgetSplit: [ReleaseRecord]) {
        self.purpose = purpose
        self.epsilon = epsilon
        self.delta = delta
        self.mechanism = mechanism
        self.contributionBounds = contributionBounds
        self.policyVersion = policyVersion
        self.job = job
        self.trainedAt = trainedAt
        self.budgetSplit = budgetSplit
    }
}

/// A segment of a `segments` model.
public struct Segment: Codable, Sendable, Equatable {
    public var key: String
    public var size: Double
    public var means: [String: Double]
}

/// A job-declared per-subject event aggregate (a derived feature or target), as the artifact
/// echoes it: the subject's value is the `aggregate` (sum of values, count, distinct_items) of
/// its `events` with from <= time < before (ISO 8601, UTC; nil: unbounded), 0 without any,
/// clamped to `bounds`.
public struct DerivedFeatureRecord: Codable, Sendable, Equatable {
    public var events: String
    public var aggregate: String
    public var from: String?
    public var before: String?
    public var bounds: [Double]
    public init(events: String, aggregate: String, from: String?, before: String?, bounds: [Double]) {
        self.events = events
        self.aggregate = aggregate
        self.from = from
        self.before = before
        self.bounds = bounds
    }
}

/// A trained model as JSON: kind, features in order, the kind's parameters, the privacy block.
/// Everything in it is post-processing of DP releases.
public struct ModelArtifact: Codable, Sendable {
    public var model: ModelKind
    public var features: [String]
    /// Public bounds of each feature, [lower, upper], in feature order.
    public var featureBounds: [[Double]]
    public var params: [String: Double]
    /// Definitions of the features (or target) that are per-subject event aggregates, by name.
    public var derived: [String: DerivedFeatureRecord]?
    // kmeans
    public var centroids: [[Double]]?
    public var clusterSizes: [Double]?
    // linear_regression, logistic_regression
    public var target: String?
    public var coefficients: [Double]?
    public var intercept: Double?
    // segments
    public var segmentBy: String?
    public var segments: [Segment]?
    // recommender
    public var events: String?
    public var items: [String]?
    public var itemSource: String?
    public var popularity: [Double]?
    public var neighborItems: [[Int]]?
    public var neighborScores: [[Double]]?
    // random_forest (also target)
    public var trees: [RandomTree]?
    // association_rules (also events, items, item_source)
    public var rules: [AssociationRule]?
    /// The start of the window the popularity was counted over (ISO 8601, UTC; nil: all events).
    public var eventsSince: String?
    /// Each item's TF-IDF vector of its catalog description (term ids, weights; aligned with
    /// `items`): public catalog data, no budget spent.
    public var contentTerms: [[Int]]?
    public var contentWeights: [[Double]]?
    /// Recommender with `by:` (segment-based): the segments (the attribute's domain, named in
    /// `segment_by`) and, per segment, the noisy popularity of the first
    /// `segment_popularity[s].count` items of `items`.
    /// Recommender with `factors: k`: each vocabulary item's factor vector (aligned with the
    /// first items of `items`; similarity = dot product).
    public var itemFactors: [[Double]]?
    public var segmentKeys: [String]?
    public var segmentPopularity: [[Double]]?
    public var privacy: PrivacyBlock?
    /// What `train` warned about (e.g. a noisy subject count under 5 noise scales: the model is
    /// mostly noise); empty when nothing.
    public var warnings: [String]?
    /// The artifact's MAC (`hmac-sha256:` and 64 hex digits) over its canonical form without
    /// this key, under the store's model-artifact key; set by `train`, checked by every loader.
    public var mac: String?

    public init(model: ModelKind, features: [ScaledFeature], params: [String: Double]) {
        self.model = model
        self.features = features.map(\.name)
        self.featureBounds = features.map { [$0.lower, $0.upper] }
        self.params = params
    }

    public var scaledFeatures: [ScaledFeature] {
        zip(features, featureBounds).map { ScaledFeature(name: $0, lower: $1.first ?? 0, upper: $1.last ?? 1) }
    }

    public func encoded() throws -> Data {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.nonConformingFloatEncodingStrategy = .throw
        return try e.encode(self)
    }

    public static func decode(_ data: Data) throws -> ModelArtifact {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(ModelArtifact.self, from: data)
    }
}

/// What a training job hands a model: the gate has checked it all against schema and policy.
public struct TrainingSpec: Sendable {
    public var features: [ScaledFeature]
    /// Features whose values are integers (used to pick an exact grid).
    public var integral: Set<String>
    public var target: ScaledFeature?
    public var events: String?
    public var params: [String: Double]
    /// segments: the categorical attribute and its public domain.
    public var segmentBy: (name: String, domain: [String])?
    /// segments: the k-means model whose clusters are the segments.
    public var clusters: ModelArtifact?
    /// recommender: a declared catalog (nil: private selection).
    public var catalog: [String]?
    /// recommender: the catalog's item descriptions, in catalog order (nil: none declared).
    public var catalogText: [String]?
    /// recommender: count popularity over events from this time on (seconds since the epoch).
    public var eventsSince: Int64?
    public init(features: [ScaledFeature], integral: Set<String> = [], target: ScaledFeature? = nil, events: String? = nil,
                params: [String: Double] = [:], segmentBy: (name: String, domain: [String])? = nil, clusters: ModelArtifact? = nil,
                catalog: [String]? = nil) {
        self.features = features
        self.integral = integral
        self.target = target
        self.events = events
        self.params = params
        self.segmentBy = segmentBy
        self.clusters = clusters
        self.catalog = catalog
    }

    func param(_ name: String, _ fallback: Double) -> Double { params[name] ?? fallback }
}

public struct ModelError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Trains a model of `kind` inside a session (the job's charged epsilon).
public enum Trainer {
    public static func fit(_ kind: ModelKind, spec: TrainingSpec, session: PrivateSession,
                           progress: (String) -> Void = { _ in }) throws -> ModelArtifact {
        var a: ModelArtifact
        switch kind {
        case .kmeans: a = try KMeans.fit(spec: spec, session: session, progress: progress)
        case .segments: a = try Segments.fit(spec: spec, session: session)
        case .linear_regression: a = try Regression.fit(spec: spec, session: session, logistic: false)
        case .logistic_regression: a = try Regression.fit(spec: spec, session: session, logistic: true)
        case .recommender: a = try Recommender.fit(spec: spec, session: session, progress: progress)
        case .association_rules: a = try AssociationRules.fit(spec: spec, session: session, progress: progress)
        case .random_forest: a = try RandomForest.fit(spec: spec, session: session, progress: progress)
        }
        a.privacy = PrivacyBlock(purpose: "", epsilon: session.epsilon.chargedValue, delta: 0, mechanism: "", contributionBounds: [:],
                                 policyVersion: "", job: "", trainedAt: "",
                                 budgetSplit: session.ledger.map { ReleaseRecord(release: $0.what, epsilon: $0.epsilon, l1Bounds: $0.bounds) })
        return a
    }

    /// The grid and centre of a centred sum of a feature (as `mean` queries use).
    static func centredCoordinate(_ f: ScaledFeature, integral: Bool) -> Coordinate {
        let c = (f.lower + f.upper) / 2
        let g = BoundedSum.grid(forBound: (f.upper - f.lower) / 2,
                                integral: integral && (f.upper - f.lower).truncatingRemainder(dividingBy: 2) == 0)
        return .attribute(name: f.name, lower: f.lower, upper: f.upper, center: c, grid: g)
    }
}
