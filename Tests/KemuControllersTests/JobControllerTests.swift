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

    /// Indexed: a pod per index, the lowest free first, each told its index; an index that
    /// failed is run again; completedIndexes in upstream's compressed form.
    @Test func indexedJobsRunEachIndexOnce() throws {
        let store = Store()
        let controller = JobController(store: store)
        let key = JobController.Key(namespace: "default", name: "shards")
        try store.create("jobs.batch", job("shards", ["completions": 4, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 6,
                                                       "template": Self.template]))
        try controller.reconcile(key)
        func pods() -> [JSON] { store.list("pods", namespace: "default").items }
        func finish(_ index: String, _ phase: String) throws {
            let pod = try #require(pods().first { $0.annotations["batch.kubernetes.io/job-completion-index"] == index && $0[path: "status.phase"]?.string == "Pending" })
            // Finished a minute ago: a failure's back-off (10 s) is over.
            let ended = Timestamp.format(Date().addingTimeInterval(-60))
            _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
                $0["status"] = ["phase": .string(phase), "containerStatuses": [["name": "c", "state": ["terminated": ["finishedAt": .string(ended)]]]]]
            }
        }
        #expect(pods().compactMap { $0.annotations["batch.kubernetes.io/job-completion-index"] }.sorted() == ["0", "1"])
        let first = try #require(pods().first { $0.labels["batch.kubernetes.io/job-completion-index"] == "0" })
        #expect(first.name.hasPrefix("shards-0-") && first[path: "spec.hostname"]?.string == "shards-0")
        #expect(first[path: "spec.containers"]?.array?.first?["env"]?.array?.first?["name"]?.string == "JOB_COMPLETION_INDEX")
        try finish("0", "Succeeded")
        try finish("1", "Failed")
        try controller.reconcile(key)
        #expect(pods().filter { $0[path: "status.phase"]?.string == "Pending" }.compactMap { $0.annotations["batch.kubernetes.io/job-completion-index"] }.sorted()
            == ["1", "2"], "index 1 again, and the next free one")
        for index in ["1", "2"] { try finish(index, "Succeeded") }
        try controller.reconcile(key)
        #expect(store.get("jobs.batch", namespace: "default", name: "shards")?[path: "status.completedIndexes"]?.string == "0-2")
        try finish("3", "Succeeded")
        try controller.reconcile(key)
        let done = store.get("jobs.batch", namespace: "default", name: "shards")
        #expect(done?[path: "status.completedIndexes"]?.string == "0-3" && done?[path: "status.succeeded"]?.int == 4)
        #expect(done?[path: "status.conditions"]?.array?.first?["type"]?.string == "Complete")
        #expect(JobController.ranges([1, 3, 4, 5, 7]) == "1,3-5,7" && JobController.ranges([0, 1]) == "0,1")
    }

    /// podFailurePolicy: an Ignore rule's failures are not counted (the pod is replaced), a
    /// FailJob rule fails the Job at once with upstream's reason and message.
    @Test func podFailurePolicyIgnoresOrFailsTheJob() throws {
        let store = Store()
        let controller = JobController(store: store)
        let key = JobController.Key(namespace: "default", name: "picky")
        let policy: JSON = ["rules": [["action": "Ignore", "onExitCodes": ["operator": "In", "values": [137]]],
                                      ["action": "FailJob", "onExitCodes": ["containerName": "c", "operator": "In", "values": [42]]]]]
        try store.create("jobs.batch", job("picky", ["completions": 1, "parallelism": 1, "backoffLimit": 0, "podFailurePolicy": policy,
                                                      "template": Self.template]))
        func fail(_ code: Int64) throws {
            let pod = try #require(store.list("pods", namespace: "default").items.first { $0[path: "status.phase"]?.string == "Pending" })
            let ended = Timestamp.format(Date().addingTimeInterval(-60))
            _ = try store.modify("pods", namespace: "default", name: pod.name, part: .status) {
                $0["status"] = ["phase": "Failed", "containerStatuses": [["name": "c", "state": ["terminated": ["exitCode": .int(code), "finishedAt": .string(ended)]]]]]
            }
        }
        try controller.reconcile(key)
        try fail(137)
        try controller.reconcile(key)
        var now = store.get("jobs.batch", namespace: "default", name: "picky")
        #expect(now?[path: "status.conditions"] == nil && now?[path: "status.failed"]?.int == 0, "ignored: no failure counted, backoffLimit 0 not hit")
        #expect(store.list("pods", namespace: "default").items.count == 2, "and a new pod")
        try fail(42)
        try controller.reconcile(key)
        now = store.get("jobs.batch", namespace: "default", name: "picky")
        let condition = now?[path: "status.conditions"]?.array?.first
        #expect(condition?["type"]?.string == "Failed" && condition?["reason"]?.string == "PodFailurePolicy")
        #expect(condition?["message"]?.string?.hasPrefix("Container c failed with exit code 42 for pod default/picky-") == true)
        #expect(condition?["message"]?.string?.hasSuffix("matching FailJob rule at index 1") == true)
    }
}
