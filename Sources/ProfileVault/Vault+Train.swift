public import Foundation
public import DifferentialPrivacy
public import PrivateModels
import VaultPolicy
import VaultStore
import VaultAudit
import Yams
public import VaultValues

/// A training job file (SPEC §6), parsed but not yet checked against the policy.
public struct TrainingJob: Sendable {
    public var name: String
    public var purpose: String
    public var model: String
    public var features: [String]
    public var target: String?
    public var events: String?
    public var params: [String: Double]
    /// segments: `params.by` (a categorical attribute) or `params.from_model` (a kmeans artifact).
    public var segmentBy: String?
    public var fromModel: String?
    /// `items_from:` the name of a catalog the policy declares (`catalogs:` in policy.yaml).
    public var itemsFrom: String?
    /// recommender: count popularity over the events from this time on (`events_since:`).
    public var eventsSince: Int64?
    /// Job-declared per-subject event aggregates (`derived:`), usable as features and target.
    public var derived: [DerivedFeature]
    public var epsilon: Double
    public var delta: Double
    public var file: String
    public var line: Int

    /// One entry of `derived:` with where it is in the job file.
    public struct DerivedFeature: Sendable {
        public var attribute: DerivedAttribute
        /// The lines of its name and of its `events:` value.
        public var line: Int
        public var eventsLine: Int
    }
}

extension Vault {
    static let plainNameKeys: Set<String> = ["job", "purpose", "model", "events", "target"]   // items_from: its own check (a catalog name)

