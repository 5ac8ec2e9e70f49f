import KemuAPI
import ArgumentParser
import KemuAPIServer
import KemuCluster
import KemuIP

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
    @Flag(help: .hidden) var noPriorityLanes = false
    @Option(help: "When the store's log reaches the disk: batch (fdatasync at most every second; kill -9 loses nothing) or always (fdatasync before each write is acknowledged, as etcd; power loss loses nothing).")
    var sync = "batch"
    @Option(help: "ClusterIP range (.1 is the kubernetes Service).") var serviceCIDR = "10.96.0.0/16"
    @Option(help: "NodePort range, LOW-HIGH.") var nodePortRange = "30000-32767"
    @Option(help: "LoadBalancer IP pool.") var loadBalancerPool = "172.31.1.0/24"
    @Option(help: "The cluster's DNS domain: the mesh's trust domain (spiffe://DOMAIN/ns/NS/sa/SA).") var clusterDomain = "cluster.local"
    @Option(help: "Seconds without a heartbeat before a node is NotReady (Unknown) and its pods unready.") var nodeGracePeriod: Double = 5
    @Option(help: "Seconds a node stays NotReady before its pods are deleted and recreated elsewhere.") var podEvictionDelay: Double = 5
    @Option(help: "Nodes per second whose pods may be evicted in a healthy zone (upstream's default).") var nodeEvictionRate: Double = 0.1
    @Option(help: "The same in a partially disrupted zone larger than --large-cluster-size-threshold.") var secondaryNodeEvictionRate: Double = 0.01
    @Option(help: "Share of a zone's nodes NotReady (more than 2) past which it is partially disrupted: evictions slow or stop.")
    var unhealthyZoneThreshold: Double = 0.55
    @Option(help: "Nodes in a zone above which a partial disruption slows evictions rather than stopping them.") var largeClusterSizeThreshold = 50

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
        guard nodeGracePeriod >= 2 else { throw ValidationError("--node-grace-period \(nodeGracePeriod): must be at least 2 seconds (agents post every second)") }
        guard podEvictionDelay >= 0 else { throw ValidationError("--pod-eviction-delay \(podEvictionDelay): must not be negative") }
        for (flag, rate) in [("--node-eviction-rate", nodeEvictionRate), ("--secondary-node-eviction-rate", secondaryNodeEvictionRate)] {
            guard rate.isFinite, rate >= 0 else { throw ValidationError("\(flag) \(rate): a number of nodes per second, 0 or more") }
        }
        guard unhealthyZoneThreshold > 0, unhealthyZoneThreshold <= 1 else {
            throw ValidationError("--unhealthy-zone-threshold \(unhealthyZoneThreshold): a share of the zone's nodes, above 0 and at most 1")
        }
        guard largeClusterSizeThreshold >= 0 else { throw ValidationError("--large-cluster-size-threshold \(largeClusterSizeThreshold): must not be negative") }
        var settings = ControlPlane.Settings(dataDir: dataDir, ranges: try ranges())
        settings.hosts = try validatedHosts()
        settings.port = port
        settings.insecure = insecure
        if let fabricNetns, let fabricAddress { settings.fabric = (fabricNetns, fabricAddress, fabricPort) }
        settings.podLogs = podLogs
        guard SPIFFEID("spiffe://\(clusterDomain)") != nil else {
            throw ValidationError("--cluster-domain \"\(clusterDomain)\" is not a DNS domain such as cluster.local")
        }
        settings.clusterDomain = clusterDomain
        settings.podNetnsPrefix = podNetnsPrefix
        settings.stopWithParent = stopWithParent
        settings.nodeGracePeriod = nodeGracePeriod
        settings.podEvictionDelay = podEvictionDelay
        settings.eviction.rate = nodeEvictionRate
        settings.eviction.secondaryRate = secondaryNodeEvictionRate
        settings.eviction.unhealthyZoneThreshold = unhealthyZoneThreshold
        settings.eviction.largeClusterSizeThreshold = largeClusterSizeThreshold
        guard ControlPlane.syncPolicies.contains(sync) else {
            throw ValidationError("--sync \(sync): one of \(ControlPlane.syncPolicies.joined(separator: ", "))")
        }
        settings.sync = sync
        settings.priorityLanes = !noPriorityLanes
        try await ControlPlane(settings).run()
    }
}
