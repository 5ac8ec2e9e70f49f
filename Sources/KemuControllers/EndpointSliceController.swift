import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// Publishes, for every Service with a selector, the pods behind it as EndpointSlices
/// (discovery.k8s.io/v1): one endpoint per pod with an IP, with upstream's conditions —
/// ready (pod Ready, and not terminating), serving (pod Ready, even while terminating),
/// terminating (deletionTimestamp set); publishNotReadyAddresses makes every endpoint ready.
/// Named targetPorts are resolved per pod; pods whose ports resolve differently land in
/// different slices, and a slice holds at most 100 endpoints (upstream's default); an endpoint
/// stays in the slice it is in, so a pod's change rewrites one slice, and newcomers fill slices
/// with room before new ones are made. Slices are labelled `kubernetes.io/service-name` and owned
/// by the Service.
/// The same pods are mirrored into the Service's v1 Endpoints (ready addresses and
/// notReadyAddresses per port set), for clients that still read the old API.
public final class EndpointSliceController: Sendable {
    public static let managedBy = "endpointslice-controller.k8s.io"
    static let slices = "endpointslices.discovery.k8s.io"
    public static let triggerTime = "endpoints.kubernetes.io/last-change-trigger-time"

    let store: Store
    let logger = Logger(label: "kemu.endpointslices")
    /// A Service's slices are rewritten at most every half second: under a storm of pod starts
    /// every proxy and watcher decodes each rewrite, so 100 ready flips become a few writes.
    private let queue = WorkQueue(spacing: 0.5)

    public init(store: Store) { self.store = store }

    /// Runs until cancelled: watches Services and Pods and reconciles every Service they touch. A
    /// watch that ends (410 after falling behind) is started again, which replays the current state.
    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let services = try store.watch(WatchFilter("services"))
        let pods = try store.watch(WatchFilter("pods"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await event in services { self.queue.add(Key(event.object)) }
            }
            group.addTask {
                for try await event in pods { self.enqueueServices(selecting: event.object) }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "endpointslices for \($0.namespace)/\($0.name)" }, self.reconcile)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A Service: namespace and name.
    public struct Key: Hashable, Sendable {
        public var namespace: String
        public var name: String
        init(_ o: JSON) { namespace = o.namespace; name = o.name }
        public init(namespace: String, name: String) { self.namespace = namespace; self.name = name }
    }

    /// A pod event matters to every Service in its namespace whose selector matches it. The event
    /// carries only the new state, so a pod that left a selector is caught by the Service's own
    /// slices naming it.
    func enqueueServices(selecting pod: JSON) {
        for service in store.list("services", namespace: pod.namespace).items {
            let selector = JSON.stringMap(service[path: "spec.selector"])
            guard !selector.isEmpty else { continue }
            let selected = LabelSelector(matchLabels: selector).matches(pod.labels)
            let listed = store.list(Self.slices, namespace: pod.namespace,
                                    labels: LabelSelector(matchLabels: ["kubernetes.io/service-name": service.name])).items
                .contains { slice in (slice["endpoints"]?.array ?? []).contains { $0[path: "targetRef.name"]?.string == pod.name } }
            if selected || listed { queue.add(Key(service)) }
        }
    }

