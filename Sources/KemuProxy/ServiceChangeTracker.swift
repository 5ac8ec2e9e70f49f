import Foundation
import KemuAPI
import KemuClient
import KemuIP

/// What the proxy knows of the cluster, fed by its informers, and what changed since the proxy
/// last applied it (kube-proxy's ServiceChangeTracker / EndpointsChangeTracker): for each Service
/// touched, its inputs as they were when last checked out (`previous`) and as they are now
/// (`current`). A change undone before the next sync (a slice that came and went, an update that
/// restored the object) comes out as no change at all.
struct ServiceChangeTracker {
    /// A Service's inputs to its plan: the Service, its slices, the Faults on it.
    struct Inputs: Equatable {
        var service: ServiceInfo?
        var slices: [SliceInfo]
        var faults: [Fault]
    }

    static let noInputs = Inputs(service: nil, slices: [], faults: [])

    private(set) var index = ServiceSliceIndex(service: { ServiceInfo($0) }, slice: { SliceInfo($0) })
    /// kemu.dev/v1 Faults by their own namespace/name.
    private(set) var faults: [ServiceKey: Fault] = [:]
    /// The cloud load balancer's view of the nodes.
    private(set) var nodes: [String: BalancedNode] = [:]
    private(set) var servicesSynced = false
    private(set) var slicesSynced = false
    /// Touched Services, with their inputs at the last checkout.
    private var pending: [ServiceKey: Inputs] = [:]
    /// Whether anything was checked out yet: before that every Service's previous inputs are
    /// none (nothing was applied), and the first lists' 20,000 events need not look them up.
    private var checkedOut = false
    /// Services to plan again whatever changed (a failed apply, a changed node list).
    private var forced: Set<ServiceKey> = []
    /// Newest EndpointSlice trigger time per touched Service (network programming latency).
    private var triggers: [ServiceKey: Date] = [:]
    /// When the oldest change not yet checked out arrived.
    private(set) var pendingSince: Date?
    /// Trigger times from before this are not this proxy's work (a restarted proxy would
    /// otherwise report the age of every slice as programming latency).
    let startedAt: Date

    init(startedAt: Date = Date()) { self.startedAt = startedAt }

    var synced: Bool { servicesSynced && slicesSynced }
    var hasPending: Bool { !pending.isEmpty || !forced.isEmpty }

    func inputs(_ key: ServiceKey) -> Inputs {
        Inputs(service: index.services[key], slices: index.slices(of: key), faults: faults(on: key))
    }

    /// Notes `keys` as touched, keeping the inputs they had before the first touch.
    private mutating func touch(_ keys: [ServiceKey]) {
        for key in keys where pending[key] == nil { pending[key] = checkedOut ? inputs(key) : Self.noInputs }
        if pendingSince == nil && !keys.isEmpty { pendingSince = Date() }
    }

    /// The informers the tracker follows.
    enum Source { case services, slices, faults, nodes }

    mutating func apply(_ event: InformerEvent, from source: Source) {
        switch source {
        case .services: apply(service: event)
        case .slices: apply(slice: event)
        case .faults: apply(fault: event)
        case .nodes: apply(node: event)
        }
    }

    mutating func apply(service event: InformerEvent) {
        switch event {
        case let .added(o), let .updated(_, o), let .deleted(o): touch([ServiceKey(namespace: o.namespace, name: o.name)])
        case .synced: servicesSynced = true
        }
        index.apply(service: event)
    }

    mutating func apply(slice event: InformerEvent) {
        switch event {
        case let .added(o), let .updated(_, o), let .deleted(o):
            // The slice's Service before and after (a relabelled slice touches both).
            let owner = ServiceSliceIndex<ServiceInfo, SliceInfo>.owner(of: o)
            let before = index.owner(ofSlice: ServiceKey(namespace: o.namespace, name: o.name))
            touch(before == owner ? owner.map { [$0] } ?? [] : [before, owner].compactMap { $0 })
            if case .deleted = event {} else if let owner,
                let text = o.annotations["endpoints.kubernetes.io/last-change-trigger-time"], let t = Timestamp.parse(text), t >= startedAt {
                triggers[owner] = max(triggers[owner] ?? t, t)
            }
        case .synced: slicesSynced = true
        }
        index.apply(slice: event)
    }

    /// A Fault came, changed or went: the Services it was and is about change.
    mutating func apply(fault event: InformerEvent) {
        let key: ServiceKey
        var next: Fault?
        switch event {
        case let .added(o), let .updated(_, o): (key, next) = (ServiceKey(namespace: o.namespace, name: o.name), Fault(o))
        case let .deleted(o): key = ServiceKey(namespace: o.namespace, name: o.name)
        case .synced: return
        }
        touch([faults[key], next].compactMap { $0.map { ServiceKey(namespace: $0.namespace, name: $0.service) } })
        faults[key] = next
    }

    /// A node came, went or changed readiness: every Service is planned again (the cloud load
    /// balancer's pools are the Ready nodes).
    mutating func apply(node event: InformerEvent) {
        switch event {
        case let .added(o), let .updated(_, o):
            let ip = (o[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string
            let ready = (o[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
            let node = ip.flatMap { IPv4Address($0) }.map { BalancedNode(name: o.name, address: $0, ready: ready) }
            if nodes[o.name] == node { return }
            nodes[o.name] = node
        case let .deleted(o):
            if nodes.removeValue(forKey: o.name) == nil { return }
        case .synced: return
        }
        force(Array(index.services.keys))
    }

    /// Plans `keys` again at the next checkout, changed or not (after a failed apply).
    mutating func force(_ keys: [ServiceKey]) {
        forced.formUnion(keys)
        if pendingSince == nil && !keys.isEmpty { pendingSince = Date() }
    }

    /// Everything touched since the last checkout that really changed (or was forced), in key
    /// order, each with its inputs at the last checkout (`inputs(key)` is what they are now), and
    /// the newest trigger time of each.
    mutating func checkout() -> (changes: [(key: ServiceKey, previous: Inputs)], triggers: [ServiceKey: Date]) {
        var changes: [(key: ServiceKey, previous: Inputs)] = []
        let keys = forced.isEmpty ? Array(pending.keys) : Array(Set(pending.keys).union(forced))
        for key in keys.sorted() {
            let previous = pending[key] ?? Self.noInputs
            // Nothing before (the first lists, a new Service): changed if there is anything now,
            // found without building the inputs (20,000 of them at the first sync).
            let changed = forced.contains(key) || (previous == Self.noInputs ? hasInputs(key) : inputs(key) != previous)
            if changed { changes.append((key, previous)) }
        }
        defer {
            checkedOut = true
            pending.removeAll()
            forced.removeAll()
            triggers.removeAll()
            pendingSince = nil
        }
        guard !triggers.isEmpty else { return (changes, [:]) }
        let changed = Set(changes.map(\.key))
        return (changes, triggers.filter { changed.contains($0.key) })
    }

    private func hasInputs(_ key: ServiceKey) -> Bool {
        index.services[key] != nil || index.slices[key] != nil || faults.values.contains { $0.namespace == key.namespace && $0.service == key.name }
    }

    /// The Faults on a Service, in name order.
    func faults(on key: ServiceKey) -> [Fault] {
        faults.isEmpty ? [] : faults.values.filter { $0.namespace == key.namespace && $0.service == key.name }.sorted { $0.name < $1.name }
    }
}
