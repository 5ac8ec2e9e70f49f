import KemuAPI
import KemuIP

/// What NetworkPolicy enforcement reads of a pod: where it is, what labels select it, and its
/// named ports (a policy's `port: http` means each pod's own `http`).
public struct PolicyPod: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var ip: IPv4Address?
    public var node: String
    public var labels: [String: String]
    public var ports: [NamedPort]

    public struct NamedPort: Sendable, Equatable {
        public var name: String
        public var number: UInt16
        public var transport: String
    }

    public init(namespace: String, name: String, ip: IPv4Address?, node: String, labels: [String: String], ports: [NamedPort] = []) {
        self.namespace = namespace
        self.name = name
        self.ip = ip
        self.node = node
        self.labels = labels
        self.ports = ports
    }

    /// A pod as the API has it; nil for one that has ended (its address may be another's now)
    /// or uses the node's network (policy does not apply to it).
    public init?(_ pod: JSON) {
        let phase = pod[path: "status.phase"]?.string ?? ""
        guard phase != "Succeeded", phase != "Failed", pod[path: "spec.hostNetwork"]?.bool != true else { return nil }
        var ports: [NamedPort] = []
        for container in pod[path: "spec.containers"]?.array ?? [] {
            for p in container["ports"]?.array ?? [] {
                guard let name = p["name"]?.string, let number = p["containerPort"]?.int.flatMap(UInt16.init(exactly:)) else { continue }
                ports.append(NamedPort(name: name, number: number, transport: p["protocol"]?.string ?? "TCP"))
            }
        }
        self.init(namespace: pod.namespace, name: pod.name, ip: pod[path: "status.podIP"]?.string.flatMap(IPv4Address.init),
                  node: pod[path: "spec.nodeName"]?.string ?? "", labels: pod.labels, ports: ports)
    }

    public var id: String { "\(namespace)/\(name)" }
}

/// A NetworkPolicy (networking.k8s.io/v1) in the form enforcement needs. Parsed leniently:
/// admission has validated it; what still cannot be read (a selector, a CIDR) makes that part
/// match nothing, never everything, and is reported in `problems`.
public struct PolicySpec: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var podSelector: LabelSelector
    public var ingress: [Rule]?
    public var egress: [Rule]?
    public var problems: [String] = []

    public struct Rule: Sendable, Equatable {
        /// nil: every peer (`from`/`to` absent or empty).
        public var peers: [Peer]?
        /// Empty: every port of every protocol.
        public var ports: [Port]
    }

    public enum Peer: Sendable, Equatable {
        /// Pods: in the policy's namespace (no namespace selector) or in the namespaces selected.
        case pods(namespaces: LabelSelector?, pods: LabelSelector)
        case block(IPv4Network, except: [IPv4Network])
    }

    public struct Port: Sendable, Equatable {
        public var transport: String
        /// nil: every port of the protocol.
        public var port: PortRef?
        public var endPort: UInt16?
    }

    public enum PortRef: Sendable, Equatable {
        case number(UInt16)
        case named(String)
    }

    public var id: String { "\(namespace)/\(name)" }

    public init(namespace: String, name: String, podSelector: LabelSelector, ingress: [Rule]?, egress: [Rule]?) {
        self.namespace = namespace
        self.name = name
        self.podSelector = podSelector
        self.ingress = ingress
        self.egress = egress
    }

    public init(_ policy: JSON) {
        namespace = policy.namespace
        name = policy.name
        let spec = policy["spec"] ?? [:]
        var problems: [String] = []
        podSelector = Self.selector(spec["podSelector"], "spec.podSelector", &problems)
        // Upstream's default when policyTypes is absent: Ingress, and Egress with egress rules.
        let types = spec["policyTypes"]?.array?.compactMap(\.string) ?? (spec["egress"] != nil ? ["Ingress", "Egress"] : ["Ingress"])
        func rules(_ direction: String, _ peersKey: String) -> [Rule]? {
            guard types.contains(direction.prefix(1).uppercased() + direction.dropFirst()) else { return nil }
            return (spec[direction]?.array ?? []).enumerated().map { i, rule in
                let at = "spec.\(direction)[\(i)]"
                let peerList = rule[peersKey]?.array ?? []
                let peers: [Peer]? = peerList.isEmpty ? nil : peerList.enumerated().map { j, peer in
                    Self.peer(peer, "\(at).\(peersKey)[\(j)]", &problems)
                }
                let ports = (rule["ports"]?.array ?? []).map { p -> Port in
                    let ref: PortRef? = p["port"].flatMap { value in
                        if let n = value.int { return UInt16(exactly: n).map(PortRef.number) }
                        return value.string.map { Int($0).flatMap(UInt16.init(exactly:)).map(PortRef.number) ?? .named($0) }
                    }
                    return Port(transport: p["protocol"]?.string ?? "TCP", port: ref, endPort: p["endPort"]?.int.flatMap(UInt16.init(exactly:)))
                }
                return Rule(peers: peers, ports: ports)
            }
        }
        ingress = rules("ingress", "from")
        egress = rules("egress", "to")
        self.problems = problems
    }

    static func selector(_ json: JSON?, _ at: String, _ problems: inout [String]) -> LabelSelector {
        do { return try LabelSelector(json: json ?? [:]) } catch {
            problems.append("\(at): \(error); it selects nothing")
            return .nothing
        }
    }

    static func peer(_ peer: JSON, _ at: String, _ problems: inout [String]) -> Peer {
        if let block = peer["ipBlock"] {
            guard let cidr = block["cidr"]?.string.flatMap({ IPv4Interface($0)?.network }) else {
                problems.append("\(at).ipBlock.cidr: not an IPv4 CIDR; it matches nothing")
                return .pods(namespaces: .nothing, pods: .nothing)
            }
            let except = (block["except"]?.array ?? []).compactMap { $0.string.flatMap({ IPv4Interface($0)?.network }) }
            return .block(cidr, except: except)
        }
        let namespaces = peer["namespaceSelector"].map { selector($0, "\(at).namespaceSelector", &problems) }
        return .pods(namespaces: namespaces, pods: selector(peer["podSelector"], "\(at).podSelector", &problems))
    }
}
