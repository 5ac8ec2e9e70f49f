import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// apps/v1 DaemonSets, as upstream's controller runs them: one pod on every node the pod may run
/// on (its nodeSelector, required node affinity, and the node's NoSchedule/NoExecute taints
/// against its tolerations plus the ones every daemon pod gets: not-ready, unreachable, the
/// pressures, unschedulable), created bound to the node with upstream's node affinity on
/// `metadata.name` (kemu's scheduler has nothing to choose). A node that appears gets its pod; a
/// node that stops matching loses it; a failed pod is replaced. Templates are kept as
/// ControllerRevisions (`kubectl rollout history/undo ds`); RollingUpdate replaces old pods node
/// by node within maxUnavailable (deleting first) or maxSurge (starting the new pod first, the old
/// one going once the new is available); OnDelete only gives new pods to nodes without one.
/// Status: what `kubectl get ds` and `kubectl rollout status ds` read.
public final class DaemonSetController: Sendable {
    static let sets = "daemonsets.apps"
    public static let hashLabel = "controller-revision-hash"
    static let generationLabel = "pod-template-generation"
    let store: Store
    let logger = Logger(label: "kemu.daemonsets")
    private let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let sets = try store.watch(WatchFilter(Self.sets))
        let pods = try store.watch(WatchFilter("pods"))
        let nodes = try store.watch(WatchFilter("nodes"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await e in sets { self.queue.add(Key(namespace: e.object.namespace, name: e.object.name)) } }
            group.addTask {
                for try await e in pods {
                    guard let owner = Workload.controllerReference(e.object), owner["kind"]?.string == "DaemonSet",
                          let name = owner["name"]?.string else { continue }
                    self.queue.add(Key(namespace: e.object.namespace, name: name))
                }
            }
            group.addTask {
                // A node's heartbeat changes nothing a daemon set decides on; labels, taints,
                // its coming and going do.
                for try await e in nodes where e.type != .modified || self.placementChanged(e.object) {
                    for set in self.store.list(Self.sets).items { self.queue.add(Key(namespace: set.namespace, name: set.name)) }
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "daemonset \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.sets, key, error, count: count, retry: retry,
                                           component: "daemonset-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// What each node looked like to placement when last seen (labels, taints), by name.
    private let placements = NodePlacements()

    func placementChanged(_ node: JSON) -> Bool {
        placements.update(node.name, [node["metadata"]?["labels"] ?? [:], node[path: "spec.taints"] ?? [], node[path: "spec.unschedulable"] ?? false])
    }

    public func reconcile(_ key: Key) throws {
        guard let set = store.get(Self.sets, namespace: key.namespace, name: key.name), set.deletionTimestamp == nil else { return }
        let nodes = store.list("nodes").items
        let nodeNames = Set(nodes.map(\.name))
        let owned = store.list("pods", namespace: set.namespace).items.filter { Workload.isControlled($0, by: set) }
        let inUse = Set(owned.compactMap { $0.labels[Self.hashLabel] }.map { "\(set.name)-\($0)" })
        let (_, update) = try Workload.revisions(store, of: set, resource: Self.sets, current: nil, inUse: inUse)
        let hash = update.labels["controller.kubernetes.io/hash"] ?? String(update.name.dropFirst(set.name.count + 1))
        let template = Self.podTemplate(set)

        var deletes: [JSON] = []
        var creates: [String] = []
        // Failed pods are replaced; pods of nodes that are gone go (upstream's pod GC).
        for pod in owned where pod.deletionTimestamp == nil {
            let node = Self.node(of: pod)
            if pod[path: "status.phase"]?.string == "Failed" || (!node.isEmpty && !nodeNames.contains(node)) { deletes.append(pod) }
        }
        let live = owned.filter { Workload.active($0) && !deletes.contains($0) }
        let byNode = Dictionary(grouping: live, by: Self.node(of:))
        let minReady = Double(set[path: "spec.minReadySeconds"]?.int ?? 0)
        let now = Date()
        var nextCheck: Double?
        func available(_ pod: JSON) -> Bool {
            let (ok, left) = Workload.available(pod, minReadySeconds: minReady, now: now)
            if let left { nextCheck = min(nextCheck ?? left, left) }
            return ok
        }

        var counts = (desired: 0, current: 0, misscheduled: 0, ready: 0, updated: 0, available: 0)
        var rolling: [(node: String, old: [JSON], new: [JSON])] = []
        for node in nodes.sorted(by: { $0.name < $1.name }) {
            let mine = byNode[node.name] ?? []
            let (shouldRun, shouldContinue) = Self.placement(template, on: node)
            if !shouldRun {
                if !mine.isEmpty {
                    counts.misscheduled += 1
                    if !shouldContinue { deletes += mine }
                }
                continue
            }
            counts.desired += 1
            if mine.isEmpty { creates.append(node.name); continue }
            counts.current += 1
            let new = mine.filter { $0.labels[Self.hashLabel] == hash }
            let old = mine.filter { $0.labels[Self.hashLabel] != hash }
            if mine.contains(where: Workload.ready) { counts.ready += 1 }
            if !new.isEmpty { counts.updated += 1 }
            if mine.contains(where: available) { counts.available += 1 }
            // More than one new pod on a node (a lost race): the oldest stays.
            let byAge = new.sorted { (Scheduler.created($0), $0.name) < (Scheduler.created($1), $1.name) }
            deletes += byAge.dropFirst()
            if !old.isEmpty { rolling.append((node.name, old, Array(byAge.prefix(1)))) }
        }

        if set[path: "spec.updateStrategy.type"]?.string != "OnDelete" {
            let (surgeDeletes, surgeCreates) = rollingUpdate(set, rolling, desired: counts.desired,
                                                             unavailable: counts.desired - counts.available, available: available)
            deletes += surgeDeletes
            creates += surgeCreates
        } else {
            // OnDelete: an old pod stays until someone deletes it; extra old ones still go.
            for entry in rolling where !entry.new.isEmpty || entry.old.count > 1 {
                deletes += entry.new.isEmpty ? Array(entry.old.dropFirst()) : entry.old
            }
        }

        for pod in deletes {
            do {
                try Workload.deletePod(store, pod)
                Workload.event(store, set, reason: "SuccessfulDelete", message: "Deleted pod: \(pod.name)", component: "daemonset-controller")
            } catch StoreError.notFound {}
        }
        for node in creates { try createPod(set, template: template, node: node, hash: hash) }

        var status: JSON = [
            "desiredNumberScheduled": .int(Int64(counts.desired)), "currentNumberScheduled": .int(Int64(counts.current)),
            "numberMisscheduled": .int(Int64(counts.misscheduled)), "numberReady": .int(Int64(counts.ready)),
            "updatedNumberScheduled": .int(Int64(counts.updated)), "numberAvailable": .int(Int64(counts.available)),
            "observedGeneration": .int(set.generation),
        ]
        if counts.desired > counts.available { status["numberUnavailable"] = .int(Int64(counts.desired - counts.available)) }
        if let collisions = set[path: "status.collisionCount"] { status["collisionCount"] = collisions }
        try Workload.modify(store, Self.sets, set, part: .status) { $0["status"] = status }
        if let nextCheck { queue.add(key, after: nextCheck + 0.05) }
    }

    /// The rolling update's step: which old pods go now and which nodes get a new pod early.
    /// maxSurge 0: an old pod that is not available goes at once; an available one only while
    /// fewer than maxUnavailable nodes are without an available pod. maxSurge > 0: up to maxSurge
    /// nodes run a new pod beside the old one, which goes when the new one is available.
    func rollingUpdate(_ set: JSON, _ rolling: [(node: String, old: [JSON], new: [JSON])], desired: Int, unavailable: Int,
                       available: (JSON) -> Bool) -> (deletes: [JSON], creates: [String]) {
        let spec = set[path: "spec.updateStrategy.rollingUpdate"]
        let maxSurge = Workload.scaled(spec?["maxSurge"], total: desired, roundUp: true) ?? 0
        let maxUnavailable = Workload.scaled(spec?["maxUnavailable"], total: desired, roundUp: true) ?? 1
        var deletes: [JSON] = []
        var creates: [String] = []
        if maxSurge == 0 {
            var down = unavailable
            for entry in rolling {
                let oldAvailable = entry.old.contains(where: available)
                if !oldAvailable {
                    deletes += entry.old
                } else if down < maxUnavailable {
                    deletes += entry.old
                    down += 1
                }
            }
        } else {
            var surging = rolling.filter { !$0.new.isEmpty }.count
            for entry in rolling {
                if let new = entry.new.first {
                    if available(new) { deletes += entry.old }
                } else if !entry.old.contains(where: available) {
                    deletes += entry.old
                } else if surging < maxSurge {
                    creates.append(entry.node)
                    surging += 1
                }
            }
        }
        return (deletes, creates)
    }

    func createPod(_ set: JSON, template: JSON, node: String, hash: String) throws {
        var owner = set
        owner["spec"]?["template"] = template
        var pod = Workload.pod(from: owner, name: "")
        pod["metadata", default: [:]]["generateName"] = .string("\(set.name)-")
        var labels = pod.labels
        labels[Self.hashLabel] = hash
        labels[Self.generationLabel] = String(set.generation)
        pod.labels = labels
        // Upstream's form: required affinity to the node by name; kemu binds it at once too.
        pod["spec", default: [:]]["affinity", default: [:]]["nodeAffinity"] = [
            "requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [[
                "matchFields": [["key": "metadata.name", "operator": "In", "values": [.string(node)]]],
            ]]],
        ]
        pod["spec", default: [:]]["nodeName"] = .string(node)
        do {
            let created = try Workload.createPod(store, pod)
            Workload.event(store, set, reason: "SuccessfulCreate", message: "Created pod: \(created.name)", component: "daemonset-controller")
        } catch {
            Workload.event(store, set, type: "Warning", reason: "FailedCreate", message: "Error creating: \(error)", component: "daemonset-controller")
            throw error
        }
    }

