import ArgumentParser
import Foundation
import KemuAPIServer
import KemuControllers
import KemuIP
import KemuStore
import KemuSystem

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the API server (store, Kubernetes API) alone, on loopback.",
        discussion: """
        Writes DATA-DIR/kubeconfig for kubectl:  kubectl --kubeconfig DATA-DIR/kubeconfig get ns
        TLS with client certificates is not built yet: for now the server needs --insecure and serves plain HTTP on 127.0.0.1 only.
        """)

    @Option(help: "Where the store keeps its data (created if missing).") var dataDir: String
    @Option(help: "Port on 127.0.0.1 (0 picks a free one).") var port = 6443
    @Flag(help: "Serve plain HTTP (loopback only).") var insecure = false
    @Option(help: "ClusterIP range (.1 is the kubernetes Service).") var serviceCIDR = "10.96.0.0/16"
    @Option(help: "NodePort range, LOW-HIGH.") var nodePortRange = "30000-32767"
    @Option(help: "LoadBalancer IP pool.") var loadBalancerPool = "172.31.1.0/24"

    func ranges() throws -> ServiceRanges {
        guard let cidr = IPv4Network(serviceCIDR), cidr.prefixLength <= 28 else {
            throw ValidationError("--service-cidr \"\(serviceCIDR)\" must be an IPv4 CIDR of at least 16 addresses, such as 10.96.0.0/16")
        }
        let parts = nodePortRange.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1], parts[1] <= 65535 else {
            throw ValidationError("--node-port-range \"\(nodePortRange)\" must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
        }
        guard let pool = IPv4Network(loadBalancerPool) else {
            throw ValidationError("--load-balancer-pool \"\(loadBalancerPool)\" must be an IPv4 CIDR such as 172.31.1.0/24")
        }
        guard !pool.overlaps(cidr) else { throw ValidationError("--load-balancer-pool \(pool) overlaps --service-cidr \(cidr)") }
        return ServiceRanges(serviceCIDR: cidr, nodePorts: parts[0]...parts[1], loadBalancerPool: pool)
    }

    func run() async throws {
        guard insecure else {
            throw ValidationError("TLS serving is not implemented yet: run with --insecure (plain HTTP on 127.0.0.1 only)")
        }
        let ranges = try ranges()
        let store: Store
        do {
            store = try Store(directory: dataDir)
        } catch {
            throw KemuError(.invalidState, "cannot open the store in \(dataDir)", cause: error)
        }
        let api = try APIServer(store: store, ranges: ranges)
        let dataDir = self.dataDir
        let endpointSlices = EndpointSliceController(store: store)
        let collector = GarbageCollector(store: store)
        try await api.run(host: "127.0.0.1", port: port,
                          background: [{ try await endpointSlices.run() }, { try await collector.run() }]) { bound in
            let server = "http://127.0.0.1:\(bound)"
            do {
                try api.publishEndpoints(address: "127.0.0.1", port: bound)
                try FileSystem.writeFile("\(dataDir)/kubeconfig", Kubeconfig.plain(server: server, cluster: "kemu"), mode: 0o600)
                FileHandle.standardOutput.write(Data("kemu API server on \(server) — kubectl --kubeconfig \(dataDir)/kubeconfig get namespaces\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("kemu: cannot write \(dataDir)/kubeconfig: \(error)\n".utf8))
            }
        }
    }
}

enum Kubeconfig {
    static func plain(server: String, cluster: String) -> String {
        """
        apiVersion: v1
        kind: Config
        clusters:
        - name: \(cluster)
          cluster:
            server: \(server)
        users:
        - name: \(cluster)-admin
          user: {}
        contexts:
        - name: \(cluster)
          context:
            cluster: \(cluster)
            user: \(cluster)-admin
            namespace: default
        current-context: \(cluster)

        """
    }
}
