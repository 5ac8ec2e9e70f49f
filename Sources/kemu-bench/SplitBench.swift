import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// Issue 21's traffic-split figure: how soon after a route's weights change do new connections
/// follow, on every node. A client pod on each node opens connection after connection to the
/// Service (noting which version answered); the bench flips an HTTPRoute between v1 100 / v2 0
/// and the reverse; a flip's latency on a node is from just before its PATCH to the start of the
/// first connection there that the new version answered.
enum SplitBench {
    static let cluster = "ksplit"
    static let flips = 40
    static let flipInterval = 0.4

    /// Connects again and again for `seconds`; prints "start-time version" whenever the version
    /// that answers changes.
    static let watcher = """
    import socket, sys, time
    ip, seconds = sys.argv[1], float(sys.argv[2])
    end, last = time.time() + seconds, None
    while time.time() < end:
        started = time.time()
        try:
            s = socket.create_connection((ip, 80), 1)
            s.sendall(b'GET /?format=text HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')
            data = b''
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            s.close()
            version = 'v2' if b'pod=web-v2' in data else 'v1' if b'pod=web-v1' in data else 'other'
        except Exception:
            version = 'error'
        if version != last:
            print(f'{started:.6f} {version}', flush=True)
            last = version
    """

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let dir = NSTemporaryDirectory() + "kemu-bench-split"
        try FileSystem.makeDirectories(dir, mode: 0o755)
        defer { try? FileSystem.removeTree(dir) }
        try FileSystem.writeFile("\(dir)/cluster.yaml", "name: \(cluster)\nnodes: 2\n")
        try ClusterBench.sh([kemu, "up", "-f", "\(dir)/cluster.yaml"])
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "/run/kemu/\(cluster)/apiserver/kubeconfig"))
        var objects: [(APIResource, JSON)] = [
            (APIResources.pods, echo("web-v1", node: "node-1", version: "v1")),
            (APIResources.pods, echo("web-v2", node: "node-2", version: "v2")),
            (APIResources.pods, ProxyBench.pod("client-1", node: "node-1", labels: [:], command: ["sleep", "86400"])),
            (APIResources.pods, ProxyBench.pod("client-2", node: "node-2", labels: [:], command: ["sleep", "86400"])),
            (APIResources.services, service("web", selector: ["app": "web"])),
            (APIResources.services, service("web-v1", selector: ["app": "web", "version": "v1"])),
            (APIResources.services, service("web-v2", selector: ["app": "web", "version": "v2"])),
        ]
        guard let routes = APIResources.find(group: TrafficRoute.group, version: "v1", resource: "httproutes") else { return }
        objects.append((routes, route(v1: 100, v2: 0)))
        for (resource, object) in objects { _ = try await client.create(resource, object) }
        _ = try await ProxyBench.runningPodIPs(client, ["web-v1", "web-v2", "client-1", "client-2"])
        try await Task.sleep(for: .seconds(2))  // readiness, endpoints, the first route on both proxies
        let vip = try await client.get(APIResources.services, namespace: "default", name: "web")[path: "spec.clusterIP"]?.string ?? ""
        var namespaces: [NetworkNamespace] = []
        for name in ["client-1", "client-2"] { namespaces.append(try await ProxyBench.podNamespace(client, name, cluster: cluster)) }

        let seconds = 2 + Double(flips) * flipInterval
        // The watchers write to files (a blocking read here would hold one of the two threads
        // the flips need).
        var watchers: [(pid: pid_t, file: String)] = []
        for (i, namespace) in namespaces.enumerated() {
            let file = "\(dir)/watcher-\(i + 1).txt"
            let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw KemuError(.system, "\(file): \(String(cString: strerror(errno)))") }
            var options = Spawn.Options(namespace: namespace)
            options.stdout = fd
            let pid = try Spawn.spawn(["python3", "-c", watcher, vip, String(seconds)], options)
            close(fd)
            watchers.append((pid, file))
        }
        try await Task.sleep(for: .seconds(1))
        var flipped: [(time: Double, to: String)] = []
        for k in 0..<flips {
            let to = k % 2 == 0 ? "v2" : "v1"
            let time = Date().timeIntervalSince1970
            _ = try await client.patch(routes, namespace: "default", name: "canary", ["spec": route(v1: to == "v1" ? 100 : 0, v2: to == "v2" ? 100 : 0)["spec"] ?? [:]])
            flipped.append((time, to))
            try await Task.sleep(for: .seconds(flipInterval))
        }
        var perNode: [[Double]] = []
        for watcher in watchers {
            _ = try Spawn.wait(watcher.pid)
            let changes = try FileSystem.readFile(watcher.file).split(separator: "\n").compactMap { line -> (Double, String)? in
                let parts = line.split(separator: " ")
                return parts.count == 2 ? Double(parts[0]).map { ($0, String(parts[1])) } : nil
            }
            perNode.append(latencies(flipped, changes))
        }
        let table = render(perNode)
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/split.md", table)
    }

    /// Per flip, ms to the first connection of the new version (that started before the next
    /// flip); a flip never seen counts as the whole interval.
    static func latencies(_ flips: [(time: Double, to: String)], _ changes: [(Double, String)]) -> [Double] {
        flips.enumerated().map { k, flip in
            let until = k + 1 < flips.count ? flips[k + 1].time : .infinity
            let first = changes.first { $0.0 >= flip.time && $0.0 < until && $0.1 == flip.to }
            return ((first?.0 ?? flip.time + flipInterval) - flip.time) * 1000
        }
    }

    static func render(_ perNode: [[Double]]) -> String {
        func pct(_ values: [Double], _ p: Double) -> String {
            let sorted = values.sorted()
            return sorted.isEmpty ? "–" : String(format: "%.1f", APIBench.percentile(sorted, p))
        }
        var rows = ""
        for (i, values) in perNode.enumerated() {
            rows += "| node-\(i + 1) | \(values.count) | \(pct(values, 0.5)) | \(pct(values, 0.99)) | \(pct(values, 1)) |\n"
        }
        let all = perNode.flatMap { $0 }
        return """
        ## Traffic split: a route's weights changed → new connections follow (ms)

        | client on | flips | p50 | p99 | max |
        |---|---|---|---|---|
        \(rows)| every node | \(all.count) | \(pct(all, 0.5)) | \(pct(all, 0.99)) | \(pct(all, 1)) |

        An HTTPRoute on Service `web` flipped \(flips) times between web-v1 100 / web-v2 0 and the reverse, \(Int(flipInterval * 1000)) ms apart, each a PATCH from the bench's API client; measured from just before each PATCH to the start of the first connection on that node the new version answered (a client pod per node connecting back to back, ~1 ms apart). Target: p99 < 100 ms on every node.

        """
    }

    static func echo(_ name: String, node: String, version: String) -> JSON {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod",
                       "spec": ["nodeName": .string(node), "containers": [["name": "echo", "image": "kemu/echo"]]]]
        p.name = name
        p.namespace = "default"
        p.labels = ["app": "web", "version": version]
        return p
    }

    static func service(_ name: String, selector: [String: String]) -> JSON {
        var s = ProxyBench.service(name, port: 80, target: 8080)
        s["spec", default: [:]]["selector"] = JSON.stringMapJSON(selector)
        return s
    }

    static func route(v1: Int, v2: Int) -> JSON {
        var r: JSON = ["apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": [
            "parentRefs": [["group": "", "kind": "Service", "name": "web", "port": 80]],
            "rules": [["backendRefs": [["name": "web-v1", "port": 80, "weight": .int(Int64(v1))],
                                       ["name": "web-v2", "port": 80, "weight": .int(Int64(v2))]]]],
        ]]
        r.name = "canary"
        r.namespace = "default"
        return r
    }
}
