import Foundation
public import Prometheus
import ProfileVault
import VaultPolicy
import VaultValues

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

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }
}
