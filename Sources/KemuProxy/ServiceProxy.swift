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
    /// …and at least this many times the last sync's duration (see BoundedFrequencyRunner.busy):
    /// measured at 100 nodes and 1,000 pods, syncing back to back was the proxies' main cost.
    public var syncBusyFactor = 10.0
    /// A sync runs at least this often, changes or not (kube-proxy's syncPeriod): it retries
    /// what is left and proves the loop alive to /healthz.
    public var maxSyncInterval: Duration = .seconds(30)
    /// After a sync that could not apply everything (an address that cannot be bound), the
    /// next one comes this soon, without waiting for a change.
    public var retryInterval: Duration = .seconds(1)
    /// /healthz reports unhealthy when the last successful sync is older than `maxSyncInterval`
    /// plus this (kube-proxy: healthTimeout = 2 × syncPeriod).
    public var healthGrace: Duration = .seconds(30)
    /// kube-proxy's health port (/healthz, /livez) and metrics port (/metrics); nil: not served.
    public var healthAddress: SocketAddress? = SocketAddress(IPv4Address(0), 10256)
    /// Loopback only, as kube-proxy's: pods and other hosts cannot read the counters.
    public var metricsAddress: SocketAddress? = SocketAddress(IPv4Address(127, 0, 0, 1), 10249)
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
    /// More of `/metrics` (this node's NetworkPolicy counters).
    public var extraMetrics: (@Sendable () -> String)?
    /// More pages on the status port (`/mesh`: the mesh's certificates and tunnels), JSON each.
    public var pages: [String: @Sendable () -> String] = [:]

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

/// kube-proxy's job for one node, in kube-proxy's parts: informers feed a change tracker
/// (`ServiceChangeTracker`, previous and current inputs per Service); a bounded-frequency runner
/// (`BoundedFrequencyRunner`) syncs; a sync turns each changed Service into a `ServicePlan` and
/// `PlanApplier` applies the difference to the previous plan through a `ProxyBackend` (the
/// epoll + splice engine) and the node's local addresses. The cloud load balancer's events,
/// bandwidth Faults and the endpoint history are components of their own. Nothing is rebuilt
/// for an event that touches one Service.
public final class ServiceProxy: Sendable {
    public let config: ProxyConfig
    let client: APIClient
    let engine: ProxyEngine
    let addresses: any LocalAddresses
    let logger = Logger(label: "kemu.proxy")
    let tracker: Mutex<ServiceChangeTracker>
    let runner: BoundedFrequencyRunner
    /// What took effect: each Service's plan, and the applier's listeners and addresses. Only the
    /// sync (one at a time, the runner's) changes it.
    let applied: Mutex<Applied>
    let metrics = ProxyMetrics()
    let healthChecks = HealthCheckServer(logger: Logger(label: "kemu.proxy.healthcheck"))
    let history = EndpointHistory()
    let bandwidth: BandwidthShaping?
    let balancerEvents: LoadBalancerEvents?
    let started = Date()

    struct Applied {
        var plans: [ServiceKey: ServicePlan] = [:]
        var applier: PlanApplier
        /// Problems last logged per Service (each is logged once, not at every sync).
        var reported: [ServiceKey: [String]] = [:]
        var firstSyncDone = false
        var lastSuccess: Date?
    }

    /// `backend`: where plans take effect (default: this proxy's engine).
    public init(config: ProxyConfig, client: APIClient, addresses: any LocalAddresses, shaper: (any PodShaper)? = nil,
                backend: (any ProxyBackend)? = nil) throws {
        var engineSettings = config.engine
        if engineSettings.transparentDial {
            do {
                try TransparentDial.install()
            } catch {
                engineSettings.transparentDial = false
                logger.warning("endpoints will see the node's address, not their clients': \(error)")
            }
        }
        self.config = config
        self.client = client
        self.addresses = addresses
        engine = try ProxyEngine(settings: engineSettings)
        tracker = Mutex(ServiceChangeTracker(startedAt: started, routeKinds: config.role == .node ? Set(Self.routeResources.map(\.kind)) : []))
        runner = BoundedFrequencyRunner(.init(min: config.minSyncInterval, max: config.maxSyncInterval, retry: config.retryInterval,
                                             busy: config.syncBusyFactor))
        applied = Mutex(Applied(applier: PlanApplier(backend: backend ?? EngineBackend(engine: engine), addresses: addresses,
                                                     localRanges: config.localRanges, logger: logger)))
        bandwidth = shaper.map { BandwidthShaping(shaper: $0, nodeName: config.context.nodeName) }
        balancerEvents = config.role == .cloudLoadBalancer
            ? LoadBalancerEvents(client: client, pool: config.localRanges.first?.description ?? "", logger: logger) : nil
    }

