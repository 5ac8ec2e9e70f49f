import KemuNetfilter
import KemuNetlink
import KemuSystem

/// What lets the node proxy dial an endpoint from its client's address (Envoy's original-src,
/// Istio's TPROXY mode), set up in the node's namespace:
///
///     table ip kemu_proxy { chain prerouting { type filter hook prerouting priority mangle;
///         meta l4proto { tcp, udp } socket transparent 1 socket wildcard 0 meta mark set MARK } }
///     ip rule add fwmark MARK lookup TABLE priority 100
///     ip route replace local 0.0.0.0/0 dev lo table TABLE
///     sysctl -w net.ipv4.fwmark_reflect=1 net.ipv4.tcp_early_demux=0
///
/// The proxy's upstream socket is bound (IP_TRANSPARENT) to the client's address, so the
/// endpoint answers the client's address; the answer comes back through this node (the pods'
/// /32s route everything through it, other nodes route this node's pod subnet here, and an
/// externalTrafficPolicy-Local endpoint is on this node), where the socket match finds the
/// proxy's transparent socket for it, marks it, and the mark's table delivers it locally rather
/// than forwarding it on to the client. Packets of every other flow find no transparent socket
/// and pass untouched.
///
/// Only a live socket takes packets, not one in TIME_WAIT: a node's dial from a client's address
/// that closed first leaves that tuple in TIME_WAIT on the node for a minute, and every node
/// walks the same ports for the same addresses (the kernel's port offset hashes only them). Another
/// node dialling the same pod from the same client soon met it: the pod's SYN-ACK, on its way
/// back through this node, went to the dead socket and the dial waited out its 250 ms timeout
/// (a client calling one pod both in the mesh and not stalled on most connections). `socket
/// wildcard 0` holds only for full sockets (bound to one address, as a dial is), so the rule
/// passes TIME_WAIT by; and with TCP's early demux on, the kernel would still hand such a packet
/// to the TIME_WAIT socket before routing, and drop it when it is then forwarded — so it is off
/// in the node's namespace (it only spares the node's own connections a route lookup).
public enum TransparentDial {
    /// "km": the mark and the routing table, kemu's own in the node's namespace.
    public static let mark: UInt32 = 0x6b6d
    public static let table: UInt32 = 0x6b6d
    public static let rulePriority: UInt32 = 100
    /// The node's own ephemeral ports, apart from the pods' (32768–60999, Linux's default): a
    /// dial from a client's address takes its port from here, so it never has a tuple the client
    /// would pick itself. Sharing the range, they walked the same sequence (the kernel's port
    /// offset hashes only the addresses and the destination port), and a proxy socket left in
    /// TIME_WAIT took the answers to the client's own next connection to that pod (the socket
    /// match below marks them for it): a second's stall each. Below the NodePorts' 30000–32767,
    /// above the mesh's 15001 and 15008.
    public static let dialPorts = (low: 16384, high: 29999)

    /// nft's script: the table replaced whole, in one transaction (a table of that name made
    /// first, so the delete never fails on a fresh node).
    static var ruleset: String {
        """
        table ip kemu_proxy
        delete table ip kemu_proxy
        table ip kemu_proxy {
            chain prerouting {
                type filter hook prerouting priority mangle; policy accept;
                meta l4proto { tcp, udp } socket transparent 1 socket wildcard 0 meta mark set \(mark) accept
            }
        }
        """
    }

    /// Sets it up in the calling process's namespace (idempotent: a restarted proxy runs it
    /// again). Throws, saying what failed, where the kernel lacks the socket match or policy
    /// routing; the proxy then dials from the node's address.
    public static func install() throws {
        try NFTables().run(ruleset)
        // An ICMP error the node itself sends about a packet (NetworkPolicy's reject of a dial)
        // carries that packet's mark, so the reply mark brings it back to the proxy's socket.
        try Sysctl.write("net.ipv4.fwmark_reflect", "1")
        try Sysctl.write("net.ipv4.tcp_early_demux", "0")
        try Sysctl.write("net.ipv4.ip_local_port_range", "\(dialPorts.low) \(dialPorts.high)")
        let netlink = try RouteSocket.open(in: nil)
        try netlink.routeReplaceLocal(.any, device: "lo", table: table)
        try netlink.ruleAddFwmark(mark, table: table, priority: rulePriority)
    }
}
