import Foundation
import KemuAPI
import KemuClient
import KemuIP
import KemuSystem
import Logging
import Synchronization

/// Settings of one node's proxy.
public struct ProxyConfig: Sendable {
    public var context: PlanContext
    public var engine = EngineSettings()
    /// Changes that arrive closer together than this are applied together (kube-proxy's
    /// minSyncPeriod, much shorter: applying a change here costs microseconds).
    public var minSyncInterval: Duration = .milliseconds(5)
    /// kube-proxy's health port (/healthz, /livez) and metrics port (/metrics); nil: not served.
    public var healthAddress: SocketAddress? = SocketAddress(IPv4Address(0), 10256)
    public var metricsAddress: SocketAddress? = SocketAddress(IPv4Address(0), 10249)
    /// Addresses on `lo` in these ranges that no Service claims are removed at start (a previous
    /// proxy's leftovers); others are never touched.
    public var managedRanges: [IPv4Network] = []
    /// Addresses in the managed ranges that belong to someone else (the cluster DNS IP).
    public var reservedAddresses: Set<IPv4Address> = []
    /// Ranges made local with one route at start (the service CIDR): their addresses are
    /// never added one by one. Others (external and load-balancer IPs) get a /32 on lo each.
    public var localRanges: [IPv4Network] = []

    /// A node's proxy, or the emulated cloud load balancer (the `lb` host): LoadBalancer
    /// Services' ingress IPs, balanced to their NodePorts on Ready nodes.
    public enum Role: Sendable { case node, cloudLoadBalancer }
    public var role = Role.node

    public init(context: PlanContext) { self.context = context }
}

/// Where the proxy puts the addresses it serves: `lo` in the node's namespace. A protocol so the
/// change tracker is tested without netlink.
public protocol LocalAddresses: Sendable {
    func add(_ ip: IPv4Address) throws
    func remove(_ ip: IPv4Address) throws
    func list() throws -> [IPv4Address]
    /// Makes a whole range local at once.
    func addRange(_ network: IPv4Network) throws
}

/// Applies bandwidth Faults: each local endpoint pod listed gets its link limited to the rate,
/// every other pod of the node none. Called with the whole wanted set whenever it changes (and
/// at the first sync, so a restarted proxy clears what its predecessor left).
public protocol PodShaper: Sendable {
    func shape(_ wanted: [IPv4Address: UInt64])
}

/// kube-proxy's job for one node: follows Services and EndpointSlices, turns each changed
/// Service into a `ServicePlan`, and applies the difference to the previous plan — addresses on
/// `lo`, listening sockets, endpoint pools — to the byte-path engine. Changes are batched at
/// most every `minSyncInterval`; nothing is rebuilt for an event that touches one Service.
public final class ServiceProxy: Sendable {
    public let config: ProxyConfig
    let client: APIClient
    let engine: ProxyEngine
    let addresses: any LocalAddresses
    let shaper: (any PodShaper)?
    let logger = Logger(label: "kemu.proxy")
    let state = Mutex(State())
    let changed = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let metrics = ProxyMetrics()
    let healthChecks = HealthCheckServer(logger: Logger(label: "kemu.proxy.healthcheck"))
    let started = Date()

    struct Key: Hashable, Comparable, CustomStringConvertible {
        var namespace: String
        var name: String
        var description: String { "\(namespace)/\(name)" }
        static func < (a: Key, b: Key) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
    }

    struct State {
        var services: [Key: ServiceInfo] = [:]
        var slices: [Key: [String: SliceInfo]] = [:]
        /// The Service each slice (by namespace and its own name) is labelled with.
        var sliceOwners: [Key: Key] = [:]
        var plans: [Key: ServicePlan] = [:]
        var dirty: Set<Key> = []
        /// Newest EndpointSlice trigger time per dirty Service (for network programming latency).
        var triggers: [Key: Date] = [:]
        var servicesSynced = false
        var slicesSynced = false
        var addressUsers: [IPv4Address: Int] = [:]
        var pools: [String: ServicePlan.Pool] = [:]
        var listening: [SocketAddress: String] = [:]
        var reported: [Key: [String]] = [:]
        /// The cloud load balancer's view of the nodes.
        var nodes: [String: BalancedNode] = [:]
        /// The health check port of every Service whose plan has one.
        var healthChecks: [Key: ServicePlan.HealthCheck] = [:]
        /// The last event reason the load balancer reported per Service.
        var balancerReported: [Key: String] = [:]
        /// When the oldest change not yet applied arrived.
        var pendingSince: Date?
        /// kemu.dev/v1 Faults by their own namespace/name.
        var faults: [Key: Fault] = [:]
        /// The last changes of each Service's endpoints as this proxy applied them (time, addresses).
        var history: [Key: [(Date, [SocketAddress])]] = [:]
        /// The bandwidth limits last given to the shaper (nil: never yet).
        var shaped: [IPv4Address: UInt64]?
    }

