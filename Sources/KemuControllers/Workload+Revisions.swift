import Foundation
import KemuAPI
import KemuStore

/// ControllerRevisions, as StatefulSets and DaemonSets keep them: one per template the workload
/// has had, numbered, holding the patch `kubectl rollout undo` applies.
extension Workload {
    static let revisionsResource = "controllerrevisions.apps"

    /// The current revision (what the pods ran when the last rollout completed) and the update
    /// revision (the template now), as ControllerRevisions. A template equal to an older
    /// revision's (`kubectl rollout undo`) reuses it with the next revision number.
    static func revisions(_ store: Store, of set: JSON, resource: String, current currentName: String?,
                          inUse live: Set<String>) throws -> (current: JSON, update: JSON) {
        let owned = store.list(revisionsResource, namespace: set.namespace).items.filter { isControlled($0, by: set) }
        let wanted = normalizedTemplate(set[path: "spec.template"])
        let highest = owned.compactMap { $0["revision"]?.int }.max() ?? 0
        let update: JSON
        if let same = owned.first(where: { normalizedTemplate(template(of: $0)) == wanted }) {
            if same["revision"]?.int == highest {
                update = same
            } else {
                update = try store.modify(revisionsResource, namespace: set.namespace, name: same.name) { $0["revision"] = .int(highest + 1) }
            }
        } else {
            var revision: JSON = ["apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": .int(highest + 1)]
            let hash = templateHash(set[path: "spec.template"], collisionCount: set[path: "status.collisionCount"]?.int ?? 0)
            revision.name = "\(set.name)-\(hash)"
            revision.namespace = set.namespace
            var labels = JSON.stringMap(set[path: "spec.selector.matchLabels"])
            labels["controller.kubernetes.io/hash"] = hash
            revision.labels = labels
            revision["metadata", default: [:]]["ownerReferences"] = [reference(to: set)]
            // The patch `kubectl rollout undo` applies to the workload.
            var patched = set[path: "spec.template"] ?? [:]
            patched["$patch"] = "replace"
            revision["data"] = ["spec": ["template": patched]]
            do {
                update = try store.create(revisionsResource, revision)
            } catch StoreError.alreadyExists {
                try store.modify(resource, namespace: set.namespace, name: set.name, part: .status) {
                    $0["status", default: [:]]["collisionCount"] = .int(($0[path: "status.collisionCount"]?.int ?? 0) + 1)
                }
                throw ControllerError("ControllerRevision \(revision.name) exists with another template; collisionCount raised")
            }
        }
        let current = owned.first { $0.name == currentName && $0.name != update.name } ?? update
        // Old revisions beyond revisionHistoryLimit go (never one a pod still runs).
        let limit = Int(set[path: "spec.revisionHistoryLimit"]?.int ?? 10)
        let old = owned.filter { $0.name != update.name && $0.name != current.name && !live.contains($0.name) }
            .sorted { ($0["revision"]?.int ?? 0) < ($1["revision"]?.int ?? 0) }
        for revision in old.prefix(max(old.count - limit, 0)) {
            _ = try? store.delete(revisionsResource, namespace: revision.namespace, name: revision.name, uid: revision.uid)
        }
        return (current, update)
    }

    /// A revision's pod template (its data is the patch `rollout undo` applies).
    static func template(of revision: JSON) -> JSON? {
        var template = revision[path: "data.spec.template"]
        template?["$patch"] = nil
        return template
    }
}
