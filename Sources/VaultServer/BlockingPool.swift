import Foundation

/// Threads of the service's own for blocking store work (SQLite, OpenSSL, and the PostgreSQL
/// engine's synchronous methods), apart from Swift's cooperative pool and libdispatch's global
/// queues.
///
/// Why not `DispatchQueue.global()`: on Linux, libdispatch's global queues and Swift's
/// cooperative executor draw on the same pool of threads, grown only about once a second while
/// every thread is blocked. A PostgreSQL engine method blocks its thread until a task on the
/// cooperative pool (the connection pool's work) finishes; with every dispatch thread blocked
/// so, that task waited for a new thread, and a burst of N requests on a fresh node all stalled
/// until N threads existed (16 concurrent GETs: every first answer after about 15 s). These
/// threads never run a task of the cooperative pool, so a blocked one cannot starve it.
///
/// Jobs run in the order they were submitted, at most `threadCount` at once; the others wait
/// in the queue. The threads live as long as the process (the pool is a process-wide value).
final class BlockingPool: @unchecked Sendable {
    /// `@unchecked Sendable`: `jobs` is only touched with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    let threadCount: Int

    init(threads: Int, name: String) {
        threadCount = max(1, threads)
        for i in 0..<threadCount {
            let thread = Thread { [self] in self.work(name) }
            thread.name = "\(name)-\(i)"
            thread.stackSize = 4 << 20
            thread.start()
        }
    }

    /// Queues `job`; one of the pool's threads runs it.
    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.unlock()
        condition.signal()
    }

    /// The name of the pool whose thread runs the caller, nil on any other thread.
    static var currentPoolName: String? { Thread.current.threadDictionary[poolKey] as? String }
    private static let poolKey = "profilevault.blocking-pool"

    private func work(_ name: String) {
        Thread.current.threadDictionary[Self.poolKey] = name
        while true {
            condition.lock()
            while head == jobs.count { condition.wait() }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024, head * 2 >= jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            job()
        }
    }

    /// The service's pool: 4 threads per core, at least 16 (a store operation mostly waits,
    /// for SQLite's lock or PostgreSQL's answer, so more threads than cores keep the cores busy).
    static let shared = BlockingPool(threads: max(16, 4 * ProcessInfo.processInfo.activeProcessorCount),
                                     name: "profilevault-store")
}
