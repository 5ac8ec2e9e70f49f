import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// Runs StatefulSets (apps/v1): pods `<name>-0 … <name>-(N-1)` with stable names, hostnames and
/// (through the headless Service `spec.serviceName`) stable DNS names
/// `<pod>.<service>.<namespace>.svc.<domain>`. OrderedReady creates ordinals in order, each
/// Running and Ready before the next, and removes them in reverse, one at a time; Parallel does
/// both at once. Each template revision is a ControllerRevision `<name>-<hash>`;
/// RollingUpdate replaces pods from the highest ordinal down to `partition`, one at a time, each
/// Ready before the next. `volumeClaimTemplates` give every ordinal a PersistentVolumeClaim
/// `<claim>-<name>-<ordinal>` (bound at once; the node agent backs it with a directory that
/// outlives the pod) which is never deleted with the pod or on scale-down, so a pod that comes
/// back finds its data.
public final class StatefulSetController: Sendable {
    public static let podName = "statefulset.kubernetes.io/pod-name"
    public static let podIndex = "apps.kubernetes.io/pod-index"
    public static let revisionLabel = "controller-revision-hash"
    static let sets = "statefulsets.apps"
    static let revisions = "controllerrevisions.apps"

    let store: Store
    let logger = Logger(label: "kemu.statefulsets")
    let queue = WorkQueue()
    /// StatefulSets already warned about a missing headless Service (one event, not one per pass).
    let warned = Mutex<Set<String>>([])

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let sets = try store.watch(WatchFilter(Self.sets))
        let pods = try store.watch(WatchFilter("pods"))
        let services = try store.watch(WatchFilter("services"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await event in sets { self.queue.add(Key(namespace: event.object.namespace, name: event.object.name)) } }
            group.addTask {
                for try await event in pods {
                    guard let owner = Workload.controllerReference(event.object), owner["kind"]?.string == "StatefulSet",
                          let name = owner["name"]?.string else { continue }
                    self.queue.add(Key(namespace: event.object.namespace, name: name))
                }
            }
            group.addTask {
                for try await event in services {
                    for set in self.store.list(Self.sets, namespace: event.object.namespace).items
                    where set[path: "spec.serviceName"]?.string == event.object.name {
                        self.queue.add(Key(namespace: set.namespace, name: set.name))
                    }
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "StatefulSet \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.sets, key, error, count: count, retry: retry, component: "statefulset-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    static func ordinal(_ pod: JSON, of set: JSON) -> Int? {
        let prefix = set.name + "-"
        guard pod.name.hasPrefix(prefix), let n = Int(pod.name.dropFirst(prefix.count)), n >= 0 else { return nil }
        return n
    }

    static func runningAndReady(_ pod: JSON) -> Bool {
        pod[path: "status.phase"]?.string == "Running" && Workload.ready(pod) && pod.deletionTimestamp == nil
    }

    public func reconcile(_ key: Key) throws {
        guard let set = store.get(Self.sets, namespace: key.namespace, name: key.name), set.deletionTimestamp == nil,
              let selector = try? LabelSelector(json: set[path: "spec.selector"]), !selector.isEmpty else { return }
        checkService(set)
        let (current, update) = try revisions(set)
        var pods: [Int: JSON] = [:]
        for pod in store.list("pods", namespace: set.namespace).items where Workload.isControlled(pod, by: set) {
            if let n = Self.ordinal(pod, of: set), selector.matches(pod.labels) { pods[n] = pod }
        }
        try step(set, pods: &pods, current: current, update: update)
        try updateStatus(set, pods: Array(pods.values), current: current, update: update)
    }

    /// One pass of upstream's algorithm: create, replace or wait on ordinals 0..<replicas in
    /// order, then remove condemned ordinals from the highest, then roll one pod to the update
    /// revision. OrderedReady stops at the first pod that is not Running and Ready.
    func step(_ set: JSON, pods: inout [Int: JSON], current: JSON, update: JSON) throws {
        let replicas = Int(set[path: "spec.replicas"]?.int ?? 1)
        let ordered = set[path: "spec.podManagementPolicy"]?.string != "Parallel"
        let partition = Int(set[path: "spec.updateStrategy.rollingUpdate.partition"]?.int ?? 0)
        let rolling = set[path: "spec.updateStrategy.type"]?.string != "OnDelete"
        for n in 0..<replicas {
            guard let pod = pods[n] else {
                let revision = rolling && n < partition ? current : update
                pods[n] = try createPod(set, ordinal: n, revision: revision)
                if ordered { return }
                continue
            }
            let phase = pod[path: "status.phase"]?.string ?? ""
            if (phase == "Failed" || phase == "Succeeded") && pod.deletionTimestamp == nil {
                // Replaced: deleted now, created again (same name) on the next pass.
                try store.delete("pods", namespace: pod.namespace, name: pod.name, uid: pod.uid)
                pods[n] = nil
                if ordered { return }
                continue
            }
            if ordered && !Self.runningAndReady(pod) { return }
        }
        let condemned = pods.keys.filter { $0 >= replicas }.sorted(by: >)
        for n in condemned {
            let pod = pods[n]!
            if pod.deletionTimestamp != nil {
                if ordered { return }
                continue
            }
            if ordered && pods.contains(where: { $0.key < n && !Self.runningAndReady($0.value) }) { return }
            try Workload.deletePod(store, pod)
            if ordered { return }
        }
        // Rolling update: the highest ordinal not yet at the update revision goes; its
        // replacement is created from the update revision on a later pass.
        guard rolling else { return }
        for n in (0..<replicas).reversed() where n >= partition {
            guard let pod = pods[n] else { return }
            if pod.labels[Self.revisionLabel] != update.name {
                if pod.deletionTimestamp == nil { try Workload.deletePod(store, pod) }
                return
            }
            if !Self.runningAndReady(pod) { return }
        }
    }

    /// The pod of `ordinal` from `revision`'s template, with its claims (created when missing).
    func createPod(_ set: JSON, ordinal: Int, revision: JSON) throws -> JSON {
        var owner = set
        owner["spec"]?["template"] = Workload.template(of: revision) ?? set[path: "spec.template"]
        let name = "\(set.name)-\(ordinal)"
        var pod = Workload.pod(from: owner, name: name)
        var labels = pod.labels
        labels[Self.podName] = name
        labels[Self.podIndex] = String(ordinal)
        labels[Self.revisionLabel] = revision.name
        pod.labels = labels
        pod["spec", default: [:]]["hostname"] = .string(name)
        if let service = set[path: "spec.serviceName"]?.string, !service.isEmpty { pod["spec", default: [:]]["subdomain"] = .string(service) }
        var volumes = pod[path: "spec.volumes"]?.array ?? []
        for template in set[path: "spec.volumeClaimTemplates"]?.array ?? [] {
            guard let claim = template[path: "metadata.name"]?.string else { continue }
            let claimName = "\(claim)-\(name)"
            try ensureClaim(set, template: template, name: claimName)
            volumes.removeAll { $0["name"]?.string == claim }
            volumes.append(["name": .string(claim), "persistentVolumeClaim": ["claimName": .string(claimName)]])
        }
        if !volumes.isEmpty { pod["spec", default: [:]]["volumes"] = .array(volumes) }
        do {
            return try Workload.createPod(store, pod)
        } catch StoreError.alreadyExists {
            throw ControllerError("pod \(name) exists and is not this StatefulSet's (or is still going)")
        }
    }

    /// A PersistentVolumeClaim from the template, Bound at once: kemu's storage is a directory
    /// per claim, made by the node agent that mounts it. Claims are not owned by the
    /// StatefulSet, so they outlive its pods and itself (upstream's Retain default).
    func ensureClaim(_ set: JSON, template: JSON, name: String) throws {
        guard store.get("persistentvolumeclaims", namespace: set.namespace, name: name) == nil else { return }
        var claim: JSON = ["apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": template["metadata"] ?? [:],
                           "spec": template["spec"] ?? [:]]
        claim.name = name
        claim.namespace = set.namespace
        var labels = claim.labels
        for (k, v) in JSON.stringMap(set[path: "spec.selector.matchLabels"]) { labels[k] = v }
        claim.labels = labels
        claim["status"] = ["phase": "Bound", "accessModes": claim[path: "spec.accessModes"] ?? ["ReadWriteOnce"],
                           "capacity": claim[path: "spec.resources.requests"] ?? [:]]
        do { try store.create("persistentvolumeclaims", claim) } catch StoreError.alreadyExists {}
    }

    /// The stable DNS names need a headless Service named `spec.serviceName`; without one the
    /// pods still run, and one Warning event says why their names do not resolve.
    func checkService(_ set: JSON) {
        let service = set[path: "spec.serviceName"]?.string ?? ""
        let svc = service.isEmpty ? nil : store.get("services", namespace: set.namespace, name: service)
        let problem: String? = if service.isEmpty {
            "spec.serviceName is empty: pods get no stable DNS names (create a headless Service and name it there)"
        } else if svc == nil {
            "service \"\(service)\" not found: pods get no stable DNS names until a headless Service (clusterIP: None) of that name exists"
        } else if svc?[path: "spec.clusterIP"]?.string != "None" {
            "service \"\(service)\" is not headless (clusterIP: None): pods get no per-pod DNS names"
        } else {
            nil
        }
        let id = set.uid
        let first = warned.withLock { w in
            if problem == nil { w.remove(id); return false }
            return w.insert(id).inserted
        }
        if let problem, first {
            Workload.event(store, set, type: "Warning", reason: "FailedHeadlessService", message: problem, component: "statefulset-controller")
        }
    }
}
