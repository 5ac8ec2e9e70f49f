import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuPKI
import KemuSystem

/// Brings a whole cluster up (`kemu up`) and down (`kemu down`): the network, the API server, a
/// node agent and a proxy per node, the cloud load balancer, each a daemon with a pid file and a log.
public struct ClusterLauncher {
    public let config: ClusterConfig
    public let files: ClusterFiles
    /// Keep the cluster's objects and volumes here across down and up (nil: under the state directory).
    public var dataDir: String?
    /// Seconds to wait for every node to be Ready.
    public var timeout: Double = 30
    /// Progress lines, as they happen.
    public var say: (String) -> Void = { print($0) }

    public init(config: ClusterConfig) {
        self.config = config
        files = ClusterFiles(cluster: config.name)
    }

    /// Builds the cluster; returns when every node is Ready. On failure removes what it built.
    public func up() async throws {
        if FileSystem.exists("\(files.state)/network.json") || NetworkNamespace(AddressPlan(config).fabricNamespace).exists {
            throw KemuError(.exists, "cluster \(config.name) is already up; remove it first with: kemu down --cluster \(config.name)")
        }
        let budget = MachineBudget.current
        try budget.check(nodes: config.nodes.count)
        let started = ContinuousClock.now
        let say = { (line: String) in self.say("[\(Self.elapsed(since: started))] \(line)") }
        let network = try ClusterNetwork(config: config)
        do {
            try network.up()
            try keepData()
            say("network: fabric \(config.network.fabricCIDR), control plane \(network.plan.controlPlaneIP), \(config.nodes.count) nodes")
            let perNode = budget.podsPerNode(configured: config.nodeResources.pods, nodes: config.nodes.count)
            if perNode < config.nodeResources.pods {
                say("pods: at most \(perNode) per node (nodeResources.pods asks \(config.nodeResources.pods)): this machine (\(budget.cores) cores, \(budget.memoryText)) holds about \(budget.maxPods) pods")
            }
            try startServer(network)
            say("API server: https://\(network.plan.controlPlaneIP):6443 on the fabric (log \(files.log("server")))")
            let pki = try ClusterPKI.loadOrCreate(directory: "\(files.dataDir)/pki", clusterName: config.name)
            try FileSystem.makeDirectories("\(files.state)/nodes", mode: 0o700)
            try Self.writeKubeconfig(files.proxyKubeconfig, user: "system:kube-proxy", groups: [], network, pki)
            for (node, _) in network.nodes {
                try Self.writeKubeconfig(files.nodeKubeconfig(node), user: "system:node:\(node)", groups: ["system:nodes"], network, pki)
                try Self.startNodeDaemons(node, network, files)
            }
            say("node agents started: \(network.nodes.map(\.name).joined(separator: ", "))")
            try startLoadBalancer(network, pki)
            try await waitForReadyNodes(network.nodes.map(\.name))
            _ = try Daemon.start(Supervisor.name, files, [Executable.path, "supervise", "--cluster", config.name], namespace: nil)
            say("all \(network.nodes.count) nodes Ready; load balancer on \(network.plan.loadBalancerIP) for \(config.network.loadBalancerPool)")
        } catch {
            FileHandle.standardError.write(Data("kemu up failed; removing what was built…\n".utf8))
            _ = try? Self.down(cluster: config.name)
            throw error
        }
        try? ClusterSelection().setCurrent(config.name)
        say("cluster \(config.name) is up in \(Self.elapsed(since: started))")
    }

    /// What `kemu down` removed.
    public struct Removed: Sendable {
        public var daemons: [String]
        public var teardown: ClusterNetwork.TeardownReport
        public var isEmpty: Bool { daemons.isEmpty && teardown.namespaces.isEmpty && teardown.etcDirectories.isEmpty }
    }

    /// Stops the cluster's daemons, then removes everything of its network, found by name (also
    /// after a crash); a cluster that was current is current no more.
    @discardableResult
    public static func down(cluster: String) throws -> Removed {
        let files = ClusterFiles(cluster: cluster)
        let daemons = Daemon.stopAll(files)
        CgroupTree.removeRecorded(in: "\(files.state)/cgroups")
        let report = try ClusterNetwork.teardown(cluster: cluster)
        ClusterSelection().forget(cluster)
        return Removed(daemons: daemons, teardown: report)
    }

    /// With a data dir: the store (DIR/apiserver) and the volumes (DIR/volumes) live there, and
    /// the state directory links to them, so every other command finds them where it always does.
    func keepData() throws {
        guard let dataDir else { return }
        let root = dataDir.hasPrefix("/") ? dataDir : FileManager.default.currentDirectoryPath + "/" + dataDir
        for part in ["apiserver", "volumes"] {
            do {
                try FileSystem.makeDirectories("\(root)/\(part)", mode: 0o700)
            } catch {
                throw KemuError(.invalidArgument, "--data-dir \(dataDir): cannot create \(root)/\(part)", cause: error)
            }
            try FileSystem.symlink("\(root)/\(part)", at: "\(files.state)/\(part)")
        }
    }

    /// Whether a Node object says Ready.
    public static func isReady(_ node: JSON) -> Bool {
        let conditions = node[path: "status.conditions"]?.array ?? []
        return conditions.contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
    }

    public static func elapsed(since start: ContinuousClock.Instant) -> String {
        String(format: "%.3f s", start.duration(to: .now) / .seconds(1))
    }

