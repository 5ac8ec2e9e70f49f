import KemuAPI
import KemuIP
import KemuSystem

/// What one Service asks of one node's proxy: pools of endpoints, the addresses to listen on and
/// which pool each feeds, and the addresses that must be local (on `lo`). Computed from the
/// Service and its EndpointSlices alone, so it is a pure function tested without sockets.
public struct ServicePlan: Equatable, Sendable {
    public struct Pool: Equatable, Sendable {
        public var settings: PoolSettings
        public var endpoints: [EndpointSpec]
    }

    public var pools: [String: Pool] = [:]
    /// Where the proxy listens (address, port and protocol) → what it does with what comes.
    public var frontends: [FrontendAddress: Frontend] = [:]
    public var localAddresses: Set<IPv4Address> = []
    /// The healthCheckNodePort this node answers on, and its ready local endpoints.
    public var healthCheck: HealthCheck?

    public struct HealthCheck: Equatable, Sendable {
        public var port: UInt16
        public var localEndpoints: Int
    }
    /// Things the Service's owner should hear about (a bad annotation, a port nobody serves).
    public var problems: [String] = []

    public init() {}
}

/// A listening address of the proxy: IP, port and transport.
public struct FrontendAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: SocketAddress
    public var transport: Transport

    public init(_ address: SocketAddress, _ transport: Transport = .tcp) {
        self.address = address
        self.transport = transport
    }

    /// `10.96.0.20:80` for TCP, `10.96.0.10:53/UDP` for UDP.
    public var description: String { transport == .tcp ? address.description : "\(address)/\(transport.rawValue)" }

    public static func < (a: FrontendAddress, b: FrontendAddress) -> Bool {
        (a.address.ip, a.address.port, a.transport) < (b.address.ip, b.address.port, b.transport)
    }
}

/// What a frontend's clients get: a pool of endpoints, and whose address the endpoint sees.
public struct Frontend: Hashable, Sendable {
    public var pool: String
    public var source: ClientSource
    /// A transparent (TPROXY) listener's: each connection goes to the address its client
    /// dialled (the accepted socket's own), one pool per such address, `pool` unused.
    public var passthrough = false
    /// For clients inside the cluster — the pod network, or the node itself dialling its own
    /// address — this pool instead, their addresses kept as a ClusterIP's (`ClientSource.pods`):
    /// kube-proxy sends pod and host traffic to an `externalTrafficPolicy: Local` NodePort or
    /// external IP on to the Service's cluster-wide endpoints, so it is not dropped on a node
    /// with none of its own.
    public var inClusterPool: String?

    public init(pool: String, source: ClientSource, passthrough: Bool = false, inClusterPool: String? = nil) {
        self.pool = pool
        self.source = source
        self.passthrough = passthrough
        self.inClusterPool = inClusterPool
    }
}

/// Whose address an endpoint sees as its client's, as kube-proxy's rules decide: its DNAT keeps
/// the client's, its masquerade (SNAT) puts the node's.
public enum ClientSource: Hashable, Sendable {
    /// Masqueraded: external traffic with `externalTrafficPolicy: Cluster` (it may go on to
    /// another node, whose replies must come back here), the cloud balancer's dials.
    case node
    /// Kept for clients in the cluster's pod network (ClusterIPs: kube-proxy masquerades only
    /// what comes from outside the cluster CIDR); others masqueraded.
    case pods
    /// Kept for every client: `externalTrafficPolicy: Local` (only this node's endpoints, so the
    /// replies pass here; its whole point upstream).
    case client
}

/// The node-wide facts a plan depends on.
public struct PlanContext: Sendable {
    public var nodeName: String
    /// Where NodePorts listen: the node's addresses.
    public var nodeAddresses: [IPv4Address]
    public var defaults: PoolSettings
    /// The node's zone (topology.kubernetes.io/zone), for topology hints.
    public var zone: String?

    public init(nodeName: String, nodeAddresses: [IPv4Address], defaults: PoolSettings = PoolSettings()) {
        self.nodeName = nodeName
        self.nodeAddresses = nodeAddresses
        self.defaults = defaults
    }
}

public enum ServiceAnnotations {
    /// round-robin | least-connections | random | p2c-ewma
    public static let algorithm = "kemu.io/load-balancer"
    /// Endpoints tried per connection (1 = no retry).
    public static let connectAttempts = "kemu.io/connect-attempts"
    /// Seconds connections to a removed endpoint may go on; absent: until they end.
    public static let drainSeconds = "kemu.io/drain-seconds"
    /// Seconds between active TCP health checks of every endpoint (absent: none).
    public static let healthCheckSeconds = "kemu.io/health-check-seconds"
}

