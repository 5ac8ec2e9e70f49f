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
            let network = try options.runningNetwork(for: "kemu net pod add")
            let pod = try network.addPod(name, node: node, kubernetesNamespace: namespace)
            print("pod \(pod.name) on \(pod.node): \(pod.ip) via \(pod.gateway) (netns \(pod.namespace))")
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a pod sandbox and whatever runs in it.")

        @OptionGroup var options: ClusterOptions
        @Argument(help: "Pod name.") var name: String

        func run() throws {
            let network = try options.runningNetwork(for: "kemu net pod del")
            try network.removePod(name, killProcesses: true)
            print("pod \(name) removed")
        }
    }
}
