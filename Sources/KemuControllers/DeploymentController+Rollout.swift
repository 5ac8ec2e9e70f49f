import Foundation
import KemuAPI
import KemuStore

/// One pass over a Deployment: its ReplicaSets as this pass left them.
struct Rollout {
    let deployment: JSON
    var replicaSets: [JSON]
    var newReplicaSet: JSON?
    /// The new ReplicaSet when this pass created it, or found it for the first time.
    var created: String?
    var found: String?

    init(deployment: JSON, replicaSets: [JSON]) {
        self.deployment = deployment
        self.replicaSets = replicaSets
    }

    var replicas: Int { Int(deployment[path: "spec.replicas"]?.int ?? 1) }
    /// Old ReplicaSets, oldest first.
    var oldReplicaSets: [JSON] {
        replicaSets.filter { $0.uid != newReplicaSet?.uid }.sorted {
            ($0[path: "metadata.creationTimestamp"]?.string ?? "", $0.name) < ($1[path: "metadata.creationTimestamp"]?.string ?? "", $1.name)
        }
    }

    mutating func replace(_ rs: JSON) {
        if let i = replicaSets.firstIndex(where: { $0.uid == rs.uid }) { replicaSets[i] = rs }
        if newReplicaSet?.uid == rs.uid { newReplicaSet = rs }
    }

    func total(_ count: (JSON) -> Int, _ sets: [JSON]? = nil) -> Int { (sets ?? replicaSets).reduce(0) { $0 + count($1) } }

    /// maxSurge (rounded up) and maxUnavailable (rounded down) as pod counts; both 0 becomes
    /// maxUnavailable 1, as upstream. Recreate allows neither.
    static func limits(_ d: JSON) -> (surge: Int, unavailable: Int) {
        guard d[path: "spec.strategy.type"]?.string != "Recreate" else { return (0, 0) }
        let replicas = Int(d[path: "spec.replicas"]?.int ?? 1)
        let surge = Workload.scaled(d[path: "spec.strategy.rollingUpdate.maxSurge"] ?? "25%", total: replicas, roundUp: true) ?? 1
        let unavailable = Workload.scaled(d[path: "spec.strategy.rollingUpdate.maxUnavailable"] ?? "25%", total: replicas, roundUp: false) ?? 0
        return surge == 0 && unavailable == 0 ? (0, 1) : (max(surge, 0), max(unavailable, 0))
    }
}

extension DeploymentController {
    /// RollingUpdate: scale the new ReplicaSet up as far as maxSurge allows, then the old ones
    /// down as far as maxUnavailable allows, unhealthy pods first.
    func rollingUpdate(_ r: inout Rollout) throws {
        let (surge, unavailable) = Rollout.limits(r.deployment)
        let wanted = r.replicas
        if r.newReplicaSet == nil {
            _ = try newReplicaSet(&r, create: false, replicas: 0)
        }
        if r.newReplicaSet == nil {
            let current = r.total(Self.replicas)
            let first = min(max(wanted + surge - current, 0), wanted)
            _ = try newReplicaSet(&r, create: true, replicas: first)
        }
        guard let new = r.newReplicaSet else { return }
        // The new ReplicaSet: up to the wanted count, within maxSurge pods over it in all.
        if Self.replicas(new) > wanted {
            try scale(&r, new, to: wanted)
        } else if Self.replicas(new) < wanted {
            let room = wanted + surge - r.total(Self.replicas)
            if room > 0 { try scale(&r, new, to: Self.replicas(new) + min(room, wanted - Self.replicas(new))) }
        }
        // The old ones: never below wanted − maxUnavailable available pods.
        let minAvailable = wanted - unavailable
        let newUnavailable = max(Self.replicas(r.newReplicaSet) - Self.statusCount(r.newReplicaSet, "availableReplicas"), 0)
        var budget = r.total(Self.replicas) - minAvailable - newUnavailable
        if budget > 0 {
            // Pods that are not available cost nothing to remove.
            for rs in r.oldReplicaSets where budget > 0 {
                let unhealthy = Self.replicas(rs) - Self.statusCount(rs, "availableReplicas")
                guard unhealthy > 0 else { continue }
                let down = min(unhealthy, budget)
                try scale(&r, rs, to: Self.replicas(rs) - down)
                budget -= down
            }
            var spare = min(r.total { Self.statusCount($0, "availableReplicas") } - minAvailable, budget)
            for rs in r.oldReplicaSets where spare > 0 && Self.replicas(rs) > 0 {
                let down = min(Self.replicas(rs), spare)
                try scale(&r, rs, to: Self.replicas(rs) - down)
                spare -= down
            }
        }
        if complete(r) { cleanUp(r) }
    }

