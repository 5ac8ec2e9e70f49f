import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// The numbers of issue 6, in one run and the same namespaces: a client pod on node-1 talks to a
/// server pod on node-2 directly, through kemu's proxy (the ClusterIP, served by node-1's
/// proxy), through HAProxy (one thread, TCP mode, in node-1's namespace, the same endpoint), and
/// through a SwiftNIO channel-pipeline relay (kemu's other candidate byte path).
enum ProxyBench {
    static let cluster = "kbench"

    struct Path {
        var name: String
        var http: String
        var iperf: (String, String)
        var pid: pid_t?
        /// Other processes the path's CPU and memory count (the destination node's proxy).
        var others: [pid_t] = []
        var pids: [pid_t] { (pid.map { [$0] } ?? []) + others }
    }

    struct Result {
        var gbps = 0.0, closeRate = 0.0, keepAlive = 0.0, p50 = 0.0, p99 = 0.0, cpuPerConnection = 0.0, rssKB = 0, errors = ""
    }

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        let state = "/run/kemu/\(cluster)"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let config = NSTemporaryDirectory() + "kemu-bench-proxy.yaml"
        let backendConfig = NSTemporaryDirectory() + "kemu-bench-http-backend.cfg"
        let peerConfig = NSTemporaryDirectory() + "kemu-bench-haproxy.cfg"
        defer { for f in [config, backendConfig, peerConfig] { try? FileSystem.removeFile(f) } }
        try FileSystem.writeFile(config, "name: \(cluster)\nnodes: 2\n")
        try ClusterBench.sh([kemu, "up", "-f", config])
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))

        try FileSystem.writeFile(backendConfig, httpBackend)
        let manifest: [JSON] = [
            pod("http", node: "node-2", labels: ["app": "http"], command: ["haproxy", "-db", "-f", backendConfig]),
            pod("iperf", node: "node-2", labels: ["app": "iperf"], command: ["iperf3", "-s", "-p", "5201"]),
            pod("client", node: "node-1", labels: [:], command: ["sleep", "86400"]),
            service("http", port: 80, target: 8080),
            service("iperf", port: 5201, target: 5201),
        ]
        for object in manifest {
            let resource = APIResources.all.first { $0.kind == object.kind && $0.group == "" }!
            try await client.create(resource, object)
        }
        let services = APIResources.services
        let ips = try await runningPodIPs(client, ["http", "iperf", "client"])
        guard let httpIP = ips["http"], let iperfIP = ips["iperf"] else { throw KemuError(.timeout, "bench pods not running: \(ips)") }
        let httpVIP = try await client.get(services, namespace: "default", name: "http")[path: "spec.clusterIP"]?.string ?? ""
        let iperfVIP = try await client.get(services, namespace: "default", name: "iperf")[path: "spec.clusterIP"]?.string ?? ""
        try await Task.sleep(for: .seconds(1))  // endpoints published, every proxy updated

        let node1 = NetworkNamespace("kemu-\(cluster)-node-1")
        let clientNS = try await podNamespace(client, "client")
        try reuseClientPorts(clientNS)
        let gateway = "10.244.1.1"
        try FileSystem.writeFile(peerConfig, tcpPeer("""
            listen http
              bind \(gateway):18080
              server s1 \(httpIP):8080
            listen iperf
              bind \(gateway):15201
              server s1 \(iperfIP):5201

            """))
        // Each peer leads its own session, as kemu's proxy (a daemon) does: with the scheduler's
        // autogroups on, a proxy in the bench's session would share one group's CPU with wrk.
        var peer = Spawn.Options(namespace: node1)
        peer.newSession = true
        let haproxy = try Spawn.spawn(["haproxy", "-db", "-f", peerConfig], peer)
        let nio = try Spawn.spawn([kemu, "relay", "--listen", "\(gateway):28080", "--to", "\(httpIP):8080"], peer)
        let nioIperf = try Spawn.spawn([kemu, "relay", "--listen", "\(gateway):25201", "--to", "\(iperfIP):5201"], peer)
        defer {
            for pid in [haproxy, nio, nioIperf] { kill(pid, SIGTERM); _ = try? Spawn.wait(pid) }
        }
        try await Task.sleep(for: .milliseconds(500))
        let proxyPID = pid_t((try FileSystem.readFile("\(state)/proxy-node-1.pid")).trimmingCharacters(in: .whitespacesAndNewlines))

        let paths = [
            Path(name: "direct (pod → pod)", http: "http://\(httpIP):8080/", iperf: (iperfIP, "5201"), pid: nil),
            Path(name: "**kemu proxy** (ClusterIP)", http: "http://\(httpVIP):80/", iperf: (iperfVIP, "5201"), pid: proxyPID),
            Path(name: "HAProxy 2.6, 1 thread, mode tcp", http: "http://\(gateway):18080/", iperf: (gateway, "15201"), pid: haproxy),
            Path(name: "SwiftNIO pipeline relay", http: "http://\(gateway):28080/", iperf: (gateway, "25201"), pid: nio),
        ]
        // Three rounds, the paths interleaved within each (this machine's noise moves every path
        // alike within a round); each figure is the median of its three.
        var rounds: [[Result]] = []
        for _ in 0..<3 {
            var round: [Result] = []
            for path in paths { round.append(try measure(path, from: clientNS)) }
            rounds.append(round)
        }
        let results = paths.indices.map { i in median(rounds.map { $0[i] }) }
        let direct = results[0], haproxyResult = results[2]
        func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2f×", a / b) : "–" }
        var rows = ""
        for (path, r) in zip(paths, results) {
            rows += "| \(path.name) | \(String(format: "%.1f", r.gbps)) Gb/s (\(ratio(r.gbps, direct.gbps))) | \(String(format: "%.0f", r.closeRate)) (\(ratio(r.closeRate, direct.closeRate))) | \(String(format: "%.0f", r.keepAlive)) (\(ratio(r.keepAlive, direct.keepAlive))) | \(String(format: "%.0f / %.0f", r.p50, r.p99)) µs | \(path.pid == nil ? "–" : String(format: "%.1f µs", r.cpuPerConnection)) | \(path.pid == nil ? "–" : "\(r.rssKB / 1024) MiB") |\n"
        }
        let kemuResult = results[1]
        for pid in [haproxy, nio, nioIperf] { kill(pid, SIGTERM) }
        try ClusterBench.sh([kemu, "down", "--cluster", cluster])
        let programming = try await programming(kemu: kemu)
        let scale = try await scale(kemu: kemu)
        let errors = zip(paths, results).filter { !$0.1.errors.isEmpty }.map { "\($0.0.name): \($0.1.errors)" }
        let table = """
        ## Node proxy byte path (client pod on node-1 → server pod on node-2)

        | path | iperf3, 1 stream (× direct) | new connections/s, `Connection: close`, wrk 32 conns (× direct) | keep-alive requests/s, 32 conns (× direct) | latency p50 / p99, 1 conn | proxy CPU per connection | proxy RSS |
        |---|---|---|---|---|---|---|
        \(rows)
        Medians of 3 rounds. kemu against the targets: throughput \(ratio(kemuResult.gbps, direct.gbps)) of direct (target ≥ 0.8×); new connections \(ratio(kemuResult.closeRate, haproxyResult.closeRate)) of HAProxy's (target ≥ 1.2×); keep-alive \(ratio(kemuResult.keepAlive, haproxyResult.keepAlive)) of HAProxy's (target ≥ 1×).
        The server is HAProxy answering 200 by itself (1 thread); kemu's proxy RSS is the node's proxy process (`kemu proxy`, beside the agent). Every proxy runs in a session of its own (the scheduler's autogroups would otherwise give a peer sharing wrk's session half the CPU).
        \(errors.isEmpty ? "No socket errors." : "Socket errors: " + errors.joined(separator: "; "))

        ## Node proxy control plane

        | what | measured | target |
        |---|---|---|
        | EndpointSlice change → applied by every node's proxy, 10 nodes, 40 changes (`network_programming_duration_seconds`, \(programming.samples) samples) | p50 ≤ \(String(format: "%g", programming.p50)) ms, p99 ≤ \(String(format: "%g", programming.p99)) ms (bucket bounds), mean \(String(format: "%.1f", programming.mean)) ms | p99 < 100 ms |
        | first full sync of one node's proxy, \(scale.services) Services / \(scale.services * 5) endpoints, cold (addresses not yet on lo) | \(scale.sync) to apply; \(scale.sinceStart) from the proxy's start (lists included); \(String(format: "%.2f", scale.wall)) s from exec | < 1 s |
        | that proxy's RSS after the sync | \(scale.rssMB) MiB | < 100 MB |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/proxy.md", table)
    }

    static func measure(_ path: Path, from clientNS: NetworkNamespace) throws -> Result {
        var r = Result()
        let iperf = try output(["iperf3", "-c", path.iperf.0, "-p", path.iperf.1, "-t", "3", "-J"], in: clientNS)
        if let json = try? JSON.parse(iperf), let bps = json[path: "end.sum_received.bits_per_second"] {
            if case let .double(d) = bps { r.gbps = d / 1e9 } else if let i = bps.int { r.gbps = Double(i) / 1e9 }
        }
        let cpuBefore = path.pids.map(cpuSeconds).reduce(0, +)
        let close = wrk(try output(["wrk", "-t1", "-c32", "-d3s", "-H", "Connection: close", path.http], in: clientNS))
        let cpuAfter = path.pids.map(cpuSeconds).reduce(0, +)
        r.closeRate = close.rate
        if close.requests > 0, path.pid != nil { r.cpuPerConnection = (cpuAfter - cpuBefore) / Double(close.requests) * 1e6 }
        let keep = wrk(try output(["wrk", "-t1", "-c32", "-d3s", path.http], in: clientNS))
        r.keepAlive = keep.rate
        let latency = wrk(try output(["wrk", "-t1", "-c1", "-d2s", "--latency", path.http], in: clientNS))
        (r.p50, r.p99) = (latency.p50, latency.p99)
        r.errors = [close.errors, keep.errors, latency.errors].filter { !$0.isEmpty }.joined(separator: "; ")
        r.rssKB = path.pids.map { ClusterBench.processMemory($0).rss }.reduce(0, +)
        return r
    }

    /// Each figure's median over the rounds; errors from every round.
    static func median(_ rs: [Result]) -> Result {
        func m(_ key: KeyPath<Result, Double>) -> Double { rs.map { $0[keyPath: key] }.sorted()[rs.count / 2] }
        var r = Result()
        (r.gbps, r.closeRate, r.keepAlive, r.p50, r.p99, r.cpuPerConnection) = (m(\.gbps), m(\.closeRate), m(\.keepAlive), m(\.p50), m(\.p99), m(\.cpuPerConnection))
        r.rssKB = rs.map(\.rssKB).max() ?? 0
        r.errors = rs.map(\.errors).filter { !$0.isEmpty }.joined(separator: "; ")
        return r
    }

    /// HAProxy in TCP mode, one thread: the peer the byte-path benches measure against.
    static func tcpPeer(_ sections: String) -> String {
        """
        global
          nbthread 1
          maxconn 4000
        defaults
          mode tcp
          timeout client 60s
          timeout connect 2s
          timeout server 60s
        \(sections)

        """
    }

    static func pod(_ name: String, node: String, labels: [String: String], command: [String]) -> JSON {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod",
                       "spec": ["nodeName": .string(node), "containers": [["name": "c", "image": "busybox", "command": .array(command.map(JSON.string))]]]]
        p.name = name
        p.namespace = "default"
        if !labels.isEmpty { p.labels = labels }
        return p
    }

    static func service(_ name: String, port: Int, target: Int) -> JSON {
        var s: JSON = ["apiVersion": "v1", "kind": "Service",
                       "spec": ["selector": ["app": .string(name)], "ports": [["port": .int(Int64(port)), "targetPort": .int(Int64(target))]]]]
        s.name = name
        s.namespace = "default"
        return s
    }

    /// The HTTP server of the byte-path benches: HAProxy answering 200 itself (one thread), fast
    /// enough that the path, not the server, is what the numbers measure.
    static let httpBackend = """
        global
          nbthread 1
          maxconn 4000
        defaults
          mode http
          timeout client 30s
          timeout connect 5s
          timeout server 30s
        frontend answer
          bind :8080
          http-request return status 200 content-type text/plain string "ok"

        """

    /// Waits (up to 10 s) until the pods run; their addresses by name — all of them, or throws.
    static func runningPodIPs(_ client: APIClient, _ names: [String]) async throws -> [String: String] {
        var ips: [String: String] = [:]
        for _ in 0..<200 where ips.count < names.count {
            for name in names {
                if let pod = try? await client.get(APIResources.pods, namespace: "default", name: name), pod[path: "status.phase"]?.string == "Running" {
                    ips[name] = pod[path: "status.podIP"]?.string
                }
            }
            if ips.count < names.count { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard ips.count == names.count else { throw KemuError(.timeout, "bench pods not running: \(ips)") }
        return ips
    }

    /// The client pod may reuse its ports in TIME_WAIT for new connections, as the node proxy
    /// does: `Connection: close` runs leave tens of thousands, and without reuse the direct path
    /// (the client's own ports) falls from ~9,000 to ~500 connections/s by the second run.
    static func reuseClientPorts(_ namespace: NetworkNamespace) throws {
        _ = try output(["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"], in: namespace)
    }

    /// The network namespace of a pod: kemu-CLUSTER-p-NAME-UID8.
    static func podNamespace(_ client: APIClient, _ name: String, cluster: String = cluster) async throws -> NetworkNamespace {
        let pod = try await client.get(APIResources.pods, namespace: "default", name: name)
        return NetworkNamespace("kemu-\(cluster)-p-\(name)-\(pod.uid.prefix(8))")
    }

    /// Runs a program inside a namespace and returns what it printed.
    static func output(_ argv: [String], in namespace: NetworkNamespace) throws -> String {
        var fds: [Int32] = [0, 0]
        _ = try syscall("pipe") { pipe(&fds) }
        var options = Spawn.Options(namespace: namespace)
        options.stdout = fds[1]
        options.stderr = fds[1]
        let pid: pid_t
        do { pid = try Spawn.spawn(argv, options) } catch { close(fds[0]); close(fds[1]); throw error }
        close(fds[1])
        let text = String(decoding: try FileDescriptor(adopting: fds[0], path: "pipe").readAll(), as: UTF8.self)
        _ = try Spawn.wait(pid)
        return text
    }

    /// wrk's requests/s, request count, latency percentiles (µs) and socket errors.
    static func wrk(_ text: String) -> (rate: Double, requests: Int, p50: Double, p99: Double, errors: String) {
        var rate = 0.0, requests = 0, p50 = 0.0, p99 = 0.0, errors = ""
        for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if line.hasPrefix("Requests/sec:"), parts.count > 1 { rate = Double(parts[1]) ?? 0 }
            if parts.count > 2, parts[1] == "requests", parts[2] == "in" { requests = Int(parts[0]) ?? 0 }
            if parts.count == 2, parts[0] == "50%" { p50 = microseconds(parts[1]) }
            if parts.count == 2, parts[0] == "99%" { p99 = microseconds(parts[1]) }
            if line.hasPrefix("Socket errors:") || line.hasPrefix("Non-2xx") { errors += line }
        }
        if rate == 0 { errors += text.suffix(300) }
        return (rate, requests, p50, p99, errors)
    }

    static func microseconds(_ text: String) -> Double {
        for (unit, scale) in [("us", 1.0), ("ms", 1000.0), ("s", 1_000_000.0)] where text.hasSuffix(unit) {
            return (Double(text.dropLast(unit.count)) ?? 0) * scale
        }
        return 0
    }

    /// User + system CPU seconds a process has used.
    static func cpuSeconds(_ pid: pid_t) -> Double {
        guard let stat = try? FileSystem.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
