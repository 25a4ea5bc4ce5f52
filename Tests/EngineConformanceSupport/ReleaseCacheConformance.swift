// The DP release cache on any engine (issue 23, "pay once"): the same lookups, the same
// refusal of a stored release a file-level attacker edited or moved, the same expiry and
// clearing, checked by the SQLite and the PostgreSQL suites alike.

import Foundation
public import VaultStore

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
    }

    public static let period = 30 * 86_400

    /// Runs the checks on `engine` (an empty release cache) and returns what failed (empty: all held).
    public static func run(_ engine: any StorageEngine, tamper: (Tamper) throws -> Void) throws -> [String] {
        var failures: [String] = []
        func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }
        func kind(_ body: () throws -> Void) -> VaultError.Kind? {
            do { try body(); return nil } catch let e as VaultError { return e.kind } catch { return .internalFailure }
        }
        let d1 = engine.releaseDigest(Array("query one".utf8)), d2 = engine.releaseDigest(Array("query two".utf8))
        check(d1.count == 32 && d1 == engine.releaseDigest(Array("query one".utf8)) && d1 != d2, "digests are keyed, fixed and distinct")
        let p1 = Array("release one: 12.5 [10, 15]".utf8), p2 = Array("release two: 99".utf8)
        guard case let .miss(start) = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) else {
            return ["an empty cache found a release"]
        }
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p1)
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p2)
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
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p1)
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p2)
        check(try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period) != .miss(periodStart: start), "a replaced release is found")
        // A row moved to another purpose does not open, for either purpose.
        try tamper(.changePurpose)
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity, "a moved purpose is served")
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "model_training", periodSeconds: period) } == .integrity,
              "a release moved to another purpose is served to it")
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p1)
        try tamper(.flipTag)
        check(kind { _ = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) } == .integrity, "an edited release is served")
        // A release of an ended window is not served; storing this window's drops it.
        try engine.storeRelease(digest: d1, purpose: "analytics", periodStart: start - Int64(period), periodSeconds: period, payload: p1)
        if case .hit = try engine.cachedRelease(digest: d1, purpose: "analytics", periodSeconds: period) { check(false, "a release of an ended period is served") }
        try engine.storeRelease(digest: d2, purpose: "analytics", periodStart: start, periodSeconds: period, payload: p2)
        // One row left: storing d1 in the old window dropped d2 of this one, storing d2 dropped d1.
        check(try engine.clearReleaseCache() == 1, "storing a release drops the purpose's releases of ended periods")
        check(try engine.cachedRelease(digest: d2, purpose: "analytics", periodSeconds: period) == .miss(periodStart: start), "a cleared cache serves")
        check(try engine.clearReleaseCache() == 0, "clearing an empty cache")
        return failures
    }
}
