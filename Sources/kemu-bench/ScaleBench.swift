import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem
import Synchronization

/// `make bench-scale` (issue 18): `kemu up` of many nodes, a Deployment of `kemu/echo` scaled from 0
/// to many replicas behind a Service, and what the machine and the control plane go through: time
/// until every pod is Ready, until every node's proxy has every endpoint, API `get` latency during
/// the storm, NotReady nodes and evictions during it, peak memory; then one node killed, and the
/// time until its pods are Ready elsewhere; then `kemu down`.
enum ScaleBench {
    static let cluster = "kscale"

    static func run(root: String, nodes: Int, pods: Int) async throws {
        // The release build (make bench-scale), or $KEMU (a debug build, for a quick look).
        let kemu = ProcessInfo.processInfo.environment["KEMU"] ?? "\(root)/.build/release/kemu"
        let state = "/run/kemu/\(cluster)"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        let config = NSTemporaryDirectory() + "kemu-bench-scale.yaml"
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: \(nodes)\n")
        defer { try? FileSystem.removeFile(config) }
        var downSeconds = 0.0
        defer { if downSeconds == 0 { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) } }

        var start = APIBench.now()
        try ClusterBench.sh([kemu, "up", "-f", config])
        let upSeconds = Double(APIBench.now() - start) / 1e9
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        let baseline = memory().used

        // Deployment at 0 behind a Service, then scaled to `pods`.
        var deployment: JSON = ["apiVersion": "apps/v1", "kind": "Deployment",
                                "spec": ["replicas": 0, "selector": ["matchLabels": ["app": "scale"]],
                                         "template": ["metadata": ["labels": ["app": "scale"]],
                                                      "spec": ["containers": [["name": "echo", "image": "kemu/echo",
                                                                               "ports": [["containerPort": 8080]]]]]]]]
        deployment.name = "scale"
        deployment.namespace = "default"
        try await client.create(APIResources.deployments, deployment)
        var service: JSON = ["apiVersion": "v1", "kind": "Service",
                             "spec": ["selector": ["app": "scale"], "ports": [["port": 80, "targetPort": 8080]]]]
        service.name = "scale"
        service.namespace = "default"
        let clusterIP = try await client.create(APIResources.services, service)[path: "spec.clusterIP"]?.string ?? ""

