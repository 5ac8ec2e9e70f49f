import ArgumentParser
import KemuCluster

/// `kemu node add | remove`: a running cluster's nodes, as a node pool grows and shrinks.
struct NodeAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a node to a running cluster: its namespace, agent and proxy; returns once it is Ready.")
    // `--cluster` is the parent's (`kemu node --cluster C add N` and `kemu node add N --cluster C` alike).
    @ParentCommand var node: Node
    @Argument(help: "Node name (a DNS label of at most 15 characters).") var name: String

    func run() async throws {
        let added = try await ClusterLauncher.addNode(cluster: try ClusterOptions.clusterName(cluster: node.cluster, file: nil), name: name)
        print("node \(name) is Ready: \(added.ip), pods \(added.pods)")
    }
}

struct NodeRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove a node from a running cluster: its pods, its Node, its daemons and its namespace.",
        aliases: ["del"])
    @ParentCommand var node: Node
    @Argument(help: "Node name.") var name: String

    func run() async throws {
        try await ClusterLauncher.removeNode(cluster: try ClusterOptions.clusterName(cluster: node.cluster, file: nil), name: name)
        print("node \(name) removed")
    }
}
