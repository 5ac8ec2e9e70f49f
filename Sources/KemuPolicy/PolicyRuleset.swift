import KemuIP

/// One node's nftables ruleset for a `PolicyModel` (table `ip kemu_policy`, replaced whole in
/// one transaction). Every isolated pod has a chain per direction: its allow rules `return`
/// (counted on the policy's allow counter); what none allows is counted on the deny counters of
/// the policies that isolate it and marked denied. The hooks then act on the mark:
///
/// - forward (pod to pod through this node): the egress of this node's pods, the ingress of
///   this node's pods; denied packets are dropped, as upstream's plugins drop them.
/// - output (the node proxy's dials, from a client's address or the node's): the egress and the
///   ingress of every pod (but the node's own pods from the node: its probes, hairpin and
///   masqueraded dials, as CNIs allow the host) — another node's pod's egress too, since the
///   mesh delivers here, from that pod's address, what passed no hook of its own node — so a
///   dial the destination's node would drop is refused here, at once, with an ICMP error that
///   carries the proxy's reply mark back to the proxy's own socket (`fwmark_reflect`), which it
///   reads as "policy", not as a dead endpoint.
/// - input: the egress of this node's pods towards the cluster DNS (served on each node); and
///   what the mesh captures for the proxy (to a pod's address, so not local to the node), judged
///   as forward judges it.
///
/// Replies of allowed connections pass (`ct state established,related`).
public enum PolicyRuleset {
    public static let table = "kemu_policy"
    /// The packet mark bit of a denial (above the proxy's 16-bit reply mark).
    public static let denyMark: UInt32 = 0x0010_0000
    /// The NFLOG group denied packets are logged to (at most `logRate` a second per hook).
    public static let logGroup: UInt16 = 31
    static let logRate = 100

    /// What a counter of the ruleset counts.
    public struct Counter: Sendable, Hashable {
        public var policy: String
        public var direction: PolicyModel.Direction
        public var allowed: Bool
    }

