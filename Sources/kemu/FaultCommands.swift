import ArgumentParser
import KemuAPI
import KemuCluster
import KemuLab
import KemuSystem

struct FaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault", abstract: "Inject faults into a Service's connections (kemu.dev/v1 Faults, also kubectl apply-able).",
        subcommands: [FaultAdd.self, FaultDelete.self, FaultList.self])
}

struct FaultAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a Fault: latency, aborts, hangs or a bandwidth limit on a Service.",
        discussion: """
        Latency, aborts and hangs are applied by every node's proxy to new connections (latency delays the dial to the \
        endpoint); bandwidth is a tbf limit on each endpoint pod's link, both ways.
        Example: kemu fault add flaky --service web --abort 30 --latency 100 --jitter 20 --source client
        """)

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The Service's Kubernetes namespace.") var namespace = "default"
    @Option(help: "The Service.") var service: String
    @Option(help: "Only connections from here: a CIDR, an address, a pod, or a host (client, lb, a node). Repeatable.")
    var source: [String] = []
    @Option(help: "Milliseconds added before each connection reaches its endpoint.") var latency = 0
    @Option(help: "Milliseconds of jitter around --latency (uniform).") var jitter = 0
    @Option(help: "Percent of connections reset at once.") var abort = 0.0
    @Option(help: "Percent of connections accepted and never answered.") var hang = 0.0
    @Option(help: "Each endpoint pod's link limited to this rate (tc units: 1mbit, 500kbit, 100kbps).") var bandwidth: String?
    @Argument(help: "The Fault's name.") var name: String

    func run() async throws {
        var rate: UInt64?
        if let bandwidth {
            guard let parsed = Fault.parseRate(bandwidth) else { throw ValidationError("--bandwidth \(bandwidth): not a rate such as 1mbit, 500kbit or 100kbps") }
            rate = parsed
        }
        let chaos = try options.chaos(for: "kemu fault add")
        var sources: [String] = []
        for s in source { sources.append(try await chaos.sourceRange(s, namespace: namespace)) }
        let fault = Fault(namespace: namespace, name: name, service: service, sources: sources, latencyMilliseconds: latency,
                          jitterMilliseconds: jitter, abortPercent: abort, hangPercent: hang, bytesPerSecond: rate)
        try await chaos.injectFault(fault)
        print("fault \(namespace)/\(name) on service \(service): \(fault.summary)\(sources.isEmpty ? "" : " from \(sources.joined(separator: ", "))"); remove with: kemu fault delete \(name)")
    }
}

struct FaultDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Remove Faults (the proxies stop applying them at once).")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The Faults' Kubernetes namespace.") var namespace = "default"
    @Flag(help: "Every Fault in the namespace.") var all = false
    @Argument(help: "Fault names.") var names: [String] = []

    func run() async throws {
        guard all != !names.isEmpty else { throw ValidationError("name the Faults to delete, or give --all") }
        let chaos = try options.chaos(for: "kemu fault delete")
        let targets = all ? try await chaos.cluster.client.list(APIResources.faults, namespace: namespace).items.map(\.name) : names
        for name in targets {
            try await chaos.removeFault(name, namespace: namespace)
            print("fault \(namespace)/\(name) deleted")
        }
    }
}

struct FaultList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The Faults in force (as kubectl get faults -A).")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        let cluster = try options.running(for: "kemu fault list")
        let faults = try await cluster.client.list(APIResources.faults).items.map(Fault.init)
        print(TextTable.render(["NAMESPACE", "FAULT", "SERVICE", "FAULTS", "SOURCES"], faults.map {
            [$0.namespace, $0.name, $0.service, $0.summary, $0.sources.isEmpty ? "<all>" : $0.sources.joined(separator: ",")]
        }), terminator: "")
    }
}
