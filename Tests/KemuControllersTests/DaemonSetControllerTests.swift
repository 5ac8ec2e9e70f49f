import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import Testing

@Suite struct DaemonSetControllerTests {
    let store = Store()
    var controller: DaemonSetController { DaemonSetController(store: store) }
    let key = DaemonSetController.Key(namespace: "default", name: "agent")

    func node(_ name: String, labels: [String: String] = [:], taints: [JSON] = [], unschedulable: Bool = false) throws {
        var node: JSON = ["apiVersion": "v1", "kind": "Node", "spec": ["taints": .array(taints), "unschedulable": .bool(unschedulable)]]
        node.name = name
        node.labels = labels
        try store.create("nodes", node)
    }

    func daemonSet(_ spec: JSON = [:]) throws {
        var template: JSON = ["metadata": ["labels": ["app": "agent"]], "spec": ["containers": [["name": "a", "image": "kemu/echo"]]]]
        for (k, v) in spec.object ?? JSONObject() { template["spec"]?[k] = v }
        var set: JSON = ["apiVersion": "apps/v1", "kind": "DaemonSet",
                         "spec": ["selector": ["matchLabels": ["app": "agent"]], "template": template,
                                  "updateStrategy": ["type": "RollingUpdate", "rollingUpdate": ["maxUnavailable": 1, "maxSurge": 0]]]]
        set.name = "agent"
        set.namespace = "default"
        try store.create("daemonsets.apps", set)
    }

    /// Live pods of the set by node.
    func placed() -> [String: [JSON]] {
        Dictionary(grouping: store.list("pods", namespace: "default").items.filter { $0.deletionTimestamp == nil },
                   by: { $0[path: "spec.nodeName"]?.string ?? "" })
    }

    func markReady(_ pods: [JSON]) throws {
        for pod in pods {
            _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
                $0["status"] = ["phase": "Running", "conditions": [["type": "Ready", "status": "True"]]]
            }
        }
    }

    func status(_ field: String) -> Int64? { store.get("daemonsets.apps", namespace: "default", name: "agent")?[path: "status.\(field)"]?.int }

    /// One pod per node it may run on: not on a node with an untolerated NoSchedule taint, on a
    /// cordoned one (daemon pods tolerate unschedulable), on a node added later, and by selector.
    @Test func onePodPerEligibleNode() throws {
        try node("n1", labels: ["role": "worker"])
        try node("n2", labels: ["role": "worker"], unschedulable: true)
        try node("n3", labels: ["role": "edge"], taints: [["key": "dedicated", "value": "edge", "effect": "NoSchedule"]])
        try daemonSet()
        try controller.reconcile(key)
        try controller.reconcile(key)  // the status counts what the last pass saw
        var pods = placed()
        #expect(pods.keys.sorted() == ["n1", "n2"])
        let pod = try #require(pods["n1"]?.first)
        #expect(DaemonSetController.node(of: pod) == "n1")
        #expect(pod[path: "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"]?.array?.count == 1)
        #expect((pod[path: "spec.tolerations"]?.array ?? []).contains { $0["key"]?.string == "node.kubernetes.io/unreachable" })
        #expect(pod.labels[DaemonSetController.hashLabel] != nil)
        #expect(status("desiredNumberScheduled") == 2 && status("currentNumberScheduled") == 2 && status("numberUnavailable") == 2)

        try node("n4")
        try controller.reconcile(key)
        #expect(placed().keys.sorted() == ["n1", "n2", "n4"], "a node added later gets its pod")

        _ = try store.modify("daemonsets.apps", namespace: "default", name: "agent") {
            $0["spec"]?["template"]?["spec"]?["nodeSelector"] = ["role": "worker"]
        }
        try controller.reconcile(key)
        try controller.reconcile(key)
        pods = placed()
        #expect(pods.keys.sorted() == ["n1", "n2"], "n4 no longer matches: its pod goes")
    }

    @Test func taintsFailuresAndVanishedNodes() throws {
        try node("n1")
        try node("n2")
        try node("n3")
        try daemonSet()
        try controller.reconcile(key)
        #expect(placed().count == 3)
        // An untolerated NoExecute taint sends the pod away; a NoSchedule one added later does not.
        _ = try store.modify("nodes", name: "n1") { $0["spec"]?["taints"] = [["key": "evict", "effect": "NoExecute"]] }
        _ = try store.modify("nodes", name: "n2") { $0["spec"]?["taints"] = [["key": "quiet", "effect": "NoSchedule"]] }
        try controller.reconcile(key)
        try controller.reconcile(key)
        #expect(placed().keys.sorted() == ["n2", "n3"])
        #expect(status("numberMisscheduled") == 1, "n2's pod runs where no new one would go")
        // A failed pod is replaced; the pod of a deleted node goes.
        let onThree = try #require(placed()["n3"]?.first)
        _ = try store.modify("pods", namespace: "default", name: onThree.name, part: .status) { $0["status"] = ["phase": "Failed"] }
        try store.delete("nodes", name: "n2")
        try controller.reconcile(key)
        try controller.reconcile(key)
        let pods = placed()
        #expect(pods.keys.sorted() == ["n3"] && pods["n3"]?.first?.name != onThree.name && pods["n3"]?.count == 1)
    }

    /// maxUnavailable 1: one node at a time, the next only once the new pod is Ready; the
    /// template is kept as a ControllerRevision.
    @Test func rollingUpdateOneNodeAtATime() throws {
        for n in ["n1", "n2", "n3"] { try node(n) }
        try daemonSet()
        try controller.reconcile(key)
        try markReady(store.list("pods", namespace: "default").items)
        try controller.reconcile(key)
        #expect(status("numberAvailable") == 3)
        let firstHash = placed()["n1"]?.first?.labels[DaemonSetController.hashLabel]

        _ = try store.modify("daemonsets.apps", namespace: "default", name: "agent") {
            $0["spec"]?["template"]?["spec"]?["containers"] = [["name": "a", "image": "kemu/echo:v2"]]
        }
        for step in 1...3 {
            try controller.reconcile(key)
            try controller.reconcile(key)
            let pods = placed().values.flatMap { $0 }
            let new = pods.filter { $0.labels[DaemonSetController.hashLabel] != firstHash }
            #expect(new.count == step, "step \(step): \(new.count) new pods")
            #expect(pods.count == 3, "never more than one pod per node with maxSurge 0")
            try markReady(new)
        }
        try controller.reconcile(key)
        #expect(status("updatedNumberScheduled") == 3 && status("numberAvailable") == 3)
        #expect(store.list("controllerrevisions.apps", namespace: "default").items.count == 2)
    }
}
