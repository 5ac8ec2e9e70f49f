import ArgumentParser
import KemuCluster
import KemuProxy

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
        try await NodeDaemons.runProxy(cluster: cluster, node: node, kubeconfig: kubeconfig, settings: options.settings)
    }
}

/// The proxy's settings on the command line of `kemu node`, `kemu proxy` and `kemu lb`.
struct ProxyOptions: ParsableArguments {
    @Option(help: "Default load-balancing algorithm: \(BalancingAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")) (a Service's kemu.io/load-balancer annotation overrides it).")
    var algorithm: BalancingAlgorithm = .roundRobin
    @Option(help: "Endpoints tried per connection before the client is reset.") var connectAttempts = 4
    @Option(help: "Seconds without a byte either way before a connection is closed (0: never).") var idleTimeout = 3600.0
    @Flag(help: "Log a line per proxied connection as it ends.") var accessLog = false

    var settings: ProxySettings {
        var s = ProxySettings()
        s.algorithm = algorithm
        s.connectAttempts = connectAttempts
        s.idleTimeout = idleTimeout
        s.accessLog = accessLog
        return s
    }
}

extension BalancingAlgorithm: ExpressibleByArgument {}
