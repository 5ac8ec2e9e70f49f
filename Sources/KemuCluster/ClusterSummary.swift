import KemuAPI

/// `kemu status`: the nodes, pods and Services of a running cluster at a glance.
public enum ClusterSummary {
    public static func render(_ cluster: RunningCluster) async throws -> String {
        let nodes = try await cluster.client.list(APIResources.nodes).items
        let pods = try await cluster.client.list(APIResources.pods).items
        let services = try await cluster.client.list(APIResources.services).items
        return render(nodes: nodes, pods: pods, services: services)
    }

    public static func render(nodes: [JSON], pods: [JSON], services: [JSON]) -> String {
        let nodeRows = nodes.map { node in
            let ready = ClusterLauncher.isReady(node) ? "Ready" : "NotReady"
            let address = (node[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string ?? ""
            return [node.name, ready, address, String(pods.filter { $0[path: "spec.nodeName"]?.string == node.name }.count)]
        }
        let podRows = pods.map { pod in
            let statuses = pod[path: "status.containerStatuses"]?.array ?? []
            let ready = statuses.filter { $0["ready"]?.bool == true }.count
            let restarts = statuses.reduce(Int64(0)) { $0 &+ ($1["restartCount"]?.int ?? 0) }
            return [pod.namespace, pod.name, pod[path: "status.phase"]?.string ?? "Pending", "\(ready)/\(pod[path: "spec.containers"]?.array?.count ?? 0)",
                    String(restarts), pod[path: "status.podIP"]?.string ?? "", pod[path: "spec.nodeName"]?.string ?? ""]
        }
        let serviceRows = services.map { svc in
            let ports = (svc[path: "spec.ports"]?.array ?? []).map { p in
                "\(p["port"]?.int ?? 0)" + (p["nodePort"]?.int.map { ":\($0)" } ?? "") + "/\(p["protocol"]?.string ?? "TCP")"
            }.joined(separator: ",")
            return [svc.namespace, svc.name, svc[path: "spec.type"]?.string ?? "ClusterIP", svc[path: "spec.clusterIP"]?.string ?? "", ports]
        }
        return TextTable.render(["NODE", "STATUS", "ADDRESS", "PODS"], nodeRows) + "\n"
            + TextTable.render(["NAMESPACE", "POD", "PHASE", "READY", "RESTARTS", "IP", "NODE"], podRows) + "\n"
            + TextTable.render(["NAMESPACE", "SERVICE", "TYPE", "CLUSTER-IP", "PORTS"], serviceRows)
    }
}
