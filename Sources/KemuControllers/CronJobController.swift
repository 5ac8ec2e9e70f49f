import Foundation
import KemuAPI
import KemuStore
import Logging

/// batch/v1 CronJobs, as upstream's cronjob controller (v2) runs them: at each time the schedule
/// names (in `spec.timeZone`, UTC without one, as a controller manager in a UTC container), a Job
/// from `jobTemplate` named `<cronjob>-<minutes since the epoch>`, owned by the CronJob. A time
/// missed while the control plane was down runs once when it is back, unless it is older than
/// `startingDeadlineSeconds`; more than 100 missed times is a warning. `concurrencyPolicy`:
/// Allow runs Jobs side by side, Forbid skips a time while one runs (and runs it when that one
/// ends, if still within the deadline, as upstream), Replace deletes the running ones first.
/// `suspend` stops new Jobs. Finished Jobs beyond `successfulJobsHistoryLimit` /
/// `failedJobsHistoryLimit` are deleted, oldest first, their pods with them. Status: active
/// (references to the running Jobs), lastScheduleTime, lastSuccessfulTime.
public final class CronJobController: Sendable {
    static let cronJobs = "cronjobs.batch"
    public static let scheduledAnnotation = "batch.kubernetes.io/cronjob-scheduled-timestamp"
    let store: Store
    /// The controller's clock: tests move it instead of waiting for minutes to pass.
    let clock: @Sendable () -> Date
    let logger = Logger(label: "kemu.cronjobs")
    private let queue = WorkQueue()

