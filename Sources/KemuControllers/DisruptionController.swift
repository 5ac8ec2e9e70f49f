import Foundation
import KemuAPI
import KemuStore
import Logging

/// policy/v1 PodDisruptionBudgets, as upstream's disruption controller keeps their status: the
/// pods the selector matches, how many are healthy (Ready, not being deleted, not just evicted),
/// how many must stay healthy (`minAvailable`, or the expected count less `maxUnavailable`; a
/// percentage is of the expected count: the replicas of the pods' controllers), and from those
/// `disruptionsAllowed`, which the API server's eviction spends. A pod evicted but not yet gone is
/// listed in `disruptedPods` by the API server and not counted healthy here for two minutes.
public final class DisruptionController: Sendable {
    static let budgets = "poddisruptionbudgets.policy"
    /// Upstream's DeletionTimeout: an eviction whose pod is still there after this is forgotten.
    static let disruptedPodTimeout: Double = 120
    let store: Store
    let logger = Logger(label: "kemu.disruption")
    private let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let budgets = try store.watch(WatchFilter(Self.budgets))
        let pods = try store.watch(WatchFilter("pods"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await e in budgets { self.queue.add(Key(namespace: e.object.namespace, name: e.object.name)) } }
            group.addTask {
                for try await e in pods {
                    for budget in self.store.list(Self.budgets, namespace: e.object.namespace).items
                    where (try? LabelSelector(json: budget[path: "spec.selector"]))?.matches(e.object.labels) == true {
                        self.queue.add(Key(namespace: budget.namespace, name: budget.name))
                    }
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "pdb \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.budgets, key, error, count: count, retry: retry,
                                           component: "disruption-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    public func reconcile(_ key: Key) throws {
        guard let budget = store.get(Self.budgets, namespace: key.namespace, name: key.name), budget.deletionTimestamp == nil else { return }
        let now = Date()
        let selector = (try? LabelSelector(json: budget[path: "spec.selector"])) ?? .nothing
        let pods = store.list("pods", namespace: budget.namespace).items.filter { selector.matches($0.labels) && Workload.active($0) }
        // Evictions still in flight: the pod is on its way out; forgotten when it is gone or late.
        var disrupted = JSONObject()
        for (name, at) in budget[path: "status.disruptedPods"]?.object ?? JSONObject() {
            guard let when = at.string.flatMap(Timestamp.parse), now.timeIntervalSince(when) < Self.disruptedPodTimeout,
                  pods.contains(where: { $0.name == name && $0.deletionTimestamp == nil }) else { continue }
            disrupted[name] = at
        }
        let healthy = pods.filter { Workload.ready($0) && $0.deletionTimestamp == nil && disrupted[$0.name] == nil }.count
        let (expected, desired) = desiredHealthy(budget, pods: pods)
        let allowed = max(0, healthy - desired)
        var conditions = budget[path: "status.conditions"]?.array ?? []
        let stamp = Timestamp.now()
        Workload.setCondition(&conditions, type: "DisruptionAllowed", status: allowed > 0 ? "True" : "False",
                              reason: allowed > 0 ? "SufficientPods" : "InsufficientPods", message: "", now: stamp)
        for i in conditions.indices {
            conditions[i]["lastUpdateTime"] = nil
            conditions[i]["observedGeneration"] = .int(budget.generation)
        }
        var status: JSON = [
            "observedGeneration": .int(budget.generation), "currentHealthy": .int(Int64(healthy)),
            "desiredHealthy": .int(Int64(desired)), "expectedPods": .int(Int64(expected)),
            "disruptionsAllowed": .int(Int64(allowed)), "conditions": .array(conditions),
        ]
        if !disrupted.isEmpty { status["disruptedPods"] = .object(disrupted) }
        try Workload.modify(store, Self.budgets, budget, part: .status) { $0["status"] = status }
        if !disrupted.isEmpty { queue.add(key, after: 5) }
    }

    /// The expected pod count and how many must stay healthy.
    func desiredHealthy(_ budget: JSON, pods: [JSON]) -> (expected: Int, desired: Int) {
        let minAvailable = budget[path: "spec.minAvailable"], maxUnavailable = budget[path: "spec.maxUnavailable"]
        if let n = minAvailable?.int { return (pods.count, Int(n)) }
        let expected = expectedCount(pods)
        if let minAvailable { return (expected, Workload.scaled(minAvailable, total: expected, roundUp: true) ?? expected) }
        if let maxUnavailable {
            return (expected, max(0, expected - (Workload.scaled(maxUnavailable, total: expected, roundUp: true) ?? 0)))
        }
        return (expected, expected)  // neither: upstream reads this as minAvailable 100%
    }

    /// What the pods' controllers want: a Deployment's replicas (through its ReplicaSet), a
    /// ReplicaSet's, StatefulSet's or ReplicationController's, a DaemonSet's desired count;
    /// pods without a controller count as themselves.
    func expectedCount(_ pods: [JSON]) -> Int {
        var counted: [String: Int] = [:]
        var loose = 0
        for pod in pods {
            guard let ref = Workload.controllerReference(pod), let kind = ref["kind"]?.string, let name = ref["name"]?.string else {
                loose += 1
                continue
            }
            var owner: JSON?
            switch kind {
            case "ReplicaSet":
                owner = store.get("replicasets.apps", namespace: pod.namespace, name: name)
                if let rs = owner, let up = Workload.controllerReference(rs), up["kind"]?.string == "Deployment", let deployment = up["name"]?.string {
                    owner = store.get("deployments.apps", namespace: pod.namespace, name: deployment) ?? owner
                }
            case "StatefulSet": owner = store.get("statefulsets.apps", namespace: pod.namespace, name: name)
            case "ReplicationController": owner = store.get("replicationcontrollers", namespace: pod.namespace, name: name)
            case "DaemonSet": owner = store.get("daemonsets.apps", namespace: pod.namespace, name: name)
            default: break
            }
            guard let owner else { loose += 1; continue }
            let wanted = owner.kind == "DaemonSet" ? owner[path: "status.desiredNumberScheduled"]?.int : owner[path: "spec.replicas"]?.int
            counted[owner.uid] = Int(wanted ?? 1)
        }
        return counted.values.reduce(loose, +)
    }
}
