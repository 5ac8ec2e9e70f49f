import KemuIP

/// One emulated cluster, as `configs/cluster.yaml` describes it. Every field has a default
/// (README.md, "The topology"), so an empty file is a valid 2-node cluster named `kemu`.
public struct ClusterConfig: Sendable, Equatable, Codable {
    /// Lower-case letters and digits, starting with a letter, at most 12 characters. Every namespace
    /// is `kemu-<name>-…`; a name without '-' keeps that prefix unambiguous, so tearing down cluster
    /// `a` can never touch cluster `ab` or `a-b`'s namespaces.
    public var name = "kemu"
    /// Node names, in order: node i gets fabric address `fabricCIDR + 10 + i` and pod CIDR
    /// subnet i of `podCIDR`. Each name is also the node's link name on the fabric bridge, so at
    /// most 15 characters.
    public var nodes = ["node-1", "node-2"]
    /// Each node's zone (`topology.kubernetes.io/zone` on its Node), by node name; nodes not
    /// listed have none. Written `zones: {zone-a: [node-1, node-2], zone-b: [node-3]}`.
    public var zones: [String: String]?
    /// Which namespaces' pods are in the mesh: `labelled` (default: those labelled
    /// `kemu.dev/mesh=enabled`) or `cluster` (every namespace). Written `mesh: cluster`.
    public var mesh: String?
    public var network = NetworkConfig()
    /// What every node offers pods (capacity = allocatable): the scheduler fits requests into it.
    public var nodeResources = NodeResources()
    /// How the control plane judges nodes (nil: the defaults). Written
    /// `controlPlane: {nodeGracePeriod: 40s, podEvictionDelay: 5m}`.
    public var controlPlane: ControlPlaneConfig?

    public init() {}

    public static let maxNameLength = 12
}

/// A node's CPU, memory (Kubernetes quantities) and pod slots.
public struct NodeResources: Sendable, Equatable, Codable {
    public var cpu = "4"
    public var memory = "8Gi"
    public var pods = 110

    public init() {}
}

/// The node lifecycle controller's clock, as kube-controller-manager's
/// `--node-monitor-grace-period` and the NoExecute toleration of unreachable nodes: seconds a node
/// may be silent before it is NotReady (its pods unready), and NotReady before its pods are
/// evicted. kemu's defaults are short (5 s, 5 s) so failover shows in seconds; Kubernetes' are
/// 40 s and 300 s.
public struct ControlPlaneConfig: Sendable, Equatable, Codable {
    public var nodeGracePeriod: Double = 5
    public var podEvictionDelay: Double = 5

    public init() {}

    /// Agents post status every second: a node needs at least two chances.
    public static let minimumGracePeriod = 2.0
    public static let maximumSeconds = 86_400.0
}

public struct NetworkConfig: Sendable, Equatable, Codable {
    /// The emulated physical LAN: cp = .2, client = .3, lb = .4, node i = .(10+i).
    public var fabricCIDR = IPv4Network("172.31.0.0/24")!
    /// Pod addresses; each node gets one subnet of `nodePodPrefixLength`.
    public var podCIDR = IPv4Network("10.244.0.0/16")!
    public var nodePodPrefixLength = 24
    /// ClusterIPs: .1 is the `kubernetes` Service, .10 the cluster DNS.
    public var serviceCIDR = IPv4Network("10.96.0.0/16")!
    public var nodePortRange = PortRange(30000, 32767)
    /// Load-balancer IPs, owned by the `lb` host.
    public var loadBalancerPool = IPv4Network("172.31.1.0/24")!
    public var clusterDomain = "cluster.local"

    public init() {}
}

/// An inclusive port range written `30000-32767`.
public struct PortRange: Sendable, Equatable, TextCodable {
    public static let expectedText = "a port range such as 30000-32767"
    public var lower: Int
    public var upper: Int

    public init(_ lower: Int, _ upper: Int) {
        self.lower = lower
        self.upper = upper
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let lower = Int(parts[0].trimmingCharacters(in: .whitespaces)),
              let upper = Int(parts[1].trimmingCharacters(in: .whitespaces)) else { return nil }
        self.init(lower, upper)
    }

    public var description: String { "\(lower)-\(upper)" }

}

import Foundation