    /// Makes the Service's slices match its pods: creates, updates (only when different) and
    /// deletes slices; a Service that is gone or has no selector keeps no managed slices.
    public func reconcile(_ key: Key) throws {
        let existing = store.list(Self.slices, namespace: key.namespace,
                                  labels: LabelSelector(matchLabels: ["kubernetes.io/service-name": key.name,
                                                                      "endpointslice.kubernetes.io/managed-by": Self.managedBy])).items
        guard let service = store.get("services", namespace: key.namespace, name: key.name),
              !JSON.stringMap(service[path: "spec.selector"]).isEmpty else {
            for slice in existing { _ = try? store.delete(Self.slices, namespace: key.namespace, name: slice.name) }
            // A selectorless Service's Endpoints are its owner's to write; a deleted one's go with it.
            if store.get("services", namespace: key.namespace, name: key.name) == nil {
                _ = try? store.delete("endpoints", namespace: key.namespace, name: key.name)
            }
            return
        }
        let desired = desiredSlices(service)
        try mirror(service, desired)
        // Each port set's slices: first those that carry it already, each keeping the endpoints
        // it has (so one pod's change rewrites one slice of at most 100, not all of them).
        var unused = existing
        var plans: [(ports: JSON, slices: [(slice: JSON?, endpoints: [JSON])], rest: [JSON])] = []
        for (ports, endpoints) in desired {
            var pending: [String: JSON] = [:]
            for e in endpoints { pending[Self.identity(e)] = e }
            var slices: [(slice: JSON?, endpoints: [JSON])] = []
            while let i = unused.firstIndex(where: { $0["ports"] == ports }) {
                let slice = unused.remove(at: i)
                let kept = (slice["endpoints"]?.array ?? []).compactMap { pending.removeValue(forKey: Self.identity($0)) }
                slices.append((slice, kept))
            }
            plans.append((ports, slices, endpoints.filter { pending[Self.identity($0)] != nil }))
        }
        for (ports, planned, newcomers) in plans {
            var slices = planned
            var rest = newcomers[...]
            // Newcomers fill slices with room, then spare slices (of ports no longer used), then new ones.
            for i in slices.indices where !rest.isEmpty {
                let room = max(0, Self.maxEndpointsPerSlice - slices[i].endpoints.count)
                slices[i].endpoints += rest.prefix(room)
                rest = rest.dropFirst(room)
            }
            while !rest.isEmpty {
                slices.append((unused.isEmpty ? nil : unused.removeFirst(), Array(rest.prefix(Self.maxEndpointsPerSlice))))
                rest = rest.dropFirst(Self.maxEndpointsPerSlice)
            }
            for (current, endpoints) in slices {
                guard !endpoints.isEmpty || current == nil else {
                    if let current { unused.append(current) }  // emptied: deleted below
                    continue
                }
                var slice = current ?? newSlice(service)
                slice.labels = Self.labels(of: slice, for: service)
                slice["ports"] = ports
                slice["endpoints"] = .array(endpoints)
                guard slice != current else { continue }
                // When the change was seen: proxies measure network programming latency from it.
                var annotations = slice.annotations
                annotations[Self.triggerTime] = Timestamp.formatNano(Date())
                slice.annotations = annotations
                if current == nil { try store.create(Self.slices, slice) } else { try store.update(Self.slices, slice) }
            }
        }
        for slice in unused { _ = try? store.delete(Self.slices, namespace: key.namespace, name: slice.name) }
    }

    /// Upstream's default `--max-endpoints-per-slice`.
    public static let maxEndpointsPerSlice = 100

    /// An endpoint's pod (its uid), which keeps it in the slice it is in.
    static func identity(_ endpoint: JSON) -> String {
        endpoint[path: "targetRef.uid"]?.string ?? endpoint[path: "addresses"]?.array?.first?.string ?? ""
    }

    /// Writes the v1 Endpoints named after the Service: one subset per port set, ready endpoints
    /// under `addresses`, the rest under `notReadyAddresses`.
    func mirror(_ service: JSON, _ desired: [(JSON, [JSON])]) throws {
        let subsets: [JSON] = desired.map { ports, endpoints in
            var subset: JSON = ["ports": ports]
            for (key, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                let addresses: [JSON] = endpoints.filter { ($0[path: "conditions.ready"]?.bool ?? false) == ready }.map { e in
                    var a: JSON = ["ip": e[path: "addresses"]?.array?.first ?? .null, "targetRef": e["targetRef"] ?? .null]
                    if let node = e["nodeName"] { a["nodeName"] = node }
                    if let hostname = e["hostname"] { a["hostname"] = hostname }
                    return a
                }
                if !addresses.isEmpty { subset[key] = .array(addresses) }
            }
            return subset
        }
        if var current = store.get("endpoints", namespace: service.namespace, name: service.name) {
            let before = current
            current["subsets"] = subsets.isEmpty ? nil : .array(subsets)
            if current != before { try store.update("endpoints", current) }
        } else {
            var endpoints: JSON = ["apiVersion": "v1", "kind": "Endpoints"]
            endpoints.name = service.name
            endpoints.namespace = service.namespace
            endpoints.labels = service.labels
            if !subsets.isEmpty { endpoints["subsets"] = .array(subsets) }
            try store.create("endpoints", endpoints)
        }
    }

    /// upstream's labels: the Service's name, the managing controller, and
    /// `service.kubernetes.io/headless` on a headless Service's slices — the only slices the
    /// cluster DNS needs, so it watches those and not every endpoint change of every Service.
    static func labels(of slice: JSON, for service: JSON) -> [String: String] {
        var labels = slice.labels
        labels["kubernetes.io/service-name"] = service.name
        labels["endpointslice.kubernetes.io/managed-by"] = managedBy
        labels[headless] = service[path: "spec.clusterIP"]?.string == "None" ? "" : nil
        return labels
    }

    public static let headless = "service.kubernetes.io/headless"

