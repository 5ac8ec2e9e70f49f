import ArgumentParser
import KemuClient
import KemuIP
import KemuNetwork
import KemuProxy
import KemuSystem
import Logging
import ServiceLifecycle

/// The emulated cloud load balancer: `kemu up` runs it on the `lb` host.
struct LoadBalancer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lb",
        abstract: "Run the cluster's emulated cloud load balancer on the lb host.",
        discussion: """
        Owns the load-balancer pool (172.31.1.0/24 by default, routed to it from the client host), \
        listens on every LoadBalancer Service's ingress IP and ports, and balances to the Service's \
        NodePort on Ready nodes (with externalTrafficPolicy Local, only nodes with an endpoint), \
        retrying another node when one does not answer. Enters the lb namespace by itself.
        """)

    @Option(help: "Cluster name.") var cluster = "kemu"
    @Option(help: "Kubeconfig (default: /run/kemu/CLUSTER/nodes/lb.kubeconfig).") var kubeconfig: String?
    @OptionGroup var options: ProxyOptions

    func run() async throws {
        try requireRoot("kemu lb")
        let network = try ClusterNetwork.load(cluster: cluster)
        let namespace = NetworkNamespace(network.plan.namespace("lb"))
        if !namespace.isCurrent { try namespace.reexecInside() }
        let config = try Kubeconfig.load(path: kubeconfig ?? "\(network.stateDirectory)/nodes/lb.kubeconfig")
        var proxyConfig = options.config(nodeName: "lb", nodeAddresses: [])
        proxyConfig.role = .cloudLoadBalancer
        proxyConfig.localRanges = [network.plan.network.loadBalancerPool]
        let balancer = try ServiceProxy(config: proxyConfig, client: try APIClient(kubeconfig: config), addresses: LoopbackAddresses())
        try await ServiceGroup(configuration: .init(services: [ProxyService(proxy: balancer)], gracefulShutdownSignals: [.sigterm, .sigint],
                                                    logger: Logger(label: "kemu.lb"))).run()
    }
}
