import Foundation
import Synchronization

/// The control plane's own numbers (sync and programming latency) and the Prometheus text for
/// them and the engine's counters. kube-proxy's names where it has one, `kemu_proxy_` for what
/// only kemu measures. Series exist only for endpoints in a pool now, so cardinality follows the
/// cluster, not its history.
final class ProxyMetrics: Sendable {
    /// kube-proxy's sync_proxy_rules_duration_seconds buckets: 1 ms doubling.
    static let syncBuckets: [Double] = (0..<15).map { 0.001 * Double(1 << $0) }
    /// Finer than kube-proxy's (0.25 s …) because kemu applies a change in milliseconds.
    static let programmingBuckets: [Double] = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                                               0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    struct Histogram {
        var buckets: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0
        init(_ bounds: [Double]) { buckets = [UInt64](repeating: 0, count: bounds.count + 1) }

        mutating func observe(_ value: Double, _ bounds: [Double]) {
            buckets[bounds.firstIndex { value <= $0 } ?? bounds.count] += 1
            sum += value
            count += 1
        }
    }

    struct State {
        var sync = Histogram(ProxyMetrics.syncBuckets)
        var programming = Histogram(ProxyMetrics.programmingBuckets)
        var lastSync: Date?
        var serviceChanges: UInt64 = 0
    }

    let state = Mutex(State())

    func observeSync(seconds: Double, services: Int) {
        state.withLock { s in
            s.sync.observe(seconds, Self.syncBuckets)
            s.lastSync = Date()
            s.serviceChanges += UInt64(services)
        }
    }

    func observeProgramming(seconds: Double) {
        state.withLock { $0.programming.observe(max(seconds, 0), Self.programmingBuckets) }
    }

    var lastSync: Date? { state.withLock { $0.lastSync } }

