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
    /// A Service's inputs to its plan: the Service, its slices, the Faults on it, the routes
    /// that split it (with their backends' Services and slices).
    struct Inputs: Equatable {
        var service: ServiceInfo?
        var slices: [SliceInfo]
        var faults: [Fault]
        var splits: [SplitInputs] = []
    }

    static let noInputs = Inputs(service: nil, slices: [], faults: [])

    private(set) var index = ServiceSliceIndex(service: { ServiceInfo($0) }, slice: { SliceInfo($0) })
    /// kemu.dev/v1 Faults by their own namespace/name.
    private(set) var faults: [ServiceKey: Fault] = [:]
    /// The cloud load balancer's view of the nodes.
    private(set) var nodes: [String: BalancedNode] = [:]
    /// Gateway API routes (TCPRoute, HTTPRoute) by kind/namespace/name, and what they tie
    /// together: each parent Service's routes in order of precedence, each backend's parents.
    private(set) var routes: [String: TrafficRoute] = [:]
    private var routesByParent: [ServiceKey: [TrafficRoute]] = [:]
    private var parentsOfBackend: [ServiceKey: Set<ServiceKey>] = [:]
    private(set) var servicesSynced = false
    private(set) var slicesSynced = false
    /// The route kinds still to list before the first sync (none for the cloud load balancer).
    private var routesUnsynced: Set<String> = []
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

    /// `routeKinds`: the route kinds whose first list the first sync waits for (a restarted
    /// proxy must not send a split Service's connections unsplit for a moment).
    init(startedAt: Date = Date(), routeKinds: Set<String> = []) {
        self.startedAt = startedAt
        routesUnsynced = routeKinds
    }

    var synced: Bool { servicesSynced && slicesSynced && routesUnsynced.isEmpty }
    var hasPending: Bool { !pending.isEmpty || !forced.isEmpty }

    func inputs(_ key: ServiceKey) -> Inputs {
        Inputs(service: index.services[key], slices: index.slices(of: key), faults: faults(on: key), splits: splits(of: key))
    }

    /// The routes that split `key`, in precedence order, one entry per parentRef naming it.
    func splits(of key: ServiceKey) -> [SplitInputs] {
        guard let routes = routesByParent[key] else { return [] }
        return routes.flatMap { route in
            let backends = route.backends.map { ref -> SplitInputs.Backend in
                let backend = ServiceKey(namespace: route.namespace, name: ref.service)
                return ref.resolvable ? .init(ref: ref, service: index.services[backend], slices: index.slices(of: backend))
                    : .init(ref: ref, service: nil, slices: [])
            }
            return route.parents.filter { $0.service == key.name }.map { SplitInputs(route: route.description, port: $0.port, backends: backends) }
        }
    }

    /// Notes `keys` as touched, and the Services split onto them, keeping the inputs they had
    /// before the first touch.
    private mutating func touch(_ keys: [ServiceKey]) {
        var keys = keys
        if !parentsOfBackend.isEmpty { keys += keys.flatMap { parentsOfBackend[$0] ?? [] } }
        for key in keys where pending[key] == nil { pending[key] = checkedOut ? inputs(key) : Self.noInputs }
        if pendingSince == nil && !keys.isEmpty { pendingSince = Date() }
    }

    /// The informers the tracker follows.
    enum Source { case services, slices, faults, nodes, routes(String) }

    mutating func apply(_ event: InformerEvent, from source: Source) {
        switch source {
        case .services: apply(service: event)
        case .slices: apply(slice: event)
        case .faults: apply(fault: event)
        case .nodes: apply(node: event)
        case let .routes(kind): apply(route: event, kind: kind)
        }
    }

    /// A route came, changed or went: the Services it splits, before and after, are planned
    /// again. A route kemu cannot read (admission refuses those) splits nothing.
    mutating func apply(route event: InformerEvent, kind: String) {
        let next: TrafficRoute?
        let o: JSON
        switch event {
        case let .added(object), let .updated(_, object):
            o = object
            if case let .success(route) = TrafficRoute.parse(object) { next = route } else { next = nil }
        case let .deleted(object): (o, next) = (object, nil)
        case .synced: routesUnsynced.remove(kind); return
        }
        let key = "\(kind)/\(o.namespace)/\(o.name)"
        let parents = { (r: TrafficRoute?) in (r?.parents ?? []).map { ServiceKey(namespace: r?.namespace ?? "", name: $0.service) } }
        touch(parents(routes[key]) + parents(next))
        routes[key] = next
        routesByParent = [:]
        parentsOfBackend = [:]
        for route in routes.values.sorted(by: TrafficRoute.precedes) {
            for parent in Set(parents(route)) {
                routesByParent[parent, default: []].append(route)
                for b in route.backends where b.resolvable {
                    parentsOfBackend[ServiceKey(namespace: route.namespace, name: b.service), default: []].insert(parent)
                }
            }
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
        index.services[key] != nil || index.slices[key] != nil || routesByParent[key] != nil || faults.values.contains { $0.namespace == key.namespace && $0.service == key.name }
    }

    /// The Faults on a Service, in name order.
    func faults(on key: ServiceKey) -> [Fault] {
        faults.isEmpty ? [] : faults.values.filter { $0.namespace == key.namespace && $0.service == key.name }.sorted { $0.name < $1.name }
    }
}
