import Foundation
public import DifferentialPrivacy
import VaultAudit
import VaultPolicy
import VaultStore

/// Pay once (issue 23): a query asked again, identical, in the same budget period is answered
/// with the release the store made the first time, sealed in the store's release cache
/// (VaultStore/ReleaseCache.swift), at no cost. Proof and rules: docs/differential-privacy.md,
/// "Pay once: the release cache".
///
/// Identical means the same canonical form (`ReleaseKey`): the kind; the measure with its
/// bounds (schema or `--bounds`, and which), event kind and contribution cap; the parsed
/// conditions, each as attribute, operator and typed value, sorted and deduplicated (`age>=30,
/// country=DE` is `country=DE,age>=30`; an integer 30 is the number 30.0); the group-by attribute
/// and its domain; the population rules (consent purpose, objection purpose); the requested
/// epsilon as charged (2^-20 units) or, under a zCDP purpose, the rho as charged (2^-30 units),
/// or the requested accuracy, and the confidence; the purpose and its budget (epsilon, delta,
/// period; a zCDP purpose's rho and conversion delta too), so a policy change of the budget or
/// period never finds an older release. Not in it: who asks. Releases are shared by every actor of the purpose:
/// they were paid from the purpose's one budget, and a release already made is public to that
/// purpose; answering it again is post-processing.
///
/// A release at a larger epsilon is never used for a request of a smaller one (nor the other
/// way): it would be sound (post-processing of a release already paid for), but the answer
/// would then carry another epsilon, scale and interval than asked for. Same question, same
/// answer; a different question pays.
extension Vault {
    /// The canonical form of a query, as the cache's digest covers it.
    struct ReleaseKey {
        private(set) var bytes: [UInt8] = Array("profilevault release cache v1\n".utf8)

        mutating func add(_ tag: String, _ s: String) {
            bytes += Array("\(tag)=\(s.utf8.count):".utf8) + Array(s.utf8) + [0x0a]
        }
        mutating func add(_ tag: String, _ d: Double) {
            add(tag, String((d == 0 ? 0.0 : d).bitPattern, radix: 16))   // -0 is 0
        }
        mutating func add(_ tag: String, _ i: Int64) { add(tag, String(i)) }
        mutating func add(_ tag: String, _ b: Bool) { add(tag, b ? "1" : "0") }

        /// A condition's value: every number as a double (30 and 30.0 are one value), text as is.
        static func value(_ v: WhereCondition.Value) -> String {
            switch v {
            case .int(let i):
                if let d = Double(exactly: i) { return "n:" + String((d == 0 ? 0.0 : d).bitPattern, radix: 16) }
                return "i:\(i)"
            case .real(let d): return "n:" + String((d == 0 ? 0.0 : d).bitPattern, radix: 16)
            case .text(let s): return "t:\(s.utf8.count):" + s
            }
        }

        mutating func add(_ prepared: PreparedQuery) {
            let q = prepared.dpq
            switch q.measure {
            case .subjects: add("measure", "subjects")
            case let .attribute(name, lo, hi, integral):
                add("measure", "attribute"); add("attribute", name); add("lower", lo); add("upper", hi); add("integral", integral)
            case let .events(kind, lo, hi, integral, k):
                add("measure", "events"); add("events", kind); add("lower", lo); add("upper", hi); add("integral", integral)
                add("max_contributions", Int64(k))
            }
            add("consent_purpose", q.consentPurpose ?? "-")
            add("objection_purpose", q.objectionPurpose ?? "-")
            // A conjunction: order and repetition do not change the population.
            let conditions = Set(q.predicates.map { "\($0.attribute.utf8.count):\($0.attribute) \($0.op.rawValue) \(Self.value($0.value))" }).sorted()
            add("conditions", Int64(conditions.count))
            for c in conditions { add("where", c) }
            if let g = q.groupBy {
                add("group_by", g.attribute)
                add("domain", Int64(g.domain.count))
                for d in g.domain { add("key", d) }
            } else {
                add("group_by", "-")
            }
            add("confidence", q.confidence)
            add("purpose", prepared.purpose.name)
            add("budget_epsilon", prepared.limit)
            add("budget_delta", prepared.deltaLimit)
            add("budget_period", Int64(prepared.periodSeconds))
            // A zCDP purpose (epsilon and delta 0 above): its rho limit and conversion delta, so
            // a change of either never finds an older release. Absent for an epsilon purpose
            // (its keys, and the releases stored under them, are unchanged).
            if let b = prepared.purpose.dpBudget, let rho = b.rho {
                add("budget_rho", rho)
                add("budget_conversion_delta", b.conversionDelta)
            }
        }
    }

