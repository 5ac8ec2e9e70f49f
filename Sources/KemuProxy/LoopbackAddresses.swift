import KemuIP
import KemuNetlink
import KemuSystem

/// Service addresses as /32s on `lo` of the calling process's namespace (the node's): traffic to
/// a ClusterIP is then local to the node, and the proxy's listener on it accepts.
public final class LoopbackAddresses: LocalAddresses {
    let netlink: RouteSocket

    public init() throws { netlink = try RouteSocket.open(in: nil) }

    // ip addr add IP/32 dev lo
    public func add(_ ip: IPv4Address) throws {
        do {
            try netlink.addressAdd(IPv4Interface(ip, prefixLength: 32), device: "lo")
        } catch let error as NetlinkError where error.isExists {}
    }

    // ip addr del IP/32 dev lo
    public func remove(_ ip: IPv4Address) throws {
        try netlink.addressDelete(IPv4Interface(ip, prefixLength: 32), device: "lo")
    }

    // ip route replace local NET dev lo table local
    public func addRange(_ network: IPv4Network) throws {
        try netlink.routeReplaceLocal(network, device: "lo")
    }

    // ip -4 addr show dev lo
    public func list() throws -> [IPv4Address] {
        try netlink.snapshot().addresses(on: "lo").filter { $0.prefixLength == 32 }.map(\.address)
    }
}