    /// Prometheus text exposition format 0.0.4.
    func render(_ engine: EngineSnapshot) -> String {
        var out = ""
        let s = state.withLock { $0 }
        histogram(&out, "kubeproxy_sync_proxy_rules_duration_seconds", "Time to apply a batch of Service and EndpointSlice changes.",
                  Self.syncBuckets, s.sync, labels: "")
        histogram(&out, "kubeproxy_network_programming_duration_seconds",
                  "From an EndpointSlice's last-change-trigger-time to the proxy serving it.", Self.programmingBuckets, s.programming, labels: "")
        header(&out, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge", "When the last sync finished.")
        out += "kubeproxy_sync_proxy_rules_last_timestamp_seconds \(s.lastSync?.timeIntervalSince1970 ?? 0)\n"
        header(&out, "kubeproxy_sync_proxy_rules_service_changes_total", "counter", "Service changes applied.")
        out += "kubeproxy_sync_proxy_rules_service_changes_total \(s.serviceChanges)\n"
        header(&out, "kemu_proxy_open_connections", "gauge", "Client connections open through this proxy.")
        out += "kemu_proxy_open_connections \(engine.openConnections)\n"
        header(&out, "kemu_proxy_open_flows", "gauge", "UDP flows (client address and port to endpoint) open through this proxy.")
        out += "kemu_proxy_open_flows \(engine.openFlows)\n"
        header(&out, "kemu_proxy_listeners", "gauge", "Addresses the proxy accepts on.")
        out += "kemu_proxy_listeners \(engine.listeners.count)\n"

        let poolCounters: [(String, String, KeyPath<PoolStats, UInt64>)] = [
            ("kemu_proxy_connections_accepted_total", "Client connections accepted.", \.accepted),
            ("kemu_proxy_connections_rejected_total", "Client connections reset because no endpoint could be reached.", \.rejected),
            ("kemu_proxy_connect_retries_total", "Connects retried on another endpoint.", \.retries),
            ("kemu_proxy_replays_total", "Connections replayed on another endpoint after theirs ended before answering.", \.replays),
            ("kemu_proxy_fault_aborts_total", "Client connections a Fault reset.", \.faultAborts),
            ("kemu_proxy_fault_hangs_total", "Client connections a Fault held unanswered.", \.faultHangs),
            ("kemu_proxy_fault_delays_total", "Client connections a Fault delayed.", \.faultDelays),
            ("kemu_proxy_policy_denied_total", "Dials this node's NetworkPolicy or the mesh's policies refused.", \.policyDenied),
            ("kemu_proxy_datagrams_received_total", "UDP datagrams from clients.", \.datagramsIn),
            ("kemu_proxy_datagrams_sent_total", "UDP replies passed back to clients.", \.datagramsOut),
            ("kemu_proxy_datagrams_dropped_total", "UDP datagrams dropped (no endpoint, a Fault, a full flow table or buffer).", \.datagramsDropped),
        ]
        for (name, help, key) in poolCounters {
            header(&out, name, "counter", help)
            for p in engine.pools { out += "\(name){\(Self.poolLabels(p.name))} \(p.stats[keyPath: key])\n" }
        }
        let endpointCounters: [(String, String, String, (EngineSnapshot.EndpointState) -> String)] = [
            ("kemu_proxy_endpoint_connections_opened_total", "counter", "Connections made to the endpoint.", { "\($0.stats.opened)" }),
            ("kemu_proxy_endpoint_connections_closed_total", "counter", "Connections to the endpoint that ended.", { "\($0.stats.closed)" }),
            ("kemu_proxy_endpoint_connect_failures_total", "counter", "Connects to the endpoint that failed or timed out.", { "\($0.stats.connectFailures)" }),
            ("kemu_proxy_endpoint_ejections_total", "counter", "Times the endpoint was ejected after failed connects.", { "\($0.stats.ejections)" }),
            ("kemu_proxy_endpoint_active_connections", "gauge", "Connections open to the endpoint.", { "\($0.activeConnections)" }),
            ("kemu_proxy_endpoint_ejected", "gauge", "1 while the endpoint is ejected (or failing active health checks).", { $0.ejected ? "1" : "0" }),
            ("kemu_proxy_endpoint_healthy", "gauge", "0 while active health checks find the endpoint down.", { $0.healthy ? "1" : "0" }),
            ("kemu_proxy_endpoint_health_checks_failed_total", "counter", "Active health checks of the endpoint that failed.", { "\($0.stats.healthChecksFailed)" }),
            ("kemu_proxy_endpoint_sent_bytes_total", "counter", "Bytes sent to the endpoint.", { "\($0.stats.bytesToEndpoint)" }),
            ("kemu_proxy_endpoint_received_bytes_total", "counter", "Bytes received from the endpoint.", { "\($0.stats.bytesFromEndpoint)" }),
        ]
        for (name, type, help, value) in endpointCounters {
            header(&out, name, type, help)
            for p in engine.pools {
                for e in p.endpoints { out += "\(name){\(Self.poolLabels(p.name)),\(Self.endpointLabels(e))} \(value(e))\n" }
            }
        }
        let latency = "kemu_proxy_endpoint_connect_duration_seconds"
        header(&out, latency, "histogram", "Time to connect to the endpoint.")
        for p in engine.pools {
            for e in p.endpoints {
                var h = Histogram(ConnectLatency.bounds)
                if !e.stats.latencyBuckets.isEmpty { h.buckets = e.stats.latencyBuckets }
                h.sum = e.stats.latencySum
                h.count = e.stats.latencyBuckets.reduce(0, +)
                series(&out, latency, ConnectLatency.bounds, h, labels: "\(Self.poolLabels(p.name)),\(Self.endpointLabels(e))")
            }
        }
        return out
    }

    /// "default/web:http@local" → service="default/web",port="http",policy="Local".
    static func poolLabels(_ pool: String) -> String {
        var name = pool
        var policy = "Cluster"
        if name.hasSuffix("@local") { name.removeLast(6); policy = "Local" }
        let parts = name.split(separator: ":", maxSplits: 1).map(String.init)
        return "service=\"\(escape(parts[0]))\",port=\"\(escape(parts.count > 1 ? parts[1] : ""))\",policy=\"\(policy)\""
    }

    static func endpointLabels(_ e: EngineSnapshot.EndpointState) -> String {
        "endpoint=\"\(e.spec.address)\",pod=\"\(escape(e.spec.target))\",node=\"\(escape(e.spec.nodeName))\""
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    private func header(_ out: inout String, _ name: String, _ type: String, _ help: String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private func histogram(_ out: inout String, _ name: String, _ help: String, _ bounds: [Double], _ h: Histogram, labels: String) {
        header(&out, name, "histogram", help)
        series(&out, name, bounds, h, labels: labels)
    }

    private func series(_ out: inout String, _ name: String, _ bounds: [Double], _ h: Histogram, labels: String) {
        let prefix = labels.isEmpty ? "" : labels + ","
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += h.buckets[i]
            out += "\(name)_bucket{\(prefix)le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += h.buckets[bounds.count]
        out += "\(name)_bucket{\(prefix)le=\"+Inf\"} \(cumulative)\n"
        let braces = labels.isEmpty ? "" : "{\(labels)}"
        out += "\(name)_sum\(braces) \(h.sum)\n\(name)_count\(braces) \(h.count)\n"
    }
}
