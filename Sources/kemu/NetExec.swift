import ArgumentParser
import Foundation
import Glibc
import KemuCluster
import KemuNetwork
import KemuSystem

struct NetExec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command inside a host or pod namespace, as `ip netns exec` does.",
        discussion: "HOST is a full namespace name, or a host of the cluster: fabric, cp, client, lb, a node name, or a pod name.\nExample: kemu net exec node-1 -- ip route")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Namespace or host.") var host: String
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func run() throws {
        try requireRoot("kemu net exec")
        guard !command.isEmpty else { throw ValidationError("no command: kemu net exec \(host) -- COMMAND …") }
        try execute(command, in: try resolve())
    }

    /// A full name as given, else the cluster's host, else the cluster's pod.
    func resolve() throws -> NetworkNamespace {
        if NetworkNamespace(host).exists { return NetworkNamespace(host) }
        let plan = AddressPlan(try options.config())
        for candidate in [plan.namespace(host), plan.podNamespace(host)] where NetworkNamespace(candidate).exists {
            return NetworkNamespace(candidate)
        }
        throw KemuError(.notFound, "no namespace \(host), \(plan.namespace(host)) or \(plan.podNamespace(host))")
    }
}

/// Runs `argv` inside `namespace` (seeing its /etc/netns files, as `ip netns exec` does) and
/// ends kemu with its status: 127 for a command that is not there, as a shell does.
func execute(_ argv: [String], in namespace: NetworkNamespace) throws {
    try execute(argv, Spawn.Options(namespace: namespace))
}

func execute(_ argv: [String], _ options: Spawn.Options) throws {
    let pid: pid_t
    do {
        pid = try Spawn.spawn(argv, options)
    } catch let error as SystemError where error.errno == ENOENT {
        FileHandle.standardError.write(Data("kemu: \(error)\n".utf8))
        throw ExitCode(127)
    }
    let status = try Spawn.wait(pid)
    if status.shellCode != 0 { throw ExitCode(status.shellCode) }
}
