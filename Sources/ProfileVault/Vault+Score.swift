public import Foundation
import DifferentialPrivacy
import PrivateModels
import VaultAudit
import VaultPolicy
import VaultStore
import VaultValues

/// Scoring inside the vault (issue 24): a trained model's score for subjects, computed from
/// their own feature values under the model's purpose, without the caller seeing any of them.
extension Vault {
    /// Who `score` scores: named subjects, or every subject (then `top` is required).
    public enum ScoreSelection: Sendable {
        case subjects(SubjectSelection)
        case all
    }

    /// One line of the answer: a score (regressions, random forest) or a segment (k-means), or
    /// neither with ``unscoredSubject`` as `reason`.
    public struct ScoreRow: Sendable, Equatable {
        public var customerID: String
        public var score: Double?
        public var segment: Int?
        public var reason: String?
    }

    /// The largest `--top` (and the largest answer of `--all`).
    public static let maxScoreTop = 10_000

    /// What every subject that cannot be scored gets, whether it is unknown, erased, without
    /// consent, restricted, objecting, or lacks a feature value: one answer.
    public static let unscoredSubject = "no score for this customer ID"

    /// Subjects read per batch of `--all`.
    static let scoreBatch = 5_000

    /// Checks `top` and `minScore` (usage errors, before anything is read or audited); `names`
    /// are the option names the messages use (`--top`/`top`).
    public static func checkScoreOptions(top: Int?, minScore: Double?, all: Bool, names: (top: String, minScore: String, all: String)) throws {
        if let top, !(1...maxScoreTop).contains(top) { throw VaultError(.usage, "\(names.top) must be between 1 and \(maxScoreTop)") }
        if let minScore, !minScore.isFinite || abs(minScore) > 1e15 {
            throw VaultError(.usage, "\(names.minScore) must be a finite number of magnitude at most 1e15")
        }
        if all && top == nil { throw VaultError(.usage, "\(names.all) needs \(names.top) N (the N highest scores)") }
    }

