import Foundation
import KemuAPI
import KemuStore

extension StatefulSetController {
    /// The current revision (what the pods ran when the last rollout completed) and the update
    /// revision (the template now), as ControllerRevisions. A template equal to an older
    /// revision's (`kubectl rollout undo sts`) reuses it with the next revision number.
    func revisions(_ set: JSON) throws -> (current: JSON, update: JSON) {
        let owned = store.list(Self.revisions, namespace: set.namespace).items.filter { Workload.isControlled($0, by: set) }
        let template = Workload.normalizedTemplate(set[path: "spec.template"])
        let highest = owned.compactMap { $0["revision"]?.int }.max() ?? 0
        let update: JSON
        if let same = owned.first(where: { Workload.normalizedTemplate(Self.template(of: $0)) == template }) {
            if same["revision"]?.int == highest {
                update = same
            } else {
                update = try store.modify(Self.revisions, namespace: set.namespace, name: same.name) { $0["revision"] = .int(highest + 1) }
            }
        } else {
            var revision: JSON = ["apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": .int(highest + 1)]
            let hash = Workload.templateHash(set[path: "spec.template"], collisionCount: set[path: "status.collisionCount"]?.int ?? 0)
            revision.name = "\(set.name)-\(hash)"
            revision.namespace = set.namespace
            var labels = JSON.stringMap(set[path: "spec.selector.matchLabels"])
            labels["controller.kubernetes.io/hash"] = hash
            revision.labels = labels
            revision["metadata", default: [:]]["ownerReferences"] = [Workload.reference(to: set)]
            // The patch `kubectl rollout undo` applies to the StatefulSet.
            var patched = set[path: "spec.template"] ?? [:]
            patched["$patch"] = "replace"
            revision["data"] = ["spec": ["template": patched]]
            do {
                update = try store.create(Self.revisions, revision)
            } catch StoreError.alreadyExists {
                try store.modify(Self.sets, namespace: set.namespace, name: set.name, part: .status) {
                    $0["status", default: [:]]["collisionCount"] = .int(($0[path: "status.collisionCount"]?.int ?? 0) + 1)
                }
                throw ControllerError("ControllerRevision \(revision.name) exists with another template; collisionCount raised")
            }
        }
        let currentName = set[path: "status.currentRevision"]?.string
        let current = owned.first { $0.name == currentName && $0.name != update.name } ?? update
        // Old revisions beyond revisionHistoryLimit go (never one a pod still runs).
        let limit = Int(set[path: "spec.revisionHistoryLimit"]?.int ?? 10)
        let live = Set(store.list("pods", namespace: set.namespace).items.filter { Workload.isControlled($0, by: set) }
            .compactMap { $0.labels[Self.revisionLabel] })
        let old = owned.filter { $0.name != update.name && $0.name != current.name && !live.contains($0.name) }
            .sorted { ($0["revision"]?.int ?? 0) < ($1["revision"]?.int ?? 0) }
        for revision in old.prefix(max(old.count - limit, 0)) {
            _ = try? store.delete(Self.revisions, namespace: revision.namespace, name: revision.name, uid: revision.uid)
        }
        return (current, update)
    }

    /// A revision's pod template (its data is the patch `rollout undo` applies).
    static func template(of revision: JSON) -> JSON? {
        var template = revision[path: "data.spec.template"]
        template?["$patch"] = nil
        return template
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
