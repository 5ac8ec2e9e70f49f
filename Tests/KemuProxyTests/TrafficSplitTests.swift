import KemuAPI
import KemuClient
import KemuIP
import KemuSystem
import Testing

@testable import KemuProxy

/// Weighted splits: the pool's smooth weighted round robin, the plan a route makes of a
/// Service and its backends, and the tracker following routes and backends.
@Suite struct TrafficSplitTests {
    static let client = IPv4Address(10, 244, 2, 9)

    static func spec(_ last: UInt8, weight: Double) -> EndpointSpec {
        EndpointSpec(SocketAddress(IPv4Address(10, 244, 1, last), 8080), target: "default/web-\(last)", weight: weight)
    }

    static func pool(_ specs: [EndpointSpec], unrouted: Double = 0) -> EndpointPool {
        var settings = PoolSettings()
        settings.weighted = true
        settings.unroutedWeight = unrouted
        return EndpointPool(name: "default/web", settings: settings, endpoints: specs, now: 1)
    }

    /// Counts of each endpoint's choices (0 for a refusal) over `n` connections.
    static func tally(_ p: EndpointPool, _ n: Int) -> [UInt8: Int] {
        var counts: [UInt8: Int] = [:]
        for _ in 0..<n { counts[p.choose(client: client, tried: [], now: 1)?.spec.address.ip.octets[3] ?? 0, default: 0] += 1 }
        return counts
    }

