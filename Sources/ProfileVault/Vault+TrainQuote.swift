import Foundation
public import DifferentialPrivacy
import VaultAudit
import VaultPolicy
import VaultStore
public import VaultValues

/// `train --job J --dry-run` (HTTP `POST /v1/jobs?dry_run=true`): what a job would charge and
/// the noise of each of its releases, from the model's dry run (no data read, nothing sampled,
/// nothing charged), audited as `train.quote`.
public struct TrainQuote: Sendable {
    public var job: String
    public var model: String
    public var purpose: String
    /// The epsilon the job would charge (zCDP: the (epsilon, delta) conversion of `rho`).
    public var epsilon: Double
    /// The delta it would charge (zCDP: the conversion's delta, nothing charged).
    public var delta: Double
    /// zCDP: the rho it would charge.
    public var rho: Double?
    public var mechanism: String
    /// Per release of the model, in order: what, its epsilon share (zCDP: its share of the
    /// job as epsilon units), and each coordinate's noise scale (Laplace b or Gaussian sigma)
    /// in the coordinate's units.
    public var releases: [(what: String, epsilon: Double, scales: [Double])]
    /// The budget as it stands (nothing charged); zCDP: in rho.
    public var budget: BudgetState
    /// Whether the charge would fit the budget left (epsilon or rho, and delta).
    public var fits: Bool
}

/// Where `runJob` leaves a quote.
final class TrainQuoteBox {
    var quote: TrainQuote?
}

extension Vault {
    /// The quote of a job file (see `TrainQuote`): the same checks as `train`, audited as
    /// `train.quote` (a refusal as denied or error, like `train`).
    public func quoteTrain(jobFile: String, jobName: String? = nil) throws -> TrainQuote {
        let parsed = Result { () throws -> TrainingJob in
            let jobs = try Vault.parseJobs(path: jobFile)
            if let jobName {
                guard let j = jobs.first(where: { $0.name == jobName }) else { throw VaultError(.invalidInput, "\(jobFile): no job named \(jobName)") }
                return j
            }
            guard jobs.count == 1 else { throw VaultError(.invalidInput, "\(jobFile): holds \(jobs.count) jobs; choose one with --job NAME") }
            return jobs[0]
        }
        return try quoteTrain(parsed)
    }

    /// The quote of a job already parsed (the HTTP body), or the parser's failure.
    public func quoteTrain(_ parsed: Result<TrainingJob, any Error>) throws -> TrainQuote {
        let job = try? parsed.get()
        return try audited("train.quote", .other, permission: "train", purpose: job?.purpose) { context in
            let box = TrainQuoteBox()
            _ = try runJob(try parsed.get(), context: context, progress: { _ in }, quote: box)
            guard let q = box.quote else { throw VaultError(.internalFailure, "the job's dry run ended without a quote") }
            return q
        }
    }

    /// Fills the quote from the model's dry run and appends its `train.quote` entry.
    func fillTrainQuote(_ box: TrainQuoteBox, job: TrainingJob, purpose p: Purpose, budget: DPBudget, epsilon eps: Epsilon, delta: Double,
                        rho: Rho?, dry: PrivateSession, fields: [String], context: AuditContext) throws {
        let state: BudgetState
        let fits: Bool
        if let rho {
            state = try zcdpBudgetState(purpose: p.name, budget: budget)
            fits = rho.value <= state.left * (1 + 1e-12)
        } else {
            state = try store.budgetState(purpose: p.name, limit: budget.epsilon, deltaLimit: budget.delta, periodSeconds: budget.periodSeconds)
            fits = eps.chargedValue <= state.left * (1 + 1e-12) && delta <= state.deltaLeft * (1 + 1e-9)
        }
        var releases: [(what: String, epsilon: Double, scales: [Double])] = []
        for (i, entry) in dry.ledger.enumerated() {
            releases.append((entry.what, entry.epsilon, i < dry.noiseScales.count ? dry.noiseScales[i].scales : []))
        }
        let quote = TrainQuote(
            job: job.name, model: job.model, purpose: p.name,
            epsilon: rho.map { Rho.epsilon(rho: $0.value, delta: budget.conversionDelta) } ?? eps.chargedValue,
            delta: rho == nil ? delta : budget.conversionDelta, rho: rho?.value,
            mechanism: rho == nil ? "discrete Laplace, user-level" : "discrete Gaussian, user-level (zCDP)",
            releases: releases, budget: state, fits: fits)
        let charge = rho.map { "rho \($0.value)" } ?? "epsilon \(eps.chargedValue)" + (delta > 0 ? ", delta \(AuditLog.decimal(delta))" : "")
        try store.audit([context.record("train.quote", .other, purpose: p.name, fields: fields,
                                        detail: "job \(job.name) model \(job.model); \(charge) quoted, nothing charged")])
        box.quote = quote
    }
}

extension JSONForms {
    /// `train --dry-run --json` and `POST /v1/jobs?dry_run=true`.
    public static func trainQuote(_ q: TrainQuote) -> JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("dry_run", .bool(true)), ("job", .string(q.job)), ("model", .string(q.model)), ("purpose", .string(q.purpose)),
            ("epsilon", .double(q.epsilon)), ("delta", .double(q.delta)), ("mechanism", .string(q.mechanism)),
            ("releases", .array(q.releases.map { r in
                .object([("what", .string(r.what)), ("epsilon", num(r.epsilon)), ("scales", .array(r.scales.map { num($0) }))])
            })),
            ("budget_left", num(q.budget.left)), ("budget_spent", num(q.budget.spent)), ("fits", .bool(q.fits)),
        ]
        if let rho = q.rho { pairs += [("rho", .double(rho)), ("budget_unit", .string("rho"))] }
        return .object(pairs)
    }
}
