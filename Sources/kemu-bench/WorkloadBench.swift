import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem
import Synchronization

/// The numbers of issue 5: a Deployment of 20 `kemu/echo` replicas rolled to a new template
/// (time to complete, fewest Ready pods seen), and a node dying (its agent killed) until its
/// pods run Ready elsewhere.
enum WorkloadBench {
    static let cluster = "wbench"
    static let replicas = 20

    /// Ready pods of the Deployment (not terminating), by name and node, as a pod watch sees them.
    final class ReadyPods: Sendable {
        let state = Mutex<(ready: [String: String], fewest: Int)>(([:], Int.max))
        func apply(_ pod: JSON, deleted: Bool) {
            let ready = !deleted && pod.deletionTimestamp == nil && (pod[path: "status.conditions"]?.array ?? []).contains {
                $0["type"]?.string == "Ready" && $0["status"]?.string == "True"
            }
            state.withLock { s in
                s.ready[pod.name] = ready ? (pod[path: "spec.nodeName"]?.string ?? "") : nil
                s.fewest = min(s.fewest, s.ready.count)
            }
        }
        func resetFewest() { state.withLock { $0.fewest = $0.ready.count } }
        var snapshot: (ready: [String: String], fewest: Int) { state.withLock { $0 } }
    }

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let config = NSTemporaryDirectory() + "kemu-bench-workload.yaml"
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 3\n")
        defer { try? FileSystem.removeFile(config) }
        try ClusterBench.sh([kemu, "up", "-f", config])
        let state = "/run/kemu/\(cluster)"
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        let pods = APIResources.pods
        let deployments = APIResources.deployments

        let seen = ReadyPods()
        let listed = try await client.list(pods, namespace: "default", labels: "app=bench")
        let watcher = Task {
            for try await event in client.watch(pods, namespace: "default", labels: "app=bench", from: listed.resourceVersion) {
                seen.apply(event.object, deleted: event.type == .deleted)
            }
        }
        defer { watcher.cancel() }
        func waitFor(_ seconds: Double, _ what: String, _ done: () async throws -> Bool) async throws -> Double {
            let start = APIBench.now()
            while !(try await done()) {
                if Double(APIBench.now() - start) / 1e9 > seconds { throw KemuError(.timeout, "\(what) after \(Int(seconds)) s") }
                try await Task.sleep(for: .milliseconds(20))
            }
            return APIBench.ms(APIBench.now() - start)
        }
        func rolledOut() async throws -> Bool {
            let d = try await client.get(deployments, namespace: "default", name: "bench")
            let s = d["status"] ?? [:]
            return (s["observedGeneration"]?.int ?? 0) >= d.generation && s["updatedReplicas"]?.int == Int64(replicas)
                && s["replicas"]?.int == Int64(replicas) && s["availableReplicas"]?.int == Int64(replicas)
        }

        var d: JSON = ["apiVersion": "apps/v1", "kind": "Deployment"]
        d.name = "bench"
        d.namespace = "default"
        d["spec"] = [
            "replicas": .int(Int64(replicas)), "selector": ["matchLabels": ["app": "bench"]],
            "strategy": ["type": "RollingUpdate", "rollingUpdate": ["maxSurge": "25%", "maxUnavailable": "25%"]],
            "template": ["metadata": ["labels": ["app": "bench"]],
                         "spec": ["containers": [["name": "echo", "image": "kemu/echo", "ports": [["name": "http", "containerPort": 8080]],
                                                  "readinessProbe": ["httpGet": ["path": "/readyz", "port": "http"], "periodSeconds": 1]]]]],
        ]
        try await client.create(deployments, d)
        let create = try await waitFor(120, "20 replicas Ready") { try await rolledOut() }

        // The rollout: a new image tag (a new template, a new ReplicaSet).
        seen.resetFewest()
        _ = try await client.patch(deployments, namespace: "default", name: "bench",
                                   ["spec": ["template": ["spec": ["containers": [["name": "echo", "image": "kemu/echo:v2"]]]]]])
        let rollout = try await waitFor(180, "the rollout") { try await rolledOut() }
        let fewest = seen.snapshot.fewest

        // node-3 dies (the lab's crash: its agent, proxy and pods killed — a killed agent alone is
        // started again by the cluster's supervisor, and its pods never leave); time until every
        // replica is Ready on the others.
        let victim = "node-3"
        let onVictim = seen.snapshot.ready.values.filter { $0 == victim }.count
        try ClusterBench.sh([kemu, "stop", "node", victim, "--cluster", cluster])
        let failover = try await waitFor(120, "replacement pods") {
            let ready = seen.snapshot.ready
            return ready.count == replicas && !ready.values.contains(victim)
        }

        let table = """
        ## Workloads (Deployment rollout, node failure; 3 nodes)

        | what | measured | notes |
        |---|---|---|
        | Deployment of \(replicas) `kemu/echo` replicas created → all available | \(String(format: "%.0f ms", create)) | readiness probe every 1 s |
        | rolling update to a new template (maxSurge 25 %, maxUnavailable 25 %) → complete | \(String(format: "%.0f ms", rollout)) | |
        | fewest Ready pods seen during that rollout | \(fewest) of \(replicas) | floor: replicas − maxUnavailable = \(replicas - replicas / 4) |
        | node crashed (`kemu stop node`, \(onVictim) replicas on it) → every replica Ready on the other nodes | \(String(format: "%.0f ms", failover)) | NotReady after 5 s silence, pods evicted 5 s later |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/workloads.md", table)
    }
}
