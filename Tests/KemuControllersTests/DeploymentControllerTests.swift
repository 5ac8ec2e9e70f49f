import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

/// The Deployment controller against a store, with the ReplicaSet controller beside it and a
/// stand-in kubelet that makes pods Ready (or not) and finishes graceful deletions.
@Suite struct DeploymentControllerTests {
    typealias Key = EndpointSliceController.Key
    let store = Store()
    let deployments: DeploymentController
    let replicaSets: ReplicaSetController
    let key = Key(namespace: "default", name: "web")

    init() {
        deployments = DeploymentController(store: store)
        replicaSets = ReplicaSetController(store: store)
    }

    func deployment(replicas: Int64 = 3, image: String = "v1", strategy: JSON? = nil) -> JSON {
        var d: JSON = ["apiVersion": "apps/v1", "kind": "Deployment"]
        d.name = "web"
        d.namespace = "default"
        d["spec"] = ["replicas": .int(replicas), "selector": ["matchLabels": ["app": "web"]], "revisionHistoryLimit": 10,
                     "progressDeadlineSeconds": 600,
                     "strategy": strategy ?? ["type": "RollingUpdate", "rollingUpdate": ["maxSurge": 1, "maxUnavailable": 0]],
                     "template": ["metadata": ["labels": ["app": "web"]],
                                  "spec": ["containers": [["name": "c", "image": .string(image)]]]]]
        return d
    }

    var pods: [JSON] { store.list("pods", namespace: "default").items }
    var sets: [JSON] { store.list("replicasets.apps", namespace: "default").items.sorted { $0.name < $1.name } }
    var current: JSON { store.get("deployments.apps", namespace: "default", name: "web")! }

    func setImage(_ image: String) throws {
        try store.modify("deployments.apps", namespace: "default", name: "web") {
            $0["spec"]?["template"]?["spec"]?["containers"] = [["name": "c", "image": .string(image)]]
        }
    }

