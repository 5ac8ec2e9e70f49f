import KemuIP

/// Where everything in a cluster lives: namespace names and addresses, derived from the config
/// alone so that any process (the CLI, a node agent, a test) computes the same answer.
public struct AddressPlan: Sendable, Equatable {
    /// Fabric host numbers: cp .2, client .3, lb .4, node i .(10+i).
    public static let firstNodeHost = 10
    /// The fabric bridge, inside the fabric namespace.
    public static let fabricBridge = "br0"
    /// The pod bridge, inside every node namespace.
    public static let podBridge = "cbr0"
    /// Every host's link to the fabric, and every pod's link to its node.
    public static let uplink = "eth0"

    public let cluster: String
    public let network: NetworkConfig

    public init(_ config: ClusterConfig) {
        cluster = config.name
        network = config.network
    }

    /// All of this cluster's namespaces begin with this; cluster names contain no '-', so no other
    /// cluster's do.
    public var prefix: String { "kemu-\(cluster)-" }
    public func namespace(_ host: String) -> String { prefix + host }
    public func podNamespace(_ pod: String) -> String { prefix + "p-" + pod }
    public var fabricNamespace: String { namespace("fabric") }

    public var fabricPrefixLength: Int { network.fabricCIDR.prefixLength }
    public var controlPlaneIP: IPv4Address { network.fabricCIDR.host(2)! }
    public var clientIP: IPv4Address { network.fabricCIDR.host(3)! }
    public var loadBalancerIP: IPv4Address { network.fabricCIDR.host(4)! }
    public var kubernetesServiceIP: IPv4Address { network.serviceCIDR.host(1)! }
    public var dnsServiceIP: IPv4Address { network.serviceCIDR.host(10)! }

    /// Node with index i (1-based).
    public func nodeIP(_ index: Int) -> IPv4Address { network.fabricCIDR.host(UInt32(Self.firstNodeHost + index))! }
    public func podCIDR(_ index: Int) -> IPv4Network { network.podCIDR.subnet(index, prefixLength: network.nodePodPrefixLength)! }
    /// The node's address on cbr0: the pods' default gateway.
    public func podGateway(_ index: Int) -> IPv4Interface {
        IPv4Interface(podCIDR(index).host(1)!, prefixLength: network.nodePodPrefixLength)
    }

    /// Pod addresses a node hands out: .2 up to the last before broadcast.
    public func podAddresses(_ index: Int) -> [IPv4Address] {
        let cidr = podCIDR(index)
        return (2..<UInt32(cidr.size - 1)).map { cidr.host($0)! }
    }

    /// The pod's `/etc/hosts`, as kubelet writes it: loopback names, then the pod's own.
    public static func hostsFile(ip: IPv4Address, hostname: String) -> String {
        "# Kubernetes-managed hosts file (kemu).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\(ip)\t\(hostname)\n"
    }

    /// The pod's `/etc/resolv.conf`, pointing at cluster DNS with Kubernetes' search path.
    public func resolvConf(kubernetesNamespace: String) -> String {
        let domain = network.clusterDomain
        return """
        search \(kubernetesNamespace).svc.\(domain) svc.\(domain) \(domain)
        nameserver \(dnsServiceIP)
        options ndots:5

        """
    }

    /// A pod's MAC: 0a:58 (locally administered) then its IPv4 address, as OVN-Kubernetes does.
    /// The same address always has the same MAC, so no neighbour entry ever goes stale.
    public static func podMAC(_ ip: IPv4Address) -> [UInt8] { [0x0a, 0x58] + ip.octets }

    /// The host-side name of a pod's veth on its node: derived from the pod's name (FNV-1a), so it
    /// fits in 15 characters whatever the pod is called and can be found again from the name.
    public static func podVethName(_ pod: String) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in pod.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let hex = String(hash, radix: 16)
        return "veth" + String(repeating: "0", count: 8 - hex.count) + hex
    }
}
