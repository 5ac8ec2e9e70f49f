import KemuIP
import KemuNetlink
import KemuSystem

extension ClusterNetwork {
    /// Builds the whole network. Fails with `.exists`, touching nothing, if any namespace of this
    /// cluster is already there; on any other failure removes what it made before rethrowing.
    public func up() throws {
        let leftovers = backend.namespaceNames().filter { $0.hasPrefix(plan.prefix) }
        if !leftovers.isEmpty {
            throw KemuError(.exists, "cluster \(plan.cluster) already exists (\(leftovers.prefix(3).joined(separator: ", "))\(leftovers.count > 3 ? ", …" : "")); remove it first with: kemu net down --cluster \(plan.cluster)")
        }
        do {
            try backend.raiseHostLimits(Self.neighbourLimits)
            try buildFabric()
            try addHost("cp", plan.controlPlaneIP)
            try addHost("client", plan.clientIP)
            try addHost("lb", plan.loadBalancerIP)
            // The emulated cloud load balancer proxies too (see buildNode).
            try backend.setSysctl(plan.namespace("lb"), "net.ipv4.tcp_tw_reuse", "1")
            // An outside machine reaches load-balancer IPs through the lb host.
            try netlink(plan.namespace("client")).routeAdd(
                Route(plan.network.loadBalancerPool, via: plan.loadBalancerIP, device: AddressPlan.uplink))
            for node in nodes {
                try buildNode(node.name, index: node.index)
                try netlink(plan.namespace("cp")).routeAdd(routeToPods(of: node.index))
            }
            try saveState()
        } catch {
            do {
                try Self.teardown(cluster: plan.cluster, backend: backend, stateDirectory: stateDirectory)
            } catch let cleanup {
                throw KemuError(.system, "\(error); and removing the half-built cluster failed too", cause: cleanup)
            }
            throw error
        }
    }

    /// The kernel keeps one ARP table for all namespaces, 1,024 entries at most by default. A
    /// cluster fills it fast: every node's proxy dials pods on every other node (nodes² entries
    /// in the node namespaces), every pod knows its gateway and every node bridge its pods. At
    /// 100 nodes and 1,000 pods that is over 12,000, and a full table drops the packet that
    /// needed a new entry (3 % of first connections to pods timed out, /proc/net/stat/arp_cache
    /// counted the table_fulls). Raised as OpenShift tunes its nodes; these are limits, costing
    /// nothing until used, and the last `kemu down` on the machine puts the old ones back.
    // sysctl -w net.ipv4.neigh.default.gc_thresh1=8192 gc_thresh2=32768 gc_thresh3=65536 (when lower)
    static let neighbourLimits: [(key: String, atLeast: Int)] = [
        ("net.ipv4.neigh.default.gc_thresh1", 8192),
        ("net.ipv4.neigh.default.gc_thresh2", 32768),
        ("net.ipv4.neigh.default.gc_thresh3", 65536),
    ]

    // ip netns add kemu-C-fabric; ip -n kemu-C-fabric link set lo up
    // ip -n kemu-C-fabric link add br0 type bridge; ip -n kemu-C-fabric link set br0 up
    func buildFabric() throws {
        let fabric = try backend.createNamespace(plan.fabricNamespace)
        remember(fabric, for: plan.fabricNamespace)
        try bridgeWithoutNetfilter(plan.fabricNamespace)
        try fabric.linkSetUp("lo", true)
        try fabric.linkAddBridge(AddressPlan.fabricBridge, up: true)
    }

    /// br_netfilter (loaded wherever Docker or a kubelet runs) sends every frame a bridge passes
    /// through the namespace's iptables hooks and a route lookup: a tenth of a packet's cost
    /// here, where no rule is ever met (kemu's proxy works with local routes, not iptables). Off
    /// in the namespaces that bridge; nothing to do where the module is not loaded.
    // ip netns exec kemu-C-NS sysctl -w net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}=0
    func bridgeWithoutNetfilter(_ namespace: String) throws {
        for table in ["iptables", "ip6tables", "arptables"] where backend.hasSysctl("net.bridge.bridge-nf-call-\(table)") {
            try backend.setSysctl(namespace, "net.bridge.bridge-nf-call-\(table)", "0")
        }
    }

