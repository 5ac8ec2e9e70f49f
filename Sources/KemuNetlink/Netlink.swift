import KemuIP
import KemuSystem

/// The netlink verbs kemu needs in one network namespace. Topology logic is written against this
/// protocol; `RouteSocket` is the kernel, and tests use an in-memory fake.
public protocol Netlink: AnyObject, Sendable {
    /// The namespace this handle configures, for messages ("" for the caller's own).
    var namespaceName: String { get }

    /// `ip link add NAME [master M] [up] type veth peer name PEER [netns NS]`. `up` is for NAME only:
    /// the kernel refuses a peer that is up before the pair exists (ENOTCONN), so bring the peer up
    /// from its own namespace.
    func linkAddVeth(_ name: String, peer: String, peerNamespace: NetworkNamespace?, master: String?, up: Bool) throws
    /// `ip link add NAME type bridge` (+ `ip link set NAME up`)
    func linkAddBridge(_ name: String, up: Bool) throws
    /// `ip link add NAME type vxlan id VNI [local L] [remote R] dstport PORT [dev DEV]`
    func linkAddVxlan(_ name: String, vni: UInt32, local: IPv4Address?, remote: IPv4Address?, port: UInt16, device: String?) throws
    /// `ip link set NAME up` / `ip link set NAME down`
    func linkSetUp(_ name: String, _ up: Bool) throws
    /// `ip link set NAME master BRIDGE` (`nomaster` for nil)
    func linkSetMaster(_ name: String, _ master: String?) throws
    /// `ip link set NAME name NEWNAME`
    func linkSetName(_ name: String, _ newName: String) throws
    /// `ip link set NAME mtu MTU`
    func linkSetMTU(_ name: String, _ mtu: UInt32) throws
    /// `ip link set NAME address MAC` (six bytes)
    func linkSetAddress(_ name: String, _ mac: [UInt8]) throws
    /// `ip link del NAME`
    func linkDelete(_ name: String) throws

    /// `ip addr add A/N dev DEV`
    func addressAdd(_ address: IPv4Interface, device: String) throws
    /// `ip addr del A/N dev DEV`
    func addressDelete(_ address: IPv4Interface, device: String) throws

    /// `ip route add DEST [via GW] [dev DEV] [onlink] proto static`
    func routeAdd(_ route: Route) throws
    /// `ip route del DEST [via GW] [dev DEV]`
    func routeDelete(_ route: Route) throws

    /// `tc qdisc replace dev DEV root tbf rate RATE burst BURST latency LATENCY`
    func qdiscReplaceTbf(device: String, bytesPerSecond: UInt64, burstBytes: UInt32, latencyMicroseconds: UInt32) throws
    /// `tc qdisc del dev DEV root`
    func qdiscDeleteRoot(device: String) throws

    /// `ip link show; ip -4 addr show; ip -4 route show table main`
    func snapshot() throws -> NamespaceSnapshot
}
