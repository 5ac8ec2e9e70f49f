import CNetlink
import Glibc
import KemuIP
import KemuSystem

extension RouteSocket {
    // ip route add DEST [via GW] [dev DEV] [onlink] proto static
    public func routeAdd(_ route: Route) throws {
        try send(route, "ip route add \(route)") { rtnl_route_add(sock, $0, NLM_F_CREATE | NLM_F_EXCL) }
    }

    // ip route del DEST [via GW] [dev DEV]
    public func routeDelete(_ route: Route) throws {
        try send(route, "ip route del \(route)") { rtnl_route_delete(sock, $0, 0) }
    }

    // ip route replace local NET dev DEV table TABLE proto static
    /// Every address in `network` is this host's: one route instead of an address each (the
    /// kernel adds addresses in linear time, so 10,000 /32s on lo take it 1.5 s). In a table of
    /// its own (policy routing), what a rule sends there is delivered locally.
    public func routeReplaceLocal(_ network: IPv4Network, device: String, table: UInt32 = UInt32(RT_TABLE_LOCAL.rawValue)) throws {
        let name = table == UInt32(RT_TABLE_LOCAL.rawValue) ? "local" : String(table)
        try send(Route(network, device: device), "ip route replace local \(network) dev \(device) table \(name)", local: true, table: table) {
            rtnl_route_add(sock, $0, NLM_F_CREATE | NLM_F_REPLACE)
        }
    }

    // ip rule add fwmark MARK/MASK lookup TABLE priority PRIORITY
    /// Packets carrying the mark are routed by `table` first. An identical rule already there is
    /// kept (the call is idempotent).
    public func ruleAddFwmark(_ mark: UInt32, mask: UInt32 = 0xffff_ffff, table: UInt32, priority: UInt32) throws {
        let operation = "ip rule add fwmark \(mark)/\(mask) lookup \(table) priority \(priority)"
        do {
            try request(operation) {
                guard let r = rtnl_rule_alloc() else { return -NLE_NOMEM }
                defer { rtnl_rule_put(r) }
                rtnl_rule_set_family(r, Int32(AF_INET))
                rtnl_rule_set_mark(r, mark)
                rtnl_rule_set_mask(r, mask)
                rtnl_rule_set_table(r, table)
                rtnl_rule_set_prio(r, priority)
                rtnl_rule_set_action(r, UInt8(FR_ACT_TO_TBL))
                return rtnl_rule_add(sock, r, NLM_F_CREATE | NLM_F_EXCL)
            }
        } catch let error as KemuError where error.code == .exists {}
    }

    private func send(_ route: Route, _ operation: String, local: Bool = false, table: UInt32? = nil, _ body: (OpaquePointer) -> Int32) throws {
        try request(operation) {
            guard let r = rtnl_route_alloc() else { return -NLE_NOMEM }
            defer { rtnl_route_put(r) }
            rtnl_route_set_family(r, UInt8(AF_INET))
            rtnl_route_set_table(r, table ?? UInt32((local ? RT_TABLE_LOCAL : RT_TABLE_MAIN).rawValue))
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
