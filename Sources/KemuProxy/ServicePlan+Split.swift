import KemuAPI
import KemuIP
import KemuSystem

/// A route's claim on a Service's port (or all its ports), with what the proxy knows of each
/// backend Service: the inputs of a weighted split.
public struct SplitInputs: Equatable, Sendable {
    public struct Backend: Equatable, Sendable {
        public var ref: TrafficRoute.Backend
        /// The backend Service and its slices; nil when it does not exist (or cannot be followed).
        public var service: ServiceInfo?
        public var slices: [SliceInfo]

        public init(ref: TrafficRoute.Backend, service: ServiceInfo?, slices: [SliceInfo]) {
            self.ref = ref
            self.service = service
            self.slices = slices
        }
    }

    /// `HTTPRoute default/canary`
    public var route: String
    /// The parent Service's port it splits; nil: every port.
    public var port: UInt16?
    public var backends: [Backend]

    public init(route: String, port: UInt16?, backends: [Backend]) {
        self.route = route
        self.port = port
        self.backends = backends
    }
}

extension ServicePlan {
    /// A split port's endpoints: each backend's ready endpoints for the backend port, sharing the
    /// backend's weight equally (an endpoint in two backends has both shares); the weight of
    /// backends with no endpoint is the refused share. Backends of weight 0 take no part.
    static func splitEndpoints(_ split: SplitInputs, _ transport: Transport, node: String, zone: String?,
                               problems: inout [String]) -> (all: [EndpointSpec], local: [EndpointSpec], unrouted: Double, localUnrouted: Double) {
        var all = WeightedEndpoints(), local = WeightedEndpoints()
        for (i, backend) in split.backends.enumerated() where backend.ref.weight > 0 {
            let weight = Double(backend.ref.weight)
            let name = "\(split.route) backendRefs[\(i)] \(backend.ref.service):\(backend.ref.port)"
            guard backend.ref.resolvable, let service = backend.service else {
                problems.append("\(name): \(backend.ref.resolvable ? "no such Service" : "not a Service in the route's namespace"); its share of connections is refused")
                all.unrouted += weight
                local.unrouted += weight
                continue
            }
            guard let port = service.ports.first(where: { $0.port == backend.ref.port && $0.transport == transport }) else {
                problems.append("\(name): the Service has no \(transport.rawValue) port \(backend.ref.port); its share of connections is refused")
                all.unrouted += weight
                local.unrouted += weight
                continue
            }
            let (a, l) = endpoints(for: port.name, transport, in: backend.slices, node: node, zone: zone)
            all.add(a, weight: weight)
            local.add(l, weight: weight)
        }
        return (all.specs, local.specs, all.unrouted, local.unrouted)
    }

    struct WeightedEndpoints {
        var specs: [EndpointSpec] = []
        var unrouted = 0.0
        private var index: [SocketAddress: Int] = [:]

        mutating func add(_ endpoints: [EndpointSpec], weight: Double) {
            guard !endpoints.isEmpty else { unrouted += weight; return }
            let share = weight / Double(endpoints.count)
            for var e in endpoints {
                if let i = index[e.address] { specs[i].weight += share; continue }
                e.weight = share
                index[e.address] = specs.count
                specs.append(e)
            }
        }
    }
}
