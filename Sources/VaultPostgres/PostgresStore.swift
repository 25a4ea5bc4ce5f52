import Foundation
public import VaultCrypto
public import VaultPolicy
public import VaultStore
import VaultValues

/// Opening and creating a store on PostgreSQL from a `--store postgres://...` location: what
/// the `Vault` gate calls when the store is not a file. Synchronous, as the rest of the seam.
///
/// The password never comes from the location (it is refused there): `PGPASSWORD`, or the
/// passfile (`PGPASSFILE`, `~/.pgpass`), as libpq finds it.
public enum PostgresStore {
    /// True when `location` names a PostgreSQL store rather than a SQLite file.
    public static func isLocation(_ location: String) -> Bool { PostgresLocation.isPostgresURL(location) }

    /// `option`: the command-line option that gave the location, named in the error.
    static func parse(_ url: String, environment: [String: String]?, option: String = "--store") throws -> (PostgresLocation, String?) {
        do {
            let location = try PostgresLocation(parsing: url)
            return (location, try location.password(environment: environment))
        } catch let e as PostgresLocation.Invalid {
            throw VaultError(.configuration, "\(option): \(e.description)")
        }
    }

    /// Creates (or migrates) the store at `url` as its owner role: the engine's schema and the
    /// least-privilege service role (`serviceRole`, default `profilevault_service`), the tables
    /// of `schema`, the keyring's key checks. Then opens it as the owner (the gate records the
    /// first policy through it). Safe to run again with the same schema and keyring.
    public static func create(url: String, keyring: Keyring, schema: Schema, schemaVersion: String, policyVersion: String,
                              serviceRole: String? = nil, maximumConnections: Int = 8,
                              environment: [String: String]? = nil) throws -> PostgresProfiles {
        let (location, password) = try parse(url, environment: environment)
        let options = PostgresEngine.InitOptions(serviceRole: serviceRole ?? "profilevault_service",
                                                 schemaVersion: schemaVersion, policyVersion: policyVersion)
        try PostgresProfiles.wait("creating the store at \(location.description)") {
            let owner = try PostgresEngine(location: location, password: password, auditSigningKey: Ed25519PrivateKey(seed: SecureBytes.random(count: 32)),
                                           maximumConnections: 2)
            do {
                try await owner.probe()
                try await PostgresProfiles.create(owner: owner, schema: schema, keyring: keyring, options: options)
            } catch {
                await owner.close()
                throw error
            }
            await owner.close()
        }
        return try open(url: url, keyring: keyring, schema: schema, leastPrivilege: false,
                        maximumConnections: maximumConnections, environment: environment)
    }

    /// Opens the store at `url` for a service node or a CLI command: checks the location and
    /// password with one direct connection, the schema version, the node's own privileges
    /// (`leastPrivilege`: a login role the grants do not restrain is refused; false only for
    /// the owner's tools), the schema and the keyring. The audit signing key is derived from
    /// the keyring's version the store was created with, as on SQLite.
    public static func open(url: String, keyring: Keyring, schema: Schema, leastPrivilege: Bool = true,
                            maximumConnections: Int = 8, environment: [String: String]? = nil) throws -> PostgresProfiles {
        let (location, password) = try parse(url, environment: environment)
        return try PostgresProfiles.wait("opening the store at \(location.description)") {
            // A first engine checks everything a node must check and reads which key version
            // signs the chain; it never appends (its key is a throw-away one).
            let probe = try await PostgresEngine.open(location: location, password: password,
                                                      auditSigningKey: Ed25519PrivateKey(seed: SecureBytes.random(count: 32)),
                                                      maximumConnections: 1, leastPrivilege: leastPrivilege)
            let meta: [String: String]
            do { meta = try await probe.meta() } catch {
                await probe.close()
                throw error
            }
            await probe.close()
            guard let text = meta["identity_key_version"], let identity = UInt32(text) else {
                throw PostgresStoreError(.configuration, "\(location.description): no profile tables here; run profilectl init --store with this location, the schema and the keyring first")
            }
            guard keyring.versions.contains(identity) else {
                throw PostgresStoreError(.integrity, "keyring \(keyring.path ?? "?") lacks key version \(identity), which this store was created with")
            }
            let signing: Ed25519PrivateKey
            do { signing = try Ed25519PrivateKey(seed: keyring.derive(.auditSigning, version: identity)) } catch {
                throw PostgresStoreError(.configuration, "keyring \(keyring.path ?? "?"): cannot derive the audit signing key of version \(identity)")
            }
            let engine = try PostgresEngine(location: location, password: password, auditSigningKey: signing,
                                            maximumConnections: maximumConnections)
            do {
                return try await PostgresProfiles.open(engine: engine, schema: schema, keyring: keyring)
            } catch {
                await engine.close()
                throw error
            }
        }
    }

    /// Counts and the audit head without a keyring (`profilectl status`): what any role that
    /// may connect can count, never a subject's data.
    public static func status(url: String, environment: [String: String]? = nil) throws -> StoreStatus {
        try withEngine(url: url, "reading the status", environment: environment) { engine in try await PostgresProfiles.status(engine: engine) }
    }

    /// Every policy the store has run under, oldest first, without a keyring (`policy history`,
    /// `policy status`): the policy ledger holds no personal data.
    public static func policyHistory(url: String, environment: [String: String]? = nil) throws -> [PolicyRecord] {
        try withEngine(url: url, "reading the policy history", environment: environment) { engine in
            try await engine.transaction("reading the policy history") { conn in
                try await engine.rows(conn, """
                    SELECT seq, version, sha256, schema_sha256, applied_at, actor, role, summary, changes
                    FROM profilevault.policy_history ORDER BY seq
                    """).map(PostgresEngine.policyRecord)
            }
        }
    }

    /// Runs `body` with an engine of one connection at `url` that appends nothing (a throw-away
    /// signing key), closed afterwards.
    static func withEngine<T: Sendable>(url: String, _ what: String, environment: [String: String]?,
                                        _ body: @escaping @Sendable (PostgresEngine) async throws -> T) throws -> T {
        let (location, password) = try parse(url, environment: environment)
        return try PostgresProfiles.wait("\(what) of \(location.description)") {
            let engine = try await PostgresEngine.open(location: location, password: password,
                                                       auditSigningKey: Ed25519PrivateKey(seed: SecureBytes.random(count: 32)),
                                                       maximumConnections: 1, leastPrivilege: false)
            do {
                let value = try await body(engine)
                await engine.close()
                return value
            } catch {
                await engine.close()
                throw error
            }
        }
    }
}
