import CNetlink
import Glibc
import KemuIP

extension RouteSocket {
    // ip link show; ip -4 addr show; ip -4 route show table main
    public func snapshot() throws -> NamespaceSnapshot {
        var links: [LinkInfo] = []
        var addresses: [AddressInfo] = []
        var routes: [Route] = []
        try request("ip link show; ip addr show; ip route show") {
            var names: [Int32: String] = [:]
            var masters: [String: Int32] = [:]
            var err = forEach({ rtnl_link_alloc_cache(sock, AF_UNSPEC, &$0) }) { link in
                let name = String(cString: rtnl_link_get_name(link))
                names[rtnl_link_get_ifindex(link)] = name
                masters[name] = rtnl_link_get_master(link)
                links.append(LinkInfo(
                    name: name,
                    kind: rtnl_link_get_type(link).map { String(cString: $0) } ?? "",
                    up: rtnl_link_get_flags(link) & UInt32(IFF_UP.rawValue) != 0,
                    mtu: rtnl_link_get_mtu(link)))
            }
            if err < 0 { return err }
            for i in links.indices {
                if let m = masters[links[i].name], m != 0 { links[i].master = names[m] ?? "#\(m)" }
            }
            err = forEach({ rtnl_addr_alloc_cache(sock, &$0) }) { addr in
                guard rtnl_addr_get_family(addr) == AF_INET else { return }
                let device = names[rtnl_addr_get_ifindex(addr)] ?? "#\(rtnl_addr_get_ifindex(addr))"
                let local = readAddress(rtnl_addr_get_local(addr))
                addresses.append(AddressInfo(device: device,
                                             address: IPv4Interface(local, prefixLength: Int(rtnl_addr_get_prefixlen(addr)))))
            }
            if err < 0 { return err }
            return forEach({ rtnl_route_alloc_cache(sock, AF_INET, 0, &$0) }) { r in
                guard rtnl_route_get_table(r) == UInt32(RT_TABLE_MAIN.rawValue),
                      rtnl_route_get_type(r) == UInt8(RTN_UNICAST) else { return }
                let dst = rtnl_route_get_dst(r)
                let destination = IPv4Network(readAddress(dst), prefixLength: Int(nl_addr_get_prefixlen(dst)))
                    ?? IPv4Network.any
                var route = Route(destination)
                route.proto = rtnl_route_get_protocol(r)
                if rtnl_route_get_nnexthops(r) > 0, let nh = rtnl_route_nexthop_n(r, 0) {
                    if let gw = rtnl_route_nh_get_gateway(nh) { route.gateway = readAddress(gw) }
                    let idx = rtnl_route_nh_get_ifindex(nh)
                    if idx != 0 { route.device = names[idx] ?? "#\(idx)" }
                    route.onLink = rtnl_route_nh_get_flags(nh) & UInt32(RTNH_F_ONLINK) != 0
                }
                routes.append(route)
            }
        }
        return NamespaceSnapshot(links: links, addresses: addresses, routes: routes)
    }
}

/// Fills a libnl cache with `fill`, calls `body` for every object in it, and frees it.
private func forEach(_ fill: (inout OpaquePointer?) -> Int32, _ body: (OpaquePointer) -> Void) -> Int32 {
    var cache: OpaquePointer?
    let err = fill(&cache)
    if err < 0 { return err }
    defer { nl_cache_free(cache) }
    var object = nl_cache_get_first(cache)
    while let current = object {
        body(current)
        object = nl_cache_get_next(current)
    }
    return 0
}
