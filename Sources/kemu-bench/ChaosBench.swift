import Foundation
import KemuAPI
import KemuSystem

/// The numbers of issue 7, from `kemu experiment run` on a 10-node cluster: how long after a pod
/// is killed its endpoint has left every node's proxy (20 kills), and what clients saw during a
/// pod kill series, a rolling update and a node partition.
enum ChaosBench {
    static let cluster = "cbench"
    static let nodes = 10

    static let app = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 10
      minReadySeconds: 1
      selector: {matchLabels: {app: web}}
      strategy: {rollingUpdate: {maxSurge: 3, maxUnavailable: 0}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - {name: echo, image: kemu/echo, ports: [{containerPort: 8080}], readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1},
               lifecycle: {preStop: {sleep: {seconds: 1}}}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: client}
    spec:
      selector: {matchLabels: {app: client}}
      template:
        metadata: {labels: {app: client}}
        spec:
          nodeSelector: {kubernetes.io/hostname: node-1}
          containers: [{name: pause, image: pause}]
    """

    static let load = "load: {service: web, from: app=client, clients: 4, rate: 200, mode: connect}"

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let directory = NSTemporaryDirectory() + "kemu-bench-chaos"
        try FileSystem.makeDirectories(directory)
        defer { try? FileSystem.removeTree(directory) }
        try FileSystem.writeFile("\(directory)/cluster.yaml", "name: \(cluster)\nnodes: \(nodes)\n")
        try FileSystem.writeFile("\(directory)/app.yaml", app)
        try ClusterBench.sh([kemu, "up", "-f", "\(directory)/cluster.yaml"])

        func experiment(_ name: String, _ body: String) throws -> JSON {
            let file = "\(directory)/\(name).yaml"
            try FileSystem.writeFile(file, "name: \(name)\napply: app.yaml\n\(body)\n")
            try ClusterBench.sh([kemu, "experiment", "run", "--cluster", cluster, "--output", "\(directory)/\(name)", file])
            return try JSON.parse(Array(try FileSystem.readFile("\(directory)/\(name)/report.json").utf8))
        }
        let kills = (1...20).map { "  - {at: \($0)s, kill-pod: {service: web}}" }.joined(separator: "\n")
        let killReport = try experiment("pod-kill", "duration: 22s\n\(load)\nactions:\n\(kills)")
        let rollReport = try experiment("rolling-update", "duration: 14s\n\(load)\nactions:\n  - {at: 1s, rollout: web}")
        let partitionReport = try experiment("partition", "duration: 16s\n\(load)\nactions:\n  - {at: 1s, partition: node-2}")

        let actions = killReport["actions"]?.array ?? []
        let gone = actions.compactMap { $0["goneFromProxiesMs"].flatMap(Fault.number) }.sorted()
        let proxies = actions.compactMap { $0["proxiesMeasured"]?.int }.min() ?? 0
        func percentile(_ p: Double) -> String {
            gone.isEmpty ? "-" : String(format: "%.0f ms", gone[min(gone.count - 1, Int((Double(gone.count) * p).rounded(.up)) - 1)])
        }
        func clients(_ report: JSON) -> String {
            let load = report["loads"]?.array?.first ?? [:]
            let failures = (load["failures"]?.object ?? JSONObject()).map { "\($0.key) \($0.value.int ?? 0)" }.sorted().joined(separator: ", ")
            return "\(load["failed"]?.int ?? -1) of \(load["sent"]?.int ?? 0)" + (failures.isEmpty ? "" : " (\(failures))")
        }
        let partition = partitionReport["actions"]?.array?.first ?? [:]
        let table = """
        ## Failover (kemu experiment run; \(nodes) nodes, 10 `kemu/echo` replicas, a client pod opening 200 connections/s)

        | what | measured | target |
        |---|---|---|
        | pod killed (kill -9) → its endpoint gone from every node's proxy, p50 | \(percentile(0.5)) | |
        | … p99 (\(gone.count) kills of \(actions.count) measured, \(proxies) proxies each) | \(percentile(0.99)) | < 100 ms |
        | failed client connections during the 20 kills | \(clients(killReport)) | 0 |
        | failed client connections during a rolling update (maxSurge 3, maxUnavailable 0) | \(clients(rollReport)) | 0 |
        | failed client connections with node-2 partitioned (a request in flight at the cut may be lost) | \(clients(partitionReport)) | |
        | node-2 partitioned → its endpoints gone from every other proxy | \(String(format: "%.0f ms", partition["goneFromProxiesMs"].flatMap(Fault.number) ?? -1)) | node grace 5 s |
        | … slowest request after the cut, from when it went out | \(String(format: "%.0f ms", partition["slowestRawMs"].flatMap(Fault.number) ?? -1)) | one dial timeout: 250 ms |
        | … the same from when it was due (open loop: the backlog a stalled client built counts too) | \(String(format: "%.0f ms", partition["slowestMs"].flatMap(Fault.number) ?? -1)) | |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/failover.md", table)
    }
}
