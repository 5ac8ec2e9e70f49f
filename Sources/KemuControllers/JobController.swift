import Foundation
import KemuAPI
import KemuStore
import Logging

/// batch/v1 Jobs, as upstream's job controller runs them (NonIndexed, or Indexed: each index in
/// 0..<completions succeeding once, the pod told its index, completedIndexes in the status): pods from the
/// template, at most `parallelism` active, until `completions` have succeeded (without
/// completions, the first success completes the Job once none is active). A failed pod counts
/// toward `backoffLimit` (with restartPolicy OnFailure, each container restart does) and is
/// replaced after upstream's back-off (10 s doubling, at most 6 min); past the limit the Job
/// fails (BackoffLimitExceeded), as it does past `activeDeadlineSeconds` (DeadlineExceeded), and
/// its active pods are deleted. `suspend` deletes them too. `ttlSecondsAfterFinished` deletes the
/// finished Job, and the garbage collector its pods. Status: active, ready, succeeded, failed,
/// startTime, completionTime, conditions Complete / Failed / Suspended.
public final class JobController: Sendable {
    static let jobs = "jobs.batch"
    /// Upstream's MaxPodCreateDeletePerSync.
    static let burst = 500
    let store: Store
    let logger = Logger(label: "kemu.jobs")
    private let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let jobs = try store.watch(WatchFilter(Self.jobs))
        let pods = try store.watch(WatchFilter("pods"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await e in jobs { self.queue.add(Key(namespace: e.object.namespace, name: e.object.name)) } }
            group.addTask {
                for try await e in pods {
                    guard let owner = Workload.controllerReference(e.object), owner["kind"]?.string == "Job",
                          let name = owner["name"]?.string else { continue }
                    self.queue.add(Key(namespace: e.object.namespace, name: name))
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "job \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.jobs, key, error, count: count, retry: retry, component: "job-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    static func finished(_ job: JSON) -> String? {
        (job[path: "status.conditions"]?.array ?? []).first {
            ["Complete", "Failed"].contains($0["type"]?.string ?? "") && $0["status"]?.string == "True"
        }?["type"]?.string
    }

    public func reconcile(_ key: Key) throws {
        guard var job = store.get(Self.jobs, namespace: key.namespace, name: key.name), job.deletionTimestamp == nil else { return }
        let now = Date()
        // The selector and pod labels upstream derives from the Job's uid, set once.
        if job[path: "spec.selector"] == nil, job[path: "spec.manualSelector"]?.bool != true {
            let labels: [String: String] = ["batch.kubernetes.io/controller-uid": job.uid, "batch.kubernetes.io/job-name": job.name,
                                            "controller-uid": job.uid, "job-name": job.name]
            job = try store.modify(Self.jobs, namespace: job.namespace, name: job.name) { j in
                j["spec", default: [:]]["selector"] = ["matchLabels": ["batch.kubernetes.io/controller-uid": .string(j.uid)]]
                var template = j[path: "spec.template"] ?? [:]
                var metadata = template["metadata"] ?? [:]
                var merged = JSON.stringMap(metadata["labels"])
                merged.merge(labels) { _, new in new }
                metadata["labels"] = JSON.stringMapJSON(merged)
                template["metadata"] = metadata
                j["spec", default: [:]]["template"] = template
            }
        }
        let pods = store.list("pods", namespace: job.namespace).items.filter { Workload.isControlled($0, by: job) }
        let active = pods.filter(Workload.active)
        // Indexed: each index in 0..<completions succeeds once; a pod carries its index.
        let indexed = job[path: "spec.completionMode"]?.string == "Indexed"
        let succeededIndexes = Set(pods.filter { $0[path: "status.phase"]?.string == "Succeeded" }.compactMap(Self.index(of:)))
        let succeeded = indexed ? succeededIndexes.count : pods.filter { $0[path: "status.phase"]?.string == "Succeeded" }.count
        let onFailure = job[path: "spec.template.spec.restartPolicy"]?.string == "OnFailure"
        let restarts = onFailure ? active.reduce(0) { n, pod in
            n + (pod[path: "status.containerStatuses"]?.array ?? []).reduce(0) { $0 + Int($1["restartCount"]?.int ?? 0) }
        } : 0
        // podFailurePolicy: the first rule a failed pod matches decides (FailJob, Ignore: not
        // counted, Count); without one every failure counts.
        let failures = pods.filter { $0[path: "status.phase"]?.string == "Failed" }.map { ($0, Self.failureRule(job, $0)) }
        let failed = failures.filter { $0.1?.action != "Ignore" }.count
        let failJob = failures.first { $0.1?.action == "FailJob" }
        let spec = job["spec"] ?? [:]
        let completions = spec["completions"]?.int.map(Int.init)
        let parallelism = Int(spec["parallelism"]?.int ?? 1)
        let backoffLimit = Int(spec["backoffLimit"]?.int ?? 6)
        let suspended = spec["suspend"]?.bool == true
        var status = job["status"] ?? [:]
        let start = status["startTime"]?.string.flatMap(Timestamp.parse)

        if let done = Self.finished(job) {
            // Finished: its pods are left as they are; the TTL, if any, takes the Job.
            try expire(job, finished: done, now: now)
            for pod in active where done == "Failed" { try? Workload.deletePod(store, pod) }
            return
        }
        var verdict: (type: String, reason: String, message: String)?
        if let (pod, rule) = failJob, let rule {
            verdict = ("Failed", "PodFailurePolicy", "\(rule.what) for pod \(pod.namespace)/\(pod.name) matching FailJob rule at index \(rule.index)")
        } else if failed + restarts > backoffLimit {
            verdict = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        } else if let deadline = spec["activeDeadlineSeconds"]?.int, let start, !suspended,
                  now.timeIntervalSince(start) >= Double(deadline) {
            verdict = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        } else if let completions, succeeded >= completions {
            verdict = ("Complete", "", "")
        } else if completions == nil, succeeded > 0, active.isEmpty {
            verdict = ("Complete", "", "")
        }

        if let verdict {
            for pod in active { try? Workload.deletePod(store, pod) }
            var conditions = status["conditions"]?.array ?? []
            let stamp = JSON.string(Timestamp.now())
            var condition: JSON = ["type": .string(verdict.type), "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp]
            if !verdict.reason.isEmpty {
                condition["reason"] = .string(verdict.reason)
                condition["message"] = .string(verdict.message)
            }
            conditions.append(condition)
            status["conditions"] = .array(conditions)
            if verdict.type == "Complete" { status["completionTime"] = stamp }
            Workload.event(store, job, type: verdict.type == "Failed" ? "Warning" : "Normal",
                           reason: verdict.type == "Failed" ? verdict.reason : "Completed",
                           message: verdict.type == "Failed" ? verdict.message : "Job completed", component: "job-controller")
        } else if suspended {
            for pod in active { try? Workload.deletePod(store, pod) }
            status["startTime"] = nil
        } else {
            if start == nil { status["startTime"] = .string(Timestamp.now()) }
            // What is still wanted: no more active pods than parallelism or than the
            // completions left; a replacement for a failure only after its back-off.
            let left = completions.map { max(0, $0 - succeeded) } ?? (succeeded > 0 ? 0 : parallelism)
            let wanted = min(parallelism, left)
            if active.count < wanted {
                let pause = failed == 0 ? 0 : min(10 * pow(2, Double(failed - 1)), 360)
                let lastFailure = pods.compactMap { pod -> Date? in
                    guard pod[path: "status.phase"]?.string == "Failed" else { return nil }
                    return (pod[path: "status.containerStatuses"]?.array ?? []).compactMap {
                        $0[path: "state.terminated.finishedAt"]?.string.flatMap(Timestamp.parse)
                    }.max() ?? pod[path: "metadata.creationTimestamp"]?.string.flatMap(Timestamp.parse)
                }.max()
                let wait = lastFailure.map { pause - now.timeIntervalSince($0) } ?? 0
                if wait > 0 {
                    queue.add(key, after: wait)
                } else {
                    // At most upstream's 500 creations a sync; the rest at the next.
                    let count = min(wanted - active.count, Self.burst)
                    if indexed {
                        // The lowest indexes that have neither succeeded nor a pod at work.
                        let busy = Set(active.compactMap(Self.index(of:)))
                        let missing = (0..<(completions ?? 0)).lazy.filter { !succeededIndexes.contains($0) && !busy.contains($0) }
                        for index in missing.prefix(count) { try createPod(for: job, index: index) }
                    } else {
                        for _ in 0..<count { try createPod(for: job) }
                    }
                    if wanted - active.count > count { queue.add(key) }
                }
            }
            if let deadline = spec["activeDeadlineSeconds"]?.int {
                let started = start ?? now
                queue.add(key, after: Double(deadline) - now.timeIntervalSince(started) + 0.05)
            }
        }
        let current = store.list("pods", namespace: job.namespace).items.filter { Workload.isControlled($0, by: job) }
        status["active"] = .int(Int64(current.filter(Workload.active).count))
        status["ready"] = .int(Int64(current.filter { Workload.active($0) && Workload.ready($0) }.count))
        status["succeeded"] = .int(Int64(succeeded))
        status["failed"] = .int(Int64(failed + restarts))
        status["terminating"] = .int(Int64(current.filter { $0.deletionTimestamp != nil }.count))
        if indexed { status["completedIndexes"] = .string(Self.ranges(succeededIndexes.sorted())) }
        let updated = try Workload.modify(store, Self.jobs, job, part: .status) { $0["status"] = status }
        if let done = Self.finished(updated) { try expire(updated, finished: done, now: now) }
    }

    /// The podFailurePolicy rule a failed pod matches: its index, action, and what matched
    /// (upstream's words: `Container c failed with exit code 42`, `Pod has condition …`).
    static func failureRule(_ job: JSON, _ pod: JSON) -> (index: Int, action: String, what: String)? {
        let statuses = pod[path: "status.containerStatuses"]?.array ?? []
        for (index, rule) in (job[path: "spec.podFailurePolicy.rules"]?.array ?? []).enumerated() {
            let action = rule["action"]?.string ?? ""
            if let codes = rule["onExitCodes"] {
                let values = Set((codes["values"]?.array ?? []).compactMap(\.int))
                let within = codes["operator"]?.string == "In"
                for status in statuses {
                    if let only = codes["containerName"]?.string, status["name"]?.string != only { continue }
                    guard let code = status[path: "state.terminated.exitCode"]?.int, code != 0 else { continue }
                    if values.contains(code) == within {
                        return (index, action, "Container \(status["name"]?.string ?? "") failed with exit code \(code)")
                    }
                }
            }
            for pattern in rule["onPodConditions"]?.array ?? [] {
                let type = pattern["type"]?.string ?? "", wanted = pattern["status"]?.string ?? "True"
                if (pod[path: "status.conditions"]?.array ?? []).contains(where: { $0["type"]?.string == type && $0["status"]?.string == wanted }) {
                    return (index, action, "Pod has condition \(type)")
                }
            }
        }
        return nil
    }

    static let indexKey = "batch.kubernetes.io/job-completion-index"

    static func index(of pod: JSON) -> Int? { pod.annotations[indexKey].flatMap { Int($0) } }

    /// Upstream's completedIndexes: `1,3-5,7` (runs of three or more as ranges).
    public static func ranges(_ sorted: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count, sorted[j + 1] == sorted[j] + 1 { j += 1 }
            if j - i >= 2 { parts.append("\(sorted[i])-\(sorted[j])") } else { parts += sorted[i...j].map(String.init) }
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    /// A pod from the template; an Indexed Job's carries its index (annotation, label, the
    /// JOB_COMPLETION_INDEX variable, hostname `<job>-<index>`), as upstream's.
    func createPod(for job: JSON, index: Int? = nil) throws {
        var pod = Workload.pod(from: job, name: "")
        pod["metadata", default: [:]]["generateName"] = .string(index.map { "\(job.name)-\($0)-" } ?? "\(job.name)-")
        if let index {
            var annotations = pod.annotations
            annotations[Self.indexKey] = String(index)
            pod["metadata", default: [:]]["annotations"] = JSON.stringMapJSON(annotations)
            var labels = pod.labels
            labels[Self.indexKey] = String(index)
            pod.labels = labels
            if pod[path: "spec.hostname"] == nil { pod["spec", default: [:]]["hostname"] = .string("\(job.name)-\(index)") }
            let variable: JSON = ["name": "JOB_COMPLETION_INDEX",
                                  "valueFrom": ["fieldRef": ["fieldPath": .string("metadata.annotations['\(Self.indexKey)']")]]]
            for kind in ["containers", "initContainers"] {
                guard var containers = pod[path: "spec.\(kind)"]?.array else { continue }
                for i in containers.indices { containers[i]["env"] = .array([variable] + (containers[i]["env"]?.array ?? [])) }
                pod["spec", default: [:]][kind] = .array(containers)
            }
        }
        do {
            let created = try Workload.createPod(store, pod)
            Workload.event(store, job, reason: "SuccessfulCreate", message: "Created pod: \(created.name)", component: "job-controller")
        } catch {
            Workload.event(store, job, type: "Warning", reason: "FailedCreate", message: "Error creating: \(error)", component: "job-controller")
            throw error
        }
    }

    /// `ttlSecondsAfterFinished` (upstream's TTL-after-finished controller): the Job goes, its
    /// pods with it (background deletion).
    func expire(_ job: JSON, finished type: String, now: Date) throws {
        guard let ttl = job[path: "spec.ttlSecondsAfterFinished"]?.int else { return }
        let at = (job[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == type }?["lastTransitionTime"]?.string
            .flatMap(Timestamp.parse) ?? now
        let left = Double(ttl) - now.timeIntervalSince(at)
        if left > 0 {
            queue.add(Key(namespace: job.namespace, name: job.name), after: left + 0.05)
        } else {
            try store.delete(Self.jobs, namespace: job.namespace, name: job.name, uid: job.uid)
        }
    }
}