    /// The key of a count, sum, mean or histogram: its prepared form, the requested epsilon (as
    /// charged) or accuracy, and whether the bounds were the query's own.
    func releaseKey(_ q: QueryRequest, _ prepared: PreparedQuery, zcdp: (rho: Rho?, clamped: Rho?)? = nil) -> ReleaseKey {
        var k = ReleaseKey()
        k.add("kind", q.kind.rawValue)
        k.add(prepared)
        if let z = zcdp {
            // Under a zCDP purpose: the rho as charged (2^-30 units); with --accuracy also the
            // accuracy (and, for a mean, whose rho follows from its first count, that count's rho).
            if let a = q.accuracy { k.add("accuracy", a) }
            if let r = z.rho { k.add("rho_units", Int64(clamping: r.units)) }
            if q.accuracy != nil && q.kind == .mean { k.add("accuracy_count_rho_units", Int64(clamping: Self.meanAccuracyCountRho.units)) }
            k.add("bounds_from_query", q.bounds != nil)
            k.add("report_clamped", z.clamped != nil)
            if let c = z.clamped { k.add("clamped_rho_units", Int64(clamping: c.units)) }
            return k
        }
        if let a = q.accuracy {
            k.add("accuracy", a)
            if q.kind == .mean { k.add("accuracy_count_epsilon", Self.meanAccuracyCountEpsilon) }
        } else {
            k.add("epsilon_units", Int64(clamping: prepared.dpq.epsilon.chargeUnits))
        }
        k.add("bounds_from_query", q.bounds != nil)
        // A clamped report is part of the answer: with it, and at which epsilon.
        k.add("report_clamped", q.reportClamped != nil)
        if let c = q.reportClamped { k.add("clamped_epsilon_units", Int64(clamping: Epsilon(c)?.chargeUnits ?? 0)) }
        return k
    }

    /// What a lookup decided: a verified stored release (its payload and time), or a miss.
    enum CacheDecision {
        case hit(payload: [UInt8], storedAtMillis: Int64)
        case miss
    }

    /// Where a release computed after a miss may be stored: the key's digest, and the
    /// population epoch read before anything was computed (nil: not stored). The store is
    /// conditional on that epoch still being current, so a release computed from a population
    /// that changed meanwhile is never stored.
    struct ReleaseSlot {
        var digest: [UInt8]
        var epoch: Int64?
    }

    /// One indexed lookup by the key's digest, in one read with the window's start and the
    /// population epoch; with `fresh`, always a miss, but the epoch is still read first (the
    /// fresh release is stored like any other). A stored release that does not verify is an
    /// integrity error (exit 1): nothing is served or charged.
    func lookupRelease(_ key: ReleaseKey, prepared: PreparedQuery, fresh: Bool) throws -> (slot: ReleaseSlot, decision: CacheDecision) {
        let digest = store.releaseDigest(key.bytes)
        if fresh { return (ReleaseSlot(digest: digest, epoch: try store.populationEpoch()), .miss) }
        switch try store.cachedRelease(digest: digest, purpose: prepared.purpose.name, periodSeconds: prepared.periodSeconds) {
        case let .miss(_, epoch): return (ReleaseSlot(digest: digest, epoch: epoch), .miss)
        case let .hit(payload, at, _): return (ReleaseSlot(digest: digest, epoch: nil), .hit(payload: payload, storedAtMillis: at))
        }
    }

    /// Stores a release just made (charged in the window starting at `periodStart`), if the
    /// population epoch read at its lookup is still current. A change of the population that
    /// committed since makes this a no-op (logged at debug): the release is returned, and the
    /// next identical query pays again and reads the new population. A failure to store is
    /// logged, not thrown: the release was paid for and is returned.
    func rememberRelease(_ payload: [UInt8]?, slot: ReleaseSlot, prepared: PreparedQuery, periodStart: Int64) {
        guard let payload, let epoch = slot.epoch else { return }
        do {
            if try !store.storeRelease(digest: slot.digest, purpose: prepared.purpose.name, periodStart: periodStart,
                                       periodSeconds: prepared.periodSeconds, epoch: epoch, payload: payload) {
                logger.debug("a release was not stored in the release cache: the population changed while it was computed",
                             metadata: ["purpose": .string(prepared.purpose.name)])
            }
        } catch {
            logger.error("could not store a release in the release cache; the next identical query pays again",
                         metadata: ["purpose": .string(prepared.purpose.name)])
        }
    }

    /// The audit entry of an answer from the cache: the query's own entry (fields, detail),
    /// epsilon 0, saying so.
    func recordCachedAnswer(_ action: String, context: AuditContext, purpose: String, fields: [String], detail: String?, storedAtMillis: Int64) throws {
        var record = context.record(action, .read, purpose: purpose, fields: fields,
                                    detail: ([detail, "answered from the release cache (released \(AuditLog.isoMillis(storedAtMillis))); charged 0"]
                                        .compactMap { $0 }).joined(separator: "; "))
        record.epsilon = 0
        try store.audit([record])
    }
}