extension ServicePlan {
    /// kube-proxy's default ClientIP affinity timeout (3 h).
    public static let defaultAffinitySeconds = 10800.0

    /// The plan for `service` given the EndpointSlices labelled with its name. Headless and
    /// ExternalName Services are not proxied; TCP and UDP ports are (SCTP is refused at admission).
    /// A port that a route splits (`splits`, the first that claims it) gets the route's
    /// backends' endpoints by weight instead of the Service's own.
    public init(service: JSON, slices: [JSON], context: PlanContext) {
        self.init(service: ServiceInfo(service), slices: slices.map(SliceInfo.init), context: context)
    }

    public init(service: ServiceInfo, slices: [SliceInfo], context: PlanContext, splits: [SplitInputs] = []) {
        self.init()
        let clusterIPs = service.clusterIPs
        guard service.type != "ExternalName", !clusterIPs.isEmpty else { return }
        let externalIPs = service.externalIPs
        let loadBalancerIPs = service.loadBalancerIPs
        let internalLocal = service.internalTrafficLocal
        let externalLocal = service.externalTrafficLocal
        let settings = Self.settings(service, context.defaults, &problems)
        let id = "\(service.namespace)/\(service.name)"

        for port in service.ports {
            guard let transport = port.transport, let servicePort = port.port else { continue }
            let portName = port.name
            var (all, local) = Self.endpoints(for: portName, transport, in: slices, node: context.nodeName, zone: context.zone)
            var (clusterSettings, localSettings) = (settings, settings)
            if let split = splits.first(where: { $0.port == nil || $0.port == servicePort }) {
                let s = Self.splitEndpoints(split, transport, node: context.nodeName, zone: context.zone, problems: &problems)
                (all, local) = (s.all, s.local)
                clusterSettings.weighted = true
                clusterSettings.unroutedWeight = s.unrouted
                localSettings.weighted = true
                localSettings.unroutedWeight = s.localUnrouted
            }
            let clusterPool = portName.isEmpty ? id : "\(id):\(portName)"
            let localPool = clusterPool + "@local"
            var used: Set<String> = []
            func route(_ address: SocketAddress, local: Bool, source: ClientSource, external: Bool = false) {
                let pool = local ? localPool : clusterPool
                let inCluster = local && external ? clusterPool : nil
                frontends[FrontendAddress(address, transport)] = Frontend(pool: pool, source: local ? .client : source, inClusterPool: inCluster)
                used.insert(pool)
                if let inCluster { used.insert(inCluster) }
            }
            for ip in clusterIPs { route(SocketAddress(ip, servicePort), local: internalLocal, source: .pods) }
            for ip in externalIPs { route(SocketAddress(ip, servicePort), local: externalLocal, source: .node, external: true) }
            // In-cluster clients reaching a load-balancer IP get Cluster semantics (the API's rule).
            for ip in loadBalancerIPs { route(SocketAddress(ip, servicePort), local: false, source: .pods) }
            if service.type == "NodePort" || service.type == "LoadBalancer", port.nodePort > 0 {
                for ip in context.nodeAddresses { route(SocketAddress(ip, port.nodePort), local: externalLocal, source: .node, external: true) }
            }
            if used.contains(clusterPool) { pools[clusterPool] = Pool(settings: clusterSettings, endpoints: all) }
            if used.contains(localPool) { pools[localPool] = Pool(settings: localSettings, endpoints: local) }
            if !clusterSettings.weighted, all.isEmpty, slices.contains(where: { !$0.endpoints.isEmpty }), !slices.contains(where: { $0.port(named: portName, transport) != nil }) {
                problems.append("port \(portName.isEmpty ? String(port.number) : portName): no endpoint has a port matching the Service's targetPort \(port.targetPort)")
            }
        }
        localAddresses = Set(clusterIPs + externalIPs + loadBalancerIPs)
        var seen: Set<String> = []
        problems = problems.filter { seen.insert($0).inserted }
        if service.type == "LoadBalancer", externalLocal, service.healthCheckNodePort > 0 {
            healthCheck = HealthCheck(port: service.healthCheckNodePort, localEndpoints: Self.readyLocalEndpoints(slices, node: context.nodeName))
        }
    }

    /// Ready endpoints (addresses) of the Service on `node`.
    static func readyLocalEndpoints(_ slices: [SliceInfo], node: String) -> Int {
        var ips: Set<IPv4Address> = []
        for slice in slices {
            for e in slice.endpoints where e.nodeName == node && e.ready {
                if let ip = e.address { ips.insert(ip) }
            }
        }
        return ips.count
    }

