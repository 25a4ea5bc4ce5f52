public import DifferentialPrivacy

/// The numeric parameters (`params:` of a job file) each model accepts, with the range the
/// model accepts (the same ranges as the models' own checks, which stay as a second line).
/// The job parser checks every number against this table, so a job with a number out of range
/// is refused as invalid input naming the field, before any budget is charged, and no model
/// ever converts a number like 1e300 to an integer.
public enum ModelParameters {
    public struct Rule: Sendable {
        /// Whole numbers only.
        public var integer: Bool
        public var range: ClosedRange<Double>
        public init(integer: Bool, _ range: ClosedRange<Double>) {
            self.integer = integer
            self.range = range
        }
    }

    static func int(_ r: ClosedRange<Double>) -> Rule { Rule(integer: true, r) }
    static func real(_ r: ClosedRange<Double>) -> Rule { Rule(integer: false, r) }

    /// Model -> parameter -> rule. `by` and `from_model` (names, not numbers) are not listed.
    public static let rules: [ModelKind: [String: Rule]] = [
        .kmeans: ["k": int(1...64), "iterations": int(1...50), "init_share": real(0.001...0.9)],
        .segments: [:],
        .linear_regression: ["private_ranges": int(0...1)],
        .logistic_regression: ["private_ranges": int(0...1)],
        .random_forest: ["trees": int(1...200), "depth": int(1...12), "leaf_prior": real(0...1e6), "private_ranges": int(0...1)],
        .association_rules: ["max_items_per_subject": int(2...20), "vocabulary_size": int(2...300), "triple_vocabulary": int(0...60),
                             "support_threshold": real(0...1e6), "min_support": real(0...1e9), "min_confidence": real(0...1),
                             "max_rules": int(1...10_000), "selection_items": int(1...50), "selection_share": real(0.05...0.9)],
        .recommender: ["max_items_per_subject": int(2...1000), "vocabulary_size": int(2...2000), "neighbors": int(1...2000),
                       "similarity_threshold": real(0...100), "popularity_weight": real(0...1000), "popularity_share": real(0.05...1),
                       "candidates": int(0...10_000), "content_weight": real(0...1000), "segment_share": real(0.05...0.95),
                       "segment_prior": real(0...1e9), "segment_vocabulary": int(1...5000), "factors": int(0...100),
                       "selection_items": int(1...50), "selection_share": real(0.05...0.9)],
    ]

    /// Why `value` is not acceptable for parameter `name` of `kind` (nil: it is). The reason
    /// shows the allowed range, never more of the value than the job file already shows.
    public static func problem(_ kind: ModelKind, _ name: String, _ value: Double) -> String? {
        guard let rule = rules[kind]?[name] else { return "not a numeric parameter of \(kind.rawValue)" }
        func fmt(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)" }
        let span = "\(fmt(rule.range.lowerBound)) to \(fmt(rule.range.upperBound))"
        guard value.isFinite, rule.range.contains(value) else {
            return rule.integer ? "expected a whole number from \(span)" : "expected a number from \(span)"
        }
        if rule.integer && value != value.rounded() { return "expected a whole number from \(span)" }
        return nil
    }
}

extension TrainingSpec {
    /// An integer parameter as an `Int` (`fallback` when absent). A value that is not a whole
    /// number within +/-2^31 becomes `Int.min`, which every model's range check refuses: the
    /// conversion itself never traps (the job parser has refused such values already).
    func integer(_ name: String, _ fallback: Int) -> Int {
        let x = param(name, Double(fallback))
        guard x == x.rounded(), abs(x) <= 2_147_483_648 else { return Int.min }
        return Int(x)
    }
}
