import KemuNetlink

extension ClusterNetwork {
    /// One namespace of the cluster as it is in the kernel.
    public struct HostStatus: Sendable {
        /// `fabric`, `cp`, `client`, `lb`, a node name, or `p-<pod>`.
        public var host: String
        public var namespace: String
        public var snapshot: NamespaceSnapshot
    }

    /// Reads every namespace of the cluster back: fabric, hosts, nodes, then pods.
    public func status() throws -> [HostStatus] {
        let names = backend.namespaceNames().filter { $0.hasPrefix(plan.prefix) }
        let order = ["fabric", "cp", "client", "lb"] + config.nodes
        let sorted = names.sorted { a, b in
            let ha = String(a.dropFirst(plan.prefix.count)), hb = String(b.dropFirst(plan.prefix.count))
            let ra = order.firstIndex(of: ha) ?? order.count, rb = order.firstIndex(of: hb) ?? order.count
            return (ra, ha) < (rb, hb)
        }
        return try sorted.map { namespace in
            let handle = try backend.netlink(namespace)
            return HostStatus(host: String(namespace.dropFirst(plan.prefix.count)), namespace: namespace,
                              snapshot: try handle.snapshot())
        }
    }
}