    func newSlice(_ service: JSON) -> JSON {
        var slice: JSON = ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4"]
        slice["metadata"] = [
            "generateName": .string(service.name + "-"), "namespace": .string(service.namespace),
            "labels": ["kubernetes.io/service-name": .string(service.name), "endpointslice.kubernetes.io/managed-by": .string(Self.managedBy)],
            "ownerReferences": [["apiVersion": "v1", "kind": "Service", "name": .string(service.name), "uid": .string(service.uid),
                                 "controller": true, "blockOwnerDeletion": true]],
        ]
        return slice
    }

    /// Ports (resolved for each pod) → endpoints, for the pods the Service selects.
    func desiredSlices(_ service: JSON) -> [(JSON, [JSON])] {
        let selector = LabelSelector(matchLabels: JSON.stringMap(service[path: "spec.selector"]))
        let publishNotReady = service[path: "spec.publishNotReadyAddresses"]?.bool == true
        var groups: [(JSON, [JSON])] = []
        for pod in store.list("pods", namespace: service.namespace, labels: selector).items {
            guard let ip = pod[path: "status.podIP"]?.string, !ip.isEmpty,
                  !["Succeeded", "Failed"].contains(pod[path: "status.phase"]?.string ?? "") else { continue }
            let ports = JSON.array((service[path: "spec.ports"]?.array ?? []).compactMap { port in
                guard let number = Self.resolve(port["targetPort"] ?? port["port"] ?? .null, in: pod) else { return nil }
                var p: JSON = ["port": .int(number), "protocol": port["protocol"] ?? "TCP"]
                p["name"] = .string(port["name"]?.string ?? "")
                return p
            })
            let podReady = (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
            let terminating = pod.deletionTimestamp != nil
            var endpoint: JSON = ["addresses": [.string(ip)],
                                  "conditions": ["ready": .bool(publishNotReady || (podReady && !terminating)),
                                                 "serving": .bool(publishNotReady || podReady),
                                                 "terminating": .bool(terminating)]]
            if let node = pod[path: "spec.nodeName"]?.string {
                endpoint["nodeName"] = .string(node)
                if let zone = store.get("nodes", name: node)?.labels[Self.zoneLabel] { endpoint["zone"] = .string(zone) }
            }
            // A pod whose subdomain is this Service is known by its hostname under it (StatefulSets).
            if let hostname = pod[path: "spec.hostname"]?.string, !hostname.isEmpty, pod[path: "spec.subdomain"]?.string == service.name {
                endpoint["hostname"] = .string(hostname)
            }
            endpoint["targetRef"] = ["kind": "Pod", "namespace": .string(pod.namespace), "name": .string(pod.name), "uid": .string(pod.uid)]
            if let i = groups.firstIndex(where: { $0.0 == ports }) { groups[i].1.append(endpoint) } else { groups.append((ports, [endpoint])) }
        }
        return groups.map { ($0.0, Self.withHints($0.1, for: service)) }
    }

    static let zoneLabel = "topology.kubernetes.io/zone"

    /// Topology hints, as upstream's controller gives them for `trafficDistribution`
    /// (PreferClose, PreferSameZone: each endpoint for its own zone; PreferSameNode: for its own
    /// node, and its zone) or `service.kubernetes.io/topology-mode: Auto` (here: as PreferClose,
    /// without upstream's CPU-proportional allocation). Zone hints only when every endpoint has
    /// a zone, as upstream: proxies then fall back to every endpoint.
    static func withHints(_ endpoints: [JSON], for service: JSON) -> [JSON] {
        let distribution = service[path: "spec.trafficDistribution"]?.string ?? ""
        let auto = ["auto"].contains(service.annotations["service.kubernetes.io/topology-mode"]?.lowercased() ?? "")
        let zones = ["PreferClose", "PreferSameZone", "PreferSameNode"].contains(distribution) || auto
        let nodes = distribution == "PreferSameNode"
        guard zones || nodes else { return endpoints }
        let everyZone = endpoints.allSatisfy { $0["zone"]?.string != nil }
        return endpoints.map { e in
            var e = e
            var hints: JSON = [:]
            if everyZone, let zone = e["zone"]?.string { hints["forZones"] = [["name": .string(zone)]] }
            if nodes, let node = e["nodeName"]?.string { hints["forNodes"] = [["name": .string(node)]] }
            if hints != [:] { e["hints"] = hints }
            return e
        }
    }

    /// A numeric targetPort, or a named one looked up in the pod's container ports.
    static func resolve(_ target: JSON, in pod: JSON) -> Int64? {
        if let n = target.int { return n }
        guard let name = target.string else { return nil }
        if let n = Int64(name) { return n }
        for c in pod[path: "spec.containers"]?.array ?? [] {
            for p in c["ports"]?.array ?? [] where p["name"]?.string == name { return p["containerPort"]?.int }
        }
        return nil
    }
}
