import ArgumentParser
import DifferentialPrivacy
import Foundation
import ProfileVault
import VaultPolicy
import VaultValues

struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Differentially private queries (role trainer): Laplace-noised aggregates under the purpose's budget.",
        subcommands: [Count.self, Sum.self, Mean.self, Histogram.self])

    struct Options: ParsableArguments {
        @OptionGroup var options: GlobalOptions
        @Option(help: "The purpose (must have a dp_budget in policy.yaml).") var purpose: String
        @Option(help: "Privacy budget this query spends (> 0).") var epsilon: Double
        @Option(help: "The attribute to aggregate (sum, mean) or to histogram.") var attribute: String?
        @Option(help: "Aggregate the values of this event kind instead of an attribute.") var events: String?
        @Option(name: .customLong("where"), help: "Conditions joined by AND: country=DE,age>=30,age<50.") var whereClause: String?
        @Option(name: .customLong("group-by"), help: "A categorical attribute: one noisy answer per value of its domain.") var groupBy: String?
        @Option(name: .customLong("max-contributions"), help: "At most this many events per subject count (default 10).") var maxContributions = Vault.defaultMaxContributions

        func validate() throws {
            guard epsilon.isFinite, epsilon > 0 else { throw ValidationError("--epsilon must be a positive number, not \(epsilon)") }
            guard maxContributions >= 1 else { throw ValidationError("--max-contributions must be at least 1") }
            if attribute != nil && events != nil { throw ValidationError("give --attribute or --events, not both") }
        }

        func run(_ kind: QueryKind) throws {
            let r = try options.openVault().query(Vault.QueryRequest(
                kind: kind, purpose: purpose, epsilon: epsilon, attribute: attribute, events: events,
                whereClause: whereClause, groupBy: groupBy, maxContributions: maxContributions))
            for w in JSONForms.queryWarnings(r) { warn(w) }
            if let v = r.value {
                options.emit(JSONForms.query(r),
                             text: String(format: "%@ = %.4f   95%% interval [%.4f, %.4f]   epsilon %g, scale %.4g, budget left %.4g",
                                          kind.rawValue, v.value, v.ci95.0, v.ci95.1, r.epsilon, r.scale, r.budget.left))
            } else {
                options.emit(JSONForms.query(r),
                             text: r.groups.map { String(format: "%@: %.4f [%.4f, %.4f]", $0.key, $0.value.value, $0.value.ci95.0, $0.value.ci95.1) }.joined(separator: "\n")
                                + String(format: "\nepsilon %g, scale %.4g, budget left %.4g", r.epsilon, r.scale, r.budget.left))
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
            options.emit(JSONForms.budget(states), text: states.map { String(format: "%@: spent %.4g of %.4g, %.4g left; delta spent %.3g of %.3g, %.3g left (period from %@)", $0.purpose, $0.spent, $0.limit, $0.left, $0.deltaSpent, $0.deltaLimit, $0.deltaLeft, DateParsing.iso8601(unixSeconds: $0.periodStart)) }.joined(separator: "\n"))
        }
    }
}
