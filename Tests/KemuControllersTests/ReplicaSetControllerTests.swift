import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

@Suite struct ReplicaSetControllerTests {
    func replicaSet(_ name: String, replicas: Int64, app: String = "web") -> JSON {
        var rs: JSON = ["apiVersion": "apps/v1", "kind": "ReplicaSet"]
        rs.name = name
        rs.namespace = "default"
        rs["spec"] = ["replicas": .int(replicas), "selector": ["matchLabels": ["app": .string(app)]],
                      "template": ["metadata": ["labels": ["app": .string(app)]],
                                   "spec": ["containers": [["name": "c", "image": "kemu/echo"]]]]]
        return rs
    }

    func pods(_ store: Store, owner: String? = nil) -> [JSON] {
        store.list("pods", namespace: "default").items.filter { pod in
            owner == nil || (pod[path: "metadata.ownerReferences"]?.array ?? []).contains { $0["name"]?.string == owner && $0["controller"]?.bool == true }
        }
    }

    @Test func aLargeScaleUpComesInBurstsOfAtMostFiveHundred() throws {
        let store = Store()
        let controller = ReplicaSetController(store: store)
        let key = EndpointSliceController.Key(namespace: "default", name: "big")
        try store.create("replicasets.apps", replicaSet("big", replicas: 1200, app: "big"))
        try controller.reconcile(key)
        #expect(pods(store, owner: "big").count == 500, "one sync creates upstream's burstReplicas")
        try controller.reconcile(key)
        try controller.reconcile(key)
        #expect(pods(store, owner: "big").count == 1200)
    }

    @Test func keepsReplicasReplacesAdoptsReleasesAndReports() throws {
        let store = Store()
        let controller = ReplicaSetController(store: store)
        let key = EndpointSliceController.Key(namespace: "default", name: "web")
        try store.create("replicasets.apps", replicaSet("web", replicas: 3))
        try controller.reconcile(key)
        let first = pods(store, owner: "web")
        #expect(first.count == 3)
        #expect(first.allSatisfy { $0.name.hasPrefix("web-") && $0.name.count == 9 && $0.labels["app"] == "web" })
        #expect(first.allSatisfy { $0[path: "spec.restartPolicy"]?.string == "Always" })

        // A deleted pod and a failed one are replaced.
        try store.delete("pods", namespace: "default", name: first[0].name)
        try store.modify("pods", namespace: "default", name: first[1].name, part: .status) { $0["status"] = ["phase": "Failed"] }
        try controller.reconcile(key)
        #expect(pods(store, owner: "web").filter { $0[path: "status.phase"]?.string != "Failed" }.count == 3)

        // An orphan that matches is adopted in place of a missing pod; a pod relabelled is released.
        let missing = pods(store, owner: "web").first { $0[path: "status.phase"]?.string != "Failed" }!
        try store.delete("pods", namespace: "default", name: missing.name)
        var orphan: JSON = ["apiVersion": "v1", "kind": "Pod", "spec": ["containers": [["name": "c", "image": "i"]]]]
        orphan.name = "stray"
        orphan.namespace = "default"
        orphan.labels = ["app": "web"]
        try store.create("pods", orphan)
        try controller.reconcile(key)
        #expect(pods(store, owner: "web").contains { $0.name == "stray" })
        #expect(pods(store, owner: "web").filter { $0[path: "status.phase"]?.string != "Failed" }.count == 3)
        let leaving = pods(store, owner: "web").first { $0.name != "stray" && $0[path: "status.phase"]?.string != "Failed" }!
        try store.modify("pods", namespace: "default", name: leaving.name) { $0.labels = ["app": "other"] }
        try controller.reconcile(key)
        #expect(store.get("pods", namespace: "default", name: leaving.name)?.ownerUIDs.isEmpty == true)
        #expect(pods(store, owner: "web").filter { $0[path: "status.phase"]?.string != "Failed" }.count == 3)

        // Status counts, then a scale-down deletes the surplus (unscheduled pods go at once).
        let readyOne = pods(store, owner: "web").first { $0[path: "status.phase"]?.string != "Failed" }!
        try store.modify("pods", namespace: "default", name: readyOne.name, part: .status) {
            $0["status"] = ["phase": "Running", "conditions": [["type": "Ready", "status": "True"]]]
        }
        try controller.reconcile(key)
        let status = store.get("replicasets.apps", namespace: "default", name: "web")?["status"]
        #expect(status?["replicas"]?.int == 3 && status?["readyReplicas"]?.int == 1 && status?["availableReplicas"]?.int == 1)
        #expect(status?["observedGeneration"]?.int == 1)
        try store.modify("replicasets.apps", namespace: "default", name: "web") { $0["spec"]?["replicas"] = 1 }
        try controller.reconcile(key)
        let left = pods(store, owner: "web").filter { $0[path: "status.phase"]?.string != "Failed" }
        #expect(left.map(\.name) == [readyOne.name])  // the ready one stays
        #expect(store.get("replicasets.apps", namespace: "default", name: "web")?[path: "status.observedGeneration"]?.int == 2)
    }

    @Test func replicationControllersUseTheirEqualitySelector() throws {
        let store = Store()
        let controller = ReplicaSetController(store: store, resource: "replicationcontrollers")
        var rc: JSON = ["apiVersion": "v1", "kind": "ReplicationController"]
        rc.name = "old"
        rc.namespace = "default"
        rc["spec"] = ["replicas": 2, "template": ["metadata": ["labels": ["app": "old"]], "spec": ["containers": [["name": "c", "image": "i"]]]]]
        try store.create("replicationcontrollers", rc)
        try controller.reconcile(EndpointSliceController.Key(namespace: "default", name: "old"))
        let made = pods(store, owner: "old")
        #expect(made.count == 2)
        #expect(made.allSatisfy { $0[path: "metadata.ownerReferences"]?.array?.first?["kind"]?.string == "ReplicationController" })
    }
}