    @Test func ninetyTenIsExactOverEveryHundredConnections() {
        // v1's 90 over its two endpoints, v2's 10 on its one.
        let p = Self.pool([Self.spec(2, weight: 45), Self.spec(3, weight: 45), Self.spec(9, weight: 10)])
        for _ in 0..<10 { #expect(Self.tally(p, 100) == [2: 45, 3: 45, 9: 10]) }
        // v2 is spread through the cycle, not sent in a burst: never two in a row.
        var last: UInt8 = 0
        for _ in 0..<1000 {
            let chosen = p.choose(client: Self.client, tried: [], now: 1)!.spec.address.ip.octets[3]
            #expect(!(chosen == 9 && last == 9))
            last = chosen
        }
    }

    @Test func newWeightsStartAFreshCycleAndKeepTheEndpointsState() {
        let p = Self.pool([Self.spec(2, weight: 90), Self.spec(9, weight: 10)])
        let v1 = p.endpoints[0]
        v1.active = 3
        _ = Self.tally(p, 7)
        p.update(settings: p.settings, endpoints: [Self.spec(2, weight: 0.5), Self.spec(9, weight: 99.5)], now: 2)
        #expect(p.endpoints[0] === v1 && v1.active == 3 && v1.spec.weight == 0.5)
        #expect(Self.tally(p, 200) == [2: 1, 9: 199])
    }

    @Test func theShareOfABackendWithNoEndpointIsRefused() {
        let p = Self.pool([Self.spec(2, weight: 75)], unrouted: 25)
        #expect(Self.tally(p, 1000) == [2: 750, 0: 250])
        // A retry is never refused: the connection was routed already.
        let first = p.endpoints[0]
        #expect(p.choose(client: Self.client, tried: [first], now: 1) === first)
    }

    @Test func anEjectedEndpointsShareGoesToTheOthers() {
        let p = Self.pool([Self.spec(2, weight: 45), Self.spec(3, weight: 45), Self.spec(9, weight: 10)])
        p.endpoints[2].ejectedUntil = 10
        #expect(Self.tally(p, 90) == [2: 45, 3: 45])
    }

    @Test func otherAlgorithmsFollowTheWeightsToo() {
        for algorithm in [BalancingAlgorithm.random, .leastConnections, .powerOfTwoChoices] {
            var settings = PoolSettings()
            settings.weighted = true
            settings.algorithm = algorithm
            let p = EndpointPool(name: "default/web", settings: settings, endpoints: [Self.spec(2, weight: 90), Self.spec(9, weight: 10)], now: 1)
            var counts: [UInt8: Int] = [:]
            for _ in 0..<2000 {
                let e = p.choose(client: Self.client, tried: [], now: 1)!
                counts[e.spec.address.ip.octets[3], default: 0] += 1
                e.active += 1  // least-connections and p2c see the load grow
            }
            #expect((counts[9] ?? 0) < 500 && (counts[2] ?? 0) > 1500, "\(algorithm): \(counts)")
        }
    }

    // MARK: plans

    static func named(_ o: JSON, _ name: String) -> JSON {
        var o = o
        o.name = name
        return o
    }

    static func backend(_ name: String, port: UInt16 = 80, weight: Int, ips: [String], resolvable: Bool = true) -> SplitInputs.Backend {
        let ref = TrafficRoute.Backend(service: name, port: port, weight: weight, resolvable: resolvable)
        let slice = ServicePlanTests.slice(ips.map { ServicePlanTests.endpoint($0, node: "node-2") })
        return .init(ref: ref, service: ServiceInfo(named(ServicePlanTests.service(), name)), slices: ips.isEmpty ? [] : [SliceInfo(slice)])
    }

    static func weights(_ plan: ServicePlan, _ pool: String = "default/web:http") -> [String: Double] {
        Dictionary(uniqueKeysWithValues: (plan.pools[pool]?.endpoints ?? []).map { ($0.address.description, $0.weight) })
    }

    @Test func aRouteSendsTheParentsPortToItsBackendsByWeight() {
        let split = SplitInputs(route: "HTTPRoute default/canary", port: nil, backends: [
            Self.backend("web-v1", weight: 90, ips: ["10.244.2.11", "10.244.2.12"]),
            Self.backend("web-v2", weight: 10, ips: ["10.244.2.21"]),
            Self.backend("web-v3", weight: 0, ips: ["10.244.2.31"]),
        ])
        let plan = ServicePlan(service: ServiceInfo(ServicePlanTests.service()), slices: [SliceInfo(ServicePlanTests.mixed)],
                               context: ServicePlanTests.context, splits: [split])
        #expect(Self.weights(plan) == ["10.244.2.11:8080": 45, "10.244.2.12:8080": 45, "10.244.2.21:8080": 10])
        #expect(plan.pools["default/web:http"]?.settings.weighted == true)
        #expect(plan.pools["default/web:http"]?.settings.unroutedWeight == 0)
        #expect(plan.problems.isEmpty)
        // The parent's own endpoints (10.244.1.5, 10.244.2.5) carry nothing while the route holds.
        let unsplit = ServicePlan(service: ServiceInfo(ServicePlanTests.service()), slices: [SliceInfo(ServicePlanTests.mixed)],
                                  context: ServicePlanTests.context, splits: [])
        #expect(Self.weights(unsplit) == ["10.244.1.5:8080": 1, "10.244.2.5:8080": 1])
    }

    @Test func backendsThatResolveToNothingAreTheRefusedShareAndSaySo() {
        var missing = Self.backend("web-v2", weight: 10, ips: [])
        missing.service = nil
        let split = SplitInputs(route: "TCPRoute default/canary", port: 80, backends: [
            Self.backend("web-v1", weight: 70, ips: ["10.244.2.11"]),
            missing,
            Self.backend("web-v3", port: 8443, weight: 5, ips: ["10.244.2.31"]),
            Self.backend("elsewhere", weight: 5, ips: ["10.244.2.41"], resolvable: false),
            Self.backend("web-v4", weight: 10, ips: []),
        ])
        let plan = ServicePlan(service: ServiceInfo(ServicePlanTests.service()), slices: [], context: ServicePlanTests.context, splits: [split])
        #expect(Self.weights(plan) == ["10.244.2.11:8080": 70])
        #expect(plan.pools["default/web:http"]?.settings.unroutedWeight == 30)
        #expect(plan.problems == [
            "TCPRoute default/canary backendRefs[1] web-v2:80: no such Service; its share of connections is refused",
            "TCPRoute default/canary backendRefs[2] web-v3:8443: the Service has no TCP port 8443; its share of connections is refused",
            "TCPRoute default/canary backendRefs[3] elsewhere:80: not a Service in the route's namespace; its share of connections is refused",
        ])
        // A route on another port leaves this one alone.
        let other = SplitInputs(route: "TCPRoute default/canary", port: 443, backends: split.backends)
        let plain = ServicePlan(service: ServiceInfo(ServicePlanTests.service()), slices: [SliceInfo(ServicePlanTests.mixed)],
                                context: ServicePlanTests.context, splits: [other])
        #expect(plain.pools["default/web:http"]?.settings.weighted == false)
    }

    @Test func linkerdsFailureAccrualAnnotationsSetTheEjection() {
        let service = ServicePlanTests.service(annotations: [
            "balancer.linkerd.io/failure-accrual": "consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures": "3",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty": "250ms",
            "balancer.linkerd.io/failure-accrual-consecutive-max-penalty": "1m30s",
        ])
        let plan = ServicePlan(service: service, slices: [ServicePlanTests.mixed], context: ServicePlanTests.context)
        let ejection = plan.pools["default/web:http"]?.settings.ejection
        #expect(ejection?.consecutiveFailures == 3 && ejection?.baseSeconds == 0.25 && ejection?.maxSeconds == 90 && ejection?.jitterRatio == 0.5)
        let bad = ServicePlan(service: ServicePlanTests.service(annotations: [
            "balancer.linkerd.io/failure-accrual": "consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty": "soon",
        ]), slices: [ServicePlanTests.mixed], context: ServicePlanTests.context)
        #expect(bad.problems == ["annotation balancer.linkerd.io/failure-accrual-consecutive-min-penalty: \"soon\" is not a duration such as 500ms, 1s or 1m (up to 24h)"])
        #expect(bad.pools["default/web:http"]?.settings.ejection.consecutiveFailures == 7)
    }

    // MARK: following routes

    static func route(_ kind: String = "HTTPRoute", weights: [(String, Int)], created: String = "2026-12-01T00:00:00Z") -> JSON {
        let refs: [JSON] = weights.map { ["name": .string($0.0), "port": 80, "weight": .int(Int64($0.1))] }
        var o: JSON = ["apiVersion": "gateway.networking.k8s.io/v1", "kind": .string(kind),
                       "spec": ["parentRefs": [["group": "", "kind": "Service", "name": "web", "port": 80]], "rules": [["backendRefs": .array(refs)]]]]
        o.name = "canary"
        o.namespace = "default"
        o["metadata", default: [:]]["creationTimestamp"] = .string(created)
        return o
    }

    static func slice(_ service: String, _ ips: [String]) -> JSON {
        ServiceProxySyncTests.slice("\(service)-abc", service: service, ips: ips)
    }

    @Test func theProxyFollowsRoutesAndTheirBackendsSlices() throws {
        let log = CallLog()
        let proxy = try ServiceProxySyncTests.proxy(log)
        for name in ["web", "web-v1", "web-v2"] { proxy.event(.services, .added(Self.named(ServiceProxySyncTests.service(externalIP: nil), name))) }
        proxy.event(.slices, .added(Self.slice("web", ["10.244.2.7"])))
        proxy.event(.slices, .added(Self.slice("web-v1", ["10.244.2.11"])))
        proxy.event(.slices, .added(Self.slice("web-v2", ["10.244.2.21"])))
        proxy.event(.services, .synced)
        proxy.event(.slices, .synced)
        proxy.event(.routes("HTTPRoute"), .synced)
        #expect(proxy.sync(), "nothing is applied before every route kind has listed")
        #expect(log.take().isEmpty)
        let route = Self.route(weights: [("web-v1", 90), ("web-v2", 10)])
        proxy.event(.routes("TCPRoute"), .synced)
        proxy.event(.routes("HTTPRoute"), .added(route))
        #expect(proxy.sync())
        #expect(log.take().contains("setPool default/web:http 10.244.2.11:8080,10.244.2.21:8080"))
        let weights = { proxy.applied.withLock { a in (a.plans[ServiceProxySyncTests.web]?.pools["default/web:http"]?.endpoints ?? []).map(\.weight) } }
        #expect(weights() == [90, 10])

        // A backend's endpoints change: the parent follows.
        proxy.event(.slices, .updated(old: Self.slice("web-v2", ["10.244.2.21"]), new: Self.slice("web-v2", ["10.244.2.21", "10.244.2.22"])))
        #expect(proxy.sync())
        #expect(log.take().contains("setPool default/web:http 10.244.2.11:8080,10.244.2.21:8080,10.244.2.22:8080"))
        #expect(weights() == [90, 5, 5])

        // Weights shift; then the route goes and the Service's own endpoints serve it again.
        let shifted = Self.route(weights: [("web-v1", 0), ("web-v2", 100)])
        proxy.event(.routes("HTTPRoute"), .updated(old: route, new: shifted))
        #expect(proxy.sync())
        #expect(weights() == [50, 50])
        proxy.event(.routes("HTTPRoute"), .deleted(shifted))
        #expect(proxy.sync())
        #expect(log.take().last(where: { $0.hasPrefix("setPool default/web:http") }) == "setPool default/web:http 10.244.2.7:8080")
        #expect(weights() == [1])
    }

    @Test func ofTwoRoutesOnOnePortTheOlderWins() {
        var tracker = ServiceChangeTracker()
        let web = ServiceProxySyncTests.web
        var newer = Self.route("TCPRoute", weights: [("web-v2", 1)], created: "2026-12-02T00:00:00Z")
        newer.name = "b-newer"
        tracker.apply(route: .added(newer), kind: "TCPRoute")
        #expect(tracker.splits(of: web).map(\.route) == ["TCPRoute default/b-newer"])
        var older = Self.route("HTTPRoute", weights: [("web-v1", 1)], created: "2026-11-30T00:00:00Z")
        older.name = "z-older"
        tracker.apply(route: .added(older), kind: "HTTPRoute")
        #expect(tracker.splits(of: web).map(\.route) == ["HTTPRoute default/z-older", "TCPRoute default/b-newer"])
        tracker.apply(route: .deleted(older), kind: "HTTPRoute")
        #expect(tracker.splits(of: web).map(\.route) == ["TCPRoute default/b-newer"])
    }
}
