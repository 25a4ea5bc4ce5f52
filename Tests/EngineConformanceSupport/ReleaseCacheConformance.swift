// The DP release cache on any engine (issue 23, "pay once"): the same lookups, the same
// refusal of a stored release a file-level attacker edited or moved, the same expiry and
// clearing, the same population epoch (a store after a population change is a no-op; a row
// saved before a change and put back after it is not served), checked by the SQLite and the
// PostgreSQL suites alike.

import Foundation
public import VaultStore
import VaultAudit

public enum ReleaseCacheConformance {
    /// What the suite asks the engine's own storage to do behind its back (raw SQL as the
    /// owner / file holder would run it).
    public enum Tamper: Sendable {
        /// Swap the sealed releases of the two stored rows.
        case swapSealed
        /// Set the purpose column of every row to `model_training`.
        case changePurpose
        /// Flip the last byte of every sealed release (its tag).
        case flipTag
        /// Save a copy of every row, as they are (the suite keeps it).
        case saveRows
        /// Put the saved rows back (replacing rows of the same digest).
        case restoreRows
        /// Set the epoch column of every row.
        case setEpoch(Int64)
    }

    static func isHit(_ l: ReleaseLookup) -> Bool { if case .hit = l { return true } else { return false } }

    public static let period = 30 * 86_400

    /// Runs the checks on `engine` (an empty release cache) and returns what failed (empty: all
    /// held). `changePopulation` makes a change of the population through the engine's own API
    /// (each call another one: an ingest of a new subject, say).
    public static func run(_ engine: any StorageEngine, changePopulation: () throws -> Void, tamper: (Tamper) throws -> Void) throws -> [String] {
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }
        func kind(_ body: () throws -> Void) -> VaultError.Kind? {
            do { try body(); return nil } catch let e as VaultError { return e.kind } catch { return .internalFailure }
        }
        let d1 = engine.releaseDigest(Array("query one".utf8)), d2 = engine.releaseDigest(Array("query two".utf8))
        check(d1.count == 32 && d1 == engine.releaseDigest(Array("query one".utf8)) && d1 != d2, "digests are keyed, fixed and distinct")
        let p1 = Array("release one: 12.5 [10, 15]".utf8), p2 = Array("release two: 99".utf8)
        guard case let .miss(start, e0?) = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) else {
            return ["an empty cache found a release, or the store has no population epoch"]
        }
        check(try engine.populationEpoch() == e0, "the lookup's epoch is the store's")
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p1)
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p2)
        if case let .hit(payload, at, s) = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) {
            check(payload == p1 && s == start && at > 0, "the stored release reads back")
        } else {
            check(false, "a stored release is not found")
        }
        // Another period length is another window: not served.
        if case .hit = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period + 1) { check(false, "a release of another period length is served") }
        // Swapped releases do not open under each other's digest.
        try tamper(.swapSealed)
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity, "a swapped release is served")
        check(kind { _ = try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period) } == .integrity, "a swapped release is served (2)")
        // Storing again replaces the row.
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p1)
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p2)
        check(isHit(try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period)), "a replaced release is found")
        // A row moved to another purpose does not open, for either purpose.
        try tamper(.changePurpose)
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity, "a moved purpose is served")
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "model_training", periodSeconds: period) } == .integrity,
              "a release moved to another purpose is served to it")
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p1)
        try tamper(.flipTag)
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity, "an edited release is served")
        // A release of an ended window is not served; storing this window's drops it.
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start - Int64(period), periodSeconds: period, epoch: e0, payload: p1)
        if case .hit = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) { check(false, "a release of an ended period is served") }
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p2)
        // One row left: storing d1 in the old window dropped d2 of this one, storing d2 dropped d1.
        check(try engine.clearReleaseCache() == 1, "storing a release drops the purpose's releases of ended periods")
        check(try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period) == .miss(periodStart: start, epoch: e0), "a cleared cache serves")
        check(try engine.clearReleaseCache() == 0, "clearing an empty cache")

        // The population epoch. A release stored at the current epoch is served.
        check(try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p1),
              "a release of the current epoch is not stored")
        check(isHit(try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period)), "a release of the current epoch is not served")
        // The race: a lookup misses at e0, the population changes, the release computed meanwhile
        // is stored: nothing is stored, and the release of the old population is not served.
        guard case let .miss(_, seen) = try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period), seen == e0 else {
            return failures + ["the lookup of another digest did not miss at the current epoch"]
        }
        try changePopulation()
        guard let e1 = try engine.populationEpoch(), e1 != e0 else { return failures + ["a change of the population left the epoch as it was"] }
        check(try !engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e0, payload: p2),
              "a release computed before a change of the population was stored after it")
        check(try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period) == .miss(periodStart: start, epoch: e1),
              "a release computed before a change of the population is served")
        check(try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) == .miss(periodStart: start, epoch: e1),
              "a release of the old population is served after the change")
        // The replay: a genuine row saved before a change and put back after it is not served;
        // its epoch column set to the current epoch, it does not open.
        check(try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e1, payload: p1),
              "a release of the new epoch is not stored")
        try tamper(.saveRows)
        try changePopulation()
        guard let e2 = try engine.populationEpoch(), e2 != e1 else { return failures + ["a second change of the population left the epoch as it was"] }
        try tamper(.restoreRows)
        check(try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) == .miss(periodStart: start, epoch: e2),
              "a row saved before a change of the population and put back after it is served")
        try tamper(.setEpoch(e2))
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity,
              "a replayed row with its epoch column set to the current epoch is served")
        // A stale store does not drop the purpose's current releases; a current one replaces the bad row.
        check(try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e2, payload: p1),
              "a release of the current epoch does not replace a replayed row")
        check(try !engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, epoch: e1, payload: p2),
              "a stale release is stored")
        if case let .hit(payload, _, _) = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) {
            check(payload == p1, "the current release reads back")
        } else {
            check(false, "a stale store dropped the current release")
        }
        return failures
    }
}

