import Foundation
import KemuAPI
import KemuClient
import KemuIP
import KemuNetfilter
import KemuSystem
import Logging
import Synchronization

/// NetworkPolicy on one node: follows the policies, and — once there is one — the pods and the
/// namespaces, compiles them (`PolicyModel`) and applies the node's ruleset (`PolicyRuleset`)
/// in one nftables transaction whenever what it says changes. Changes arriving together are
/// applied together (at most one apply per `batchDelay`). Counters survive the replacement of
/// the table: they are read and added up before each one.
public final class PolicyEnforcer: Sendable {
    public struct Config: Sendable {
        public var node: String
        /// The node's own addresses: what comes from them to the node's pods is always allowed.
        public var nodeAddresses: [IPv4Address] = []
        /// The cluster DNS address (served on each node): pods' egress towards it is policed.
        public var dns: IPv4Address?
        /// The mark that routes packets to the node proxy's sockets (`TransparentDial.mark`).
        public var replyMark: UInt32
        public var batchDelay: Duration = .milliseconds(5)
        /// A file each denied packet (up to 100 a second per hook) is explained in, a line
        /// each; nil: none.
        public var dropLog: String?

        public init(node: String, dns: IPv4Address?, replyMark: UInt32) {
            self.node = node
            self.dns = dns
            self.replyMark = replyMark
        }
    }

    let config: Config
    let client: APIClient
    let nft: NFTables
    let logger = Logger(label: "kemu.policy")
    let state = Mutex(State())
    let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    /// Told when the first policy appears: the pods and namespaces are then followed.
    let podsWanted = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    struct State {
        var policies: [String: PolicySpec] = [:]
        var pods: [String: PolicyPod] = [:]
        var namespaces: [String: [String: String]] = [:]
        var synced: Set<String> = []
        var watchingPods = false
        /// When the oldest change not yet applied arrived.
        var pendingSince: ContinuousClock.Instant?
        var script = ""
        var model = PolicyModel()
        var counters: [String: PolicyRuleset.Counter] = [:]
        /// Packets counted by tables already replaced.
        var totals: [PolicyRuleset.Counter: UInt64] = [:]
        var programming: [Double] = []
        var reported: Set<String> = []
    }

    public init(config: Config, client: APIClient) throws {
        self.config = config
        self.client = client
        nft = try NFTables()
    }

