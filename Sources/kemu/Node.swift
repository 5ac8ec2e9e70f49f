import ArgumentParser
import Foundation
import KemuAgent
import KemuDNS
import KemuClient
import KemuNetwork
import KemuProxy
import KemuSystem
import Logging
import ServiceLifecycle

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run the node agent (kemu's kubelet) for one node of a running cluster.",
        discussion: "`kemu up` starts one per node, inside the node's namespace, with a client certificate of its own.")

    @Option(help: "The node's name, as in the cluster config.") var name: String
    @Option(help: "Cluster name.") var cluster = "kemu"
    @Option(help: "Kubeconfig (default: /run/kemu/CLUSTER/nodes/NAME.kubeconfig).") var kubeconfig: String?
    @Option(help: "Image catalog (default: configs/images.yaml, here or beside kemu).") var images: String?
    @Option(help: "CPU capacity.") var cpu = "4"
    @Option(help: "Memory capacity.") var memory = "8Gi"
    @Option(help: "Pod capacity.") var maxPods = 110
    @Flag(help: "Leave the Service proxy out (run it with `kemu proxy --node NAME`).") var noProxy = false
    @Flag(help: "Leave the cluster DNS responder out.") var noDNS = false
    @Option(help: "TTL of cluster DNS answers, seconds.") var dnsTTL: UInt32 = 5
    @OptionGroup var proxyOptions: ProxyOptions

    func run() async throws {
        try requireRoot("kemu node")
        let network = try ClusterNetwork.load(cluster: cluster)
        _ = try NodeAgent.nodeIndex(name, in: network)  // a wrong name is the first thing to say
        // The agent reaches the API over the fabric and the proxy listens on the node's addresses:
        // both live in the node's namespace, entered here when a user starts it from the host.
        let namespace = NetworkNamespace(network.plan.namespace(name))
        if !namespace.isCurrent { try namespace.reexecInside() }
        let config = try Kubeconfig.load(path: kubeconfig ?? "\(network.stateDirectory)/nodes/\(name).kubeconfig")
        let catalog = try ImageCatalog.load(path: images ?? Executable.imageCatalog(), kemuExecutable: Executable.path)
        let client = try APIClient(kubeconfig: config)
        let agent = try NodeAgent(
            config: AgentConfig(nodeName: name, cpu: cpu, memory: memory, maxPods: maxPods, images: catalog,
                                logDirectory: "\(network.stateDirectory)/logs", volumeDirectory: "\(network.stateDirectory)/volumes"),
            client: client, network: network)
        var services: [any Service] = [AgentService(agent: agent)]
        if !noProxy {
            services.append(ProxyService(proxy: try proxyOptions.makeProxy(node: name, network: network, client: client)))
        }
        if !noDNS {
            let dns = DNSServer(config: .init(address: SocketAddress(network.plan.dnsServiceIP, 53), domain: network.plan.network.clusterDomain, ttl: dnsTTL),
                                client: client)
            services.append(DNSService(dns: dns))
        }
        let logger = Logger(label: "kemu.node")
        try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                    logger: logger)).run()
    }
}

/// The agent as a lifecycle service: SIGTERM stops it; the pods keep running (as with kubelet).
struct AgentService: Service {
    let agent: NodeAgent

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await agent.run() } catch is CancellationError {}
        }
    }
}

/// The cluster DNS responder as a lifecycle service.
struct DNSService: Service {
    let dns: DNSServer

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await dns.run() } catch is CancellationError {}
        }
    }
}

/// Where this kemu binary and its project files are.
enum Executable {
    /// The running binary, absolute (from /proc/self/exe).
    static let path: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }()

    /// configs/images.yaml in the working directory, else in the project the binary was built in
    /// (the nearest directory above the binary that has one).
    static func imageCatalog() -> String {
        let local = FileManager.default.currentDirectoryPath + "/configs/images.yaml"
        if FileSystem.exists(local) { return local }
        var directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent("configs/images.yaml").path
            if FileSystem.exists(candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return local
    }
}
