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
/// The pool keeps `coreThreads` threads and starts another at once whenever a job arrives and
/// none is idle, up to `maximumThreads`; a thread beyond the core ones ends after
/// `idleSeconds` without work. So slow work (a long training job, a large audit export that
/// outlived its request's time limit) cannot hold every thread while a health probe or a GET
/// waits behind it; only `maximumThreads` jobs at once queue the rest, in submission order.
final class BlockingPool: @unchecked Sendable {
    /// `@unchecked Sendable`: every mutable field is only touched with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    let name: String
    let coreThreads: Int
    let maximumThreads: Int
    let idleSeconds: Double

    init(core: Int, maximum: Int, idleSeconds: Double = 30, name: String) {
        self.name = name
        coreThreads = max(1, core)
        maximumThreads = max(coreThreads, maximum)
        self.idleSeconds = idleSeconds
        condition.lock()
        for _ in 0..<coreThreads { startThread() }
        condition.unlock()
    }

    /// A fixed pool of `threads` threads.
    convenience init(threads: Int, name: String) {
        self.init(core: threads, maximum: threads, name: name)
    }

    /// With `condition` locked.
    private func startThread() {
        let i = threads
        threads += 1
        let thread = Thread { [self] in self.work(core: i < coreThreads) }
        thread.name = "\(name)-\(i)"
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// Queues `job`; one of the pool's threads runs it (a new one when none is idle and the
    /// pool is below its maximum).
    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        if idle < jobs.count - head, threads < maximumThreads { startThread() }
        condition.unlock()
        condition.signal()
    }

    /// How many threads the pool has now (for tests).
    var threadCount: Int { condition.withLock { threads } }

    /// The name of the pool whose thread runs the caller, nil on any other thread.
    static var currentPoolName: String? { Thread.current.threadDictionary[poolKey] as? String }
    private static let poolKey = "profilevault.blocking-pool"

    private func work(core: Bool) {
        Thread.current.threadDictionary[Self.poolKey] = name
        condition.lock()
        while true {
            while head == jobs.count {
                idle += 1
                let signalled = core ? { condition.wait(); return true }() : condition.wait(until: Date().addingTimeInterval(idleSeconds))
                idle -= 1
                if !signalled, head == jobs.count {
                    threads -= 1
                    condition.unlock()
                    return
                }
            }
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
            condition.lock()
        }
    }

    /// The service's pool: 4 threads per core, at least 16, kept; up to 256 in all (a store
    /// operation mostly waits, for SQLite's lock or PostgreSQL's answer, so more threads than
    /// cores keep the cores busy).
    static let shared = BlockingPool(core: max(16, 4 * ProcessInfo.processInfo.activeProcessorCount), maximum: 256,
                                     name: "profilevault-store")
}
