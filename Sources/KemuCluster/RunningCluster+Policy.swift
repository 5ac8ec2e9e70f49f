import KemuAPI
import KemuIP
import KemuNetwork
import KemuPolicy
import KemuSystem

extension RunningCluster {
    /// The NetworkPolicy model the nodes enforce, built from the API as each node builds it.
    public func policyModel() async throws -> PolicyModel {
        guard let resource = APIResources.find(group: "networking.k8s.io", version: "v1", resource: "networkpolicies") else {
            throw KemuError(.invalidState, "this kemu has no NetworkPolicy resource")
        }
        let policies = try await client.list(resource).items.map(PolicySpec.init)
        let pods = try await client.list(APIResources.pods).items.compactMap(PolicyPod.init)
        let namespaces = Dictionary(try await client.list(APIResources.namespaces).items.map { ($0.name, $0.labels) }, uniquingKeysWith: { a, _ in a })
        return PolicyModel(policies: policies, pods: pods, namespaces: namespaces)
    }

    /// An end of a trace: an address, a pod (`NAMESPACE/NAME`, or `NAME` in `namespace`), or
    /// a host of the cluster (client, lb, cp, a node) where no pod has that name.
    public func traceEnd(_ text: String, namespace: String, model: PolicyModel) async throws -> PolicyTrace.End {
        if let ip = IPv4Address(text) {
            return PolicyTrace.End(ip: ip, label: model.pods[ip]?.id ?? "")
        }
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        let (podNamespace, podName) = parts.count == 2 ? (parts[0], parts[1]) : (namespace, text)
        do {
            let pod = try await self.pod(podName, namespace: podNamespace)
            guard let ip = pod[path: "status.podIP"]?.string.flatMap(IPv4Address.init) else {
                throw KemuError(.invalidState, "pod \(podNamespace)/\(podName) has no address yet")
            }
            return PolicyTrace.End(ip: ip, label: "\(podNamespace)/\(podName)")
        } catch let error as KemuError where error.code == .notFound && parts.count == 1 {
            let hosts = ["client": plan.clientIP, "lb": plan.loadBalancerIP, "cp": plan.controlPlaneIP]
            if let ip = hosts[text] { return PolicyTrace.End(ip: ip, label: text) }
            let network = try ClusterNetwork.load(cluster: name)
            if let node = network.nodes.first(where: { $0.name == text }) { return PolicyTrace.End(ip: plan.nodeIP(node.index), label: text) }
            throw KemuError(.notFound, "\(text): not an address, a pod in \(podNamespace) or a host (client, lb, cp, a node)")
        }
    }
}
