import ArgumentParser
import Glibc
import KemuCluster
import KemuLab
import KemuSystem

// The chaos verbs: `kemu kill pod`, `kemu stop|start node`, `kemu partition|heal node`,
// `kemu stop|start proxy`. Each is a thin shell over `Chaos`, which experiments use too.

struct Kill: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Kill things in a running cluster (recorded as Events).",
                                                    subcommands: [KillPod.self])
}

struct KillPod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pod", abstract: "Send a signal (default KILL) to a pod's container processes, as a crash would.",
        discussion: "Its kubelet (kemu's agent) sees the exit and acts on the pod's restartPolicy.  Example: kemu kill pod web-1 --signal TERM")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Option(name: .shortAndLong, help: "Only this container.") var container: String?
    @Option(name: .shortAndLong, help: "KILL, TERM, STOP, CONT, … or a number.") var signal = "KILL"
    @Argument(help: "Pod.") var pod: String

    func run() async throws {
        let number = try Chaos.parseSignal(signal)
        let chaos = try options.chaos(for: "kemu kill pod")
        for line in try await chaos.killPod(pod, namespace: namespace, signal: number, container: container).lines {
            print("\(Chaos.signalName(number)) → pod \(namespace)/\(pod) \(line)")
        }
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a node, a node's proxy or the API server (undo with kemu start).",
                                                    subcommands: [StopNode.self, StopProxy.self, StopServer.self, StopMeshCA.self])
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start again a node, a proxy or the API server that kemu stop stopped.",
                                                    subcommands: [StartNode.self, StartProxy.self, StartServer.self, StartMeshCA.self])
}

extension Chaos.StopMode: ExpressibleByArgument {}

struct StopNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Stop a node as a machine fails: its link goes down, its agent, proxy and pods die or freeze.",
        discussion: """
        --mode crash (default): processes killed, as a power loss; kemu start node boots it (containers restart).
        --mode freeze: processes stopped with SIGSTOP, as a hung machine; kemu start node resumes them.
        Either way the control plane sees the node's heartbeats stop: NotReady after the grace period, its pods evicted later.
        """)

    @OptionGroup var options: ClusterOptions
    @Option(help: "crash or freeze.") var mode: Chaos.StopMode = .crash
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu stop node").stopNode(node, mode: mode)
        print("node \(node) stopped (\(mode.rawValue)); undo with: kemu start node \(node)")
    }
}

struct StartNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Start a node kemu stop node stopped.")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu start node").startNode(node)
        print("node \(node) started")
    }
}

struct StopProxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy", abstract: "Stop a node's Service proxy alone (its pods keep running).")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "TERM (default: listeners close, connections under way get 2 s to finish), KILL (all at once), STOP (hangs, accepting nothing), …") var signal = "TERM"
    @Argument(help: "Node.") var node: String

    func run() async throws {
        let number = try Chaos.parseSignal(signal)
        try await options.chaos(for: "kemu stop proxy").stopProxy(node, signal: number)
        print("proxy of \(node) stopped (\(Chaos.signalName(number))); undo with: kemu start proxy \(node)")
    }
}

struct StartProxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "proxy", abstract: "Start a node's Service proxy again.")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu start proxy").startProxy(node)
        print("proxy of \(node) started")
    }
}

struct StopServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server", abstract: "Stop the API server (and its controllers): a control-plane outage.",
        discussion: """
        Node agents and proxies keep running and forwarding to what they last knew; kemu kill pod still works. \
        When it starts again, agents post status within a second or two and resume their watches from their last revision.
        """)

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "TERM (default: a graceful stop), KILL (a crash), …") var signal = "TERM"

    func run() async throws {
        let number = try Chaos.parseSignal(signal)
        try await options.chaos(for: "kemu stop server").stopServer(signal: number)
        print("API server stopped (\(Chaos.signalName(number))); undo with: kemu start server")
    }
}

struct StartServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server", abstract: "Start the API server again.")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        try await options.chaos(for: "kemu start server").startServer()
        print("API server started")
    }
}

struct Partition: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cut a node off the network (undo with kemu heal).",
                                                    subcommands: [PartitionNode.self])
}

struct Heal: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Undo kemu partition.", subcommands: [HealNode.self])
}

struct PartitionNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Take a node's fabric link down: its processes run on, but nothing reaches it or leaves it.")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu partition node").partition(node)
        print("node \(node) partitioned; undo with: kemu heal node \(node)")
    }
}

struct HealNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Bring a partitioned node's fabric link up again.")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu heal node").heal(node)
        print("node \(node) healed")
    }
}
