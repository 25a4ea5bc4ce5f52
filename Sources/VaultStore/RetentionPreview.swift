import Foundation
import GRDB

extension ProfileStore {
    /// Events of `kinds` older than `cutoff` (and, when `subjects`, their subjects' pseudonyms):
    /// the detail of a retention dry run, read in one snapshot; nothing is written.
    public func retentionEventMatches(kinds: [String], before cutoff: Int64, subjects: Bool) throws -> (events: Int, subjects: [[UInt8]]) {
        guard !kinds.isEmpty else { return (0, []) }
        let marks = Array(repeating: "?", count: kinds.count).joined(separator: ", ")
        var args = StatementArguments(kinds)
        args += [cutoff]
        return try pool.read { db in
            let n = try Int.fetchOne(db, sql: "SELECT count(*) FROM events WHERE kind IN (\(marks)) AND time < ? AND subject_id NOT IN (SELECT subject_id FROM restriction)", arguments: args) ?? 0
            guard subjects, n > 0 else { return (n, []) }
            let rows = try Row.fetchAll(db, sql: """
                SELECT s.pseudonym FROM subjects s
                WHERE EXISTS (SELECT 1 FROM events e WHERE e.subject_id = s.id AND e.kind IN (\(marks)) AND e.time < ?)
                  AND s.id NOT IN (SELECT subject_id FROM restriction) ORDER BY s.id
                """, arguments: args)
            return (n, try rows.map { row in
                guard let p = row.auditBlob("pseudonym") else { throw VaultError(.integrity, "a subject's pseudonym is not a blob: the file was edited") }
                return p
            })
        }
    }

    /// The pseudonyms of subjects whose last activity is before `cutoff`, in row order.
    public func inactiveSubjects(before cutoff: Int64) throws -> [[UInt8]] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT pseudonym FROM subjects WHERE last_activity < ? AND id NOT IN (SELECT subject_id FROM restriction) ORDER BY id", arguments: [cutoff]).map { row in
                guard let p = row.auditBlob("pseudonym") else { throw VaultError(.integrity, "a subject's pseudonym is not a blob: the file was edited") }
                return p
            }
        }
    }
}
