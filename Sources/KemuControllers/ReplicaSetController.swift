import Foundation
import KemuAPI
import KemuStore
import Logging

/// Keeps `spec.replicas` pods for every ReplicaSet (apps/v1) or ReplicationController (v1) —
/// one controller per resource. Pods that end (Failed, Succeeded), are deleted or lose their
/// node are replaced; orphans matching the selector are adopted and owned pods that stop
/// matching are released (ownerReferences with `controller: true`); a surplus is deleted,
/// not-ready and unscheduled pods first, gracefully when a node runs them. Status: replicas,
/// fullyLabeledReplicas, readyReplicas, availableReplicas (Ready for minReadySeconds),
/// observedGeneration.
public final class ReplicaSetController: Sendable {
    let store: Store
    /// `replicasets.apps` or `replicationcontrollers`.
    let resource: String
    let kind: String
    let logger: Logger
    private let queue = WorkQueue()

    public init(store: Store, resource: String = "replicasets.apps") {
        self.store = store
        self.resource = resource
        let rc = resource == "replicationcontrollers"
        kind = rc ? "ReplicationController" : "ReplicaSet"
        logger = Logger(label: "kemu.\(rc ? "replicationcontrollers" : "replicasets")")
    }

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    public typealias Key = EndpointSliceController.Key

