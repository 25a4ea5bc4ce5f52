import ArgumentParser
import Foundation
import PrivateModels
import ProfileVault
import VaultAudit
import VaultStore

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a compliance-gated training job (role trainer): the model sees only DP releases.",
        discussion: "JOB.yaml declares job, purpose, model, features, epsilon (SPEC §6). A job the gate refuses exits 77 with the reason. See docs/models.md.")

    @OptionGroup var options: GlobalOptions
    @Argument(help: "The job file (YAML).") var jobFile: String
    @Option(help: "Write the model artifact (JSON) here; without it the artifact goes to stdout.") var out: String?
    @Option(help: "The job to run when the file holds several (by its `job:` name).") var job: String?

    func run() throws {
        let vault = try options.openVault()
        let r = try vault.train(jobFile: jobFile, jobName: job, progress: { note($0) })
        guard let out else {
            FileHandle.standardOutput.write(r.json)
            FileHandle.standardOutput.write(Data("\n".utf8))
            return
        }
        do {
            try r.json.write(to: URL(fileURLWithPath: out), options: .atomic)
        } catch {
            throw VaultError(.invalidInput, "\(out): cannot write the model file")
        }
        let eps = r.artifact.privacy?.epsilon ?? 0
        options.emit(.object([("model", .string(r.artifact.model.rawValue)), ("epsilon", .double(eps)), ("out", .string(out)),
                              ("job", .string(r.artifact.privacy?.job ?? "")), ("budget_left", .double((r.budget.left * 1e6).rounded() / 1e6))]),
                     text: "trained \(r.artifact.model.rawValue) (job \(r.artifact.privacy?.job ?? "")), epsilon \(eps), written to \(out); budget left \(String(format: "%.4g", r.budget.left))")
    }
}

struct Recommend: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-N items for subjects from a recommender model (role trainer), never items they already have.",
        discussion: "Output: one line per subject, JSON Lines with --json: {\"customer_id\",\"items\"}.")

    @OptionGroup var options: GlobalOptions
    @Option(help: "The recommender model artifact.") var model: String
    @OptionGroup var who: SubjectOptions
    @Option(help: "How many items per subject (default 10).") var top = 10

    func validate() throws {
        guard top >= 1 && top <= 1000 else { throw ValidationError("--top must be between 1 and 1000") }
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
