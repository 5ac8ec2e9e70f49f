import KemuAPI
import KemuIP
import KemuSystem

/// A node as the emulated cloud load balancer sees it.
public struct BalancedNode: Equatable, Sendable {
    public var name: String
    public var address: IPv4Address
    public var ready: Bool

    public init(name: String, address: IPv4Address, ready: Bool) {
        self.name = name
        self.address = address
        self.ready = ready
    }
}

extension ServicePlan {
    /// What the cloud load balancer (the `lb` host) does for a LoadBalancer Service: listen on
    /// each ingress IP and port, and balance to the port's NodePort on every Ready node — with
    /// `externalTrafficPolicy: Local`, only on nodes that have an endpoint of the Service (what
    /// a cloud learns from `healthCheckNodePort`). The client's connection is then the node
    /// proxy's, as in a cloud.
    public init(loadBalancerFor service: JSON, slices: [JSON], nodes: [BalancedNode], defaults: PoolSettings) {
        self.init(loadBalancerFor: ServiceInfo(service), slices: slices.map(SliceInfo.init), nodes: nodes, defaults: defaults)
    }

    public init(loadBalancerFor service: ServiceInfo, slices: [SliceInfo], nodes: [BalancedNode], defaults: PoolSettings) {
        self.init()
        guard service.type == "LoadBalancer" else { return }
        let ingress = service.loadBalancerIPs
        guard !ingress.isEmpty else { return }
        let local = service.externalTrafficLocal
        let settings = Self.settings(service, defaults, &problems)
        let id = "\(service.namespace)/\(service.name)"
        for port in service.ports {
            guard let transport = port.transport, let servicePort = port.port, port.nodePort > 0 else { continue }
            let nodePort = port.nodePort
            let portName = port.name
            var eligible = nodes.filter(\.ready)
            if local {
                let (all, _) = Self.endpoints(for: portName, transport, in: slices, node: "")
                let withEndpoints = Set(all.map(\.nodeName))
                eligible = eligible.filter { withEndpoints.contains($0.name) }
            }
            let pool = (portName.isEmpty ? id : "\(id):\(portName)") + "@lb"
            pools[pool] = Pool(settings: settings, endpoints: eligible.map { EndpointSpec(SocketAddress($0.address, nodePort), target: "node/\($0.name)", nodeName: $0.name) })
            for ip in ingress { frontends[FrontendAddress(SocketAddress(ip, servicePort), transport)] = Frontend(pool: pool, source: .node) }
        }
        localAddresses = Set(ingress)
    }
}
