import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// Binds pending pods to nodes (the seed's "which node has more resources"): a node must be
/// Ready and schedulable, carry every `nodeSelector` label, and have the pod's CPU and memory
/// requests and one pod slot free in its allocatable; of those, the one with the most free
/// CPU and memory (as fractions) wins. A pod that fits nowhere stays Pending with condition
/// PodScheduled=False (Unschedulable) and a FailedScheduling event that says why, counted per
/// node as upstream words it. A pod naming a node that does not exist gets a NodeNotFound
/// warning event once (upstream says nothing; the pod would just stay Pending). A controller's
/// pods go first to the nodes running fewest of them (a Deployment's replicas spread over the
/// nodes, as upstream's default topology spread places them); equal candidates go to the node
/// running fewer pods, so a set of pods without requests spreads over the nodes. Pods naming
/// their node, or another scheduler, are left alone.
public final class Scheduler: Sendable {
    public static let name = "default-scheduler"
    let store: Store
    let logger = Logger(label: "kemu.scheduler")
    private let queue = WorkQueue()
    /// Pods already told that the node they name does not exist (one event each).
    private let warnedOrphans = Mutex<Set<String>>([])

    public init(store: Store) { self.store = store }

    /// Runs until cancelled. Any pod or node change triggers one pass over the pending pods.
    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let pods = try store.watch(WatchFilter("pods"))
        let nodes = try store.watch(WatchFilter("nodes"))
        let pass = EndpointSliceController.Key(namespace: "", name: "pass")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await event in pods where Self.mattersToScheduling(event) { self.queue.add(pass) } }
            group.addTask { for try await _ in nodes { self.queue.add(pass) } }
            group.addTask {
                try await self.queue.process(self.logger, { _ in "scheduling pass" }) { _ in try self.schedulePending() }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A pod event a pass must follow: a pod to place, one gone or finished (its room is free
    /// again), one bound at creation. A running pod's status changing (Ready, restarts) — most of
    /// a storm's events — changes no room, and a pass costs a walk over every pod.
    static func mattersToScheduling(_ event: WatchEvent) -> Bool {
        let pod = event.object
        switch event.type {
        case .added, .deleted: return true
        case .bookmark: return false
        case .modified: return (pod[path: "spec.nodeName"]?.string ?? "").isEmpty || pod.deletionTimestamp != nil || finished(pod)
        }
    }

    /// What a node has left, in thousandths (CPU millicores, memory milli-bytes, pods × 1000).
    struct Room {
        var name: String
        var labels: [String: String]
        var ready: Bool
        /// The condition taints the node has (memory or PID pressure).
        var pressure: [String] = []
        var allocatable: (cpu: Int64, memory: Int64, pods: Int64)
        var used: (cpu: Int64, memory: Int64, pods: Int64) = (0, 0, 0)

        var freeCPU: Int64 { allocatable.cpu - used.cpu }
        var freeMemory: Int64 { allocatable.memory - used.memory }
        var score: Double {
            (allocatable.cpu > 0 ? Double(freeCPU) / Double(allocatable.cpu) : 0)
                + (allocatable.memory > 0 ? Double(freeMemory) / Double(allocatable.memory) : 0)
        }
    }

    /// One pass: every pending pod, oldest first, bound or marked unschedulable.
    public func schedulePending() throws {
        let pods = store.list("pods").items
        var rooms: [String: Room] = [:]
        for node in store.list("nodes").items {
            let allocatable = node[path: "status.allocatable"] ?? node[path: "status.capacity"]
            let ready = (node[path: "status.conditions"]?.array ?? []).contains {
                $0["type"]?.string == "Ready" && $0["status"]?.string == "True"
            } && node[path: "spec.unschedulable"]?.bool != true && node.deletionTimestamp == nil
            // upstream's TaintNodesByCondition: a node under memory or PID pressure takes no new pods
            // that do not tolerate it, so an overloaded machine is not loaded further.
            let pressed = (node[path: "status.conditions"]?.array ?? []).compactMap { condition -> String? in
                guard condition["status"]?.string == "True" else { return nil }
                switch condition["type"]?.string {
                case "MemoryPressure": return "node.kubernetes.io/memory-pressure"
                case "PIDPressure": return "node.kubernetes.io/pid-pressure"
                default: return nil
                }
            }
            rooms[node.name] = Room(
                name: node.name, labels: node.labels, ready: ready, pressure: pressed,
                allocatable: (Quantity.milli(allocatable?["cpu"]) ?? 0, Quantity.milli(allocatable?["memory"]) ?? 0,
                              Quantity.milli(allocatable?["pods"]) ?? 110_000))
        }
        // Pods of one controller (a ReplicaSet's, a StatefulSet's) per node: its replicas spread
        // over the nodes first, as upstream's default topology spread has them.
        var siblings: [String: [String: Int]] = [:]
        for pod in pods where !Self.finished(pod) {
            guard let node = pod[path: "spec.nodeName"]?.string, !node.isEmpty else { continue }
            if rooms[node] == nil, pod.deletionTimestamp == nil, warnedOrphans.withLock({ $0.insert(pod.uid).inserted }) {
                try event(for: pod, type: "Warning", reason: "NodeNotFound",
                          message: "node \"\(node)\" does not exist: no node agent will run this pod (nodes: \(rooms.keys.sorted().joined(separator: ", ")))")
            }
            let r = Self.requests(pod)
            rooms[node]?.used.cpu += r.cpu
            rooms[node]?.used.memory += r.memory
            rooms[node]?.used.pods += 1000
            if let owner = Self.controller(pod) { siblings[owner, default: [:]][node, default: 0] += 1 }
        }
        let pending = pods.filter { pod in
            (pod[path: "spec.nodeName"]?.string ?? "").isEmpty && pod.deletionTimestamp == nil && !Self.finished(pod)
                && (pod[path: "spec.schedulerName"]?.string ?? Self.name) == Self.name
        }.sorted { (Self.created($0), $0.name) < (Self.created($1), $1.name) }
        for pod in pending {
            let r = Self.requests(pod)
            let spec = pod["spec"] ?? [:]
            var reasons: [String: Int] = [:]
            var best: Room?
            let owner = Self.controller(pod)
            // Fewest of the pod's siblings; then most room as a fraction; on a tie the node with
            // fewer pods, so equal pods spread.
            func rank(_ room: Room) -> (Int, Double, Int64) {
                (-(owner.flatMap { siblings[$0]?[room.name] } ?? 0), room.score, -room.used.pods)
            }
            for room in rooms.values.sorted(by: { $0.name < $1.name }) {
                var misfits: [String] = []
                if !room.ready {
                    reasons["node(s) had untolerated taint {node.kubernetes.io/not-ready: }", default: 0] += 1
                    continue
                }
                if let taint = room.pressure.first(where: { !Self.tolerates(pod, $0) }) {
                    reasons["node(s) had untolerated taint {\(taint): }", default: 0] += 1
                    continue
                }
                if !NodePlacement.matches(spec, name: room.name, labels: room.labels) { misfits.append("node(s) didn't match Pod's node affinity/selector") }
                if r.cpu > room.freeCPU { misfits.append("Insufficient cpu") }
                if r.memory > room.freeMemory { misfits.append("Insufficient memory") }
                if room.used.pods + 1000 > room.allocatable.pods { misfits.append("Too many pods") }
                if misfits.isEmpty {
                    if best.map({ rank(room) > rank($0) }) ?? true { best = room }
                } else {
                    for reason in misfits { reasons[reason, default: 0] += 1 }
                }
            }
            if let node = best {
                try bind(pod, to: node.name)
                rooms[node.name]?.used.cpu += r.cpu
                rooms[node.name]?.used.memory += r.memory
                rooms[node.name]?.used.pods += 1000
                if let owner { siblings[owner, default: [:]][node.name, default: 0] += 1 }
            } else {
                let detail = reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                try markUnschedulable(pod, message: "0/\(rooms.count) nodes are available" + (detail.isEmpty ? "." : ": \(detail)."))
            }
        }
    }

    /// Whether the pod tolerates a NoSchedule taint with this key (a toleration of the key, or
    /// `operator: Exists` without one).
    static func tolerates(_ pod: JSON, _ key: String) -> Bool {
        (pod[path: "spec.tolerations"]?.array ?? []).contains { t in
            let effect = t["effect"]?.string ?? ""
            guard effect.isEmpty || effect == "NoSchedule" else { return false }
            if let k = t["key"]?.string, !k.isEmpty { return k == key }
            return t["operator"]?.string == "Exists"
        }
    }

    /// The uid of the pod's controller (its ownerReference with `controller: true`), if any.
    static func controller(_ pod: JSON) -> String? {
        (pod[path: "metadata.ownerReferences"]?.array ?? []).first { $0["controller"]?.bool == true }?["uid"]?.string
    }

    static func created(_ o: JSON) -> String { o[path: "metadata.creationTimestamp"]?.string ?? "" }

    /// Succeeded and Failed pods hold no resources.
    static func finished(_ pod: JSON) -> Bool {
        ["Succeeded", "Failed"].contains(pod[path: "status.phase"]?.string ?? "")
    }

    /// The pod's CPU and memory requests, summed over its containers (limits stand in for
    /// missing requests, as upstream defaults them).
    static func requests(_ pod: JSON) -> (cpu: Int64, memory: Int64) {
        var total: (cpu: Int64, memory: Int64) = (0, 0)
        for container in pod[path: "spec.containers"]?.array ?? [] {
            let requests = container[path: "resources.requests"]
            let limits = container[path: "resources.limits"]
            total.cpu += Quantity.milli(requests?["cpu"] ?? limits?["cpu"]) ?? 0
            total.memory += Quantity.milli(requests?["memory"] ?? limits?["memory"]) ?? 0
        }
        return total
    }

    func bind(_ pod: JSON, to node: String) throws {
        try store.modify("pods", namespace: pod.namespace, name: pod.name) { p in
            guard p.uid == pod.uid, (p[path: "spec.nodeName"]?.string ?? "").isEmpty else { return }
            p["spec", default: [:]]["nodeName"] = .string(node)
            Self.setCondition(&p, status: "True", reason: nil, message: nil)
        }
        try event(for: pod, type: "Normal", reason: "Scheduled", message: "Successfully assigned \(pod.namespace)/\(pod.name) to \(node)")
    }

    /// PodScheduled=False with the reason; the event only when the message changes, so a pod
    /// waiting for room does not fill the event list.
    func markUnschedulable(_ pod: JSON, message: String) throws {
        let previous = (pod[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "PodScheduled" }
        if previous?["message"]?.string == message { return }
        try store.modify("pods", namespace: pod.namespace, name: pod.name, part: .status) { p in
            Self.setCondition(&p, status: "False", reason: "Unschedulable", message: message)
            if p[path: "status.phase"] == nil { p["status", default: [:]]["phase"] = "Pending" }
        }
        try event(for: pod, type: "Warning", reason: "FailedScheduling", message: message)
    }

    static func setCondition(_ pod: inout JSON, status: String, reason: String?, message: String?) {
        var condition: JSON = ["type": "PodScheduled", "status": .string(status), "lastProbeTime": .null,
                               "lastTransitionTime": .string(Timestamp.now())]
        if let reason { condition["reason"] = .string(reason) }
        if let message { condition["message"] = .string(message) }
        var conditions = (pod[path: "status.conditions"]?.array ?? []).filter { $0["type"]?.string != "PodScheduled" }
        conditions.insert(condition, at: 0)
        pod["status", default: [:]]["conditions"] = .array(conditions)
    }

    func event(for pod: JSON, type: String, reason: String, message: String) throws {
        try store.create("events", Events.make(for: pod, kind: "Pod", type: type, reason: reason, message: message, component: Self.name,
                                               at: Timestamp.now()))
    }
}

/// core/v1 Events as upstream's recorders write them.