    /// A name a job may give and messages may repeat: 1 to 64 of `A-Z a-z 0-9 _ . -`, starting
    /// with a letter or digit.
    static func isPlainLabel(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...64).contains(u.count), let first = u.first,
              (0x30...0x39).contains(first) || (0x41...0x5A).contains(first) || (0x61...0x7A).contains(first) else { return false }
        return u.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x5F || $0 == 0x2E || $0 == 0x2D }
    }

    static let jobKeys: Set<String> = ["job", "purpose", "model", "features", "target", "events", "params", "epsilon", "delta", "items_from", "events_since", "derived"]
    static let derivedKeys: Set<String> = ["events", "aggregate", "from", "before", "bounds"]
    static let paramKeys: [String: Set<String>] = [
        "kmeans": ["k", "iterations", "init_share"],
        "segments": ["by", "from_model"],
        "linear_regression": ["private_ranges"], "logistic_regression": ["private_ranges"],
        "random_forest": ["trees", "depth", "leaf_prior", "private_ranges"],
        "association_rules": ["max_items_per_subject", "vocabulary_size", "triple_vocabulary", "support_threshold", "min_support",
                              "min_confidence", "max_rules", "selection_items", "selection_share"],
        "recommender": ["max_items_per_subject", "vocabulary_size", "neighbors", "similarity_threshold", "popularity_weight", "popularity_share",
                        "candidates", "content_weight", "by", "segment_share", "segment_prior", "segment_vocabulary", "factors",
                        "selection_items", "selection_share"],
    ]

    /// Parses a job file: one YAML document, or several (`---`) with `name` choosing one.
    /// Every problem is invalid input (exit 65) naming file, line and field.
    public static func parseJobs(path: String) throws -> [TrainingJob] {
        guard let data = FileManager.default.contents(atPath: path) else { throw VaultError(.notFound, "\(path): no such file") }
        guard data.count <= 1 << 20, let text = String(data: data, encoding: .utf8) else { throw VaultError(.invalidInput, "\(path): not a UTF-8 text file of at most 1 MiB") }
        return try parseJobs(text: text, path: path)
    }

    /// A job file's diagnostic as an invalid-input error: the message is the diagnostic's own
    /// text (`FILE:LINE: field: reason`), and its place is kept as a structure (`location`):
    /// an HTTP answer carries it as an object, as it does for a bad ingest record.
    /// A field path that is not a name (an unknown key may be anything a client sent) is left
    /// out of the structure; the message still says it, as it always did.
    static func diagnostic(_ d: PolicyDiagnostic) -> VaultError {
        let field = d.field.flatMap { f in
            f.utf8.count <= 128 && f.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_.-[]".unicodeScalars.contains($0)) } ? f : nil
        }
        // A job sent over HTTP is parsed as "request body", one JSON line: no file, no line.
        let body = d.file == "request body"
        return VaultError(.invalidInput, d.description, reason: d.reason, at: .init(file: body ? nil : d.file, line: body ? nil : d.line, field: field))
    }

    /// `parseJobs(path:)` on the file's text (`path` names the file in messages and anchors
    /// a relative `from_model` path; `items_from` names a catalog of the policy). The job fuzz
    /// target calls this.
    public static func parseJobs(text: String, path: String) throws -> [TrainingJob] {
        func fail(_ node: Node?, _ field: String?, _ reason: String) -> VaultError {
            diagnostic(PolicyDiagnostic(file: path, line: node?.mark?.line, field: field, reason: reason))
        }
        if let tab = text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex(where: { $0.prefix { $0 == " " || $0 == "\t" }.contains("\t") }) {
            throw diagnostic(PolicyDiagnostic(file: path, line: tab + 1, reason: "tab character used for indentation (indent with spaces)"))
        }
        var docs: [Node] = []
        do {
            for d in try Yams.compose_all(yaml: text) { docs.append(d) }
        } catch let e as YamlError {
            throw VaultError(.invalidInput, "\(path): YAML error: \(String(describing: e).split(separator: "\n").first ?? "")")
        } catch {
            throw VaultError(.invalidInput, "\(path): YAML error")
        }
        guard !docs.isEmpty else { throw VaultError(.invalidInput, "\(path): the file holds no job") }
        return try docs.map { root in
            guard let map = root.mapping else { throw fail(root, nil, "a job is a mapping (job, purpose, model, features, epsilon, ...)") }
            var seen: Set<String> = []
            for (k, _) in map {
                guard let key = k.string else { throw fail(k, nil, "keys are plain names") }
                guard jobKeys.contains(key) else { throw fail(k, key, "unknown key (known: \(jobKeys.sorted().joined(separator: ", ")))") }
                guard seen.insert(key).inserted else { throw fail(k, key, "duplicate key") }
            }
            func string(_ key: String, required: Bool) throws -> String? {
                guard let n = map[key] else {
                    if required { throw fail(root, key, "missing (a job needs job, purpose, model and epsilon)") }
                    return nil
                }
                guard let s = n.scalar?.string, !s.isEmpty else { throw fail(n, key, "expected a non-empty string") }
                if Self.plainNameKeys.contains(key) { try plain(s, n, key) }
                return s
            }
            /// Names a job gives (job, purpose, model, events, target, features, params.by,
            /// items_from) are plain: messages, HTTP answers and the audit log may then name
            /// them, and a value pasted in their place (an e-mail, a phone number) is refused
            /// without being repeated.
            func plain(_ s: String, _ n: Node, _ field: String) throws {
                guard Self.isPlainLabel(s) else {
                    throw fail(n, field, "expected a plain name (letters, digits, _ . -; at most 64 characters, starting with a letter or digit); not shown")
                }
            }
            func number(_ n: Node, _ field: String) throws -> Double {
                guard let s = n.scalar?.string, let d = Double(s), d.isFinite else { throw fail(n, field, "expected a number") }
                return d
            }
            let name = try string("job", required: true)!
            let model = try string("model", required: true)!
            guard let known = paramKeys[model] else {
                throw fail(map["model"], "model", "unknown model \(model) (known: \(ModelKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let epsNode = map["epsilon"] else { throw fail(root, "epsilon", "missing (a job needs job, purpose, model and epsilon)") }
            let eps = try number(epsNode, "epsilon")
            guard eps > 0 else { throw fail(epsNode, "epsilon", "must be positive") }
            guard Epsilon(eps) != nil else { throw fail(epsNode, "epsilon", "must be a number from 2^-20 (about 9.54e-07) to 1000000") }
            var delta = 1e-6
            if let dn = map["delta"] {
                delta = try number(dn, "delta")
                guard delta > 0 && delta < 1e-3 else { throw fail(dn, "delta", "must be in (0, 0.001)") }
            }
            var features: [String] = []
            if let fn = map["features"] {
                guard let seq = fn.sequence else { throw fail(fn, "features", "expected a list of attribute names") }
                for (i, item) in seq.enumerated() {
                    guard let s = item.scalar?.string, !s.isEmpty else { throw fail(item, "features[\(i)]", "expected an attribute name") }
                    try plain(s, item, "features[\(i)]")
                    guard !features.contains(s) else { throw fail(item, "features[\(i)]", "\(s) is listed twice") }
                    features.append(s)
                }
            }
            let derived = try parseDerived(map["derived"], fail: fail, number: number)
            var params: [String: Double] = [:]
            var by: String?, fromModel: String?
            var paramLines: [String: Node] = [:]
            if let pn = map["params"] {
                guard let pm = pn.mapping else { throw fail(pn, "params", "expected a mapping") }
                for (k, v) in pm {
                    let key = k.string ?? "?"
                    guard known.contains(key) else {
                        throw fail(k, "params.\(key)", "not a parameter of \(model) (known: \(known.isEmpty ? "none" : known.sorted().joined(separator: ", ")))")
                    }
                    if key == "by" || key == "from_model" {
                        guard let s = v.scalar?.string, !s.isEmpty else { throw fail(v, "params.\(key)", "expected a name") }
                        if key == "by" { try plain(s, v, "params.by") }
                        if key == "by" { by = s } else { fromModel = s }
                    } else {
                        let x = try number(v, "params.\(key)")
                        // The model's own range (whole numbers where it takes them), so no number
                        // (1e300, 2^-1074, 2.5 items) reaches a model it would break.
                        guard let kind = ModelKind(rawValue: model) else { throw fail(map["model"], "model", "unknown model \(model)") }
                        if let problem = ModelParameters.problem(kind, key, x) { throw fail(v, "params.\(key)", problem) }
                        if key == "init_share" && !(x > 0 && x < 0.8) { throw fail(v, "params.\(key)", "expected a share in (0, 0.8)") }
                        params[key] = x
                        paramLines[key] = v
                    }
                }
            }
            var job = TrainingJob(name: name, purpose: try string("purpose", required: true)!, model: model, features: features,
                                  target: try string("target", required: false), events: try string("events", required: false),
                                  params: params, segmentBy: by, fromModel: fromModel, itemsFrom: try string("items_from", required: false),
                                  derived: derived, epsilon: eps, delta: delta, file: path, line: root.mark?.line ?? 1)
            // What each model needs, as input errors.
            switch model {
            case "kmeans", "segments", "linear_regression", "logistic_regression", "random_forest":
                if features.isEmpty { throw fail(root, "features", "\(model) needs features (a list of numeric attributes)") }
            default: break
            }
            if (model == "linear_regression" || model == "logistic_regression" || model == "random_forest") && job.target == nil { throw fail(root, "target", "\(model) needs a target attribute") }
            if (model == "recommender" || model == "association_rules") && job.events == nil {
                throw fail(root, "events", "\(model) needs events: (the event kind it learns from)")
            }
            if let tn = map["events_since"] {
                guard model == "recommender" else { throw fail(tn, "events_since", "only a recommender counts popularity over a window") }
                // A date or time, or a number of days before now (`60d`: the last 60 days).
                let text = tn.scalar?.string ?? ""
                if text.count >= 2, text.count <= 6, text.hasSuffix("d"), let days = Int(text.dropLast()), days > 0 {
                    job.eventsSince = Int64(Date().timeIntervalSince1970) - Int64(days) * 86_400
                } else if let t = DateParsing.unixSeconds(fromISO8601: Substring(text)) {
                    job.eventsSince = t
                } else {
                    throw fail(tn, "events_since", "expected a date (YYYY-MM-DD), an ISO 8601 time or a number of days before now (60d)")
                }
            }
            // Ranges that depend on another parameter, checked here (not only by the model) so
            // the refusal names the line and field, before anything is charged.
            if model == "association_rules" {
                let v = params["vocabulary_size"] ?? 50, v3 = params["triple_vocabulary"] ?? min(15, v)
                if v3 > min(v, 60) {
                    throw fail(paramLines["triple_vocabulary"] ?? paramLines["vocabulary_size"] ?? map["params"], paramLines["triple_vocabulary"] != nil ? "params.triple_vocabulary" : "params.vocabulary_size",
                               "triple_vocabulary (\(Int(v3))) must not exceed vocabulary_size (\(Int(v)))")
                }
            }
            if model == "segments" && (by == nil) == (fromModel == nil) { throw fail(map["params"] ?? root, "params", "segments needs exactly one of params.by and params.from_model") }
            // items_from names a catalog the policy declares (catalogs: in policy.yaml), never a
            // file: a job must not make train read what it likes (the keyring) into an artifact.
            if let f = job.itemsFrom, !isPlainName(f) {
                throw fail(map["items_from"], "items_from",
                           "expected the name of a catalog declared in the policy, not a path; declare the file in policy.yaml "
                           + "(catalogs: { products: catalogs/products.tsv }, relative to the policy directory) and write items_from: products")
            }
            if let f = job.fromModel, !f.hasPrefix("/") {
                job.fromModel = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(f).path
            }
            return job
        }
    }

    /// `derived:` — a mapping of names to `{ events: KIND, aggregate: sum | count | distinct_items,
    /// from: DATE, before: DATE, bounds: [lo, hi] }` (from inclusive, before exclusive, both
    /// optional; dates `YYYY-MM-DD` or ISO 8601 times, UTC unless a zone is given). Whether the
    /// event kind exists and may be read is the gate's business (`runJob`).
    static func parseDerived(_ node: Node?, fail: (Node?, String?, String) -> VaultError,
                             number: (Node, String) throws -> Double) throws -> [TrainingJob.DerivedFeature] {
        guard let node else { return [] }
        guard let map = node.mapping, !map.isEmpty else {
            throw fail(node, "derived", "expected a mapping of names to { events, aggregate, from, before, bounds }")
        }
        var out: [TrainingJob.DerivedFeature] = []
        for (k, v) in map {
            guard let name = k.string, isPlainName(name) else {
                throw fail(k, "derived", "\(k.string ?? "?") is not a valid name (a lowercase letter, then lowercase letters, digits or _; at most 63 characters)")
            }
            let field = "derived.\(name)"
            guard !out.contains(where: { $0.attribute.name == name }) else { throw fail(k, field, "duplicate name") }
            guard let spec = v.mapping else { throw fail(v, field, "expected a mapping { events, aggregate, from, before, bounds }") }
            var seen: Set<String> = []
            for (sk, _) in spec {
                let key = sk.string ?? "?"
                guard derivedKeys.contains(key) else { throw fail(sk, "\(field).\(key)", "unknown key (known: \(derivedKeys.sorted().joined(separator: ", ")))") }
                guard seen.insert(key).inserted else { throw fail(sk, "\(field).\(key)", "duplicate key") }
            }
            guard let en = spec["events"] else { throw fail(v, "\(field).events", "missing (the event kind whose events are aggregated)") }
            guard let kind = en.scalar?.string, !kind.isEmpty else { throw fail(en, "\(field).events", "expected an event kind") }
            guard let an = spec["aggregate"] else { throw fail(v, "\(field).aggregate", "missing (sum, count or distinct_items)") }
            guard let aggregate = (an.scalar?.string).flatMap(DerivedAttribute.Aggregate.init(rawValue:)) else {
                throw fail(an, "\(field).aggregate", "unknown aggregate \(an.scalar?.string ?? "") (known: \(DerivedAttribute.Aggregate.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            func time(_ key: String) throws -> Int64? {
                guard let tn = spec[key] else { return nil }
                guard let text = tn.scalar?.string, let t = DateParsing.unixSeconds(fromISO8601: Substring(text)) else {
                    throw fail(tn, "\(field).\(key)", "expected a date (YYYY-MM-DD) or an ISO 8601 time")
                }
                return t
            }
            let from = try time("from"), before = try time("before")
            if let from, let before, from >= before {
                throw fail(spec["before"], "\(field).before", "must be later than from (the window is from <= time < before)")
            }
            guard let bn = spec["bounds"] else {
                throw fail(v, "\(field).bounds", "missing: [lower, upper], public bounds the per-subject value is clamped to")
            }
            guard let seq = bn.sequence, seq.count == 2 else { throw fail(bn, "\(field).bounds", "expected [lower, upper]") }
            let b = Array(seq)
            let lo = try number(b[0], "\(field).bounds"), hi = try number(b[1], "\(field).bounds")
            guard lo < hi, (hi - lo).isFinite else { throw fail(bn, "\(field).bounds", "expected lower < upper") }
            do {
                try BoundedSum.checkBounds(lower: lo, upper: hi, minimumSpan: BoundedSum.minimumDeclaredSpan)
            } catch let e as DPParameterError {
                throw fail(bn, "\(field).bounds", e.reason)
            }
            out.append(TrainingJob.DerivedFeature(
                attribute: DerivedAttribute(name: name, eventKind: kind, aggregate: aggregate, from: from, before: before, lower: lo, upper: hi),
                line: k.mark?.line ?? 0, eventsLine: en.mark?.line ?? 0))
        }
        return out
    }

    /// `^[a-z][a-z0-9_]{0,62}$`, as schema field names.
    static func isPlainName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard let first = b.first, (0x61...0x7A).contains(first), b.count <= 63 else { return false }
        return b.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    // MARK: - Gate (fuzz/run.sh compiles this file up to this line for the dp target)

    /// The result of a granted, finished job.
    public struct TrainingResult: Sendable {
        public var artifact: ModelArtifact
        public var json: Data
        /// The budget left after the charge: in epsilon, or in rho under a zCDP purpose (`rho` set).
        public var budget: BudgetState
        /// The rho the job charged under a zCDP purpose (its epsilon is then rho's conversion);
        /// nil under an epsilon purpose.
        public var rho: Double? = nil
        /// The job's warnings (also the artifact's `warnings`), e.g. a noisy subject count under
        /// 5 noise scales.
        public var warnings: [String] = []
    }

    /// Runs a training job through the gate (SPEC §6): role `train`, a declared purpose with a
    /// dp_budget whose `models:` lists the model, features (and target, events, segment
    /// attribute) that exist, are no PII and lie in the purpose's `may_read` categories, and
    /// an epsilon that fits the budget left. The budget is charged once for the whole job, in
    /// the same transaction as the job's `train` audit entry; refusals are audited as denied.
    /// Only subjects whose consent is active (for a consent purpose) are used.
    public func train(jobFile: String, jobName: String? = nil, progress: @escaping (String) -> Void = { _ in }) throws -> TrainingResult {
        let parsed = Result { () throws -> TrainingJob in
            let jobs = try Vault.parseJobs(path: jobFile)
            if let jobName {
                guard let j = jobs.first(where: { $0.name == jobName }) else { throw VaultError(.invalidInput, "\(jobFile): no job named \(jobName)") }
                return j
            }
            guard jobs.count == 1 else { throw VaultError(.invalidInput, "\(jobFile): holds \(jobs.count) jobs; choose one with --job NAME") }
            return jobs[0]
        }
        return try train(parsed, progress: progress)
    }

    /// Runs a job already parsed, or the parser's failure: the HTTP service parses its body in
    /// memory (``parseJob(json:)``) and hands the result here, so a body that does not parse is
    /// audited like a job file that does not. The role is checked first; a refusal or failure
    /// is audited (denied / error) with the job's purpose and the reason, which names the job.
    public func train(_ parsed: Result<TrainingJob, any Error>, progress: @escaping (String) -> Void = { _ in }) throws -> TrainingResult {
        let job = try? parsed.get()
        return try audited("train", .other, permission: "train", purpose: job?.purpose) { context in
            guard let r = try runJob(try parsed.get(), context: context, progress: progress) else {
                throw VaultError(.internalFailure, "the job ended without a result")
            }
            return r
        }
    }

    /// One job from its JSON form (an HTTP body), parsed in memory by the job file's parser
    /// (JSON is YAML), so both accept and refuse the same jobs; messages name `request body`.
    public static func parseJob(json: JSONValue) throws -> TrainingJob {
        let jobs: [TrainingJob]
        do {
            jobs = try parseJobs(text: json.rendered(pretty: false) + "\n", path: "request body")
        } catch let e as VaultError {
            // The body is one JSON line: `request body:1: reason` says nothing by its line, and
            // the body is no file: its location is the field alone.
            func unline(_ m: String) -> String {
                m.hasPrefix("request body:1:") ? "request body:" + m.dropFirst("request body:1:".count) : m
            }
            if let field = e.location?.field {
                throw VaultError(e.kind, unline(e.message), reason: e.reason, at: .init(file: nil, line: nil, field: field))
            }
            throw VaultError(e.kind, unline(e.message), detail: unline(e.detail))
        }
        guard jobs.count == 1 else { throw VaultError(.invalidInput, "request body: holds \(jobs.count) jobs; send one") }
        return jobs[0]
    }

    /// Runs a job; with `quote` (`train --dry-run`, Vault+TrainQuote.swift) it stops after the
    /// model's dry run, fills the quote, audits it as `train.quote` and returns nil: no data
    /// read, nothing charged.
    func runJob(_ job: TrainingJob, context: AuditContext, progress: @escaping (String) -> Void,
                quote: TrainQuoteBox? = nil) throws -> TrainingResult? {
        func refuse(_ reason: String) -> VaultError {
            VaultError(.denied, "job \(job.name) (model \(job.model)) refused: \(reason)")
        }
        guard let p = policy.purpose(job.purpose) else {
            // The recorded detail does not repeat the undeclared name (see `purpose(_:)`).
            let declared = "(purposes: \(policy.purposeOrder.joined(separator: ", ")))"
            let e = refuse("purpose \(job.purpose) is not declared in \(policy.file) \(declared)")
            throw VaultError(e.kind, e.message, detail: refuse("undeclared purpose \(declared)").detail)
        }
        guard p.allowsModel(job.model) else {
            throw refuse("model \(job.model) is not allowed for purpose \(p.name) (its models: \(p.models.isEmpty ? "none" : p.models.joined(separator: ", ")))")
        }
        guard let budget = p.dpBudget else { throw refuse("purpose \(p.name) has no dp_budget in \(policy.file)") }
        guard let kind = ModelKind(rawValue: job.model) else { throw refuse("model \(job.model) is not one this store can train") }
        guard let eps = Epsilon(job.epsilon) else { throw VaultError(.invalidInput, "\(job.file): epsilon: must be a number from 2^-20 (about 9.54e-07) to 1000000") }
        // A zCDP purpose (dp_budget.rho): regressions only, with discrete Gaussian noise; the
        // job's epsilon E spends rho = E²/2 (Vault+ZCDP.swift).
        var zcdpRho: Rho? = nil
        if budget.rho != nil {
            guard kind == .linear_regression || kind == .logistic_regression else {
                throw refuse("purpose \(p.name) accounts in zCDP (dp_budget.rho): only linear and logistic regressions train under it (Gaussian noise)")
            }
            guard let r = Rho(fromEpsilon: job.epsilon) else {
                throw VaultError(.invalidInput, "\(job.file): epsilon: under a zCDP purpose a job spends rho = epsilon²/2, which must be from 2^-30 to \(Self.number(Rho.maximum))")
            }
            zcdpRho = r
        }
        // Delta: only private partition selection (an item model without a catalog) uses it.
        let jobDelta = kind.namesItems && job.itemsFrom == nil ? job.delta : 0
        if jobDelta > 0 && budget.delta == 0 {
            throw refuse("purpose \(p.name) allows pure DP only (dp_budget.delta 0), and this job needs delta \(job.delta) for private item selection; declare its items (items_from) or give the purpose a delta")
        }

        // Derived features: names of their own, event kinds that exist (else exit 65 naming the
        // line) and that the purpose may read (else refused, 77).
        var derived: [String: DerivedAttribute] = [:]
        var usedDerived: Set<String> = []
        func derivedError(_ d: TrainingJob.DerivedFeature, _ key: String?, line: Int? = nil, _ reason: String) -> VaultError {
            Self.diagnostic(PolicyDiagnostic(file: job.file, line: line ?? d.line, field: "derived.\(d.attribute.name)" + (key.map { ".\($0)" } ?? ""),
                                             reason: reason))
        }
        for d in job.derived {
            let a = d.attribute
            if schema.field(named: a.name) != nil || a.name == schema.subjectIDField || a.name == "subjects" {
                throw derivedError(d, nil, "\(a.name) is already a field of the schema \(schema.file) (or reserved); a derived feature needs a name of its own")
            }
            guard let e = schema.eventKind(named: a.eventKind) else {
                throw derivedError(d, "events", line: d.eventsLine, "\(a.eventKind) is not an event kind of the schema \(schema.file) (kinds: \(schema.events.map(\.name).joined(separator: ", ")))")
            }
            guard p.mayReadEvents(e) else {
                throw refuse("derived feature \(a.name): events \(a.eventKind) (category \(e.category)) are outside purpose \(p.name)'s may_read")
            }
            derived[a.name] = a
        }
        func readable(_ name: String, _ role: String) throws -> FieldSpec {
            guard let f = schema.field(named: name) else {
                throw VaultError(.invalidInput, "\(job.file): \(role): \(name) is not a field of the schema \(schema.file)")
            }
            if f.pii { throw refuse("\(role) \(name) is a PII field; PII is never used for training") }
            guard p.mayReadAttribute(f) else { throw refuse("\(role) \(name) (category \(f.category)) is outside purpose \(p.name)'s may_read") }
            return f
        }
        func numeric(_ name: String, _ role: String) throws -> (ScaledFeature, Bool) {
            if let d = derived[name] {
                usedDerived.insert(name)
                return (d.feature, d.integral)
            }
            let f = try readable(name, role)
            guard let b = f.numericBounds, [.int, .float, .bool].contains(f.type), b.upperBound > b.lowerBound else {
                throw VaultError(.invalidInput, "\(job.file): \(role): \(name) is not a numeric attribute with bounds")
            }
            return (ScaledFeature(name: name, lower: b.lowerBound, upper: b.upperBound), f.type != .float)
        }
        var features: [ScaledFeature] = []
        var integral: Set<String> = []
        for name in job.features {
            let (s, i) = try numeric(name, "feature")
            features.append(s)
            if i { integral.insert(name) }
        }
        var spec = TrainingSpec(features: features, integral: integral, params: job.params)
        var attributes: Set<String> = []
        var eventKinds: Set<String> = []
        var fieldsTouched: [String] = []
        /// Grants an attribute, or a derived feature's event kind, and records it as touched.
        func touch(_ name: String) {
            if let d = derived[name] {
                eventKinds.insert(d.eventKind)
                if !fieldsTouched.contains("events.\(d.eventKind)") { fieldsTouched.append("events.\(d.eventKind)") }
            } else {
                attributes.insert(name)
                if !fieldsTouched.contains(name) { fieldsTouched.append(name) }
            }
        }
        for name in job.features { touch(name) }
        if let t = job.target {
            if job.features.contains(t) {
                throw VaultError(.invalidInput, "\(job.file): target: \(t) is also a feature: a model predicting a feature from itself learns nothing, and its scores would give the attribute back")
            }
            let (s, _) = try numeric(t, "target")
            if (kind == .logistic_regression || kind == .random_forest) && !(s.lower == 0 && s.upper == 1) {
                throw VaultError(.invalidInput, "\(job.file): target: \(t) must be an int or bool attribute with bounds [0, 1] for \(kind.rawValue)")
            }
            spec.target = s
            touch(t)
        }
        if let by = job.segmentBy {
            if derived[by] != nil {
                throw VaultError(.invalidInput, "\(job.file): params.by: \(by) is a derived (numeric) feature; segments by needs a categorical attribute")
            }
            let f = try readable(by, "params.by")
            guard f.type == .category, let domain = f.domain else { throw VaultError(.invalidInput, "\(job.file): params.by: \(by) is not a categorical attribute with a domain") }
            spec.segmentBy = (by, domain)
            touch(by)
        }
        if let path = job.fromModel {
            let m = try loadArtifact(.file(path))   // refused unless its MAC verifies
            guard m.model == .kmeans, m.centroids != nil else {
                throw VaultError(.invalidInput, "\(job.file): params.from_model: \(path) is not a kmeans model artifact")
            }
            if let problem = Segments.clustersProblem(m) { throw VaultError(.invalidInput, "\(job.file): params.from_model: \(path): \(problem)") }
            for (i, name) in m.features.enumerated() {
                // A derived feature of the model must be declared by this job with the same definition.
                if m.derived?[name] != derived[name].map(Self.record) {
                    throw VaultError(.invalidInput, "\(job.file): params.from_model: feature \(name) is a derived feature of \(path); declare it under derived: exactly as there")
                }
                let (s, _) = try numeric(name, "params.from_model feature")
                guard m.featureBounds.indices.contains(i), m.featureBounds[i] == [s.lower, s.upper] else {
                    throw VaultError(.invalidInput, "\(job.file): params.from_model: feature \(name) has other bounds than the schema's")
                }
                touch(name)
            }
            spec.clusters = m
        }
        if let ev = job.events {
            guard let e = schema.eventKind(named: ev) else { throw VaultError(.invalidInput, "\(job.file): events: \(ev) is not an event kind of the schema") }
            guard p.mayReadEvents(e) else { throw refuse("events \(ev) (category \(e.category)) are outside purpose \(p.name)'s may_read") }
            spec.events = ev
            spec.eventsSince = job.eventsSince
            eventKinds.insert(ev)
            fieldsTouched.append("events.\(ev)")
        }
        if let name = job.itemsFrom {
            // One item per line; optionally a tab and the item's description (public catalog
            // text, used for content similarity). See readCatalog(named:for:).
            let contents = try readCatalog(named: name, for: job)
            spec.catalog = contents.items
            spec.catalogText = contents.descriptions
        }

        for d in job.derived where !usedDerived.contains(d.attribute.name) {
            throw derivedError(d, nil, "declared but not used (name it in features, target or params.from_model's features)")
        }
        let grantedDerived = job.derived.map(\.attribute).filter { usedDerived.contains($0.name) }

        // A dry run of the model (no data read, nothing sampled, nothing charged) checks that the
        // job's epsilon and parameters can be spent as the model spends them: a job that would
        // fail after the charge is refused here instead.
        do {
            let dry = PrivateSession(source: store.aggregateSource, consentPurpose: p.legalBasis == .consent ? p.name : nil, epsilon: eps,
                                     delta: jobDelta,
                                     attributes: attributes, eventKinds: eventKinds, derived: grantedDerived, dryRun: true)
            dry.objectionPurpose = Self.objectionPurpose(p)
            dry.zcdpRho = zcdpRho
            _ = try Trainer.fit(kind, spec: spec, session: dry)
            if let quote {
                try fillTrainQuote(quote, job: job, purpose: p, budget: budget, epsilon: eps, delta: jobDelta, rho: zcdpRho, dry: dry,
                                   fields: fieldsTouched, context: context)
                return nil
            }
        } catch let e as ModelError {
            throw VaultError(.invalidInput, "\(job.file): \(e.description)")
        } catch let e as SessionError {
            throw VaultError(.invalidInput, "\(job.file): epsilon \(job.epsilon) cannot be split as model \(job.model) needs: \(e.description)")
        } catch let e as DPParameterError {
            throw VaultError(.invalidInput, "\(job.file): \(e.description)")
        }
        // The accountant adds "delta D" to the detail when the job charges delta.
        let detail = "job \(job.name) model \(job.model)"
        let record = context.record("train", .other, purpose: p.name, fields: fieldsTouched, detail: detail)
        let engine = QueryEngine(source: store.aggregateSource, accountant: store.budgetAccountant(audit: record, policy: policyDigest))
        var session: PrivateSession, state: BudgetState
        if let rho = zcdpRho {
            do {
                guard let charge = rho.ledgerCharge else { throw VaultError(.internalFailure, "rho ledger charge") }
                let ledger = try engine.accountant.spend(purpose: Rho.ledgerKey(purpose: p.name), epsilon: charge, limit: (budget.rho ?? 0) * Rho.ledgerScale,
                                                         periodSeconds: budget.periodSeconds)
                state = ledger.asRho(limit: budget.rho ?? 0, conversionDelta: budget.conversionDelta)
                state.purpose = p.name
            } catch let e as BudgetExceeded {
                let s = e.state.asRho(limit: budget.rho ?? 0, conversionDelta: budget.conversionDelta)
                throw refuse("budget exceeded: purpose \(p.name) has rho \(Self.number(s.left)) of \(Self.number(s.limit)) left in this period (zCDP); this job asks for rho \(rho.value) (epsilon \(Self.number(job.epsilon)) as epsilon²/2)")
            }
            session = PrivateSession(source: store.aggregateSource, consentPurpose: p.legalBasis == .consent ? p.name : nil, epsilon: eps,
                                     attributes: attributes, eventKinds: eventKinds, derived: grantedDerived)
            session.zcdpRho = rho
        } else {
        do {
            (session, state) = try engine.openSession(purpose: p.name, consentPurpose: p.legalBasis == .consent ? p.name : nil,
                                                      epsilon: eps, delta: jobDelta,
                                                      limit: budget.epsilon, deltaLimit: budget.delta, periodSeconds: budget.periodSeconds,
                                                      attributes: attributes, eventKinds: eventKinds, derived: grantedDerived)
        } catch let e as BudgetExceeded {
            throw refuse("budget exceeded: \(e.description)")
        }
        }
        session.objectionPurpose = Self.objectionPurpose(p)
        var artifact: ModelArtifact
        do {
            artifact = try Trainer.fit(kind, spec: spec, session: session, progress: progress)
        } catch let e as ModelError {
            throw VaultError(.invalidInput, "\(job.file): \(e.description)")
        } catch let e as SessionError {
            throw VaultError(.internalFailure, "job \(job.name): \(e.description)")
        } catch let e as DPParameterError {
            throw VaultError(.internalFailure, "job \(job.name): \(e.description)")
        }
        var bounds: [String: Double] = ["subjects": 1]
        for f in features { bounds[f.name] = f.upper - f.lower }
        if let t = spec.target { bounds[t.name] = t.upper - t.lower }
        // The models that name items record their cap (the job's, or their default) in params.
        if kind.namesItems, let m = artifact.params["max_items_per_subject"] { bounds["max_items_per_subject"] = m }
        if !grantedDerived.isEmpty {
            artifact.derived = Dictionary(uniqueKeysWithValues: grantedDerived.map { ($0.name, Self.record($0)) })
        }
        let iso = ISO8601DateFormatter()
        artifact.privacy = PrivacyBlock(
            purpose: p.name, epsilon: zcdpRho.map { Rho.epsilon(rho: $0.value, delta: budget.conversionDelta) } ?? eps.chargedValue,
            delta: zcdpRho == nil ? jobDelta : budget.conversionDelta,
            mechanism: zcdpRho.map { "discrete Gaussian (bounded sums over subjects), user-level, zCDP: rho \($0.value) charged (epsilon and delta are its conversion); composition adds rho within the job" }
                ?? "discrete Laplace (bounded sums over subjects), user-level; sequential composition within the job",
            contributionBounds: bounds, policyVersion: policy.version, job: job.name, trainedAt: iso.string(from: Date()),
            budgetSplit: artifact.privacy?.budgetSplit ?? [])
        // How many subjects (and events) the job learnt from, as its releases say (noisy): a
        // count under 5 noise scales means almost nobody, and the model is mostly noise.
        var warnings: [String] = []
        let subjects = session.subjectCounts.min { $0.scale < $1.scale }
        artifact.privacy?.noisySubjects = subjects.map { Self.rounded($0.value) }
        artifact.privacy?.noisySubjectsScale = subjects.map { Self.rounded($0.scale) }
        if let c = subjects, let w = Self.fewWarning(c.value, scale: c.scale, what: "subject count",
                                                    hint: p.legalBasis == .consent ? "have subjects consented to purpose \(p.name)?" : "does the store hold the subjects?") {
            warnings.append(w)
        }
        if spec.events != nil {
            let events = session.eventCounts.min { $0.scale < $1.scale }
            artifact.privacy?.noisyEvents = events.map { Self.rounded($0.value) }
            artifact.privacy?.noisyEventsScale = events.map { Self.rounded($0.scale) }
            if let c = events, let w = Self.fewWarning(c.value, scale: c.scale, what: "event count (\(spec.events ?? "") items)",
                                                      hint: job.eventsSince != nil ? "does events_since leave any events?" : "are there \(spec.events ?? "") events?") {
                warnings.append(w)
            }
        }
        if let w = Self.vocabularyWarning(artifact) { warnings.append(w) }
        artifact.warnings = warnings
        let (sealedArtifact, json) = try sealed(artifact)
        return TrainingResult(artifact: sealedArtifact, json: json, budget: state, rho: zcdpRho?.value, warnings: warnings)
    }

    /// Values in the artifact and the warnings: six decimals.
    static func rounded(_ x: Double) -> Double { (x * 1e6).rounded() / 1e6 }

    /// The warning for a noisy count under 5 noise scales (nil when it is not): the release
    /// cannot tell it from zero, and whatever was learnt from it is mostly noise.
    public static func fewWarning(_ value: Double, scale: Double, what: String, hint: String) -> String? {
        guard scale > 0, value < 5 * scale else { return nil }
        return "the noisy \(what) (\(String(format: "%.1f", value))) is under 5 noise scales (5 x \(String(format: "%.3g", scale))): "
            + "almost nobody is in it, so the result is mostly noise (\(hint))"
    }

    /// The warning for a model whose items came from private selection (no catalog) and whose
    /// released vocabulary is empty, or, for a recommender, under
    /// `Recommender.smallVocabulary` items (nil otherwise): such a model recommends little or
    /// nothing, and the job must say so rather than release it silently.
    public static func vocabularyWarning(_ a: ModelArtifact) -> String? {
        guard a.model.namesItems, a.itemSource == "private_selection" else { return nil }
        let n = a.items?.count ?? 0
        // Only what both models accept (job keys and params of recommender and association_rules).
        let hint = "declare a catalog (items_from), or raise epsilon or selection_share"
        if n == 0 {
            return "the private item selection released no items (threshold \(String(format: "%.0f", a.params["selection_threshold"] ?? 0)) votes): the model names no item (\(hint))"
        }
        if a.model == .association_rules, n < 2 {
            return "the private item selection released only 1 item: association rules need at least 2, so the model has no rule (\(hint))"
        }
        if a.model == .recommender, n < Recommender.smallVocabulary {
            return "the private item selection released only \(n) items (under \(Recommender.smallVocabulary)): recommend answers at most \(maxTop(vocabulary: n)) items per customer (\(hint))"
        }
        return nil
    }

    /// A derived feature as the artifact echoes it (times in ISO 8601, UTC).
    static func record(_ d: DerivedAttribute) -> DerivedFeatureRecord {
        DerivedFeatureRecord(events: d.eventKind, aggregate: d.aggregate.rawValue,
                             from: d.from.map { DateParsing.iso8601(unixSeconds: $0) }, before: d.before.map { DateParsing.iso8601(unixSeconds: $0) },
                             bounds: [d.lower, d.upper])
    }

    // MARK: - Recommend

    /// The largest `--top`: at most this many items, and at most a tenth of the model's
    /// vocabulary, so an answer never lists most of the items a subject does not have (whose
    /// complement would be the subject's purchase set).
    public static let maxRecommendations = 100

    /// The `--top` a model allows: min(100, floor(vocabulary / 10)).
    public static func maxTop(vocabulary: Int) -> Int { min(maxRecommendations, vocabulary / 10) }

    /// What every subject that cannot be served gets, whether it is unknown, erased or has not
    /// consented: one answer, so the answer does not reveal which (SPEC §12).
    public static let unavailableSubject = "no recommendations for this customer ID"

    /// Top-N items for each subject from a recommender artifact, scored from the subject's own
    /// events under the model's purpose: permission `serve_recommendations` (role app), `top`
    /// at most 100 (usage error, before anything is read), the artifact's MAC must verify, at
    /// most ``maxTop(vocabulary:)`` items are returned (a larger `top` is cut to that), the
    /// purpose must still exist and allow the model, and each
    /// subject's consent is checked. A subject that is unknown, erased or without consent gets
    /// the same answer (``unavailableSubject``: empty items and that reason; for a single
    /// subject, exit 77 with that message). Every existing subject's read is audited. Never
    /// returns an item the subject has interacted with.
    public func recommend(modelPath: String, _ selection: SubjectSelection, top: Int?) throws -> [(customerID: String, items: [String], reason: String?)] {
        try recommend(model: .file(modelPath), selection, top: top)
    }

    /// `top` nil: 10. Either way at most the model's cap.
    public func recommend(model source: ArtifactSource, _ selection: SubjectSelection, top requested: Int?) throws -> [(customerID: String, items: [String], reason: String?)] {
        try audited("recommend", .read, permission: "serve_recommendations", subjectID: selection.singleID) { context in
            let topName: String
            let label: String
            switch source {
            case .file(let path): topName = "--top"; label = path
            case .body(_, let l): topName = "top"; label = l
            }
            if let requested, !(requested >= 1 && requested <= Self.maxRecommendations) {
                throw VaultError(.usage, "\(topName) must be between 1 and \(Self.maxRecommendations)")
            }
            let model = try loadArtifact(source)
            guard model.model == .recommender, let kind = model.events, let purposeName = model.privacy?.purpose, let vocabulary = model.items else {
                throw VaultError(.invalidInput, "\(label): not a recommender model artifact")
            }
            let top = min(requested ?? 10, Self.maxTop(vocabulary: vocabulary.count))
            let p = try purpose(purposeName)
            guard p.allowsModel("recommender") else { throw VaultError(.denied, "purpose \(p.name) no longer allows recommender models") }
            guard let e = schema.eventKind(named: kind), p.mayReadEvents(e) else {
                throw VaultError(.denied, "purpose \(p.name) may not read \(kind) events")
            }
            // A segment-based model ranks by the subject's segment: the purpose must still read it.
            if let by = model.segmentBy {
                guard let f = schema.field(named: by), p.mayReadAttribute(f) else { throw VaultError(.denied, "purpose \(p.name) may not read \(by)") }
            }
            let (ids, _) = try resolveSelection(selection)
            // Each subject once: a list repeating one ID would otherwise write its entries again
            // and again (and time them).
            var seen = Set<String>()
            let unique = ids.map(\.id).filter { seen.insert($0).inserted }
            var rows = try store.subjectItems(customerIDs: unique, kind: kind, consentPurpose: p.legalBasis == .consent ? p.name : nil,
                                              segmentAttribute: model.segmentBy)
            // Subjects who objected to a legitimate_interest purpose are served as unconsented
            // ones (restricted subjects already are: `subjectItems`).
            if let o = Self.objectionPurpose(p) {
                let objecting = try store.objecting(pseudonyms: rows.map(\.pseudonym), purpose: o)
                for i in rows.indices where objecting.contains(rows[i].pseudonym) { rows[i].consent = false }
            }
            // One entry per subject asked about, served or not, in one commit: unknown, erased
            // and unconsented subjects cost the same work as each other.
            let fields = ["events.\(kind)"] + (model.segmentBy.map { [$0] } ?? [])
            try store.audit(rows.map {
                let served = $0.items != nil && $0.consent
                return context.record("recommend", .read, purpose: p.name, subject: $0.pseudonym, fields: served ? fields : [],
                                      outcome: served ? .ok : .denied, detail: served ? "model \(model.privacy?.job ?? "")" : Self.unavailableSubject)
            })
            if case .one = selection, let r = rows.first, r.items == nil || !r.consent {
                // Unknown, erased and unconsented subjects: one status, one message.
                throw VaultError(.denied, Self.unavailableSubject)
            }
            return rows.map { r in
                guard let owned = r.items, r.consent else { return (r.customerID, [], Self.unavailableSubject) }
                return (r.customerID, Recommender.recommend(model, owned: owned, segment: r.segment, top: top), nil)
            }
        }
    }
}
