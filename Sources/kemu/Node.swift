import ArgumentParser
import KemuCluster

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run the node agent (kemu's kubelet) for one node of a running cluster.",
        discussion: "`kemu up` starts one per node, inside the node's namespace, with a client certificate of its own. `kemu node add NAME` and `kemu node remove NAME` change a running cluster's nodes.",
        subcommands: [NodeAdd.self, NodeRemove.self])

    @Option(help: "The node's name, as in the cluster config.") var name: String?
    @Option(help: "Cluster name (`kemu node add|remove`: default the current cluster).") var cluster: String?
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
        // Optional only so that `kemu node add|remove` need not give it.
        guard let name else { throw ValidationError("Missing expected argument '--name <name>' (or a subcommand: add, remove)") }
        try await NodeDaemons.runAgent(cluster: cluster ?? "kemu", node: name, kubeconfig: kubeconfig, images: images,
                                       resources: (cpu, memory, maxPods), proxy: noProxy ? nil : proxyOptions.settings,
                                       dnsTTL: noDNS ? nil : dnsTTL)
    }
}