    /// Runs the controllers and the stand-in kubelet until nothing changes; `observe` sees the
    /// store after every step.
    func settle(ready: Bool = true, observe: () -> Void = {}) throws {
        for _ in 0..<200 {
            let before = store.revision
            try deployments.reconcile(key)
            observe()
            for rs in sets { try replicaSets.reconcile(Key(namespace: "default", name: rs.name)) }
            observe()
            for pod in pods {
                if pod.deletionTimestamp != nil {
                    try store.delete("pods", namespace: "default", name: pod.name)
                } else if ready, pod[path: "status.phase"]?.string == "Pending" {
                    try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
                        $0["status"] = ["phase": "Running", "conditions": [["type": "Ready", "status": "True",
                                                                            "lastTransitionTime": .string(Timestamp.now())]]]
                    }
                }
            }
            for rs in sets { try replicaSets.reconcile(Key(namespace: "default", name: rs.name)) }
            observe()
            if store.revision == before { return }
        }
        Issue.record("the controllers never settled")
    }

    func condition(_ type: String) -> JSON? {
        current[path: "status.conditions"]?.array?.first { $0["type"]?.string == type }
    }

    func images() -> [String] { pods.compactMap { $0[path: "spec.containers"]?.array?.first?["image"]?.string }.sorted() }

    @Test func rollsOutWithinSurgeAndUnavailabilityAndRollsBack() throws {
        try store.create("deployments.apps", deployment())
        try settle()
        #expect(sets.count == 1)
        let first = sets[0]
        let hash = first.labels["pod-template-hash"] ?? ""
        #expect(first.name == "web-\(hash)" && !hash.isEmpty)
        #expect(first.annotations["deployment.kubernetes.io/revision"] == "1")
        #expect(pods.count == 3 && pods.allSatisfy { $0.labels["pod-template-hash"] == hash })
        #expect(current.annotations["deployment.kubernetes.io/revision"] == "1")
        #expect(current[path: "status.availableReplicas"]?.int == 3 && current[path: "status.updatedReplicas"]?.int == 3)
        #expect(current[path: "status.observedGeneration"]?.int == current.generation)
        #expect(condition("Available")?["status"]?.string == "True")
        #expect(condition("Progressing")?["reason"]?.string == "NewReplicaSetAvailable")

        // v2: never fewer than 3 ready pods, never more than 4 pods.
        try setImage("v2")
        var fewestReady = Int.max, most = 0
        try settle {
            let live = pods.filter { $0.deletionTimestamp == nil }
            fewestReady = min(fewestReady, live.filter { ($0[path: "status.conditions"]?.array ?? []).contains { $0["status"]?.string == "True" } }.count)
            most = max(most, pods.count)
        }
        #expect(fewestReady >= 3 && most <= 4)
        #expect(images() == ["v2", "v2", "v2"])
        #expect(sets.count == 2 && sets.map { $0.annotations["deployment.kubernetes.io/revision"] }.contains("2"))
        #expect(sets.first { $0.uid == first.uid }?[path: "spec.replicas"]?.int == 0)
        #expect(current.annotations["deployment.kubernetes.io/revision"] == "2")

        // Undo as kubectl does: the old template back (Go-serialized, hash label dropped). The
        // old ReplicaSet is reused and becomes revision 3.
        var template = first[path: "spec.template"]!
        template["metadata"]?["labels"]?["pod-template-hash"] = nil
        template["metadata"]?["creationTimestamp"] = .null
        template["spec"]?["containers"] = [["name": "c", "image": "v1", "resources": [:]]]
        try store.modify("deployments.apps", namespace: "default", name: "web") { $0["spec"]?["template"] = template }
        try settle()
        #expect(sets.count == 2)
        #expect(sets.first { $0.uid == first.uid }?.annotations["deployment.kubernetes.io/revision"] == "3")
        #expect(current.annotations["deployment.kubernetes.io/revision"] == "3")
        #expect(images() == ["v1", "v1", "v1"])
    }

    @Test func percentagesRoundAsUpstreamAndBothZeroMeansOneUnavailable() throws {
        // 10 replicas, 25 % / 25 %: surge 3 (up), unavailable 2 (down).
        try store.create("deployments.apps", deployment(replicas: 10, strategy: ["type": "RollingUpdate",
                                                                                 "rollingUpdate": ["maxSurge": "25%", "maxUnavailable": "25%"]]))
        try settle()
        try setImage("v2")
        var fewestReady = Int.max, most = 0
        try settle {
            let live = pods.filter { $0.deletionTimestamp == nil }
            fewestReady = min(fewestReady, live.filter { ($0[path: "status.conditions"]?.array ?? []).isEmpty == false }.count)
            most = max(most, live.count)
        }
        #expect(fewestReady >= 8 && most <= 13)
        #expect(most > 10)  // the surge was used
        #expect(images() == Array(repeating: "v2", count: 10))
    }

    @Test func recreateEndsOldPodsFirst() throws {
        try store.create("deployments.apps", deployment(strategy: ["type": "Recreate"]))
        try settle()
        try setImage("v2")
        var mixed = false
        try settle { mixed = mixed || Set(images()).count > 1 }
        #expect(!mixed)
        #expect(images() == ["v2", "v2", "v2"])
    }

    @Test func pausedDeploymentsOnlyScaleAndResumeContinues() throws {
        try store.create("deployments.apps", deployment())
        try settle()
        try store.modify("deployments.apps", namespace: "default", name: "web") { $0["spec"]?["paused"] = true }
        try setImage("v2")
        try settle()
        #expect(sets.count == 1 && images() == ["v1", "v1", "v1"])
        #expect(condition("Progressing")?["reason"]?.string == "DeploymentPaused")
        try store.modify("deployments.apps", namespace: "default", name: "web") { $0["spec"]?["replicas"] = 4 }
        try settle()
        #expect(images() == ["v1", "v1", "v1", "v1"])
        try store.modify("deployments.apps", namespace: "default", name: "web") { $0["spec"]?["paused"] = nil }
        try settle()
        #expect(images() == ["v2", "v2", "v2", "v2"])
        #expect(condition("Progressing")?["reason"]?.string == "NewReplicaSetAvailable")
    }

    @Test func stuckRolloutsPassTheirDeadlineAndHistoryIsTrimmed() throws {
        var d = deployment(replicas: 1)
        d["spec"]?["progressDeadlineSeconds"] = 1
        d["spec"]?["revisionHistoryLimit"] = 1
        try store.create("deployments.apps", d)
        try settle()
        try setImage("v2")
        try settle()
        try setImage("v3")
        try settle()
        // Revision 1 went: only one old ReplicaSet is kept.
        #expect(sets.map { $0.annotations["deployment.kubernetes.io/revision"] ?? "" }.sorted() == ["2", "3"])

        try setImage("v4")
        try settle(ready: false)
        #expect(condition("Progressing")?["status"]?.string == "True")
        Thread.sleep(forTimeInterval: 2.1)
        try deployments.reconcile(key)
        #expect(condition("Progressing")?["reason"]?.string == "ProgressDeadlineExceeded")
        #expect(condition("Progressing")?["status"]?.string == "False")
        #expect(current[path: "status.updatedReplicas"]?.int == 1 && current[path: "status.availableReplicas"]?.int == 1)
    }
}
