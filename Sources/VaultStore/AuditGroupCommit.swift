import Foundation
import GRDB
import VaultAudit

/// Group commit for audit entries that have no data change of their own (reads, denials,
/// errors): callers that arrive while a commit is in flight are committed together in the next
/// transaction, with one fsync and one signed checkpoint for all of them. Every caller still
/// returns only after its own entries are durable, so a read is never released unaudited.
///
/// Leader/follower: the first caller with nothing in flight becomes the leader and commits
/// batches until the queue is empty; the others wait for their batch.
///
/// `@unchecked Sendable`: all mutable state is guarded by `condition`.
final class AuditGroupCommit: @unchecked Sendable {
    private final class Ticket {
        var done = false
        var error: (any Error)?
    }

    private let condition = NSCondition()
    private var queue: [([AuditRecord], Ticket)] = []
    private var leaderActive = false

    /// Appends `records` in a group transaction and returns once they are committed.
    func append(_ records: [AuditRecord], commit: ([AuditRecord]) throws -> Void) throws {
        let ticket = Ticket()
        condition.lock()
        queue.append((records, ticket))
        if leaderActive {
            while !ticket.done { condition.wait() }
            condition.unlock()
            if let e = ticket.error { throw e }
            return
        }
        leaderActive = true
        while !queue.isEmpty {
            let batch = queue
            queue.removeAll()
            condition.unlock()
            var failure: (any Error)?
            do { try commit(batch.flatMap(\.0)) } catch { failure = error }
            condition.lock()
            for (_, t) in batch {
                t.error = failure
                t.done = true
            }
            condition.broadcast()
        }
        leaderActive = false
        condition.unlock()
        if let e = ticket.error { throw e }
    }
}
