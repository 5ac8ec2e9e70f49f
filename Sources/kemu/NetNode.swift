import ArgumentParser
import KemuNetwork

struct NetNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Add or remove one node of a running cluster.", subcommands: [Add.self, Del.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a node; other nodes only gain a route to its pods.")
        @OptionGroup var options: ClusterOptions
        @Argument(help: "Node name (at most 15 characters).") var name: String

        func run() throws {
            let network = try options.runningNetwork(for: "kemu net node add")
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
            let network = try options.runningNetwork(for: "kemu net node del")
            try network.removeNode(name)
            print("node \(name) removed")
        }
    }
}
