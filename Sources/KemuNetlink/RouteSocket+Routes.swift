import CNetlink
import Glibc
import KemuIP

extension RouteSocket {
    // ip route add DEST [via GW] [dev DEV] [onlink] proto static
    public func routeAdd(_ route: Route) throws {
        try send(route, "ip route add \(route)") { rtnl_route_add(sock, $0, NLM_F_CREATE | NLM_F_EXCL) }
    }

    // ip route del DEST [via GW] [dev DEV]
    public func routeDelete(_ route: Route) throws {
        try send(route, "ip route del \(route)") { rtnl_route_delete(sock, $0, 0) }
    }

    // ip route replace local NET dev DEV table local proto static
    /// Every address in `network` is this host's: one route instead of an address each (the
    /// kernel adds addresses in linear time, so 10,000 /32s on lo take it 1.5 s).
    public func routeReplaceLocal(_ network: IPv4Network, device: String) throws {
        try send(Route(network, device: device), "ip route replace local \(network) dev \(device) table local", local: true) {
            rtnl_route_add(sock, $0, NLM_F_CREATE | NLM_F_REPLACE)
        }
    }

    private func send(_ route: Route, _ operation: String, local: Bool = false, _ body: (OpaquePointer) -> Int32) throws {
        try request(operation) {
            guard let r = rtnl_route_alloc() else { return -NLE_NOMEM }
            defer { rtnl_route_put(r) }
            rtnl_route_set_family(r, UInt8(AF_INET))
            rtnl_route_set_table(r, UInt32((local ? RT_TABLE_LOCAL : RT_TABLE_MAIN).rawValue))
            rtnl_route_set_type(r, UInt8(local ? RTN_LOCAL : RTN_UNICAST))
            rtnl_route_set_protocol(r, route.proto)
            // As `ip route` does: a local route is host scope, one with a gateway universe scope,
            // one straight out of a device link scope.
            let scope = local ? RT_SCOPE_HOST : route.gateway == nil ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE
            rtnl_route_set_scope(r, UInt8(scope.rawValue))
            let dst = makeAddress(route.destination.address, prefixLength: route.destination.prefixLength)
            defer { nl_addr_put(dst) }
            var err = rtnl_route_set_dst(r, dst)
            if err < 0 { return err }
            guard let nh = rtnl_route_nh_alloc() else { return -NLE_NOMEM }
            if let device = route.device { rtnl_route_nh_set_ifindex(nh, try index(of: device)) }
            if let gateway = route.gateway {
                let gw = makeAddress(gateway, prefixLength: 32)
                defer { nl_addr_put(gw) }
                rtnl_route_nh_set_gateway(nh, gw)
            }
            if route.onLink { rtnl_route_nh_set_flags(nh, UInt32(RTNH_F_ONLINK)) }
            rtnl_route_add_nexthop(r, nh)  // the route owns nh from here
            err = body(r)
            return err
        }
    }
}
