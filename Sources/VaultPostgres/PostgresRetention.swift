import Foundation
import PostgresNIO
public import VaultAudit
import VaultCrypto
public import VaultPolicy
public import VaultStore

extension PostgresProfiles {
    /// Applies the policy's retention rules as of `asOf` (unix seconds), as on SQLite (the
    /// same cutoffs: `ProfileStore.retentionCutoffs`). Per event kind a rule covers, in kind
    /// order: its events older than the cutoff are deleted in one transaction with its
    /// `retention.events` entry. Subjects whose last activity is older than a `last_activity`
    /// rule's cutoff are erased (reason `retention`, receipts without a customer ID: retention
    /// decrypts nothing) in transactions of 500, as `erase` does; one erased by another node
    /// meanwhile gets a receipt that removes nothing.
    ///
    /// A dry run deletes nothing: it counts what would go and commits one `retention.dry_run`
    /// entry with the counts, as on SQLite.
    public func applyRetention(_ rules: [RetentionRule], asOf: Int64, dryRun: Bool, audit: AuditContext) throws -> RetentionReport {
        let (eventCutoffs, subjectCutoff) = ProfileStore.retentionCutoffs(rules, schema: schema, asOf: asOf)
        var eventsDeleted = 0
        for (kind, cutoff) in eventCutoffs.sorted(by: { $0.key < $1.key }) {
            let n = try Self.wait("applying retention") { [engine] in
                try await engine.transaction("applying retention") { conn -> Int in
                    if dryRun {
                        return Int(clamping: try await engine.rows(conn, """
                            SELECT count(*) FROM profilevault.events WHERE kind = \(kind) AND time < \(cutoff) AND subject_id NOT IN (SELECT subject_id FROM profilevault.restriction)
                            """).first?.decode(Int64.self) ?? 0)
                    }
                    // Counted by the server: a sweep may delete millions of rows.
                    let n = Int(clamping: try await engine.rows(conn, """
                        WITH gone AS (DELETE FROM profilevault.events WHERE kind = \(kind) AND time < \(cutoff) AND subject_id NOT IN (SELECT subject_id FROM profilevault.restriction) RETURNING 1) SELECT count(*) FROM gone
                        """).first?.decode(Int64.self) ?? 0)
                    try await engine.appendLocked(conn, [ProfileStore.retentionEventsRecord(audit, kind: kind, cutoff: cutoff, deleted: n)])
                    if n > 0 { try await engine.bumpPopulationEpoch(conn) }
                    return n
                }
            }
            eventsDeleted += n
        }
        var subjectsErased = 0
        if let cutoff = subjectCutoff {
            let victims = try Self.wait("applying retention") { [engine] in
                try await engine.transaction("applying retention") { conn in
                    try await engine.rows(conn, "SELECT s.pseudonym FROM profilevault.subjects s WHERE s.last_activity < \(cutoff) AND NOT EXISTS (SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id) ORDER BY s.id").map {
                        try $0.decode(ByteBuffer.self).bytes
                    }
                }
            }
            subjectsErased = victims.count
            if !dryRun {
                for start in stride(from: 0, to: victims.count, by: 500) {
                    let chunk = victims[start..<min(start + 500, victims.count)].map { (id: "", pseudonym: $0, again: false) }
                    _ = try Self.wait("erasing subjects") {
                        try await self.erase(chunk, reason: "retention", audit: audit, goneIsErased: true)
                    }
                }
            }
        }
        if dryRun {
            let record = ProfileStore.retentionDryRunRecord(audit, asOf: asOf, eventsDeleted: eventsDeleted, subjectsErased: subjectsErased)
            try Self.wait("appending to the audit log") { [engine] in try await engine.audit([record]) }
        }
        return RetentionReport.make(eventsDeleted: eventsDeleted, subjectsErased: subjectsErased, dryRun: dryRun)
    }
}

extension PostgresProfiles {
    /// Events of `kinds` older than `cutoff` (and, when `subjects`, their subjects'
    /// pseudonyms), as on SQLite: the detail of a retention dry run, from one snapshot.
    public func retentionEventMatches(kinds: [String], before cutoff: Int64, subjects: Bool) throws -> (events: Int, subjects: [[UInt8]]) {
        guard !kinds.isEmpty else { return (0, []) }
        return try Self.wait("previewing retention") { [engine] in
            try await engine.transaction("previewing retention", begin: Self.snapshot) { conn -> (events: Int, subjects: [[UInt8]]) in
                let n = Int(clamping: try await engine.rows(conn, """
                    SELECT count(*) FROM profilevault.events WHERE kind = ANY(\(kinds)::text[]) AND time < \(cutoff) AND subject_id NOT IN (SELECT subject_id FROM profilevault.restriction)
                    """).first?.decode(Int64.self) ?? 0)
                guard subjects, n > 0 else { return (n, []) }
                let pseudonyms = try await engine.rows(conn, """
                    SELECT s.pseudonym FROM profilevault.subjects s
                    WHERE EXISTS (SELECT 1 FROM profilevault.events e WHERE e.subject_id = s.id AND e.kind = ANY(\(kinds)::text[]) AND e.time < \(cutoff))
                      AND NOT EXISTS (SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id)
                    ORDER BY s.id
                    """).map { try $0.decode(ByteBuffer.self).bytes }
                return (n, pseudonyms)
            }
        }
    }

    /// The pseudonyms of subjects whose last activity is before `cutoff`, in row order.
    public func inactiveSubjects(before cutoff: Int64) throws -> [[UInt8]] {
        try Self.wait("previewing retention") { [engine] in
            try await engine.transaction("previewing retention") { conn in
                try await engine.rows(conn, "SELECT s.pseudonym FROM profilevault.subjects s WHERE s.last_activity < \(cutoff) AND NOT EXISTS (SELECT 1 FROM profilevault.restriction r WHERE r.subject_id = s.id) ORDER BY s.id").map {
                    try $0.decode(ByteBuffer.self).bytes
                }
            }
        }
    }
}
