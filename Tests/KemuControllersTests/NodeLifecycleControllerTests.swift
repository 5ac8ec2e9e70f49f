import Foundation
import KemuAPI
@testable import KemuControllers
import KemuStore
import Testing

/// The node lifecycle controller's judgement: a silent node is NotReady, and its pods are evicted
/// at upstream's rate — unless so many nodes of its zone are silent that the cause is more likely
/// the machine or the control plane than the nodes.
@Suite struct NodeLifecycleControllerTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    /// `count` nodes in `zone`, each with one pod; those in `silent` last posted at `start`, the
    /// others post at `at` (call `heartbeat` to move them on).
    func cluster(_ store: Store, zone: String = "", prefix: String = "n", count: Int) throws {
        for i in 0..<count {
            var node: JSON = ["kind": "Node"]
            node.name = "\(prefix)\(i)"
            if !zone.isEmpty { node.labels = ["topology.kubernetes.io/zone": zone] }
            node["status"] = ["conditions": [["type": "Ready", "status": "True", "lastHeartbeatTime": .string(Timestamp.format(start)),
                                              "lastTransitionTime": .string(Timestamp.format(start))]]]
            _ = try store.create("nodes", node)
            var pod: JSON = ["kind": "Pod", "spec": ["nodeName": .string(node.name)]]
            pod.name = "pod-\(node.name)"
            pod.namespace = "default"
            _ = try store.create("pods", pod)
        }
    }

    func heartbeat(_ store: Store, _ names: [String], at time: Date) throws {
        for name in names {
            _ = try store.modify("nodes", name: name) { n in
                n["status"] = ["conditions": [["type": "Ready", "status": "True", "lastHeartbeatTime": .string(Timestamp.format(time)),
                                               "lastTransitionTime": .string(Timestamp.format(self.start))]]]
            }
        }
    }

    func evicted(_ store: Store) -> Set<String> {
        Set(store.list("nodes").items.map(\.name)).subtracting(store.list("pods").items.compactMap { $0[path: "spec.nodeName"]?.string })
    }

    /// Runs the controller's checks every half second from `from` for `seconds`, the nodes not in
    /// `silent` posting each time.
    func run(_ controller: NodeLifecycleController, _ store: Store, silent: Set<String>, from: Date, seconds: Double) throws {
        var t = from
        while t <= from.addingTimeInterval(seconds) {
            try heartbeat(store, store.list("nodes").items.map(\.name).filter { !silent.contains($0) }, at: t)
            controller.check(now: t)
            t = t.addingTimeInterval(0.5)
        }
    }

    @Test func oneSilentNodeIsEvictedAfterTheDelay() throws {
        let store = Store()
        try cluster(store, count: 4)
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 5)
        try run(controller, store, silent: ["n1"], from: start, seconds: 9)
        #expect(evicted(store).isEmpty, "not before grace + delay")
        #expect(store.get("nodes", name: "n1")?[path: "status.conditions"]?.array?.first?["status"]?.string == "Unknown")
        try run(controller, store, silent: ["n1"], from: start.addingTimeInterval(9.5), seconds: 2)
        #expect(evicted(store) == ["n1"])
    }

    @Test func evictionsAreRateLimited() throws {
        let store = Store()
        try cluster(store, count: 10)
        // Two silent of ten: a healthy zone, one node's pods per 10 s at upstream's 0.1/s.
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 0)
        try run(controller, store, silent: ["n1", "n2"], from: start, seconds: 8)
        #expect(evicted(store).count == 1)
        try run(controller, store, silent: ["n1", "n2"], from: start.addingTimeInterval(8.5), seconds: 9)
        #expect(evicted(store) == ["n1", "n2"])
    }

    @Test func anOverloadedMachineDoesNotEvict() throws {
        // Six of ten nodes silent at once (past 55 %): partial disruption of a small zone, no eviction.
        let store = Store()
        try cluster(store, count: 10)
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 0)
        try run(controller, store, silent: Set((0..<6).map { "n\($0)" }), from: start, seconds: 60)
        #expect(evicted(store).isEmpty)
        #expect(store.list("nodes").items.filter { $0[path: "status.conditions"]?.array?.first?["status"]?.string == "Unknown" }.count == 6,
                "they are still shown NotReady")

        // Every node silent: the control plane's side, nothing evicted.
        let all = Store()
        try cluster(all, count: 3)
        let quiet = NodeLifecycleController(store: all, gracePeriod: 5, evictionDelay: 0)
        try run(quiet, all, silent: ["n0", "n1", "n2"], from: start, seconds: 60)
        #expect(evicted(all).isEmpty)
    }

    @Test func aWholeZoneDownIsEvictedWhileAnotherIsHealthy() throws {
        let store = Store()
        try cluster(store, zone: "a", prefix: "a", count: 3)
        try cluster(store, zone: "b", prefix: "b", count: 3)
        var policy = EvictionPolicy()
        policy.rate = 1
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 0, policy: policy)
        try run(controller, store, silent: ["a0", "a1", "a2"], from: start, seconds: 9)
        #expect(evicted(store) == ["a0", "a1", "a2"], "zone a fully disrupted, b healthy: a's pods move")
    }

    @Test func aRenewedLeaseIsAHeartbeat() throws {
        let store = Store()
        try cluster(store, count: 3)
        var lease: JSON = ["kind": "Lease", "spec": ["holderIdentity": "n0"]]
        lease.name = "n0"
        lease.namespace = "kube-node-lease"
        _ = try store.create("leases.coordination.k8s.io", lease)
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 0)
        var t = start
        while t < start.addingTimeInterval(30) {
            // n0 only renews its Lease (its status was posted once, at the start); n1 and n2 post.
            _ = try store.modify("leases.coordination.k8s.io", namespace: "kube-node-lease", name: "n0") {
                $0["spec", default: [:]]["renewTime"] = .string(Timestamp.formatMicro(t))
            }
            try heartbeat(store, ["n1", "n2"], at: t)
            controller.check(now: t)
            t = t.addingTimeInterval(0.5)
        }
        #expect(store.get("nodes", name: "n0")?[path: "status.conditions"]?.array?.first?["status"]?.string == "True")
        #expect(evicted(store).isEmpty)
    }

    func lease(_ store: Store, _ name: String, renewedAt time: Date) throws {
        guard store.get("leases.coordination.k8s.io", namespace: "kube-node-lease", name: name) != nil else {
            var lease: JSON = ["kind": "Lease", "spec": ["holderIdentity": .string(name), "renewTime": .string(Timestamp.formatMicro(time))]]
            (lease.name, lease.namespace) = (name, "kube-node-lease")
            _ = try store.create("leases.coordination.k8s.io", lease)
            return
        }
        _ = try store.modify("leases.coordination.k8s.io", namespace: "kube-node-lease", name: name) {
            $0["spec", default: [:]]["renewTime"] = .string(Timestamp.formatMicro(time))
        }
    }

    func status(_ store: Store, _ name: String) -> String? {
        store.get("nodes", name: name)?[path: "status.conditions"]?.array?.first?["status"]?.string
    }

    /// An agent renewing every second through a server that takes 2.1 s to store each renewal:
    /// each lands 2.1 s old and the next 3.1 s after it. Judged by the agent's stamps the node
    /// looked 5.2 s silent just before each landed; it was heard every 3.1 s.
    @Test func renewalsStoredLateAreStillHeartbeats() throws {
        let store = Store()
        try cluster(store, count: 1)
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 0)
        var (t, sent, stored) = (start, start, start.addingTimeInterval(2.1))
        while t < start.addingTimeInterval(60) {
            if t >= stored {
                try lease(store, "n0", renewedAt: sent)
                (sent, stored) = (stored.addingTimeInterval(1), stored.addingTimeInterval(3.1))
            }
            controller.check(now: t)
            #expect(status(store, "n0") == "True", "at \(t.timeIntervalSince(start)) s")
            t = t.addingTimeInterval(0.5)
        }
    }

    /// A control plane starved of CPU for 7 s heard nobody meanwhile: the nodes renewing are not
    /// blamed for it, while a node that is really silent is still found out once the checks run.
    @Test func aStarvedControllerDoesNotBlameTheNodes() throws {
        let store = Store()
        try cluster(store, count: 2)
        let controller = NodeLifecycleController(store: store, gracePeriod: 5, evictionDelay: 60)
        try lease(store, "n0", renewedAt: start)
        controller.check(now: start)
        controller.check(now: start.addingTimeInterval(0.5))
        // The next check 7 s late, before the renewals queued meanwhile are stored.
        controller.check(now: start.addingTimeInterval(7.5))
        #expect(status(store, "n0") == "True" && status(store, "n1") == "True")
        var t = start.addingTimeInterval(7.5)
        while t < start.addingTimeInterval(15) {
            t = t.addingTimeInterval(0.5)
            try lease(store, "n0", renewedAt: t)
            controller.check(now: t)
        }
        #expect(status(store, "n0") == "True")
        #expect(status(store, "n1") == "Unknown", "n1 posted nothing for 5 s of checks")
    }

    @Test func zoneStatesAndTheBucketAreUpstreams() {
        #expect(ZoneState(ready: 0, notReady: 1, threshold: 0.55) == .fullDisruption)
        #expect(ZoneState(ready: 1, notReady: 2, threshold: 0.55) == .normal, "two NotReady never disrupt a zone")
        #expect(ZoneState(ready: 2, notReady: 3, threshold: 0.55) == .partialDisruption)
        #expect(ZoneState(ready: 7, notReady: 3, threshold: 0.55) == .normal)
        var bucket = TokenBucket(rate: 0.1, now: start)
        let takes = [bucket.take(now: start), bucket.take(now: start.addingTimeInterval(5)), bucket.take(now: start.addingTimeInterval(10))]
        #expect(takes == [true, false, true])
        var stopped = TokenBucket(rate: 0, now: start)
        let took = stopped.take(now: start.addingTimeInterval(3600))
        #expect(!took)
    }
}
