import KemuIP

/// NetworkPolicy compiled against the pods and namespaces there are now: for each pod address,
/// whether any policy isolates it per direction, and the rules that allow traffic then, each
/// resolved to addresses and port numbers. The nodes' nftables rules are rendered from it
/// (`PolicyRuleset`), and `kemu policy trace` evaluates it (`verdict`): one model, so what
/// trace says is what the nodes do.
public struct PolicyModel: Sendable {
    public enum Direction: String, Sendable, Hashable { case ingress, egress }

    /// One rule of one policy: what its counters and trace name.
    public struct RuleID: Sendable, Hashable, CustomStringConvertible {
        public var policy: String
        public var direction: Direction
        public var index: Int
        public var description: String { "\(policy) \(direction.rawValue) rule \(index)" }
    }

    /// Addresses a clause matches.
    public enum Peers: Sendable, Hashable {
        case any
        /// Pod addresses (sorted, each once).
        case addresses([IPv4Address])
        case block(IPv4Network, except: [IPv4Network])

        func contains(_ ip: IPv4Address) -> Bool {
            switch self {
            case .any: return true
            case let .addresses(list): return list.contains(ip)
            case let .block(cidr, except): return cidr.contains(ip) && !except.contains { $0.contains(ip) }
            }
        }
    }

    public struct PortRange: Sendable, Hashable {
        public var transport: String
        public var first: UInt16
        public var last: UInt16
        func contains(_ port: UInt16, _ transport: String) -> Bool { self.transport == transport && (first...last).contains(port) }
    }

    /// Peers and ports together; nil ports: every port.
    public struct Clause: Sendable, Hashable {
        public var peers: Peers
        public var ports: [PortRange]?
        func matches(_ peer: IPv4Address, _ port: UInt16, _ transport: String) -> Bool {
            peers.contains(peer) && (ports?.contains { $0.contains(port, transport) } ?? true)
        }
    }

    public struct Allow: Sendable, Hashable {
        public var rule: RuleID
        public var clauses: [Clause]
    }

    /// One direction of one pod: the policies that select it (none: not isolated, all allowed)
    /// and what they allow.
    public struct Side: Sendable {
        public var selectedBy: [String] = []
        public var allows: [Allow] = []
    }

    public private(set) var pods: [IPv4Address: PolicyPod] = [:]
    public private(set) var ingress: [IPv4Address: Side] = [:]
    public private(set) var egress: [IPv4Address: Side] = [:]
    public private(set) var policies: [PolicySpec] = []

    public init() {}

    /// Compiles `policies` against `pods` and the namespaces' labels (each namespace also has
    /// `kubernetes.io/metadata.name`, as upstream sets it). `extraPeers` are addresses that act as
    /// pods without being any (the cluster DNS, as kube-system's kube-dns).
    public init(policies: [PolicySpec], pods podList: [PolicyPod], namespaces: [String: [String: String]]) {
        self.policies = policies.sorted { $0.id < $1.id }
        for pod in podList { if let ip = pod.ip { pods[ip] = pod } }
        func namespaceLabels(_ name: String) -> [String: String] {
            var labels = namespaces[name] ?? [:]
            labels["kubernetes.io/metadata.name"] = name
            return labels
        }
        let byAddress = pods.sorted { $0.key < $1.key }
        for policy in self.policies {
            let selected = byAddress.filter { $0.value.namespace == policy.namespace && policy.podSelector.matches($0.value.labels) }
            guard !selected.isEmpty else { continue }
            for (direction, rules) in [(Direction.ingress, policy.ingress), (.egress, policy.egress)] {
                guard let rules else { continue }
                // The peers of each rule are the same for every pod it selects; only named
                // ports differ (each pod's own, for ingress).
                let peerPods = rules.map { rule in rule.peers.map { peers in peers.map { resolve($0, policy: policy, byAddress, namespaceLabels) } } }
                for (ip, pod) in selected {
                    var side = (direction == .ingress ? ingress[ip] : egress[ip]) ?? Side()
                    side.selectedBy.append(policy.id)
                    for (i, rule) in rules.enumerated() {
                        let clauses = Self.clauses(rule, peers: peerPods[i], direction: direction, target: pod, every: byAddress)
                        side.allows.append(Allow(rule: RuleID(policy: policy.id, direction: direction, index: i), clauses: clauses))
                    }
                    if direction == .ingress { ingress[ip] = side } else { egress[ip] = side }
                }
            }
        }
    }

    /// A peer as addresses: pods (with their named ports, for egress) or a block.
    enum ResolvedPeer {
        case pods([(IPv4Address, PolicyPod)])
        case block(IPv4Network, except: [IPv4Network])
    }