    /// Runs until cancelled.
    public func run() async throws {
        _ = try? nft.run(PolicyRuleset.render(PolicyModel(), node: config.node, dns: nil, replyMark: 0).script)  // a previous run's table
        guard let resource = APIResources.find(group: "networking.k8s.io", version: "v1", resource: "networkpolicies") else { return }
        let policies = Informer(client, resource)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await policies.run { self.policyEvent($0) } }
            group.addTask {
                // Pods and namespaces are followed from the first policy on: a cluster without
                // NetworkPolicy costs its nodes nothing.
                for await _ in self.podsWanted.stream { break }
                let pods = Informer(self.client, APIResources.pods, cache: .revisions)
                let namespaces = Informer(self.client, APIResources.namespaces, cache: .revisions)
                try await withThrowingTaskGroup(of: Void.self) { inner in
                    inner.addTask { try await pods.run { self.podEvent($0) } }
                    inner.addTask { try await namespaces.run { self.namespaceEvent($0) } }
                    try await inner.next()
                }
            }
            group.addTask { await self.applyLoop() }
            if let path = config.dropLog { startDropLog(path) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    func policyEvent(_ event: InformerEvent) {
        change { s in
            switch event {
            case let .added(p), let .updated(_, p): s.policies[p.namespace + "/" + p.name] = PolicySpec(p)
            case let .deleted(p): s.policies[p.namespace + "/" + p.name] = nil
            case .synced: s.synced.insert("policies")
            }
        }
    }

    func podEvent(_ event: InformerEvent) {
        change { s in
            switch event {
            case let .added(p), let .updated(_, p): s.pods[p.namespace + "/" + p.name] = PolicyPod(p)
            case let .deleted(p): s.pods[p.namespace + "/" + p.name] = nil
            case .synced: s.synced.insert("pods")
            }
        }
    }

    func namespaceEvent(_ event: InformerEvent) {
        change { s in
            switch event {
            case let .added(n), let .updated(_, n): s.namespaces[n.name] = n.labels
            case let .deleted(n): s.namespaces[n.name] = nil
            case .synced: s.synced.insert("namespaces")
            }
        }
    }

    private func change(_ body: (inout State) -> Void) {
        let startPods = state.withLock { s -> Bool in
            body(&s)
            if s.pendingSince == nil { s.pendingSince = .now }
            guard !s.watchingPods, !s.policies.isEmpty else { return false }
            s.watchingPods = true
            return true
        }
        if startPods { podsWanted.continuation.yield() }
        wake.continuation.yield()
    }

    private func applyLoop() async {
        for await _ in wake.stream {
            try? await Task.sleep(for: config.batchDelay)
            apply()
        }
    }

    /// Compiles and applies what is known now, unless a list is still incomplete (a half-known
    /// world would isolate pods without their allowed peers).
    func apply() {
        let inputs = state.withLock { s -> (policies: [PolicySpec], pods: [PolicyPod], namespaces: [String: [String: String]], since: ContinuousClock.Instant?)? in
            let needed: Set<String> = s.policies.isEmpty ? ["policies"] : ["policies", "pods", "namespaces"]
            guard needed.isSubset(of: s.synced) else { return nil }
            defer { s.pendingSince = nil }
            return (Array(s.policies.values), Array(s.pods.values), s.namespaces, s.pendingSince)
        }
        guard let inputs else { return }
        let model = PolicyModel(policies: inputs.policies, pods: inputs.pods, namespaces: inputs.namespaces)
        let (script, counters) = PolicyRuleset.render(model, node: config.node, nodeAddresses: config.nodeAddresses, dns: config.dns, replyMark: config.replyMark)
        for policy in inputs.policies { report(policy) }
        let unchanged = state.withLock { $0.script == script }
        if unchanged { return }
        let before = readCounters()
        do {
            try nft.run(script)
        } catch {
            logger.error("cannot apply NetworkPolicy rules: \(error)")
            state.withLock { $0.pendingSince = $0.pendingSince ?? inputs.since }
            return
        }
        let seconds = inputs.since.map { Double(($0.duration(to: .now)) / .milliseconds(1)) / 1000 }
        state.withLock { s in
            for (name, count) in before { if let counter = s.counters[name] { s.totals[counter, default: 0] += count } }
            s.script = script
            s.model = model
            s.counters = counters
            // A policy deleted takes its counters with it.
            let live = Set(counters.values.map(\.policy))
            s.totals = s.totals.filter { live.contains($0.key.policy) }
            if let seconds { s.programming.append(seconds) }
            if s.programming.count > 1024 { s.programming.removeFirst(s.programming.count - 1024) }
        }
    }

    private func report(_ policy: PolicySpec) {
        for problem in policy.problems where state.withLock({ $0.reported.insert("\(policy.id): \(problem)").inserted }) {
            logger.warning("NetworkPolicy \(policy.id): \(problem)")
        }
    }

    /// A thread that writes a line per denied packet the node logs: when, the hook, the packet,
    /// and the verdict of the model that denied it.
    func startDropLog(_ path: String) {
        let socket: PacketLogSocket
        do { socket = try PacketLogSocket(group: PolicyRuleset.logGroup) } catch {
            logger.warning("no drop log: \(error)")
            return
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            logger.warning("no drop log: cannot open \(path)")
            socket.close()
            return
        }
        let node = config.node
        startThread(named: "kemu-policy-drops") { [self] in
            while let datagram = socket.receive() {
                let model = state.withLock { $0.model }
                var text = ""
                for packet in NFLog.packets(in: datagram) { text += Self.dropLine(packet, node: node, model: model) }
                _ = text.withCString { write(fd, $0, strlen($0)) }
            }
            close(fd)
        }
    }

    /// `2026-12-05T08:10:00.123Z node-1 DROP x/a (10.244.1.2:41234) → y/b (10.244.2.3:80) TCP
    /// [forward]: ingress of y/b denied by y/deny`
    static func dropLine(_ p: LoggedPacket, node: String, model: PolicyModel) -> String {
        func end(_ ip: IPv4Address, _ port: UInt16) -> String {
            let address = p.transport == "TCP" || p.transport == "UDP" || p.transport == "SCTP" ? "\(ip):\(port)" : ip.description
            return model.pods[ip].map { "\($0.id) (\(address))" } ?? address
        }
        let verdict = model.verdict(from: p.source, to: p.destination, port: p.destinationPort, transport: p.transport)
        var why: [String] = []
        if case let .denied(policies) = verdict.egress { why.append("egress of \(model.pods[p.source]?.id ?? p.source.description) denied by \(policies.joined(separator: ", "))") }
        if case let .denied(policies) = verdict.ingress { why.append("ingress of \(model.pods[p.destination]?.id ?? p.destination.description) denied by \(policies.joined(separator: ", "))") }
        let hook = p.prefix.split(separator: " ").last.map(String.init) ?? ""
        return "\(Timestamp.formatMicro(Date())) \(node) DROP \(end(p.source, p.sourcePort)) → \(end(p.destination, p.destinationPort)) \(p.transport) [\(hook)]: \(why.isEmpty ? "denied" : why.joined(separator: "; "))\n"
    }

    /// The named counters of the table now: name → packets.
    func readCounters() -> [String: UInt64] {
        guard let text = try? nft.run("list counters table ip \(PolicyRuleset.table)") else { return [:] }
        // counter a0_i {\n packets 12 bytes 720\n }
        var out: [String: UInt64] = [:]
        var current: String?
        for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let words = line.split(separator: " ")
            if words.first == "counter", words.count >= 2 { current = String(words[1]) }
            if words.first == "packets", words.count >= 2, let name = current, let n = UInt64(words[1]) { out[name] = n }
        }
        return out
    }

