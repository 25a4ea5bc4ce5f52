import ArgumentParser
import Foundation
import ProfileVault
import VaultValues

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Scores subjects with a trained model inside the vault (permission score, role app): linear or logistic regression, random forest (score) or kmeans (segment).",
        discussion: """
            The model must carry a MAC that verifies under this store's keyring (exit 1 otherwise); its purpose must still allow the model and read its features (exit 77 otherwise). \
            Subjects are scored under the model's purpose: an unknown, erased, unconsented, restricted or objecting subject, or one without a feature value, gets one and the same answer. \
            --all needs --top N (1 to 10000) and answers the N highest scores. --min-score keeps scores at or above it. \
            Output: JSON Lines {"customer_id","score"} or {"customer_id","segment"} ("error" for a subject not scored). See docs/cli.md and docs/models.md.
            """)

    @OptionGroup var options: GlobalOptions
    @Option(help: "The model artifact (JSON written by train).") var model: String
    @Option(help: "One customer ID.") var subject: String?
    @Option(help: "A file with one customer ID per line.") var subjects: String?
    @Flag(help: "Every subject (needs --top).") var all = false
    @Option(help: "Only the N highest scores (1 to 10000).") var top: Int?
    @Option(help: "Only scores at or above S (a finite number).") var minScore: Double?

    func validate() throws {
        if [subject != nil, subjects != nil, all].filter({ $0 }).count != 1 { throw ValidationError("give exactly one of --subject, --subjects or --all") }
        do {
            try Vault.checkScoreOptions(top: top, minScore: minScore, all: all, names: ("--top", "--min-score", "--all"))
        } catch let e as VaultError {
            throw ValidationError(e.message)
        }
    }

    func run() throws {
        let selection: Vault.ScoreSelection = all ? .all : .subjects(subject.map { .one($0) } ?? .file(subjects ?? ""))
        let rows = try options.openVault().score(model: .file(model), selection, top: top, minScore: minScore)
        var out = ""
        for r in rows {
            var fields: [(String, JSONValue)] = [("customer_id", .string(r.customerID))]
            if let s = r.score { fields.append(("score", .double(s))) }
            if let k = r.segment { fields.append(("segment", .int(Int64(k)))) }
            if let reason = r.reason { fields.append(("error", .string(reason))) }
            out += JSONValue.object(fields).rendered(pretty: false) + "\n"
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
