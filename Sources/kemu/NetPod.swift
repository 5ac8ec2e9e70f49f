import ArgumentParser
import KemuNetwork

struct NetPod: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pod", abstract: "Add or remove a pod sandbox.", subcommands: [Add.self, Del.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a pod sandbox on a node.")

        @OptionGroup var options: ClusterOptions
        @Option(help: "The node to put the pod on.") var node: String
        @Option(help: "Kubernetes namespace, for the DNS search path.") var namespace = "default"
        @Argument(help: "Pod name (a DNS label).") var name: String

        func run() throws {
            try requireRoot("kemu net pod add")
            let network = try ClusterNetwork.load(cluster: try options.clusterName())
            let pod = try network.addPod(name, node: node, kubernetesNamespace: namespace)
            print("pod \(pod.name) on \(pod.node): \(pod.ip) via \(pod.gateway) (netns \(pod.namespace))")
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a pod sandbox and whatever runs in it.")

        @OptionGroup var options: ClusterOptions
        @Argument(help: "Pod name.") var name: String

        func run() throws {
            try requireRoot("kemu net pod del")
            let network = try ClusterNetwork.load(cluster: try options.clusterName())
            try network.removePod(name, killProcesses: true)
            print("pod \(name) removed")
        }
    }
}

struct NetNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Add or remove one node of a running cluster.", subcommands: [Add.self, Del.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a node; other nodes only gain a route to its pods.")
        @OptionGroup var options: ClusterOptions
        @Argument(help: "Node name (at most 15 characters).") var name: String

        func run() throws {
            try requireRoot("kemu net node add")
            let network = try ClusterNetwork.load(cluster: try options.clusterName())
            try network.addNode(name)
            let index = network.nodes.first { $0.name == name }!.index
            print("node \(name): \(network.plan.nodeIP(index)), pods \(network.plan.podCIDR(index))")
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node and its pod sandboxes.")
        @OptionGroup var options: ClusterOptions
        @Argument(help: "Node name.") var name: String

        func run() throws {
            try requireRoot("kemu net node del")
            let network = try ClusterNetwork.load(cluster: try options.clusterName())
            try network.removeNode(name)
            print("node \(name) removed")
        }
    }
}