    func follow() async throws {
        let owners = try store.watch(WatchFilter(resource))
        let pods = try store.watch(WatchFilter("pods"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await event in owners { self.queue.add(Key(namespace: event.object.namespace, name: event.object.name)) } }
            group.addTask { for try await event in pods { self.enqueueOwners(of: event.object) } }
            group.addTask {
                try await self.queue.process(self.logger, { "\(self.kind) \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: self.resource, key, error, count: count, retry: retry, component: "replicaset-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A pod event matters to its controller, and (for adoption) to any owner whose selector
    /// matches an orphan.
    func enqueueOwners(of pod: JSON) {
        if let owner = Workload.controllerReference(pod) {
            if owner["kind"]?.string == kind, let name = owner["name"]?.string { queue.add(Key(namespace: pod.namespace, name: name)) }
            return
        }
        for owner in store.list(resource, namespace: pod.namespace).items where selector(owner)?.matches(pod.labels) == true {
            queue.add(Key(namespace: owner.namespace, name: owner.name))
        }
    }

    /// The owner's selector: apps/v1's LabelSelector, or a ReplicationController's plain map
    /// (defaulting to its template's labels). nil when it selects nothing.
    func selector(_ owner: JSON) -> LabelSelector? {
        if kind == "ReplicaSet" { return try? LabelSelector(json: owner[path: "spec.selector"]) }
        var map = JSON.stringMap(owner[path: "spec.selector"])
        if map.isEmpty { map = JSON.stringMap(owner[path: "spec.template.metadata.labels"]) }
        return map.isEmpty ? nil : LabelSelector(matchLabels: map)
    }

    public func reconcile(_ key: Key) throws {
        guard let owner = store.get(resource, namespace: key.namespace, name: key.name), owner.deletionTimestamp == nil,
              let selector = selector(owner) else { return }
        var owned: [JSON] = []
        for pod in store.list("pods", namespace: key.namespace).items {
            let reference = Workload.controllerReference(pod)
            let mine = reference?["uid"]?.string == owner.uid
            let matches = selector.matches(pod.labels)
            if mine && !matches {
                // Released: it no longer matches the selector.
                _ = try? store.modify("pods", namespace: pod.namespace, name: pod.name) { $0.removeOwnerReference(owner.uid) }
            } else if mine {
                owned.append(pod)
            } else if reference == nil, matches, Workload.active(pod) {
                // Adopted: an orphan that matches.
                if let adopted = try? store.modify("pods", namespace: pod.namespace, name: pod.name, whileAlive: Store.Owner(resource, owner), { p in
                    guard Workload.controllerReference(p) == nil else { return }
                    var references = p[path: "metadata.ownerReferences"]?.array ?? []
                    references.append(Workload.reference(to: owner))
                    p["metadata", default: [:]]["ownerReferences"] = .array(references)
                }), Workload.controllerReference(adopted)?["uid"]?.string == owner.uid {
                    owned.append(adopted)
                }
            }
        }
        let active = owned.filter(Workload.active)
        let wanted = Int(owner[path: "spec.replicas"]?.int ?? 1)
        if active.count < wanted {
            try createPods(wanted - active.count, for: owner, key)
        } else if active.count > wanted {
            // Not scheduled first, then not ready, then the newest.
            let ranked = active.sorted { a, b in
                let ka = ((a[path: "spec.nodeName"]?.string ?? "").isEmpty ? 0 : 1, Workload.ready(a) ? 1 : 0)
                let kb = ((b[path: "spec.nodeName"]?.string ?? "").isEmpty ? 0 : 1, Workload.ready(b) ? 1 : 0)
                if ka != kb { return ka < kb }
                return (a[path: "metadata.creationTimestamp"]?.string ?? "") > (b[path: "metadata.creationTimestamp"]?.string ?? "")
            }
            for pod in ranked.prefix(active.count - wanted) { try Workload.deletePod(store, pod) }
        }
        try updateStatus(owner, owned: store.list("pods", namespace: key.namespace).items.filter {
            Workload.controllerReference($0)?["uid"]?.string == owner.uid && Workload.active($0)
        }, selector: selector)
    }

    /// Upstream's burstReplicas: pods created by one sync at most; the rest come with the next.
    static let burst = 500

    /// Creates `missing` pods in slow-start batches (1, 2, 4, 8 … as upstream's slowStartBatch), at
    /// most `burst` per sync: the first failure ends the sync (a FailedCreate event, retried with
    /// back-off), so a template the server refuses costs one request, not a thousand.
    func createPods(_ missing: Int, for owner: JSON, _ key: Key) throws {
        let count = min(missing, Self.burst)
        var created = 0, batch = 1
        while created < count {
            let size = min(batch, count - created)
            for _ in 0..<size {
                do {
                    try Workload.createPod(store, newPod(owner))
                } catch {
                    Workload.event(store, owner, type: "Warning", reason: "FailedCreate", message: "Error creating: \(error)",
                                   component: "replicaset-controller")
                    throw error
                }
                created += 1
            }
            batch *= 2
        }
        if missing > count { queue.add(key) }  // the rest at the next sync
    }

    /// A pod from the template with `generateName: <owner>-`: the store picks the five random
    /// characters under its lock, so two pods never race for one name (upstream's server retries a
    /// taken generated name for the same reason; 1,200 pods made a collision likely enough to fail).
    func newPod(_ owner: JSON) -> JSON {
        var pod = Workload.pod(from: owner, name: "")
        pod["metadata", default: [:]]["generateName"] = .string("\(owner.name)-")
        return pod
    }

    func updateStatus(_ owner: JSON, owned: [JSON], selector: LabelSelector) throws {
        let template = JSON.stringMap(owner[path: "spec.template.metadata.labels"])
        let minReady = Double(owner[path: "spec.minReadySeconds"]?.int ?? 0)
        let now = Date()
        var nextCheck: Double?
        let available = owned.filter { pod in
            let (available, left) = Workload.available(pod, minReadySeconds: minReady, now: now)
            if let left { nextCheck = min(nextCheck ?? left, left) }
            return available
        }
        var status: JSON = [
            "replicas": .int(Int64(owned.count)),
            "fullyLabeledReplicas": .int(Int64(owned.filter { pod in template.allSatisfy { pod.labels[$0.key] == $0.value } }.count)),
            "readyReplicas": .int(Int64(owned.filter(Workload.ready).count)),
            "availableReplicas": .int(Int64(available.count)),
            "observedGeneration": .int(owner.generation),
        ]
        if let conditions = owner[path: "status.conditions"] { status["conditions"] = conditions }
        if owner["status"] != status {
            try store.modify(resource, namespace: owner.namespace, name: owner.name, part: .status) { $0["status"] = status }
        }
        if let nextCheck { queue.add(Key(namespace: owner.namespace, name: owner.name), after: nextCheck + 0.05) }
    }
}
