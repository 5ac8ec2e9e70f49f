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
/// And the capture (ztunnel's outbound capture): a meshed pod's TCP connection to another meshed
/// pod's own address — not a Service's, which the proxy has anyway — is taken by TPROXY to the
/// node proxy's capture listener (`Mesh.capturePort`, marked for local delivery as the
/// transparent dial's replies are), which carries it in a tunnel like a Service's connection.
final class MeshEnforcer: Sendable {
    struct Rules: Equatable {
        var strict: [IPv4Address] = []
        var captureSources: [IPv4Address] = []
        var captureDestinations: [IPv4Address] = []
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
        let capturing = !rules.captureSources.isEmpty && !rules.captureDestinations.isEmpty
        guard !rules.strict.isEmpty || capturing else { return s }
        func set(_ name: String, _ addresses: [IPv4Address]) -> String {
            "  set \(name) { type ipv4_addr; elements = { \(addresses.map(\.description).joined(separator: ", ")) } }\n"
        }
        s += "table ip kemu_mesh {\n"
        if !rules.strict.isEmpty {
            s += set("strict", rules.strict)
            s += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
            s += "    ct state established,related accept\n"
            s += "    meta l4proto tcp ip daddr @strict counter reject with tcp reset\n  }\n"
        }
        if capturing {
            s += set("capture_sources", rules.captureSources) + set("capture_destinations", rules.captureDestinations)
            s += "  chain capture {\n    type filter hook prerouting priority mangle; policy accept;\n"
            s += "    meta l4proto tcp ip saddr @capture_sources ip daddr @capture_destinations meta mark set \(mark) tproxy to :\(Mesh.capturePort) accept\n  }\n"
        }
        return s + "}\n"
    }

    /// Brings the table in line with the directory (nothing when nothing changed).
    func update() {
        var rules = Rules(strict: directory.strictAddresses)
        if capture() { (rules.captureSources, rules.captureDestinations) = directory.captureAddresses }
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
