import Foundation
public import VaultAudit
public import VaultCrypto
public import VaultStore
public import DifferentialPrivacy
import VaultPostgres

// What the interfaces (profilectl, VaultServer, pvbench) may name of the layers below. They
// import ProfileVault and VaultValues and nothing of VaultStore, VaultCrypto or VaultAudit (a
// test and `.ci/run`'s `--explicit-target-dependency-import-check=error` build hold them to it),
// so the store is reachable only through `Vault`'s methods and their role checks. These names
// are value types (options, reports, file-creation rules), not doors to the data.

/// How an ingest reads its records (format, batch size, rejects file, progress).
public typealias IngestOptions = VaultStore.IngestOptions
/// A file no output may replace (keyring, store, policy, tokens).
public typealias ProtectedFile = VaultStore.ProtectedFile
/// An output file created new and 0600 (or replaced by rename with `--force`).
public typealias OutputFile = VaultStore.OutputFile
/// The result of verifying an audit log or an export.
public typealias AuditVerification = VaultAudit.AuditVerification
/// The formats of an audit export (JSON Lines, OCSF JSON).
public typealias AuditExportFormat = VaultStore.AuditExportFormat
/// What an audit export wrote (entries, signed head, last sequence number); an auditor's report.
public typealias AuditExportResult = VaultStore.AuditExportResult
public typealias AuditReport = VaultStore.AuditReport
/// An ingest's input format and its report.
public typealias InputFormat = VaultStore.InputFormat
public typealias IngestReport = VaultStore.IngestReport
/// A decrypted profile as a role may see it, and one of its values.
public typealias ProfileView = VaultStore.ProfileView
public typealias ProfileValue = VaultStore.ProfileValue
/// Key versions and how many subjects each wraps; the store's counts; one policy of the ledger.
public typealias KeyStatus = VaultStore.KeyStatus
public typealias StoreStatus = VaultStore.StoreStatus
public typealias PolicyRecord = VaultStore.PolicyRecord

extension Vault {
    // MARK: - Reads that need no keyring

    /// Counts of subjects, events, key versions and audit entries, and the policy in force:
    /// `profilectl status`. Reads only the store's own bookkeeping (no keyring, no role: it
    /// shows what anyone who can read the file can count), never a subject's data.
    public static func status(storePath: String) throws -> StoreStatus {
        PostgresStore.isLocation(storePath) ? try PostgresStore.status(url: storePath) : try ProfileStore.status(path: storePath)
    }

    /// Every policy the store has run under: `profilectl policy history` (no keyring: the
    /// policy ledger holds no personal data).
    public static func policyHistory(storePath: String) throws -> [PolicyRecord] {
        PostgresStore.isLocation(storePath) ? try PostgresStore.policyHistory(url: storePath) : try ProfileStore.policyHistory(path: storePath)
    }

    // MARK: - Keys and audit exports, without a store

    /// A fresh keyring written to `path` (mode 0600, never over an existing file: exit 73).
    /// Returns the key versions and the active one.
    public static func generateKeyring(at path: String, note: String) throws -> (versions: [UInt32], active: UInt32) {
        let ring = Keyring.generate(note: note)
        do {
            try ring.write(to: path)
        } catch {
            throw VaultError(.cannotCreate, error.description)
        }
        return (ring.versions, ring.active)
    }

    /// Whether the keyring at `path` is the public example keyring (recognised by content);
    /// false when it cannot be read (the command's own load then says why).
    public static func isExampleKeyring(path: String) -> Bool {
        (try? Keyring.load(path: path))?.isExample ?? false
    }

    /// Verifies an audit export with the audit public key (PEM): needs no keyring, store or
    /// role, as `profilectl audit verify --file F --public-key K`.
    public static func verifyAuditExport(path: String, publicKeyPEM: String, keyName: String,
                                         expectHead: String?) throws -> AuditVerification {
        let key: Ed25519PublicKey
        do { key = try Ed25519PublicKey(pemRepresentation: publicKeyPEM) } catch {
            throw VaultError(.configuration, "\(keyName): not an Ed25519 public key in PEM form")
        }
        guard FileManager.default.fileExists(atPath: path) else { throw VaultError(.notFound, "\(path): no such file") }
        do {
            return try AuditExportVerifier.verify(path: path, publicKey: key, expectHead: expectHead)
        } catch {
            throw VaultError(.invalidInput, error.description)
        }
    }

