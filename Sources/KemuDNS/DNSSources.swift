import KemuAPI
import KemuIP

/// What the DNS reads of a Service, parsed once: a node following 10,000 Services keeps these,
/// not JSON trees.
public struct ServiceNames: Equatable, Sendable {
    public var namespace = ""
    public var name = ""
    /// Set for an ExternalName Service.
    public var externalName: String?
    /// As written: an address, "None" (headless) or empty.
    public var clusterIP = ""
    /// Named ports only (the ones SRV records are made for).
    public var ports: [NamedPort] = []

    public init(_ service: JSON) {
        namespace = service.namespace
        name = service.name
        let spec = service["spec"] ?? [:]
        if spec["type"]?.string == "ExternalName" { externalName = spec["externalName"]?.string }
        clusterIP = spec["clusterIP"]?.string ?? ""
        ports = NamedPort.all(spec["ports"])
    }
}

public struct NamedPort: Equatable, Sendable {
    public var name: String
    /// Lower case: "tcp", "udp", "sctp".
    public var proto: String
    public var port: UInt16

    /// The named entries of a `ports` list (Service or EndpointSlice).
    static func all(_ ports: JSON?) -> [NamedPort] {
        (ports?.array ?? []).compactMap { p in
            guard let name = p["name"]?.string, !name.isEmpty, let port = p["port"]?.int.flatMap(UInt16.init(exactly:)) else { return nil }
            return NamedPort(name: name, proto: (p["protocol"]?.string ?? "TCP").lowercased(), port: port)
        }
    }
}

/// What the DNS reads of an EndpointSlice (a headless Service's records come from these).
public struct SliceNames: Equatable, Sendable {
    public var ports: [NamedPort] = []
    public var endpoints: [Endpoint] = []

    public struct Endpoint: Equatable, Sendable {
        /// nil ready means unknown: ready.
        public var ready: Bool
        public var addresses: [IPv4Address]
        public var hostname: String?
    }

    public init(_ slice: JSON) {
        ports = NamedPort.all(slice["ports"])
        endpoints = (slice["endpoints"]?.array ?? []).map { e in
            Endpoint(ready: e[path: "conditions.ready"]?.bool ?? true,
                     addresses: (e["addresses"]?.array ?? []).compactMap { $0.string.flatMap(IPv4Address.init) },
                     hostname: e["hostname"]?.string)
        }
    }
}
