import ArgumentParser
import KemuCluster
import KemuPolicy

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "NetworkPolicy: explain what the nodes do with a connection.",
        subcommands: [PolicyTraceCommand.self])
}

struct PolicyTraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace", abstract: "Say whether NetworkPolicy allows a connection, and which policy and rule decided.",
        discussion: """
        FROM and TO are pods (NAME in --namespace, or NAMESPACE/NAME), cluster hosts (client, lb, cp, a node) or \
        addresses; TO ends with :PORT, optionally /TCP, /UDP or /SCTP (default TCP). The answer comes from the same \
        compiled rules every node applies: the source pod's egress, then the destination pod's ingress.
        Example: kemu policy trace x/a y/b:80/TCP
        """)

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The Kubernetes namespace of pods named without one.") var namespace = "default"
    @Argument(help: "Where the connection comes from.") var from: String
    @Argument(help: "Where it goes: TARGET:PORT[/PROTOCOL]; several are traced from one view of the cluster.") var to: [String]

    func run() async throws {
        let destinations = try to.map(Self.parseDestination)
        guard !destinations.isEmpty else { throw ValidationError("give where the connection goes: TARGET:PORT[/PROTOCOL]") }
        let cluster = try options.running(for: "kemu policy trace")
        let model = try await cluster.policyModel()
        let source = try await cluster.traceEnd(from, namespace: namespace, model: model)
        for (target, port, transport) in destinations {
            let destination = try await cluster.traceEnd(target, namespace: namespace, model: model)
            print(PolicyTrace(model: model, from: source, to: destination, port: port, transport: transport).text, terminator: "")
        }
    }

    /// `y/b:80/UDP` → ("y/b", 80, "UDP").
    static func parseDestination(_ text: String) throws -> (String, UInt16, String) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("TO \(text): give a port, as TARGET:PORT[/PROTOCOL] (y/b:80/TCP)") }
        let portParts = parts[1].split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard portParts.count <= 2, let port = UInt16(portParts[0]), port > 0 else {
            throw ValidationError("TO \(text): the port must be a number from 1 to 65535")
        }
        let transport = portParts.count == 2 ? portParts[1].uppercased() : "TCP"
        guard ["TCP", "UDP", "SCTP"].contains(transport) else { throw ValidationError("TO \(text): the protocol must be TCP, UDP or SCTP") }
        return (parts[0], port, transport)
    }
}