    /// The scores of `selection` under `model`'s purpose: permission `score` (role app); `top`
    /// 1...10,000 and `minScore` finite (usage errors before anything is read or audited);
    /// the artifact's MAC must verify; the model must be a linear or logistic regression, a
    /// random forest or a k-means model whose numbers pass ``Scoring/problem(_:)``; the purpose
    /// must still exist, allow the model kind and read every feature (denied otherwise). A
    /// subject is scored when it exists, has consent (consent purposes), is not restricted,
    /// does not object (legitimate interest) and has every feature; any other gets
    /// ``unscoredSubject`` (a single subject: exit 77 with that message). One audit entry
    /// (`score`) per subject asked about, served or not, and with `.all` per subject scored.
    /// `minScore` keeps the scores at or above it; `top` the highest ones (ties: the order
    /// asked, or row order for `.all`). `.all` needs `top`, serves scores only (not segments),
    /// and decrypts the customer IDs of the answer's rows only.
    public func score(model source: ArtifactSource, _ selection: ScoreSelection, top: Int?, minScore: Double?) throws -> [ScoreRow] {
        let cli: Bool
        if case .file = source { cli = true } else { cli = false }
        var isAll = false
        if case .all = selection { isAll = true }
        try Self.checkScoreOptions(top: top, minScore: minScore, all: isAll,
                                   names: cli ? ("--top", "--min-score", "--all") : ("top", "min_score", "all"))
        let singleID: String? = if case .subjects(let s) = selection { s.singleID } else { nil }
        return try audited("score", .read, permission: "score", subjectID: singleID) { context in
            let label: String
            switch source {
            case .file(let path): label = path
            case .body(_, let l): label = l
            }
            let model = try loadArtifact(source)
            guard Scoring.kinds.contains(model.model) else {
                throw VaultError(.invalidInput, "\(label): a \(model.model.rawValue) model is not scored (score serves linear_regression, logistic_regression, random_forest and kmeans)")
            }
            if let problem = Scoring.problem(model) { throw VaultError(.invalidInput, "\(label): \(problem)") }
            guard let purposeName = model.privacy?.purpose else { throw VaultError(.invalidInput, "\(label): the model artifact has no privacy.purpose") }
            if model.model == .kmeans && (minScore != nil || isAll) {
                throw VaultError(.usage, "a kmeans model assigns segments: \(cli ? "--min-score and --all apply" : "min_score and all apply") to scores only")
            }
            let p = try purpose(purposeName)
            guard p.allowsModel(model.model.rawValue) else { throw VaultError(.denied, "purpose \(p.name) no longer allows \(model.model.rawValue) models") }
            var columns: [FeatureColumn] = []
            var fields: [String] = []
            for name in model.features {
                if let d = model.derived?[name] {
                    guard let e = schema.eventKind(named: d.events), p.mayReadEvents(e) else {
                        throw VaultError(.denied, "purpose \(p.name) may not read \(d.events) events (feature \(name))")
                    }
                    columns.append(.derived(try Self.derivedAttribute(name, d, label: label)))
                    fields.append("events.\(d.events)")
                } else {
                    guard let f = schema.field(named: name), !f.pii, [.int, .float, .bool, .date].contains(f.type) else {
                        throw VaultError(.invalidInput, "\(label): feature \(name) is not a numeric attribute of the schema")
                    }
                    guard p.mayReadAttribute(f) else { throw VaultError(.denied, "purpose \(p.name) may not read \(name)") }
                    columns.append(.attribute(name))
                    fields.append(name)
                }
            }
            var seenFields = Set<String>()
            fields = fields.filter { seenFields.insert($0).inserted }
            let consentPurpose = p.legalBasis == .consent ? p.name : nil
            let objection = Self.objectionPurpose(p)
            let detail = "model \(model.privacy?.job ?? "")"
            func output(_ values: [Double?]) -> Scoring.Output? {
                let x = values.compactMap { $0 }
                guard x.count == values.count else { return nil }
                return Scoring.score(model, x)
            }

            guard case .subjects(let subjects) = selection else {
                // Every subject, in pages: only served subjects' values are read; the N best are
                // kept (score, row, pseudonym), and only their customer IDs are decrypted.
                let n = top ?? Self.maxScoreTop
                var best: [(score: Double, row: Int64, pseudonym: [UInt8])] = []
                var after: Int64 = 0
                while true {
                    let page = try store.subjectFeatures(.page(after: after, limit: Self.scoreBatch), features: columns,
                                                         consentPurpose: consentPurpose, objectionPurpose: objection)
                    var records: [AuditRecord] = []
                    for r in page where r.served {
                        records.append(context.record("score", .read, purpose: p.name, subject: r.pseudonym, fields: fields, detail: detail))
                        guard case .score(let s)? = output(r.values), minScore.map({ s >= $0 }) ?? true else { continue }
                        if best.count == n, let last = best.last, !(s > last.score) { continue }
                        let at = best.firstIndex { s > $0.score } ?? best.count
                        best.insert((s, r.row, r.pseudonym), at: at)
                        if best.count > n { best.removeLast() }
                    }
                    if !records.isEmpty { try store.audit(records) }
                    guard page.count == Self.scoreBatch, let last = page.last else { break }
                    after = last.row
                }
                let ids = try store.customerIDs(pseudonyms: best.map(\.pseudonym))
                return best.compactMap { b in ids[b.pseudonym].map { ScoreRow(customerID: $0, score: b.score, segment: nil, reason: nil) } }
            }

            let (resolved, _) = try resolveSelection(subjects)
            var seen = Set<String>()
            let unique = resolved.map(\.id).filter { seen.insert($0).inserted }
            let pseudonyms = try unique.map { try store.pseudonym(ofCustomerID: $0) }
            let rows = try store.subjectFeatures(.pseudonyms(pseudonyms), features: columns, consentPurpose: consentPurpose, objectionPurpose: objection)
            var byPseudonym: [[UInt8]: SubjectFeatureRow] = [:]
            for r in rows { byPseudonym[r.pseudonym] = r }
            // One entry per subject asked about, served or not, in one commit.
            try store.audit(zip(unique, pseudonyms).map { _, ps in
                let served = byPseudonym[ps]?.served ?? false
                return context.record("score", .read, purpose: p.name, subject: ps, fields: served ? fields : [],
                                      outcome: served ? .ok : .denied, detail: served ? detail : Self.unscoredSubject)
            })
            var out: [ScoreRow] = zip(unique, pseudonyms).map { id, ps in
                guard let r = byPseudonym[ps], r.served, let o = output(r.values) else {
                    return ScoreRow(customerID: id, score: nil, segment: nil, reason: Self.unscoredSubject)
                }
                switch o {
                case .score(let s): return ScoreRow(customerID: id, score: s, segment: nil, reason: nil)
                case .segment(let k): return ScoreRow(customerID: id, score: nil, segment: k, reason: nil)
                }
            }
            if case .one = subjects, out.first?.reason != nil {
                throw VaultError(.denied, Self.unscoredSubject)
            }
            if let minScore {
                out = out.filter { ($0.score ?? -.infinity) >= minScore }
            }
            if let top {
                if model.model != .kmeans {
                    // Highest first; a stable sort keeps the order asked among equal scores.
                    out = out.enumerated().sorted { l, r in
                        let a = l.element.score ?? -.infinity, b = r.element.score ?? -.infinity
                        return a != b ? a > b : l.offset < r.offset
                    }.map(\.element)
                }
                out = Array(out.prefix(top))
            }
            return out
        }
    }

    /// A derived feature of an artifact as the store computes it.
    static func derivedAttribute(_ name: String, _ d: DerivedFeatureRecord, label: String) throws -> DerivedAttribute {
        guard let aggregate = DerivedAttribute.Aggregate(rawValue: d.aggregate), d.bounds.count == 2, d.bounds[0].isFinite, d.bounds[1].isFinite,
              d.bounds[0] < d.bounds[1] else {
            throw VaultError(.invalidInput, "\(label): derived feature \(name) is not a valid definition (aggregate, bounds)")
        }
        func time(_ s: String?) throws -> Int64? {
            guard let s else { return nil }
            guard let t = DateParsing.unixSeconds(fromISO8601: Substring(s)) else {
                throw VaultError(.invalidInput, "\(label): derived feature \(name): a window end is not an ISO 8601 time")
            }
            return t
        }
        return DerivedAttribute(name: name, eventKind: d.events, aggregate: aggregate, from: try time(d.from), before: try time(d.before),
                                lower: d.bounds[0], upper: d.bounds[1])
    }
}
