import ArgumentParser
import KemuAgent
import KemuClient
import KemuIP
import KemuNetwork
import KemuProxy
import KemuSystem
import Logging
import ServiceLifecycle
import Synchronization

struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Run one node's proxy (kube-proxy's job) by itself.",
        discussion: """
        `kemu node` runs the proxy too; start the node with --no-proxy to run it here instead, so it \
        can be stopped and restarted while the pods keep running. Enters the node's namespace by itself.
        """)

    @Option(help: "The node whose proxy this is.") var node: String
    @Option(help: "Cluster name.") var cluster = "kemu"
    @Option(help: "Kubeconfig (default: the node's, /run/kemu/CLUSTER/nodes/NODE.kubeconfig).") var kubeconfig: String?
    @OptionGroup var options: ProxyOptions

    func run() async throws {
        try requireRoot("kemu proxy")
        let network = try ClusterNetwork.load(cluster: cluster)
        _ = try NodeAgent.nodeIndex(node, in: network)
        let namespace = NetworkNamespace(network.plan.namespace(node))
        if !namespace.isCurrent { try namespace.reexecInside() }
        let config = try Kubeconfig.load(path: kubeconfig ?? "\(network.stateDirectory)/nodes/\(node).kubeconfig")
        let proxy = try options.makeProxy(node: node, network: network, client: try APIClient(kubeconfig: config))
        try await ServiceGroup(configuration: .init(services: [ProxyService(proxy: proxy)], gracefulShutdownSignals: [.sigterm, .sigint],
                                                    logger: Logger(label: "kemu.proxy"))).run()
    }
}

/// The proxy's settings on the command line of `kemu node` and `kemu proxy`.
struct ProxyOptions: ParsableArguments {
    @Option(help: "Default load-balancing algorithm: \(BalancingAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")) (a Service's kemu.io/load-balancer annotation overrides it).")
    var algorithm: BalancingAlgorithm = .roundRobin
    @Option(help: "Endpoints tried per connection before the client is reset.") var connectAttempts = 4
    @Option(help: "Seconds without a byte either way before a connection is closed (0: never).") var idleTimeout = 3600.0
    @Flag(help: "Log a line per proxied connection as it ends.") var accessLog = false

    /// A proxy configuration with these options: for `nodeName`, listening for NodePorts on
    /// `nodeAddresses`.
    func config(nodeName: String, nodeAddresses: [IPv4Address]) -> ProxyConfig {
        var context = PlanContext(nodeName: nodeName, nodeAddresses: nodeAddresses)
        context.defaults.algorithm = algorithm
        context.defaults.connectAttempts = max(connectAttempts, 1)
        var config = ProxyConfig(context: context)
        config.engine.idleTimeoutSeconds = idleTimeout
        config.engine.accessLog = accessLog
        return config
    }

    func makeProxy(node: String, network: ClusterNetwork, client: APIClient) throws -> ServiceProxy {
        let index = try NodeAgent.nodeIndex(node, in: network)
        let plan = network.plan
        var config = config(nodeName: node, nodeAddresses: [plan.nodeIP(index), plan.podGateway(index).address, IPv4Address(127, 0, 0, 1)])
        config.managedRanges = [plan.network.serviceCIDR, plan.network.loadBalancerPool]
        config.localRanges = [plan.network.serviceCIDR]
        config.reservedAddresses = [plan.dnsServiceIP]
        return try ServiceProxy(config: config, client: client, addresses: LoopbackAddresses(), shaper: PodLinkShaper(network: network, node: node))
    }
}

/// Bandwidth Faults on one node's pods: tbf on both ends of each pod's veth (ClusterNetwork.shapePod).
/// Remembers what it set per veth, so a pod is touched only when its limit changes; the first call
/// clears every pod of the node, whatever an earlier proxy left.
final class PodLinkShaper: PodShaper {
    let network: ClusterNetwork
    let node: String
    private let applied = Mutex<[String: UInt64]?>(nil)
    private let logger = Logger(label: "kemu.proxy.bandwidth")

    init(network: ClusterNetwork, node: String) {
        self.network = network
        self.node = node
    }

    func shape(_ wanted: [IPv4Address: UInt64]) {
        let pods = (try? network.pods().filter { $0.node == node }) ?? []
        applied.withLock { applied in
            var now: [String: UInt64] = [:]
            for pod in pods {
                let rate = wanted[pod.ip]
                if let rate { now[pod.hostVeth] = rate }
                if let before = applied, before[pod.hostVeth] == rate { continue }
                do {
                    try network.shapePod(pod, bytesPerSecond: rate)
                    if let rate { logger.info("pod \(pod.name) (\(pod.ip)): link limited to \(rate) bytes/s") }
                } catch {
                    logger.warning("pod \(pod.name): bandwidth limit \(rate.map(String.init) ?? "removal"): \(error)")
                }
            }
            applied = now
        }
    }
}

extension BalancingAlgorithm: ExpressibleByArgument {}

/// The proxy as a lifecycle service: SIGTERM stops it (listeners close; the pods keep running).
struct ProxyService: Service {
    let proxy: ServiceProxy

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await proxy.run() } catch is CancellationError {}
        }
    }
}