// MARK: - Encodings of stored releases

/// A count, sum, mean or histogram release as the cache stores it (inside the seal).
struct StoredQueryRelease: Codable {
    struct Value: Codable {
        var value: Double
        var ci95: [Double]
        var interval: [Double]?
        init(_ v: ReleasedValue) {
            value = v.value
            ci95 = [v.ci95.0, v.ci95.1]
            interval = v.interval.map { [$0.0, $0.1] }
        }
        func released() throws -> ReleasedValue {
            guard ci95.count == 2 else { throw StoredQueryRelease.damaged() }
            var r = ReleasedValue(value: value, ci95: (ci95[0], ci95[1]))
            if let i = interval {
                guard i.count == 2 else { throw StoredQueryRelease.damaged() }
                r.interval = (i[0], i[1])
            }
            return r
        }
    }
    var version = 1
    var value: Value?
    var groupKeys: [String]
    var groupValues: [Value]
    var epsilon: Double
    var scale: Double
    var contributionBounds: [String: Double]
    var noisyCount: Double?
    var noisyCountScale: Double?
    var confidence: Double
    var clampBounds: [Double]?
    var boundsFromQuery: Bool
    var clampedShare: Double?
    var clamped: StoredClamped?
    var accuracy: Double?
    var accuracyCountEpsilon: Double?
    /// zCDP releases: the rho charged and the conversion's delta (absent in epsilon releases).
    var rho: Double?
    var conversionDelta: Double?
    var accuracyCountRho: Double?

    struct StoredClamped: Codable {
        var epsilon: Double
        var rho: Double?
        var count: Double
        var countInterval: [Double]
        var share: Double
        var shareInterval: [Double]
    }

    static func damaged() -> VaultError {
        VaultError(.integrity, "a stored release verified but could not be decoded: it was not served and nothing was charged")
    }

    init(_ r: QueryResult, clamped: ClampedReport?) {
        value = r.value.map(Value.init)
        groupKeys = r.groups.map(\.key)
        groupValues = r.groups.map { Value($0.value) }
        epsilon = r.epsilon
        scale = r.scale
        contributionBounds = r.contributionBounds
        noisyCount = r.noisyCount
        noisyCountScale = r.noisyCountScale
        confidence = r.confidence
        clampBounds = r.clampBounds.map { [$0.lower, $0.upper] }
        boundsFromQuery = r.boundsFromQuery
        clampedShare = r.clampedShare
        self.clamped = clamped.map {
            StoredClamped(epsilon: $0.epsilon, rho: $0.rho, count: $0.count, countInterval: [$0.countInterval.0, $0.countInterval.1],
                          share: $0.share, shareInterval: [$0.shareInterval.0, $0.shareInterval.1])
        }
        accuracy = r.accuracy
        accuracyCountEpsilon = r.accuracyCountEpsilon
        rho = r.rho
        conversionDelta = r.conversionDelta
        accuracyCountRho = r.accuracyCountRho
    }

    func encoded() -> [UInt8]? {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return (try? e.encode(self)).map { [UInt8]($0) }
    }

    static func decode(_ bytes: [UInt8]) throws -> StoredQueryRelease {
        guard let r = try? JSONDecoder().decode(StoredQueryRelease.self, from: Data(bytes)), r.version == 1,
              r.groupKeys.count == r.groupValues.count else { throw damaged() }
        return r
    }

    /// The result again, with the budget as it stands now.
    func result(budget: BudgetState) throws -> (QueryResult, ClampedReport?) {
        var r = QueryResult(value: try value?.released(), groups: try zip(groupKeys, groupValues).map { (key: $0.0, value: try $0.1.released()) },
                            epsilon: epsilon, scale: scale, budget: budget, contributionBounds: contributionBounds)
        r.noisyCount = noisyCount
        r.noisyCountScale = noisyCountScale
        r.confidence = confidence
        if let b = clampBounds {
            guard b.count == 2 else { throw Self.damaged() }
            r.clampBounds = (b[0], b[1])
        }
        r.boundsFromQuery = boundsFromQuery
        r.clampedShare = clampedShare
        r.accuracy = accuracy
        r.accuracyCountEpsilon = accuracyCountEpsilon
        r.rho = rho
        r.conversionDelta = conversionDelta
        r.accuracyCountRho = accuracyCountRho
        r.cached = true
        var report: ClampedReport?
        if let c = clamped {
            guard c.countInterval.count == 2, c.shareInterval.count == 2 else { throw Self.damaged() }
            report = ClampedReport(epsilon: c.epsilon, count: c.count, countInterval: (c.countInterval[0], c.countInterval[1]),
                                   share: c.share, shareInterval: (c.shareInterval[0], c.shareInterval[1]))
            report?.rho = c.rho
        }
        return (r, report)
    }
}
