import ArgumentParser
import Foundation
import KemuAPIServer
import KemuClient
import KemuControllers
import KemuIP
import KemuPKI
import KemuStore
import KemuSystem
import NIOSSL
import Synchronization

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the API server (store, Kubernetes API, controllers).",
        discussion: """
        Serves https on 127.0.0.1 (and on every --address given), with a CA and certificates made on \
        first start under DATA-DIR/pki. Clients authenticate with a client certificate the CA signed \
        or a bearer token from DATA-DIR/pki/tokens.csv; anonymous requests get 401, except /healthz, \
        /livez and /readyz. Writes DATA-DIR/kubeconfig (kemu-admin's certificate inline) for kubectl:
          kubectl --kubeconfig DATA-DIR/kubeconfig get namespaces
        --insecure serves plain http on 127.0.0.1 only, without authentication.
        """)

    @Option(help: "Where the store keeps its data (created if missing).") var dataDir: String
    @Option(help: "Port to listen on (0 picks a free one; needs a single address).") var port = 6443
    @Option(name: .customLong("address"), help: "An IPv4 address to serve on besides 127.0.0.1 (repeatable; https only).")
    var addresses: [String] = []
    @Flag(help: "Serve plain http without authentication, on 127.0.0.1 only.") var insecure = false
    @Option(help: "Also listen inside this network namespace (a cluster's control-plane host) …") var fabricNetns: String?
    @Option(help: "… on this address of it …") var fabricAddress: String?
    @Option(help: "… and port, relaying to the server.") var fabricPort = 6443
    @Option(help: "Where node agents write container logs, for kubectl logs.") var podLogs: String?
    @Option(help: "Pod sandboxes' namespace prefix (kemu-CLUSTER-p-), for kubectl exec.") var podNetnsPrefix: String?
    @Flag(help: .hidden) var stopWithParent = false
    @Option(help: "ClusterIP range (.1 is the kubernetes Service).") var serviceCIDR = "10.96.0.0/16"
    @Option(help: "NodePort range, LOW-HIGH.") var nodePortRange = "30000-32767"
    @Option(help: "LoadBalancer IP pool.") var loadBalancerPool = "172.31.1.0/24"
    @Option(help: "Seconds without a heartbeat before a node is NotReady (Unknown) and its pods unready.") var nodeGracePeriod: Double = 5
    @Option(help: "Seconds a node stays NotReady before its pods are deleted and recreated elsewhere.") var podEvictionDelay: Double = 5

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

    /// The addresses the serving certificate names: loopback, every --address, the fabric address.
    func validatedHosts() throws -> [IPv4Address] {
        var hosts = [IPv4Address(127, 0, 0, 1)]
        for text in addresses {
            guard let address = IPv4Address(text) else { throw ValidationError("--address \"\(text)\" is not an IPv4 address") }
            if insecure && address.value >> 24 != 127 {
                throw ValidationError("--address \(text): --insecure serves plain http on loopback only; drop --insecure to serve https there")
            }
            if !hosts.contains(address) { hosts.append(address) }
        }
        if port == 0 && hosts.count > 1 { throw ValidationError("--port 0 picks a free port for one address only; give a port with --address") }
        if (fabricNetns == nil) != (fabricAddress == nil) { throw ValidationError("--fabric-netns and --fabric-address go together") }
        if let fabricAddress {
            guard let address = IPv4Address(fabricAddress) else { throw ValidationError("--fabric-address \"\(fabricAddress)\" is not an IPv4 address") }
            if insecure { throw ValidationError("--fabric-address: --insecure serves plain http on loopback only") }
            hosts.append(address)  // for the serving certificate; the listener is the relay
        }
        return hosts
    }

    func run() async throws {
        let ranges = try ranges()
        guard nodeGracePeriod >= 2 else { throw ValidationError("--node-grace-period \(nodeGracePeriod): must be at least 2 seconds (agents post every second)") }
        guard podEvictionDelay >= 0 else { throw ValidationError("--pod-eviction-delay \(podEvictionDelay): must not be negative") }
        let hosts = try validatedHosts()
        let store: Store
        do {
            store = try Store(directory: dataDir)
        } catch {
            throw KemuError(.invalidState, "cannot open the store in \(dataDir)", cause: error)
        }
        var api = try APIServer(store: store, ranges: ranges)
        api.podLogDirectory = podLogs
        var tls: TLSConfiguration?
        var kubeconfig = Kubeconfig(server: "")
        if !insecure {
            let pki = try ClusterPKI.loadOrCreate(directory: "\(dataDir)/pki")
            let serving = try pki.issueServing(
                dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
                addresses: (hosts + [ranges.serviceCIDR.host(1)!]).map(\.octets))
            tls = try Self.serverTLS(serving: serving, ca: pki.ca.certificatePEM)
            api.authenticator = Authenticator(tokens: pki.tokens)
            kubeconfig.certificateAuthorityPEM = pki.ca.certificatePEM
            kubeconfig.clientCertificatePEM = pki.admin.certificatePEM
            kubeconfig.clientKeyPEM = pki.admin.privateKeyPEM
        }
        // The fabric listener is bound before anything starts, so a missing namespace fails early.
        var background: [@Sendable () async throws -> Void] = []
        let boundPort = Mutex(0)
        if let fabricNetns, let fabricAddress {
            let socket: Int32
            do {
                socket = try NetworkNamespace(fabricNetns).listeningSocket(host: fabricAddress, port: fabricPort)
            } catch {
                throw KemuError(.invalidState, "cannot listen on \(fabricAddress):\(fabricPort) in namespace \(fabricNetns)", cause: error)
            }
            background.append { try await FabricListener(socket: socket, target: { boundPort.withLock { $0 } }).run() }
        }
        if stopWithParent {
            // For test harnesses: a server whose parent died (a crashed test run) stops itself
            // instead of lingering.
            let parent = getppid()
            background.append {
                while getppid() == parent { try await Task.sleep(for: .milliseconds(500)) }
                kill(getpid(), SIGTERM)  // the usual graceful stop, which cancels this loop
                while true { try await Task.sleep(for: .seconds(60)) }
            }
        }
        let endpointSlices = EndpointSliceController(store: store)
        let collector = GarbageCollector(store: store)
        let scheduler = Scheduler(store: store)
        let replicaSets = ReplicaSetController(store: store, resource: "replicasets.apps")
        let replicationControllers = ReplicaSetController(store: store, resource: "replicationcontrollers")
        let deployments = DeploymentController(store: store)
        let statefulSets = StatefulSetController(store: store)
        let nodeLifecycle = NodeLifecycleController(store: store, gracePeriod: nodeGracePeriod, evictionDelay: podEvictionDelay)
        let (served, dataDir, scheme) = (api, self.dataDir, insecure ? "http" : "https")
        let listeners = hosts.filter { $0.description != fabricAddress }.map(\.description)
        let advertise = fabricAddress.map { ($0, fabricPort) }
        background += [{ try await endpointSlices.run() }, { try await collector.run() }, { try await scheduler.run() },
                       { try await replicaSets.run() }, { try await replicationControllers.run() }, { try await deployments.run() }, { try await statefulSets.run() },
                       { try await nodeLifecycle.run() }]
        try await served.run(hosts: listeners, port: port, tls: tls, podNamespacePrefix: podNetnsPrefix,
                             background: background) { [kubeconfig] bound in
            boundPort.withLock { $0 = bound }
            var kubeconfig = kubeconfig
            kubeconfig.server = "\(scheme)://127.0.0.1:\(bound)"
            do {
                try served.publishEndpoints(address: advertise?.0 ?? listeners.last!, port: advertise?.1 ?? bound)
                try FileSystem.writeFile("\(dataDir)/kubeconfig", kubeconfig.render(), mode: 0o600)
                FileHandle.standardOutput.write(Data("kemu API server on \(kubeconfig.server) — kubectl --kubeconfig \(dataDir)/kubeconfig get namespaces\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("kemu: cannot write \(dataDir)/kubeconfig: \(error)\n".utf8))
            }
        }
    }

    /// The serving certificate, and client certificates checked against the cluster CA when a
    /// client presents one (optional, so bearer-token clients can connect too).
    static func serverTLS(serving: KeyPair, ca: String) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serving.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serving.privateKeyPEM.utf8), format: .pem)))
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
        configuration.certificateVerification = .optionalVerification
        // Closing a connection waits this long for the peer's close_notify; AsyncHTTPClient's idle
        // pooled connections never send one, which held SIGTERM up for NIOSSL's default 5 s.
        configuration.shutdownTimeout = .milliseconds(200)
        return configuration
    }
}
