import ArgumentParser
import DifferentialPrivacy
import Foundation
import ProfileVault

extension Query {
    /// `query quantile --attribute A --q 0.5[,0.9] --epsilon E` (issue 23).
    struct Quantile: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Private quantiles of a numeric attribute (exponential mechanism over its bounds; epsilon split over the quantiles).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The purpose (must have a dp_budget in policy.yaml).") var purpose: String
        @Option(help: "Privacy budget this query spends (> 0), split evenly over the quantiles (under a zCDP purpose: rho = epsilon²/2).") var epsilon: Double?
        @Option(help: "Under a zCDP purpose: the rho this query spends, split evenly over the quantiles (instead of --epsilon).") var rho: Double?
        @Option(help: "The numeric attribute.") var attribute: String
        @Option(name: .customLong("q"), help: "Quantiles from 0 to 1, comma-separated: 0.5 or 0.25,0.5,0.75.") var q: String
        @Option(name: .customLong("where"), help: "Conditions joined by AND: country=DE,age>=30.") var whereClause: String?
        @Option(name: .customLong("group-by"), help: "A categorical attribute: quantiles per value of its domain.") var groupBy: String?
        @Option(help: "LO,HI: the domain (inside the schema's bounds); values are clamped to it.") var bounds: String?
        @Flag(name: .customLong("dry-run"), help: "Print what the query would charge; charge nothing.") var dryRun = false
        @Flag(help: "Do not answer from the release cache: pay for a new release (it replaces the stored one).") var fresh = false

        func quantiles() throws -> [Double] {
            let parts = q.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            var out: [Double] = []
            for p in parts {
                guard let x = Double(p), x.isFinite, x >= 0, x <= 1 else { throw ValidationError("--q: each quantile must be a number from 0 to 1") }
                out.append(x)
            }
            guard !out.isEmpty, out.count <= Vault.maxQuantiles else { throw ValidationError("--q: give 1 to \(Vault.maxQuantiles) quantiles") }
            return out
        }

        func parsedBounds() throws -> (lower: Double, upper: Double)? {
            guard let bounds else { return nil }
            let parts = bounds.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let lo = Double(parts[0]), let hi = Double(parts[1]), lo.isFinite, hi.isFinite, lo <= hi else {
                throw ValidationError("--bounds: expected LO,HI, two finite numbers with LO <= HI")
            }
            return (lo, hi)
        }

        func validate() throws {
            guard epsilon != nil || rho != nil else { throw ValidationError("give --epsilon (or, under a zCDP purpose, --rho)") }
            if let epsilon { guard epsilon.isFinite, epsilon > 0 else { throw ValidationError("--epsilon must be a positive number, not \(epsilon)") } }
            _ = try quantiles()
            _ = try parsedBounds()
        }

        /// The cost line: epsilon (per quantile), or under a zCDP purpose rho and its (epsilon, delta) form.
        static func tail(_ r: Vault.QuantileResult) -> String {
            let cost = r.rho.map { String(format: "rho %g (epsilon %g at delta %g; exponential mechanism at epsilon %g per quantile)", $0, r.epsilon, r.conversionDelta ?? 0, r.epsilonPerQuantile) }
                ?? String(format: "epsilon %g (%g per quantile)", r.epsilon, r.epsilonPerQuantile)
            return cost + String(format: ", %d cells of %.4g, 95%% rank error %.4g, budget left %.4g", r.bins, r.binWidth, r.rankError95, r.budget.left)
                + (r.rho != nil ? " (rho)" : "")
        }

        func run() throws {
            var request = Vault.QuantileRequest(purpose: purpose, epsilon: epsilon, attribute: attribute, quantiles: try quantiles(),
                                                whereClause: whereClause, groupBy: groupBy, bounds: try parsedBounds())
            request.rho = rho
            request.dryRun = dryRun
            request.fresh = fresh
            let r = try options.openVault().quantile(request)
            let tail = Self.tail(r)
            let text: String
            if r.dryRun {
                text = r.cached ? "dry run: would be answered from the release cache at cost 0; nothing charged"
                    : "dry run: would charge " + tail + "; nothing charged"
            } else {
                text = r.values.map { g in
                    (g.key.isEmpty ? "" : g.key + ": ") + zip(r.quantiles, g.values).map { String(format: "q%g = %.4f", $0.0, $0.1) }.joined(separator: "  ")
                }.joined(separator: "\n") + "\n" + tail
                    + (r.cached ? " (answered from the release cache, released \(r.releasedAtMillis.map { Vault.isoTime(millis: $0) } ?? "earlier"); charged 0)" : "")
            }
            options.emit(JSONForms.quantile(r), text: text)
        }
    }
}

extension Query {
    /// `query bounds --attribute A --epsilon E` (issue 23): a private range for `--bounds`.
    struct Bounds: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A private range of a numeric attribute to use as --bounds (the outer edges of two private quantiles, 0.05 and 0.95 by default).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "The purpose (must have a dp_budget in policy.yaml).") var purpose: String
        @Option(help: "Privacy budget this release spends (> 0), split over the two quantiles (under a zCDP purpose: rho = epsilon²/2).") var epsilon: Double?
        @Option(help: "Under a zCDP purpose: the rho this release spends, split over the two quantiles (instead of --epsilon).") var rho: Double?
        @Option(help: "The numeric attribute.") var attribute: String
        @Option(name: .customLong("where"), help: "Conditions joined by AND: country=DE,age>=30.") var whereClause: String?
        @Option(help: "The low quantile (default 0.05).") var low = 0.05
        @Option(help: "The high quantile (default 0.95).") var high = 0.95
        @Flag(name: .customLong("dry-run"), help: "Print what the release would charge; charge nothing.") var dryRun = false
        @Flag(help: "Do not answer from the release cache: pay for a new release.") var fresh = false

        func validate() throws {
            guard epsilon != nil || rho != nil else { throw ValidationError("give --epsilon (or, under a zCDP purpose, --rho)") }
            if let epsilon { guard epsilon.isFinite, epsilon > 0 else { throw ValidationError("--epsilon must be a positive number, not \(epsilon)") } }
            guard low.isFinite, high.isFinite, low >= 0, high <= 1, low < high else {
                throw ValidationError("--low, --high: two quantiles with 0 <= low < high <= 1")
            }
        }

        func run() throws {
            var request = Vault.BoundsRequest(purpose: purpose, epsilon: epsilon, attribute: attribute, whereClause: whereClause)
            request.low = low
            request.high = high
            request.rho = rho
            request.dryRun = dryRun
            request.fresh = fresh
            let b = try options.openVault().privateBounds(request)
            let r = b.release
            let tail = Quantile.tail(r)
            let text: String
            if r.dryRun {
                text = r.cached ? "dry run: would be answered from the release cache at cost 0; nothing charged" : "dry run: would charge " + tail + "; nothing charged"
            } else if let suggestion = b.suggestion {
                text = suggestion + "\n" + tail
                    + (r.cached ? " (answered from the release cache; charged 0)" : "")
            } else {
                text = tail
            }
            options.emit(JSONForms.bounds(b), text: text)
        }
    }
}
