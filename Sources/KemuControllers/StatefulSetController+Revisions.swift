import Foundation
import KemuAPI
import KemuStore

extension StatefulSetController {
    /// The current and update ControllerRevisions (Workload.revisions), keeping those a pod runs.
    func revisions(_ set: JSON) throws -> (current: JSON, update: JSON) {
        let live = Set(store.list("pods", namespace: set.namespace).items.filter { Workload.isControlled($0, by: set) }
            .compactMap { $0.labels[Self.revisionLabel] })
        return try Workload.revisions(store, of: set, resource: Self.sets, current: set[path: "status.currentRevision"]?.string, inUse: live)
    }

    /// replicas, ready, available (minReadySeconds), current and updated counts, the two
    /// revisions — what `kubectl rollout status sts` reads. Once every pod runs the update
    /// revision and is Ready, it becomes the current one.
    func updateStatus(_ set: JSON, pods: [JSON], current: JSON, update: JSON) throws {
        let live = pods.filter { $0.deletionTimestamp == nil }
        let minReady = Double(set[path: "spec.minReadySeconds"]?.int ?? 0)
        let now = Date()
        var nextCheck: Double?
        let available = live.filter { pod in
            let (ok, left) = Workload.available(pod, minReadySeconds: minReady, now: now)
            if let left { nextCheck = min(nextCheck ?? left, left) }
            return ok
        }.count
        let replicas = Int(set[path: "spec.replicas"]?.int ?? 1)
        let ready = live.filter(Workload.ready).count
        let updated = live.filter { $0.labels[Self.revisionLabel] == update.name }.count
        var currentName = current.name
        if updated == replicas && ready >= replicas && live.count == replicas { currentName = update.name }
        let currentCount = live.filter { $0.labels[Self.revisionLabel] == currentName }.count
        var status: JSON = [
            "observedGeneration": .int(set.generation), "replicas": .int(Int64(live.count)),
            "readyReplicas": .int(Int64(ready)), "availableReplicas": .int(Int64(available)),
            "currentReplicas": .int(Int64(currentCount)), "updatedReplicas": .int(Int64(updated)),
            "currentRevision": .string(currentName), "updateRevision": .string(update.name),
        ]
        if let collisions = set[path: "status.collisionCount"] { status["collisionCount"] = collisions }
        if set["status"] != status {
            try store.modify(Self.sets, namespace: set.namespace, name: set.name, part: .status) { $0["status"] = status }
        }
        if let nextCheck { queue.add(Key(namespace: set.namespace, name: set.name), after: nextCheck + 0.05) }
    }
}
