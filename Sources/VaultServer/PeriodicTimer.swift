import Foundation

/// A handler run on a serial queue of its own (never Swift's cooperative pool: the handlers
/// block on the store), first after `firstAfter` seconds and then every `interval`. `stop`
/// cancels the ticks and waits for a handler already running. The service's periodic work
/// (retention sweeps, the keyring watch) runs on these.
final class PeriodicTimer: @unchecked Sendable {
    // `@unchecked Sendable`: `timer` is only touched under `lock`.
    private let queue: DispatchQueue
    private let interval: Double
    private let firstAfter: Double
    private let leeway: DispatchTimeInterval
    private let handler: @Sendable () -> Void
    private let lock = NSLock()
    private var timer: (any DispatchSourceTimer)?

    init(label: String, every interval: Double, firstAfter: Double, leeway: DispatchTimeInterval, _ handler: @escaping @Sendable () -> Void) {
        self.queue = DispatchQueue(label: label, qos: .utility)
        self.interval = interval
        self.firstAfter = firstAfter
        self.leeway = leeway
        self.handler = handler
    }

    func start() {
        lock.lock(); defer { lock.unlock() }
        guard timer == nil else { return }
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + firstAfter, repeating: interval, leeway: leeway)
        t.setEventHandler(handler: handler)
        t.resume()
        timer = t
    }

    func stop() {
        lock.lock()
        let t = timer
        timer = nil
        lock.unlock()
        t?.cancel()
        queue.sync {}
    }
}