    private func resolve(_ peer: PolicySpec.Peer, policy: PolicySpec, _ byAddress: [(key: IPv4Address, value: PolicyPod)],
                         _ namespaceLabels: (String) -> [String: String]) -> ResolvedPeer {
        switch peer {
        case let .block(cidr, except):
            return .block(cidr, except: except)
        case let .pods(namespaces, selector):
            return .pods(byAddress.filter { _, pod in
                let inNamespace = namespaces.map { $0.matches(namespaceLabels(pod.namespace)) } ?? (pod.namespace == policy.namespace)
                return inNamespace && selector.matches(pod.labels)
            }.map { ($0.key, $0.value) })
        }
    }

    /// A rule's clauses for one selected pod. Ingress ports are the target's own; egress named
    /// ports are each peer pod's, so peers are grouped by what the names resolve to there.
    static func clauses(_ rule: PolicySpec.Rule, peers: [ResolvedPeer]?, direction: Direction, target: PolicyPod,
                        every: [(key: IPv4Address, value: PolicyPod)]) -> [Clause] {
        let named = rule.ports.contains { if case .named = $0.port { return true } else { return false } }
        var out: [Clause] = []
        guard let peers else {
            // Every peer. Ingress names resolve on the target; egress names on each destination
            // pod (a destination that is no pod has no named ports), so those go pod by pod.
            guard direction == .egress && named else { return [Clause(peers: .any, ports: ports(rule.ports, on: target))] }
            if let numbered = ports(rule.ports, on: nil), !numbered.isEmpty { out.append(Clause(peers: .any, ports: numbered)) }
            return out + clauses(rule, peers: [.pods(every.map { ($0.key, $0.value) })], direction: direction, target: target, every: every)
        }
        var pods: [IPv4Address] = []
        var podPorts: [[PortRange]?: [IPv4Address]] = [:]
        for peer in peers {
            switch peer {
            case let .block(cidr, except):
                // Named ports belong to pods; a block has none to match.
                out.append(Clause(peers: .block(cidr, except: except), ports: ports(rule.ports, on: direction == .ingress ? target : nil)))
            case let .pods(list):
                if direction == .egress && named {
                    for (ip, pod) in list { podPorts[ports(rule.ports, on: pod), default: []].append(ip) }
                } else {
                    pods += list.map(\.0)
                }
            }
        }
        if !pods.isEmpty || (podPorts.isEmpty && out.isEmpty) {
            out.insert(Clause(peers: .addresses(Array(Set(pods)).sorted()), ports: ports(rule.ports, on: target)), at: 0)
        }
        for (resolved, ips) in podPorts.sorted(by: { $0.value.min() ?? IPv4Address(0) < $1.value.min() ?? IPv4Address(0) }) {
            out.append(Clause(peers: .addresses(Array(Set(ips)).sorted()), ports: resolved))
        }
        return out
    }

    /// A rule's ports as number ranges; a named port resolved on `pod` (unmatched without one,
    /// or where the pod has no port of that name and protocol). nil: every port.
    static func ports(_ specs: [PolicySpec.Port], on pod: PolicyPod?) -> [PortRange]? {
        guard !specs.isEmpty else { return nil }
        return specs.compactMap { spec in
            switch spec.port {
            case nil:
                return PortRange(transport: spec.transport, first: 0, last: 65535)
            case let .number(n):
                return PortRange(transport: spec.transport, first: n, last: max(spec.endPort ?? n, n))
            case let .named(name):
                guard let number = pod?.ports.first(where: { $0.name == name && $0.transport == spec.transport })?.number else { return nil }
                return PortRange(transport: spec.transport, first: number, last: number)
            }
        }
    }
}

extension PolicyModel {
    /// How one direction judged a packet.
    public enum SideVerdict: Sendable, Equatable {
        /// No policy selects the pod for this direction (or it is not a pod).
        case notIsolated
        /// A pod's traffic to itself never leaves it: no policy applies.
        case ownTraffic
        case allowed(RuleID)
        /// Isolated by these policies, and no rule of theirs allows it.
        case denied(selectedBy: [String])

        public var allows: Bool { if case .denied = self { return false } else { return true } }
    }

    public struct Verdict: Sendable, Equatable {
        public var egress: SideVerdict
        public var ingress: SideVerdict
        public var allowed: Bool { egress.allows && ingress.allows }
    }

    /// What the nodes do with a new connection (or flow) from `source` to `destination`
    /// `port`/`transport`: the source pod's egress, then the destination pod's ingress. Replies
    /// of allowed connections are always allowed.
    public func verdict(from source: IPv4Address, to destination: IPv4Address, port: UInt16, transport: String) -> Verdict {
        func judge(_ side: Side?, peer: IPv4Address) -> SideVerdict {
            guard let side, !side.selectedBy.isEmpty else { return .notIsolated }
            for allow in side.allows where allow.clauses.contains(where: { $0.matches(peer, port, transport) }) {
                return .allowed(allow.rule)
            }
            return .denied(selectedBy: side.selectedBy)
        }
        if source == destination { return Verdict(egress: .ownTraffic, ingress: .ownTraffic) }
        return Verdict(egress: judge(egress[source], peer: destination), ingress: judge(ingress[destination], peer: source))
    }
}
