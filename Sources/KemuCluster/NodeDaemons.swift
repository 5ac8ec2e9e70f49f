import Foundation
import KemuAgent
import KemuClient
import KemuDNS
import KemuIP
import KemuMesh
import KemuNetwork
import KemuPolicy
import KemuProxy
import KemuSystem
import Logging
import ServiceLifecycle

/// The daemons a node (or the lb host) runs, put together from a running cluster's files: each
/// enters its host's namespace by itself (re-executing inside it), reaches the API with the
/// credentials `kemu up` wrote, and runs until SIGTERM.
public enum NodeDaemons {
    /// The node agent, with the node's proxy (unless `proxy` is nil) and its cluster DNS responder
    /// (unless `dnsTTL` is nil).
    public static func runAgent(cluster: String, node: String, kubeconfig: String?, images: String?, resources: (cpu: String, memory: String, maxPods: Int),
                                proxy: ProxySettings?, dnsTTL: UInt32?) async throws {
        let (network, client, credentials) = try enter(cluster: cluster, host: node, kubeconfig: kubeconfig, command: "kemu node")
        let catalog = try ImageCatalog.load(path: images ?? Executable.imageCatalog(), kemuExecutable: Executable.path)
        let state = network.stateDirectory
        let agent = try NodeAgent(
            config: AgentConfig(nodeName: node, cpu: resources.cpu, memory: resources.memory, maxPods: resources.maxPods, images: catalog,
                                logDirectory: "\(state)/logs", volumeDirectory: "\(state)/volumes", podDirectory: "\(state)/pod-files",
                                hiddenPaths: hiddenPaths(state: state, kubeconfig: kubeconfig), clusterCA: credentials.certificateAuthorityPEM),
            client: client, network: network)
        var services: [any Service] = [DaemonLoop { try await agent.run() }]
        if let proxy { services += try proxy.nodeProxy(node: node, network: network, client: client) }
        if let dnsTTL {
            let dns = DNSServer(config: .init(address: SocketAddress(network.plan.dnsServiceIP, 53), domain: network.plan.network.clusterDomain, ttl: dnsTTL),
                                client: client)
            services.append(DaemonLoop { try await dns.run() })
        }
        try await runGroup(services, label: "kemu.node")
    }

    /// A node's proxy by itself.
    public static func runProxy(cluster: String, node: String, kubeconfig: String?, settings: ProxySettings) async throws {
        let (network, client, _) = try enter(cluster: cluster, host: node, kubeconfig: kubeconfig, command: "kemu proxy")
        try await runGroup(try settings.nodeProxy(node: node, network: network, client: client), label: "kemu.proxy")
    }

    /// The emulated cloud load balancer on the lb host.
    public static func runLoadBalancer(cluster: String, kubeconfig: String?, settings: ProxySettings) async throws {
        let (network, client, _) = try enter(cluster: cluster, host: "lb", kubeconfig: kubeconfig, command: "kemu lb")
        var config = settings.config(nodeName: "lb", nodeAddresses: [])
        config.role = .cloudLoadBalancer
        config.localRanges = [network.plan.network.loadBalancerPool]
        let balancer = try ServiceProxy(config: config, client: client, addresses: LoopbackAddresses())
        try await runGroup([DaemonLoop { try await balancer.run() }], label: "kemu.lb")
    }

    /// Checks the host is the cluster's, enters its namespace (when started from outside it) and
    /// makes a client with the host's kubeconfig (default: the one `kemu up` wrote for it).
    static func enter(cluster: String, host: String, kubeconfig: String?, command: String) throws -> (ClusterNetwork, APIClient, Kubeconfig) {
        try requireRoot(command)
        let network = try ClusterNetwork.load(cluster: cluster)
        if host != "lb" { _ = try NodeAgent.nodeIndex(host, in: network) }  // a wrong name is the first thing to say
        let namespace = NetworkNamespace(network.plan.namespace(host))
        if !namespace.isCurrent { try namespace.reexecInside() }
        let config = try Kubeconfig.load(path: kubeconfig ?? "\(network.stateDirectory)/nodes/\(host).kubeconfig")
        return (network, try APIClient(kubeconfig: config), config)
    }

