import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

@Suite struct SchedulerTests {
    func node(_ name: String, cpu: String, memory: String, pods: Int64 = 110, ready: Bool = true, labels: [String: String] = [:]) -> JSON {
        var n: JSON = ["apiVersion": "v1", "kind": "Node"]
        n.name = name
        n.labels = labels
        let resources: JSON = ["cpu": .string(cpu), "memory": .string(memory), "pods": .string(String(pods))]
        n["status"] = ["capacity": resources, "allocatable": resources,
                       "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]]
        return n
    }

    func pod(_ name: String, cpu: String? = nil, memory: String? = nil, selector: [String: String] = [:]) -> JSON {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod"]
        p.name = name
        p.namespace = "default"
        var requests: JSON = [:]
        if let cpu { requests["cpu"] = .string(cpu) }
        if let memory { requests["memory"] = .string(memory) }
        p["spec"] = ["containers": [["name": "c", "image": "kemu/echo", "resources": ["requests": requests]]]]
        if !selector.isEmpty { p["spec"]?["nodeSelector"] = JSON.stringMapJSON(selector) }
        return p
    }

    func withStore(_ body: (Store) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "kemu-sched-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(try Store(directory: dir))
    }

    func placement(_ store: Store) -> [String: String] {
        Dictionary(uniqueKeysWithValues: store.list("pods").items.map { ($0.name, $0[path: "spec.nodeName"]?.string ?? "-") })
    }

    @Test func aNodeUnderPressureTakesOnlyPodsThatTolerateIt() throws {
        try withStore { store in
            var pressed = node("pressed", cpu: "8", memory: "16Gi")
            pressed["status", default: [:]]["conditions"] = [["type": "Ready", "status": "True"], ["type": "MemoryPressure", "status": "True"]]
            try store.create("nodes", pressed)
            let scheduler = Scheduler(store: store)
            try store.create("pods", pod("plain"))
            var tolerant = pod("tolerant")
            tolerant["spec", default: [:]]["tolerations"] = [["key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"]]
            try store.create("pods", tolerant)
            try scheduler.schedulePending()
            #expect(placement(store) == ["plain": "-", "tolerant": "pressed"])
            let message = store.get("pods", namespace: "default", name: "plain")?[path: "status.conditions"]?.array?.first?["message"]?.string
            #expect(message == "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/memory-pressure: }.", "\(message ?? "")")
        }
    }

    @Test func aControllersReplicasSpreadOverTheNodesBeforeAnythingElse() throws {
        try withStore { store in
            try store.create("nodes", node("node-1", cpu: "4", memory: "8Gi"))
            try store.create("nodes", node("node-2", cpu: "4", memory: "8Gi"))
            let scheduler = Scheduler(store: store)
            // node-2 runs two unrelated pods, node-1 one: a Deployment's two replicas still go
            // one to each node (before, both went to node-1, the node with fewer pods).
            for (name, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-2")] {
                var bound = pod(name)
                bound["spec", default: [:]]["nodeName"] = .string(node)
                try store.create("pods", bound)
            }
            for i in 0..<4 {
                var replica = pod("web-\(i)")
                replica["metadata", default: [:]]["ownerReferences"] = [["apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs-1", "controller": true]]
                try store.create("pods", replica)
            }
            try scheduler.schedulePending()
            let placed = placement(store)
            #expect((0..<4).filter { placed["web-\($0)"] == "node-1" }.count == 2, "\(placed)")
            #expect((0..<4).filter { placed["web-\($0)"] == "node-2" }.count == 2, "\(placed)")
        }
    }

    @Test func podsGoWhereTheMostRoomIsAndStopWhenNothingFits() throws {
        try withStore { store in
            try store.create("nodes", node("big", cpu: "4", memory: "8Gi"))
            try store.create("nodes", node("small", cpu: "2", memory: "4Gi"))
            let scheduler = Scheduler(store: store)
            try store.create("pods", pod("a", cpu: "1500m", memory: "1Gi"))
            try scheduler.schedulePending()
            #expect(placement(store)["a"] == "big")
            // big now has 2.5 CPU and 7 Gi free of 4 / 8 (0.625 + 0.875); small has all of 2 / 4.
            try store.create("pods", pod("b", cpu: "500m"))
            try scheduler.schedulePending()
            #expect(placement(store)["b"] == "small")
            try store.create("pods", pod("huge", cpu: "3"))
            try scheduler.schedulePending()
            #expect(placement(store)["huge"] == "-")
            let huge = store.get("pods", namespace: "default", name: "huge")!
            let condition = huge[path: "status.conditions"]?.array?.first
            #expect(condition?["reason"]?.string == "Unschedulable")
            #expect(condition?["message"]?.string == "0/2 nodes are available: 2 Insufficient cpu.")
            #expect(huge[path: "status.phase"]?.string == "Pending")
            let events = store.list("events", namespace: "default").items.filter { $0[path: "involvedObject.name"]?.string == "huge" }
            #expect(events.map { $0["reason"]?.string ?? "" } == ["FailedScheduling"])
            // Another pass with nothing changed adds no second event.
            try scheduler.schedulePending()
            #expect(store.list("events", namespace: "default").items.filter { $0[path: "involvedObject.name"]?.string == "huge" }.count == 1)
            let scheduled = store.list("events", namespace: "default").items.filter { $0["reason"]?.string == "Scheduled" }
            #expect(scheduled.map { $0["message"]?.string ?? "" }.sorted() == ["Successfully assigned default/a to big", "Successfully assigned default/b to small"])
        }
    }

    @Test func selectorsReadinessAndPodCountsAreHonoured() throws {
        try withStore { store in
            try store.create("nodes", node("n1", cpu: "8", memory: "8Gi", labels: ["disk": "ssd"]))
            try store.create("nodes", node("n2", cpu: "8", memory: "8Gi", pods: 1))  // room for one pod
            try store.create("nodes", node("down", cpu: "64", memory: "64Gi", ready: false))
            let scheduler = Scheduler(store: store)
            try store.create("pods", pod("fast", selector: ["disk": "ssd"]))
            try store.create("pods", pod("nowhere", selector: ["disk": "tape"]))
            try scheduler.schedulePending()
            #expect(placement(store)["fast"] == "n1")
            #expect(placement(store)["nowhere"] == "-")
            let message = store.get("pods", namespace: "default", name: "nowhere")?[path: "status.conditions"]?.array?.first?["message"]?.string
            #expect(message == "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
                    + "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.")
            // Equal room: p1 goes to n2, which runs fewer pods; then n2 is full and p2 goes to n1.
            try store.create("pods", pod("p1"))
            try scheduler.schedulePending()
            #expect(placement(store)["p1"] == "n2")
            try store.create("pods", pod("p2"))
            try scheduler.schedulePending()
            #expect(placement(store)["p2"] == "n1")
        }
    }

