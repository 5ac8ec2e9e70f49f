import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// Watches the nodes' heartbeats (their Leases in kube-node-lease, which each node agent renews
/// every second, and the Ready condition's lastHeartbeatTime, posted at least every 10 s). A node
/// silent for longer than `gracePeriod` — its agent killed, or its fabric link down — has its
/// conditions set to Unknown ("Kubelet stopped posting node
/// status."), gets the `node.kubernetes.io/unreachable` taints, and its pods are marked not Ready
/// at once, so their endpoints leave every Service. Still silent `evictionDelay` later, its pods
/// are deleted (event TaintManagerEviction) and their controllers recreate them on other nodes.
/// kemu deletes them outright rather than leaving them Terminating as upstream does for a node it
/// cannot reach: an emulated node can be treated as fenced, and a StatefulSet pod can then move
/// too. A node that posts again is Ready and loses the taints; its agent removes the processes of
/// pods deleted meanwhile.
///
/// Evictions are rate-limited per zone as upstream's are (`EvictionPolicy`): a machine that is
/// merely overloaded, where many nodes miss their heartbeats at once, must not evict its way into
/// a storm of pod re-creations. A zone with more than `unhealthyZoneThreshold` of its nodes (and
/// more than two) NotReady is partially disrupted: evictions slow to the secondary rate in a large
/// zone and stop in a small one; when every zone is fully disrupted the cause is taken to be on
/// the control plane's side and nothing is evicted.
public final class NodeLifecycleController: Sendable {
    public static let unreachable = "node.kubernetes.io/unreachable"
    public static let zoneLabels = ["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"]
    let store: Store
    let gracePeriod: Double
    let evictionDelay: Double
    let policy: EvictionPolicy
    let logger = Logger(label: "kemu.nodelifecycle")
    /// Per zone: its state last seen and its eviction budget.
    let zones = Mutex<[String: (state: ZoneState, limiter: TokenBucket)]>([:])
    /// What the checks heard from each node (`Silence`), when the first and the last check ran.
    let heard = Mutex<(nodes: [String: Silence], firstCheck: Date?, lastCheck: Date?)>(([:], nil, nil))

    /// Upstream's node-monitor-grace-period is 40 s and its eviction 300 s; an emulator that
    /// tests failover wants seconds.
    public init(store: Store, gracePeriod: Double = 5, evictionDelay: Double = 5, policy: EvictionPolicy = EvictionPolicy()) {
        self.store = store
        self.gracePeriod = gracePeriod
        self.evictionDelay = evictionDelay
        self.policy = policy
    }

