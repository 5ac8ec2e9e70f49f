import ArgumentParser
import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuPKI
import KemuSystem

/// The files of a running cluster under its state directory (/run/kemu/NAME).
struct ClusterFiles {
    let state: String
    var dataDir: String { "\(state)/apiserver" }
    var kubeconfig: String { "\(dataDir)/kubeconfig" }
    func pidFile(_ daemon: String) -> String { "\(state)/\(daemon).pid" }
    func log(_ daemon: String) -> String { "\(state)/\(daemon).log" }
    func nodeKubeconfig(_ node: String) -> String { "\(state)/nodes/\(node).kubeconfig" }
    var daemons: [String] { FileSystem.list(state).filter { $0.hasSuffix(".pid") }.map { String($0.dropLast(4)) } }

    init(cluster: String) { state = ClusterNetwork.defaultStateDirectory(cluster) }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring a cluster up: network, API server, one node agent per node; returns when every node is Ready.")

    @OptionGroup var options: ClusterOptions
    @Option(help: "Seconds to wait for every node to be Ready.") var timeout: Double = 30
    @Option(help: ArgumentHelp("Keep the cluster's objects and volumes here, across `kemu down` and `kemu up`.",
                               discussion: "Without it they live under /run/kemu/NAME and go with `kemu down`."))
    var dataDir: String?

    func run() async throws {
        try requireRoot("kemu up")
        let config = try options.config()
        let files = ClusterFiles(cluster: config.name)
        if FileSystem.exists("\(files.state)/network.json") || NetworkNamespace(AddressPlan(config).fabricNamespace).exists {
            throw KemuError(.exists, "cluster \(config.name) is already up; remove it first with: kemu down --cluster \(config.name)")
        }
        let started = ContinuousClock.now
        let say = { (line: String) in print("[\(Self.elapsed(since: started))] \(line)") }
        let network = try ClusterNetwork(config: config)
        do {
            try network.up()
            try keepData(files)
            say("network: fabric \(config.network.fabricCIDR), control plane \(network.plan.controlPlaneIP), \(config.nodes.count) nodes")
            try startServer(network, files)
            say("API server: https://\(network.plan.controlPlaneIP):6443 on the fabric (log \(files.log("server")))")
            let pki = try ClusterPKI.loadOrCreate(directory: "\(files.dataDir)/pki", clusterName: config.name)
            try FileSystem.makeDirectories("\(files.state)/nodes", mode: 0o700)
            for (node, _) in network.nodes { try startAgent(node, network, files, pki) }
            say("node agents started: \(network.nodes.map(\.name).joined(separator: ", "))")
            try startLoadBalancer(network, files, pki)
            try await waitForReadyNodes(network.nodes.map(\.name), files)
            say("all \(network.nodes.count) nodes Ready; load balancer on \(network.plan.loadBalancerIP) for \(config.network.loadBalancerPool)")
        } catch {
            FileHandle.standardError.write(Data("kemu up failed: \(error)\nremoving what was built…\n".utf8))
            Down.stopDaemons(files)
            _ = try? ClusterNetwork.teardown(cluster: config.name)
            throw ExitCode.failure
        }
        print("""

        cluster \(config.name) is up in \(Self.elapsed(since: started)).
          export KUBECONFIG=\(files.kubeconfig)
          kubectl get nodes -o wide
          kemu status --cluster \(config.name)
          kemu down --cluster \(config.name)
        """)
    }

