import KemuIP

/// A pod's network: its own namespace with `eth0` on its node's pod bridge.
public struct PodSandbox: Sendable, Equatable, Codable {
    /// The pod's name (a DNS label); its namespace is `kemu-<cluster>-p-<name>`.
    public var name: String
    public var node: String
    /// The network namespace.
    public var namespace: String
    public var ip: IPv4Address
    /// The node's cbr0 address: the pod's default gateway.
    public var gateway: IPv4Address
    /// The veth on the node side, a port of cbr0.
    public var hostVeth: String
}
