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
        let tableFullsBefore = neighbourTableFulls()

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
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        let cpuBefore = CPUShare.read(state: state)
        start = APIBench.now()
        let startWall = Date().timeIntervalSince1970
        _ = try await client.patch(APIResources.deployments, namespace: "default", name: "scale", ["spec": ["replicas": .int(Int64(pods))]])
        var readySeconds = Double.nan
        while Double(APIBench.now() - start) / 1e9 < 600 {
            // The Deployment's own count (one small get; listing every pod each second was a load of its own).
            let ready = try await client.get(APIResources.deployments, namespace: "default", name: "scale")[path: "status.readyReplicas"]?.int ?? 0
            if ready >= pods { readySeconds = Double(APIBench.now() - start) / 1e9; break }
            try await Task.sleep(for: .seconds(1))
        }
        // Every proxy with every endpoint: each node's proxy keeps, at /endpoints, when it applied
        // each change of the Service's endpoints; the time it first had them all is read from
        // there (no polling delay in the number). Nodes are asked 8 at a time, a node found
        // complete not again; python parses (the metrics' 30,000 lines parsed here were a load).
        var proxiesSeconds = Double.nan
        var incomplete = Array(1...nodes)
        var completedAt: [Double] = []
        let script = "import json,sys; h=json.load(sys.stdin).get('default/scale',[]); t=[e['time'] for e in h if len(e['endpoints'])>=\(pods)]; print(t[0] if t else '')"
        while Double(APIBench.now() - start) / 1e9 < 660 {
            let found = await withTaskGroup(of: (Int, Double)?.self) { group -> [Int: Double] in
                var complete: [Int: Double] = [:]
                for (i, n) in incomplete.enumerated() {
                    if i >= 8, let done = await group.next(), let done { complete[done.0] = done.1 }
                    group.addTask {
                        let text = await ScaleBench.offPool {
                            (try? ProxyBench.output(["sh", "-c", "curl -sS --max-time 5 'http://127.0.0.1:10249/endpoints?service=default/scale' | python3 -c \"\(script)\""],
                                                    in: NetworkNamespace("kemu-\(cluster)-node-\(n)"))) ?? ""
                        }
                        return Double(text.trimmingCharacters(in: .whitespacesAndNewlines)).map { (n, $0) }
                    }
                }
                for await done in group { if let done { complete[done.0] = done.1 } }
                return complete
            }
            incomplete.removeAll { found[$0] != nil }
            completedAt += found.values
            if incomplete.isEmpty { proxiesSeconds = (completedAt.max() ?? 0) - startWall; break }
            try await Task.sleep(for: .seconds(1))
        }
        probe.cancel()
        _ = await probe.value
        let cpu = CPUShare.read(state: state).since(cpuBefore)
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

        // Nothing lost: every pod the ReplicaSet owns answers through the ClusterIP, from node-1.
        // Round robin gives each pod its turn; 3 × pods requests (one python loop in the node's
        // namespace) leave room for a pod the proxy skipped once.
        let loop = """
        socket, sys = __import__('socket'), __import__('sys')
        ip, n = sys.argv[1], int(sys.argv[2])
        seen, failed = set(), 0
        for _ in range(n):
            try:
                s = socket.create_connection((ip, 80), 3)
                s.sendall(b'GET /?format=text HTTP/1.0\\r\\n\\r\\n')
                data = b''
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                s.close()
                seen.add(data.split(b'\\r\\n\\r\\n', 1)[1].split()[0])
            except Exception:
                failed += 1
        print(len(seen), failed)
        """
        let owned = Set(try await client.list(APIResources.pods, namespace: "default", labels: "app=scale").items.map(\.name))
        let answer = (try? ProxyBench.output(["python3", "-c", loop, clusterIP, String(3 * pods)], in: NetworkNamespace("kemu-\(cluster)-node-1"))) ?? ""
        let numbers = answer.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let (answered, failedRequests) = numbers.count == 2 ? (numbers[0], numbers[1]) : (0, 3 * pods)
        let tableFulls = neighbourTableFulls() - tableFullsBefore

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
        | pods that answered through the ClusterIP (\(3 * pods) requests, \(failedRequests) failed) | \(answered) of \(owned.count) | all |
        | packets dropped for a full ARP table (the machine's, storm and check) | \(tableFulls) | 0 |
        | \(victim) killed (\(before.count) pods): all Ready elsewhere | \(f(movedSeconds)) | |
        | nodes whose pods were evicted after the kill | \(evictedNodes.sorted().joined(separator: ", ")) | \(victim) only |
        | `kemu down` | \(f(downSeconds)) | < 30 s |

        CPU during the storm (from the scale-up until every proxy had every endpoint), in CPU-seconds:

        \(cpu.table)

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/scale.md", table)
    }
}

extension ScaleBench {
    /// Blocking work (a curl in a namespace) on a thread of its own, not the cooperative pool's.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: body()) }
        }
    }
}

/// Where the machine's CPU went: kemu's daemons by kind (from their pid files), and the rest of
/// the machine (containers, the kernel's work for them, the benchmark itself).
struct CPUShare {
    var byKind: [String: Double] = [:]
    var machine = 0.0

    static let tick = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func read(state: String) -> CPUShare {
        var share = CPUShare()
        let files = (try? FileManager.default.contentsOfDirectory(atPath: state)) ?? []
        for file in files where file.hasSuffix(".pid") {
            let name = String(file.dropLast(4))
            let kind = name.hasPrefix("node-") ? "node agents (with DNS)" : name.hasPrefix("proxy-") ? "node proxies" : name == "server" ? "API server + controllers" : name
            guard let pid = pid_t(((try? FileSystem.readFile("\(state)/\(file)")) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)),
                  let stat = try? FileSystem.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            // Fields after the command: state is the 3rd field of the file, utime and stime the 14th and 15th.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            share.byKind[kind, default: 0] += (user + system) / tick
        }
        if let line = ((try? FileSystem.readFile("/proc/stat")) ?? "").split(separator: "\n").first {
            // cpu user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
            let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if values.count >= 8 { share.machine = (values[0] + values[1] + values[2] + values[5] + values[6] + values[7]) / tick }
        }
        return share
    }

    func since(_ earlier: CPUShare) -> CPUShare {
        var d = CPUShare(machine: machine - earlier.machine)
        for (kind, seconds) in byKind { d.byKind[kind] = seconds - (earlier.byKind[kind] ?? 0) }
        return d
    }

    var table: String {
        let daemons = byKind.values.reduce(0, +)
        var rows = byKind.sorted { $0.value > $1.value }.map { "| \($0.key) | \(String(format: "%.1f", $0.value)) |" }
        rows.append("| everything else (containers, their kernel work, the benchmark) | \(String(format: "%.1f", machine - daemons)) |")
        rows.append("| the machine, all busy CPU | \(String(format: "%.1f", machine)) |")
        return (["| process | CPU-seconds |", "|---|---|"] + rows).joined(separator: "\n")
    }
}
