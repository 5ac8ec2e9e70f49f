import CNetlink
import KemuIP
import KemuSystem

extension RouteSocket {
    // ip link add NAME [master M] [up] type veth peer name PEER [netns NS]
    public func linkAddVeth(_ name: String, peer: String, peerNamespace: NetworkNamespace?, master: String?, up: Bool) throws {
        let nsFD = try peerNamespace?.open()
        let target = peerNamespace.map { " netns \($0.name)" } ?? ""
        try request("ip link add \(name) type veth peer name \(peer)\(target)") {
            guard let link = rtnl_link_veth_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_veth_release(link) }
            rtnl_link_set_name(link, name)
            if let master { rtnl_link_set_master(link, try index(of: master)) }
            if up { rtnl_link_set_flags(link, UInt32(IFF_UP.rawValue)) }
            let peerLink = rtnl_link_veth_get_peer(link)
            defer { rtnl_link_put(peerLink) }
            rtnl_link_set_name(peerLink, peer)
            if let nsFD { rtnl_link_set_ns_fd(peerLink, nsFD.raw) }
            return rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL)
        }
    }

    // ip link add NAME type bridge; ip link set NAME up
    public func linkAddBridge(_ name: String, up: Bool) throws {
        try request("ip link add \(name) type bridge") {
            guard let link = rtnl_link_bridge_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(link) }
            rtnl_link_set_name(link, name)
            if up { rtnl_link_set_flags(link, UInt32(IFF_UP.rawValue)) }
            return rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL)
        }
    }

    // ip link add NAME type vxlan id VNI [local L] [remote R] dstport PORT [dev DEV]
    public func linkAddVxlan(_ name: String, vni: UInt32, local: IPv4Address?, remote: IPv4Address?, port: UInt16, device: String?) throws {
        try request("ip link add \(name) type vxlan id \(vni) dstport \(port)") {
            guard let link = rtnl_link_vxlan_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(link) }
            rtnl_link_set_name(link, name)
            var err = rtnl_link_vxlan_set_id(link, vni)
            if err < 0 { return err }
            err = rtnl_link_vxlan_set_port(link, UInt32(port))
            if err < 0 { return err }
            if let local {
                let addr = makeAddress(local, prefixLength: 32)
                defer { nl_addr_put(addr) }
                err = rtnl_link_vxlan_set_local(link, addr)
                if err < 0 { return err }
            }
            if let remote {
                let addr = makeAddress(remote, prefixLength: 32)
                defer { nl_addr_put(addr) }
                err = rtnl_link_vxlan_set_group(link, addr)
                if err < 0 { return err }
            }
            if let device {
                err = rtnl_link_vxlan_set_link(link, UInt32(try index(of: device)))
                if err < 0 { return err }
            }
            return rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL)
        }
    }

    // ip link set NAME up | down
    public func linkSetUp(_ name: String, _ up: Bool) throws {
        try change(name, "ip link set \(name) \(up ? "up" : "down")") { change in
            if up { rtnl_link_set_flags(change, UInt32(IFF_UP.rawValue)) } else { rtnl_link_unset_flags(change, UInt32(IFF_UP.rawValue)) }
        }
    }

    // ip link set NAME master BRIDGE | nomaster
    public func linkSetMaster(_ name: String, _ master: String?) throws {
        try change(name, "ip link set \(name) \(master.map { "master \($0)" } ?? "nomaster")") { change in
            rtnl_link_set_master(change, try master.map { try index(of: $0) } ?? 0)
        }
    }

    // ip link set NAME name NEWNAME
    public func linkSetName(_ name: String, _ newName: String) throws {
        try request("ip link set \(name) name \(newName)") {
            // The new name cannot find the link, so look up its ifindex first.
            var original: OpaquePointer?
            let err = rtnl_link_get_kernel(sock, 0, name, &original)
            if err < 0 { return err }
            defer { rtnl_link_put(original) }
            guard let change = rtnl_link_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(change) }
            rtnl_link_set_name(change, newName)
            indexes[name] = nil
            return rtnl_link_change(sock, original, change, 0)
        }
    }

    // ip link set NAME mtu MTU
    public func linkSetMTU(_ name: String, _ mtu: UInt32) throws {
        try change(name, "ip link set \(name) mtu \(mtu)") { rtnl_link_set_mtu($0, mtu) }
    }

    // ip link set NAME address MAC
    public func linkSetAddress(_ name: String, _ mac: [UInt8]) throws {
        let text = mac.map { String(format: "%02x", $0) }.joined(separator: ":")
        try change(name, "ip link set \(name) address \(text)") { change in
            var bytes = mac
            guard let address = nl_addr_build(AF_LLC, &bytes, bytes.count) else { return }
            defer { nl_addr_put(address) }
            rtnl_link_set_addr(change, address)
        }
    }

    // ip link del NAME
    public func linkDelete(_ name: String) throws {
        try request("ip link del \(name)") {
            guard let link = rtnl_link_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(link) }
            rtnl_link_set_name(link, name)
            indexes[name] = nil
            return rtnl_link_delete(sock, link)
        }
    }

    /// Applies `edit` to an empty change object and sends it for the link called `name`. The
    /// "original" carries only the name: the kernel finds the link by it, which saves reading the
    /// link first (one round trip instead of two).
    private func change(_ name: String, _ operation: String, _ edit: (OpaquePointer) throws -> Void) throws {
        try request(operation) {
            guard let original = rtnl_link_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(original) }
            rtnl_link_set_name(original, name)
            guard let change = rtnl_link_alloc() else { return -NLE_NOMEM }
            defer { rtnl_link_put(change) }
            rtnl_link_set_name(change, name)  // IFLA_IFNAME: how the kernel finds the link
            try edit(change)
            return rtnl_link_change(sock, original, change, 0)
        }
    }
}
