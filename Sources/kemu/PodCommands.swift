import ArgumentParser
import Foundation
import Glibc
import KemuAgent
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// What the commands about a running cluster share: its files and an admin client.
struct RunningCluster {
    let files: ClusterFiles
    let plan: AddressPlan
    let client: APIClient
    let pods = APIResources.all.first { $0.resource == "pods" }!

    init(_ options: ClusterOptions, for command: String) throws {
        try requireRoot(command)
        let name = try options.clusterName()
        files = ClusterFiles(cluster: name)
        guard FileSystem.exists(files.kubeconfig) else {
            throw KemuError(.notFound, "cluster \(name) is not up (no \(files.kubeconfig)); start it with: kemu up --cluster \(name)")
        }
        plan = try ClusterNetwork.load(cluster: name).plan
        client = try APIClient(kubeconfig: Kubeconfig.load(path: files.kubeconfig))
    }

    func pod(_ name: String, namespace: String) async throws -> JSON {
        do {
            return try await client.get(pods, namespace: namespace, name: name)
        } catch let error as ClientError where error.code == 404 {
            throw KemuError(.notFound, "pod \(namespace)/\(name) does not exist")
        }
    }

    /// The network namespace of a pod, a cluster host (cp, client, lb, a node) or a full name.
    func namespace(of target: String, kubernetesNamespace: String) async throws -> NetworkNamespace {
        if NetworkNamespace(plan.namespace(target)).exists { return NetworkNamespace(plan.namespace(target)) }
        if NetworkNamespace(target).exists { return NetworkNamespace(target) }
        let pod = try await pod(target, namespace: kubernetesNamespace)
        let namespace = NetworkNamespace(plan.podNamespace(PodWorker.sandboxName(pod)))
        guard namespace.exists else {
            throw KemuError(.notFound, "pod \(kubernetesNamespace)/\(target) has no sandbox yet (phase \(pod[path: "status.phase"]?.string ?? "unknown"))")
        }
        return namespace
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command inside a pod's (or a host's) network namespace.",
        discussion: "TARGET: a pod name, or cp, client, lb, a node name.  Example: kemu exec echo-1 -- ip addr")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Argument(help: "Pod or host.") var target: String
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func run() async throws {
        guard !command.isEmpty else { throw ValidationError("no command: kemu exec \(target) -- COMMAND …") }
        let cluster = try RunningCluster(options, for: "kemu exec")
        try execute(command, in: try await cluster.namespace(of: target, kubernetesNamespace: namespace))
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
        let cluster = try RunningCluster(options, for: "kemu curl")
        let where_ = try await cluster.namespace(of: from, kubernetesNamespace: namespace)
        try execute(["curl", "-sS", "--max-time", "10"] + curlArguments + [url], in: where_)
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a pod's container log (what its process wrote).")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The pod's Kubernetes namespace.") var namespace = "default"
    @Option(name: .shortAndLong, help: "Container (default: the pod's first).") var container: String?
    @Flag(help: "Keep printing what is written.") var follow = false
    @Argument(help: "Pod.") var pod: String

    func run() async throws {
        let cluster = try RunningCluster(options, for: "kemu logs")
        let object = try await cluster.pod(pod, namespace: namespace)
        let names = (object[path: "spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
        let name = container ?? names.first ?? ""
        guard names.contains(name) else {
            throw KemuError(.notFound, "container \(name) is not in pod \(namespace)/\(pod) (containers: \(names.joined(separator: ", ")))")
        }
        let path = PodWorker.logDirectory("\(cluster.files.state)/logs", object) + "/\(name).log"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KemuError(.notFound, "pod \(namespace)/\(pod) has no log for \(name) yet (not started on its node)")
        }
        FileHandle.standardOutput.write(handle.readDataToEndOfFile())
        while follow {
            try await Task.sleep(for: .milliseconds(200))
            FileHandle.standardOutput.write(handle.readDataToEndOfFile())
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Nodes, pods and services of a running cluster at a glance.")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        let cluster = try RunningCluster(options, for: "kemu status")
        let resource = { (name: String) in APIResources.all.first { $0.resource == name }! }
        let nodes = try await cluster.client.list(resource("nodes")).items
        let pods = try await cluster.client.list(resource("pods")).items
        let services = try await cluster.client.list(resource("services")).items
        print(Self.table(["NODE", "STATUS", "ADDRESS", "PODS"], nodes.map { node in
            let ready = Up.isReady(node) ? "Ready" : "NotReady"
            let address = (node[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string ?? ""
            return [node.name, ready, address, String(pods.filter { $0[path: "spec.nodeName"]?.string == node.name }.count)]
        }))
        print(Self.table(["NAMESPACE", "POD", "PHASE", "READY", "RESTARTS", "IP", "NODE"], pods.map { pod in
            let statuses = pod[path: "status.containerStatuses"]?.array ?? []
            let ready = statuses.filter { $0["ready"]?.bool == true }.count
            let restarts = statuses.reduce(Int64(0)) { $0 + ($1["restartCount"]?.int ?? 0) }
            return [pod.namespace, pod.name, pod[path: "status.phase"]?.string ?? "Pending", "\(ready)/\(pod[path: "spec.containers"]?.array?.count ?? 0)",
                    String(restarts), pod[path: "status.podIP"]?.string ?? "", pod[path: "spec.nodeName"]?.string ?? ""]
        }))
        print(Self.table(["NAMESPACE", "SERVICE", "TYPE", "CLUSTER-IP", "PORTS"], services.map { svc in
            let ports = (svc[path: "spec.ports"]?.array ?? []).map { p in
                "\(p["port"]?.int ?? 0)" + (p["nodePort"]?.int.map { ":\($0)" } ?? "") + "/\(p["protocol"]?.string ?? "TCP")"
            }.joined(separator: ",")
            return [svc.namespace, svc.name, svc[path: "spec.type"]?.string ?? "ClusterIP", svc[path: "spec.clusterIP"]?.string ?? "", ports]
        }))
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "   ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }
}