    /// Recreate: every old pod ends before the new ReplicaSet starts any.
    func recreate(_ r: inout Rollout) throws {
        _ = try newReplicaSet(&r, create: false, replicas: 0)
        var scaledDown = false
        for rs in r.oldReplicaSets where Self.replicas(rs) > 0 { scaledDown = try scale(&r, rs, to: 0) || scaledDown }
        if scaledDown { return }
        let oldUIDs = Set(r.oldReplicaSets.map(\.uid))
        let running = store.list("pods", namespace: r.deployment.namespace).items.contains { pod in
            let phase = pod[path: "status.phase"]?.string ?? ""
            return oldUIDs.contains(Workload.controllerReference(pod)?["uid"]?.string ?? "") && phase != "Succeeded" && phase != "Failed"
        }
        if running { return }
        if let new = r.newReplicaSet {
            try scale(&r, new, to: r.replicas)
        } else {
            _ = try newReplicaSet(&r, create: true, replicas: r.replicas)
        }
        if complete(r) { cleanUp(r) }
    }

    /// Paused: no rollout, but a change of replicas still reaches the ReplicaSets (the new one
    /// when there is one running, else the largest).
    func sync(_ r: inout Rollout) throws {
        _ = try newReplicaSet(&r, create: false, replicas: 0)
        let running = r.replicaSets.filter { Self.replicas($0) > 0 }
        let difference = r.replicas - r.total(Self.replicas, running)
        if difference != 0 {
            let target = running.first { $0.uid == r.newReplicaSet?.uid } ?? running.max { Self.replicas($0) < Self.replicas($1) }
                ?? r.newReplicaSet ?? r.oldReplicaSets.last
            if let target { try scale(&r, target, to: max(Self.replicas(target) + difference, 0)) }
        }
        cleanUp(r)
    }

    func complete(_ r: Rollout) -> Bool {
        guard let new = r.newReplicaSet else { return false }
        return Self.statusCount(new, "replicas") == r.replicas && Self.statusCount(new, "availableReplicas") == r.replicas
            && Self.replicas(new) == r.replicas && r.oldReplicaSets.allSatisfy { Self.statusCount($0, "replicas") == 0 && Self.replicas($0) == 0 }
    }

    // MARK: status

