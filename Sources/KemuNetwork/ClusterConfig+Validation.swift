import KemuIP

extension ClusterConfig {
    /// Linux's limit for a network interface name (IFNAMSIZ - 1).
    public static let maxInterfaceName = 15
    /// Host names on the fabric that are not nodes.
    public static let reservedHostNames: Set<String> = ["fabric", "cp", "client", "lb"]

    /// Every problem in this config, each naming its field; empty when the config is usable.
    public func validate() -> [ConfigError] {
        var errors: [ConfigError] = []
        func fail(_ field: String, _ message: String) { errors.append(ConfigError(field, message)) }

        if !Self.isClusterName(name) {
            fail("name", "\"\(name)\" must be 1-\(Self.maxNameLength) lower-case letters and digits, starting with a letter (no '-': it keeps the kemu-\(name)- prefix unambiguous)")
        }
        if nodes.isEmpty { fail("nodes", "a cluster needs at least one node") }
        var seen: Set<String> = []
        for (i, node) in nodes.enumerated() {
            let field = "nodes[\(i)]"
            if !Self.isDNSLabel(node) {
                fail(field, "\"\(node)\" must be lower-case letters, digits and '-', starting and ending with a letter or digit")
            } else if node.count > Self.maxInterfaceName {
                fail(field, "\"\(node)\" is \(node.count) characters; a node's name is its link name on the fabric, at most \(Self.maxInterfaceName)")
            } else if Self.reservedHostNames.contains(node) || node.hasPrefix("p-") {
                fail(field, "\"\(node)\" is reserved (fabric, cp, client, lb and p-* name other hosts)")
            }
            if !seen.insert(node).inserted { fail(field, "\"\(node)\" is listed twice") }
        }

        for (node, zone) in (zones ?? [:]).sorted(by: { $0.key < $1.key }) {
            if !seen.contains(node) { fail("zones.\(zone)", "node \"\(node)\" is not one of the cluster's nodes") }
            let valid = zone.count <= 63 && zone.first?.isLetterOrDigitASCII == true && zone.last?.isLetterOrDigitASCII == true
                && zone.allSatisfy { $0.isLetterOrDigitASCII || "-_.".contains($0) }
            if !valid { fail("zones.\(zone)", "\"\(zone)\" is not a label value (at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric)") }
        }

        // Quantities: digits, an optional fraction, an optional suffix (500m, 2, 1.5, 512Mi, 8G).
        func isQuantity(_ q: String) -> Bool {
            let suffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", ""]
            guard let suffix = suffixes.first(where: { q.hasSuffix($0) && q.count > $0.count }) else { return false }
            let number = q.dropLast(suffix.count).split(separator: ".", omittingEmptySubsequences: false)
            return number.count <= 2 && number.allSatisfy { !$0.isEmpty && $0.allSatisfy { ("0"..."9").contains($0) } }
        }
        if !isQuantity(nodeResources.cpu) { fail("nodeResources.cpu", "\"\(nodeResources.cpu)\" is not a quantity such as 4 or 3500m") }
        if !isQuantity(nodeResources.memory) { fail("nodeResources.memory", "\"\(nodeResources.memory)\" is not a quantity such as 8Gi or 512Mi") }
        if nodeResources.pods < 1 { fail("nodeResources.pods", "\(nodeResources.pods) must be at least 1") }

        if let c = controlPlane {
            let most = ControlPlaneConfig.maximumSeconds
            if !(ControlPlaneConfig.minimumGracePeriod...most).contains(c.nodeGracePeriod) {
                fail("controlPlane.nodeGracePeriod", "\(c.nodeGracePeriod) s must be between \(Int(ControlPlaneConfig.minimumGracePeriod)) s (agents post every second) and \(Int(most)) s")
            }
            if !(0...most).contains(c.podEvictionDelay) {
                fail("controlPlane.podEvictionDelay", "\(c.podEvictionDelay) s must be between 0 and \(Int(most)) s")
            }
        }

        let n = network
        let fabricHosts = Int(n.fabricCIDR.size) - 2
        if fabricHosts < AddressPlan.firstNodeHost + nodes.count {
            fail("network.fabricCIDR", "\(n.fabricCIDR) has room for \(max(0, fabricHosts - AddressPlan.firstNodeHost)) nodes, the config has \(nodes.count)")
        }
        if n.nodePodPrefixLength < n.podCIDR.prefixLength || n.nodePodPrefixLength > 29 {
            fail("network.nodePodPrefixLength", "\(n.nodePodPrefixLength) must be between podCIDR's prefix length (\(n.podCIDR.prefixLength)) and 29")
        } else {
            let subnets = 1 << (n.nodePodPrefixLength - n.podCIDR.prefixLength)
            // Node i uses subnet i; subnet 0 stays unused, as in README.md's topology (node-1 = 10.244.1.0/24).
            if subnets - 1 < nodes.count {
                fail("network.podCIDR", "\(n.podCIDR) holds \(subnets - 1) node subnets of /\(n.nodePodPrefixLength), the config has \(nodes.count) nodes")
            }
        }
        if n.serviceCIDR.prefixLength > 28 {
            fail("network.serviceCIDR", "\(n.serviceCIDR) is too small: it needs at least 16 addresses (.1 kubernetes, .10 DNS)")
        }
        if n.nodePortRange.lower < 1 || n.nodePortRange.upper > 65535 || n.nodePortRange.lower > n.nodePortRange.upper {
            fail("network.nodePortRange", "\(n.nodePortRange) must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
        }
        if !Self.isDomain(n.clusterDomain) {
            fail("network.clusterDomain", "\"\(n.clusterDomain)\" is not a DNS domain such as cluster.local")
        }
        let ranges: [(String, IPv4Network)] = [
            ("network.fabricCIDR", n.fabricCIDR), ("network.podCIDR", n.podCIDR),
            ("network.serviceCIDR", n.serviceCIDR), ("network.loadBalancerPool", n.loadBalancerPool),
        ]
        for i in ranges.indices {
            for j in ranges.indices where j > i && ranges[i].1.overlaps(ranges[j].1) {
                fail(ranges[j].0, "\(ranges[j].1) overlaps \(ranges[i].0) \(ranges[i].1)")
            }
        }
        return errors
    }

    public static func isClusterName(_ s: String) -> Bool {
        guard let first = s.first, first.isASCII, first.isLowercase, s.count <= maxNameLength else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) }
    }

    /// RFC 1123 label: what Kubernetes requires of most names.
    public static func isDNSLabel(_ s: String) -> Bool {
        guard (1...63).contains(s.count), let first = s.first, let last = s.last else { return false }
        let ok: (Character) -> Bool = { $0.isASCII && ($0.isLowercase || $0.isNumber) }
        return ok(first) && ok(last) && s.allSatisfy { ok($0) || $0 == "-" }
    }

    static func isDomain(_ s: String) -> Bool {
        s.count <= 253 && !s.isEmpty && s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel(String($0)) }
    }
}

extension Character {
    var isLetterOrDigitASCII: Bool { isASCII && (isLetter || isNumber) }
}