    /// Packets allowed and denied per policy and direction on this node, since it started.
    public func counts() -> [(counter: PolicyRuleset.Counter, packets: UInt64)] {
        let now = readCounters()
        return state.withLock { s in
            var totals = s.totals
            for (name, count) in now { if let counter = s.counters[name] { totals[counter, default: 0] += count } }
            return totals.sorted { ($0.key.policy, $0.key.direction.rawValue, $0.key.allowed ? 0 : 1) < ($1.key.policy, $1.key.direction.rawValue, $1.key.allowed ? 0 : 1) }
                .map { ($0.key, $0.value) }
        }
    }

    /// Prometheus text: the counters, and how long changes took to apply.
    public func metricsText() -> String {
        var out = "# HELP kemu_policy_packets_total New connections (and flows) NetworkPolicy allowed or denied on this node, by policy.\n# TYPE kemu_policy_packets_total counter\n"
        for (counter, packets) in counts() {
            let (ns, name) = counter.policy.split(separator: "/", maxSplits: 1).map(String.init).splitPair
            out += "kemu_policy_packets_total{namespace=\"\(ns)\",policy=\"\(name)\",direction=\"\(counter.direction.rawValue)\",verdict=\"\(counter.allowed ? "allow" : "deny")\"} \(packets)\n"
        }
        let samples = state.withLock { $0.programming }.sorted()
        out += "# HELP kemu_policy_programming_seconds From a change of a NetworkPolicy, pod or namespace to its rules applied on this node (last 1024).\n# TYPE kemu_policy_programming_seconds summary\n"
        for q in [0.5, 0.99] {
            let value = samples.isEmpty ? 0 : samples[min(samples.count - 1, Int(Double(samples.count) * q))]
            out += "kemu_policy_programming_seconds{quantile=\"\(q)\"} \(value)\n"
        }
        out += "kemu_policy_programming_seconds_count \(samples.count)\n"
        return out
    }
}

extension Array where Element == String {
    var splitPair: (String, String) { count == 2 ? (self[0], self[1]) : ("", first ?? "") }
}
