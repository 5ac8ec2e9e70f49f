import Foundation
import KemuAPI
import KemuClient
import KemuNetwork
import KemuPKI
import KemuSystem

/// Nodes joining and leaving a running cluster (`kemu node add | remove`), as a cloud's node
/// pool grows and shrinks: the new node's namespace and routes (every other host gains one
/// route, to its pods), its credentials, agent and proxy under the supervisor; Ready before the
/// command returns, so DaemonSets place their pods on it at once. Removal is the reverse, its
/// pods and Node deleted from the API as `kubectl delete node` and the pod GC would.
extension ClusterLauncher {
    public static func addNode(cluster: String, name: String, timeout: Double = 30) async throws -> (ip: String, pods: String) {
        let running = try RunningCluster(name: cluster, for: "kemu node add")
        let files = running.files
        let network = try ClusterNetwork.load(cluster: cluster)
        if network.nodes.contains(where: { $0.name == name }) {
            throw KemuError(.exists, "node \(name) is already in cluster \(cluster) (nodes: \(network.nodes.map(\.name).joined(separator: ", ")))")
        }
        try MachineBudget.current.check(nodes: network.nodes.count + 1)
        try network.addNode(name)  // checks the name as cluster.yaml's are checked
        do {
            let pki = try ClusterPKI.loadOrCreate(directory: "\(files.dataDir)/pki", clusterName: cluster)
            try writeKubeconfig(files.nodeKubeconfig(name), user: "system:node:\(name)", groups: ["system:nodes"], network, pki)
            try startNodeDaemons(name, network, files)
            try await waitForReadyNodes([name], files, timeout: timeout)
        } catch {
            await forget(name, network: network, running: running)
            throw error
        }
        let index = network.nodes.first { $0.name == name }?.index ?? 0
        return (network.plan.nodeIP(index).description, network.plan.podCIDR(index).description)
    }

    public static func removeNode(cluster: String, name: String) async throws {
        let running = try RunningCluster(name: cluster, for: "kemu node remove")
        let network = try ClusterNetwork.load(cluster: cluster)
        guard network.nodes.contains(where: { $0.name == name }) else {
            throw KemuError(.notFound, "node \(name) is not in cluster \(cluster) (nodes: \(network.nodes.map(\.name).joined(separator: ", ")))")
        }
        guard network.nodes.count > 1 else { throw KemuError(.invalidArgument, "node \(name) is the cluster's last node; remove the cluster with: kemu down") }
        await forget(name, network: network, running: running)
    }

    /// Everything of a node: its daemons, its pods and Node object, its control groups, its
    /// namespace and routes, its credentials. Best effort, each part whatever the others did.
    static func forget(_ name: String, network: ClusterNetwork, running: RunningCluster) async {
        let files = running.files
        Daemon.stop("node-\(name)", files)
        Daemon.stop("proxy-\(name)", files)
        if let pods = try? await running.client.list(APIResources.pods, fields: "spec.nodeName=\(name)") {
            for pod in pods.items {
                _ = try? await running.client.delete(APIResources.pods, namespace: pod.namespace, name: pod.name, gracePeriodSeconds: 0)
            }
        }
        _ = try? await running.client.delete(APIResources.nodes, name: name)
        CgroupTree.removeRecorded(file: "\(files.state)/cgroups/\(name)")
        try? network.removeNode(name)
        try? FileSystem.removeFile(files.nodeKubeconfig(name))
    }
}
