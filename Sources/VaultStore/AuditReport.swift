public import VaultAudit
import DifferentialPrivacy
import VaultValues

/// What an audit export wrote: the entries written, the signed head's hash, and the slice's
/// last sequence number (the next `--after-seq` continues from it).
public struct AuditExportResult: Sendable {
    public var entries: Int
    public var head: String
    public var lastSequence: Int64
    public init(entries: Int, head: String, lastSequence: Int64) {
        self.entries = entries
        self.head = head
        self.lastSequence = lastSequence
    }
}

/// Checks shared by every engine's export selection.
package enum AuditSelection {
    /// `--after-seq N`: N from 0 to the newest entry (N = newest selects nothing); beyond it
    /// the shipper holds entries this log does not (another store, or a log cut back).
    package static func checkAfter(_ after: Int64, newest: Int64, archivedThrough: Int64? = nil) throws {
        if let problem = afterProblem(after, newest: newest, archivedThrough: archivedThrough) { throw problem }
    }

    /// `archivedThrough`: the last entry moved to an audit archive (nil: none). A slice that
    /// starts inside the archived range would silently skip those entries (a shipping pipeline
    /// that continues from its last sequence number would lose them), so it is refused.
    package static func afterProblem(_ after: Int64, newest: Int64, archivedThrough: Int64? = nil) -> VaultError? {
        guard after >= 0 else { return VaultError(.usage, "--after-seq must be 0 or more") }
        guard after <= newest else {
            return VaultError(.invalidInput, "--after-seq \(after) is beyond the newest audit entry (\(newest)): this is not the log those entries came from, or it was cut back (run audit verify)")
        }
        if let archived = archivedThrough, after < archived {
            return VaultError(.invalidInput, "--after-seq \(after): entries \(after + 1) to \(archived) were moved to audit archives (audit archive); read them there, then export with --after-seq \(archived)")
        }
        return nil
    }
}

/// What an auditor hands in (`audit report`): counts of the entries in a time range per actor,
/// action, purpose and outcome, the denied attempts (the first ``deniedListLimit`` of them
/// listed), and the privacy budget spent per purpose. Built by streaming the entries.
public struct AuditReport: Sendable {
    public static let deniedListLimit = 1000

    public struct Denied: Sendable {
        public var sequence: Int64
        public var time: String
        public var actor: String
        public var role: String
        public var action: String
        public var purpose: String?
        public var subject: String?
        public var detail: String?
    }

    public var sinceMillis: Int64?
    public var untilMillis: Int64?
    public var entries = 0
    public var firstSequence: Int64?
    public var lastSequence: Int64?
    public var byActor: [String: Int] = [:]
    public var byAction: [String: Int] = [:]
    /// Entries without a purpose count under `(none)`.
    public var byPurpose: [String: Int] = [:]
    public var byOutcome: [String: Int] = [:]
    public var deniedByActor: [String: Int] = [:]
    public var deniedCount = 0
    /// The first denied attempts, in sequence order.
    public var denied: [Denied] = []
    /// Epsilon of the entries with outcome `ok` that spent budget, summed per purpose.
    public var epsilonByPurpose: [String: Double] = [:]
    /// The rho the `ok` entries of zCDP purposes charged (their entries carry no epsilon).
    public var rhoByPurpose: [String: Double] = [:]

    public static let noPurpose = "(none)"

    package struct Builder {
        package private(set) var report: AuditReport

        package init(sinceMillis: Int64?, untilMillis: Int64?) {
            report = AuditReport(sinceMillis: sinceMillis, untilMillis: untilMillis)
        }

        /// One stored entry (its canonical text).
        package mutating func add(seq: Int64, text: String) throws {
            guard let e = try? JSONValue.parse(text), case .object = e else {
                throw VaultError(.integrity, "audit entry \(seq) is not a valid entry: it was modified (run audit verify)")
            }
            func str(_ k: String) -> String? { if case .string(let s)? = e[k] { s } else { nil } }
            let actor = str("actor.user.name") ?? "", action = str("api.operation") ?? "", outcome = str("status") ?? ""
            let purpose = str("unmapped.purpose")
            report.entries += 1
            if report.firstSequence == nil { report.firstSequence = seq }
            report.lastSequence = seq
            report.byActor[actor, default: 0] += 1
            report.byAction[action, default: 0] += 1
            report.byPurpose[purpose ?? AuditReport.noPurpose, default: 0] += 1
            report.byOutcome[outcome, default: 0] += 1
            if outcome == AuditOutcome.denied.rawValue {
                report.deniedCount += 1
                report.deniedByActor[actor, default: 0] += 1
                if report.denied.count < AuditReport.deniedListLimit {
                    let time: String = if case .string(let t)? = e["time_dt"] { t } else { "" }
                    report.denied.append(Denied(sequence: seq, time: time, actor: actor, role: str("unmapped.role") ?? "", action: action,
                                                purpose: purpose, subject: str("unmapped.subject"), detail: str("status_detail")))
                }
            }
            if outcome == AuditOutcome.ok.rawValue, let eps = str("unmapped.epsilon").flatMap(Double.init), eps.isFinite {
                report.epsilonByPurpose[purpose ?? AuditReport.noPurpose, default: 0] += eps
            }
            // A zCDP purpose's charge is rho, recorded in the detail (its entry has no epsilon).
            if outcome == AuditOutcome.ok.rawValue, let rho = Rho.charged(action: action, auditDetail: str("status_detail")) {
                report.rhoByPurpose[purpose ?? AuditReport.noPurpose, default: 0] += rho
            }
        }
    }
}