extension ReleaseCacheConformance {
    /// Which operations move the population epoch, through the engine's own API: every change
    /// of who may be counted or of what a query reads (consent set and import, objection via
    /// consent, restriction, rectification, erasure) moves it; a call that changes nothing
    /// (consent already in the asked state, a restriction already in place) and every read
    /// leave it. `ids`: four customer IDs of subjects the engine holds (the last is erased).
    /// Returns what failed (empty: all held).
    public static func epochMoves(_ engine: any StorageEngine, ids: [String]) throws -> [String] {
        guard ids.count == 4 else { return ["four subjects are needed"] }
        var failures: [String] = []
        let audit = AuditContext(actor: "t", role: "privacy_officer", requestID: "r")
        func moves(_ what: String, _ expected: Bool, _ body: () throws -> Void) throws {
            let before = try engine.populationEpoch()
            try body()
            let after = try engine.populationEpoch()
            if before == nil || after == nil { failures.append("\(what): no epoch"); return }
            if (before != after) != expected { failures.append(expected ? "\(what) left the epoch as it was" : "\(what) moved the epoch") }
        }
        try moves("granting consent", true) { _ = try engine.setConsent([(1, ids[0])], file: nil, purpose: "analytics", granted: true, source: nil, policyVersion: "1", audit: audit) }
        try moves("granting consent again", false) { _ = try engine.setConsent([(1, ids[0])], file: nil, purpose: "analytics", granted: true, source: nil, policyVersion: "1", audit: audit) }
        try moves("revoking consent", true) { _ = try engine.setConsent([(1, ids[0])], file: nil, purpose: "analytics", granted: false, source: nil, policyVersion: "1", audit: audit) }
        try moves("restricting", true) { _ = try engine.setRestriction(customerID: ids[1], restricted: true, audit: audit) }
        try moves("restricting again", false) { _ = try engine.setRestriction(customerID: ids[1], restricted: true, audit: audit) }
        try moves("lifting a restriction", true) { _ = try engine.setRestriction(customerID: ids[1], restricted: false, audit: audit) }
        try moves("importing consent", true) {
            _ = try engine.importConsent([ConsentImportRow(line: 1, customerID: ids[2], purpose: "analytics", granted: true, timeMillis: AuditLog.nowMillis, source: nil)],
                                         file: nil, policyVersion: "1", audit: audit)
        }
        if let f = engine.schema.attributeFields.first(where: { $0.type == .int && $0.bounds != nil }), let b = f.bounds {
            try moves("rectifying", true) {
                _ = try engine.rectify(customerID: ids[2], values: [(f, .int(Int64(b.lowerBound)))], audit: audit)
                _ = try engine.rectify(customerID: ids[2], values: [(f, .int(Int64(b.upperBound)))], audit: audit)
            }
            try moves("rectifying to the same value", false) { _ = try engine.rectify(customerID: ids[2], values: [(f, .int(Int64(b.upperBound)))], audit: audit) }
        } else {
            failures.append("the schema has no bounded integer attribute to rectify")
        }
        try moves("reading", false) {
            _ = try engine.exists(customerID: ids[0])
            _ = try engine.profile(customerID: ids[0], fields: Set(engine.schema.fields.map(\.name)))
            _ = try engine.consentState(customerID: ids[0])
            _ = try engine.consentHistory(customerID: ids[0])
            _ = try engine.accessExport(customerID: ids[0])
            _ = try engine.hasConsent(customerID: ids[0], purpose: "analytics")
            _ = try engine.restricted(customerID: ids[1])
        }
        try moves("erasing", true) { _ = try engine.erase(customerIDs: [(1, ids[3])], file: nil, reason: "test", audit: audit) }
        return failures
    }
}
