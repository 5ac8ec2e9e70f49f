import Glibc
import KemuSystem

/// What the failover lab does to the network: a host cut off the fabric, the processes of a
/// node's pods, a pod's link slowed down.
extension ClusterNetwork {
    /// Takes a host's fabric port down (its packets go nowhere, as with a pulled cable: peers see
    /// timeouts, not resets) or up again.
    // ip -n kemu-C-fabric link set HOST down|up
    public func setFabricLink(_ host: String, up: Bool) throws {
        guard try netlink(plan.fabricNamespace).snapshot().link(host)?.kind == "veth" else {
            throw KemuError(.notFound, "\(host) has no port on the fabric of cluster \(plan.cluster) (nodes: \(config.nodes.joined(separator: ", ")); hosts: cp, client, lb)")
        }
        try netlink(plan.fabricNamespace).linkSetUp(host, up)
    }

    /// Whether a host's fabric port is up.
    public func fabricLinkIsUp(_ host: String) throws -> Bool {
        try netlink(plan.fabricNamespace).snapshot().link(host)?.up ?? false
    }

    /// Every process inside the sandboxes of the pods on `node`.
    public func podProcesses(on node: String) throws -> [pid_t] {
        _ = try nodeIndex(node)
        return try pods().filter { $0.node == node }.flatMap { NetworkNamespace($0.namespace).pids() }
    }

    /// Limits what a pod sends and receives to `bytesPerSecond` (tbf on both ends of its veth),
    /// or lifts the limit (nil). A pod whose sandbox is gone is skipped.
    // ip netns exec POD tc qdisc replace dev eth0 root tbf …; tc -n NODE qdisc replace dev VETH root tbf …
    public func shapePod(_ sandbox: PodSandbox, bytesPerSecond: UInt64?) throws {
        let ends = [(sandbox.namespace, AddressPlan.uplink), (plan.namespace(sandbox.node), sandbox.hostVeth)]
        for (namespace, device) in ends where NetworkNamespace(namespace).exists {
            let handle = try backend.netlink(namespace)
            if let rate = bytesPerSecond {
                // A burst of 10 ms of the rate (at least 4 KiB), 50 ms of queue: a slow link, not a lossy one.
                try handle.qdiscReplaceTbf(device: device, bytesPerSecond: rate, burstBytes: UInt32(max(rate / 100, 4096)), latencyMicroseconds: 50_000)
            } else {
                do { try handle.qdiscDeleteRoot(device: device) } catch let error as KemuError where error.code == .notFound || error.code == .invalidArgument {}
            }
        }
    }
}