    /// ``verifyAuditExport(path:publicKeyPEM:keyName:expectHead:)`` of an export held in memory
    /// (the console's upload: nothing is written to disk). `name` is what messages call it.
    public static func verifyAuditExport(bytes: [UInt8], name: String, publicKeyPEM: String, keyName: String,
                                         expectHead: String?) throws -> AuditVerification {
        let key: Ed25519PublicKey
        do { key = try Ed25519PublicKey(pemRepresentation: publicKeyPEM) } catch {
            throw VaultError(.configuration, "\(keyName): not an Ed25519 public key in PEM form")
        }
        do {
            return try AuditExportVerifier.verify(bytes: bytes, name: name, publicKey: key, expectHead: expectHead)
        } catch {
            throw VaultError(.invalidInput, error.description)
        }
    }

    /// A time in milliseconds since 1970 as the audit log writes it (ISO 8601, UTC, milliseconds).
    public static func isoTime(millis: Int64) -> String { AuditLog.isoMillis(millis) }

    /// `bytes` as lower-case hex, as the audit log writes hashes.
    public static func hex(_ bytes: [UInt8]) -> String { AuditLog.hex(bytes) }

    // MARK: - The store's life (the process that opened the vault)

    /// Moves the write-ahead log into the store file (the demo does before it scans the file).
    public func checkpoint() throws { try store.checkpoint() }

    /// Keeps the write-ahead log short while a long-running service writes (`serve`).
    public func startBackgroundCheckpoints() throws { try store.startBackgroundCheckpoints(every: 0.05) }

    /// Closes the store: the last checkpoint; the vault is unusable afterwards.
    public func close() throws { try store.close() }

    /// Where the store is, as the configuration named it.
    public var storePath: String { store.location }

    /// One cheap read, without a role: the first declared budget's ledger row, else the
    /// store's counts. The service's health check (`/healthz`) asks whether the store answers,
    /// and learns nothing of any subject.
    public func healthProbe() throws {
        if let name = policy.purposeOrder.first(where: { policy.purpose($0)?.dpBudget != nil }), let b = policy.purpose(name)?.dpBudget {
            _ = try store.budgetState(purpose: name, limit: b.epsilon, periodSeconds: b.periodSeconds)
        } else {
            _ = try store.status()
        }
    }

    /// Each declared budget's epsilon spent and left, without a role: the service's metrics
    /// (`profilevault_dp_budget_*`). Budget figures are not personal data; `budgetStatus()` is
    /// the role-checked form for analysts.
    public func budgetSnapshot() throws -> [BudgetState] {
        try policy.purposeOrder.compactMap { name -> BudgetState? in
            guard let b = policy.purpose(name)?.dpBudget else { return nil }
            if b.rho != nil { return try zcdpBudgetState(purpose: name, budget: b) }
            return try store.budgetState(purpose: name, limit: b.epsilon, deltaLimit: b.delta, periodSeconds: b.periodSeconds)
        }
    }

    // MARK: - What the file holds

    /// One subject's rows as the store file holds them (ciphertext as hex, the pseudonym, the
    /// wrapped key, the plaintext attributes): what a reader of the file sees, for the demo's
    /// "ciphertext only" step. Needs `export` (a role that may already read the subject's whole
    /// record decrypted) and is audited as `inspect.stored` with the subject's pseudonym.
    public func storedRows(customerID: String) throws -> RawSubjectRows? {
        try audited("inspect.stored", .read, permission: "export", subjectID: customerID) { context in
            guard let rows = try store.rawRows(customerID: customerID) else {
                // Recorded as `get` records an unknown subject: a lookup that finds no one is
                // an attempt too (else the view would probe who is a customer without a trace).
                try store.audit([context.record("inspect.stored", .read, subject: try store.pseudonym(ofCustomerID: customerID),
                                                outcome: .error, detail: "no subject with this customer ID")])
                return nil
            }
            try store.audit([context.record("inspect.stored", .read, subject: try store.pseudonym(ofCustomerID: customerID))])
            return rows
        }
    }
}
