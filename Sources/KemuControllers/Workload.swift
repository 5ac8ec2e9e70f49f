import Foundation
import KemuAPI
import KemuStore

/// What the workload controllers (ReplicaSet, Deployment, StatefulSet) share: owner references,
/// pod readiness and availability, int-or-percent fields, template hashes and events.
enum Workload {
    static func controllerReference(_ o: JSON) -> JSON? {
        (o[path: "metadata.ownerReferences"]?.array ?? []).first { $0["controller"]?.bool == true }
    }

    static func isControlled(_ o: JSON, by owner: JSON) -> Bool {
        controllerReference(o)?["uid"]?.string == owner.uid
    }

    static func reference(to owner: JSON) -> JSON {
        ["apiVersion": .string(owner.apiVersion), "kind": .string(owner.kind), "name": .string(owner.name),
         "uid": .string(owner.uid), "controller": true, "blockOwnerDeletion": true]
    }

    /// Not being deleted and not finished.
    static func active(_ pod: JSON) -> Bool {
        let phase = pod[path: "status.phase"]?.string ?? ""
        return pod.deletionTimestamp == nil && phase != "Succeeded" && phase != "Failed"
    }

    static func ready(_ pod: JSON) -> Bool {
        (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
    }

    /// Ready for at least `minReadySeconds`; when not yet, how many seconds are left.
    static func available(_ pod: JSON, minReadySeconds: Double, now: Date) -> (Bool, left: Double?) {
        guard ready(pod) else { return (false, nil) }
        if minReadySeconds <= 0 { return (true, nil) }
        let since = (pod[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }?["lastTransitionTime"]?.string
            .flatMap(Timestamp.parse) ?? now
        let left = minReadySeconds - now.timeIntervalSince(since)
        return left <= 0 ? (true, nil) : (false, left)
    }

    /// An IntOrString field such as maxSurge: a number, or a percentage of `total` rounded up or
    /// down. nil when it is neither.
    static func scaled(_ value: JSON?, total: Int, roundUp: Bool) -> Int? {
        if let n = value?.int { return Int(n) }
        guard let s = value?.string else { return nil }
        if let n = Int(s) { return n }
        guard s.hasSuffix("%"), let p = Int(s.dropLast()) else { return nil }
        let exact = Double(p * total) / 100
        return Int(roundUp ? exact.rounded(.up) : exact.rounded(.down))
    }

    /// The template without what does not make it different: nulls, empty maps, lists and
    /// strings (kubectl sends a template back Go-serialized, with `"creationTimestamp": null`
    /// and `"resources": {}`), and the `pod-template-hash` label.
    static func normalizedTemplate(_ template: JSON?) -> JSON {
        var t = template ?? [:]
        t["metadata"]?["labels"]?[DeploymentController.hashLabel] = nil
        return pruned(t) ?? [:]
    }

    static func pruned(_ j: JSON) -> JSON? {
        switch j {
        case .null: return nil
        case .string(let s): return s.isEmpty ? nil : j
        case .array(let a):
            let kept = a.map { pruned($0) ?? [:] }
            return kept.isEmpty ? nil : .array(kept)
        case .object(let o):
            var kept = JSONObject()
            for (key, value) in o { if let v = pruned(value) { kept[key] = v } }
            return kept.isEmpty ? nil : .object(kept)
        default: return j
        }
    }

    /// Keys sorted, so equal objects give equal text whatever order their keys came in.
    static func canonicalText(_ j: JSON) -> String {
        switch j {
        case .object(let o):
            return "{" + o.keys.sorted().map { "\(JSON.string($0).text()):\(canonicalText(o[$0]!))" }.joined(separator: ",") + "}"
        case .array(let a): return "[" + a.map(canonicalText).joined(separator: ",") + "]"
        default: return j.text()
        }
    }

    /// upstream's pod-template-hash shape: FNV-1a of the template (plus the collision count), its
    /// decimal digits spelled in an alphabet without vowels, so no word can appear in a name.
    static func templateHash(_ template: JSON?, collisionCount: Int64 = 0) -> String {
        var text = canonicalText(normalizedTemplate(template))
        if collisionCount > 0 { text += "#\(collisionCount)" }
        var hash: UInt32 = 2_166_136_261
        for byte in text.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String(String(hash).utf8.map { alphabet[Int($0) % alphabet.count] })
    }

    /// A pod from `owner`'s template, owned by it.
    static func pod(from owner: JSON, name: String) -> JSON {
        var pod: JSON = ["apiVersion": "v1", "kind": "Pod", "metadata": owner[path: "spec.template.metadata"] ?? [:],
                         "spec": owner[path: "spec.template.spec"] ?? [:], "status": ["phase": "Pending"]]
        pod.name = name
        pod.namespace = owner.namespace
        pod["metadata", default: [:]]["ownerReferences"] = [reference(to: owner)]
        // The defaults the API server's admission gives a pod created through it.
        var spec = pod["spec"] ?? [:]
        PodDefaults.apply(to: &spec)
        pod["spec"] = spec
        return pod
    }

    /// Creates a controller's pod, with the namespace's LimitRange defaults and within its
    /// LimitRanges and ResourceQuotas as the API server's admission would hold it (upstream's controllers create through that admission): past a
    /// quota it throws upstream's Forbidden message, which the caller reports as FailedCreate.
    @discardableResult
    static func createPod(_ store: Store, _ pod: JSON) throws -> JSON {
        var pod = pod
        let name = pod.name.isEmpty ? (pod[path: "metadata.generateName"]?.string ?? "") : pod.name
        if let problem = Priorities.apply(to: &pod, classes: store.list("priorityclasses.scheduling.k8s.io").items) {
            throw ControllerError("pods \"\(name)\" is forbidden: \(problem)")
        }
        let ranges = store.list("limitranges", namespace: pod.namespace).items
        if !ranges.isEmpty {
            let problems = LimitRanges.apply(to: &pod, ranges)
            if !problems.isEmpty { throw ControllerError("pods \"\(name)\" is forbidden: [\(problems.joined(separator: ", "))]") }
        }
        guard !store.list("resourcequotas", namespace: pod.namespace).items.isEmpty else { return try store.create("pods", pod) }
        return try Quota.serialized {
            let quotas = store.list("resourcequotas", namespace: pod.namespace).items
            if let reason = Quota.refusal(pod, resource: "pods", quotas: quotas, existing: store.list("pods", namespace: pod.namespace).items) {
                throw ControllerError("pods \"\(name)\" is forbidden: \(reason)")
            }
            return try store.create("pods", pod)
        }
    }

    /// Graceful when a live node runs the pod (its agent ends it), at once otherwise.
    static func deletePod(_ store: Store, _ pod: JSON) throws {
        let node = pod[path: "spec.nodeName"]?.string ?? ""
        if !node.isEmpty, store.get("nodes", name: node) != nil {
            try store.markForDeletion("pods", namespace: pod.namespace, name: pod.name,
                                      gracePeriodSeconds: max(pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0), uid: pod.uid)
        } else {
            try store.delete("pods", namespace: pod.namespace, name: pod.name, uid: pod.uid)
        }
    }

    /// `store.modify` that writes only when `change` changes something (no resourceVersion
    /// churn, no watch event for a no-op).
    @discardableResult
    static func modify(_ store: Store, _ resource: String, _ object: JSON, part: Store.UpdatePart = .all,
                       _ change: (inout JSON) throws -> Void) throws -> JSON {
        var changed = object
        try change(&changed)
        if changed == object { return object }
        return try store.modify(resource, namespace: object.namespace, name: object.name, part: part, change)
    }

    /// Records an event about `object` (a controller's Normal progress or Warning trouble).
    static func event(_ store: Store, _ object: JSON, type: String = "Normal", reason: String, message: String, component: String) {
        let event = Events.make(for: object, kind: object.kind, apiVersion: object.apiVersion, type: type, reason: reason,
                                message: message, component: component, at: Timestamp.now())
        _ = try? store.create("events", event)
    }

    /// A reconcile that failed, as a Warning event on the object: the first failure and then
    /// every doubling of the count (1, 2, 4, 8…), so a stuck object is visible without flooding.
    static func reportFailure(_ store: Store, resource: String, _ key: EndpointSliceController.Key, _ error: any Error,
                              count: Int, retry: Double, component: String) {
        guard count & (count - 1) == 0, let object = store.get(resource, namespace: key.namespace, name: key.name) else { return }
        event(store, object, type: "Warning", reason: "ReconcileFailed",
              message: "\(error) (failure \(count) in a row; retrying in \(String(format: "%.1f", retry)) s)", component: component)
    }

    /// A status condition set to `status`/`reason`/`message`: lastTransitionTime moves only when
    /// the status changes, lastUpdateTime whenever anything does (or `touch` says progress).
    static func setCondition(_ conditions: inout [JSON], type: String, status: String, reason: String, message: String,
                             now: String, touch: Bool = false) {
        let old = conditions.firstIndex { $0["type"]?.string == type }
        var c: JSON = ["type": .string(type), "status": .string(status), "reason": .string(reason), "message": .string(message),
                       "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)]
        if let old {
            let previous = conditions[old]
            if previous["status"]?.string == status { c["lastTransitionTime"] = previous["lastTransitionTime"] }
            if previous["status"]?.string == status, previous["reason"]?.string == reason, previous["message"]?.string == message, !touch {
                c["lastUpdateTime"] = previous["lastUpdateTime"]
            }
            conditions[old] = c
        } else {
            conditions.append(c)
        }
    }
}
