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
    /// Listen address → pool name.
    public var frontends: [SocketAddress: String] = [:]
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

/// The node-wide facts a plan depends on.
public struct PlanContext: Sendable {
    public var nodeName: String
    /// Where NodePorts listen: the node's addresses.
    public var nodeAddresses: [IPv4Address]
    public var defaults: PoolSettings

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
    /// ExternalName Services are not proxied; only TCP ports are.
    public init(service: JSON, slices: [JSON], context: PlanContext) {
        self.init()
        let spec = service["spec"] ?? [:]
        let type = spec["type"]?.string ?? "ClusterIP"
        let clusterIPs = ((spec["clusterIPs"]?.array ?? []).compactMap(\.string) + [spec["clusterIP"]?.string ?? ""])
            .compactMap { IPv4Address($0) }.reduce(into: [IPv4Address]()) { if !$0.contains($1) { $0.append($1) } }
        guard type != "ExternalName", !clusterIPs.isEmpty else { return }
        let externalIPs = (spec["externalIPs"]?.array ?? []).compactMap { $0.string.flatMap(IPv4Address.init) }
        let loadBalancerIPs = (service[path: "status.loadBalancer.ingress"]?.array ?? []).compactMap { $0["ip"]?.string.flatMap(IPv4Address.init) }
        let internalLocal = spec["internalTrafficPolicy"]?.string == "Local"
        let externalLocal = spec["externalTrafficPolicy"]?.string == "Local"
        let settings = Self.settings(service, context.defaults, &problems)
        let id = "\(service.namespace)/\(service.name)"

        for port in spec["ports"]?.array ?? [] {
            guard (port["protocol"]?.string ?? "TCP") == "TCP", let number = port["port"]?.int, let servicePort = UInt16(exactly: number) else { continue }
            let portName = port["name"]?.string ?? ""
            let (all, local) = Self.endpoints(for: portName, in: slices, node: context.nodeName)
            let clusterPool = portName.isEmpty ? id : "\(id):\(portName)"
            let localPool = clusterPool + "@local"
            var used: Set<String> = []
            func route(_ address: SocketAddress, local: Bool) {
                let pool = local ? localPool : clusterPool
                frontends[address] = pool
                used.insert(pool)
            }
            for ip in clusterIPs { route(SocketAddress(ip, servicePort), local: internalLocal) }
            for ip in externalIPs { route(SocketAddress(ip, servicePort), local: externalLocal) }
            // In-cluster clients reaching a load-balancer IP get Cluster semantics (the API's rule).
            for ip in loadBalancerIPs { route(SocketAddress(ip, servicePort), local: false) }
            if type == "NodePort" || type == "LoadBalancer", let nodePort = port["nodePort"]?.int.flatMap(UInt16.init(exactly:)), nodePort > 0 {
                for ip in context.nodeAddresses { route(SocketAddress(ip, nodePort), local: externalLocal) }
            }
            if used.contains(clusterPool) { pools[clusterPool] = Pool(settings: settings, endpoints: all) }
            if used.contains(localPool) { pools[localPool] = Pool(settings: settings, endpoints: local) }
            if all.isEmpty, Self.hasEndpoints(slices), !slices.contains(where: { Self.slicePort(portName, $0) != nil }) {
                problems.append("port \(portName.isEmpty ? String(number) : portName): no endpoint has a port matching the Service's targetPort \(port["targetPort"].map { $0.string ?? String($0.int ?? 0) } ?? String(number))")
            }
        }
        localAddresses = Set(clusterIPs + externalIPs + loadBalancerIPs)
        if type == "LoadBalancer", externalLocal, let port = spec["healthCheckNodePort"]?.int.flatMap(UInt16.init(exactly:)), port > 0 {
            healthCheck = HealthCheck(port: port, localEndpoints: Self.readyLocalEndpoints(slices, node: context.nodeName))
        }
    }

    /// Ready endpoints (addresses) of the Service on `node`.
    static func readyLocalEndpoints(_ slices: [JSON], node: String) -> Int {
        var ips: Set<String> = []
        for slice in slices {
            for e in slice["endpoints"]?.array ?? [] where e["nodeName"]?.string == node && (e[path: "conditions.ready"]?.bool ?? true) {
                if let ip = e["addresses"]?.array?.first?.string { ips.insert(ip) }
            }
        }
        return ips.count
    }

    /// kube-proxy's endpoint categories for one port: ready endpoints, else serving and
    /// terminating ones (a rolling update's last pods keep serving); the same for this node only.
    static func endpoints(for portName: String, in slices: [JSON], node: String) -> (all: [EndpointSpec], local: [EndpointSpec]) {
        var ready: [(EndpointSpec, Bool)] = [], fallback: [(EndpointSpec, Bool)] = []
        for slice in slices where (slice["addressType"]?.string ?? "IPv4") == "IPv4" {
            guard let port = slicePort(portName, slice) else { continue }
            for e in slice["endpoints"]?.array ?? [] {
                guard let ip = e["addresses"]?.array?.first?.string.flatMap(IPv4Address.init) else { continue }
                let conditions = e["conditions"] ?? [:]
                // nil ready means unknown: treat as ready; nil serving defers to ready (KEP-1672).
                let isReady = conditions["ready"]?.bool ?? true
                let serving = conditions["serving"]?.bool ?? isReady
                let terminating = conditions["terminating"]?.bool ?? false
                let nodeName = e["nodeName"]?.string ?? ""
                let target = e["targetRef"].map { "\($0["namespace"]?.string ?? "")/\($0["name"]?.string ?? "")" } ?? ""
                let spec = EndpointSpec(SocketAddress(ip, port), target: target, nodeName: nodeName)
                if isReady { ready.append((spec, nodeName == node)) } else if serving && terminating { fallback.append((spec, nodeName == node)) }
            }
        }
        func pick(_ localOnly: Bool) -> [EndpointSpec] {
            let r = ready.filter { !localOnly || $0.1 }.map(\.0)
            return r.isEmpty ? fallback.filter { !localOnly || $0.1 }.map(\.0) : r
        }
        return (unique(pick(false)), unique(pick(true)))
    }

    private static func unique(_ specs: [EndpointSpec]) -> [EndpointSpec] {
        var seen: Set<SocketAddress> = []
        return specs.filter { seen.insert($0.address).inserted }
    }

    /// The slice's number for a service port name ("" for an unnamed port).
    static func slicePort(_ name: String, _ slice: JSON) -> UInt16? {
        for p in slice["ports"]?.array ?? [] where (p["name"]?.string ?? "") == name && (p["protocol"]?.string ?? "TCP") == "TCP" {
            return p["port"]?.int.flatMap(UInt16.init(exactly:))
        }
        return nil
    }

    private static func hasEndpoints(_ slices: [JSON]) -> Bool {
        slices.contains { !($0["endpoints"]?.array ?? []).isEmpty }
    }

    /// Pool settings from the cluster defaults, the Service's affinity and kemu's annotations.
    static func settings(_ service: JSON, _ defaults: PoolSettings, _ problems: inout [String]) -> PoolSettings {
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
        if service[path: "spec.sessionAffinity"]?.string == "ClientIP" {
            s.affinitySeconds = service[path: "spec.sessionAffinityConfig.clientIP.timeoutSeconds"]?.int.map(Double.init) ?? Self.defaultAffinitySeconds
        }
        return s
    }
}
