import Foundation
import KemuAPI
import KemuStore
import Logging

/// Watches the nodes' heartbeats (the Ready condition's lastHeartbeatTime, which each node agent
/// posts every second). A node silent for longer than `gracePeriod` — its agent killed, or its
/// fabric link down — has its conditions set to Unknown ("Kubelet stopped posting node
/// status."), gets the `node.kubernetes.io/unreachable` taints, and its pods are marked not Ready
/// at once, so their endpoints leave every Service. Still silent `evictionDelay` later, its pods
/// are deleted (event TaintManagerEviction) and their controllers recreate them on other nodes.
/// kemu deletes them outright rather than leaving them Terminating as upstream does for a node it
/// cannot reach: an emulated node can be treated as fenced, and a StatefulSet pod can then move
/// too. A node that posts again is Ready and loses the taints; its agent removes the processes of
/// pods deleted meanwhile.
public final class NodeLifecycleController: Sendable {
    public static let unreachable = "node.kubernetes.io/unreachable"
    let store: Store
    let gracePeriod: Double
    let evictionDelay: Double
    let logger = Logger(label: "kemu.nodelifecycle")

    /// Upstream's node-monitor-grace-period is 40 s and its eviction 300 s; an emulator that
    /// tests failover wants seconds.
    public init(store: Store, gracePeriod: Double = 5, evictionDelay: Double = 5) {
        self.store = store
        self.gracePeriod = gracePeriod
        self.evictionDelay = evictionDelay
    }

    /// Checks every node twice a second until cancelled. Heartbeats older than the controller
    /// count from its start: nodes of a cluster brought up again on kept data get their grace.
    public func run() async throws {
        let started = Date()
        while !Task.isCancelled {
            check(now: Date(), notBefore: started)
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    public func check(now: Date, notBefore: Date = .distantPast) {
        for node in store.list("nodes").items where node.deletionTimestamp == nil {
            do { try check(node, now: now, notBefore: notBefore) } catch { logger.warning("node \(node.name): \(error)") }
        }
    }

    static func readyCondition(_ node: JSON) -> JSON? {
        (node[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }
    }

    func check(_ node: JSON, now: Date, notBefore: Date) throws {
        guard let ready = Self.readyCondition(node) else { return }
        let status = ready["status"]?.string ?? "Unknown"
        let tainted = Self.taints(node).contains { $0["key"]?.string == Self.unreachable }
        if status == "True" {
            let heartbeat = max(ready["lastHeartbeatTime"]?.string.flatMap(Timestamp.parse) ?? now, notBefore)
            if now.timeIntervalSince(heartbeat) > gracePeriod {
                try markUnknown(node, now: now)
            } else if tainted {
                try Workload.modify(store, "nodes", node, part: .main) { n in
                    n["spec", default: [:]]["taints"] = Self.withoutUnreachable(n)
                }
                logger.info("node \(node.name) is posting status again")
            }
            return
        }
        // NotReady or Unknown: its pods go once the node has been so for evictionDelay.
        let since = max(ready["lastTransitionTime"]?.string.flatMap(Timestamp.parse) ?? now, notBefore)
        if now.timeIntervalSince(since) >= evictionDelay { evictPods(node) }
    }

    static func taints(_ node: JSON) -> [JSON] { node[path: "spec.taints"]?.array ?? [] }

    static func withoutUnreachable(_ node: JSON) -> JSON? {
        let kept = taints(node).filter { $0["key"]?.string != unreachable }
        return kept.isEmpty ? nil : .array(kept)
    }

    func markUnknown(_ node: JSON, now: Date) throws {
        let stamp = JSON.string(Timestamp.format(now))
        try store.modify("nodes", name: node.name, part: .status) { n in
            var conditions = n[path: "status.conditions"]?.array ?? []
            for i in conditions.indices {
                conditions[i]["status"] = "Unknown"
                conditions[i]["reason"] = "NodeStatusUnknown"
                conditions[i]["message"] = "Kubelet stopped posting node status."
                conditions[i]["lastTransitionTime"] = stamp
            }
            n["status", default: [:]]["conditions"] = .array(conditions)
        }
        try store.modify("nodes", name: node.name, part: .main) { n in
            var taints = Self.withoutUnreachable(n)?.array ?? []
            taints.append(["key": .string(Self.unreachable), "effect": "NoSchedule", "timeAdded": stamp])
            taints.append(["key": .string(Self.unreachable), "effect": "NoExecute", "timeAdded": stamp])
            n["spec", default: [:]]["taints"] = .array(taints)
        }
        Workload.event(store, node, reason: "NodeNotReady", message: "Node \(node.name) status is now: NodeNotReady",
                       component: "node-controller")
        logger.warning("node \(node.name) stopped posting status; its pods are not ready")
        for pod in pods(on: node) where Workload.ready(pod) {
            _ = try? store.modify("pods", namespace: pod.namespace, name: pod.name, part: .status) { p in
                var conditions = p[path: "status.conditions"]?.array ?? []
                for i in conditions.indices where conditions[i]["type"]?.string == "Ready" {
                    conditions[i]["status"] = "False"
                    conditions[i]["reason"] = "NodeNotReady"
                    conditions[i]["lastTransitionTime"] = stamp
                }
                p["status", default: [:]]["conditions"] = .array(conditions)
            }
        }
    }

    func pods(on node: JSON) -> [JSON] {
        store.list("pods").items.filter { $0[path: "spec.nodeName"]?.string == node.name }
    }

    func evictPods(_ node: JSON) {
        for pod in pods(on: node) {
            Workload.event(store, pod, reason: "TaintManagerEviction", message: "Marking for deletion Pod \(pod.namespace)/\(pod.name)",
                           component: "taint-eviction-controller")
            _ = try? store.delete("pods", namespace: pod.namespace, name: pod.name, uid: pod.uid)
            logger.info("evicted \(pod.namespace)/\(pod.name) from unreachable node \(node.name)")
        }
    }
}