    /// The addresses the proxy listens on now (for tests and `kemu status`).
    public var listening: [FrontendAddress] {
        applied.withLock { $0.applier.listening.keys.sorted() }
    }

    public func snapshot() async -> EngineSnapshot { await engine.snapshot() }

    /// Healthy (kube-proxy's /healthz) while the last successful sync is recent (the runner syncs
    /// at least every `maxSyncInterval`, so older means syncs stopped or keep failing) and no
    /// change has waited longer than that either. Also when it was last successful.
    func health(now: Date = Date()) -> (healthy: Bool, lastSuccess: Date?) {
        let limit = (config.maxSyncInterval + config.healthGrace) / .seconds(1)
        let last = applied.withLock { $0.lastSuccess }
        let waiting = tracker.withLock { $0.pendingSince }.map { now.timeIntervalSince($0) } ?? 0
        guard let last else { return (false, nil) }
        return (now.timeIntervalSince(last) < limit && waiting < limit, last)
    }

    /// Runs until cancelled.
    public func run() async throws {
        let limit = raiseDescriptorLimit(to: 1 << 20)
        if limit < 65536 { logger.warning("open files limited to \(limit): many Services or connections will fail") }
        let status = try await ProxyStatusServer(proxy: self)
        for range in config.localRanges { try addresses.addRange(range) }
        engine.start()
        if engine.settings.mesh != nil && engine.settings.transparentDial { captureMeshedPods() }
        // The informers keep revisions only: the tracker holds each object's compact form
        // (ServiceInfo, SliceInfo), made straight from the object as it comes.
        let services = Informer(client, APIResources.services, cache: .revisions)
        let slices = Informer(client, APIResources.endpointSlices, cache: .revisions)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run { self.event(.services, $0) } }
            group.addTask { try await slices.run { self.event(.slices, $0) } }
            if config.role == .node {
                let faults = Informer(client, APIResources.faults)
                group.addTask { try await faults.run { self.event(.faults, $0) } }
                for resource in Self.routeResources {
                    let routes = Informer(client, resource)
                    group.addTask { try await routes.run { self.event(.routes(resource.kind), $0) } }
                }
            }
            if config.role == .cloudLoadBalancer {
                let nodes = Informer(client, APIResources.nodes)
                group.addTask { try await nodes.run { self.event(.nodes, $0) } }
            }
            group.addTask { await self.runner.run { self.sync() } }
            group.addTask { try await status.run() }
            defer { group.cancelAll() }
            do { try await group.next() } catch {
                await stopServing()
                throw error
            }
        }
        await stopServing()
    }

    /// The Gateway API routes that split Services by weight.
    static let routeResources = APIResources.all.filter { $0.group == TrafficRoute.group && TrafficRoute.kinds.contains($0.kind) }

    /// Listeners close, connections under way get the engine's drain time, then the rest go.
    private func stopServing() async {
        healthChecks.closeAll()
        await engine.stop()
    }

    /// An informer's event: into the tracker, and a sync asked for.
    func event(_ source: ServiceChangeTracker.Source, _ event: InformerEvent) {
        tracker.withLock { $0.apply(event, from: source) }
        runner.request()
    }

    /// Applies every changed Service's new plan; returns false when something could not be
    /// applied (those Services are tried again at the runner's retry). Nothing is applied before
    /// both informers have listed (a half-known world would drop endpoints).
    func sync() -> Bool {
        let started = Date()
        let work = tracker.withLock { t -> (changes: [(ServiceKey, ServicePlan?, ServiceInfo?)], triggers: [ServiceKey: Date], bandwidth: [IPv4Address: UInt64]?)? in
            guard t.synced else { return nil }
            let (changes, triggers) = t.checkout()
            let nodes = t.nodes.values.sorted { $0.name < $1.name }
            let plans = changes.map { key, _ -> (ServiceKey, ServicePlan?, ServiceInfo?) in
                let service = t.index.services[key]
                return (key, service.map { service in
                    let slices = t.index.slices(of: key)
                    switch config.role {
                    case .node:
                        var plan = ServicePlan(service: service, slices: slices, context: config.context, splits: t.splits(of: key))
                        plan.inject(t.faults(on: key))
                        return plan
                    case .cloudLoadBalancer:
                        return ServicePlan(loadBalancerFor: service, slices: slices, nodes: nodes, defaults: config.context.defaults)
                    }
                }, service)
            }
            let wanted = bandwidth.map { b in BandwidthShaping.wanted(faults: t.faults.values, slices: { t.index.slices(of: $0) }, node: b.nodeName) }
            return (plans, triggers, wanted)
        }
        guard let work else { return true }
        var released: [IPv4Address] = []
        var failed: [ServiceKey] = []
        let (initial, healthChecksChanged, served) = applied.withLock { a -> (Bool, Bool, [(ServiceKey, ServiceInfo?, served: Bool)]) in
            var healthChecksChanged = false
            var served: [(ServiceKey, ServiceInfo?, served: Bool)] = []
            for (key, plan, service) in work.changes {
                let old = a.plans[key] ?? ServicePlan()
                let new = plan ?? ServicePlan()
                let failures = a.applier.apply(key, from: old, to: new, released: &released)
                a.plans[key] = plan
                history.remember(key, new, at: started)
                healthChecksChanged = healthChecksChanged || old.healthCheck != new.healthCheck
                if !failures.isEmpty { failed.append(key) }
                report(key, new.problems + failures, &a.reported)
                if balancerEvents != nil { served.append((key, service, !new.frontends.isEmpty)) }
            }
            a.applier.backend.commit()
            defer { a.firstSyncDone = true }
            return (!a.firstSyncDone, healthChecksChanged, served)
        }
        if let wanted = work.bandwidth { bandwidth?.apply(wanted) }
        balancerEvents?.report(served)
        if healthChecksChanged { updateHealthChecks() }
        for ip in released {
            do { try addresses.remove(ip) } catch { logger.warning("removing \(ip) from lo: \(error)") }
        }
        if initial {
            removeLeftoverAddresses()
            returnFreedMemory()  // the first lists' parse buffers go back to the system
        }
        let finished = Date()
        if initial {
            let (listeners, addresses) = applied.withLock { ($0.applier.listening.count, $0.applier.wantedAddresses.count) }
            logger.info("first sync: \(work.changes.count) services, \(listeners) listeners, \(addresses) addresses on lo in \(Int(finished.timeIntervalSince(started) * 1000)) ms (\(Int(finished.timeIntervalSince(self.started) * 1000)) ms since the proxy started)")
        }
        metrics.observeSync(seconds: finished.timeIntervalSince(started), services: work.changes.count)
        for (_, trigger) in work.triggers { metrics.observeProgramming(seconds: finished.timeIntervalSince(trigger)) }
        if !failed.isEmpty {
            tracker.withLock { $0.force(failed) }
            return false
        }
        applied.withLock { $0.lastSuccess = finished }
        return true
    }

    /// The health check ports of every Service whose plan has one, to the server that answers them.
    private func updateHealthChecks() {
        healthChecks.update(applied.withLock { a in
            Dictionary(a.plans.compactMap { key, plan in
                plan.healthCheck.map { ($0.port, HealthCheckServer.Entry(namespace: key.namespace, name: key.name, localEndpoints: $0.localEndpoints)) }
            }, uniquingKeysWith: { a, _ in a })
        })
    }

    /// `{"default/web": [{"time": 1700000000.123, "endpoints": ["10.244.1.2:8080"]}, …]}`
    public func endpointHistory(service: String? = nil) -> JSON { history.json(service: service) }

    /// A problem is logged once, not at every sync.
    private func report(_ key: ServiceKey, _ problems: [String], _ reported: inout [ServiceKey: [String]]) {
        let before = reported[key] ?? []
        reported[key] = problems.isEmpty ? nil : problems
        for p in problems where !before.contains(p) { logger.warning("service \(key): \(p)") }
    }

    /// After the first full sync: addresses a previous proxy left on `lo` that no Service wants.
    private func removeLeftoverAddresses() {
        guard !config.managedRanges.isEmpty, let present = try? addresses.list() else { return }
        let wanted = applied.withLock { $0.applier.wantedAddresses }
        for ip in present where config.managedRanges.contains(where: { $0.contains(ip) })
            && !wanted.contains(ip) && !config.reservedAddresses.contains(ip) {
            try? addresses.remove(ip)
        }
    }
}
