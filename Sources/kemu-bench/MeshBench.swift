import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuPKI
import KemuSystem

/// Issue 21's numbers, in one run: the same client pod (node-1) and server pods (node-2) through
/// the node proxies plain and meshed (the namespace's mesh label toggled between the two, so the
/// pods, Services and proxies are the same), and the TLS peer: two HAProxies, one on each node,
/// terminating and originating mutual TLS between the nodes as the mesh does.
enum MeshBench {
    static let cluster = "kmesh"

    static func run(root: String) async throws {
        let kemu = "\(root)/.build/release/kemu"
        let state = "/run/kemu/\(cluster)"
        _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster])
        defer { _ = try? ClusterBench.sh([kemu, "down", "--cluster", cluster]) }
        let dir = NSTemporaryDirectory() + "kemu-bench-mesh"
        try FileSystem.makeDirectories(dir, mode: 0o755)  // the http pod (another user) reads its config here
        defer { try? FileSystem.removeTree(dir) }
        try FileSystem.writeFile("\(dir)/cluster.yaml", "name: \(cluster)\nnodes: 2\n")
        try ClusterBench.sh([kemu, "up", "-f", "\(dir)/cluster.yaml"])
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: "\(state)/apiserver/kubeconfig"))
        try FileSystem.writeFile("\(dir)/backend.cfg", ProxyBench.httpBackend)
        let manifest: [(APIResource, JSON)] = [
            (APIResources.pods, ProxyBench.pod("http", node: "node-2", labels: ["app": "http"], command: ["haproxy", "-db", "-f", "\(dir)/backend.cfg"])),
            (APIResources.pods, ProxyBench.pod("iperf", node: "node-2", labels: ["app": "iperf"], command: ["iperf3", "-s", "-p", "5201"])),
            (APIResources.pods, ProxyBench.pod("client", node: "node-1", labels: [:], command: ["sleep", "86400"])),
            (APIResources.services, ProxyBench.service("http", port: 80, target: 8080)),
            (APIResources.services, ProxyBench.service("iperf", port: 5201, target: 5201)),
        ]
        for (resource, object) in manifest { _ = try await client.create(resource, object) }
        let ips = try await ProxyBench.runningPodIPs(client, ["http", "iperf", "client"])
        guard let httpIP = ips["http"], let iperfIP = ips["iperf"] else { throw KemuError(.timeout, "bench pods not running: \(ips)") }
        let httpVIP = try await client.get(APIResources.services, namespace: "default", name: "http")[path: "spec.clusterIP"]?.string ?? ""
        let iperfVIP = try await client.get(APIResources.services, namespace: "default", name: "iperf")[path: "spec.clusterIP"]?.string ?? ""
        let clientNS = try await ProxyBench.podNamespace(client, "client", cluster: cluster)
        try ProxyBench.reuseClientPorts(clientNS)
        let proxies = try ["node-1", "node-2"].map { pid_t(try FileSystem.readFile("\(state)/proxy-\($0).pid").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 }

        // The TLS peer: HAProxy on node-1 originates mutual TLS to HAProxy on node-2, which
        // terminates it and dials the pod; certificates from a CA of the bench's own.
        let ca = try ClusterCA.generate(name: "bench-mesh-ca")
        let server = try ca.issueServing(commonName: "node-2", dnsNames: ["node-2"], addresses: [[172, 31, 0, 12]])
        let peer = try ca.issueClient(user: "node-1", groups: [])
        try FileSystem.writeFile("\(dir)/ca.pem", ca.certificatePEM)
        for (file, pair) in [("server.pem", server), ("client.pem", peer)] {
            let certificate = pair.certificatePEM.hasSuffix("\n") ? pair.certificatePEM : pair.certificatePEM + "\n"
            try FileSystem.writeFile("\(dir)/\(file)", certificate + pair.privateKeyPEM, mode: 0o600)
        }
        let gateway = "10.244.1.1", node2 = "172.31.0.12"
        try FileSystem.writeFile("\(dir)/origin.cfg", ProxyBench.tcpPeer("""
            listen http
              bind \(gateway):18080
              server s \(node2):18443 ssl verify required ca-file \(dir)/ca.pem crt \(dir)/client.pem
            listen iperf
              bind \(gateway):15201
              server s \(node2):18444 ssl verify required ca-file \(dir)/ca.pem crt \(dir)/client.pem
            """))
        try FileSystem.writeFile("\(dir)/terminus.cfg", ProxyBench.tcpPeer("""
            listen http
              bind \(node2):18443 ssl crt \(dir)/server.pem ca-file \(dir)/ca.pem verify required
              server s \(httpIP):8080
            listen iperf
              bind \(node2):18444 ssl crt \(dir)/server.pem ca-file \(dir)/ca.pem verify required
              server s \(iperfIP):5201
            """))
        var options = Spawn.Options(namespace: NetworkNamespace("kemu-\(cluster)-node-1"))
        options.newSession = true
        let origin = try Spawn.spawn(["haproxy", "-db", "-f", "\(dir)/origin.cfg"], options)
        options.namespace = NetworkNamespace("kemu-\(cluster)-node-2")
        let terminus = try Spawn.spawn(["haproxy", "-db", "-f", "\(dir)/terminus.cfg"], options)
        defer { for pid in [origin, terminus] { kill(pid, SIGTERM); _ = try? Spawn.wait(pid) } }

        let direct = ProxyBench.Path(name: "direct (pod → pod)", http: "http://\(httpIP):8080/", iperf: (iperfIP, "5201"), pid: nil)
        let plain = ProxyBench.Path(name: "kemu, plain (ClusterIP)", http: "http://\(httpVIP):80/", iperf: (iperfVIP, "5201"),
                                    pid: proxies[0], others: [proxies[1]])
        var meshed = plain
        meshed.name = "**kemu, meshed** (ClusterIP; mutual TLS + HTTP/2 CONNECT between the node proxies)"
        let tls = ProxyBench.Path(name: "HAProxy 2.6 pair, mutual TLS between the nodes (mode tcp)", http: "http://\(gateway):18080/",
                                  iperf: (gateway, "15201"), pid: origin, others: [terminus])
        let paths = [direct, plain, meshed, tls]
        var rounds: [[ProxyBench.Result]] = []
        for _ in 0..<3 {
            var round: [ProxyBench.Result] = []
            for (i, path) in paths.enumerated() {
                // Off for the direct path too: a meshed pod's connection to another node's pod
                // by its address is captured into the mesh.
                if i == 0 { try await setMesh(client, false) }
                if i == 2 { try await setMesh(client, true) }
                round.append(try ProxyBench.measure(path, from: clientNS))
            }
            rounds.append(round)
        }
        let results = paths.indices.map { i in ProxyBench.median(rounds.map { $0[i] }) }
        let table = render(paths, results)
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/mesh.md", table)
    }

    /// Puts the default namespace in the mesh or takes it out, then gives the proxies a moment
    /// (the identities are asked for as the label arrives).
    static func setMesh(_ client: APIClient, _ on: Bool) async throws {
        let labels: JSON = on ? [Mesh.namespaceLabel: "enabled"] : [Mesh.namespaceLabel: .null]
        _ = try await client.patch(APIResources.namespaces, name: "default", ["metadata": ["labels": labels]])
        try await Task.sleep(for: .seconds(2))
    }

    static func render(_ paths: [ProxyBench.Path], _ results: [ProxyBench.Result]) -> String {
        func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2f×", a / b) : "–" }
        let plain = results[1]
        var rows = ""
        for (path, r) in zip(paths, results) {
            let measured = !path.pids.isEmpty
            rows += "| \(path.name) | \(String(format: "%.2f", r.gbps)) Gb/s (\(ratio(r.gbps, plain.gbps))) | \(String(format: "%.0f", r.closeRate)) (\(ratio(r.closeRate, plain.closeRate))) | \(String(format: "%.0f", r.keepAlive)) (\(ratio(r.keepAlive, plain.keepAlive))) | \(String(format: "%.0f / %.0f", r.p50, r.p99)) µs | \(measured ? String(format: "%.1f µs", r.cpuPerConnection) : "–") | \(measured ? "\(r.rssKB / 1024) MiB" : "–") |\n"
        }
        let errors = zip(paths, results).filter { !$0.1.errors.isEmpty }.map { "\($0.0.name): \($0.1.errors)" }
        let (meshed, peer) = (results[2], results[3])
        return """
        ## The mesh: meshed against plain through the node proxies, and a TLS peer (client pod on node-1 → server pod on node-2)

        | path | iperf3, 1 stream (× plain kemu) | new connections/s, `Connection: close`, wrk 32 conns | keep-alive requests/s, wrk 32 conns | latency p50 / p99, 1 conn | CPU per new connection, both nodes' proxies | memory, both proxies |
        |---|---|---|---|---|---|---|
        \(rows)
        Medians of 3 rounds, the paths interleaved within each. The plain and meshed rows are the same pods, Service and proxies: the namespace's `kemu.dev/mesh` label is taken off and put back between them. Meshed connections share one tunnel per (source identity, destination node).
        \(errors.isEmpty ? "No socket errors." : "Socket errors: " + errors.joined(separator: "; "))

        | target | measured |
        |---|---|
        | meshed keep-alive ≥ 0.7× plain kemu | \(ratio(meshed.keepAlive, plain.keepAlive)) |
        | meshed new connections (tunnel reused) ≥ 0.5× plain | \(ratio(meshed.closeRate, plain.closeRate)) |
        | meshed ≥ the TLS peer: throughput, new connections/s, keep-alive | \(ratio(meshed.gbps, peer.gbps)), \(ratio(meshed.closeRate, peer.closeRate)), \(ratio(meshed.keepAlive, peer.keepAlive)) |

        """
    }
}