    /// `kemu server` in the host's namespace (loopback for kubectl) relaying from the cp
    /// host's fabric address; returns once it has written its kubeconfig.
    func startServer(_ network: ClusterNetwork) throws {
        try Self.startServer(network, files)
    }

    /// The same for a running cluster whose server was stopped (`kemu start server`).
    public static func startServer(_ network: ClusterNetwork, _ files: ClusterFiles) throws {
        try FileSystem.makeDirectories(files.dataDir, mode: 0o700)
        try FileSystem.removeFile(files.kubeconfig)  // a kept data dir has the last run's
        let c = network.config.network
        let lifecycle = network.config.controlPlane.map {
            ["--node-grace-period", String($0.nodeGracePeriod), "--pod-eviction-delay", String($0.podEvictionDelay)]
        } ?? []
        let pid = try Daemon.start("server", files, [
            Executable.path, "server", "--data-dir", files.dataDir, "--port", "0",
            "--fabric-netns", network.plan.namespace("cp"), "--fabric-address", network.plan.controlPlaneIP.description,
            "--service-cidr", c.serviceCIDR.description, "--node-port-range", "\(c.nodePortRange.lower)-\(c.nodePortRange.upper)",
            "--load-balancer-pool", c.loadBalancerPool.description, "--pod-logs", "\(files.state)/logs",
            "--pod-netns-prefix", network.plan.podNamespace(""), "--cluster-domain", c.clusterDomain,
        ] + lifecycle, namespace: nil)
        try Daemon.waitFor(file: files.kubeconfig, pid: pid, name: "server", files: files, seconds: 15)
    }

    /// `kemu lb` on the lb host, with a client certificate of its own.
    func startLoadBalancer(_ network: ClusterNetwork, _ pki: ClusterPKI) throws {
        try Self.writeKubeconfig(files.nodeKubeconfig("lb"), user: "system:kemu-lb", groups: [], network, pki)
        _ = try Daemon.start("lb", files, [
            Executable.path, "lb", "--cluster", network.plan.cluster, "--kubeconfig", files.nodeKubeconfig("lb"),
        ], namespace: NetworkNamespace(network.plan.namespace("lb")))
    }

    static func writeKubeconfig(_ path: String, user: String, groups: [String], _ network: ClusterNetwork, _ pki: ClusterPKI) throws {
        let pair = try pki.ca.issueClient(user: user, groups: groups)
        let kubeconfig = Kubeconfig(server: "https://\(network.plan.controlPlaneIP):6443", cluster: network.plan.cluster,
                                    certificateAuthorityPEM: pki.ca.certificatePEM, clientCertificatePEM: pair.certificatePEM,
                                    clientKeyPEM: pair.privateKeyPEM)
        try FileSystem.writeFile(path, kubeconfig.render(), mode: 0o600)
    }

    /// The node's daemons, with the credentials `kemu up` wrote: `kemu node` (the agent, with
    /// DNS) inside the node's namespace, and the node's proxy beside it as a process of its own
    /// (so `kemu stop proxy` can stop it alone, as kube-proxy is a process of its own).
    public static func startNodeDaemons(_ node: String, _ network: ClusterNetwork, _ files: ClusterFiles, proxy: Bool = true) throws {
        let namespace = NetworkNamespace(network.plan.namespace(node))
        _ = try Daemon.start("node-\(node)", files, [
            Executable.path, "node", "--name", node, "--cluster", network.plan.cluster, "--no-proxy",
            "--kubeconfig", files.nodeKubeconfig(node), "--images", Executable.imageCatalog(),
            "--cpu", network.config.nodeResources.cpu, "--memory", network.config.nodeResources.memory,
            "--max-pods", String(MachineBudget.current.podsPerNode(configured: network.config.nodeResources.pods, nodes: network.nodes.count)),
        ], namespace: namespace)
        if proxy { try startProxy(node, network, files) }
    }

    public static func startProxy(_ node: String, _ network: ClusterNetwork, _ files: ClusterFiles) throws {
        _ = try Daemon.start("proxy-\(node)", files, [
            Executable.path, "proxy", "--node", node, "--cluster", network.plan.cluster, "--kubeconfig", files.proxyKubeconfig,
        ], namespace: NetworkNamespace(network.plan.namespace(node)))
    }

    func waitForReadyNodes(_ names: [String]) async throws {
        try await Self.waitForReadyNodes(names, files, timeout: timeout)
    }

    static func waitForReadyNodes(_ names: [String], _ files: ClusterFiles, timeout: Double) async throws {
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: files.kubeconfig))
        let deadline = ContinuousClock.now + .seconds(timeout)
        var ready: Set<String> = []
        while ContinuousClock.now < deadline {
            if let list = try? await client.list(APIResources.nodes) {
                ready = Set(list.items.filter(Self.isReady).map(\.name))
                if ready.isSuperset(of: names) { return }
            }
            for name in names where !ready.contains(name) {
                if let pid = Daemon.pid("node-\(name)", files), kill(pid, 0) != 0 {
                    throw KemuError(.invalidState, "the agent of \(name) exited:\n" + Daemon.tail(files.log("node-\(name)")))
                }
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        let missing = names.filter { !ready.contains($0) }
        let logs = missing.map { "\(files.log("node-\($0)")):\n" + Daemon.tail(files.log("node-\($0)"), lines: 8) }
        throw KemuError(.timeout, "nodes not Ready after \(Int(timeout)) s: \(missing.joined(separator: ", "))\n" + logs.joined(separator: "\n"))
    }
}
