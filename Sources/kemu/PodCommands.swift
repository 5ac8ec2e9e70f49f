import ArgumentParser
import Foundation
import KemuCluster
import KemuSystem

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command inside a pod's container (as kubectl exec: its namespaces and user), or as root on a host.",
        discussion: "TARGET: a pod name, or cp, client, lb, a node name.  Example: kemu exec echo-1 -- ip addr")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Option(help: "The pod's container (default: its first).") var container: String?
    @Argument(help: "Pod or host.") var target: String
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func run() async throws {
        guard !command.isEmpty else { throw ValidationError("no command: kemu exec \(target) -- COMMAND …") }
        let cluster = try options.running(for: "kemu exec")
        try execute(command, try await cluster.execOptions(of: target, container: container, kubernetesNamespace: namespace))
    }
}

struct Curl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "curl a URL from inside the cluster: from a pod, a node, or the client host (default).",
        discussion: "Example: kemu curl --from echo-1 http://10.244.2.2:8080/")

    @OptionGroup var options: ClusterOptions
    @Option(help: "Pod or host to curl from.") var from = "client"
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Argument(help: "URL.") var url: String
    @Argument(parsing: .postTerminator, help: "More curl arguments, after --.") var curlArguments: [String] = []

    func run() async throws {
        let cluster = try options.running(for: "kemu curl")
        let where_ = try await cluster.namespace(of: from, kubernetesNamespace: namespace)
        try execute(["curl", "-sS", "--max-time", "10"] + curlArguments + [url], in: where_)
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a pod's container log (what its process wrote), or with --drops what NetworkPolicy denied.")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Option(name: .shortAndLong, help: "Container (default: the pod's first).") var container: String?
    @Flag(help: "Keep printing what is written.") var follow = false
    @Flag(help: "Every node's denied packets, each with the policies that denied it (up to 100 a second per node and hook).")
    var drops = false
    @Argument(help: "Pod.") var pod: String?

    func run() async throws {
        let cluster = try options.running(for: "kemu logs")
        if drops { return try await printDrops(cluster) }
        guard let pod else { throw ValidationError("name the pod whose log to print, or give --drops") }
        let object = try await cluster.pod(pod, namespace: namespace)
        let names = (object[path: "spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
        let name = container ?? names.first ?? ""
        guard names.contains(name) else {
            throw KemuError(.notFound, "container \(name) is not in pod \(namespace)/\(pod) (containers: \(names.joined(separator: ", ")))")
        }
        let path = cluster.logPath(pod: object, container: name)
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KemuError(.notFound, "pod \(namespace)/\(pod) has no log for \(name) yet (not started on its node)")
        }
        FileHandle.standardOutput.write(handle.readDataToEndOfFile())
        while follow {
            try await Task.sleep(for: .milliseconds(200))
            FileHandle.standardOutput.write(handle.readDataToEndOfFile())
        }
    }

    /// The nodes' drop logs merged in time order (each line starts with its time); with
    /// --follow, what they add as it comes.
    func printDrops(_ cluster: RunningCluster) async throws {
        var handles: [String: FileHandle] = [:]
        repeat {
            for path in cluster.files.dropLogs where handles[path] == nil { handles[path] = FileHandle(forReadingAtPath: path) }
            let lines = handles.values.flatMap { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n") }.sorted()
            if !lines.isEmpty { print(lines.joined(separator: "\n")) }
            if follow { try await Task.sleep(for: .milliseconds(200)) }
        } while follow
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Nodes, pods and services of a running cluster at a glance.")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        print(try await ClusterSummary.render(try options.running(for: "kemu status")))
    }
}
