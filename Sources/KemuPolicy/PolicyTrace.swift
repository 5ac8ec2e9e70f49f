import KemuIP

/// `kemu policy trace`'s answer: the verdict of the model the nodes enforce, and the policy
/// and rule that decided each side, in words.
public struct PolicyTrace: Sendable {
    /// One end of the traced packet: its address and what it is (a pod's namespace/name, a host).
    public struct End: Sendable {
        public var ip: IPv4Address
        public var label: String
        public init(ip: IPv4Address, label: String) {
            self.ip = ip
            self.label = label
        }
        var text: String { label.isEmpty || label == ip.description ? ip.description : "\(label) (\(ip))" }
    }

    public var source: End
    public var destination: End
    public var port: UInt16
    public var transport: String
    public var verdict: PolicyModel.Verdict

    public init(model: PolicyModel, from source: End, to destination: End, port: UInt16, transport: String) {
        self.source = source
        self.destination = destination
        self.port = port
        self.transport = transport
        verdict = model.verdict(from: source.ip, to: destination.ip, port: port, transport: transport)
    }

    /// `ALLOWED x/a (10.244.1.2) → y/b (10.244.2.3) 80/TCP`, then a line per side.
    public var text: String {
        var out = "\(verdict.allowed ? "ALLOWED" : "DENIED") \(source.text) → \(destination.text) \(port)/\(transport)\n"
        out += "  egress of \(source.text): \(describe(verdict.egress, .egress))\n"
        out += "  ingress of \(destination.text): \(describe(verdict.ingress, .ingress))\n"
        return out
    }

    func describe(_ side: PolicyModel.SideVerdict, _ direction: PolicyModel.Direction) -> String {
        switch side {
        case .notIsolated:
            return "allowed — no NetworkPolicy selects it for \(direction.rawValue)"
        case .ownTraffic:
            return "allowed — a pod's traffic to itself never leaves it"
        case let .allowed(rule):
            return "allowed by \(rule)"
        case let .denied(policies):
            return "denied — isolated by \(policies.joined(separator: ", ")) (\(direction.rawValue)), and no rule of theirs allows it"
        }
    }
}
