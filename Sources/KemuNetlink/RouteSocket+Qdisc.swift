import CNetlink
import Glibc

extension RouteSocket {
    // tc qdisc replace dev DEV root tbf rate RATE burst BURST latency LATENCY
    public func qdiscReplaceTbf(device: String, bytesPerSecond: UInt64, burstBytes: UInt32, latencyMicroseconds: UInt32) throws {
        let operation = "tc qdisc replace dev \(device) root tbf rate \(bytesPerSecond * 8)bit burst \(burstBytes) latency \(latencyMicroseconds)us"
        guard bytesPerSecond > 0, bytesPerSecond <= UInt64(Int32.max) else {
            throw NetlinkError(operation, namespace: namespaceName, libnlError: -NLE_INVAL).kemuError
        }
        try request(operation) {
            guard let qdisc = rtnl_qdisc_alloc() else { return -NLE_NOMEM }
            defer { rtnl_qdisc_put(qdisc) }
            try root(qdisc, device)
            var err = rtnl_tc_set_kind(qdisc, "tbf")
            if err < 0 { return err }
            rtnl_qdisc_tbf_set_rate(qdisc, Int32(bytesPerSecond), Int32(burstBytes), 0)
            err = rtnl_qdisc_tbf_set_limit_by_latency(qdisc, Int32(latencyMicroseconds))
            if err < 0 { return err }
            return rtnl_qdisc_add(sock, qdisc, NLM_F_CREATE | NLM_F_REPLACE)
        }
    }

    // tc qdisc del dev DEV root
    public func qdiscDeleteRoot(device: String) throws {
        try request("tc qdisc del dev \(device) root") {
            guard let qdisc = rtnl_qdisc_alloc() else { return -NLE_NOMEM }
            defer { rtnl_qdisc_put(qdisc) }
            try root(qdisc, device)
            return rtnl_qdisc_delete(sock, qdisc)
        }
    }

    private func root(_ qdisc: OpaquePointer, _ device: String) throws {
        rtnl_tc_set_ifindex(qdisc, try index(of: device))
        rtnl_tc_set_parent(qdisc, 0xFFFF_FFFF)  // TC_H_ROOT
    }
}
