import Foundation
import Glibc
import Hummingbird
import KemuAPI
import Synchronization

/// metrics.k8s.io/v1beta1, what `kubectl top pod|node` reads: each running container's CPU and
/// memory, measured from /proc on this machine (pods are processes here, so the API server reads
/// them as metrics-server reads kubelet's summaries). CPU is the rate over the time since the
/// container was last measured (at least 1 s, else since its start); memory is the resident set
/// of its process group (the container leads its own session). A node's usage is its pods'.
extension APIServer {
    func metrics(_ t: Target, _ request: Request, _ query: Query) throws -> Response {
        guard request.method == .get else { throw APIError.methodNotAllowed("metrics are only read") }
        let labels = try query["labelSelector"].map(LabelSelector.init(parsing:)) ?? .everything
        let now = Date()
        if t.resource.kind == "NodeMetrics" {
            let nodes = store.list("nodes").items.filter { t.name == nil || $0.name == t.name }
            if let name = t.name, nodes.isEmpty { throw APIError.notFound("nodes.metrics.k8s.io \"\(name)\" not found") }
            let pods = store.list("pods").items
            let items: [JSON] = nodes.filter { labels.matches($0.labels) }.map { node in
                var cpu = 0.0, memory: Int64 = 0
                for pod in pods where pod[path: "spec.nodeName"]?.string == node.name {
                    for c in containerUsage(pod) { cpu += c.cpu; memory += c.memory }
                }
                return ["metadata": ["name": .string(node.name), "labels": node["metadata"]?["labels"] ?? [:]],
                        "timestamp": .string(Timestamp.format(now)), "window": "10s",
                        "usage": ["cpu": .string(Self.nanocores(cpu)), "memory": .string("\(memory / 1024)Ki")]]
            }
            return t.name != nil ? Self.json(Self.metric(items[0], "NodeMetrics")) : Self.json(Self.list(items, "NodeMetricsList"))
        }
        let pods = store.list("pods", namespace: t.namespace ?? "").items
            .filter { (t.name == nil || $0.name == t.name) && labels.matches($0.labels) && $0[path: "status.phase"]?.string == "Running" }
        if let name = t.name, pods.isEmpty { throw APIError.notFound("podmetrics.metrics.k8s.io \"\(t.namespace ?? "")/\(name)\" not found") }
        let items: [JSON] = pods.map { pod in
            ["metadata": ["name": .string(pod.name), "namespace": .string(pod.namespace), "labels": pod["metadata"]?["labels"] ?? [:]],
             "timestamp": .string(Timestamp.format(now)), "window": "10s",
             "containers": .array(containerUsage(pod).map { c in
                 ["name": .string(c.name), "usage": ["cpu": .string(Self.nanocores(c.cpu)), "memory": .string("\(c.memory / 1024)Ki")]]
             })]
        }
        return t.name != nil ? Self.json(Self.metric(items[0], "PodMetrics")) : Self.json(Self.list(items, "PodMetricsList"))
    }

    static func metric(_ item: JSON, _ kind: String) -> JSON {
        var item = item
        item["kind"] = .string(kind)
        item["apiVersion"] = "metrics.k8s.io/v1beta1"
        return item
    }

    static func list(_ items: [JSON], _ kind: String) -> JSON {
        ["kind": .string(kind), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": [:], "items": .array(items)]
    }

    static func nanocores(_ cores: Double) -> String { "\(Int64(max(0, cores) * 1e9))n" }

    /// Each running container's CPU (cores) and memory (bytes).
    func containerUsage(_ pod: JSON) -> [(name: String, cpu: Double, memory: Int64)] {
        (pod[path: "status.containerStatuses"]?.array ?? []).compactMap { status in
            guard let name = status["name"]?.string, status[path: "state.running"] != nil,
                  let pid = status["containerID"]?.string.flatMap({ Int32($0.replacingOccurrences(of: "kemu://", with: "")) }) else { return nil }
            let sample = UsageSampler.measure(group: pid)
            return (name, usage.rate(pid: pid, sample), sample.rss)
        }
    }
}

/// Per container process group: CPU time and resident memory from /proc, and the last sample
/// of each, so a read gives the rate since the one before.
final class UsageSampler: Sendable {
    struct Sample { var cpuSeconds: Double; var rss: Int64; var at: Date; var started: Double }
    private let last = Mutex<[Int32: Sample]>([:])
    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    static let page = Int64(sysconf(Int32(_SC_PAGESIZE)))

    /// CPU seconds (user + system) and resident bytes of every process in the group; the
    /// leader's start (seconds after boot).
    static func measure(group: Int32) -> Sample {
        var sample = Sample(cpuSeconds: 0, rss: 0, at: Date(), started: 0)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after the command: state ppid pgrp session … utime(14) stime(15) … starttime(22) vsize rss(24).
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 22, Int32(fields[2]) == group else { continue }
            sample.cpuSeconds += (Double(fields[11]) ?? 0) / ticks + (Double(fields[12]) ?? 0) / ticks
            sample.rss += (Int64(fields[21]) ?? 0) * page
            if pid == group { sample.started = (Double(fields[19]) ?? 0) / ticks }
        }
        return sample
    }

    /// Cores used since the previous sample (when a second or more ago), else since the start.
    func rate(pid: Int32, _ sample: Sample) -> Double {
        last.withLock { last in
            let previous = last[pid]
            if previous == nil || sample.at.timeIntervalSince(previous?.at ?? .distantPast) >= 1 { last[pid] = sample }
            if let previous, sample.at.timeIntervalSince(previous.at) >= 1 {
                return max(0, sample.cpuSeconds - previous.cpuSeconds) / sample.at.timeIntervalSince(previous.at)
            }
            let uptime = (try? String(contentsOfFile: "/proc/uptime", encoding: .utf8)).flatMap { Double($0.split(separator: " ").first ?? "") } ?? 0
            let age = uptime - sample.started
            return age > 0 ? sample.cpuSeconds / age : 0
        }
    }
}
