import KemuIP

/// One link as `ip link show` reports it, without the parts that differ between two identical
/// builds (ifindex, MAC address).
public struct LinkInfo: Hashable, Sendable, Comparable {
    public var name: String
    /// `veth`, `bridge`, `vxlan`, … or empty for loopback and other untyped links.
    public var kind: String
    public var master: String?
    public var up: Bool
    public var mtu: UInt32

    public init(name: String, kind: String, master: String? = nil, up: Bool, mtu: UInt32 = 1500) {
        self.name = name
        self.kind = kind
        self.master = master
        self.up = up
        self.mtu = mtu
    }

    public static func < (a: LinkInfo, b: LinkInfo) -> Bool { a.name < b.name }
}

/// An IPv4 address on a link: `ip -4 addr show`.
public struct AddressInfo: Hashable, Sendable, Comparable {
    public var device: String
    public var address: IPv4Interface

    public init(device: String, address: IPv4Interface) {
        self.device = device
        self.address = address
    }

    public static func < (a: AddressInfo, b: AddressInfo) -> Bool {
        (a.device, a.address) < (b.device, b.address)
    }
}

/// Route protocol numbers (rtnetlink RTPROT_*), the `proto` word of `ip route`.
public enum RouteProtocol: UInt8, Sendable {
    case kernel = 2, boot = 3, `static` = 4
}

/// A main-table IPv4 unicast route: `ip route add DEST [via GW] [dev DEV] [onlink] proto static`.
public struct Route: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var destination: IPv4Network
    public var gateway: IPv4Address?
    public var device: String?
    public var onLink: Bool
    /// RTPROT_*; routes kemu adds are `static`, the kernel's own subnet routes `kernel`.
    public var proto: UInt8

    public init(_ destination: IPv4Network, via gateway: IPv4Address? = nil, device: String? = nil,
                onLink: Bool = false, proto: RouteProtocol = .static) {
        self.destination = destination
        self.gateway = gateway
        self.device = device
        self.onLink = onLink
        self.proto = proto.rawValue
    }

    /// `default via GW dev DEV`
    public static func defaultRoute(via gateway: IPv4Address, device: String) -> Route {
        Route(.any, via: gateway, device: device)
    }

    public var description: String {
        var words = [destination.prefixLength == 0 ? "default" : destination.description]
        if let gateway { words += ["via", gateway.description] }
        if let device { words += ["dev", device] }
        if onLink { words.append("onlink") }
        switch RouteProtocol(rawValue: proto) {
        case .kernel: words += ["proto", "kernel"]
        case .boot: words += ["proto", "boot"]
        case .static: words += ["proto", "static"]
        case nil: words += ["proto", String(proto)]
        }
        return words.joined(separator: " ")
    }

    public static func < (a: Route, b: Route) -> Bool { a.description < b.description }
}

/// What `ip link`, `ip -4 addr` and `ip -4 route` show in one namespace, sorted, so that two
/// namespaces built the same way compare equal.
public struct NamespaceSnapshot: Hashable, Sendable {
    public var links: [LinkInfo]
    public var addresses: [AddressInfo]
    public var routes: [Route]

    public init(links: [LinkInfo] = [], addresses: [AddressInfo] = [], routes: [Route] = []) {
        self.links = links.sorted()
        self.addresses = addresses.sorted()
        self.routes = routes.sorted()
    }

    public func link(_ name: String) -> LinkInfo? { links.first { $0.name == name } }
    public func addresses(on device: String) -> [IPv4Interface] {
        addresses.filter { $0.device == device }.map(\.address)
    }
}
