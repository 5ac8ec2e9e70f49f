import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuStore
import KemuSystem
import Logging

/// One pod on this node, kubelet style: its sandbox, its containers as processes inside it, their
/// restarts (restartPolicy with CrashLoopBackOff's doubling pause), and the pod status that
/// reports all of it. Every change goes through the actor, so a process exit (from the reaper's
/// thread), a spec update (from the watch) and a stop never interleave.
public actor PodWorker {
    let agent: NodeAgent
    let uid: String
    let namespace: String
    let name: String
    private(set) var pod: JSON
    var sandbox: PodSandbox?
    var containers: [Container] = []
    var stopped = false
    var startTime: String?
    /// The status last written, to write only changes.
    var reported: JSON?
    /// A status write is under way / another is wanted after it. Writes go one at a time, each
    /// with the state of the moment it starts, so the last one written is the newest (the actor
    /// is re-entered while a write waits for the server).
    var reporting = false
    var reportAgain = false
    let logger: Logger

    /// What kubelet tracks per container.
    struct Container {
        var name: String
        var spec: JSON
        var pid: pid_t?
        /// running since / waiting reason+message / terminated details, as the status shows them.
        var state: JSON = ["waiting": ["reason": "ContainerCreating"]]
        var lastState: JSON = [:]
        var restartCount = 0
        var ready = false
        var everStarted = false
        /// The next pause before a restart (10 s doubling to 300 s); reset after 10 min of running.
        var backoff: Duration = .zero
        var startedAt: ContinuousClock.Instant?
        var restartTask: Task<Void, Never>?
        /// The probes of the running instance; cancelled when it ends.
        var probeTask: Task<Void, Never>?
        /// The startup probe passed (or there is none): liveness and readiness probes run.
        var startupDone = true
        /// The kernel's start time of `pid`, recorded so a later agent knows it is the same process.
        var processStart: UInt64?
    }

    init(agent: NodeAgent, pod: JSON) {
        self.agent = agent
        self.pod = pod
        uid = pod.uid
        namespace = pod.namespace
        name = pod.name
        logger = Logger(label: "kemu.agent.\(pod.namespace)/\(pod.name)")
    }

    /// Sandbox names are DNS labels, unique per pod object: the pod's name and its uid's start.
    public static func sandboxName(_ pod: JSON) -> String { PodNames.sandbox(pod) }

    var logDirectory: String { Self.logDirectory(agent.config.logDirectory, pod) }

    /// Where a pod's container logs are: DIR/<namespace>_<name>_<uid>/<container>.log
    public static func logDirectory(_ base: String, _ pod: JSON) -> String { "\(base)/\(pod.namespace)_\(pod.name)_\(pod.uid)" }

    /// First sight of the pod: sandbox, then every container.
    /// The start under way, which a stop waits for, so nothing it makes is left behind.
    var starting: Task<Void, Never>?

    /// Starts the pod in the background: the agent's event loop goes on with the next pod.
    func launch() {
        starting = Task { await self.start() }
    }

    func start() async {
        startTime = Timestamp.now()
        containers = (pod[path: "spec.containers"]?.array ?? []).map { Container(name: $0["name"]?.string ?? "", spec: $0) }
        // A sandbox left by an earlier run of this agent: take over its running processes.
        if let existing = try? await agent.onNetworkThread({ [pod] network in try network.pod(Self.sandboxName(pod)) }),
           adopt(existing) {
            await report()
            return
        }
        do {
            sandbox = try await agent.onNetworkThread { [pod] network in
                // Left behind with nothing to adopt: start afresh.
                if try network.pod(Self.sandboxName(pod)) != nil {
                    try network.removePod(Self.sandboxName(pod), killProcesses: true)
                }
                return try network.addPod(Self.sandboxName(pod), node: self.agent.config.nodeName,
                                          kubernetesNamespace: pod.namespace, hostname: pod.name)
            }
            try FileSystem.makeDirectories(logDirectory)
        } catch {
            logger.error("sandbox: \(error)")
            for i in containers.indices {
                containers[i].state = ["waiting": ["reason": "CreateContainerError", "message": .string("pod sandbox: \(error)")]]
            }
            await agent.event(pod, type: "Warning", reason: "FailedCreatePodSandBox", message: "\(error)")
            await report()
            return
        }
        if stopped { return }  // deleted while its sandbox was being made: stop() removes it
        for i in containers.indices { startContainer(i) }
        await report()
    }

    var terminating = false

    /// Claims the termination of this pod: false if it has begun already.
    func beginTermination() -> Bool {
        if terminating { return false }
        terminating = true
        return true
    }

    /// The pod object changed (labels, a deletion mark…). Containers are not changed in place, as
    /// upstream only allows image updates; kemu keeps the running processes.
    func update(_ pod: JSON) async {
        self.pod = pod
    }

    func startContainer(_ i: Int) {
        guard !stopped, let sandbox else { return }
        let spec = containers[i].spec
        let environment = agent.environment(for: pod, container: spec, podIP: sandbox.ip.description)
        do {
            let argv = try agent.config.images.argv(
                image: spec["image"]?.string ?? "",
                command: spec["command"]?.array?.compactMap(\.string).map { Self.expand($0, environment) },
                args: spec["args"]?.array?.compactMap(\.string).map { Self.expand($0, environment) },
                path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
            let log = try FileDescriptor(opening: "\(logDirectory)/\(containers[i].name).log", flags: O_WRONLY | O_CREAT | O_APPEND)
            var options = Spawn.Options(namespace: NetworkNamespace(sandbox.namespace), environment: environment)
            options.stdin = -1
            options.stdout = log.raw
            options.stderr = log.raw
            options.newSession = true
            options.workingDirectory = spec["workingDir"]?.string
            let name = containers[i].name
            let pid = try agent.reaper.spawn(argv, options) { [weak self] exit in
                guard let self else { return }
                Task { await self.exited(name, exit) }
            }
            containers[i].pid = pid
            containers[i].processStart = ProcessReaper.startTime(of: pid)
            containers[i].state = ["running": ["startedAt": .string(Timestamp.now())]]
            containers[i].startedAt = .now
            containers[i].everStarted = true
            containers[i].ready = spec["readinessProbe"] == nil
            containers[i].startupDone = spec["startupProbe"] == nil
            startProbes(i, ip: sandbox.ip.description, namespace: NetworkNamespace(sandbox.namespace), environment: environment)
            saveRuntime()
            logger.info("started \(name) as pid \(pid): \(argv.joined(separator: " "))")
            let (pod, agent) = (self.pod, self.agent)
            Task { await agent.event(pod, type: "Normal", reason: "Started", message: "Started container \(name)") }
        } catch let error as ContainerError {
            containers[i].state = ["waiting": ["reason": .string(error.reason), "message": .string(error.message)]]
            let pod = self.pod
            Task { await agent.event(pod, type: "Warning", reason: error.reason == "ErrImagePull" ? "Failed" : "FailedStart", message: error.message) }
            if error.reason == "RunContainerError" { scheduleRestart(i, failed: true) }
        } catch {
            containers[i].state = ["waiting": ["reason": "RunContainerError", "message": .string("\(error)")]]
            scheduleRestart(i, failed: true)
        }
    }

    /// A container's process ended: record it, then restart it if the policy says so.
    /// `exit` is nil for a process this agent adopted: only its parent could learn the status,
    /// so it is reported as upstream reports a lost container (ContainerStatusUnknown, 137).
    func exited(_ name: String, _ exit: ProcessExit?, pid: pid_t? = nil) async {
        guard let i = containers.firstIndex(where: { $0.name == name }) else { return }
        if let pid, containers[i].pid != pid { return }
        let started = containers[i].state["running"]?["startedAt"] ?? .string(Timestamp.now())
        var terminated: JSON = ["exitCode": .int(Int64(exit?.shellCode ?? 137)), "startedAt": started, "finishedAt": .string(Timestamp.now())]
        switch exit {
        case .exited(0)?: terminated["reason"] = "Completed"
        case .signaled(let signal)?: terminated["reason"] = "Error"; terminated["signal"] = .int(Int64(signal))
        case .exited?: terminated["reason"] = "Error"
        case nil:
            terminated["reason"] = "ContainerStatusUnknown"
            terminated["message"] = "The container's process ended while a restarted node agent watched it; its exit status is unknown"
        }
        containers[i].pid = nil
        containers[i].ready = false
        containers[i].probeTask?.cancel()
        containers[i].probeTask = nil
        containers[i].state = ["terminated": terminated]
        if stopped { return }
        logger.info("container \(name) \(exit.map(\.description) ?? "ended (status unknown: adopted)")")
        let policy = pod[path: "spec.restartPolicy"]?.string ?? "Always"
        let failed = exit != .exited(0)
        saveRuntime()
        if policy == "Always" || (policy == "OnFailure" && failed) {
            scheduleRestart(i, failed: failed)
        }
        await report()
    }

    /// Restarts container `i` after its back-off: at once the first time, then 10 s doubling to
    /// 5 min (kubelet's numbers), reset once it has run 10 min. While it waits the container shows
    /// CrashLoopBackOff.
    func scheduleRestart(_ i: Int, failed: Bool) {
        if let started = containers[i].startedAt, started.duration(to: .now) > .seconds(600) { containers[i].backoff = .zero }
        let pause = containers[i].backoff
        containers[i].backoff = pause == .zero ? .seconds(10) : min(pause * 2, .seconds(300))
        if containers[i].state["terminated"] != nil { containers[i].lastState = containers[i].state }
        if pause > .zero {
            let name = containers[i].name
            let (pod, agent) = (self.pod, self.agent)
            Task { await agent.event(pod, type: "Warning", reason: "BackOff", message: "Back-off restarting failed container \(name) in pod \(pod.name)") }
            containers[i].state = ["waiting": ["reason": "CrashLoopBackOff",
                                               "message": .string("back-off \(Int(pause.components.seconds))s restarting failed container=\(name) pod=\(self.name)_\(namespace)(\(uid))")]]
        }
        containers[i].restartTask = Task { [weak self] in
            if pause > .zero { try? await Task.sleep(for: pause) }
            guard !Task.isCancelled, let self else { return }
            await self.restart(i)
        }
    }

    func restart(_ i: Int) async {
        guard !stopped, containers[i].pid == nil else { return }
        containers[i].restartCount += 1
        startContainer(i)
        await report()
    }

    /// The pod is gone from the API (or this node): SIGTERM to every container's process group,
    /// SIGKILL after the grace period, then the sandbox goes.
    func stop(grace given: Int64? = nil) async {
        stopped = true
        await starting?.value
        for c in containers { c.restartTask?.cancel(); c.probeTask?.cancel() }
        let grace = min(max(given ?? pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0), 30)
        let pids = containers.compactMap(\.pid)
        for pid in pids { kill(-pid, SIGTERM) }
        if !pids.isEmpty {
            let running = containers.filter { $0.pid != nil }.map(\.name).joined(separator: ", ")
            await agent.event(pod, type: "Normal", reason: "Killing", message: "Stopping container \(running)")
        }
        let deadline = ContinuousClock.now + .seconds(grace)
        while containers.contains(where: { $0.pid != nil }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for c in containers { if let pid = c.pid { kill(-pid, SIGKILL) } }
        guard sandbox != nil else { return }
        let name = Self.sandboxName(pod)
        do {
            try await agent.onNetworkThread { network in try network.removePod(name, killProcesses: true) }
        } catch {
            logger.error("removing sandbox \(name): \(error)")
        }
    }

    // MARK: taking over from an earlier agent

    var runtimeRecord: String { "\(logDirectory)/runtime.json" }

    /// Which processes run this pod's containers (pid, kernel start time, restarts), beside the
    /// logs, so an agent that restarts can take them over instead of killing them.
    func saveRuntime() {
        var record: JSON = [:]
        for c in containers {
            var entry: JSON = ["restartCount": .int(Int64(c.restartCount))]
            if let pid = c.pid, let start = c.processStart {
                entry["pid"] = .int(Int64(pid))
                entry["processStart"] = .string(String(start))
                entry["startedAt"] = c.state["running"]?["startedAt"] ?? .string(Timestamp.now())
            }
            record[c.name] = entry
        }
        let file: JSON = ["sandbox": .string(Self.sandboxName(pod)), "containers": record]
        try? FileSystem.writeFile(runtimeRecord, file.text())
    }

    /// Takes over a sandbox and the container processes an earlier run of this agent left: each
    /// recorded process still alive (same pid, same kernel start time) is watched through a pidfd;
    /// containers whose process is gone start again. False when nothing is left to adopt.
    func adopt(_ existing: PodSandbox) -> Bool {
        guard let text = try? FileSystem.readFile(runtimeRecord), let record = try? JSON.parse(Array(text.utf8)) else { return false }
        var alive: [(Int, pid_t)] = []
        for (i, c) in containers.enumerated() {
            guard let entry = record[path: "containers"]?[c.name] else { continue }
            containers[i].restartCount = Int(entry["restartCount"]?.int ?? 0)
            guard let pid = entry["pid"]?.int.map({ pid_t($0) }), let start = entry["processStart"]?.string.flatMap({ UInt64($0) }),
                  ProcessReaper.startTime(of: pid) == start else { continue }
            alive.append((i, pid))
            containers[i].pid = pid
            containers[i].processStart = start
            containers[i].state = ["running": ["startedAt": entry["startedAt"] ?? .string(Timestamp.now())]]
            containers[i].everStarted = true
            containers[i].startedAt = .now
            containers[i].ready = c.spec["readinessProbe"] == nil
            containers[i].startupDone = c.spec["startupProbe"] == nil
        }
        guard !alive.isEmpty else { return false }
        sandbox = existing
        try? FileSystem.makeDirectories(logDirectory)
        let environment = { (spec: JSON) in self.agent.environment(for: self.pod, container: spec, podIP: existing.ip.description) }
        for (i, pid) in alive {
            let name = containers[i].name
            let watched = ProcessReaper.adopt(pid) { [weak self] _ in
                guard let self else { return }
                Task { await self.exited(name, nil, pid: pid) }
            }
            if !watched { containers[i].pid = nil }
            startProbes(i, ip: existing.ip.description, namespace: NetworkNamespace(existing.namespace), environment: environment(containers[i].spec))
            logger.info("adopted \(name), pid \(pid)")
        }
        for i in containers.indices where containers[i].pid == nil {
            containers[i].restartCount += containers[i].everStarted ? 1 : 0
            startContainer(i)
        }
        saveRuntime()
        return true
    }

    // MARK: probes

    /// Runs the container's probes as kubelet does: the startup probe alone until it passes,
    /// then liveness and readiness side by side, each after its initial delay, every period.
    /// Readiness flips `ready` after successThreshold passes / failureThreshold failures;
    /// liveness or startup failing failureThreshold times in a row kills the container, which
    /// then restarts by its policy.
    func startProbes(_ i: Int, ip: String, namespace: NetworkNamespace, environment: [String: String]) {
        let spec = containers[i].spec
        let startup = Probe(spec["startupProbe"], container: spec)
        let liveness = Probe(spec["livenessProbe"], container: spec)
        let readiness = Probe(spec["readinessProbe"], container: spec)
        guard startup != nil || liveness != nil || readiness != nil, let pid = containers[i].pid else { return }
        let reaper = agent.reaper
        let loop = { @Sendable (probe: Probe, kind: String) async -> Bool in
            // Returns false when the probe gave up on the container (it is being killed).
            try? await Task.sleep(for: probe.initialDelay)
            var (passes, failures) = (0, 0)
            var verdict: Bool?
            while !Task.isCancelled {
                let failure = await probe.run(ip: ip, namespace: namespace, environment: environment, reaper: reaper)
                if Task.isCancelled { return false }
                if let failure {
                    (passes, failures) = (0, failures + 1)
                    await self.probeFailed(i, pid: pid, kind: kind, message: failure)
                    if failures >= probe.failureThreshold && verdict != false {
                        verdict = false
                        if kind == "Readiness" { await self.setReady(i, pid: pid, false) } else {
                            await self.unhealthy(i, pid: pid, kind: kind)
                            return false
                        }
                    }
                } else {
                    (passes, failures) = (passes + 1, 0)
                    if passes >= probe.successThreshold && verdict != true {
                        verdict = true
                        if kind == "Readiness" { await self.setReady(i, pid: pid, true) }
                        if kind == "Startup" { await self.startupPassed(i, pid: pid); return true }
                    }
                }
                try? await Task.sleep(for: probe.period)
            }
            return false
        }
        containers[i].probeTask = Task {
            if let startup, await loop(startup, "Startup") == false { return }
            await withTaskGroup(of: Void.self) { group in
                if let liveness { group.addTask { _ = await loop(liveness, "Liveness") } }
                if let readiness { group.addTask { _ = await loop(readiness, "Readiness") } }
            }
        }
    }

    /// Probe results count only for the instance they were started for.
    func current(_ i: Int, _ pid: pid_t) -> Bool { !stopped && containers[i].pid == pid }

    func setReady(_ i: Int, pid: pid_t, _ ready: Bool) async {
        guard current(i, pid), containers[i].ready != ready else { return }
        containers[i].ready = ready
        await report()
    }

    func startupPassed(_ i: Int, pid: pid_t) async {
        guard current(i, pid) else { return }
        containers[i].startupDone = true
        if containers[i].spec["readinessProbe"] == nil { containers[i].ready = true }
        await report()
    }

    func probeFailed(_ i: Int, pid: pid_t, kind: String, message: String) async {
        guard current(i, pid) else { return }
        await agent.event(pod, type: "Warning", reason: "Unhealthy", message: "\(kind) probe failed: \(message)")
    }

    /// Liveness or startup gave up: SIGTERM, SIGKILL after the grace period; the exit then
    /// restarts the container by its policy.
    func unhealthy(_ i: Int, pid: pid_t, kind: String) async {
        guard current(i, pid) else { return }
        let name = containers[i].name
        await agent.event(pod, type: "Normal", reason: "Killing",
                          message: "Container \(name) failed \(kind.lowercased()) probe, will be restarted")
        kill(-pid, SIGTERM)
        let grace = min(max(pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0), 30)
        Task {
            try? await Task.sleep(for: .seconds(grace))
            if self.current(i, pid) { kill(-pid, SIGKILL) }
        }
    }

    // MARK: status

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
                logger.warning("status: \(error)")
            }
        } while reportAgain
    }

    func status() -> JSON {
        let policy = pod[path: "spec.restartPolicy"]?.string ?? "Always"
        let exits = containers.compactMap { $0.state["terminated"]?["exitCode"]?.int }
        let allEnded = !containers.isEmpty && exits.count == containers.count
        let phase: String
        if allEnded && policy == "Never" {
            phase = exits.allSatisfy { $0 == 0 } ? "Succeeded" : "Failed"
        } else if allEnded && policy == "OnFailure" && exits.allSatisfy({ $0 == 0 }) {
            phase = "Succeeded"
        } else if !containers.isEmpty && containers.allSatisfy(\.everStarted) {
            phase = "Running"
        } else {
            phase = "Pending"
        }
        let ready = !containers.isEmpty && containers.allSatisfy { $0.ready && $0.pid != nil }
        let previous = pod[path: "status.conditions"]?.array ?? []
        func condition(_ type: String, _ value: Bool, reason: String? = nil) -> JSON {
            let status = value ? "True" : "False"
            let old = previous.first { $0["type"]?.string == type }
            let since = old?["status"]?.string == status ? (old?["lastTransitionTime"] ?? .string(Timestamp.now())) : .string(Timestamp.now())
            var c: JSON = ["type": .string(type), "status": .string(status), "lastProbeTime": .null, "lastTransitionTime": since]
            if let reason, !value { c["reason"] = .string(reason) }
            return c
        }
        let notReady = containers.filter { !($0.ready && $0.pid != nil) }.map(\.name)
        var conditions: [JSON] = [
            condition("PodReadyToStartContainers", sandbox != nil),
            condition("Initialized", true),
            condition("Ready", ready, reason: "ContainersNotReady"),
            condition("ContainersReady", ready, reason: "ContainersNotReady"),
            condition("PodScheduled", true),
        ]
        if !ready, !notReady.isEmpty {
            for index in [2, 3] { conditions[index]["message"] = .string("containers with unready status: [\(notReady.joined(separator: " "))]") }
        }
        var status: JSON = [
            "phase": .string(phase),
            "conditions": .array(conditions),
            "hostIP": .string(agent.nodeIP),
            "hostIPs": [["ip": .string(agent.nodeIP)]],
            "startTime": .string(startTime ?? Timestamp.now()),
            "qosClass": "BestEffort",
        ]
        if let sandbox {
            status["podIP"] = .string(sandbox.ip.description)
            status["podIPs"] = [["ip": .string(sandbox.ip.description)]]
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

    /// Kubernetes' `$(VAR)` references in command and args, from the container's environment;
    /// `$$` is a literal `$`, unknown references stay as written.
    static func expand(_ text: String, _ environment: [String: String]) -> String {
        guard text.contains("$") else { return text }
        var out = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            out += rest[..<dollar]
            let after = rest[rest.index(after: dollar)...]
            if after.hasPrefix("$") {
                out += "$"
                rest = after.dropFirst()
            } else if after.hasPrefix("("), let close = after.firstIndex(of: ")"),
                      let value = environment[String(after[after.index(after: after.startIndex)..<close])] {
                out += value
                rest = after[after.index(after: close)...]
            } else {
                out += "$"
                rest = after
            }
        }
        return out + rest
    }
}