    @Test func aPodNamingAMissingNodeIsToldOnce() throws {
        try withStore { store in
            try store.create("nodes", node("n1", cpu: "1", memory: "1Gi"))
            var ghost = pod("ghost")
            ghost["spec"]?["nodeName"] = "n9"
            try store.create("pods", ghost)
            let scheduler = Scheduler(store: store)
            try scheduler.schedulePending()
            try scheduler.schedulePending()
            let events = store.list("events", namespace: "default").items.filter { $0["reason"]?.string == "NodeNotFound" }
            #expect(events.map { $0["message"]?.string ?? "" } == [#"node "n9" does not exist: no node agent will run this pod (nodes: n1)"#])
            #expect(placement(store)["ghost"] == "n9")
        }
    }

    @Test func quantitiesParseAsUpstreamWritesThem() {
        #expect(Quantity.milli("500m") == 500)
        #expect(Quantity.milli("2") == 2000)
        #expect(Quantity.milli("1.5") == 1500)
        #expect(Quantity.milli("128Mi") == Int64(134_217_728_000))  // 128 × 2^20 bytes, in thousandths
        #expect(Quantity.milli("1G") == 1_000_000_000_000)
        #expect(Quantity.milli(JSON.int(3)) == 3000)
        #expect(Quantity.milli("1e3") == 1_000_000)
        #expect(Quantity.milli("0.0001") == 1)  // a fraction of a thousandth rounds up
        #expect(Quantity.milli("100Ei") == .max)
        for bad in ["", "m", "-1", "1x", ".5", "1..2", "1.", "e3"] { #expect(Quantity.milli(bad) == nil, "\(bad)") }
    }
}
