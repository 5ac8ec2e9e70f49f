import Synchronization

/// ztunnel's TCP metrics, by its names and labels: connections opened and closed, bytes received
/// (the request direction, client to server) and sent (the response direction), per source and
/// destination workload, namespace and principal, as each node's proxy sees them (`reporter`:
/// `source` on the client's node, `destination` on the server's).
public final class MeshTraffic: Sendable {
    public struct Key: Hashable, Sendable {
        public var reporter: String
        public var sourceWorkload: String
        public var sourceNamespace: String
        public var sourcePrincipal: String
        public var destinationWorkload: String
        public var destinationNamespace: String
        public var destinationPrincipal: String
    }

    /// One label set's counters: found once per connection, then added to without a lock.
    final class Series: Sendable {
        let opened = Atomic<Int>(0), closed = Atomic<Int>(0), received = Atomic<Int>(0), sent = Atomic<Int>(0)
    }

    let state = Mutex<[Key: Series]>([:])

    /// A connection opened: its label set's counters, counted once more.
    func opened(_ key: Key) -> Series {
        let series = state.withLock { s in
            if let series = s[key] { return series }
            let series = Series()
            s[key] = series
            return series
        }
        series.opened.add(1, ordering: .relaxed)
        return series
    }

    public var text: String {
        let all = state.withLock { $0 }.sorted { "\($0.key)" < "\($1.key)" }
        var out = ""
        let series: [(String, String, String, (Series) -> Int)] = [
            ("istio_tcp_connections_opened_total", "counter", "TCP connections opened through the mesh.", { $0.opened.load(ordering: .relaxed) }),
            ("istio_tcp_connections_closed_total", "counter", "TCP connections closed through the mesh.", { $0.closed.load(ordering: .relaxed) }),
            ("istio_tcp_received_bytes_total", "counter", "Bytes received during the request (client to server).",
             { $0.received.load(ordering: .relaxed) }),
            ("istio_tcp_sent_bytes_total", "counter", "Bytes sent during the response (server to client).", { $0.sent.load(ordering: .relaxed) }),
        ]
        for (name, type, help, value) in series {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (key, counters) in all { out += "\(name){\(Self.labels(key))} \(value(counters))\n" }
        }
        return out
    }

    static func labels(_ k: Key) -> String {
        [("reporter", k.reporter), ("source_workload", k.sourceWorkload), ("source_workload_namespace", k.sourceNamespace),
         ("source_principal", k.sourcePrincipal), ("destination_workload", k.destinationWorkload),
         ("destination_workload_namespace", k.destinationNamespace), ("destination_principal", k.destinationPrincipal),
         ("connection_security_policy", "mutual_tls"), ("request_protocol", "tcp"), ("response_flags", "-")]
            .map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// A workload's name as Istio derives it: the `app.kubernetes.io/name` or `app` label, else
    /// the pod's name without its ReplicaSet and pod suffixes.
    static func workload(pod: String, labels: [String: String]) -> String {
        if let name = labels["app.kubernetes.io/name"] ?? labels["app"] { return name }
        var parts = pod.split(separator: "-")
        if parts.count >= 3, parts[parts.count - 1].count == 5 { parts.removeLast(2) }
        return parts.joined(separator: "-")
    }
}
