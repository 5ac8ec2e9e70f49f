import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// The pod status the worker writes: phase, conditions, container states.
extension PodWorker {
    /// Writes the pod's status when it differs from what was last written.
    func report() async {
        if reporting { reportAgain = true; return }
        reporting = true
        defer { reporting = false }
        repeat {
            reportAgain = false
            guard !stopped else { return }
            let status = self.status()
            if status == reported { continue }
            do {
                _ = try await agent.client.patch(agent.pods, namespace: namespace, name: name, ["status": status], subresource: "status")
                reported = status
            } catch let error as ClientError where error.code == 404 {
                return  // deleted meanwhile: the watch brings the delete
            } catch {
                logger.warning("status: \(error); retrying")
                retryReport()
            }
        } while reportAgain
    }

    /// A status write that failed (the server busy or restarting) is tried again after a pause,
    /// doubling to 10 s, as kubelet's status manager re-syncs: a pod never stays shown as it was.
    func retryReport() {
        guard !retryingReport else { return }
        retryingReport = true
        let pause = reportRetryPause
        reportRetryPause = min(reportRetryPause * 2, .seconds(10))
        Task { [weak self] in
            try? await Task.sleep(for: pause + .milliseconds(Int.random(in: 0...250)))
            guard let self else { return }
            await self.retried()
        }
    }

    func retried() async {
        retryingReport = false
        reported = nil  // write the state of now, whatever was last sent
        await report()
        if retryingReport == false { reportRetryPause = .milliseconds(500) }
    }

    /// The pod's phase as kubelet derives it from its containers: every one ended under
    /// `Never` (or all with 0 under `OnFailure`) is Succeeded or Failed; every one started at
    /// least once is Running; otherwise Pending. `exitCodes`: each container's, nil while it runs.
    static func phase(restartPolicy: String, exitCodes: [Int64?], allStarted: Bool) -> String {
        let exits = exitCodes.compactMap { $0 }
        let allEnded = !exitCodes.isEmpty && exits.count == exitCodes.count
        if allEnded && restartPolicy == "Never" { return exits.allSatisfy { $0 == 0 } ? "Succeeded" : "Failed" }
        if allEnded && restartPolicy == "OnFailure" && exits.allSatisfy({ $0 == 0 }) { return "Succeeded" }
        return !exitCodes.isEmpty && allStarted ? "Running" : "Pending"
    }

    /// A pod condition; its lastTransitionTime stays what `previous` says while the status is
    /// unchanged (so an unchanged pod reports an unchanged status, and nothing is written).
    static func condition(_ type: String, _ value: Bool, reason: String? = nil, previous: [JSON], now: String) -> JSON {
        let status = value ? "True" : "False"
        let old = previous.first { $0["type"]?.string == type }
        let since = old?["status"]?.string == status ? (old?["lastTransitionTime"] ?? .string(now)) : .string(now)
        var c: JSON = ["type": .string(type), "status": .string(status), "lastProbeTime": .null, "lastTransitionTime": since]
        if let reason, !value { c["reason"] = .string(reason) }
        return c
    }

    func status() -> JSON {
        let phase = initFailed ? "Failed" : !initialized ? "Pending"
            : Self.phase(restartPolicy: pod[path: "spec.restartPolicy"]?.string ?? "Always",
                         exitCodes: containers.map { $0.state["terminated"]?["exitCode"]?.int },
                         allStarted: containers.allSatisfy(\.everStarted))
        let ready = !containers.isEmpty && containers.allSatisfy { $0.ready && $0.pid != nil }
        let previous = pod[path: "status.conditions"]?.array ?? []
        let now = Timestamp.now()
        func condition(_ type: String, _ value: Bool, reason: String? = nil) -> JSON {
            Self.condition(type, value, reason: reason, previous: previous, now: now)
        }
        let notReady = containers.filter { !($0.ready && $0.pid != nil) }.map(\.name)
        var conditions: [JSON] = [
            condition("PodReadyToStartContainers", sandbox != nil),
            condition("Initialized", initialized, reason: "ContainersNotInitialized"),
            condition("Ready", ready, reason: "ContainersNotReady"),
            condition("ContainersReady", ready, reason: "ContainersNotReady"),
            condition("PodScheduled", true),
        ]
        if !ready, !notReady.isEmpty {
            for index in [2, 3] { conditions[index]["message"] = .string("containers with unready status: [\(notReady.joined(separator: " "))]") }
        }
        if !initialized {
            let incomplete = initContainers.filter { $0.state["terminated"]?["exitCode"]?.int != 0 }.map(\.name)
            conditions[1]["message"] = .string("containers with incomplete status: [\(incomplete.joined(separator: " "))]")
        }
        var status: JSON = [
            "phase": .string(phase),
            "conditions": .array(conditions),
            "hostIP": .string(agent.nodeIP),
            "hostIPs": [["ip": .string(agent.nodeIP)]],
            "startTime": .string(startTime ?? Timestamp.now()),
            "qosClass": .string(Self.qosClass(pod)),
        ]
        if let sandbox {
            status["podIP"] = .string(sandbox.ip.description)
            status["podIPs"] = [["ip": .string(sandbox.ip.description)]]
        }
        if !initContainers.isEmpty {
            status["initContainerStatuses"] = .array(initContainers.map { c in
                var s: JSON = ["name": .string(c.name), "state": c.state, "lastState": c.lastState, "ready": .bool(c.ready),
                               "restartCount": .int(Int64(c.restartCount)), "image": c.spec["image"] ?? "",
                               "imageID": .string("kemu://\(c.spec["image"]?.string ?? "")"), "started": .bool(c.pid != nil)]
                if let pid = c.pid { s["containerID"] = .string("kemu://\(pid)") }
                return s
            })
        }
        status["containerStatuses"] = .array(containers.map { c in
            var s: JSON = ["name": .string(c.name), "state": c.state, "lastState": c.lastState, "ready": .bool(c.ready && c.pid != nil),
                           "restartCount": .int(Int64(c.restartCount)), "image": c.spec["image"] ?? "",
                           "imageID": .string("kemu://\(c.spec["image"]?.string ?? "")"), "started": .bool(c.pid != nil && c.startupDone)]
            if let pid = c.pid { s["containerID"] = .string("kemu://\(pid)") }
            return s
        })
        return status
    }
}
