import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

/// The StatefulSet controller against a store, with a stand-in kubelet that runs pods (Ready at
/// once unless told otherwise) and finishes graceful deletions.
@Suite struct StatefulSetControllerTests {
    let store = Store()
    let controller: StatefulSetController
    let key = EndpointSliceController.Key(namespace: "default", name: "db")

    init() { controller = StatefulSetController(store: store) }

    func statefulSet(replicas: Int64 = 3, policy: String = "OrderedReady", image: String = "v1") -> JSON {
        var s: JSON = ["apiVersion": "apps/v1", "kind": "StatefulSet"]
        s.name = "db"
        s.namespace = "default"
        s["spec"] = ["replicas": .int(replicas), "serviceName": "db", "podManagementPolicy": .string(policy),
                     "selector": ["matchLabels": ["app": "db"]],
                     "updateStrategy": ["type": "RollingUpdate", "rollingUpdate": ["partition": 0]],
                     "template": ["metadata": ["labels": ["app": "db"]], "spec": ["containers": [["name": "c", "image": .string(image)]]]],
                     "volumeClaimTemplates": [["metadata": ["name": "data"], "spec": ["accessModes": ["ReadWriteOnce"]]]]]
        return s
    }

    var pods: [JSON] { store.list("pods", namespace: "default").items.sorted { $0.name < $1.name } }
    var names: [String] { pods.map(\.name) }

    func run(_ pod: String) throws {
        try store.modify("pods", namespace: "default", name: pod, part: .status) {
            $0["status"] = ["phase": "Running", "conditions": [["type": "Ready", "status": "True"]]]
        }
    }

    /// One controller pass, then the stand-in kubelet: deletions finish, new pods run.
    func step(ready: Bool = true) throws {
        try controller.reconcile(key)
        for pod in pods {
            if pod.deletionTimestamp != nil { try store.delete("pods", namespace: "default", name: pod.name) }
            else if ready, pod[path: "status.phase"]?.string != "Running" { try run(pod.name) }
        }
    }

    @Test func orderedReadyCreatesInOrderAndRemovesInReverse() throws {
        try store.create("statefulsets.apps", statefulSet())
        try controller.reconcile(key)
        #expect(names == ["db-0"])  // db-1 waits for db-0 to be Running and Ready
        try controller.reconcile(key)
        #expect(names == ["db-0"])
        try run("db-0")
        try controller.reconcile(key)
        #expect(names == ["db-0", "db-1"])
        try run("db-1")
        try controller.reconcile(key)
        #expect(names == ["db-0", "db-1", "db-2"])
        let pod = pods[1]
        #expect(pod[path: "spec.hostname"]?.string == "db-1" && pod[path: "spec.subdomain"]?.string == "db")
        #expect(pod.labels["statefulset.kubernetes.io/pod-name"] == "db-1" && pod.labels["apps.kubernetes.io/pod-index"] == "1")
        #expect(pod[path: "spec.volumes"]?.array?.first?[path: "persistentVolumeClaim.claimName"]?.string == "data-db-1")
        #expect(store.list("persistentvolumeclaims", namespace: "default").items.map(\.name).sorted() == ["data-db-0", "data-db-1", "data-db-2"])
        try run("db-2")
        try controller.reconcile(key)
        let status = store.get("statefulsets.apps", namespace: "default", name: "db")!["status"]!
        #expect(status["readyReplicas"]?.int == 3 && status["currentRevision"] == status["updateRevision"])

        // Scale to 1: db-2 goes first, db-1 only after.
        try store.modify("statefulsets.apps", namespace: "default", name: "db") { $0["spec"]?["replicas"] = 1 }
        try controller.reconcile(key)
        #expect(names == ["db-0", "db-1"])
        try step()
        try step()
        #expect(names == ["db-0"])
        #expect(store.list("persistentvolumeclaims", namespace: "default").items.count == 3)  // kept
    }

    @Test func parallelDoesEverythingAtOnce() throws {
        try store.create("statefulsets.apps", statefulSet(replicas: 4, policy: "Parallel"))
        try controller.reconcile(key)
        #expect(names == ["db-0", "db-1", "db-2", "db-3"])
    }

    @Test func rollingUpdateGoesFromTheTopDownToThePartition() throws {
        try store.create("statefulsets.apps", statefulSet())
        for _ in 0..<4 { try step() }
        let first = store.get("statefulsets.apps", namespace: "default", name: "db")![path: "status.updateRevision"]!.string!
        try store.modify("statefulsets.apps", namespace: "default", name: "db") {
            $0["spec"]?["template"]?["spec"]?["containers"] = [["name": "c", "image": "v2"]]
            $0["spec"]?["updateStrategy"]?["rollingUpdate"]?["partition"] = 1
        }
        var order: [String] = []
        for _ in 0..<10 {
            let before = Set(pods.map(\.name))
            try controller.reconcile(key)
            let after = Set(pods.filter { $0.deletionTimestamp == nil }.map(\.name))
            order += before.subtracting(after).sorted()
            try step()
        }
        #expect(order == ["db-2", "db-1"])  // db-0 is below the partition
        let images = pods.map { $0[path: "spec.containers"]?.array?.first?["image"]?.string ?? "" }
        #expect(images == ["v1", "v2", "v2"])
        let status = store.get("statefulsets.apps", namespace: "default", name: "db")!["status"]!
        #expect(status["currentRevision"]?.string == first && status["updatedReplicas"]?.int == 2)
        #expect(store.list("controllerrevisions.apps", namespace: "default").items.count == 2)
    }
}