    /// With --data-dir: the store (DIR/apiserver) and the volumes (DIR/volumes) live there, and
    /// the state directory links to them, so every other command finds them where it always does.
    func keepData(_ files: ClusterFiles) throws {
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

    static func isReady(_ node: JSON) -> Bool {
        let conditions = node[path: "status.conditions"]?.array ?? []
        return conditions.contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
    }

    static func elapsed(since start: ContinuousClock.Instant) -> String {
        String(format: "%.3f s", start.duration(to: .now) / .seconds(1))
    }

    /// `kemu server` in the host's namespace (loopback for kubectl) relaying from the cp
    /// host's fabric address; returns once it has written its kubeconfig.
    func startServer(_ network: ClusterNetwork, _ files: ClusterFiles) throws {
        try FileSystem.makeDirectories(files.dataDir, mode: 0o700)
        try FileSystem.removeFile(files.kubeconfig)  // a kept data dir has the last run's
        let c = network.config.network
        let pid = try Daemon.start("server", files, [
            Executable.path, "server", "--data-dir", files.dataDir, "--port", "0",
            "--fabric-netns", network.plan.namespace("cp"), "--fabric-address", network.plan.controlPlaneIP.description,
            "--service-cidr", c.serviceCIDR.description, "--node-port-range", "\(c.nodePortRange.lower)-\(c.nodePortRange.upper)",
            "--load-balancer-pool", c.loadBalancerPool.description, "--pod-logs", "\(files.state)/logs",
            "--pod-netns-prefix", network.plan.podNamespace(""),
        ], namespace: nil)
        try Daemon.waitFor(file: files.kubeconfig, pid: pid, name: "server", files: files, seconds: 15)
    }

    /// `kemu lb` on the lb host, with a client certificate of its own.
    func startLoadBalancer(_ network: ClusterNetwork, _ files: ClusterFiles, _ pki: ClusterPKI) throws {
        try writeKubeconfig(files.nodeKubeconfig("lb"), user: "system:kemu-lb", groups: [], network, pki)
        _ = try Daemon.start("lb", files, [
            Executable.path, "lb", "--cluster", network.plan.cluster, "--kubeconfig", files.nodeKubeconfig("lb"),
        ], namespace: NetworkNamespace(network.plan.namespace("lb")))
    }

    func writeKubeconfig(_ path: String, user: String, groups: [String], _ network: ClusterNetwork, _ pki: ClusterPKI) throws {
        let pair = try pki.ca.issueClient(user: user, groups: groups)
        let kubeconfig = Kubeconfig(server: "https://\(network.plan.controlPlaneIP):6443", cluster: network.plan.cluster,
                                    certificateAuthorityPEM: pki.ca.certificatePEM, clientCertificatePEM: pair.certificatePEM,
                                    clientKeyPEM: pair.privateKeyPEM)
        try FileSystem.writeFile(path, kubeconfig.render(), mode: 0o600)
    }

    /// `kemu node` inside the node's namespace, with a client certificate for system:node:NAME,
    /// and the node's proxy beside it as a process of its own (so `kemu stop proxy` can stop it
    /// alone, as kube-proxy is a process of its own).
    func startAgent(_ node: String, _ network: ClusterNetwork, _ files: ClusterFiles, _ pki: ClusterPKI) throws {
        try writeKubeconfig(files.nodeKubeconfig(node), user: "system:node:\(node)", groups: ["system:nodes"], network, pki)
        try Self.startNodeDaemons(node, network, files)
    }

    /// The node's daemons, with the credentials `kemu up` wrote: the agent (with DNS) and the proxy.
    static func startNodeDaemons(_ node: String, _ network: ClusterNetwork, _ files: ClusterFiles, proxy: Bool = true) throws {
        let namespace = NetworkNamespace(network.plan.namespace(node))
        _ = try Daemon.start("node-\(node)", files, [
            Executable.path, "node", "--name", node, "--cluster", network.plan.cluster, "--no-proxy",
            "--kubeconfig", files.nodeKubeconfig(node), "--images", Executable.imageCatalog(),
            "--cpu", network.config.nodeResources.cpu, "--memory", network.config.nodeResources.memory,
            "--max-pods", String(network.config.nodeResources.pods),
        ], namespace: namespace)
        if proxy { try startProxy(node, network, files) }
    }

    static func startProxy(_ node: String, _ network: ClusterNetwork, _ files: ClusterFiles) throws {
        _ = try Daemon.start("proxy-\(node)", files, [
            Executable.path, "proxy", "--node", node, "--cluster", network.plan.cluster, "--kubeconfig", files.nodeKubeconfig(node),
        ], namespace: NetworkNamespace(network.plan.namespace(node)))
    }

    func waitForReadyNodes(_ names: [String], _ files: ClusterFiles) async throws {
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: files.kubeconfig))
        let nodes = APIResources.all.first { $0.resource == "nodes" }!
        let deadline = ContinuousClock.now + .seconds(timeout)
        var ready: Set<String> = []
        while ContinuousClock.now < deadline {
            if let list = try? await client.list(nodes) {
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

/// Background processes of a cluster: started detached (own session, stdout/stderr to a log),
/// recorded by pid file, stopped by that pid only.
enum Daemon {
    static func start(_ name: String, _ files: ClusterFiles, _ argv: [String], namespace: NetworkNamespace?) throws -> pid_t {
        let log = try FileDescriptor(opening: files.log(name), flags: O_WRONLY | O_CREAT | O_APPEND)
        let null = try FileDescriptor(opening: "/dev/null", flags: O_RDONLY)
        var options = Spawn.Options(namespace: namespace)
        options.privateMounts = false  // agents create pod namespaces: their mounts must be the host's
        options.stdin = null.raw
        options.stdout = log.raw
        options.stderr = log.raw
        options.newSession = true
        let pid = try Spawn.spawn(argv, options)
        try FileSystem.writeFile(files.pidFile(name), "\(pid)\n")
        return pid
    }

    static func pid(_ name: String, _ files: ClusterFiles) -> pid_t? {
        (try? FileSystem.readFile(files.pidFile(name))).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Whether `pid` still runs kemu (a recycled pid belongs to someone else: never signal it).
    static func isKemu(_ pid: pid_t) -> Bool {
        guard let cmdline = try? FileSystem.readFile("/proc/\(pid)/cmdline") else { return false }
        return cmdline.split(separator: "\0").first.map { $0.hasSuffix("/kemu") || $0 == "kemu" } ?? false
    }

    static func waitFor(file: String, pid: pid_t, name: String, files: ClusterFiles, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !FileSystem.exists(file) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw KemuError(.invalidState, "kemu \(name) exited:\n" + tail(files.log(name)))
            }
            guard Date() < deadline else { throw KemuError(.timeout, "kemu \(name) did not start within \(Int(seconds)) s (log \(files.log(name)))") }
            usleep(5000)
        }
    }

    static func tail(_ path: String, lines: Int = 15) -> String {
        ((try? FileSystem.readFile(path)) ?? "").split(separator: "\n").suffix(lines).map { "  " + $0 }.joined(separator: "\n")
    }
}
