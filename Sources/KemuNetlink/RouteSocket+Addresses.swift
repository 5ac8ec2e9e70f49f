import CNetlink
import Glibc
import KemuIP

extension RouteSocket {
    // ip addr add A/N dev DEV
    public func addressAdd(_ address: IPv4Interface, device: String) throws {
        try sendAddress(address, device, "ip addr add \(address) dev \(device)") { rtnl_addr_add(sock, $0, NLM_F_CREATE | NLM_F_EXCL) }
    }

    // ip addr del A/N dev DEV
    public func addressDelete(_ address: IPv4Interface, device: String) throws {
        try sendAddress(address, device, "ip addr del \(address) dev \(device)") { rtnl_addr_delete(sock, $0, 0) }
    }

    private func sendAddress(_ address: IPv4Interface, _ device: String, _ operation: String,
                         _ send: (OpaquePointer) -> Int32) throws {
        try request(operation) {
            guard let addr = rtnl_addr_alloc() else { return -NLE_NOMEM }
            defer { rtnl_addr_put(addr) }
            rtnl_addr_set_ifindex(addr, try index(of: device))
            let local = makeAddress(address.address, prefixLength: address.prefixLength)
            defer { nl_addr_put(local) }
            let err = rtnl_addr_set_local(addr, local)
            if err < 0 { return err }
            rtnl_addr_set_prefixlen(addr, Int32(address.prefixLength))
            return send(addr)
        }
    }
}