    /// Checks every node twice a second until cancelled.
    public func run() async throws {
        while !Task.isCancelled {
            check(now: Date())
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    /// Silence is counted on the controller's clock, as upstream's probe timestamps are: from the
    /// check that saw a node's Lease or status change, not from the time the agent wrote in it.
    /// A renewal that took the server 2 s to store was already 2 s old when it landed, and the
    /// one after it 2 s older again: with the agent's own stamps a node renewing every second
    /// through a busy server looked 5 s silent. And a check counts at most `longestStep` however
    /// late it ran: a control plane starved of CPU heard nobody meanwhile, and the renewals that
    /// came in are still in its queue — the silence is its own, not the nodes'.
    static let longestStep = 1.0

    struct Silence {
        var stamps: [String?]
        var seconds: Double
    }

    public func check(now: Date) {
        let (step, first) = heard.withLock { h in
            defer { (h.firstCheck, h.lastCheck) = (h.firstCheck ?? now, now) }
            return (h.lastCheck.map { min(max(0, now.timeIntervalSince($0)), Self.longestStep) } ?? 0, h.firstCheck ?? now)
        }
        var health: [String: (ready: Int, notReady: Int)] = [:]
        var due: [(node: JSON, zone: String)] = []
        let nodes = store.list("nodes").items.filter { $0.deletionTimestamp == nil }
        let names = Set(nodes.map(\.name))
        heard.withLock { h in h.nodes = h.nodes.filter { names.contains($0.key) } }
        for node in nodes {
            let zone = Self.zone(of: node)
            do {
                switch try check(node, now: now, silence: silence(of: node, step: step), firstCheck: first) {
                case .ready: health[zone, default: (0, 0)].ready += 1
                case .notReady(let evictionDue):
                    health[zone, default: (0, 0)].notReady += 1
                    if evictionDue { due.append((node, zone)) }
                case .unknown: break
                }
            } catch {
                logger.warning("node \(node.name): \(error)")
            }
        }
        let states = health.mapValues { ZoneState(ready: $0.ready, notReady: $0.notReady, threshold: policy.unhealthyZoneThreshold) }
        let allDisrupted = !states.isEmpty && states.values.allSatisfy { $0 == .fullDisruption }
        let allowed: Set<String> = zones.withLock { zones in
            var allowed: Set<String> = []
            for (zone, state) in states {
                let size = (health[zone]?.ready ?? 0) + (health[zone]?.notReady ?? 0)
                let rate = allDisrupted ? 0 : policy.rate(for: state, zoneSize: size)
                var entry = zones[zone] ?? (ZoneState.normal, TokenBucket(rate: rate, now: now))
                if entry.state != state {
                    logger.warning("zone \"\(zone)\" is now \(state) (\(health[zone]?.notReady ?? 0) of \(size) nodes not ready); evictions at \(rate)/s")
                }
                entry.state = state
                entry.limiter.rate = rate
                for (node, nodeZone) in due where nodeZone == zone && !pods(on: node).isEmpty {
                    if entry.limiter.take(now: now) { allowed.insert(node.name) }
                }
                zones[zone] = entry
            }
            return allowed
        }
        if allDisrupted && !due.isEmpty {
            logger.warning("every node is not ready: taken for a control-plane-side disruption, no pod is evicted")
        }
        for (node, _) in due where allowed.contains(node.name) { evictPods(node) }
    }

    /// The node's zone label, or "" (one zone for the whole cluster).
    static func zone(of node: JSON) -> String {
        zoneLabels.lazy.compactMap { node.labels[$0] }.first ?? ""
    }

    enum Health { case ready, notReady(evictionDue: Bool), unknown }

    static func readyCondition(_ node: JSON) -> JSON? {
        (node[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }
    }

    /// Seconds the checks have heard nothing from the node: its Lease's renewTime and its Ready
    /// condition's lastHeartbeatTime (agents renew the one every second and post the other on a
    /// change or every 10 s) unchanged since the check that last saw either change. A node first
    /// seen now starts at zero: nodes of a cluster brought up again on kept data get their grace.
    func silence(of node: JSON, step: Double) -> Double {
        let stamps = [store.get("leases.coordination.k8s.io", namespace: "kube-node-lease", name: node.name)?[path: "spec.renewTime"]?.string,
                      Self.readyCondition(node)?["lastHeartbeatTime"]?.string]
        return heard.withLock { h in
            var entry = h.nodes[node.name] ?? Silence(stamps: stamps, seconds: 0)
            entry.seconds = entry.stamps == stamps ? entry.seconds + step : 0
            entry.stamps = stamps
            h.nodes[node.name] = entry
            return entry.seconds
        }
    }

    func check(_ node: JSON, now: Date, silence: Double, firstCheck: Date) throws -> Health {
        guard let ready = Self.readyCondition(node) else { return .unknown }
        let status = ready["status"]?.string ?? "Unknown"
        let tainted = Self.taints(node).contains { $0["key"]?.string == Self.unreachable }
        if status == "True" {
            if silence > gracePeriod {
                let renewed = store.get("leases.coordination.k8s.io", namespace: "kube-node-lease", name: node.name)?[path: "spec.renewTime"]?
                    .string.flatMap(Timestamp.parse)
                logger.info("node \(node.name): nothing heard for \(Int(silence * 1000)) ms (\(renewed.map { "Lease renewed at \(Timestamp.formatMicro($0))" } ?? "no Lease"), status posted at \(ready["lastHeartbeatTime"]?.string ?? "never"))")
                try markUnknown(node, now: now)
                return .notReady(evictionDue: evictionDelay <= 0)
            } else if tainted {
                try Workload.modify(store, "nodes", node, part: .main) { n in
                    n["spec", default: [:]]["taints"] = Self.withoutUnreachable(n)
                }
                logger.info("node \(node.name) is posting status again")
            }
            return .ready
        }
        // NotReady or Unknown: its pods go once the node has been so for evictionDelay — unless
        // it was heard from again (an agent that was only slow is about to post Ready). A node
        // NotReady before the controller started counts from its start.
        if silence <= gracePeriod { return .notReady(evictionDue: false) }
        let since = max(ready["lastTransitionTime"]?.string.flatMap(Timestamp.parse) ?? now, firstCheck)
        return .notReady(evictionDue: now.timeIntervalSince(since) >= evictionDelay)
    }

    static func taints(_ node: JSON) -> [JSON] { node[path: "spec.taints"]?.array ?? [] }

    static func withoutUnreachable(_ node: JSON) -> JSON? {
        let kept = taints(node).filter { $0["key"]?.string != unreachable }
        return kept.isEmpty ? nil : .array(kept)
    }

    func markUnknown(_ node: JSON, now: Date) throws {
        let stamp = JSON.string(Timestamp.format(now))
        try store.modify("nodes", name: node.name, part: .status) { n in
            var conditions = n[path: "status.conditions"]?.array ?? []
            for i in conditions.indices {
                conditions[i]["status"] = "Unknown"
                conditions[i]["reason"] = "NodeStatusUnknown"
                conditions[i]["message"] = "Kubelet stopped posting node status."
                conditions[i]["lastTransitionTime"] = stamp
            }
            n["status", default: [:]]["conditions"] = .array(conditions)
        }
        try store.modify("nodes", name: node.name, part: .main) { n in
            var taints = Self.withoutUnreachable(n)?.array ?? []
            taints.append(["key": .string(Self.unreachable), "effect": "NoSchedule", "timeAdded": stamp])
            taints.append(["key": .string(Self.unreachable), "effect": "NoExecute", "timeAdded": stamp])
            n["spec", default: [:]]["taints"] = .array(taints)
        }
        Workload.event(store, node, reason: "NodeNotReady", message: "Node \(node.name) status is now: NodeNotReady",
                       component: "node-controller")
        logger.warning("node \(node.name) stopped posting status; its pods are not ready")
        for pod in pods(on: node) where Workload.ready(pod) {
            _ = try? store.modify("pods", namespace: pod.namespace, name: pod.name, part: .status) { p in
                var conditions = p[path: "status.conditions"]?.array ?? []
                for i in conditions.indices where conditions[i]["type"]?.string == "Ready" {
                    conditions[i]["status"] = "False"
                    conditions[i]["reason"] = "NodeNotReady"
                    conditions[i]["lastTransitionTime"] = stamp
                }
                p["status", default: [:]]["conditions"] = .array(conditions)
            }
        }
    }

    func pods(on node: JSON) -> [JSON] {
        store.list("pods").items.filter { $0[path: "spec.nodeName"]?.string == node.name }
    }

    /// Evicts the node's pods, but not those that tolerate the unreachable NoExecute taint for
    /// good (a toleration without tolerationSeconds: daemon pods), as upstream's taint manager.
    func evictPods(_ node: JSON) {
        let taint: JSON = ["key": .string(Self.unreachable), "effect": "NoExecute"]
        for pod in pods(on: node) where !(pod[path: "spec.tolerations"]?.array ?? []).contains(where: {
            NodePlacement.tolerates($0, taint) && $0["tolerationSeconds"] == nil
        }) {
            Workload.event(store, pod, reason: "TaintManagerEviction", message: "Marking for deletion Pod \(pod.namespace)/\(pod.name)",
                           component: "taint-eviction-controller")
            _ = try? store.delete("pods", namespace: pod.namespace, name: pod.name, uid: pod.uid)
            logger.info("evicted \(pod.namespace)/\(pod.name) from unreachable node \(node.name)")
        }
    }
}

/// Upstream's eviction limits (kube-controller-manager's flags of the same names).
public struct EvictionPolicy: Sendable, Equatable {
    /// Nodes per second whose pods are evicted in a healthy zone (`--node-eviction-rate`).
    public var rate: Double = 0.1
    /// The same in a partially disrupted large zone (`--secondary-node-eviction-rate`).
    public var secondaryRate: Double = 0.01
    /// The share of a zone's nodes NotReady (with more than two) that makes it partially disrupted.
    public var unhealthyZoneThreshold: Double = 0.55
    /// Above this many nodes a partially disrupted zone evicts at the secondary rate; below, not at all.
    public var largeClusterSizeThreshold: Int = 50

    public init() {}

    func rate(for state: ZoneState, zoneSize: Int) -> Double {
        switch state {
        case .normal, .fullDisruption: rate
        case .partialDisruption: zoneSize > largeClusterSizeThreshold ? secondaryRate : 0
        }
    }
}

/// upstream's ComputeZoneState.
enum ZoneState: String, Sendable, CustomStringConvertible {
    case normal = "Normal", partialDisruption = "PartialDisruption", fullDisruption = "FullDisruption"

    init(ready: Int, notReady: Int, threshold: Double) {
        if ready == 0 && notReady > 0 {
            self = .fullDisruption
        } else if notReady > 2 && Double(notReady) / Double(ready + notReady) >= threshold {
            self = .partialDisruption
        } else {
            self = .normal
        }
    }

    var description: String { rawValue }
}

/// A token bucket of one token (upstream's rate-limited eviction queue): at most one eviction
/// at once, then one per 1/rate seconds; rate 0 evicts nothing.
struct TokenBucket: Sendable {
    var rate: Double
    var tokens: Double = 1
    var last: Date

    init(rate: Double, now: Date) {
        self.rate = rate
        last = now
    }

    mutating func take(now: Date) -> Bool {
        tokens = min(1, tokens + max(0, now.timeIntervalSince(last)) * rate)
        last = now
        guard rate > 0, tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
