import Foundation
import KemuAPI
import KemuSystem

/// Init containers, as kubelet runs them: one after another, each to a successful exit, before
/// any app container starts. A failed one is run again after the restart back-off (10 s
/// doubling) — unless the pod's restartPolicy is Never, which fails the pod. Statuses go to
/// `initContainerStatuses`, the pod stays Pending with Initialized False until the last one is
/// done, and the app containers wait as PodInitializing. An init container with
/// `restartPolicy: Always` is a sidecar: started, then left running beside the app containers.
extension PodWorker {
    /// Runs the init containers; false when the pod is not to go on (stopped, or failed).
    func runInitContainers() async -> Bool {
        for i in initContainers.indices {
            let sidecar = initContainers[i].spec["restartPolicy"]?.string == "Always"
            while true {
                if stopped { return false }
                guard let exit = await runInitContainer(i, sidecar: sidecar) else {
                    if sidecar, initContainers[i].pid != nil { break }  // started: the next one goes
                    if stopped { return false }
                    continue  // its configuration is not there yet: looked for again
                }
                if exit == .exited(0) { break }
                if pod[path: "spec.restartPolicy"]?.string == "Never" {
                    initFailed = true
                    return false
                }
                let pause = initContainers[i].backoff.pause(ranFor: initContainers[i].startedAt.map { $0.duration(to: .now) })
                initContainers[i].lastState = initContainers[i].state
                if pause > .zero {
                    initContainers[i].state = ["waiting": ["reason": "CrashLoopBackOff",
                                                           "message": .string("back-off \(Int(pause.components.seconds))s restarting failed container=\(initContainers[i].name) pod=\(name)_\(namespace)(\(uid))")]]
                    await agent.event(pod, type: "Warning", reason: "BackOff",
                                      message: "Back-off restarting failed container \(initContainers[i].name) in pod \(name)")
                    await report()
                    try? await Task.sleep(for: pause)
                }
                initContainers[i].restartCount += 1
            }
        }
        initialized = true
        return true
    }

    /// One run of init container `i`: its exit, or nil when it did not start (its ConfigMaps or
    /// Secrets missing: after a pause; or a sidecar, which is left running).
    func runInitContainer(_ i: Int, sidecar: Bool) async -> ProcessExit? {
        let spec = initContainers[i].spec, name = initContainers[i].name
        let configured: [(name: String, value: String)]
        switch await configuredVariables(spec) {
        case .success(let found): configured = found
        case .failure(let error):
            initContainers[i].state = ["waiting": ["reason": .string(error.reason), "message": .string(error.message)]]
            await report()
            try? await Task.sleep(for: .seconds(2))
            return nil
        }
        let exited = AsyncStream<ProcessExit>.makeStream()
        do {
            let started = try spawn(spec, name: name, configured: configured) { exit in
                exited.continuation.yield(exit)
                exited.continuation.finish()
            }
            initContainers[i].pid = started.pid
            initContainers[i].stdin = started.stdin
            started.stdin?.startServing()
            initContainers[i].state = ["running": ["startedAt": .string(Timestamp.now())]]
            initContainers[i].startedAt = .now
            initContainers[i].everStarted = true
            await agent.event(pod, type: "Normal", reason: "Started", message: "Started container \(name)")
            await report()
        } catch {
            let (reason, message) = (error as? ContainerError).map { ($0.reason, $0.message) } ?? ("RunContainerError", "\(error)")
            initContainers[i].state = ["waiting": ["reason": .string(reason), "message": .string(message)]]
            await agent.event(pod, type: "Warning", reason: "Failed", message: "Error: \(message)")
            return .exited(128)
        }
        if sidecar {
            initContainers[i].ready = true
            if let pid = initContainers[i].pid {
                Task { [weak self] in
                    var exit = ProcessExit.exited(137)
                    for await e in exited.stream { exit = e }
                    await self?.sidecarExited(i, pid: pid, exit: exit)
                }
            }
            return nil
        }
        var exit = ProcessExit.exited(137)
        for await e in exited.stream { exit = e }
        recordInitExit(i, exit)
        await report()
        return exit
    }

    func recordInitExit(_ i: Int, _ exit: ProcessExit) {
        initContainers[i].pid = nil
        initContainers[i].stdin?.close()
        initContainers[i].stdin = nil
        let started = initContainers[i].state["running"]?["startedAt"] ?? .string(Timestamp.now())
        var terminated: JSON = ["exitCode": .int(Int64(exit.shellCode)), "startedAt": started, "finishedAt": .string(Timestamp.now()),
                                "reason": exit == .exited(0) ? "Completed" : "Error"]
        if releaseCgroup(initContainers[i].name), exit != .exited(0) { terminated["reason"] = "OOMKilled" }
        if case .signaled(let signal) = exit { terminated["signal"] = .int(Int64(signal)) }
        initContainers[i].state = ["terminated": terminated]
        initContainers[i].ready = exit == .exited(0)
    }

    /// A sidecar ended: it is started again, whatever the pod's restartPolicy, after the same
    /// back-off as any container (kubelet restarts sidecars for as long as the pod runs).
    func sidecarExited(_ i: Int, pid: pid_t, exit: ProcessExit) async {
        guard initContainers.indices.contains(i), initContainers[i].pid == pid else { return }
        recordInitExit(i, exit)
        initContainers[i].ready = false
        initContainers[i].lastState = initContainers[i].state
        logger.info("sidecar \(initContainers[i].name) \(exit)")
        guard !stopped else { return }
        let pause = initContainers[i].backoff.pause(ranFor: initContainers[i].startedAt.map { $0.duration(to: .now) })
        if pause > .zero {
            initContainers[i].state = ["waiting": ["reason": "CrashLoopBackOff",
                                                   "message": .string("back-off \(Int(pause.components.seconds))s restarting failed container=\(initContainers[i].name) pod=\(name)_\(namespace)(\(uid))")]]
            await agent.event(pod, type: "Warning", reason: "BackOff", message: "Back-off restarting failed container \(initContainers[i].name) in pod \(name)")
        }
        await report()
        if pause > .zero { try? await Task.sleep(for: pause) }
        guard !stopped, initContainers[i].pid == nil else { return }
        initContainers[i].restartCount += 1
        while !stopped, await runInitContainer(i, sidecar: true) == nil, initContainers[i].pid == nil {}
        await report()
    }
}
