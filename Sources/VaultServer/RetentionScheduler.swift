import Foundation
public import Logging
public import ProfileVault
import VaultValues

/// `serve --retention-every INTERVAL`: applies the policy's retention rules in the service, once
/// at start and then every `interval`, as the actor `retention-scheduler` in a role of the
/// policy that holds the `retention` permission (its audit entries say who swept). A sweep
/// that fails is logged (without data values) and tried again at the next tick.
public final class RetentionScheduler: Sendable {
    /// The actor name the sweeps are audited under.
    public static let actorName = "retention-scheduler"
    private let vault: Vault
    private let logger: Logger
    private let ticks: PeriodicTimer

    /// Refuses (configuration) a policy in which no role may apply retention.
    public init(vault: Vault, every interval: Double, logger: Logger) throws {
        guard interval.isFinite, interval >= 60 else { throw VaultError(.usage, "the retention interval must be at least 60 seconds") }
        guard let role = vault.policy.roles.filter({ $0.value.contains("retention") }).map(\.key).sorted().first else {
            throw VaultError(.configuration, "\(vault.policy.file): no role holds the retention permission; --retention-every needs one (e.g. privacy_officer)")
        }
        let scheduled = vault.acting(as: Actor(name: Self.actorName, role: role))
        self.vault = scheduled
        self.logger = logger
        self.ticks = PeriodicTimer(label: "profilevault.retention-scheduler", every: interval, firstAfter: 0, leeway: .seconds(1)) {
            Self.sweep(scheduled, logger)
        }
    }

    /// One sweep now (what each tick runs).
    @discardableResult
    public func sweep() -> (eventsDeleted: Int, subjectsErased: Int)? { Self.sweep(vault, logger) }

    @discardableResult
    private static func sweep(_ vault: Vault, _ logger: Logger) -> (eventsDeleted: Int, subjectsErased: Int)? {
        do {
            let r = try vault.scheduledRetention()
            logger.info("retention sweep", metadata: ["events_deleted": .stringConvertible(r.eventsDeleted),
                                                       "subjects_erased": .stringConvertible(r.subjectsErased)])
            return (r.eventsDeleted, r.subjectsErased)
        } catch {
            let message = (error as? VaultError)?.detail ?? "the sweep failed"
            logger.error("retention sweep failed", metadata: ["error": .string(message)])
            return nil
        }
    }

    /// Starts the ticks: the first sweep at once, then every interval.
    public func start() { ticks.start() }

    /// Stops the ticks; a sweep already running finishes.
    public func stop() { ticks.stop() }
}
