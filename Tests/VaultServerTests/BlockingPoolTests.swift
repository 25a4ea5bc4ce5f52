import Foundation
import Testing
@testable import VaultServer

/// The service's blocking work runs on threads of its own, so work that blocks waiting for a
/// task on Swift's cooperative pool (what every PostgreSQL engine method does) cannot starve
/// that pool. On `DispatchQueue.global()` (the code before), such bodies waited for libdispatch
/// to grow its threads, about one a second on Linux: a fresh PostgreSQL node answered a burst
/// of 16 GETs only after 15 s (0.07 s now; docs/benchmarks.md).
@Suite struct BlockingPoolTests {
    /// Runs `n` bodies on `pool` that each wait until all `n` have started (at most 120 s):
    /// each result is true when it saw all of them, which needs `n` threads at once.
    static func barrier(_ n: Int, on pool: BlockingPool) async throws -> [Bool] {
        let arrived = Locked(0)
        let all = DispatchSemaphore(value: 0)
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<n {
                group.addTask {
                    try await blocking(on: pool) {
                        var last = false
                        arrived.mutate { $0 += 1; last = $0 == n }
                        if last { for _ in 0..<n { all.signal() } }
                        return all.wait(timeout: .now() + 120) == .success
                    }
                }
            }
            var out: [Bool] = []
            for try await r in group { out.append(r) }
            return out
        }
    }

    /// All of a pool's threads run at once, however many block: 16 bodies that each wait for
    /// all 16 to have started finish (on libdispatch's global queue, 16 blocked bodies on two
    /// cores needed about 14 s of thread growth). A private pool: other suites' requests on the
    /// shared one cannot delay it.
    @Test func everyThreadOfThePoolRunsAtOnce() async throws {
        let pool = BlockingPool(threads: 16, name: "test-barrier")
        let results = try await Self.barrier(16, on: pool)
        #expect(results.count == 16 && results.allSatisfy { $0 })
    }

    /// Slow work cannot hold every thread: a pool of 2 core threads runs 12 bodies that each
    /// wait for all 12 to have started (it starts a thread whenever none is idle), and the
    /// threads beyond the core ones end once idle.
    @Test func thePoolGrowsWhileEveryThreadIsBusyAndShrinksBackWhenIdle() async throws {
        let pool = BlockingPool(core: 2, maximum: 12, idleSeconds: 0.2, name: "test-grow")
        let results = try await Self.barrier(12, on: pool)
        #expect(results.count == 12 && results.allSatisfy { $0 })
        #expect(pool.threadCount <= 12)
        var waited = 0
        while pool.threadCount > 2, waited < 600 {
            try await Task.sleep(for: .milliseconds(100))
            waited += 1
        }
        #expect(pool.threadCount == 2)
        // It still works after shrinking.
        #expect(try await blocking(on: pool) { 7 } == 7)
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
