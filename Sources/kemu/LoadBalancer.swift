import ArgumentParser
import KemuCluster

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
        try await NodeDaemons.runLoadBalancer(cluster: cluster, kubeconfig: kubeconfig, settings: options.settings)
    }
}