    public init(store: Store, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.clock = clock
    }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let cronJobs = try store.watch(WatchFilter(Self.cronJobs))
        let jobs = try store.watch(WatchFilter(JobController.jobs))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await e in cronJobs { self.queue.add(Key(namespace: e.object.namespace, name: e.object.name)) } }
            group.addTask {
                for try await e in jobs {
                    guard let owner = Workload.controllerReference(e.object), owner["kind"]?.string == "CronJob",
                          let name = owner["name"]?.string else { continue }
                    self.queue.add(Key(namespace: e.object.namespace, name: name))
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "cronjob \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.cronJobs, key, error, count: count, retry: retry,
                                           component: "cronjob-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    public func reconcile(_ key: Key) throws {
        guard let cronJob = store.get(Self.cronJobs, namespace: key.namespace, name: key.name), cronJob.deletionTimestamp == nil else { return }
        let now = clock()
        let jobs = store.list(JobController.jobs, namespace: cronJob.namespace).items.filter { Workload.isControlled($0, by: cronJob) }
        var status = cronJob["status"] ?? [:]
        var running = jobs.filter { JobController.finished($0) == nil && $0.deletionTimestamp == nil }

        // Jobs that were running and have finished since.
        let finishedUIDs = Set(jobs.filter { JobController.finished($0) != nil }.map(\.uid))
        for ref in status["active"]?.array ?? [] where finishedUIDs.contains(ref["uid"]?.string ?? "") {
            let job = jobs.first { $0.uid == ref["uid"]?.string }
            Workload.event(store, cronJob, reason: "SawCompletedJob",
                           message: "Saw completed job: \(ref["name"]?.string ?? ""), condition: \(job.flatMap(JobController.finished) ?? "")",
                           component: "cronjob-controller")
        }
        if let latest = jobs.filter({ JobController.finished($0) == "Complete" })
            .compactMap({ $0[path: "status.completionTime"]?.string.flatMap(Timestamp.parse) }).max(),
            latest > (status["lastSuccessfulTime"]?.string.flatMap(Timestamp.parse) ?? .distantPast) {
            status["lastSuccessfulTime"] = .string(Timestamp.format(latest))
        }
        pruneHistory(cronJob, jobs)

        let spec = cronJob["spec"] ?? [:]
        var next: Date?
        if spec["suspend"]?.bool != true, let (schedule, zone) = scheduleAndZone(cronJob) {
            var earliest = status["lastScheduleTime"]?.string.flatMap(Timestamp.parse)
                ?? cronJob[path: "metadata.creationTimestamp"]?.string.flatMap(Timestamp.parse) ?? now
            if let deadline = spec["startingDeadlineSeconds"]?.int {
                earliest = max(earliest, now.addingTimeInterval(-Double(deadline)))
            }
            let (due, count) = schedule.mostRecent(after: earliest, upTo: now, in: zone)
            if count >= 100 {
                Workload.event(store, cronJob, type: "Warning", reason: "TooManyMissedTimes",
                               message: "too many missed start times: \(count). Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                               component: "cronjob-controller")
            }
            if let due {
                let policy = spec["concurrencyPolicy"]?.string ?? "Allow"
                if policy == "Forbid", !running.isEmpty {
                    Workload.event(store, cronJob, reason: "JobAlreadyActive",
                                   message: "Not starting job because prior execution is running and concurrency policy is Forbid",
                                   component: "cronjob-controller")
                } else {
                    if policy == "Replace" {
                        for job in running {
                            _ = try? store.delete(JobController.jobs, namespace: job.namespace, name: job.name, uid: job.uid)
                            Workload.event(store, cronJob, reason: "SuccessfulDelete", message: "Deleted job \(job.name)",
                                           component: "cronjob-controller")
                        }
                        running = []
                    }
                    if let job = try createJob(cronJob, scheduledAt: due) { running.append(job) }
                    status["lastScheduleTime"] = .string(Timestamp.format(due))
                }
            }
            next = schedule.next(after: now, in: zone)
        }
        let references: [JSON] = running.sorted { $0.name < $1.name }.map { job in
            ["apiVersion": "batch/v1", "kind": "Job", "name": .string(job.name), "namespace": .string(job.namespace),
             "uid": .string(job.uid), "resourceVersion": .string(String(job.resourceVersion ?? 0))]
        }
        // A reference keeps the resourceVersion it was made with (no status write per Job change).
        let previous = Dictionary((status["active"]?.array ?? []).compactMap { ref in ref["uid"]?.string.map { ($0, ref) } }) { a, _ in a }
        let active = references.map { previous[$0["uid"]?.string ?? ""] ?? $0 }
        status["active"] = active.isEmpty ? nil : .array(active)
        try Workload.modify(store, Self.cronJobs, cronJob, part: .status) { $0["status"] = status.object?.isEmpty == true ? nil : status }
        if let next { queue.add(key, after: next.timeIntervalSince(now) + 0.05) }
    }

    /// The parsed schedule and its zone; a Warning event when either cannot be read (admission
    /// refuses both, but a zone can vanish from the machine).
    func scheduleAndZone(_ cronJob: JSON) -> (CronSchedule, TimeZone)? {
        let text = cronJob[path: "spec.schedule"]?.string ?? ""
        guard let schedule = try? CronSchedule(text) else {
            Workload.event(store, cronJob, type: "Warning", reason: "UnparseableSchedule", message: "unparseable schedule: \"\(text)\"",
                           component: "cronjob-controller")
            return nil
        }
        guard let name = cronJob[path: "spec.timeZone"]?.string else { return (schedule, TimeZone(identifier: "UTC") ?? .current) }
        guard let zone = TimeZone(identifier: name) else {
            Workload.event(store, cronJob, type: "Warning", reason: "UnknownTimeZone", message: "invalid timeZone: \"\(name)\"",
                           component: "cronjob-controller")
            return nil
        }
        return (schedule, zone)
    }

    /// The Job for the time `scheduled`, or nil when it exists already (made by an earlier pass).
    func createJob(_ cronJob: JSON, scheduledAt scheduled: Date) throws -> JSON? {
        let template = cronJob[path: "spec.jobTemplate"] ?? [:]
        var job: JSON = ["apiVersion": "batch/v1", "kind": "Job", "metadata": template["metadata"] ?? [:], "spec": template["spec"] ?? [:]]
        job.name = "\(cronJob.name)-\(Int64((scheduled.timeIntervalSince1970 / 60).rounded(.down)))"
        job.namespace = cronJob.namespace
        var annotations = JSON.stringMap(job[path: "metadata.annotations"])
        annotations[Self.scheduledAnnotation] = Timestamp.format(scheduled)
        job["metadata", default: [:]]["annotations"] = JSON.stringMapJSON(annotations)
        job["metadata", default: [:]]["ownerReferences"] = [Workload.reference(to: cronJob)]
        do {
            let created = try store.create(JobController.jobs, job)
            Workload.event(store, cronJob, reason: "SuccessfulCreate", message: "Created job \(created.name)", component: "cronjob-controller")
            return created
        } catch StoreError.alreadyExists {
            return nil
        } catch {
            Workload.event(store, cronJob, type: "Warning", reason: "FailedCreate", message: "Error creating job: \(error)",
                           component: "cronjob-controller")
            throw error
        }
    }

    /// Finished Jobs beyond the history limits go, oldest first.
    func pruneHistory(_ cronJob: JSON, _ jobs: [JSON]) {
        for (type, field, fallback) in [("Complete", "successfulJobsHistoryLimit", 3), ("Failed", "failedJobsHistoryLimit", 1)] {
            let limit = Int(cronJob[path: "spec.\(field)"]?.int ?? Int64(fallback))
            let finished = jobs.filter { JobController.finished($0) == type && $0.deletionTimestamp == nil }
                .sorted { ($0[path: "metadata.creationTimestamp"]?.string ?? "", $0.name) < ($1[path: "metadata.creationTimestamp"]?.string ?? "", $1.name) }
            for job in finished.prefix(max(0, finished.count - limit)) {
                guard (try? store.delete(JobController.jobs, namespace: job.namespace, name: job.name, uid: job.uid)) != nil else { continue }
                Workload.event(store, cronJob, reason: "SuccessfulDelete", message: "Deleted job \(job.name)", component: "cronjob-controller")
            }
        }
    }
}
