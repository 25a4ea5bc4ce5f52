import Foundation
import VaultPostgres
public import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// The figures the HTTP service's `/metrics` shows about the store: counts and sizes only, no
/// subject data (no ID, pseudonym or value), readable without a role (like ``budgetSnapshot()``).
public struct StoreFigures: Sendable {
    /// Which engine: `sqlite` or `postgres`.
    public var engine: String
    public var subjects: Int
    public var events: Int
    public var auditEntries: Int64
    /// SQLite: the database file's pages in use (page count x page size). PostgreSQL: the
    /// engine's tables with their indexes and TOAST (`pg_total_relation_size`).
    public var storeBytes: Int64
    /// SQLite: the size of the `-wal` file beside the store (0 when there is none); nil on
    /// PostgreSQL (the server's WAL is not the node's).
    public var walBytes: Int64?
    /// PostgreSQL: this node's pool (size, connections leased, leases waiting); nil on SQLite.
    public var pool: (maximum: Int, inUse: Int, waiting: Int)?
}

extension Vault {
    /// Counts and sizes of the store for the service's metrics (`status` plus the WAL file or
    /// the pool): no role needed, nothing audited, nothing about any subject.
    public func storeFigures() throws -> StoreFigures {
        let s = try store.status()
        var figures = StoreFigures(engine: "sqlite", subjects: s.subjects, events: s.events, auditEntries: s.auditEntries,
                                   storeBytes: s.fileBytes, walBytes: nil, pool: nil)
        if let pg = store as? PostgresProfiles {
            figures.engine = "postgres"
            figures.pool = pg.engine.poolState
        } else {
            var st = stat()
            figures.walBytes = stat(configuration.storePath + "-wal", &st) == 0 ? Int64(st.st_size) : 0
        }
        return figures
    }
}