    /// kube-proxy's endpoint categories for one port (pkg/proxy/topology.go): ready endpoints,
    /// else serving and terminating ones (a rolling update's last pods keep serving); the same
    /// for this node only. Cluster-wide, topology hints narrow the ready ones when every one
    /// carries them and some are for here: node hints (trafficDistribution PreferSameNode) to
    /// this node's, else zone hints (PreferClose, PreferSameZone, topology-mode Auto) to this
    /// zone's — the rest are used only when none is.
    static func endpoints(for portName: String, _ transport: Transport, in slices: [SliceInfo], node: String,
                          zone: String? = nil) -> (all: [EndpointSpec], local: [EndpointSpec]) {
        var ready: [(EndpointSpec, Bool)] = [], fallback: [(EndpointSpec, Bool)] = []
        var readyHints: [SliceInfo.Endpoint] = []
        for slice in slices where slice.isIPv4 {
            guard let port = slice.port(named: portName, transport) else { continue }
            for e in slice.endpoints {
                guard let ip = e.address else { continue }
                let spec = EndpointSpec(SocketAddress(ip, port), target: e.target, nodeName: e.nodeName)
                if e.ready {
                    ready.append((spec, e.nodeName == node))
                    readyHints.append(e)
                } else if e.serving && e.terminating {
                    fallback.append((spec, e.nodeName == node))
                }
            }
        }
        func pick(_ localOnly: Bool) -> [EndpointSpec] {
            let r = ready.filter { !localOnly || $0.1 }.map(\.0)
            return r.isEmpty ? fallback.filter { !localOnly || $0.1 }.map(\.0) : r
        }
        var all = pick(false)
        if !readyHints.isEmpty {
            if readyHints.allSatisfy({ $0.forNodes != nil }), readyHints.contains(where: { $0.forNodes?.contains(node) == true }) {
                all = zip(ready, readyHints).filter { $0.1.forNodes?.contains(node) == true }.map(\.0.0)
            } else if let zone, readyHints.allSatisfy({ $0.forZones != nil }), readyHints.contains(where: { $0.forZones?.contains(zone) == true }) {
                all = zip(ready, readyHints).filter { $0.1.forZones?.contains(zone) == true }.map(\.0.0)
            }
        }
        return (unique(all), unique(pick(true)))
    }

    private static func unique(_ specs: [EndpointSpec]) -> [EndpointSpec] {
        var seen: Set<SocketAddress> = []
        return specs.filter { seen.insert($0.address).inserted }
    }

    /// Pool settings from the cluster defaults, the Service's affinity and kemu's annotations.
    static func settings(_ service: ServiceInfo, _ defaults: PoolSettings, _ problems: inout [String]) -> PoolSettings {
        var s = defaults
        let annotations = service.annotations
        if let value = annotations[ServiceAnnotations.algorithm] {
            if let algorithm = BalancingAlgorithm(rawValue: value) {
                s.algorithm = algorithm
            } else {
                problems.append("annotation \(ServiceAnnotations.algorithm): \"\(value)\" is not one of \(BalancingAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")); using \(defaults.algorithm.rawValue)")
            }
        }
        if let value = annotations[ServiceAnnotations.connectAttempts] {
            if let n = Int(value), (1...16).contains(n) { s.connectAttempts = n } else {
                problems.append("annotation \(ServiceAnnotations.connectAttempts): \"\(value)\" is not a number from 1 to 16")
            }
        }
        if let value = annotations[ServiceAnnotations.drainSeconds] {
            if let n = Double(value), n >= 0 { s.drainSeconds = n } else {
                problems.append("annotation \(ServiceAnnotations.drainSeconds): \"\(value)\" is not a number of seconds")
            }
        }
        if let value = annotations[ServiceAnnotations.healthCheckSeconds] {
            if let n = Int(value), (1...3600).contains(n) { s.healthCheckSeconds = n } else {
                problems.append("annotation \(ServiceAnnotations.healthCheckSeconds): \"\(value)\" is not a whole number of seconds from 1 to 3600")
            }
        }
        if let seconds = service.affinitySeconds { s.affinitySeconds = seconds }
        let (accrual, accrualProblems) = FailureAccrual.parse(annotations)
        problems += accrualProblems
        if let accrual {
            s.ejection.consecutiveFailures = accrual.maxFailures
            s.ejection.baseSeconds = accrual.minPenaltySeconds
            s.ejection.maxSeconds = accrual.maxPenaltySeconds
            s.ejection.jitterRatio = accrual.jitterRatio
        }
        return s
    }
}
