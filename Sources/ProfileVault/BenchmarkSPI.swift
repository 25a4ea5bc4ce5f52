public import VaultAudit
public import VaultCrypto
public import VaultStore

// The benchmark's window below the gate (`@_spi(Benchmark) import ProfileVault`, in pvbench
// only: a test fails when any other source says `@_spi(Benchmark)`). pvbench measures what the
// gate costs, so it needs the bare operations beside the audited ones; no interface may call
// these.

/// The CSV reader, normalisation and raw statement the plaintext baseline shares with ingest,
/// so the baseline differs from the store by crypto and format only.
@_spi(Benchmark) public typealias CSVReader = VaultStore.CSVReader
@_spi(Benchmark) public typealias Normalization = VaultStore.Normalization
@_spi(Benchmark) public typealias RawStatement = VaultStore.RawStatement
/// AES-256-GCM seal throughput, one thread.
@_spi(Benchmark) public typealias CryptoBenchmark = VaultCrypto.CryptoBenchmark

extension Vault {
    /// Appends `count` `get` entries in transactions of `batch` (one signed checkpoint each),
    /// bypassing the operation they would record: the audit log's append rate.
    @_spi(Benchmark) public func benchmarkAppendAudit(count: Int, batch: Int) throws {
        let context = AuditContext(actor: actor.name, role: actor.role, requestID: "bench")
        let subject = [UInt8](repeating: 7, count: 32)
        var left = count
        while left > 0 {
            let k = min(batch, left)
            try store.audit((0..<k).map { _ in context.record("get", .read, purpose: "customer_support", subject: subject, fields: ["email", "phone"]) })
            left -= k
        }
    }

    /// The audit log exported as JSON Lines to a new file, without the export's own entry.
    @_spi(Benchmark) public func benchmarkExportAudit(to path: String) throws {
        let file = try OutputFile(path: path, force: false, protecting: store.ownFiles, what: "the audit export")
        _ = try store.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl, to: file)
    }

    /// An export verified with this store's audit public key.
    @_spi(Benchmark) public func benchmarkVerifyExport(path: String) throws -> AuditVerification {
        try AuditExportVerifier.verify(path: path, publicKey: store.auditPublicKey, expectHead: nil)
    }

    /// The store's chain verified, without the role check.
    @_spi(Benchmark) public func benchmarkVerifyStore() throws -> AuditVerification {
        try store.verifyAudit(expectHead: nil)
    }

    /// The decrypting read under `get`, without the gate and its audit entry.
    @_spi(Benchmark) public func benchmarkBareRead(customerID: String, fields: Set<String>) throws -> ProfileView? {
        try store.profile(customerID: customerID, fields: fields)
    }

    /// Ingest without the role check (the benchmark's vaults act in other roles).
    @_spi(Benchmark) public func benchmarkIngestProfiles(path: String, options: IngestOptions) throws -> IngestReport {
        try store.ingestProfiles(.file(path), options: options)
    }
}
