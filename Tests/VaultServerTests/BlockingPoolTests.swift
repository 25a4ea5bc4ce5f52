import Foundation
import Testing
@testable import VaultServer

/// The service's blocking work runs on threads of its own, so work that blocks waiting for a
/// task on Swift's cooperative pool (what every PostgreSQL engine method does) cannot starve
/// that pool. On `DispatchQueue.global()` (the code before), 64 such bodies at once took about
/// a second each on Linux: the shared thread pool grew one thread a second while all were
/// blocked, and a fresh PostgreSQL node answered a burst of 16 GETs only after 15 s.
@Suite struct BlockingPoolTests {
    /// Blocks the calling thread until a detached task (on the cooperative pool) has run.
    static func waitForACooperativeTask() -> Bool {
        let done = DispatchSemaphore(value: 0)
        Task.detached { done.signal() }
        return done.wait(timeout: .now() + 60) == .success
    }

    @Test func manyBodiesBlockedOnCooperativeTasksAllFinishPromptly() async throws {
        let started = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<64 { group.addTask { try await blocking { Self.waitForACooperativeTask() } } }
            var all: [Bool] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(results.count == 64 && results.allSatisfy { $0 })
        // A liveness bound, not a speed figure: each body needs microseconds here, and the
        // starving pool needed about 64 s; 30 s cannot be missed by a working pool.
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test func bodiesRunOnThePoolsThreadsInSubmissionOrderPerThread() async throws {
        let name = try await blocking { BlockingPool.currentPoolName }
        #expect(name == "profilevault-store")
        #expect(BlockingPool.currentPoolName == nil)
        // A pool of one thread runs its jobs one at a time, in the order submitted.
        let pool = BlockingPool(threads: 1, name: "test-one")
        let order = Locked<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        for i in 0..<2000 { pool.submit { order.mutate { $0.append(i) }; if i == 1999 { done.signal() } } }
        #expect(done.wait(timeout: .now() + 60) == .success)
        #expect(order.value == Array(0..<2000))
    }

    @Test func aBodyNotStartedBeforeCancellationNeverRuns() async throws {
        // A one-thread pool held by a gate; a body queued behind it; its task cancelled: the
        // caller gets CancellationError at once, and the body is skipped when its turn comes.
        let pool = BlockingPool(threads: 1, name: "test-cancel")
        let ran = Locked(false)
        let gate = DispatchSemaphore(value: 0)
        pool.submit { gate.wait() }
        let second = Task { try await blocking(on: pool) { ran.mutate { $0 = true } } }
        second.cancel()
        await #expect(throws: CancellationError.self) { try await second.value }
        gate.signal()
        _ = try await blocking(on: pool) { () }   // queued after the cancelled body, if it was queued
        #expect(ran.value == false)
    }
}

/// A value behind a lock, for the tests' closures.
final class Locked<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T { lock.withLock { v } }
    func mutate(_ f: (inout T) -> Void) { lock.withLock { f(&v) } }
}