    /// Counts summed over the ReplicaSets, the revision annotation, and the conditions:
    /// Available (minimum availability) and Progressing (new ReplicaSet created / progressing /
    /// available, paused, resumed, or past its progress deadline).
    func updateStatus(_ r: Rollout) throws {
        let d = r.deployment
        let now = Date()
        let stamp = Timestamp.format(now)
        let old = d["status"] ?? [:]
        let available = r.total { Self.statusCount($0, "availableReplicas") }
        var status: JSON = [
            "observedGeneration": .int(d.generation),
            "replicas": .int(Int64(r.total { Self.statusCount($0, "replicas") })),
            "updatedReplicas": .int(Int64(Self.statusCount(r.newReplicaSet, "replicas"))),
            "readyReplicas": .int(Int64(r.total { Self.statusCount($0, "readyReplicas") })),
            "availableReplicas": .int(Int64(available)),
            "unavailableReplicas": .int(Int64(max(r.replicas - available, 0))),
        ]
        if let collisions = old["collisionCount"] { status["collisionCount"] = collisions }
        var conditions = old["conditions"]?.array ?? []
        let (_, unavailable) = Rollout.limits(d)
        if available >= r.replicas - unavailable {
            Workload.setCondition(&conditions, type: "Available", status: "True", reason: "MinimumReplicasAvailable",
                                  message: "Deployment has minimum availability.", now: stamp)
        } else {
            Workload.setCondition(&conditions, type: "Available", status: "False", reason: "MinimumReplicasUnavailable",
                                  message: "Deployment does not have minimum availability.", now: stamp)
        }
        let progressing = conditions.first { $0["type"]?.string == "Progressing" }
        let name = r.newReplicaSet?.name ?? ""
        let deadline = Double(d[path: "spec.progressDeadlineSeconds"]?.int ?? 600)
        var recheck: Double?
        if d[path: "spec.paused"]?.bool == true {
            Workload.setCondition(&conditions, type: "Progressing", status: "Unknown", reason: "DeploymentPaused",
                                  message: "Deployment is paused", now: stamp)
        } else if progressing?["reason"]?.string == "DeploymentPaused" {
            Workload.setCondition(&conditions, type: "Progressing", status: "Unknown", reason: "DeploymentResumed",
                                  message: "Deployment is resumed", now: stamp)
            recheck = deadline
        } else if complete(r) {
            Workload.setCondition(&conditions, type: "Progressing", status: "True", reason: "NewReplicaSetAvailable",
                                  message: "ReplicaSet \"\(name)\" has successfully progressed.", now: stamp)
        } else if let created = r.created {
            Workload.setCondition(&conditions, type: "Progressing", status: "True", reason: "NewReplicaSetCreated",
                                  message: "Created new replica set \"\(created)\"", now: stamp, touch: true)
            recheck = deadline
        } else if Self.madeProgress(old: old, new: status) || progressing == nil {
            let reason = progressing == nil && r.found != nil ? "FoundNewReplicaSet" : "ReplicaSetUpdated"
            let message = reason == "FoundNewReplicaSet" ? "Found new replica set \"\(name)\"" : "ReplicaSet \"\(name)\" is progressing."
            Workload.setCondition(&conditions, type: "Progressing", status: "True", reason: reason, message: message, now: stamp, touch: true)
            recheck = deadline
        } else if progressing?["reason"]?.string != "ProgressDeadlineExceeded" {
            // No progress since the condition's last update: past the deadline, the rollout is
            // reported stuck (it still goes on if pods turn up later).
            let since = progressing?["lastUpdateTime"]?.string.flatMap(Timestamp.parse) ?? now
            let left = deadline - now.timeIntervalSince(since)
            if left <= 0 {
                Workload.setCondition(&conditions, type: "Progressing", status: "False", reason: "ProgressDeadlineExceeded",
                                      message: "ReplicaSet \"\(name)\" has timed out progressing.", now: stamp)
                Workload.event(store, d, type: "Warning", reason: "ProgressDeadlineExceeded",
                               message: "Deployment \"\(d.name)\" has timed out progressing.", component: "deployment-controller")
            } else {
                recheck = left
            }
        }
        status["conditions"] = .array(conditions)
        if status != old {
            try store.modify(Self.deployments, namespace: d.namespace, name: d.name, part: .status) { $0["status"] = status }
        }
        if let revision = r.newReplicaSet?.annotations[Self.revision], d.annotations[Self.revision] != revision {
            try Workload.modify(store, Self.deployments, d, part: .main) { o in o.annotations[Self.revision] = revision }
        }
        if let recheck { queue.add(Key(namespace: d.namespace, name: d.name), after: recheck + 0.05) }
    }

    /// upstream's notion of progress: more updated, ready or available pods, or fewer old ones.
    static func madeProgress(old: JSON, new: JSON) -> Bool {
        func n(_ s: JSON, _ field: String) -> Int64 { s[field]?.int ?? 0 }
        return n(new, "updatedReplicas") > n(old, "updatedReplicas") || n(new, "readyReplicas") > n(old, "readyReplicas")
            || n(new, "availableReplicas") > n(old, "availableReplicas")
            || n(new, "replicas") - n(new, "updatedReplicas") < n(old, "replicas") - n(old, "updatedReplicas")
    }
}