    public init(config: ProxyConfig, client: APIClient, addresses: any LocalAddresses, shaper: (any PodShaper)? = nil) throws {
        self.config = config
        self.client = client
        self.addresses = addresses
        self.shaper = shaper
        engine = try ProxyEngine(settings: config.engine)
    }

    /// The addresses the proxy listens on now (for tests and `kemu status`).
    public var listening: [SocketAddress] { state.withLock { $0.listening.keys.sorted { ($0.ip, $0.port) < ($1.ip, $1.port) } } }

    public func snapshot() async -> EngineSnapshot { await engine.snapshot() }

    /// When the last sync finished, and for how long a change has waited (nil: none waits).
    func health() -> (lastSync: Date?, waiting: Double?) {
        let since = state.withLock { $0.pendingSince }
        return (metrics.lastSync, since.map { Date().timeIntervalSince($0) })
    }

    /// Runs until cancelled.
    public func run() async throws {
        let limit = raiseDescriptorLimit(to: 1 << 20)
        if limit < 65536 { logger.warning("open files limited to \(limit): many Services or connections will fail") }
        let status = try await ProxyStatusServer(proxy: self)
        for range in config.localRanges { try addresses.addRange(range) }
        engine.start()
        // The informers keep revisions only: the state below holds each object's compact form
        // (ServiceInfo, SliceInfo), made straight from the object as it comes.
        let services = Informer(client, APIResources.services, cache: .revisions)
        let slices = Informer(client, APIResources.endpointSlices, cache: .revisions)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run { self.serviceEvent($0) } }
            group.addTask { try await slices.run { self.sliceEvent($0) } }
            if config.role == .node {
                let faults = Informer(client, APIResources.faults)
                group.addTask { try await faults.run { self.faultEvent($0) } }
            }
            if config.role == .cloudLoadBalancer {
                let nodes = Informer(client, APIResources.nodes)
                group.addTask { try await nodes.run { self.nodeEvent($0) } }
            }
            group.addTask { try await self.syncLoop() }
            group.addTask { try await status.run() }
            defer { group.cancelAll() }
            do { try await group.next() } catch {
                await stopServing()
                throw error
            }
        }
        await stopServing()
    }

    /// Listeners close, connections under way get the engine's drain time, then the rest go.
    private func stopServing() async {
        healthChecks.closeAll()
        await engine.stop()
    }

    func serviceEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(o), let .updated(_, o): s.services[Key(namespace: o.namespace, name: o.name)] = ServiceInfo(o); s.dirty.insert(Key(namespace: o.namespace, name: o.name))
            case let .deleted(o): s.services[Key(namespace: o.namespace, name: o.name)] = nil; s.dirty.insert(Key(namespace: o.namespace, name: o.name))
            case .synced: s.servicesSynced = true
            }
            if s.pendingSince == nil { s.pendingSince = Date() }
        }
        changed.continuation.yield()
    }

    /// A Fault came, changed or went: the Services it was and is about are planned again.
    func faultEvent(_ event: InformerEvent) {
        state.withLock { s in
            func mark(_ fault: Fault?) {
                if let fault { s.dirty.insert(Key(namespace: fault.namespace, name: fault.service)) }
            }
            switch event {
            case let .added(o), let .updated(_, o):
                let key = Key(namespace: o.namespace, name: o.name)
                mark(s.faults[key])
                s.faults[key] = Fault(o)
                mark(s.faults[key])
            case let .deleted(o):
                mark(s.faults.removeValue(forKey: Key(namespace: o.namespace, name: o.name)))
            case .synced: return
            }
            if s.pendingSince == nil { s.pendingSince = Date() }
        }
        changed.continuation.yield()
    }

    /// A node came, went, or changed readiness: every LoadBalancer Service is planned again.
    func nodeEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(o), let .updated(_, o):
                let ip = (o[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string
                let ready = (o[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
                let node = ip.flatMap(IPv4Address.init).map { BalancedNode(name: o.name, address: $0, ready: ready) }
                if s.nodes[o.name] == node { return }
                s.nodes[o.name] = node
            case let .deleted(o): s.nodes[o.name] = nil
            case .synced: return
            }
            s.dirty.formUnion(s.services.keys)
            if s.pendingSince == nil { s.pendingSince = Date() }
        }
        changed.continuation.yield()
    }

    func sliceEvent(_ event: InformerEvent) {
        state.withLock { s in
            func key(_ o: JSON) -> Key? { o.labels["kubernetes.io/service-name"].map { Key(namespace: o.namespace, name: $0) } }
            switch event {
            case let .added(o), let .updated(_, o):
                let own = Key(namespace: o.namespace, name: o.name)
                // A slice relabelled to another Service leaves the one it was with.
                if let before = s.sliceOwners[own], before != key(o) {
                    s.slices[before]?[o.name] = nil
                    if s.slices[before]?.isEmpty == true { s.slices[before] = nil }
                    s.dirty.insert(before)
                }
                guard let k = key(o) else { s.sliceOwners[own] = nil; return }
                s.sliceOwners[own] = k
                s.slices[k, default: [:]][o.name] = SliceInfo(o)
                s.dirty.insert(k)
                if let text = o.annotations["endpoints.kubernetes.io/last-change-trigger-time"], let t = Timestamp.parse(text) {
                    s.triggers[k] = max(s.triggers[k] ?? t, t)
                }
            case let .deleted(o):
                // After a re-list the object is a stub without labels: the owner is remembered.
                guard let k = s.sliceOwners.removeValue(forKey: Key(namespace: o.namespace, name: o.name)) ?? key(o) else { return }
                s.slices[k]?[o.name] = nil
                if s.slices[k]?.isEmpty == true { s.slices[k] = nil }
                s.dirty.insert(k)
            case .synced: s.slicesSynced = true
            }
            if s.pendingSince == nil { s.pendingSince = Date() }
        }
        changed.continuation.yield()
    }

    /// Waits for changes, applies them, then rests `minSyncInterval` so bursts coalesce. Nothing
    /// is applied before both informers have listed (a half-known world would drop endpoints).
    func syncLoop() async throws {
        var first = true
        for await _ in changed.stream {
            guard state.withLock({ $0.servicesSynced && $0.slicesSynced }) else { continue }
            sync(initial: first)
            first = false
            try await Task.sleep(for: config.minSyncInterval)
        }
    }

    /// Applies every dirty Service's new plan: engine commands in one batch, `lo` addresses
    /// added before listeners need them and removed after.
    func sync(initial: Bool) {
        let started = Date()
        let (work, triggers) = state.withLock { s -> ([(Key, ServicePlan?)], [Key: Date]) in
            let keys = s.dirty.sorted()
            s.dirty.removeAll()
            s.pendingSince = nil
            defer { s.triggers.removeAll() }
            let nodes = s.nodes.values.sorted { $0.name < $1.name }
            return (keys.map { k in
                (k, s.services[k].map { service in
                    let slices = Array((s.slices[k] ?? [:]).values).sorted { $0.name < $1.name }
                    switch config.role {
                    case .node:
                        var plan = ServicePlan(service: service, slices: slices, context: config.context)
                        plan.inject(s.faults.values.filter { $0.namespace == k.namespace && $0.service == k.name })
                        return plan
                    case .cloudLoadBalancer: return ServicePlan(loadBalancerFor: service, slices: slices, nodes: nodes, defaults: config.context.defaults)
                    }
                })
            }, s.triggers)
        }
        var commands: [EngineCommand] = []
        var removedAddresses: [IPv4Address] = []
        var healthChecksChanged = false
        for (key, plan) in work {
            let old = state.withLock { $0.plans[key] } ?? ServicePlan()
            let new = plan ?? ServicePlan()
            apply(key, from: old, to: new, &commands, &removedAddresses)
            state.withLock { s in
                s.plans[key] = plan
                s.healthChecks[key] = new.healthCheck
                Self.remember(&s, key, new, at: started)
            }
            healthChecksChanged = healthChecksChanged || old.healthCheck != new.healthCheck
            report(key, new.problems)
        }
        engine.send(commands)
        shapeBandwidth()
        if config.role == .cloudLoadBalancer { reportBalancers(work.map(\.0)) }
        if healthChecksChanged {
            healthChecks.update(state.withLock { s in
                Dictionary(s.healthChecks.map { ($0.value.port, HealthCheckServer.Entry(namespace: $0.key.namespace, name: $0.key.name,
                                                                                       localEndpoints: $0.value.localEndpoints)) },
                           uniquingKeysWith: { a, _ in a })
            })
        }
        for ip in removedAddresses {
            do { try addresses.remove(ip) } catch { logger.warning("removing \(ip) from lo: \(error)") }
        }
        if initial {
            removeLeftoverAddresses()
            returnFreedMemory()  // the first lists' parse buffers go back to the system
        }
        let finished = Date()
        if initial {
            let (listeners, addresses) = state.withLock { ($0.listening.count, $0.addressUsers.count) }
            logger.info("first sync: \(work.count) services, \(listeners) listeners, \(addresses) addresses on lo in \(Int(finished.timeIntervalSince(started) * 1000)) ms (\(Int(finished.timeIntervalSince(self.started) * 1000)) ms since the proxy started)")
        }
        metrics.observeSync(seconds: finished.timeIntervalSince(started), services: work.count)
        for (_, trigger) in triggers { metrics.observeProgramming(seconds: finished.timeIntervalSince(trigger)) }
    }

    private func apply(_ key: Key, from old: ServicePlan, to new: ServicePlan, _ commands: inout [EngineCommand], _ removedAddresses: inout [IPv4Address]) {
        // Addresses first: a listener on an address not yet local would accept nothing.
        for ip in new.localAddresses.subtracting(old.localAddresses) where !config.localRanges.contains(where: { $0.contains(ip) }) {
            let first = state.withLock { s in
                s.addressUsers[ip, default: 0] += 1
                return s.addressUsers[ip] == 1
            }
            if first {
                do { try addresses.add(ip) } catch { logger.warning("\(key): adding \(ip) to lo: \(error)") }
            }
        }
        for (name, pool) in new.pools where old.pools[name] != pool {
            commands.append(.setPool(name, pool.settings, pool.endpoints))
        }
        // New addresses, moved ones, and ones that could not be bound before (tried again).
        for (address, pool) in new.frontends {
            let current = state.withLock { $0.listening[address] }
            if current == pool { continue }
            if current != nil {
                commands.append(.route(address, pool: pool))
                state.withLock { $0.listening[address] = pool }
                continue
            }
            let fd: Int32
            do {
                fd = try TCPSocket.listen(on: address, reusePort: true)
            } catch {
                logger.error("\(key): cannot listen on \(address): \(error)")
                continue
            }
            commands.append(.listen(fd, address, pool: pool))
            state.withLock { $0.listening[address] = pool }
        }
        for address in old.frontends.keys where new.frontends[address] == nil {
            commands.append(.unlisten(address))
            state.withLock { $0.listening[address] = nil }
        }
        for name in old.pools.keys where new.pools[name] == nil { commands.append(.removePool(name)) }
        for ip in old.localAddresses.subtracting(new.localAddresses) where !config.localRanges.contains(where: { $0.contains(ip) }) {
            let last = state.withLock { s in
                s.addressUsers[ip, default: 1] -= 1
                if s.addressUsers[ip] == 0 { s.addressUsers[ip] = nil; return true }
                return false
            }
            if last { removedAddresses.append(ip) }
        }
    }

    /// The cloud load balancer's events, as a cloud controller posts them: a LoadBalancer Service
    /// the allocator could give no address (the pool is used up) gets a warning; one that is
    /// served, a normal event. Each once per change of state.
    private func reportBalancers(_ keys: [Key]) {
        let pool = config.localRanges.first.map { " \($0)" } ?? ""
        let due: [(ServiceInfo, String, String, String)] = state.withLock { s in
            keys.compactMap { key in
                guard let service = s.services[key], service.type == "LoadBalancer" else {
                    s.balancerReported[key] = nil
                    return nil
                }
                let served = !(s.plans[key]?.frontends.isEmpty ?? true)
                let pending = service.loadBalancerIPs.isEmpty
                let (type, reason, message): (String, String, String)
                if pending {
                    (type, reason, message) = ("Warning", "SyncLoadBalancerFailed",
                                               "no free address in the load-balancer pool\(pool): the Service stays pending until an address is released and the Service is updated")
                } else if served {
                    (type, reason, message) = ("Normal", "EnsuredLoadBalancer", "Ensured load balancer")
                } else {
                    return nil
                }
                if s.balancerReported[key] == reason { return nil }
                s.balancerReported[key] = reason
                return (service, type, reason, message)
            }
        }
        guard !due.isEmpty else { return }
        let events = APIResources.events
        let now = Timestamp.now()
        let client = self.client, logger = self.logger
        for (service, type, reason, message) in due {
            if type == "Warning" { logger.warning("service \(service.namespace)/\(service.name): \(message)") }
            var object: JSON = [:]
            (object.namespace, object.name, object.uid) = (service.namespace, service.name, service.uid)
            let event = Events.make(for: object, kind: "Service", type: type, reason: reason, message: message, component: "service-controller", at: now)
            Task {
                do { _ = try await client.create(events, event) } catch { logger.warning("event \(reason): \(error)") }
            }
        }
    }

    /// How many changes of a Service's endpoints `/endpoints` keeps.
    static let historyLength = 64

    /// Records the plan's endpoints if they differ from the last ones recorded (only Services
    /// that have endpoints or had some, so a large quiet cluster keeps nothing).
    static func remember(_ s: inout State, _ key: Key, _ plan: ServicePlan, at time: Date) {
        let endpoints = Set(plan.pools.values.flatMap { $0.endpoints.map(\.address) }).sorted { ($0.ip, $0.port) < ($1.ip, $1.port) }
        let last = s.history[key]?.last?.1
        guard last != endpoints, !(last == nil && endpoints.isEmpty) else { return }
        s.history[key, default: []].append((time, endpoints))
        if s.history[key]!.count > historyLength { s.history[key]!.removeFirst() }
    }

    /// `{"default/web": [{"time": 1700000000.123, "endpoints": ["10.244.1.2:8080"]}, …]}`
    public func endpointHistory() -> JSON {
        state.withLock { s in
            var out = JSONObject()
            for (key, changes) in s.history.sorted(by: { $0.key < $1.key }) {
                out[key.description] = .array(changes.map { ["time": .double($0.0.timeIntervalSince1970), "endpoints": .array($0.1.map { .string($0.description) })] })
            }
            return .object(out)
        }
    }

    /// Bandwidth Faults: the local endpoints of each Service with one, at its rate.
    private func shapeBandwidth() {
        guard let shaper else { return }
        let wanted = state.withLock { s -> [IPv4Address: UInt64]? in
            var wanted: [IPv4Address: UInt64] = [:]
            for fault in s.faults.values {
                guard let rate = fault.bytesPerSecond else { continue }
                for slice in (s.slices[Key(namespace: fault.namespace, name: fault.service)] ?? [:]).values {
                    for e in slice.endpoints where e.nodeName == config.context.nodeName {
                        if let ip = e.address { wanted[ip] = rate }
                    }
                }
            }
            // Unchanged and empty: nothing to do. Otherwise the shaper looks again (a pod recreated
            // on the same address has a new, unshaped veth).
            if s.shaped == wanted && wanted.isEmpty { return nil }
            s.shaped = wanted
            return wanted
        }
        if let wanted { shaper.shape(wanted) }
    }

    /// A problem is logged once, not at every sync.
    private func report(_ key: Key, _ problems: [String]) {
        let fresh = state.withLock { s -> [String] in
            let before = s.reported[key] ?? []
            s.reported[key] = problems.isEmpty ? nil : problems
            return problems.filter { !before.contains($0) }
        }
        for p in fresh { logger.warning("service \(key): \(p)") }
    }

    /// After the first full sync: addresses a previous proxy left on `lo` that no Service wants.
    private func removeLeftoverAddresses() {
        guard !config.managedRanges.isEmpty, let present = try? addresses.list() else { return }
        let wanted = state.withLock { Set($0.addressUsers.keys) }
        for ip in present where config.managedRanges.contains(where: { $0.contains(ip) })
            && !wanted.contains(ip) && !config.reservedAddresses.contains(ip) {
            try? addresses.remove(ip)
        }
    }
}
