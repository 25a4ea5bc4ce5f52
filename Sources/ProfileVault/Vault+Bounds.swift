import Foundation
public import DifferentialPrivacy
import VaultAudit
public import VaultValues

/// `query bounds --attribute A --epsilon E` (issue 23): a private range to pass as `--bounds`.
///
/// Two quantiles of the attribute (default 0.05 and 0.95) by the exponential mechanism over the
/// schema's bounds (`quantile`: one charge of E, E/2 each, sequential composition: E-DP; proof
/// in docs/differential-privacy.md, "Quantiles"; under a zCDP purpose one charge of rho, see
/// `quantileRho`), then post-processing only: the lower bound is
/// the lower edge of the low quantile's cell, the upper bound the upper edge of the high
/// quantile's cell (for an integer attribute with one cell per integer, the cells' integers),
/// swapped if they cross. Audited as `query.bounds`; answered again from the release cache like
/// any release.
extension Vault {
    public struct BoundsRequest: Sendable {
        public var purpose: String
        /// The epsilon to spend (under a zCDP purpose: rho = epsilon²/2); nil with `rho`.
        public var epsilon: Double?
        /// `--rho R`: the rho to spend under a zCDP purpose.
        public var rho: Double? = nil
        public var attribute: String
        public var whereClause: String?
        /// The quantiles whose cells' outer edges become the bounds (0 <= low < high <= 1).
        public var low: Double = 0.05
        public var high: Double = 0.95
        public var dryRun = false
        public var fresh = false
        public init(purpose: String, epsilon: Double?, attribute: String, whereClause: String? = nil) {
            self.purpose = purpose
            self.epsilon = epsilon
            self.attribute = attribute
            self.whereClause = whereClause
        }
    }

    public struct BoundsResult: Sendable {
        /// The suggested bounds (nil for a dry run).
        public var bounds: (lower: Double, upper: Double)?
        /// The quantile release they come from (its epsilon, cells, rank error, budget, cache).
        public var release: QuantileResult
        public var low: Double
        public var high: Double
        /// `--bounds LO,HI`, ready to paste (nil for a dry run).
        public var suggestion: String? { bounds.map { "--bounds \(Vault.number($0.lower)),\(Vault.number($0.upper))" } }
    }

    public func privateBounds(_ b: BoundsRequest) throws -> BoundsResult {
        guard b.low.isFinite, b.high.isFinite, b.low >= 0, b.high <= 1, b.low < b.high else {
            // Audited like any refused query (before anything is charged).
            return try audited("query.bounds", .read, permission: "query", purpose: b.purpose) { _ in
                throw VaultError(.usage, "--low, --high: two quantiles with 0 <= low < high <= 1")
            }
        }
        var r = QuantileRequest(purpose: b.purpose, epsilon: b.epsilon, attribute: b.attribute, quantiles: [b.low, b.high], whereClause: b.whereClause)
        r.rho = b.rho
        r.dryRun = b.dryRun
        r.fresh = b.fresh
        let release = try quantileRelease(r, name: "query.bounds")
        var out = BoundsResult(bounds: nil, release: release, low: b.low, high: b.high)
        guard !release.dryRun, let cells = release.cells.first, cells.count == 2 else { return out }
        let (lo, hi, bins) = (release.bounds.lower, release.bounds.upper, release.bins)
        let perInteger = release.binWidth == 1 && (hi - lo + 1) == Double(bins)
        func lowerEdge(_ j: Int) -> Double { perInteger ? lo + Double(j) : lo + Double(j) * (hi - lo) / Double(bins) }
        func upperEdge(_ j: Int) -> Double { perInteger ? lo + Double(j) : (j + 1 >= bins ? hi : lo + Double(j + 1) * (hi - lo) / Double(bins)) }
        let a = max(lo, lowerEdge(cells[0])), z = min(hi, upperEdge(cells[1]))
        out.bounds = a <= z ? (a, z) : (max(lo, lowerEdge(cells[1])), min(hi, upperEdge(cells[0])))
        return out
    }
}

extension JSONForms {
    /// `query bounds --json` and `POST /v1/queries` with `"kind": "bounds"`.
    public static func bounds(_ b: Vault.BoundsResult) -> JSONValue {
        let r = b.release
        var pairs: [(String, JSONValue)] = []
        if r.dryRun {
            pairs.append(("dry_run", .bool(true)))
        } else if let x = b.bounds {
            pairs.append(("bounds", .array([num(x.lower), num(x.upper)])))
            pairs.append(("suggestion", .string(b.suggestion ?? "")))
        }
        pairs += [
            ("quantiles", .array([.double(b.low), .double(b.high)])),
            ("epsilon", .double(r.epsilon)), ("delta", .double(r.conversionDelta ?? 0)), ("epsilon_per_quantile", .double(r.epsilonPerQuantile)),
            ("mechanism", .string("exponential mechanism over a bounded domain, user-level" + (r.rho != nil ? " (epsilon-DP per quantile, charged as rho = epsilon²/2 zCDP)" : "") + "; bounds are the outer edges of the released cells")),
            ("bins", .int(Int64(r.bins))), ("bin_width", num(r.binWidth)),
            ("domain", .array([num(r.bounds.lower), num(r.bounds.upper)])),
            ("rank_error_95", num(r.rankError95)),
            ("budget_left", num(r.budget.left)), ("budget_spent", num(r.budget.spent)),
            ("cached", .bool(r.cached)), ("epsilon_charged", .double(r.cached ? 0 : r.epsilon)),
        ]
        pairs += zcdpPairs(rho: r.rho, conversionDelta: r.conversionDelta, cached: r.cached)
        if let t = r.releasedAtMillis { pairs.append(("released_at", isoMillis(t))) }
        return .object(pairs)
    }
}
