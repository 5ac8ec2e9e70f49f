import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// Issue 20's numbers, in one run: what keeping the client's address costs the node proxy (the
/// same proxy, the same pods, a ClusterIP whose dial keeps it against a NodePort whose dial is
/// masqueraded), UDP through the proxy against the direct path, pod-to-pod new connections with
/// 100 NetworkPolicies against none, and how soon every node of 10 applies a policy change.
enum FidelityBench {
    static let cluster = "kfidel"

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        let state = "/run/kemu/\(cluster)"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let config = NSTemporaryDirectory() + "kemu-bench-fidelity.yaml"
        let backendConfig = NSTemporaryDirectory() + "kemu-bench-fidelity-backend.cfg"
        defer { for f in [config, backendConfig] { try? FileSystem.removeFile(f) } }
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 2\n")
        try ClusterBench.sh([kemu, "up", "-f", config])
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        try FileSystem.writeFile(backendConfig, ProxyBench.httpBackend)
        let objects: [(APIResource, JSON)] = [
            (APIResources.pods, ProxyBench.pod("http", node: "node-2", labels: ["app": "http"], command: ["haproxy", "-db", "-f", backendConfig])),
            (APIResources.pods, ProxyBench.pod("iperf", node: "node-2", labels: ["app": "iperf"], command: ["iperf3", "-s", "-p", "5201"])),
            (APIResources.pods, ProxyBench.pod("client", node: "node-1", labels: ["role": "client"], command: ["sleep", "86400"])),
            (APIResources.services, nodePortService("http", [("TCP", 80, 8080, 30880)])),
            (APIResources.services, nodePortService("iperf", [("TCP", 5201, 5201, 30520), ("UDP", 5201, 5201, 30520)])),
        ]
        for (resource, object) in objects { _ = try await client.create(resource, object) }
        let ips = try await ProxyBench.runningPodIPs(client, ["http", "iperf", "client"])
        guard let httpIP = ips["http"], let iperfIP = ips["iperf"] else { throw KemuError(.timeout, "bench pods not running: \(ips)") }
        let httpVIP = try await client.get(APIResources.services, namespace: "default", name: "http")[path: "spec.clusterIP"]?.string ?? ""
        let iperfVIP = try await client.get(APIResources.services, namespace: "default", name: "iperf")[path: "spec.clusterIP"]?.string ?? ""
        try await Task.sleep(for: .seconds(1))
        let clientNS = try await ProxyBench.podNamespace(client, "client", cluster: cluster)
        try ProxyBench.reuseClientPorts(clientNS)
        let proxyPID = pid_t((try FileSystem.readFile("\(state)/proxy-node-1.pid")).trimmingCharacters(in: .whitespacesAndNewlines))
        let gateway = "10.244.1.1"

        // 1. The client's address kept (ClusterIP) or the node's (NodePort, Cluster): same proxy.
        let paths = [
            ProxyBench.Path(name: "direct (pod → pod)", http: "http://\(httpIP):8080/", iperf: (iperfIP, "5201"), pid: nil),
            ProxyBench.Path(name: "kemu, client's address kept (ClusterIP)", http: "http://\(httpVIP):80/", iperf: (iperfVIP, "5201"), pid: proxyPID),
            ProxyBench.Path(name: "kemu, node's address (NodePort, Cluster)", http: "http://\(gateway):30880/", iperf: (gateway, "30520"), pid: proxyPID),
        ]
        var rounds: [[ProxyBench.Result]] = []
        var udpRounds: [[UDPResult]] = [], paced: [[UDPResult]] = []
        for _ in 0..<3 {
            rounds.append(try paths.map { try ProxyBench.measure($0, from: clientNS) })
            udpRounds.append(try paths.map { try udp($0.iperf.0, $0.iperf.1, from: clientNS) })
            paced.append(try paths.map { try udp($0.iperf.0, $0.iperf.1, from: clientNS, rate: "40M") })
        }
        let results = paths.indices.map { i in ProxyBench.median(rounds.map { $0[i] }) }
        let udpResults = paths.indices.map { i in UDPResult.median(udpRounds.map { $0[i] }) }
        let pacedResults = paths.indices.map { i in UDPResult.median(paced.map { $0[i] }) }
        func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2f×", a / b) : "–" }
        var sourceRows = "", udpRows = ""
        for (i, (path, r)) in zip(paths, results).enumerated() {
            sourceRows += "| \(path.name) | \(String(format: "%.1f", r.gbps)) Gb/s | \(String(format: "%.0f", r.closeRate)) (\(ratio(r.closeRate, results[0].closeRate))) | \(String(format: "%.0f", r.keepAlive)) | \(path.pid == nil ? "–" : String(format: "%.1f µs", r.cpuPerConnection)) |\n"
            let u = udpResults[i]
            udpRows += "| \(path.name) | \(String(format: "%.0f", u.sentPerSecond)) | \(String(format: "%.0f", u.receivedPerSecond)) (\(ratio(u.receivedPerSecond, udpResults[0].receivedPerSecond))) | \(String(format: "%.1f", u.lossPercent)) % | \(String(format: "%.2f", pacedResults[i].lossPercent)) % of \(String(format: "%.0f", pacedResults[i].sentPerSecond))/s |\n"
        }

