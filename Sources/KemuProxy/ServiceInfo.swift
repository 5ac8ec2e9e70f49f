import KemuAPI
import KemuIP
import KemuSystem

/// What a proxy reads of a Service, parsed once from the API object. A node following 10,000
/// Services keeps these, not JSON trees (a tenth of the memory).
public struct ServiceInfo: Equatable, Sendable {
    public var namespace = ""
    public var name = ""
    public var uid = ""
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    public var type = "ClusterIP"
    /// spec.clusterIPs then spec.clusterIP, IPv4 only, each once.
    public var clusterIPs: [IPv4Address] = []
    public var externalIPs: [IPv4Address] = []
    /// status.loadBalancer.ingress[].ip
    public var loadBalancerIPs: [IPv4Address] = []
    public var internalTrafficLocal = false
    public var externalTrafficLocal = false
    public var healthCheckNodePort: UInt16 = 0
    public var ports: [Port] = []
    /// kemu.io/ and Linkerd's balancer.linkerd.io/ annotations, as written (checked when a plan is made, so problems are reported).
    public var annotations: [String: String] = [:]
    /// ClientIP session affinity timeout; nil without affinity.
    public var affinitySeconds: Double?

    public struct Port: Equatable, Sendable {
        public var name = ""
        /// nil for a protocol the proxy does not carry (SCTP).
        public var transport: Transport? = .tcp
        /// nil when the number is out of range.
        public var port: UInt16?
        public var number: Int64 = 0
        public var nodePort: UInt16 = 0
        /// The targetPort as written, for messages.
        public var targetPort = ""
    }

    public init() {}

    public init(_ service: JSON) {
        namespace = service.namespace
        name = service.name
        uid = service.uid
        let spec = service["spec"] ?? [:]
        type = spec["type"]?.string ?? "ClusterIP"
        clusterIPs = ((spec["clusterIPs"]?.array ?? []).compactMap(\.string) + [spec["clusterIP"]?.string ?? ""])
            .compactMap { IPv4Address($0) }.reduce(into: [IPv4Address]()) { if !$0.contains($1) { $0.append($1) } }
        externalIPs = (spec["externalIPs"]?.array ?? []).compactMap { $0.string.flatMap(IPv4Address.init) }
        loadBalancerIPs = (service[path: "status.loadBalancer.ingress"]?.array ?? []).compactMap { $0["ip"]?.string.flatMap(IPv4Address.init) }
        internalTrafficLocal = spec["internalTrafficPolicy"]?.string == "Local"
        externalTrafficLocal = spec["externalTrafficPolicy"]?.string == "Local"
        healthCheckNodePort = spec["healthCheckNodePort"]?.int.flatMap(UInt16.init(exactly:)) ?? 0
        ports = (spec["ports"]?.array ?? []).map { p in
            var port = Port()
            port.name = p["name"]?.string ?? ""
            port.transport = Transport(protocol: p["protocol"]?.string)
            port.number = p["port"]?.int ?? 0
            port.port = p["port"]?.int.flatMap(UInt16.init(exactly:))
            port.nodePort = p["nodePort"]?.int.flatMap(UInt16.init(exactly:)) ?? 0
            port.targetPort = p["targetPort"].map { $0.string ?? String($0.int ?? 0) } ?? String(port.number)
            return port
        }
        annotations = service.annotations.filter { $0.key.hasPrefix("kemu.io/") || $0.key.hasPrefix("balancer.linkerd.io/") }
        if spec["sessionAffinity"]?.string == "ClientIP" {
            affinitySeconds = spec[path: "sessionAffinityConfig.clientIP.timeoutSeconds"]?.int.map(Double.init) ?? ServicePlan.defaultAffinitySeconds
        }
    }
}

/// What a proxy reads of an EndpointSlice.
public struct SliceInfo: Equatable, Sendable {
    public var name = ""
    public var isIPv4 = true
    public var ports: [Port] = []
    public var endpoints: [Endpoint] = []

    public struct Port: Equatable, Sendable {
        public var name = ""
        public var transport: Transport? = .tcp
        public var port: UInt16?
    }

    public struct Endpoint: Equatable, Sendable {
        /// The first address; nil when it is not IPv4.
        public var address: IPv4Address?
        /// nil ready means unknown: treated as ready; nil serving defers to ready (KEP-1672).
        public var ready = true
        public var serving = true
        public var terminating = false
        public var nodeName = ""
        /// "namespace/name" of the pod; empty when unknown.
        public var target = ""
        /// Topology hints: the zones and nodes whose proxies should use it; nil without.
        public var forZones: [String]?
        public var forNodes: [String]?
    }

    public init() {}

    public init(_ slice: JSON) {
        name = slice.name
        isIPv4 = (slice["addressType"]?.string ?? "IPv4") == "IPv4"
        ports = (slice["ports"]?.array ?? []).map { p in
            Port(name: p["name"]?.string ?? "", transport: Transport(protocol: p["protocol"]?.string), port: p["port"]?.int.flatMap(UInt16.init(exactly:)))
        }
        endpoints = (slice["endpoints"]?.array ?? []).map { e in
            var out = Endpoint()
            out.address = e["addresses"]?.array?.first?.string.flatMap(IPv4Address.init)
            let conditions = e["conditions"] ?? [:]
            out.ready = conditions["ready"]?.bool ?? true
            out.serving = conditions["serving"]?.bool ?? out.ready
            out.terminating = conditions["terminating"]?.bool ?? false
            out.nodeName = e["nodeName"]?.string ?? ""
            out.target = e["targetRef"].map { "\($0["namespace"]?.string ?? "")/\($0["name"]?.string ?? "")" } ?? ""
            out.forZones = e[path: "hints.forZones"]?.array.map { $0.compactMap { $0["name"]?.string } }
            out.forNodes = e[path: "hints.forNodes"]?.array.map { $0.compactMap { $0["name"]?.string } }
            return out
        }
    }

    /// The slice's number for a service port name ("" for an unnamed port) and protocol.
    func port(named portName: String, _ transport: Transport) -> UInt16? {
        ports.first { $0.name == portName && $0.transport == transport }?.port
    }
}

/// The transport protocols the proxy carries: a Service port's `protocol` (TCP by default).
public enum Transport: String, Hashable, Sendable, Comparable {
    case tcp = "TCP", udp = "UDP"

    /// nil for SCTP or anything else.
    init?(protocol name: String?) { self.init(rawValue: name ?? "TCP") }

    public static func < (a: Transport, b: Transport) -> Bool { a.rawValue < b.rawValue }
}
