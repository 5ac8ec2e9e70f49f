import Foundation
import KemuAPI
import KemuClient

/// `kemu status`: the nodes, pods and Services of a running cluster at a glance.
public enum ClusterSummary {
    /// The daemons first (read from their pid files and the supervisor's records, so they show
    /// while the API server is down too), then what the API says.
    public static func render(_ cluster: RunningCluster) async throws -> String {
        let daemons = daemonTable(cluster.files)
        do {
            let nodes = try await cluster.client.list(APIResources.nodes).items
            let pods = try await cluster.client.list(APIResources.pods).items
            let services = try await cluster.client.list(APIResources.services).items
            return daemons + "\n" + render(nodes: nodes, pods: pods, services: services)
        } catch let error as ClientError {
            throw error
        } catch {
            return daemons + "\nthe API server does not answer (\(error)); see the daemons above and \(cluster.files.log("server"))\n"
        }
    }

    /// DAEMON PID STATE RESTARTS LAST-RESTART for every daemon `kemu up` started.
    public static func daemonTable(_ files: ClusterFiles, now: Date = Date()) -> String {
        let records = Supervisor.records(files)
        let rows = Daemon.specs(files).map { name -> [String] in
            let pid = Daemon.pid(name, files)
            let running = pid.map { Daemon.runs(name, $0, files) && !Daemon.isZombie($0) } ?? false
            let record = records[name] ?? Supervisor.Record()
            let state = pid == nil ? "stopped" : record.state(running: running, now: now)
            let last = record.lastRestart.map { "\(Int(now.timeIntervalSince($0)))s ago" } ?? "-"
            return [name, pid.map(String.init) ?? "-", state, String(record.restarts), last]
        }
        return TextTable.render(["DAEMON", "PID", "STATE", "RESTARTS", "LAST-RESTART"], rows)
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