    /// The template with the tolerations upstream gives every daemon pod.
    static func podTemplate(_ set: JSON) -> JSON {
        var template = set[path: "spec.template"] ?? [:]
        var tolerations = template[path: "spec.tolerations"]?.array ?? []
        var extra: [(String, String)] = [
            ("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"), ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ]
        if template[path: "spec.hostNetwork"]?.bool == true { extra.append(("node.kubernetes.io/network-unavailable", "NoSchedule")) }
        for (key, effect) in extra where !tolerations.contains(where: { $0["key"]?.string == key && $0["effect"]?.string == effect }) {
            tolerations.append(["key": .string(key), "operator": "Exists", "effect": .string(effect)])
        }
        template["spec", default: [:]]["tolerations"] = .array(tolerations)
        return template
    }

    /// The node a daemon pod is for: where it is bound, or the node its affinity names.
    public static func node(of pod: JSON) -> String {
        if let bound = pod[path: "spec.nodeName"]?.string, !bound.isEmpty { return bound }
        let terms = pod[path: "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"]?.array ?? []
        return terms.lazy.compactMap { term in
            (term["matchFields"]?.array ?? []).first { $0["key"]?.string == "metadata.name" }?["values"]?.array?.first?.string
        }.first ?? ""
    }

    /// Upstream's nodeShouldRunDaemonPod: whether a new daemon pod belongs on the node, and
    /// whether one already there may stay (only an untolerated NoExecute taint, or a selector or
    /// affinity that no longer matches, sends it away).
    static func placement(_ template: JSON, on node: JSON) -> (shouldRun: Bool, shouldContinue: Bool) {
        let spec = template["spec"] ?? [:]
        guard NodePlacement.matches(spec, node: node) else { return (false, false) }
        let tolerations = spec["tolerations"]?.array ?? []
        let untolerated = (node[path: "spec.taints"]?.array ?? []).filter { taint in
            !tolerations.contains { NodePlacement.tolerates($0, taint) }
        }
        if untolerated.contains(where: { $0["effect"]?.string == "NoExecute" }) { return (false, false) }
        if untolerated.contains(where: { $0["effect"]?.string == "NoSchedule" }) { return (false, true) }
        return (true, true)
    }
}

/// The last placement-relevant view of each node, so node heartbeats do not wake every
/// DaemonSet.
final class NodePlacements: Sendable {
    private let seen = Mutex<[String: [JSON]]>([:])

    /// Records `view` for the node; whether it differs from the last one.
    func update(_ node: String, _ view: [JSON]) -> Bool {
        seen.withLock { seen in
            defer { seen[node] = view }
            return seen[node] != view
        }
    }
}
