import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuStore
import KemuSystem

/// The proxy's control plane: how soon every node serves an EndpointSlice change, and one
/// node's first sync of 10,000 Services with 50,000 endpoints.
extension ProxyBench {
    static let slicesResource = APIResources.endpointSlices
    static let servicesResource = APIResources.services

    /// A selectorless Service and its hand-written slice of `endpoints` addresses.
    static func manualService(_ name: String, endpoints: [String], trigger: Date? = nil) -> (JSON, JSON) {
        var service: JSON = ["apiVersion": "v1", "kind": "Service", "spec": ["ports": [["port": 80, "targetPort": 8080]]]]
        service.name = name
        service.namespace = "default"
        var slice: JSON = ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                           "ports": [["name": "", "port": 8080, "protocol": "TCP"]],
                           "endpoints": .array(endpoints.map { ["addresses": [.string($0)], "conditions": ["ready": true]] })]
        slice.name = name + "-1"
        slice.namespace = "default"
        slice.labels = ["kubernetes.io/service-name": name]
        if let trigger { slice.annotations = ["endpoints.kubernetes.io/last-change-trigger-time": Timestamp.formatNano(trigger)] }
        return (service, slice)
    }

    /// 40 EndpointSlice changes, 50 ms apart, in a 10-node cluster; every node's proxy measures
    /// each from the slice's trigger time to the change being applied (upstream's metric). Returns
    /// (p50, p99, mean) in ms over all nodes' samples, and the sample count.
    static func programming(kemu: String) async throws -> (p50: Double, p99: Double, mean: Double, samples: Int) {
        let config = NSTemporaryDirectory() + "kemu-bench-programming.yaml"
        defer { try? FileSystem.removeFile(config) }
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 10\n")
        try ClusterBench.sh([kemu, "up", "-f", config])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "/run/kemu/\(cluster)/apiserver/kubeconfig"))
        let (service, first) = manualService("prog", endpoints: ["10.244.1.100"])
        _ = try await client.create(servicesResource, service)
        var slice = try await client.create(slicesResource, first)
        try await Task.sleep(for: .milliseconds(300))
        for i in 0..<40 {
            slice["endpoints"] = [["addresses": [.string("10.244.1.\(101 + i % 100)")], "conditions": ["ready": true]]]
            slice.annotations = ["endpoints.kubernetes.io/last-change-trigger-time": Timestamp.formatNano(Date())]
            slice = try await client.update(slicesResource, slice)
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(300))
        // Merge every node's histogram.
        var buckets: [(Double, Double)] = []
        var sum = 0.0, count = 0.0
        for node in 1...10 {
            let text = try output(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:10249/metrics"], in: NetworkNamespace("kemu-\(cluster)-node-\(node)"))
            for line in text.split(separator: "\n") where line.hasPrefix("kubeproxy_network_programming_duration_seconds") {
                let value = Double(line.split(separator: " ").last ?? "") ?? 0
                if line.hasPrefix("kubeproxy_network_programming_duration_seconds_bucket{le=\"") {
                    let bound = line.split(separator: "\"")[1]
                    let le = bound == "+Inf" ? Double.infinity : Double(bound) ?? 0
                    if let i = buckets.firstIndex(where: { $0.0 == le }) { buckets[i].1 += value } else { buckets.append((le, value)) }
                } else if line.hasPrefix("kubeproxy_network_programming_duration_seconds_sum") {
                    sum += value
                } else if line.hasPrefix("kubeproxy_network_programming_duration_seconds_count") {
                    count += value
                }
            }
        }
        buckets.sort { $0.0 < $1.0 }
        func quantile(_ q: Double) -> Double {
            (buckets.first { $0.1 >= q * count }?.0 ?? .infinity) * 1000
        }
        return (quantile(0.5), quantile(0.99), count > 0 ? sum / count * 1000 : 0, Int(count))
    }

    /// 10,000 Services of 5 endpoints each, then node-1's proxy started afresh (its old
    /// addresses removed from lo): the time to its first full sync, and its memory then.
    static func scale(kemu: String) async throws -> (sync: String, sinceStart: String, wall: Double, rssMB: Int, services: Int) {
        let services = 10_000
        let config = NSTemporaryDirectory() + "kemu-bench-scale.yaml"
        defer { try? FileSystem.removeFile(config) }
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 1\n")
        try ClusterBench.sh([kemu, "up", "-f", config])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let state = "/run/kemu/\(cluster)"
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<services {
                group.addTask {
                    let ips = (0..<5).map { "10.\(200 + i / 5000).\((i / 20) % 250).\((i % 20) * 5 + $0 + 1)" }
                    let (service, slice) = manualService("s\(i)", endpoints: ips)
                    _ = try await client.create(servicesResource, service)
                    _ = try await client.create(slicesResource, slice)
                }
                // No more in flight than the shared client's connections (16): a request waiting for
                // one past its connect timeout fails (getConnectionFromPoolTimeout).
                if i >= 15 { try await group.next() }
            }
            try await group.waitForAll()
        }
        // A cold start: the node's proxy goes, its addresses too, then a new proxy alone.
        let daemon = pid_t((try FileSystem.readFile("\(state)/proxy-node-1.pid")).trimmingCharacters(in: .whitespacesAndNewlines))!
        // The pid file goes first (as `kemu stop` does): else the supervisor restarts the proxy
        // it sees die, and the bench's own fails as a second proxy of the node.
        try FileSystem.removeFile("\(state)/proxy-node-1.pid")
        kill(daemon, SIGKILL)
        while kill(daemon, 0) == 0 { usleep(10_000) }
        let node = NetworkNamespace("kemu-\(cluster)-node-1")
        _ = try output(["ip", "addr", "flush", "dev", "lo", "scope", "global"], in: node)
        let log = "\(state)/proxy-bench.log"
        let logFD = try FileDescriptor(opening: log, flags: O_WRONLY | O_CREAT | O_TRUNC)
        var options = Spawn.Options()
        (options.stdout, options.stderr) = (logFD.raw, logFD.raw)
        // As the supervisor starts it: in the node's namespace, with the proxies' credentials
        // (from the host, without them, it never reached the API server and never synced).
        options.namespace = node
        let start = Date()
        let proxy = try Spawn.spawn([kemu, "proxy", "--node", "node-1", "--cluster", cluster, "--kubeconfig", "\(state)/nodes/kube-proxy.kubeconfig"], options)
        defer { kill(proxy, SIGKILL); _ = try? Spawn.wait(proxy) }
        var line = ""
        while Date().timeIntervalSince(start) < 60 {
            if let found = ((try? FileSystem.readFile(log)) ?? "").split(separator: "\n").first(where: { $0.contains("first sync:") }) {
                line = String(found)
                break
            }
            usleep(5_000)
        }
        let wall = Date().timeIntervalSince(start)
        if line.isEmpty {
            let said = (try? FileSystem.readFile(log)) ?? ""
            FileHandle.standardError.write(Data("proxy-sync: no first sync within 60 s; the proxy's log ends:\n\(said.suffix(2000))\n".utf8))
        }
        let rss = ClusterBench.processMemory(proxy).rss / 1024
        // "first sync: N services, L listeners, A addresses on lo in X ms (Y ms since the proxy started)"
        let words = line.split(separator: " ")
        let inIndex = words.lastIndex(of: "in")
        let sync = inIndex.map { words[$0 + 1] + " ms" } ?? "?"
        let since = words.firstIndex(of: "(").map { words[$0 + 1] + " ms" } ?? (line.split(separator: "(").last.map { String($0.split(separator: " ").first ?? "?") + " ms" } ?? "?")
        return (sync, since, wall, rss, services)
    }
}
