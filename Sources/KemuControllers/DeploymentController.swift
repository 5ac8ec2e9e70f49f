import Foundation
import KemuAPI
import KemuStore
import Logging

/// Rolls Deployments (apps/v1) out through ReplicaSets, as upstream's controller does: each
/// distinct pod template gets a ReplicaSet `<deployment>-<pod-template-hash>` carrying a revision;
/// RollingUpdate scales the new one up and the old ones down within maxSurge / maxUnavailable,
/// counting a pod only once it has been Ready for minReadySeconds; Recreate ends the old pods
/// before starting new ones. A template that matches an old ReplicaSet (`rollout undo`) reuses
/// it and moves it to the newest revision. Paused Deployments only scale. Status and the
/// Available / Progressing conditions are what `kubectl rollout status` and `describe` read;
/// old ReplicaSets beyond revisionHistoryLimit are deleted once the rollout is complete.
public final class DeploymentController: Sendable {
    public static let hashLabel = "pod-template-hash"
    public static let revision = "deployment.kubernetes.io/revision"
    static let desiredReplicas = "deployment.kubernetes.io/desired-replicas"
    static let maxReplicas = "deployment.kubernetes.io/max-replicas"
    static let changeCause = "kubernetes.io/change-cause"
    static let deployments = "deployments.apps"
    static let replicaSets = "replicasets.apps"

