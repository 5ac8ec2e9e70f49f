import KemuIP
import KemuNetfilter
import Logging
import Synchronization

/// PeerAuthentication STRICT on the node: plaintext TCP that reaches a STRICT pod here without
/// passing this node's proxy (routed in from another node, or from a pod beside it) is refused
/// with a TCP reset. (Not an ICMP error: a proxy on another node that dialled from its client's
/// address gets the reset back like any reply, but the ICMP went on to the client pod and the
/// proxy's dial timed out.) What this node's proxy dials (tunnels delivered, connections it judged)
/// leaves from the node itself and is not routed, so it passes. Replies to a STRICT pod's own
/// connections pass (conntrack). One table, `ip kemu_mesh`, replaced whole on each change.
final class MeshEnforcer: Sendable {
    let directory: MeshDirectory
    let nft: NFTables?
    let logger = Logger(label: "kemu.mesh.strict")
    let applied = Mutex<[IPv4Address]?>(nil)

    init(directory: MeshDirectory) {
        self.directory = directory
        nft = try? NFTables()
    }

    static func script(strict: [IPv4Address]) -> String {
        var s = "table ip kemu_mesh\ndelete table ip kemu_mesh\n"
        guard !strict.isEmpty else { return s }
        s += "table ip kemu_mesh {\n"
        s += "  set strict { type ipv4_addr; elements = { \(strict.map(\.description).joined(separator: ", ")) } }\n"
        s += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
        s += "    ct state established,related accept\n"
        s += "    meta l4proto tcp ip daddr @strict counter reject with tcp reset\n  }\n}\n"
        return s
    }

    /// Brings the table in line with the directory (nothing when nothing changed).
    func update() {
        let strict = directory.strictAddresses
        guard applied.withLock({ $0 }) != strict, let nft else { return }
        do {
            _ = try nft.run(Self.script(strict: strict))
            applied.withLock { $0 = strict }
        } catch {
            logger.warning("cannot apply STRICT for \(strict.count) pods: \(error)")
        }
    }

    func remove() { _ = try? nft?.run(Self.script(strict: [])) }
}