    /// What no container may see: every cluster's state (`/run/kemu`: keys, kubeconfigs, logs,
    /// the store), where `--data-dir` keeps the API server's data, and the agent's own kubeconfig.
    static func hiddenPaths(state: String, kubeconfig: String?) -> [String] {
        func real(_ path: String) -> String { URL(fileURLWithPath: path).resolvingSymlinksInPath().path }
        var paths = [(state as NSString).deletingLastPathComponent, state, real("\(state)/apiserver")]
        // A kubeconfig's own directory, unless it is one that programs need (/tmp): there the
        // file's mode (0600, root) is what keeps containers, which run as other users, out.
        if let kubeconfig { paths.append((real(kubeconfig) as NSString).deletingLastPathComponent) }
        var seen: Set<String> = ["", "/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/etc", "/usr", "/var", "/run"]
        let wanted = paths.filter { seen.insert($0).inserted }
        // One cover is enough where another is inside it.
        return wanted.filter { path in !wanted.contains { path != $0 && path.hasPrefix($0 + "/") } }
    }

    static func runGroup(_ services: [any Service], label: String) async throws {
        try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                    logger: Logger(label: label))).run()
    }
}

/// The proxy's settings from the command line of `kemu node`, `kemu proxy` and `kemu lb`.
public struct ProxySettings: Sendable {
    public var algorithm: BalancingAlgorithm = .roundRobin
    /// Endpoints tried per connection before the client is reset.
    public var connectAttempts = 4
    /// Seconds without a byte either way before a connection is closed (0: never).
    public var idleTimeout = 3600.0
    public var accessLog = false

    public init() {}

    /// A proxy configuration with these settings: for `nodeName`, listening for NodePorts on
    /// `nodeAddresses`.
    public func config(nodeName: String, nodeAddresses: [IPv4Address]) -> ProxyConfig {
        var context = PlanContext(nodeName: nodeName, nodeAddresses: nodeAddresses)
        context.defaults.algorithm = algorithm
        context.defaults.connectAttempts = max(connectAttempts, 1)
        var config = ProxyConfig(context: context)
        config.engine.idleTimeoutSeconds = idleTimeout
        config.engine.accessLog = accessLog
        return config
    }

    /// Node `node`'s proxy: NodePorts on the node's addresses, ClusterIPs and LB IPs on its `lo`,
    /// bandwidth Faults on its pods' links; and the node's NetworkPolicy, whose counters are on
    /// the proxy's /metrics.
    public func nodeProxy(node: String, network: ClusterNetwork, client: APIClient) throws -> [any Service] {
        let index = try NodeAgent.nodeIndex(node, in: network)
        let plan = network.plan
        var config = config(nodeName: node, nodeAddresses: [plan.nodeIP(index), plan.podGateway(index).address, IPv4Address(127, 0, 0, 1)])
        config.context.zone = network.config.zones?[node]
        config.managedRanges = [plan.network.serviceCIDR, plan.network.loadBalancerPool]
        config.localRanges = [plan.network.serviceCIDR]
        config.reservedAddresses = [plan.dnsServiceIP]
        config.engine.transparentDial = true
        config.engine.podNetwork = plan.network.podCIDR
        var policyConfig = PolicyEnforcer.Config(node: node, dns: plan.dnsServiceIP, replyMark: TransparentDial.mark)
        policyConfig.nodeAddresses = config.context.nodeAddresses
        policyConfig.dropLog = ClusterFiles(cluster: plan.cluster).dropLog(node: node)
        let policy = try PolicyEnforcer(config: policyConfig, client: client)
        let mesh = try meshNode(node: node, index: index, network: network, client: client)
        config.engine.mesh = mesh.tunnels
        config.extraMetrics = { policy.metricsText() + mesh.metricsText() }
        config.pages["/mesh"] = { mesh.statusJSON() }
        let proxy = try ServiceProxy(config: config, client: client, addresses: LoopbackAddresses(), shaper: PodLinkShaper(network: network, node: node))
        return [DaemonLoop { try await proxy.run() }, DaemonLoop { try await policy.run() }, DaemonLoop { try await mesh.run() }]
    }

    /// The node's part of the mesh: tunnels on its fabric address, certificates asked for with the
    /// node's own credentials (the mesh CA gives a node only its pods' identities).
    func meshNode(node: String, index: Int, network: ClusterNetwork, client: APIClient) throws -> MeshNode {
        let plan = network.plan
        var config = MeshNode.Config(node: node, trustDomain: plan.network.clusterDomain, address: plan.nodeIP(index))
        config.clusterWide = network.config.mesh == "cluster"
        let credentials = try Kubeconfig.load(path: ClusterFiles(cluster: plan.cluster).nodeKubeconfig(node))
        return try MeshNode(config: config, client: client, nodeClient: try APIClient(kubeconfig: credentials))
    }
}
