import ArgumentParser

/// The `kemu` command: argument parsing only; every command is a thin call into a library
/// (KemuCluster for clusters and their daemons, KemuLab for the failover lab, KemuNetwork for
/// `kemu net`).
@main
struct Kemu: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kemu",
        abstract: "A Kubernetes networking emulator on one Linux machine.",
        subcommands: [Up.self, Down.self, Use.self, Status.self, Exec.self, Curl.self, Logs.self, Kill.self, Stop.self, Start.self, Partition.self, Heal.self,
                      FaultCommand.self, PolicyCommand.self, MeshCommand.self, UserCommand.self, ExperimentCommand.self, Net.self, LoadGen.self, Server.self, Node.self, Proxy.self, LoadBalancer.self, Echo.self, Relay.self, Supervise.self]
    )
}

struct Net: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The cluster network alone: fabric, hosts, nodes and pod sandboxes as namespaces.",
        subcommands: [NetUp.self, NetDown.self, NetStatus.self, NetPod.self, NetNode.self, NetExec.self]
    )
}
