import ArgumentParser
import Foundation
import PrivateModels
import ProfileVault
import VaultValues

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a compliance-gated training job (role trainer): the model sees only DP releases.",
        discussion: "JOB.yaml declares job, purpose, model, features, epsilon (SPEC §6). A job the gate refuses exits 77 with the reason. See docs/models.md.")

    @OptionGroup var options: GlobalOptions
    @Argument(help: "The job file (YAML).") var jobFile: String
    @Option(help: "Write the model artifact (JSON) here; without it the artifact goes to stdout.") var out: String?
    @Option(help: "The job to run when the file holds several (by its `job:` name).") var job: String?
    @Flag(help: "Replace an existing --out file (never the keyring, the store or a policy file).") var force = false
    @Flag(name: .customLong("dry-run"), help: "Print what the job would charge (epsilon, or rho under a zCDP purpose) and the noise of each release; read no data, charge nothing.") var dryRun = false

    func validate() throws {
        if force && out == nil { throw ValidationError("--force needs --out") }
        if dryRun && out != nil { throw ValidationError("--dry-run writes no model: drop --out") }
    }

    func run() throws {
        let vault = try options.openVault()
        if dryRun {
            let q = try vault.quoteTrain(jobFile: jobFile, jobName: job)
            let charge = q.rho.map { String(format: "rho %g (zCDP; epsilon %.4g at delta %g)", $0, q.epsilon, q.delta) }
                ?? String(format: "epsilon %g", q.epsilon) + (q.delta > 0 ? String(format: ", delta %g", q.delta) : "")
            var lines = ["dry run: job \(q.job) (model \(q.model), purpose \(q.purpose)) would charge \(charge); \(q.mechanism)"]
            for r in q.releases {
                let scales = r.scales.isEmpty ? "" : String(format: " noise scale %.4g", r.scales.max() ?? 0) + (r.scales.count > 1 ? " (largest of \(r.scales.count) coordinates)" : "")
                lines.append("  \(r.what):" + scales)
            }
            lines.append(String(format: "%@ left %.4g%@; nothing charged", q.rho == nil ? "budget" : "rho", q.budget.left, q.fits ? "" : " (does not fit)"))
            options.emit(JSONForms.trainQuote(q), text: lines.joined(separator: "\n"))
            return
        }
        // The output is opened before training: a refused path (exit 73) charges no budget.
        let file = try out.map { try vault.createOutput($0, force: force, what: "the model file") }
        let r = try vault.train(jobFile: jobFile, jobName: job, progress: { note($0) })
        for w in r.warnings { warn(w) }
        guard let out, let file else {
            FileHandle.standardOutput.write(r.json)
            FileHandle.standardOutput.write(Data("\n".utf8))
            return
        }
        try file.write([UInt8](r.json))
        try file.commit()
        let eps = r.artifact.privacy?.epsilon ?? 0
        // Under a zCDP purpose the job charged rho (epsilon is its conversion) and the budget
        // left is in rho: both say so, as query results do.
        var pairs: [(String, JSONValue)] = [("model", .string(r.artifact.model.rawValue)), ("epsilon", .double(eps))]
        if let rho = r.rho { pairs += [("rho", .double(rho)), ("rho_charged", .double(rho))] }
        pairs += [("out", .string(out)), ("job", .string(r.artifact.privacy?.job ?? "")),
                  ("budget_left", .double((r.budget.left * 1e6).rounded() / 1e6)), ("budget_unit", .string(r.rho == nil ? "epsilon" : "rho")),
                  ("warnings", .array(r.warnings.map { .string($0) }))]
        let charged = r.rho.map { "rho \($0) (epsilon \(eps) as its conversion)" } ?? "epsilon \(eps)"
        options.emit(.object(pairs),
                     text: "trained \(r.artifact.model.rawValue) (job \(r.artifact.privacy?.job ?? "")), \(charged), written to \(out); \(r.rho == nil ? "budget" : "rho") left \(String(format: "%.4g", r.budget.left))")
    }
}

struct Recommend: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-N items for subjects from a recommender model (permission serve_recommendations, role app), never items they already have.",
        discussion: "The model must carry a MAC that verifies under this store's keyring (exit 1 otherwise). --top is at most 100 (exit 64 above); at most a tenth of the model's items are returned. An unknown, erased or unconsented subject gets one and the same answer. Output: one line per subject, JSON Lines with --json: {\"customer_id\",\"items\"}.")

    @OptionGroup var options: GlobalOptions
    @Option(help: "The recommender model artifact.") var model: String
    @OptionGroup var who: SubjectOptions
    @Option(help: "How many items per subject (default 10; at most 100): at most a tenth of the model's items are returned.") var top: Int?

    func validate() throws {
        if let top, !(top >= 1 && top <= Vault.maxRecommendations) { throw ValidationError("--top must be between 1 and \(Vault.maxRecommendations)") }
    }

    func run() throws {
        let selection = who.selection
        let rows = try options.openVault().recommend(modelPath: model, selection, top: top)
        var out = ""
        for r in rows {
            if options.json {
                var fields: [(String, JSONValue)] = [("customer_id", .string(r.customerID)), ("items", .array(r.items.map { .string($0) }))]
                if let reason = r.reason { fields.append(("error", .string(reason))) }
                out += JSONValue.object(fields).rendered(pretty: false) + "\n"
            } else {
                out += "\(r.customerID): " + (r.reason.map { "(\($0))" } ?? r.items.joined(separator: ", ")) + "\n"
            }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
