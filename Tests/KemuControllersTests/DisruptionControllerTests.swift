import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import Testing

@Suite struct DisruptionControllerTests {
    let store = Store()
    let key = DisruptionController.Key(namespace: "default", name: "web")

    func pod(_ name: String, ready: Bool, owner: JSON? = nil) throws {
        var pod: JSON = ["apiVersion": "v1", "kind": "Pod", "spec": ["containers": [["name": "c", "image": "kemu/echo"]]],
                         "status": ["phase": "Running", "conditions": [["type": "Ready", "status": .string(ready ? "True" : "False")]]]]
        pod.name = name
        pod.namespace = "default"
        pod.labels = ["app": "web"]
        if let owner {
            pod["metadata"]?["ownerReferences"] = [["apiVersion": "apps/v1", "kind": .string(owner.kind), "name": .string(owner.name),
                                                    "uid": .string(owner.uid), "controller": true]]
        }
        try store.create("pods", pod)
    }

    func budget(_ spec: JSON) throws {
        var pdb: JSON = ["apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "spec": spec]
        pdb.name = "web"
        pdb.namespace = "default"
        pdb["spec"]?["selector"] = ["matchLabels": ["app": "web"]]
        try store.create("poddisruptionbudgets.policy", pdb)
    }

    func status() -> JSON? { store.get("poddisruptionbudgets.policy", namespace: "default", name: "web")?["status"] }

    @Test func minAvailableCountsHealthyPods() throws {
        try pod("a", ready: true)
        try pod("b", ready: true)
        try pod("c", ready: false)
        try budget(["minAvailable": 1])
        try DisruptionController(store: store).reconcile(key)
        let s = try #require(status())
        #expect(s["currentHealthy"]?.int == 2 && s["desiredHealthy"]?.int == 1 && s["expectedPods"]?.int == 3)
        #expect(s["disruptionsAllowed"]?.int == 1 && s["observedGeneration"]?.int == 1)
        #expect(s["conditions"]?.array?.first?["reason"]?.string == "SufficientPods")
    }

    /// A percentage is of what the controllers want (a Deployment's replicas through its
    /// ReplicaSet), not of the pods that happen to exist; a pod just evicted is not healthy.
    @Test func percentagesAreOfTheControllersReplicas() throws {
        var deployment: JSON = ["apiVersion": "apps/v1", "kind": "Deployment", "spec": ["replicas": 4]]
        deployment.name = "web"
        deployment.namespace = "default"
        let d = try store.create("deployments.apps", deployment)
        var rs: JSON = ["apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": ["replicas": 4]]
        rs.name = "web-1"
        rs.namespace = "default"
        rs["metadata"]?["ownerReferences"] = [["apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": .string(d.uid), "controller": true]]
        let r = try store.create("replicasets.apps", rs)
        for name in ["a", "b", "c"] { try pod(name, ready: true, owner: r) }
        try budget(["maxUnavailable": "50%"])
        let controller = DisruptionController(store: store)
        try controller.reconcile(key)
        #expect(status()?["expectedPods"]?.int == 4 && status()?["desiredHealthy"]?.int == 2 && status()?["disruptionsAllowed"]?.int == 1)

        _ = try store.modify("poddisruptionbudgets.policy", namespace: "default", name: "web", part: .status) {
            $0["status"]?["disruptedPods"] = ["a": .string(Timestamp.now())]
        }
        try controller.reconcile(key)
        #expect(status()?["currentHealthy"]?.int == 2 && status()?["disruptionsAllowed"]?.int == 0)
        #expect(status()?["conditions"]?.array?.first?["reason"]?.string == "InsufficientPods")
    }
}