        // 2. Pod to pod, with no policy and with 100 (the allowing one last in each chain).
        let policy = try await policyCost(client, clientNS: clientNS, http: "http://\(httpIP):8080/", viaService: "http://\(httpVIP):80/")
        try ClusterBench.sh([kemu, "down", "--cluster", cluster])
        let programming = try await policyProgramming(kemu: kemu)

        let errors = zip(paths, results).filter { !$0.1.errors.isEmpty }.map { "\($0.0.name): \($0.1.errors)" }
        let table = """
        ## Network fidelity: the client's address kept (client pod on node-1 → server pod on node-2)

        | path | iperf3, 1 stream | new connections/s, `Connection: close`, wrk 32 conns (× direct) | keep-alive requests/s | proxy CPU per connection |
        |---|---|---|---|---|
        \(sourceRows)
        Medians of 3 rounds. Both kemu rows are the same node proxy: the ClusterIP dial is bound to the client pod's address (IP_TRANSPARENT, replies handed back by the node's socket-match rule); the NodePort dial is from the node's address. The difference is what keeping the client's address costs.
        \(errors.isEmpty ? "No socket errors." : "Socket errors: " + errors.joined(separator: "; "))

        ## UDP through the node proxy (iperf3 -u, unlimited rate, 512-byte datagrams, 3 s)

        | path | datagrams/s sent | datagrams/s received (× direct) | loss | loss at 40 Mb/s |
        |---|---|---|---|---|
        \(udpRows)
        Medians of 3 rounds; sender, proxy and receiver share the machine's 2 cores, so at an unlimited rate loss is where the slowest of them drops; the last column is the loss at a paced 40 Mb/s (~9,800 datagrams/s).

        ## NetworkPolicy

        | what | no policy | 100 NetworkPolicies selecting the server (the client's allowed by the last) |
        |---|---|---|
        | pod → pod new connections/s (wrk, `Connection: close`, 32 conns, median of 3) | \(String(format: "%.0f", policy.direct.0)) | \(String(format: "%.0f", policy.direct.1)) (\(ratio(policy.direct.1, policy.direct.0))) |
        | pod → ClusterIP new connections/s | \(String(format: "%.0f", policy.service.0)) | \(String(format: "%.0f", policy.service.1)) (\(ratio(policy.service.1, policy.service.0))) |

        | what | measured | target |
        |---|---|---|
        | a NetworkPolicy change → applied on every node, 10 nodes, 40 changes (`kemu_policy_programming_seconds`, from a node receiving the change to its table replaced) | p50 \(String(format: "%.1f", programming.p50)) ms, p99 \(String(format: "%.1f", programming.p99)) ms (the worst node's), \(programming.samples) samples | p99 < 100 ms |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/fidelity.md", table)
    }

    static func nodePortService(_ name: String, _ ports: [(String, Int, Int, Int)]) -> JSON {
        var s: JSON = ["apiVersion": "v1", "kind": "Service",
                       "spec": ["type": "NodePort", "selector": ["app": .string(name)],
                                "ports": .array(ports.map { proto, port, target, nodePort in
                                    ["name": .string("\(proto.lowercased())-\(port)"), "protocol": .string(proto), "port": .int(Int64(port)),
                                     "targetPort": .int(Int64(target)), "nodePort": .int(Int64(nodePort))]
                                })]]
        s.name = name
        s.namespace = "default"
        return s
    }

    struct UDPResult {
        var sentPerSecond = 0.0, receivedPerSecond = 0.0, lossPercent = 0.0

        static func median(_ rs: [UDPResult]) -> UDPResult {
            func m(_ key: KeyPath<UDPResult, Double>) -> Double { rs.map { $0[keyPath: key] }.sorted()[rs.count / 2] }
            return UDPResult(sentPerSecond: m(\.sentPerSecond), receivedPerSecond: m(\.receivedPerSecond), lossPercent: m(\.lossPercent))
        }
    }

    static func udp(_ ip: String, _ port: String, from ns: NetworkNamespace, rate: String = "0") throws -> UDPResult {
        let text = try ProxyBench.output(["iperf3", "-c", ip, "-p", port, "-u", "-b", rate, "-l", "512", "-t", "3", "-J"], in: ns)
        guard let json = try? JSON.parse(text), let sum = json[path: "end.sum"] else { return UDPResult() }
        func number(_ key: String) -> Double {
            guard let v = sum[key] else { return 0 }
            if case let .double(d) = v { return d }
            return Double(v.int ?? 0)
        }
        let seconds = max(number("seconds"), 0.001)
        let packets = number("packets"), lost = number("lost_packets")
        return UDPResult(sentPerSecond: packets / seconds, receivedPerSecond: (packets - lost) / seconds, lossPercent: number("lost_percent"))
    }

    /// New connections/s to the server, directly and through its ClusterIP, with none and with
    /// 100 policies.
    static func policyCost(_ client: APIClient, clientNS: NetworkNamespace, http: String, viaService: String) async throws
        -> (direct: (Double, Double), service: (Double, Double)) {
        func rate(_ url: String) throws -> Double {
            ProxyBench.wrk(try ProxyBench.output(["wrk", "-t1", "-c32", "-d3s", "-H", "Connection: close", url], in: clientNS)).rate
        }
        func median(_ url: String) throws -> Double { try (0..<3).map { _ in try rate(url) }.sorted()[1] }
        let none = (try median(http), try median(viaService))
        guard let resource = APIResources.find(group: "networking.k8s.io", version: "v1", resource: "networkpolicies") else { return (none, none) }
        for i in 0..<100 {
            let from = i == 99 ? "client" : "other-\(i)"
            var p: JSON = ["apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "spec": ["podSelector": ["matchLabels": ["app": "http"]],
                                    "ingress": [["from": [["podSelector": ["matchLabels": ["role": .string(from)]]]], "ports": [["port": 8080]]]]]]
            p.name = String(format: "p%03d", i)
            p.namespace = "default"
            _ = try await client.create(resource, p)
        }
        try await Task.sleep(for: .seconds(1))
        let many = (try median(http), try median(viaService))
        return ((none.0, many.0), (none.1, many.1))
    }

    /// 40 changes of one policy, 50 ms apart, in a 10-node cluster: each node's p50/p99 of
    /// `kemu_policy_programming_seconds`; the worst node's p99 and the median node's p50.
    static func policyProgramming(kemu: String) async throws -> (p50: Double, p99: Double, samples: Int) {
        let config = NSTemporaryDirectory() + "kemu-bench-policy.yaml"
        defer { try? FileSystem.removeFile(config) }
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 10\n")
        try ClusterBench.sh([kemu, "up", "-f", config])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "/run/kemu/\(cluster)/apiserver/kubeconfig"))
        guard let resource = APIResources.find(group: "networking.k8s.io", version: "v1", resource: "networkpolicies") else { return (0, 0, 0) }
        // A pod for the policy to select: a policy selecting none has no rules to change.
        _ = try await client.create(APIResources.pods, ProxyBench.pod("web", node: "node-1", labels: ["app": "web"], command: ["sleep", "86400"]))
        _ = try await ProxyBench.runningPodIPs(client, ["web"])
        var p: JSON = ["apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "spec": ["podSelector": ["matchLabels": ["app": "web"]], "ingress": [["ports": [["port": 80]]]]]]
        p.name = "moving"
        p.namespace = "default"
        p = try await client.create(resource, p)
        try await Task.sleep(for: .milliseconds(500))
        for i in 0..<40 {
            p["spec"] = ["podSelector": ["matchLabels": ["app": "web"]], "ingress": [["ports": [["port": .int(Int64(81 + i))]]]]]
            p = try await client.update(resource, p)
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(300))
        var p50s: [Double] = [], p99s: [Double] = [], samples = 0
        for node in 1...10 {
            let text = try ProxyBench.output(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:10249/metrics"], in: NetworkNamespace("kemu-\(cluster)-node-\(node)"))
            for line in text.split(separator: "\n") {
                let value = Double(line.split(separator: " ").last ?? "") ?? 0
                if line.hasPrefix("kemu_policy_programming_seconds{quantile=\"0.5\"}") { p50s.append(value * 1000) }
                if line.hasPrefix("kemu_policy_programming_seconds{quantile=\"0.99\"}") { p99s.append(value * 1000) }
                if line.hasPrefix("kemu_policy_programming_seconds_count") { samples += Int(value) }
            }
        }
        return (p50s.sorted().dropFirst(p50s.count / 2).first ?? 0, p99s.max() ?? 0, samples)
    }
}
