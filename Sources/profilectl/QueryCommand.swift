import ArgumentParser
import DifferentialPrivacy
import Foundation
import ProfileVault
import VaultPolicy
import VaultValues

struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Differentially private queries (role trainer): Laplace-noised aggregates under the purpose's budget.",
        subcommands: [Count.self, Sum.self, Mean.self, Histogram.self, Quantile.self, Bounds.self])

    struct Options: ParsableArguments {
        @OptionGroup var options: GlobalOptions
        @Option(help: "The purpose (must have a dp_budget in policy.yaml).") var purpose: String
        @Option(help: "Privacy budget this query spends (> 0); or give --accuracy.") var epsilon: Double?
        @Option(help: "The attribute to aggregate (sum, mean) or to histogram.") var attribute: String?
        @Option(help: "Aggregate the values of this event kind instead of an attribute.") var events: String?
        @Option(name: .customLong("where"), help: "Conditions joined by AND: country=DE,age>=30,age<50.") var whereClause: String?
        @Option(name: .customLong("group-by"), help: "A categorical attribute: one noisy answer per value of its domain.") var groupBy: String?
        @Option(name: .customLong("max-contributions"), help: "At most this many events per subject count (default 10).") var maxContributions = Vault.defaultMaxContributions
        @Option(help: "Spend the smallest epsilon whose interval half-width (at --confidence) is at most this, in the measure's units (instead of --epsilon).") var accuracy: Double?
        @Option(help: "Confidence level of --accuracy and of the reported interval (default 0.95).") var confidence: Double?
        @Option(help: "LO,HI: clamp each value to these bounds (inside the schema's; sum and mean).") var bounds: String?
        @Flag(name: .customLong("dry-run"), help: "Print the epsilon, noise scale and interval the query would have; charge nothing.") var dryRun = false
        @Option(help: "Under a zCDP purpose (dp_budget.rho): the rho this query spends (instead of --epsilon or --accuracy).") var rho: Double?
        @Flag(help: "Do not answer from the release cache: pay for a new release (it replaces the stored one).") var fresh = false
        @Flag(name: .customLong("report-clamped"), help: "Also release the count and share of values outside --bounds (sum, mean), charging --clamped-epsilon more.") var reportClamped = false
        @Option(name: .customLong("clamped-epsilon"), help: "The extra epsilon of --report-clamped (default 0.1).") var clampedEpsilon: Double?

        func validate() throws {
            switch [epsilon != nil, accuracy != nil, rho != nil].filter({ $0 }).count {
            case 0: throw ValidationError("give --epsilon or --accuracy (or --rho under a zCDP purpose)")
            case 1: break
            default: throw ValidationError("give one of --epsilon, --accuracy and --rho")
            }
            if let rho { guard rho.isFinite, rho > 0 else { throw ValidationError("--rho must be a positive number, not \(rho)") } }
            if let epsilon { guard epsilon.isFinite, epsilon > 0 else { throw ValidationError("--epsilon must be a positive number, not \(epsilon)") } }
            if let accuracy { guard accuracy.isFinite, accuracy > 0 else { throw ValidationError("--accuracy must be a positive number, not \(accuracy)") } }
            if bounds != nil { _ = try parsedBounds() }
            if let clampedEpsilon {
                guard reportClamped else { throw ValidationError("--clamped-epsilon needs --report-clamped") }
                guard clampedEpsilon.isFinite, clampedEpsilon > 0 else { throw ValidationError("--clamped-epsilon must be a positive number, not \(clampedEpsilon)") }
            }
            guard maxContributions >= 1 else { throw ValidationError("--max-contributions must be at least 1") }
            if attribute != nil && events != nil { throw ValidationError("give --attribute or --events, not both") }
        }

        /// `--bounds LO,HI` as two numbers (a usage error otherwise).
        func parsedBounds() throws -> (lower: Double, upper: Double)? {
            guard let bounds else { return nil }
            let parts = bounds.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let lo = Double(parts[0]), let hi = Double(parts[1]), lo.isFinite, hi.isFinite, lo <= hi else {
                throw ValidationError("--bounds: expected LO,HI, two finite numbers with LO <= HI")
            }
            return (lo, hi)
        }

        func run(_ kind: QueryKind) throws {
            var request = Vault.QueryRequest(
                kind: kind, purpose: purpose, epsilon: epsilon, attribute: attribute, events: events,
                whereClause: whereClause, groupBy: groupBy, maxContributions: maxContributions)
            request.accuracy = accuracy
            request.confidence = confidence
            request.bounds = try parsedBounds()
            request.dryRun = dryRun
            request.rho = rho
            request.fresh = fresh
            if reportClamped { request.reportClamped = clampedEpsilon ?? Vault.defaultClampedEpsilon }
            if dryRun {
                let quote = try options.openVault().quoteQuery(request)
                let interval = quote.halfWidth.map { String(format: "interval +/- %.4g", $0) }
                    ?? quote.meanHalfWidthTimesCount.map { String(format: "interval +/- %.4g / n for n counted values", $0) } ?? ""
                if quote.cached {
                    options.emit(JSONForms.queryQuote(quote),
                                 text: String(format: "dry run: %@ would be answered from the release cache at cost 0 (the stored release has epsilon %g); budget left %.4g; nothing charged",
                                              kind.rawValue, quote.epsilon, quote.budget?.left ?? 0))
                    return
                }
                if let rho = quote.rho {
                    options.emit(JSONForms.queryQuote(quote),
                                 text: String(format: "dry run: %@ would charge rho %g (zCDP; epsilon %.4g at delta %g), Gaussian sigma %.4g, %@ at %g%% confidence; rho left %.4g%@; nothing charged",
                                              kind.rawValue, rho, quote.epsilon, quote.delta, quote.scale, interval, quote.confidence * 100, quote.budget?.left ?? 0,
                                              quote.fits == false ? " (does not fit)" : ""))
                    return
                }
                options.emit(JSONForms.queryQuote(quote),
                             text: String(format: "dry run: %@ would charge epsilon %g (delta 0), scale %.4g, %@ at %g%% confidence; budget left %.4g%@; nothing charged",
                                          kind.rawValue, quote.epsilon, quote.scale, interval, quote.confidence * 100, quote.budget?.left ?? 0,
                                          quote.fits == false ? " (does not fit)" : ""))
                return
            }
            let r = try options.openVault().query(request)
            for w in JSONForms.queryWarnings(r) { warn(w) }
            if let rho = r.rho {   // zCDP: rho charged, its (epsilon, delta) form, Gaussian sigma, rho left
                let cost = String(format: "rho %g (zCDP; epsilon %.4g at delta %g), sigma %.4g, rho left %.4g", rho, r.epsilon, r.conversionDelta ?? 0, r.scale, r.budget.left)
                if let v = r.value {
                    let i = v.interval ?? v.ci95
                    options.emit(JSONForms.query(r), text: String(format: "%@ = %.4f   %g%% interval [%.4f, %.4f]   ", kind.rawValue, v.value, r.confidence * 100, i.0, i.1) + cost)
                } else {
                    options.emit(JSONForms.query(r),
                                 text: r.groups.map { String(format: "%@: %.4f [%.4f, %.4f]", $0.key, $0.value.value, ($0.value.interval ?? $0.value.ci95).0, ($0.value.interval ?? $0.value.ci95).1) }.joined(separator: "\n") + "\n" + cost)
                }
                return
            }
            let cachedNote = r.cached ? " (answered from the release cache, released \(r.releasedAtMillis.map { Vault.isoTime(millis: $0) } ?? "earlier"); charged 0)" : ""
            let clampedNote = r.clamped.map { String(format: "\nclamped: %.4g values (interval [%.4g, %.4g]), share %.4g (interval [%.4g, %.4g]), epsilon %g",
                                                      $0.count, $0.countInterval.0, $0.countInterval.1, $0.share, $0.shareInterval.0, $0.shareInterval.1, $0.epsilon) } ?? ""
            if let v = r.value {
                let i = v.interval ?? v.ci95
                options.emit(JSONForms.query(r),
                             text: String(format: "%@ = %.4f   %g%% interval [%.4f, %.4f]   epsilon %g, scale %.4g, budget left %.4g",
                                          kind.rawValue, v.value, r.confidence * 100, i.0, i.1, r.epsilon, r.scale, r.budget.left) + cachedNote + clampedNote)
            } else {
                options.emit(JSONForms.query(r),
                             text: r.groups.map { String(format: "%@: %.4f [%.4f, %.4f]", $0.key, $0.value.value, ($0.value.interval ?? $0.value.ci95).0, ($0.value.interval ?? $0.value.ci95).1) }.joined(separator: "\n")
                                + String(format: "\nepsilon %g, scale %.4g, budget left %.4g", r.epsilon, r.scale, r.budget.left) + cachedNote + clampedNote)
            }
        }
    }

    struct Count: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Noisy count of subjects (or, with --events, of their events, capped).")
        @OptionGroup var q: Options
        func run() throws { try q.run(.count) }
    }
    struct Sum: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Noisy sum of an attribute or of event values, clamped to the schema's bounds.")
        @OptionGroup var q: Options
        func run() throws { try q.run(.sum) }
    }
    struct Mean: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Noisy mean (noisy centred sum / noisy count, epsilon split in half).")
        @OptionGroup var q: Options
        func run() throws { try q.run(.mean) }
    }
    struct Histogram: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Noisy counts over a categorical attribute's declared domain.")
        @OptionGroup var q: Options
        func run() throws { try q.run(.histogram) }
    }
}

struct Budget: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Privacy budget per purpose (role trainer).", subcommands: [Status.self])

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Budget spent and left per purpose in the current period.")
        @OptionGroup var options: GlobalOptions

        func run() throws {
            let states = try options.openVault().budgetStatus()
            options.emit(JSONForms.budget(states), text: states.map { s in
                if s.zcdp {
                    return String(format: "%@: zCDP rho spent %.4g of %.4g, %.4g left; as (epsilon, delta): epsilon %.4g of %.4g at delta %g (period from %@)",
                                  s.purpose, s.spent, s.limit, s.left, s.epsilonEquivalentSpent, s.epsilonEquivalentLimit, s.conversionDelta,
                                  DateParsing.iso8601(unixSeconds: s.periodStart))
                }
                return String(format: "%@: spent %.4g of %.4g, %.4g left; delta spent %.3g of %.3g, %.3g left (period from %@)", s.purpose, s.spent, s.limit, s.left, s.deltaSpent, s.deltaLimit, s.deltaLeft, DateParsing.iso8601(unixSeconds: s.periodStart))
            }.joined(separator: "\n"))
        }
    }
}
