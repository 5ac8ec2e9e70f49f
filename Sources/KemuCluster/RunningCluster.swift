import Glibc
import KemuAgent
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// What the commands about a running cluster share: its files, its address plan and an admin client.
public struct RunningCluster: Sendable {
    public let name: String
    public let files: ClusterFiles
    public let plan: AddressPlan
    public let client: APIClient

    /// The cluster `name`, which must be up; `command` names what needs it, for the error.
    public init(name: String, for command: String) throws {
        try requireRoot(command)
        self.name = name
        files = ClusterFiles(cluster: name)
        guard FileSystem.exists(files.kubeconfig) else {
            throw KemuError(.notFound, "cluster \(name) is not up (no \(files.kubeconfig)); start it with: kemu up --cluster \(name)")
        }
        plan = try ClusterNetwork.load(cluster: name).plan
        client = try APIClient(kubeconfig: Kubeconfig.load(path: files.kubeconfig))
    }

    public func pod(_ name: String, namespace: String) async throws -> JSON {
        do {
            return try await client.get(APIResources.pods, namespace: namespace, name: name)
        } catch let error as ClientError where error.code == 404 {
            throw KemuError(.notFound, "pod \(namespace)/\(name) does not exist")
        }
    }

    /// The network namespace of a pod, a cluster host (cp, client, lb, a node) or a full name.
    public func namespace(of target: String, kubernetesNamespace: String) async throws -> NetworkNamespace {
        if NetworkNamespace(plan.namespace(target)).exists { return NetworkNamespace(plan.namespace(target)) }
        if NetworkNamespace(target).exists { return NetworkNamespace(target) }
        let pod = try await pod(target, namespace: kubernetesNamespace)
        let namespace = NetworkNamespace(plan.podNamespace(PodWorker.sandboxName(pod)))
        guard namespace.exists else {
            throw KemuError(.notFound, "pod \(kubernetesNamespace)/\(target) has no sandbox yet (phase \(pod[path: "status.phase"]?.string ?? "unknown"))")
        }
        return namespace
    }

    /// How `kemu exec TARGET` runs a command: on a host (cp, client, lb, a node) as root in its
    /// namespace; in a pod inside its container (`container`, or the first), as `kubectl exec`
    /// does: the container's namespaces, user and environment.
    public func execOptions(of target: String, container: String?, kubernetesNamespace: String) async throws -> Spawn.Options {
        for host in [plan.namespace(target), target] where NetworkNamespace(host).exists { return Spawn.Options(namespace: NetworkNamespace(host)) }
        // The container as its node agent recorded it: no API round trip, and it works while the
        // API server is down, as `kemu kill pod` does.
        if let (pid, sandbox) = localContainer(target, namespace: kubernetesNamespace, container: container),
           let options = Spawn.Options.inContainer(pid: pid, sandbox: sandbox) {
            return options
        }
        let pod = try await pod(target, namespace: kubernetesNamespace)
        let sandbox = NetworkNamespace(plan.podNamespace(PodWorker.sandboxName(pod)))
        guard let pid = PodNames.containerProcess(pod, container: container),
              let options = Spawn.Options.inContainer(pid: pid, sandbox: sandbox) else {
            let name = container ?? pod[path: "spec.containers"]?.array?.first?["name"]?.string ?? ""
            throw KemuError(.invalidState, "container \(name) is not running in pod \(kubernetesNamespace)/\(target)")
        }
        return options
    }

    /// A running container's process and its pod's network namespace, from the agent's
    /// `logs/NS_NAME_UID/runtime.json` (the named container, else the first recorded); nil when no
    /// record names a live one.
    func localContainer(_ name: String, namespace: String, container: String?) -> (pid_t, NetworkNamespace)? {
        let base = "\(files.state)/logs"
        let prefix = "\(namespace)_\(name)_"
        for directory in FileSystem.list(base) where directory.hasPrefix(prefix) {
            guard let text = try? FileSystem.readFile("\(base)/\(directory)/runtime.json"),
                  let containers = (try? JSON.parse(Array(text.utf8)))?["containers"]?.object else { continue }
            var pod: JSON = ["apiVersion": "v1", "kind": "Pod"]
            pod.name = name
            pod["metadata", default: [:]]["uid"] = .string(String(directory.dropFirst(prefix.count)))
            let sandbox = NetworkNamespace(plan.podNamespace(PodWorker.sandboxName(pod)))
            guard let entry = container.flatMap({ containers[$0] }) ?? (container == nil ? containers.keys.first.flatMap { containers[$0] } : nil),
                  let pid = entry["pid"]?.int.flatMap({ pid_t(exactly: $0) }),
                  let start = entry["processStart"]?.string.flatMap(UInt64.init), ProcessReaper.startTime(of: pid) == start,
                  sandbox.exists else { continue }
            return (pid, sandbox)
        }
        return nil
    }

    /// The path of a container's log, as its node agent writes it.
    public func logPath(pod: JSON, container: String) -> String {
        PodWorker.logDirectory("\(files.state)/logs", pod) + "/\(container).log"
    }
}