        // During the storm: GET latencies, NotReady nodes and evictions seen, peak machine memory.
        let latencies = Mutex<[Double]>([])
        let notReady = Mutex<Set<String>>([])
        let peak = Mutex(0)
        let probe = Task {
            while !Task.isCancelled {
                let t = APIBench.now()
                if (try? await client.get(APIResources.nodes, name: "node-1")) != nil {
                    latencies.withLock { $0.append(APIBench.ms(APIBench.now() - t)) }
                }
                if let list = try? await client.list(APIResources.nodes) {
                    for node in list.items where !(node[path: "status.conditions"]?.array ?? []).contains(where: {
                        $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }) {
                        _ = notReady.withLock { $0.insert(node.name) }
                    }
                }
                peak.withLock { $0 = max($0, memory().used) }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        start = APIBench.now()
        _ = try await client.patch(APIResources.deployments, namespace: "default", name: "scale", ["spec": ["replicas": .int(Int64(pods))]])
        var readySeconds = Double.nan
        while Double(APIBench.now() - start) / 1e9 < 600 {
            let list = try await client.list(APIResources.pods, namespace: "default", labels: "app=scale")
            let ready = list.items.filter { pod in
                (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
            }.count
            if ready >= pods { readySeconds = Double(APIBench.now() - start) / 1e9; break }
            try await Task.sleep(for: .seconds(1))
        }
        // Every proxy with every endpoint: each node's /metrics lists the Service's endpoints.
        var proxiesSeconds = Double.nan
        while Double(APIBench.now() - start) / 1e9 < 660 {
            var complete = 0
            for n in 1...nodes {
                let text = (try? ProxyBench.output(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:10249/metrics"],
                                        in: NetworkNamespace("kemu-\(cluster)-node-\(n)"))) ?? ""
                let endpoints = Set(text.split(separator: "\n").filter { $0.hasPrefix("kemu_proxy_endpoint_healthy{") && $0.contains("default/scale") }
                    .compactMap { line in line.split(separator: "endpoint=\"").dropFirst().first?.split(separator: "\"").first.map(String.init) })
                if endpoints.count >= pods { complete += 1 } else { break }
            }
            if complete == nodes { proxiesSeconds = Double(APIBench.now() - start) / 1e9; break }
            try await Task.sleep(for: .seconds(1))
        }
        probe.cancel()
        _ = await probe.value
        let stormEvictions = Set(try await client.list(APIResources.events, namespace: "default").items
            .filter { $0["reason"]?.string == "TaintManagerEviction" }.map(\.uid))
        let evictions = stormEvictions.count
        let rss = { (file: String) -> Int in
            guard let pid = pid_t(((try? FileSystem.readFile("\(state)/\(file).pid")) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) else { return 0 }
            return ((try? FileSystem.readFile("/proc/\(pid)/status")) ?? "").split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?
                .split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
        }
        let (serverPeak, agentPeak, proxyPeak) = (rss("server"), rss("node-node-1"), rss("proxy-node-1"))
        let sorted = latencies.withLock { $0 }.sorted()
        let p99 = sorted.isEmpty ? Double.nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]

        // Every pod answers through the Service, from the client host? From a node: the ClusterIP.
        var answered = 0
        for _ in 0..<min(pods, 200) {
            if let text = try? ProxyBench.output(["curl", "-sS", "--max-time", "3", "http://\(clusterIP)/?format=text"], in: NetworkNamespace("kemu-\(cluster)-node-1")),
               text.hasPrefix("pod=") { answered += 1 }
        }

        // One node killed: its pods Ready elsewhere, no other node evicted.
        let victim = "node-\(max(1, nodes / 2))"
        let before = try await client.list(APIResources.pods, namespace: "default", labels: "app=scale").items
            .filter { $0[path: "spec.nodeName"]?.string == victim }.map(\.name)
        start = APIBench.now()
        try ClusterBench.sh([kemu, "stop", "node", victim, "--cluster", cluster, "--mode", "crash"])
        var movedSeconds = Double.nan
        while Double(APIBench.now() - start) / 1e9 < 300 {
            let list = try await client.list(APIResources.pods, namespace: "default", labels: "app=scale").items
            let readyElsewhere = list.filter { pod in
                pod[path: "spec.nodeName"]?.string != victim
                    && (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
            }.count
            if readyElsewhere >= pods && !list.contains(where: { before.contains($0.name) }) {
                movedSeconds = Double(APIBench.now() - start) / 1e9
                break
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        // Evictions after the kill (events of the storm are not counted again): the victim's pods, or another node's.
        let evictedNodes = Set(try await client.list(APIResources.events, namespace: "default").items
            .filter { $0["reason"]?.string == "TaintManagerEviction" && !stormEvictions.contains($0.uid) }
            .map { event in before.contains(event[path: "involvedObject.name"]?.string ?? "") ? victim : "another node" })

        start = APIBench.now()
        try ClusterBench.sh([kemu, "down", "--cluster", cluster])
        downSeconds = Double(APIBench.now() - start) / 1e9

        let f = { (v: Double) in v.isNaN ? "not reached" : String(format: "%.1f s", v) }
        let table = """
        ## Scale: \(nodes) nodes, a Deployment of \(pods) `kemu/echo` pods (make bench-scale)

        | what | measured | target |
        |---|---|---|
        | `kemu up`, \(nodes) nodes, until every node is Ready | \(f(upSeconds)) | < 10 s |
        | Deployment 0 → \(pods): every pod Ready | \(f(readySeconds)) | < 60 s |
        | … every node's proxy has all \(pods) endpoints | \(f(proxiesSeconds)) | < 5 s after the last Ready |
        | API `get node` during the storm: p99 (\(sorted.count) requests) | \(String(format: "%.0f ms", p99)) | < 1 s |
        | nodes seen NotReady / pods evicted during the storm | \(notReady.withLock { $0.count }) / \(evictions) | 0 / 0 |
        | peak RSS: server / one agent / one proxy | \(serverPeak / 1024) / \(agentPeak / 1024) / \(proxyPeak / 1024) MiB | |
        | machine memory in use: before the Deployment / peak | \(baseline / 1024) / \(peak.withLock { $0 } / 1024) MiB | < 8 GiB |
        | requests through the ClusterIP answered by a pod | \(answered) of \(min(pods, 200)) | all |
        | \(victim) killed (\(before.count) pods): all Ready elsewhere | \(f(movedSeconds)) | |
        | nodes whose pods were evicted after the kill | \(evictedNodes.sorted().joined(separator: ", ")) | \(victim) only |
        | `kemu down` | \(f(downSeconds)) | < 30 s |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/scale.md", table)
    }
}