    // ip netns add kemu-C-HOST; ip -n kemu-C-HOST link set lo up
    // ip -n kemu-C-fabric link add HOST master br0 up type veth peer name eth0 netns kemu-C-HOST
    // ip -n kemu-C-HOST addr add IP/N dev eth0; ip -n kemu-C-HOST link set eth0 up
    func addHost(_ host: String, _ ip: IPv4Address) throws {
        let namespace = plan.namespace(host)
        let handle = try backend.createNamespace(namespace)
        remember(handle, for: namespace)
        try handle.linkSetUp("lo", true)
        try netlink(plan.fabricNamespace).linkAddVeth(
            host, peer: AddressPlan.uplink, peerNamespace: NetworkNamespace(namespace),
            master: AddressPlan.fabricBridge, up: true)
        try handle.addressAdd(IPv4Interface(ip, prefixLength: plan.fabricPrefixLength), device: AddressPlan.uplink)
        try handle.linkSetUp(AddressPlan.uplink, true)
    }

    /// A node host: on the fabric, forwarding, with its pod bridge and a route to every other
    /// node's pod subnet. Its proxy opens a connection to an endpoint per client connection and
    /// often closes first, so its ports in TIME_WAIT may be reused (else a few thousand new
    /// connections a second exhaust them).
    // ip netns exec kemu-C-NODE sysctl -w net.ipv4.ip_forward=1
    // ip netns exec kemu-C-NODE sysctl -w net.ipv4.tcp_tw_reuse=1
    // ip netns exec kemu-C-NODE sysctl -w net.ipv4.conf.all.send_redirects=0 (and default)
    // ip netns exec kemu-C-NODE sysctl -w net.bridge.bridge-nf-call-iptables=0 (and ip6tables, arptables)
    // ip -n kemu-C-NODE link add cbr0 type bridge; ip -n kemu-C-NODE link set cbr0 up
    // ip -n kemu-C-NODE link set cbr0 address 0a:58:0a:f4:I:01
    // ip -n kemu-C-NODE addr add 10.244.I.1/24 dev cbr0
    // ip -n kemu-C-NODE route add 10.244.J.0/24 via 172.31.0.(10+J) dev eth0 proto static
    func buildNode(_ name: String, index: Int) throws {
        try addHost(name, plan.nodeIP(index))
        let namespace = plan.namespace(name)
        try backend.setSysctl(namespace, "net.ipv4.ip_forward", "1")
        try backend.setSysctl(namespace, "net.ipv4.tcp_tw_reuse", "1")
        // Pods have /32s and reach each other through the node, in and out of cbr0: the node
        // must not tell them to go direct (they could not, and must not: policy is here).
        try backend.setSysctl(namespace, "net.ipv4.conf.all.send_redirects", "0")
        try backend.setSysctl(namespace, "net.ipv4.conf.default.send_redirects", "0")
        try bridgeWithoutNetfilter(namespace)
        let handle = try netlink(namespace)
        try handle.linkAddBridge(AddressPlan.podBridge, up: true)
        // A bridge without an address of its own takes its lowest port's, and changes it as pods
        // come and go: every pod's ARP entry for its gateway then points nowhere (lost SYNs, 1 s
        // stalls during rollouts). Fixed like the pods': 0a:58 + the gateway's IPv4.
        try handle.linkSetAddress(AddressPlan.podBridge, AddressPlan.podMAC(plan.podGateway(index).address))
        try handle.addressAdd(plan.podGateway(index), device: AddressPlan.podBridge)
        for other in nodes where other.name != name {
            try handle.routeAdd(routeToPods(of: other.index))
        }
    }

    /// On any other node, and on the control-plane host: the way to node `index`'s pods.
    // ip -n kemu-C-HOST route add 10.244.I.0/24 via 172.31.0.(10+I) dev eth0 proto static
    func routeToPods(of index: Int) -> Route {
        Route(plan.podCIDR(index), via: plan.nodeIP(index), device: AddressPlan.uplink)
    }
}
