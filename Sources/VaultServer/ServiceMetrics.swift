import Foundation
public import Prometheus
import Synchronization
import ProfileVault
import VaultPolicy
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// The service's Prometheus metrics, in a registry of its own (no process-global bootstrap, so
/// every application and test has its own).
///
/// Labels are only ever route *templates* (`/v1/subjects/{customer_id}`), methods, status codes
/// and purpose names from the policy: never a path, a query string, a customer ID or anything
/// from a request body.
public final class ServiceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        .seconds(5), .seconds(10),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// Records one finished request.
    func record(route: String, method: String, status: Int, duration: Duration) {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "http", metricName: "requests", unitName: "total",
                                             helpText: "HTTP requests by route template, method and status"),
            labels: [("route", route), ("method", method), ("status", String(status))]
        ).increment()
        registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                                             helpText: "HTTP request latency by route template and method"),
            labels: [("route", route), ("method", method)],
            buckets: Self.latencyBuckets
        ).record(duration)
    }

    /// Refreshes the budget gauges from the store (a read of the budget table; no subject data).
    func refreshBudget(vault: Vault) throws {
        for s in try vault.budgetSnapshot() {
            let name = s.purpose
            if s.zcdp {   // a zCDP purpose: rho spent and per period (the epsilon gauges are for epsilon purposes)
                registry.makeGauge(
                    descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "budget", metricName: "spent", unitName: "rho",
                                                     helpText: "zCDP budget (rho) spent in the current period, per zCDP purpose"),
                    labels: [("purpose", name)]
                ).set(s.spent)
                registry.makeGauge(
                    descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "budget", metricName: "limit", unitName: "rho",
                                                     helpText: "zCDP budget (rho) per period, per zCDP purpose"),
                    labels: [("purpose", name)]
                ).set(s.limit)
                continue
            }
            registry.makeGauge(
                descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "budget", metricName: "spent", unitName: "epsilon",
                                                 helpText: "Privacy budget spent in the current period, per purpose"),
                labels: [("purpose", name)]
            ).set(s.spent)
            registry.makeGauge(
                descriptor: MetricNameDescriptor(namespace: "profilevault", subsystem: "budget", metricName: "limit", unitName: "epsilon",
                                                 helpText: "Privacy budget per period, per purpose"),
                labels: [("purpose", name)]
            ).set(s.limit)
        }
    }

    /// The store's figures are read at most once per this interval (scrapes in between show the
    /// last reading): `/metrics` needs no token, and each reading counts rows.
    static let storeFiguresInterval: Duration = .seconds(10)
    private let lastStoreReading = Mutex<ContinuousClock.Instant?>(nil)

    /// Refreshes the store gauges from ``Vault/storeFigures()`` (counts and sizes; no subject
    /// data), unless they were read less than ``storeFiguresInterval`` ago.
    func refreshStore(vault: Vault) throws {
        let now = ContinuousClock.now
        let due = lastStoreReading.withLock { last -> Bool in
            if let last, now - last < Self.storeFiguresInterval { return false }
            last = now
            return true
        }
        guard due else { return }
        let f: StoreFigures
        do { f = try vault.storeFigures() } catch {
            lastStoreReading.withLock { $0 = nil }   // try again at the next scrape
            throw error
        }
        let engine = [("engine", f.engine)]
        registry.makeGauge(name: "profilevault_store_size_bytes", labels: engine,
                           help: "Bytes of the store: SQLite database pages in use, or the PostgreSQL engine's tables and indexes").set(f.storeBytes)
        registry.makeGauge(name: "profilevault_store_subjects", labels: engine, help: "Subjects in the store").set(Int64(f.subjects))
        registry.makeGauge(name: "profilevault_store_events", labels: engine, help: "Events in the store").set(Int64(f.events))
        registry.makeGauge(name: "profilevault_store_audit_entries", labels: engine, help: "Entries of the audit log (the head's sequence number)").set(f.auditEntries)
        if let wal = f.walBytes {
            registry.makeGauge(name: "profilevault_store_wal_bytes", help: "Bytes of the SQLite store's write-ahead log file").set(wal)
        }
        if let pool = f.pool {
            registry.makeGauge(name: "profilevault_postgres_pool_max_connections", help: "Size of this node's PostgreSQL connection pool").set(Int64(pool.maximum))
            registry.makeGauge(name: "profilevault_postgres_pool_connections_in_use", help: "Pool connections leased to a statement or transaction").set(Int64(pool.inUse))
            registry.makeGauge(name: "profilevault_postgres_pool_waiting", help: "Statements and transactions waiting for a pool connection").set(Int64(pool.waiting))
        }
    }

    /// Refreshes the process gauges from /proc (Linux; elsewhere nothing is set): resident and
    /// virtual memory, open and maximum file descriptors, start time. Also the build info.
    func refreshProcess() {
        registry.makeGauge(name: "profilevault_build_info", labels: [("version", ProductVersion.current)],
                           help: "The running profilectl version (always 1)").set(Int64(1))
        let figures = ProcessFigures.read()
        if let rss = figures.residentBytes {
            registry.makeGauge(name: "process_resident_memory_bytes", help: "Resident memory size in bytes").set(rss)
        }
        if let vsz = figures.virtualBytes {
            registry.makeGauge(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes").set(vsz)
        }
        if let fds = figures.openFDs {
            registry.makeGauge(name: "process_open_fds", help: "Number of open file descriptors").set(Int64(fds))
        }
        if let max = figures.maxFDs {
            registry.makeGauge(name: "process_max_fds", help: "Maximum number of open file descriptors").set(max)
        }
        if let start = figures.startTimeSeconds {
            registry.makeGauge(name: "process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds").set(start)
        }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }
}

/// What /proc says about this process (each figure nil where it cannot be read).
struct ProcessFigures {
    var residentBytes: Int64?
    var virtualBytes: Int64?
    var openFDs: Int?
    var maxFDs: Int64?
    var startTimeSeconds: Double?

    /// The process start time, fixed for the process's life (read once).
    static let startTime: Double? = readStartTime()

    static func read() -> ProcessFigures {
        var f = ProcessFigures()
        let page = Int64(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/self/statm: size resident shared text lib data dt, in pages.
        if page > 0, let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let fields = statm.split(separator: " ").compactMap { Int64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if fields.count >= 2 {
                f.virtualBytes = fields[0].multipliedReportingOverflow(by: page).overflow ? nil : fields[0] * page
                f.residentBytes = fields[1].multipliedReportingOverflow(by: page).overflow ? nil : fields[1] * page
            }
        }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            // The directory's own descriptor, open while it is listed, is one of them.
            f.openFDs = max(0, entries.count - 1)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            // RLIM_INFINITY (all bits set) has no Int64: no figure then.
            f.maxFDs = Int64(exactly: limit.rlim_cur)
        }
        f.startTimeSeconds = startTime
        return f
    }

    /// The boot time (`btime` of /proc/stat) plus the process's start in clock ticks after boot
    /// (field 22 of /proc/self/stat, counted after the parenthesised command name).
    static func readStartTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(after: close)...].split(separator: " ")
        // rest[0] is field 3 (state), so field 22 is rest[19].
        guard rest.count > 19, let ticks = Double(rest[19]) else { return nil }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        guard hz > 0, let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) else { return nil }
        return boot + ticks / hz
    }
}
