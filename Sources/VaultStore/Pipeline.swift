import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bounded hand-off between one producer and one consumer thread: the ingest seals batch
/// N+1 while the database writer commits batch N, so crypto and SQLite use both cores.
///
/// `@unchecked Sendable`: every mutable field is read and written only while `condition` is
/// locked.
package final class BoundedChannel<Element: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element] = []
    private var closed = false
    private var failure: (any Error)?
    private let capacity: Int

    package init(capacity: Int) { self.capacity = capacity }

    /// Blocks while the channel is full. Throws the consumer's failure, if any, so the producer
    /// stops at once.
    package func put(_ item: Element) throws {
        condition.lock()
        defer { condition.unlock() }
        while items.count >= capacity && failure == nil { condition.wait() }
        if let failure { throw failure }
        items.append(item)
        condition.broadcast()
    }

    /// Blocks until the consumer has taken every item put so far (or has failed: throws its
    /// failure). A producer that calls this after each `put` holds at most one item besides
    /// the one the consumer works on.
    package func waitUntilTaken() throws {
        condition.lock()
        defer { condition.unlock() }
        while !items.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
    }

    /// Blocks until an item arrives; nil once the producer has closed and everything is taken.
    package func take() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty && !closed { condition.wait() }
        if items.isEmpty { return nil }
        let item = items.removeFirst()
        condition.broadcast()
        return item
    }

    package func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Called by the consumer when it cannot go on.
    package func fail(_ error: any Error) {
        condition.lock()
        if failure == nil { failure = error }
        items.removeAll()
        condition.broadcast()
        condition.unlock()
    }

    package var consumerFailure: (any Error)? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }
}

/// Runs `body` on a new thread and lets the caller wait for it.
package final class WorkerThread: @unchecked Sendable {
    // `@unchecked Sendable`: `done` is a semaphore; `thread` is only touched by `init`.
    private let done = DispatchSemaphore(value: 0)

    package init(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 22
        thread.start()
    }

    package func join() { done.wait() }
}

/// Chunks the writer is done with, freed by the producer: a chunk of sealed profiles is a few
/// dozen thousand small arrays, and freeing them cost the writer (the ingest's bottleneck)
/// about a tenth of its time, while the producer has time to spare.
///
/// `@unchecked Sendable`: `items` is only touched under `lock`.
final class RetiredChunks<Element>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element] = []

    func retire(_ item: Element) {
        lock.lock()
        items.append(item)
        lock.unlock()
    }

    /// Drops the retired chunks on the calling thread.
    func drain() {
        lock.lock()
        let old = items
        items = []
        lock.unlock()
        _ = old
    }
}

/// The outcome of the validation pass that reads the whole input beside the write pipeline:
/// the writer may fill its first transaction while validation runs, but commits nothing until
/// it has passed, so a bad record anywhere in the file still leaves the store untouched.
///
/// `@unchecked Sendable`: every mutable field is read and written only while `condition` is
/// locked.
package final class ValidationGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var outcome: Result<Void, any Error>?
    private var cancelled = false

    package init() {}

    /// A gate that is already open (nothing to validate: `--skip-invalid`).
    package static func passed() -> ValidationGate {
        let g = ValidationGate()
        g.settle(.success(()))
        return g
    }

    /// Records the validation pass's result; the first call wins.
    package func settle(_ result: Result<Void, any Error>) {
        condition.lock()
        if outcome == nil { outcome = result }
        condition.broadcast()
        condition.unlock()
    }

    package var isSettled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return outcome != nil
    }

    /// Blocks until the validation pass has finished; throws its failure.
    package func wait() throws {
        condition.lock()
        while outcome == nil { condition.wait() }
        let o = outcome!
        condition.unlock()
        try o.get()
    }

    /// Tells the validation pass to stop early (the ingest failed for another reason).
    package func cancel() {
        condition.lock()
        cancelled = true
        condition.unlock()
    }

    package var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelled
    }
}

/// The validation pass of an ingest (both engines): reads the whole input on a thread of its
/// own, beside the pipeline that parses, seals and writes, and settles `gate` with the input's
/// first bad record (or success). With `skip` (`--skip-invalid`) there is nothing to validate:
/// the gate is open at once and no thread starts. `openReader` and `makeValidator` run on the
/// pass's thread (a reader and a validator are not shared between threads).
package final class ValidationPass: Sendable {
    package let gate: ValidationGate
    private let thread: WorkerThread?

    /// `lowerPriority` (Linux): the pass runs at nice 10, taking what the other threads leave.
    package init(skip: Bool, lowerPriority: Bool, openReader: @escaping @Sendable () throws -> RecordReader,
                 makeValidator: @escaping @Sendable () throws -> (RawRecord) -> Result<ValidProfile, RecordIssue>) {
        guard !skip else {
            gate = .passed()
            thread = nil
            return
        }
        let g = ValidationGate()
        gate = g
        thread = WorkerThread(name: "profilevault-ingest-validator") {
            #if os(Linux)
            if lowerPriority { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10) }   // who 0: on Linux, the calling thread only
            #endif
            do {
                let pass1 = try openReader()
                let check = try makeValidator()
                var n = 0
                while let raw = try pass1.next() {
                    if case .failure(let issue) = check(raw) { throw issue.error() }
                    n += 1
                    if n % 4096 == 0, g.isCancelled { throw CancellationError() }
                }
                g.settle(.success(()))
            } catch {
                g.settle(.failure(error))
            }
        }
    }

    /// Stops the pass if it still runs (the ingest ended for another reason) and waits for it.
    package func finish() {
        gate.cancel()
        thread?.join()
    }
}
