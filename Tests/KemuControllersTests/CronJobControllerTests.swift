import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import Synchronization
import Testing

/// The CronJob controller against a clock the test moves, so minutes pass at once.
@Suite struct CronJobControllerTests {
    final class Clock: Sendable {
        let now = Mutex(Date())
        func set(_ date: Date) { now.withLock { $0 = date } }
        func advance(_ seconds: Double) { now.withLock { $0 = $0.addingTimeInterval(seconds) } }
        func read() -> Date { now.withLock { $0 } }
    }

    let store = Store()
    let clock = Clock()
    let key = CronJobController.Key(namespace: "default", name: "tick")
    var controller: CronJobController { CronJobController(store: store, clock: { [clock] in clock.read() }) }

    /// A CronJob every minute; the clock is put 5 s past the first minute after its creation.
    func cronJob(_ extra: JSON = [:]) throws -> Date {
        var spec: JSON = ["schedule": "* * * * *", "concurrencyPolicy": "Allow", "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                          "jobTemplate": ["spec": ["template": ["spec": ["restartPolicy": "Never", "containers": [["name": "c", "image": "busybox"]]]]]]]
        for (k, v) in extra.object ?? JSONObject() { spec[k] = v }
        var cj: JSON = ["apiVersion": "batch/v1", "kind": "CronJob", "spec": spec]
        cj.name = "tick"
        cj.namespace = "default"
        let created = try store.create("cronjobs.batch", cj)
        let at = try #require(created[path: "metadata.creationTimestamp"]?.string.flatMap(Timestamp.parse))
        let minute = (at.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60
        clock.set(Date(timeIntervalSince1970: minute + 5))
        return Date(timeIntervalSince1970: minute)
    }

    func jobs() -> [JSON] { store.list("jobs.batch", namespace: "default").items.sorted { $0.name < $1.name } }
    func cronJobStatus() -> JSON? { store.get("cronjobs.batch", namespace: "default", name: "tick")?["status"] }

    func finish(_ job: JSON, _ type: String) throws {
        _ = try store.modify("jobs.batch", namespace: "default", name: job.name, part: .status) {
            $0["status"] = ["conditions": [["type": .string(type), "status": "True"]], "completionTime": .string(Timestamp.now())]
        }
    }

    @Test func aJobPerScheduledTimeNamedAfterIt() throws {
        let first = try cronJob()
        try controller.reconcile(key)
        try controller.reconcile(key)
        var made = jobs()
        #expect(made.map(\.name) == ["tick-\(Int(first.timeIntervalSince1970 / 60))"], "one Job per time, however often it syncs")
        #expect(made.first?.annotations[CronJobController.scheduledAnnotation] == Timestamp.format(first))
        #expect(made.first?[path: "metadata.ownerReferences"]?.array?.first?["kind"]?.string == "CronJob")
        #expect(made.first?[path: "spec.template.spec.containers"]?.array?.count == 1)
        #expect(cronJobStatus()?["lastScheduleTime"]?.string == Timestamp.format(first))
        #expect(cronJobStatus()?["active"]?.array?.count == 1)

        clock.advance(60)
        try controller.reconcile(key)
        made = jobs()
        #expect(made.count == 2, "Allow: the next runs beside the first")
        try finish(made[0], "Complete")
        try controller.reconcile(key)
        #expect(cronJobStatus()?["active"]?.array?.map { $0["name"]?.string } == [made[1].name])
        #expect(cronJobStatus()?["lastSuccessfulTime"] != nil)
    }

    /// Forbid skips a time while a Job runs, and runs it when that one ends (still in time);
    /// Replace deletes the running one first.
    @Test func concurrencyPolicies() throws {
        _ = try cronJob(["concurrencyPolicy": "Forbid"])
        try controller.reconcile(key)
        clock.advance(60)
        try controller.reconcile(key)
        #expect(jobs().count == 1, "Forbid: none beside the running one")
        #expect(store.list("events", namespace: "default").items.contains { $0["reason"]?.string == "JobAlreadyActive" })
        try finish(jobs()[0], "Complete")
        try controller.reconcile(key)
        #expect(jobs().count == 2, "the skipped time runs once the first has ended")

        _ = try store.modify("cronjobs.batch", namespace: "default", name: "tick") { $0["spec"]?["concurrencyPolicy"] = "Replace" }
        let running = try #require(jobs().last)
        clock.advance(60)
        try controller.reconcile(key)
        #expect(store.get("jobs.batch", namespace: "default", name: running.name) == nil, "Replace: the running one goes")
        #expect(jobs().count == 2)
    }

    @Test func historyLimitsSuspendAndStartingDeadline() throws {
        _ = try cronJob(["successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0])
        for _ in 0..<3 {
            try controller.reconcile(key)
            for job in jobs() where job["status"] == nil { try finish(job, "Complete") }
            clock.advance(60)
        }
        try controller.reconcile(key)
        for job in jobs() where job["status"] == nil { try finish(job, "Failed") }
        try controller.reconcile(key)
        #expect(jobs().count == 1, "one successful kept, no failed one: \(jobs().map(\.name))")

        _ = try store.modify("cronjobs.batch", namespace: "default", name: "tick") { $0["spec"]?["suspend"] = true }
        clock.advance(60)
        try controller.reconcile(key)
        #expect(jobs().count == 1, "suspended: no new Job")

        // Resumed 45 s after a time, with a 30 s deadline: that time is missed, not run late.
        _ = try store.modify("cronjobs.batch", namespace: "default", name: "tick") {
            $0["spec"]?["suspend"] = false
            $0["spec"]?["startingDeadlineSeconds"] = 30
        }
        clock.advance(40)
        try controller.reconcile(key)
        #expect(jobs().count == 1, "the missed time is past its deadline")
        clock.advance(20)
        try controller.reconcile(key)
        #expect(jobs().count == 2, "the next time runs")
    }
}
