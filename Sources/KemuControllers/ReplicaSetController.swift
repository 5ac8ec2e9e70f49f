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
    let apiVersion: String
    let logger: Logger
    private let queue = WorkQueue()

    public init(store: Store, resource: String = "replicasets.apps") {
        self.store = store
        self.resource = resource
        let rc = resource == "replicationcontrollers"
        kind = rc ? "ReplicationController" : "ReplicaSet"
        apiVersion = rc ? "v1" : "apps/v1"
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
                try await self.queue.process(self.logger, { "\(self.kind) \($0.namespace)/\($0.name)" }, self.reconcile)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A pod event matters to its controller, and (for adoption) to any owner whose selector
    /// matches an orphan.
    func enqueueOwners(of pod: JSON) {
        if let owner = Self.controllerReference(pod) {
            if owner["kind"]?.string == kind, let name = owner["name"]?.string { queue.add(Key(namespace: pod.namespace, name: name)) }
            return
        }
        for owner in store.list(resource, namespace: pod.namespace).items where selector(owner)?.matches(pod.labels) == true {
            queue.add(Key(namespace: owner.namespace, name: owner.name))
        }
    }

    static func controllerReference(_ o: JSON) -> JSON? {
        (o[path: "metadata.ownerReferences"]?.array ?? []).first { $0["controller"]?.bool == true }
    }

    /// The owner's selector: apps/v1's LabelSelector, or a ReplicationController's plain map
    /// (defaulting to its template's labels). nil when it selects nothing.
    func selector(_ owner: JSON) -> LabelSelector? {
        if kind == "ReplicaSet" { return try? LabelSelector(json: owner[path: "spec.selector"]) }
        var map = JSON.stringMap(owner[path: "spec.selector"])
        if map.isEmpty { map = JSON.stringMap(owner[path: "spec.template.metadata.labels"]) }
        return map.isEmpty ? nil : LabelSelector(matchLabels: map)
    }

    static func active(_ pod: JSON) -> Bool {
        let phase = pod[path: "status.phase"]?.string ?? ""
        return pod.deletionTimestamp == nil && phase != "Succeeded" && phase != "Failed"
    }

    static func ready(_ pod: JSON) -> Bool {
        (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
    }

    public func reconcile(_ key: Key) throws {
        guard let owner = store.get(resource, namespace: key.namespace, name: key.name), owner.deletionTimestamp == nil,
              let selector = selector(owner) else { return }
        var owned: [JSON] = []
        for pod in store.list("pods", namespace: key.namespace).items {
            let reference = Self.controllerReference(pod)
            let mine = reference?["uid"]?.string == owner.uid
            let matches = selector.matches(pod.labels)
            if mine && !matches {
                // Released: it no longer matches the selector.
                _ = try? store.modify("pods", namespace: pod.namespace, name: pod.name) { $0.removeOwnerReference(owner.uid) }
            } else if mine {
                owned.append(pod)
            } else if reference == nil, matches, Self.active(pod) {
                // Adopted: an orphan that matches.
                if let adopted = try? store.modify("pods", namespace: pod.namespace, name: pod.name, { p in
                    guard Self.controllerReference(p) == nil else { return }
                    var references = p[path: "metadata.ownerReferences"]?.array ?? []
                    references.append(self.reference(to: owner))
                    p["metadata", default: [:]]["ownerReferences"] = .array(references)
                }), Self.controllerReference(adopted)?["uid"]?.string == owner.uid {
                    owned.append(adopted)
                }
            }
        }
        let active = owned.filter(Self.active)
        let wanted = Int(owner[path: "spec.replicas"]?.int ?? 1)
        if active.count < wanted {
            for _ in 0..<(wanted - active.count) { try store.create("pods", newPod(owner)) }
        } else if active.count > wanted {
            // Not scheduled first, then not ready, then the newest.
            let ranked = active.sorted { a, b in
                let ka = ((a[path: "spec.nodeName"]?.string ?? "").isEmpty ? 0 : 1, Self.ready(a) ? 1 : 0)
                let kb = ((b[path: "spec.nodeName"]?.string ?? "").isEmpty ? 0 : 1, Self.ready(b) ? 1 : 0)
                if ka != kb { return ka < kb }
                return (a[path: "metadata.creationTimestamp"]?.string ?? "") > (b[path: "metadata.creationTimestamp"]?.string ?? "")
            }
            for pod in ranked.prefix(active.count - wanted) { try deletePod(pod) }
        }
        try updateStatus(owner, owned: store.list("pods", namespace: key.namespace).items.filter {
            Self.controllerReference($0)?["uid"]?.string == owner.uid && Self.active($0)
        }, selector: selector)
    }

    func reference(to owner: JSON) -> JSON {
        ["apiVersion": .string(apiVersion), "kind": .string(kind), "name": .string(owner.name), "uid": .string(owner.uid),
         "controller": true, "blockOwnerDeletion": true]
    }

    /// A pod from the template, named `<owner>-<5 random characters>` as generateName would.
    func newPod(_ owner: JSON) -> JSON {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        var pod: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": owner[path: "spec.template.metadata"] ?? [:],
                         "spec": owner[path: "spec.template.spec"] ?? [:], "status": ["phase": "Pending"]]
        pod.name = "\(owner.name)-\(String((0..<5).map { _ in alphabet.randomElement()! }))"
        pod.namespace = owner.namespace
        pod["metadata", default: [:]]["generateName"] = .string("\(owner.name)-")
        pod["metadata", default: [:]]["ownerReferences"] = [reference(to: owner)]
        // The defaults the API server's admission gives a pod created through it.
        var spec = pod["spec"] ?? [:]
        PodDefaults.apply(to: &spec)
        pod["spec"] = spec
        return pod
    }

    /// Graceful when a node runs the pod (its agent ends it), at once otherwise.
    func deletePod(_ pod: JSON) throws {
        let node = pod[path: "spec.nodeName"]?.string ?? ""
        if !node.isEmpty, store.get("nodes", name: node) != nil {
            try store.markForDeletion("pods", namespace: pod.namespace, name: pod.name,
                                      gracePeriodSeconds: max(pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0), uid: pod.uid)
        } else {
            try store.delete("pods", namespace: pod.namespace, name: pod.name, uid: pod.uid)
        }
    }

    func updateStatus(_ owner: JSON, owned: [JSON], selector: LabelSelector) throws {
        let template = JSON.stringMap(owner[path: "spec.template.metadata.labels"])
        let minReady = Double(owner[path: "spec.minReadySeconds"]?.int ?? 0)
        let now = Date()
        var nextCheck: Double?
        let available = owned.filter { pod in
            guard Self.ready(pod) else { return false }
            if minReady == 0 { return true }
            let since = (pod[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }?["lastTransitionTime"]?.string
                .flatMap(Timestamp.parse) ?? now
            let left = minReady - now.timeIntervalSince(since)
            if left > 0 { nextCheck = min(nextCheck ?? left, left) }
            return left <= 0
        }
        var status: JSON = [
            "replicas": .int(Int64(owned.count)),
            "fullyLabeledReplicas": .int(Int64(owned.filter { pod in template.allSatisfy { pod.labels[$0.key] == $0.value } }.count)),
            "readyReplicas": .int(Int64(owned.filter(Self.ready).count)),
            "availableReplicas": .int(Int64(available.count)),
            "observedGeneration": .int(owner.generation),
        ]
        if let conditions = owner[path: "status.conditions"] { status["conditions"] = conditions }
        if owner["status"] != status {
            try store.modify(resource, namespace: owner.namespace, name: owner.name, part: .status) { $0["status"] = status }
        }
        if let nextCheck {
            let key = Key(namespace: owner.namespace, name: owner.name)
            Task { [queue] in
                try? await Task.sleep(for: .milliseconds(Int(nextCheck * 1000) + 50))
                queue.add(key)
            }
        }
    }
}
