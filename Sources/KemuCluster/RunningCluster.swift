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
        let namespace = try await namespace(of: target, kubernetesNamespace: kubernetesNamespace)
        if namespace.name == plan.namespace(target) || namespace.name == target { return Spawn.Options(namespace: namespace) }
        let pod = try await pod(target, namespace: kubernetesNamespace)
        guard let pid = PodNames.containerProcess(pod, container: container),
              let options = Spawn.Options.inContainer(pid: pid, sandbox: namespace) else {
            let name = container ?? pod[path: "spec.containers"]?.array?.first?["name"]?.string ?? ""
            throw KemuError(.invalidState, "container \(name) is not running in pod \(kubernetesNamespace)/\(target)")
        }
        return options
    }

    /// The path of a container's log, as its node agent writes it.
    public func logPath(pod: JSON, container: String) -> String {
        PodWorker.logDirectory("\(files.state)/logs", pod) + "/\(container).log"
    }
}
