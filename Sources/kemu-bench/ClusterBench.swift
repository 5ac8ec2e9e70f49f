import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// The numbers of issue 4: `kemu up` of 3 nodes until every node is Ready; pods created through
/// the API until Running and Ready, per second, on one node (processes of the `pause` image, and
/// of `kemu/echo`); the node agent's memory with those pods running.
enum ClusterBench {
    static let cluster = "kbench"

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        let state = "/run/kemu/\(cluster)"
        _ = try? sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? sh([kemu, "down", "--cluster", cluster]) }  // also after a failure midway
        let config = NSTemporaryDirectory() + "kemu-bench-cluster.yaml"
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 3\n")
        defer { try? FileSystem.removeFile(config) }

        // kemu up, three times (each followed by kemu down): the median.
        var ups: [Double] = []
        for round in 0..<3 {
            let start = APIBench.now()
            try sh([kemu, "up", "-f", config])
            ups.append(APIBench.ms(APIBench.now() - start))
            if round < 2 { try sh([kemu, "down", "--cluster", cluster]) }
        }
        ups.sort()
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        let pods = APIResources.pods

        /// Creates `count` pods on node-1 and returns pods/s until the last is Ready, followed by a
        /// watch (a polling list would cost the server more than the pods do).
        func burst(_ image: String, count: Int) async throws -> Double {
            let tag = image.replacingOccurrences(of: "/", with: "-")
            let label = "bench=\(tag)"
            let listed = try await client.list(pods, namespace: "default", labels: label)
            let start = APIBench.now()
            let watcher = Task {
                var ready = Set<String>()
                for try await event in client.watch(pods, namespace: "default", labels: label, from: listed.resourceVersion) {
                    let isReady = (event.object[path: "status.conditions"]?.array ?? []).contains {
                        $0["type"]?.string == "Ready" && $0["status"]?.string == "True"
                    }
                    if isReady { ready.insert(event.object.name) } else { ready.remove(event.object.name) }
                    if ready.count == count { return }
                }
                throw KemuError(.invalidState, "the watch ended before \(count) \(image) pods were Ready")
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<count {
                    group.addTask {
                        var pod: JSON = ["apiVersion": "v1", "kind": "Pod",
                                         "spec": ["nodeSelector": ["kubernetes.io/hostname": "node-1"],
                                                  "containers": [["name": "c", "image": .string(image)]]]]
                        pod.name = "\(tag)-\(i)"
                        pod.namespace = "default"
                        pod.labels = ["bench": tag]
                        try await client.create(pods, pod)
                    }
                    if i % 16 == 15 { try await group.next() }
                }
                try await group.waitForAll()
            }
            try await watcher.value
            return Double(count) / (Double(APIBench.now() - start) / 1e9)
        }
        let pauseRate = try await burst("pause", count: 80)
        let echoRate = try await burst("kemu/echo", count: 20)
        let agentPID = pid_t((try FileSystem.readFile("\(state)/node-node-1.pid")).trimmingCharacters(in: .whitespacesAndNewlines))!
        let idlePID = pid_t((try FileSystem.readFile("\(state)/node-node-3.pid")).trimmingCharacters(in: .whitespacesAndNewlines))!
        let serverPID = pid_t((try FileSystem.readFile("\(state)/server.pid")).trimmingCharacters(in: .whitespacesAndNewlines))!
        let proxyPID = pid_t((try FileSystem.readFile("\(state)/proxy-node-3.pid")).trimmingCharacters(in: .whitespacesAndNewlines))!
        let busy = processMemory(agentPID), idle = processMemory(idlePID), server = processMemory(serverPID), proxy = processMemory(proxyPID)
        try sh([kemu, "down", "--cluster", cluster])

        // What one more emulated node costs the machine: a 1-node and a 6-node cluster, idle,
        // MemTotal − MemAvailable after each settles; the difference over 5.
        func used(nodes: Int) throws -> Int {
            try FileSystem.writeFile(config, "name: \(cluster)\nnodes: \(nodes)\n")
            try sh([kemu, "up", "-f", config])
            usleep(1_500_000)
            let kB = memory().used
            try sh([kemu, "down", "--cluster", cluster])
            usleep(500_000)
            return kB
        }
        let perNode = (try used(nodes: 6) - used(nodes: 1)) / 5

        let table = """
        ## Cluster (kemu up, node agents, pods)

        | what | measured | target / others |
        |---|---|---|
        | `kemu up`, 3 nodes, until every node is Ready (median of 3) | \(String(format: "%.0f ms", ups[1])) | < 2 s (k3d 19.9 s, kind 33 s, minikube 50.8 s) |
        | pods created → Running + Ready on one node, `pause` image (80, 16 creates in flight) | \(String(format: "%.0f", pauseRate)) pods/s | ≥ 100/s |
        | the same with `kemu/echo` (20; each is a Swift HTTP server starting) | \(String(format: "%.0f", echoRate)) pods/s | |
        | one more emulated node (node agent, its proxy, namespace, links), machine memory used | \(perNode / 1024) MiB | ≤ 20 MB (k3s agent 275 MB, kubemark 220 MB) |
        | node agent (with DNS), idle: RSS / PSS / private | \(idle.rss / 1024) / \(idle.pss / 1024) / \(idle.uss / 1024) MiB | |
        | node agent running 100 pods: RSS / PSS / private | \(busy.rss / 1024) / \(busy.pss / 1024) / \(busy.uss / 1024) MiB | |
        | node proxy (its own process), idle: RSS / PSS / private | \(proxy.rss / 1024) / \(proxy.pss / 1024) / \(proxy.uss / 1024) MiB | |
        | kemu server (cluster): RSS / PSS / private | \(server.rss / 1024) / \(server.pss / 1024) / \(server.uss / 1024) MiB | |

        RSS counts every page a process maps, including the kemu binary and Foundation, which all
        kemu processes (server, agents, echo pods) share; PSS divides those among the sharers;
        private is the process's own. The per-node line is what the machine pays for one more.

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/cluster.md", table)
    }

    /// kB resident (VmRSS), proportional (Pss) and private (Private_Clean + Private_Dirty).
    static func processMemory(_ pid: pid_t) -> (rss: Int, pss: Int, uss: Int) {
        func field(_ file: String, _ name: String) -> Int {
            ((try? FileSystem.readFile(file)) ?? "").split(separator: "\n").first { $0.hasPrefix(name) }?
                .split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
        }
        let rollup = "/proc/\(pid)/smaps_rollup"
        return (field("/proc/\(pid)/status", "VmRSS:"), field(rollup, "Pss:"),
                field(rollup, "Private_Clean:") + field(rollup, "Private_Dirty:"))
    }

    /// Runs a kemu command to its end, its output dropped (errors still show). Spawn, not
    /// Foundation's Process: its waitUntilExit hung here once the command had started daemons.
    static func sh(_ argv: [String]) throws {
        let devNull = try FileDescriptor(opening: "/dev/null", flags: O_WRONLY)
        var options = Spawn.Options()
        options.stdout = devNull.raw
        let status = try Spawn.wait(try Spawn.spawn(argv, options))
        guard status == .exited(0) else { throw KemuError(.system, "\(argv.joined(separator: " ")): \(status)") }
    }
}
