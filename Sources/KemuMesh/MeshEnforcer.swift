import KemuAPI
import KemuIP
import KemuNetfilter
import KemuProxy
import Logging
import Synchronization

/// PeerAuthentication STRICT on the node: plaintext TCP that reaches a STRICT pod here without
/// passing this node's proxy (routed in from another node, or from a pod beside it) is refused
/// with a TCP reset. (Not an ICMP error: a proxy on another node that dialled from its client's
/// address gets the reset back like any reply, but the ICMP went on to the client pod and the
/// proxy's dial timed out.) What this node's proxy dials (tunnels delivered, connections it judged)
/// leaves from the node itself and is not routed, so it passes. Replies to a STRICT pod's own
/// connections pass (conntrack). One table, `ip kemu_mesh`, replaced whole on each change.
///
/// And the capture (ztunnel's): TCP connections to pods' own addresses — not a Service's, which
/// the proxy has anyway — are taken by TPROXY to the node proxy's capture listener
/// (`Mesh.capturePort`, marked for local delivery as the transparent dial's replies are):
/// - outbound, a meshed pod's connection to another node's meshed pod, which the proxy carries in
///   a tunnel like a Service's connection;
/// - inbound, any connection to a meshed pod here that no proxy has judged yet (from a pod beside
///   it, meshed or not, or in the clear from another node), which the proxy judges by
///   AuthorizationPolicy — with the peer's identity when it is a meshed pod of this node — and
///   delivers from the client's address. What another node's proxy dialled (from its own ports,
///   `TransparentDial.dialPorts`) was judged by it and passes; so does plaintext for a STRICT pod
///   (refused at its SYN by the forward rule above) and whatever answers a pod's own connections
///   (only the direction a connection was opened in is captured);
/// - and a pod of this node that dials from one of the proxies' own ports (binding it itself)
///   passes as a proxy's dial nowhere: to a meshed pod here it is captured by its address, and
///   towards another node's meshed pod it is captured here, judged, and dialled again from one
///   of this proxy's ports (the other node would have let it by).
final class MeshEnforcer: Sendable {
    struct Rules: Equatable {
        var strict: [IPv4Address] = []
        var captureSources: [IPv4Address] = []
        var captureDestinations: [IPv4Address] = []
        /// Every pod of the node (the capture's sources among them).
        var localPods: [IPv4Address] = []
    }

    let directory: MeshDirectory
    let nft: NFTables?
    /// Whether connections are captured (the proxy dials transparently and listens for them).
    let capture: @Sendable () -> Bool
    let logger = Logger(label: "kemu.mesh.strict")
    let applied = Mutex<Rules?>(nil)

    init(directory: MeshDirectory, capture: @escaping @Sendable () -> Bool) {
        self.directory = directory
        self.capture = capture
        nft = try? NFTables()
    }

    static func script(_ rules: Rules, mark: UInt32) -> String {
        var s = "table ip kemu_mesh\ndelete table ip kemu_mesh\n"
        let capturing = !rules.captureSources.isEmpty
        guard !rules.strict.isEmpty || capturing else { return s }
        func set(_ name: String, _ addresses: [IPv4Address]) -> String {
            "  set \(name) { type ipv4_addr; elements = { \(addresses.map(\.description).joined(separator: ", ")) } }\n"
        }
        s += "table ip kemu_mesh {\n"
        if !rules.strict.isEmpty { s += set("strict", rules.strict) }
        if capturing { s += set("capture_sources", rules.captureSources) }
        if capturing && !rules.captureDestinations.isEmpty { s += set("capture_destinations", rules.captureDestinations) }
        if capturing && !rules.localPods.isEmpty { s += set("local_pods", rules.localPods) }
        if !rules.strict.isEmpty {
            s += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
            s += "    ct state established,related accept\n"
            s += "    meta l4proto tcp ip daddr @strict counter reject with tcp reset\n  }\n"
        }
        if capturing {
            let take = "meta mark set \(mark) tproxy to :\(Mesh.capturePort) accept"
            s += "  chain capture {\n    type filter hook prerouting priority mangle; policy accept;\n"
            s += "    ct direction reply return\n"
            if !rules.captureDestinations.isEmpty {
                s += "    meta l4proto tcp ip saddr @capture_sources ip daddr @capture_destinations \(take)\n"
            }
            if !rules.strict.isEmpty { s += "    ip daddr @strict ip saddr != @capture_sources return\n" }
            let dialPorts = "\(TransparentDial.dialPorts.low)-\(TransparentDial.dialPorts.high)"
            if !rules.localPods.isEmpty { s += "    meta l4proto tcp ip daddr @capture_sources ip saddr @local_pods \(take)\n" }
            s += "    meta l4proto tcp ip daddr @capture_sources tcp sport != \(dialPorts) \(take)\n"
            if !rules.localPods.isEmpty && !rules.captureDestinations.isEmpty {
                s += "    meta l4proto tcp ip saddr @local_pods ip daddr @capture_destinations tcp sport \(dialPorts) \(take)\n"
            }
            s += "  }\n"
        }
        return s + "}\n"
    }

    /// Brings the table in line with the directory (nothing when nothing changed).
    func update() {
        var rules = Rules(strict: directory.strictAddresses)
        if capture() { (rules.captureSources, rules.captureDestinations, rules.localPods) = directory.captureAddresses }
        guard applied.withLock({ $0 }) != rules, let nft else { return }
        do {
            _ = try nft.run(Self.script(rules, mark: TransparentDial.mark))
            applied.withLock { $0 = rules }
        } catch {
            logger.warning("cannot apply STRICT for \(rules.strict.count) pods, capture for \(rules.captureSources.count): \(error)")
        }
    }

    func remove() { _ = try? nft?.run(Self.script(Rules(), mark: TransparentDial.mark)) }
}
