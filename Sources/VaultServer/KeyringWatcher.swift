import Foundation
public import Logging
public import ProfileVault
import VaultValues

/// `serve` watches its keyring file: when it changes (`keys rotate` on another node sharing
/// it, or the rotated file copied to this host), the service adopts it
/// (``Vault/adoptKeyringFile()``) without a restart. One `stat` per tick on a queue of its own;
/// a file that fails to load or to match the store's key checks is logged once per change
/// (no key material) and the keys in use stay as they were. A sealed keyring whose HSM token
/// is away is tried again at every tick until the token is back.
public final class KeyringWatcher: @unchecked Sendable {
    // `@unchecked Sendable`: `stamp` is only touched under `lock`; `ticks` is set once in init.
    /// The actor name `keys.adopt` entries are audited under.
    public static let actorName = "keyring-watcher"
    private let vault: Vault
    private let logger: Logger
    private let lock = NSLock()
    private var stamp: String?
    private var ticks: PeriodicTimer?

    public init(vault: Vault, every interval: Double = 2, logger: Logger) {
        self.vault = vault.acting(as: Actor(name: Self.actorName, role: "service"))
        self.logger = logger
        self.stamp = vault.keyringFileStamp()
        let every = max(interval, 0.05)
        self.ticks = PeriodicTimer(label: "profilevault.keyring-watcher", every: every, firstAfter: every, leeway: .milliseconds(200)) { [weak self] in
            self?.check()
        }
    }

    /// Looks at the file once; adopts it when it changed since the last look. Returns whether
    /// it adopted a changed file.
    @discardableResult
    public func check() -> Bool {
        let now = vault.keyringFileStamp()
        lock.lock()
        let changed = now != nil && now != stamp
        if changed { stamp = now }
        lock.unlock()
        guard changed else { return false }
        do {
            let r = try vault.adoptKeyringFile()
            logger.info("keyring adopted", metadata: ["active": .stringConvertible(r.active), "versions": .string(r.versions.map(String.init).joined(separator: ","))])
            return true
        } catch {
            let message = (error as? VaultError)?.detail ?? "the keyring could not be adopted"
            logger.error("keyring not adopted; the keys in use are unchanged", metadata: ["error": .string(message)])
            // The HSM token that unseals it is away: look again at the next tick, so the file is
            // adopted once the token is back (any other failure waits for the file to change).
            if (error as? VaultError)?.kind == .unavailable {
                lock.lock()
                stamp = nil
                lock.unlock()
            }
            return false
        }
    }

    public func start() { ticks?.start() }

    public func stop() { ticks?.stop() }
}