    /// The script for `node`, and what each named counter counts. With no policy, a script that
    /// removes the table.
    public static func render(_ model: PolicyModel, node: String, nodeAddresses: [IPv4Address] = [], dns: IPv4Address?,
                              replyMark: UInt32) -> (script: String, counters: [String: Counter]) {
        var script = "table ip \(table)\ndelete table ip \(table)\n"
        guard !model.ingress.isEmpty || !model.egress.isEmpty else { return (script, [:]) }
        var counters: [String: Counter] = [:]
        var counterNames: [Counter: String] = [:]
        for (p, policy) in model.policies.enumerated() {
            for direction in [PolicyModel.Direction.ingress, .egress] where (direction == .ingress ? policy.ingress : policy.egress) != nil {
                for allowed in [true, false] {
                    let counter = Counter(policy: policy.id, direction: direction, allowed: allowed)
                    let name = "\(allowed ? "a" : "d")\(p)_\(direction == .ingress ? "i" : "e")"
                    counters[name] = counter
                    counterNames[counter] = name
                }
            }
        }
        var sets: [[IPv4Address]: String] = [:]
        var body: [String] = []
        func setName(_ addresses: [IPv4Address]) -> String {
            if let name = sets[addresses] { return name }
            let name = "s\(sets.count)"
            sets[addresses] = name
            return name
        }
        func chain(_ prefix: String, _ ip: IPv4Address, _ side: PolicyModel.Side, _ direction: PolicyModel.Direction) -> String {
            let peer = direction == .ingress ? "saddr" : "daddr"
            var lines: [String] = []
            for allow in side.allows {
                let count = counterNames[Counter(policy: allow.rule.policy, direction: direction, allowed: true)].map { "counter name \"\($0)\" " } ?? ""
                for clause in allow.clauses {
                    let match: String
                    switch clause.peers {
                    case .any: match = ""
                    case let .addresses(list): match = "ip \(peer) @\(setName(list)) "
                    case let .block(cidr, except):
                        let outside = minimal(except).map(\.description).joined(separator: ", ")
                        match = "ip \(peer) \(cidr) " + (outside.isEmpty ? "" : "ip \(peer) != { \(outside) } ")
                    }
                    guard let ports = clause.ports else {
                        lines.append("\(match)\(count)return comment \"\(allow.rule)\"")
                        continue
                    }
                    for transport in Set(ports.map(\.transport)).sorted() {
                        let ranges = ports.filter { $0.transport == transport }
                        let proto = transport.lowercased()
                        if ranges.contains(where: { $0.first == 0 && $0.last == 65535 }) {
                            lines.append("\(match)meta l4proto \(proto) \(count)return comment \"\(allow.rule)\"")
                        } else {
                            let list = Set(ranges.map { $0.first == $0.last ? "\($0.first)" : "\($0.first)-\($0.last)" }).sorted().joined(separator: ", ")
                            lines.append("\(match)\(proto) dport { \(list) } \(count)return comment \"\(allow.rule)\"")
                        }
                    }
                }
            }
            let denies = side.selectedBy.compactMap { counterNames[Counter(policy: $0, direction: direction, allowed: false)] }
            lines.append(denies.map { "counter name \"\($0)\" " }.joined() + "meta mark set meta mark | \(hex(denyMark))")
            return "    chain \(prefix)_\(name(ip)) {\n" + lines.map { "        " + $0 }.joined(separator: "\n") + "\n    }"
        }
        let local = Set(model.pods.filter { $0.value.node == node }.keys)
        let egress = model.egress.filter { !$0.value.selectedBy.isEmpty }.sorted { $0.key < $1.key }
        let ingress = model.ingress.filter { !$0.value.selectedBy.isEmpty }.sorted { $0.key < $1.key }
        for (ip, side) in egress { body.append(chain("e", ip, side, .egress)) }
        for (ip, side) in ingress { body.append(chain("i", ip, side, .ingress)) }
        func vmap(_ key: String, _ prefix: String, _ ips: [IPv4Address]) -> String? {
            ips.isEmpty ? nil : "ip \(key) vmap { " + ips.map { "\($0) : jump \(prefix)_\(name($0))" }.joined(separator: ", ") + " }"
        }
        let egressMap = vmap("saddr", "e", egress.map(\.key).filter(local.contains))
        let allEgress = vmap("saddr", "e", egress.map(\.key))
        let localIngress = vmap("daddr", "i", ingress.map(\.key).filter(local.contains))
        let allIngress = vmap("daddr", "i", ingress.map(\.key))
        let denied = "meta mark & \(hex(denyMark)) == \(hex(denyMark))"
        func log(_ hook: String) -> String { "\(denied) limit rate \(logRate)/second log group \(logGroup) prefix \"kemu-drop \(hook)\"" }
        func hook(_ name: String, _ rules: [String?]) -> String {
            let lines = ["type filter hook \(name) priority filter; policy accept;", "ct state established,related accept"] + rules.compactMap { $0 }
            return "    chain \(name) {\n" + lines.map { "        " + $0 }.joined(separator: "\n") + "\n    }"
        }
        body.append(hook("forward", [egressMap, localIngress, log("forward"), "\(denied) drop"]))
        // The node itself reaches its own pods whatever the policies say (kubelet's probes; a
        // hairpin or masqueraded dial), as Calico and Cilium allow the host to.
        let localPods = ingress.map(\.key).filter(local.contains)
        let fromNode = nodeAddresses.isEmpty || localPods.isEmpty ? nil
            : "ip saddr { \(nodeAddresses.map(\.description).joined(separator: ", ")) } ip daddr { \(localPods.map(\.description).joined(separator: ", ")) } accept"
        body.append(hook("output", [allEgress, fromNode, allIngress, log("output"), "\(denied) meta mark set \(hex(replyMark)) reject with icmp type net-prohibited"]))
        // What the mesh's capture takes to the node proxy (TPROXY: addressed to a pod, not to the
        // node) is judged on input as the forward hook judges it passing by: dropped when denied,
        // not accepted by the proxy and then reset.
        let captured = "fib daddr type != local"
        var input: [String] = []
        if let dns, let egressMap { input.append("ip daddr \(dns) \(egressMap)") }
        if let egressMap { input.append("\(captured) \(egressMap)") }
        if let allIngress { input.append("\(captured) \(allIngress)") }
        if !input.isEmpty { body.append(hook("input", input + [log("input"), "\(denied) drop"])) }

        var head: [String] = counters.keys.sorted().map { "    counter \($0) { }" }
        for (addresses, name) in sets.sorted(by: { $0.value < $1.value }) {
            let elements = addresses.isEmpty ? "" : " elements = { " + addresses.map(\.description).joined(separator: ", ") + " };"
            head.append("    set \(name) { type ipv4_addr;\(elements) }")
        }
        script += "table ip \(table) {\n" + (head + body).joined(separator: "\n") + "\n}\n"
        return (script, counters)
    }

    /// Chain names from addresses: 10.244.1.5 → 10_244_1_5.
    static func name(_ ip: IPv4Address) -> String { ip.description.split(separator: ".").joined(separator: "_") }

    static func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }

    /// The networks without those inside another of them (nft refuses overlapping elements).
    static func minimal(_ networks: [IPv4Network]) -> [IPv4Network] {
        let unique = Array(Set(networks)).sorted { ($0.prefixLength, $0.address) < ($1.prefixLength, $1.address) }
        var kept: [IPv4Network] = []
        for n in unique where !kept.contains(where: { $0.contains(n.address) && $0.prefixLength <= n.prefixLength }) { kept.append(n) }
        return kept.sorted { $0.address < $1.address }
    }
}