    let store: Store
    let logger = Logger(label: "kemu.deployments")
    let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let deployments = try store.watch(WatchFilter(Self.deployments))
        let replicaSets = try store.watch(WatchFilter(Self.replicaSets))
        let pods = try store.watch(WatchFilter("pods"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await event in deployments { self.queue.add(Key(namespace: event.object.namespace, name: event.object.name)) } }
            group.addTask { for try await event in replicaSets { self.enqueueOwner(of: event.object) } }
            // Recreate waits for the old pods to be gone, which only their own events tell.
            group.addTask {
                for try await event in pods where event.type == .deleted || !Workload.active(event.object) {
                    guard let owner = Workload.controllerReference(event.object), owner["kind"]?.string == "ReplicaSet",
                          let name = owner["name"]?.string,
                          let rs = self.store.get(Self.replicaSets, namespace: event.object.namespace, name: name) else { continue }
                    self.enqueueOwner(of: rs)
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "Deployment \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.deployments, key, error, count: count, retry: retry, component: "deployment-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A ReplicaSet matters to its Deployment, or (for adoption) to any whose selector matches it.
    func enqueueOwner(of rs: JSON) {
        if let owner = Workload.controllerReference(rs) {
            if owner["kind"]?.string == "Deployment", let name = owner["name"]?.string { queue.add(Key(namespace: rs.namespace, name: name)) }
            return
        }
        for d in store.list(Self.deployments, namespace: rs.namespace).items
        where (try? LabelSelector(json: d[path: "spec.selector"]))?.matches(rs.labels) == true {
            queue.add(Key(namespace: d.namespace, name: d.name))
        }
    }

    public func reconcile(_ key: Key) throws {
        guard let d = store.get(Self.deployments, namespace: key.namespace, name: key.name), d.deletionTimestamp == nil,
              let selector = try? LabelSelector(json: d[path: "spec.selector"]), !selector.isEmpty else { return }
        let owned = claimReplicaSets(d, selector)
        var rollout = Rollout(deployment: d, replicaSets: owned)
        if d[path: "spec.paused"]?.bool == true {
            try sync(&rollout)
        } else if d[path: "spec.strategy.type"]?.string == "Recreate" {
            try recreate(&rollout)
        } else {
            try rollingUpdate(&rollout)
        }
        try updateStatus(rollout)
    }

    /// The ReplicaSets this Deployment controls: its own, plus orphans its selector matches
    /// (adopted); its own that no longer match are released.
    func claimReplicaSets(_ d: JSON, _ selector: LabelSelector) -> [JSON] {
        var owned: [JSON] = []
        for rs in store.list(Self.replicaSets, namespace: d.namespace).items {
            let reference = Workload.controllerReference(rs)
            let mine = reference?["uid"]?.string == d.uid
            let matches = selector.matches(rs.labels)
            if mine && !matches {
                _ = try? store.modify(Self.replicaSets, namespace: rs.namespace, name: rs.name) { $0.removeOwnerReference(d.uid) }
            } else if mine {
                owned.append(rs)
            } else if reference == nil, matches, rs.deletionTimestamp == nil,
                      let adopted = try? store.modify(Self.replicaSets, namespace: rs.namespace, name: rs.name,
                                                      whileAlive: Store.Owner(Self.deployments, d), { o in
                          guard Workload.controllerReference(o) == nil else { return }
                          var references = o[path: "metadata.ownerReferences"]?.array ?? []
                          references.append(Workload.reference(to: d))
                          o["metadata", default: [:]]["ownerReferences"] = .array(references)
                      }), Workload.isControlled(adopted, by: d) {
                owned.append(adopted)
            }
        }
        return owned.filter { $0.deletionTimestamp == nil }
    }

    // MARK: ReplicaSets

    static func replicas(_ rs: JSON?) -> Int { Int(rs?[path: "spec.replicas"]?.int ?? 0) }
    static func statusCount(_ rs: JSON?, _ field: String) -> Int { Int(rs?[path: "status.\(field)"]?.int ?? 0) }
    static func revision(_ rs: JSON) -> Int { Int(rs.annotations[revision] ?? "") ?? 0 }

    /// The ReplicaSet whose template is the Deployment's (the newest revision wins a tie), with
    /// its revision raised above every other one when it is not already the newest (a rollback),
    /// its annotations and minReadySeconds brought up to date. Created when missing and `create`
    /// is set, with `replicas` pods.
    func newReplicaSet(_ r: inout Rollout, create: Bool, replicas: Int) throws -> JSON? {
        let d = r.deployment
        let wanted = Workload.normalizedTemplate(d[path: "spec.template"])
        let matching = r.replicaSets.filter { Workload.normalizedTemplate($0[path: "spec.template"]) == wanted }
        let maxOld = r.replicaSets.filter { rs in !matching.contains { $0.uid == rs.uid } }.map(Self.revision).max() ?? 0
        if let existing = matching.max(by: { Self.revision($0) < Self.revision($1) }) {
            let revision = max(Self.revision(existing), maxOld + 1)
            let updated = try Workload.modify(store, Self.replicaSets, existing, part: .main) { rs in
                self.stamp(&rs, d, revision: revision, isNew: true)
                rs["spec", default: [:]]["minReadySeconds"] = .int(d[path: "spec.minReadySeconds"]?.int ?? 0)
            }
            if r.newReplicaSet == nil, r.created == nil { r.found = existing.name }
            r.replace(updated)
            r.newReplicaSet = updated
            return updated
        }
        guard create else { return nil }
        let collisions = d[path: "status.collisionCount"]?.int ?? 0
        let hash = Workload.templateHash(d[path: "spec.template"], collisionCount: collisions)
        var rs: JSON = ["apiVersion": "apps/v1", "kind": "ReplicaSet"]
        rs.name = "\(d.name)-\(hash)"
        rs.namespace = d.namespace
        var template = d[path: "spec.template"] ?? [:]
        template["metadata", default: [:]]["labels", default: [:]][Self.hashLabel] = .string(hash)
        rs.labels = JSON.stringMap(template[path: "metadata.labels"])
        rs["metadata", default: [:]]["ownerReferences"] = [Workload.reference(to: d)]
        var selector = d[path: "spec.selector"] ?? [:]
        selector["matchLabels", default: [:]][Self.hashLabel] = .string(hash)
        rs["spec"] = ["replicas": .int(Int64(replicas)), "minReadySeconds": .int(d[path: "spec.minReadySeconds"]?.int ?? 0),
                      "selector": selector, "template": template]
        stamp(&rs, d, revision: maxOld + 1, isNew: true)
        let created: JSON
        do {
            created = try store.create(Self.replicaSets, rs)
        } catch StoreError.alreadyExists {
            // A ReplicaSet of that name with another template: count the collision, which changes
            // the hash, and try again.
            try store.modify(Self.deployments, namespace: d.namespace, name: d.name, part: .status) {
                $0["status", default: [:]]["collisionCount"] = .int(collisions + 1)
            }
            throw ControllerError("ReplicaSet \(rs.name) exists with another template; collisionCount is now \(collisions + 1)")
        }
        Workload.event(store, d, reason: "ScalingReplicaSet", message: "Scaled up replica set \(created.name) from 0 to \(replicas)",
                       component: "deployment-controller")
        r.created = created.name
        r.replicaSets.append(created)
        r.newReplicaSet = created
        return created
    }

    /// The annotations a Deployment's ReplicaSet carries: revision, desired and max replicas, and
    /// (the new one only) the Deployment's change cause.
    func stamp(_ rs: inout JSON, _ d: JSON, revision: Int, isNew: Bool = false) {
        let replicas = Int(d[path: "spec.replicas"]?.int ?? 1)
        var annotations = rs.annotations
        annotations[Self.revision] = String(revision)
        annotations[Self.desiredReplicas] = String(replicas)
        annotations[Self.maxReplicas] = String(replicas + Rollout.limits(d).surge)
        if isNew, let cause = d.annotations[Self.changeCause] { annotations[Self.changeCause] = cause }
        rs.annotations = annotations
    }

    /// Sets a ReplicaSet's replicas, with upstream's ScalingReplicaSet event.
    @discardableResult
    func scale(_ r: inout Rollout, _ rs: JSON, to replicas: Int) throws -> Bool {
        let from = Self.replicas(rs)
        guard from != replicas else { return false }
        let d = r.deployment
        let updated = try store.modify(Self.replicaSets, namespace: rs.namespace, name: rs.name, part: .main) { o in
            o["spec", default: [:]]["replicas"] = .int(Int64(replicas))
            self.stamp(&o, d, revision: Self.revision(o))
        }
        r.replace(updated)
        Workload.event(store, d, reason: "ScalingReplicaSet",
                       message: "Scaled \(replicas > from ? "up" : "down") replica set \(rs.name) from \(from) to \(replicas)",
                       component: "deployment-controller")
        return true
    }

    /// Deletes old ReplicaSets that run nothing, oldest revision first, beyond revisionHistoryLimit.
    func cleanUp(_ r: Rollout) {
        let limit = Int(r.deployment[path: "spec.revisionHistoryLimit"]?.int ?? 10)
        let idle = r.oldReplicaSets.filter { Self.replicas($0) == 0 && Self.statusCount($0, "replicas") == 0 }
            .sorted { Self.revision($0) < Self.revision($1) }
        for rs in idle.prefix(max(idle.count - limit, 0)) {
            _ = try? store.delete(Self.replicaSets, namespace: rs.namespace, name: rs.name, uid: rs.uid)
        }
    }
}

/// KemuControllers' one error of its own (the store's errors pass through as they are): a state
/// the controller cannot resolve this time, retried with back-off and told in a Warning event.
struct ControllerError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
