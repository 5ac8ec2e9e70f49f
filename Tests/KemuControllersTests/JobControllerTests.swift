import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import Testing

@Suite struct JobControllerTests {
    func job(_ name: String, _ spec: JSON) -> JSON {
        var job: JSON = ["apiVersion": "batch/v1", "kind": "Job", "spec": spec]
        job.name = name
        job.namespace = "default"
        return job
    }

    static let template: JSON = ["spec": ["restartPolicy": "Never", "containers": [["name": "c", "image": "busybox"]]]]

    /// Pods up to parallelism, labelled and selected by the Job's uid; finished pods count.
    @Test func podsUpToParallelismThenCompletion() throws {
        let store = Store()
        let controller = JobController(store: store)
        let key = JobController.Key(namespace: "default", name: "work")
        try store.create("jobs.batch", job("work", ["completions": 3, "parallelism": 2, "backoffLimit": 6, "template": Self.template]))
        try controller.reconcile(key)
        var pods = store.list("pods", namespace: "default").items
        #expect(pods.count == 2)
        let uid = store.get("jobs.batch", namespace: "default", name: "work")?.uid ?? "?"
        #expect(pods.allSatisfy { $0.labels["batch.kubernetes.io/controller-uid"] == uid && $0.labels["job-name"] == "work" })
        for pod in pods { _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) { $0["status"] = ["phase": "Succeeded"] } }
        try controller.reconcile(key)
        pods = store.list("pods", namespace: "default").items
        #expect(pods.count == 3, "one more for the last completion, not two")
        _ = try store.modify("pods", namespace: "default", name: pods.first { $0[path: "status.phase"]?.string != "Succeeded" }?.name ?? "?", part: .status) {
            $0["status"] = ["phase": "Succeeded"]
        }
        try controller.reconcile(key)
        let done = store.get("jobs.batch", namespace: "default", name: "work")
        #expect(done?[path: "status.succeeded"]?.int == 3 && done?[path: "status.conditions"]?.array?.first?["type"]?.string == "Complete")
    }

    /// With restartPolicy OnFailure a pod restarts in place: its containers' restarts count
    /// toward backoffLimit, and past it the Job fails and the pod is deleted.
    @Test func onFailureRestartsCountTowardTheBackoffLimit() throws {
        let store = Store()
        let controller = JobController(store: store)
        let key = JobController.Key(namespace: "default", name: "retry")
        var template = Self.template
        template["spec", default: [:]]["restartPolicy"] = "OnFailure"
        try store.create("jobs.batch", job("retry", ["completions": 1, "parallelism": 1, "backoffLimit": 2, "template": template]))
        try controller.reconcile(key)
        let pod = try #require(store.list("pods", namespace: "default").items.first)
        _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
            $0["status"] = ["phase": "Running", "containerStatuses": [["name": "c", "restartCount": 2]]]
        }
        try controller.reconcile(key)
        #expect(store.get("jobs.batch", namespace: "default", name: "retry")?[path: "status.conditions"] == nil, "2 restarts: at the limit")
        _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
            $0["status"] = ["phase": "Running", "containerStatuses": [["name": "c", "restartCount": 3]]]
        }
        try controller.reconcile(key)
        let failed = store.get("jobs.batch", namespace: "default", name: "retry")
        #expect(failed?[path: "status.conditions"]?.array?.first?["reason"]?.string == "BackoffLimitExceeded")
        #expect(failed?[path: "status.failed"]?.int == 3)
        #expect(store.list("pods", namespace: "default").items.isEmpty, "its running pod is deleted (no node: at once)")
    }

    /// A deadline from an object never reaches a trapping conversion, however far it is.
    @Test func aFarDeadlineIsJustFar() throws {
        let store = Store()
        let controller = JobController(store: store)
        try store.create("jobs.batch", job("far", ["completions": 1, "parallelism": 1, "activeDeadlineSeconds": .int(Int64.max),
                                                   "ttlSecondsAfterFinished": .int(Int64(Int32.max)), "template": Self.template]))
        try controller.reconcile(JobController.Key(namespace: "default", name: "far"))
        #expect(store.list("pods", namespace: "default").items.count == 1)
        Thread.sleep(forTimeInterval: 0.2)  // the re-queue's timer starts meanwhile (it used to trap there)
    }
}
