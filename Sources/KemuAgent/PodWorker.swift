import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
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
    /// The init containers (PodWorker+Init.swift); `initialized` once the last is done.
    var initContainers: [Container] = []
    var initialized = true
    var initFailed = false
    var stopped = false
    var startTime: String?
    /// The status last written, to write only changes.
    var reported: JSON?
    /// A status write is under way / another is wanted after it. Writes go one at a time, each
    /// with the state of the moment it starts, so the last one written is the newest (the actor
    /// is re-entered while a write waits for the server).
    var reporting = false
    var reportAgain = false
    /// A failed status write waits to be retried (PodWorker+Status.swift).
    var retryingReport = false
    var reportRetryPause: Duration = .milliseconds(500)
    /// Renews the ServiceAccount token (PodWorker+ServiceAccount.swift).
    var tokenTask: Task<Void, Never>?
    /// Keeps written volumes current; their files' modes; projected tokens until renewal
    /// (PodWorker+VolumeFiles.swift).
    var volumeTask: Task<Void, Never>?
    var volumeModes: [String: [String: mode_t]] = [:]
    var projectedTokens: [String: (token: [UInt8], renew: ContinuousClock.Instant)] = [:]
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
        var backoff = RestartBackoff()
        var startedAt: ContinuousClock.Instant?
        var restartTask: Task<Void, Never>?
        /// The pause before ConfigMaps and Secrets are looked for again (nil: not waiting on them).
        var configRetry: Duration?
        /// The probes of the running instance; cancelled when it ends.
        var probeTask: Task<Void, Never>?
        /// The startup probe passed (or there is none): liveness and readiness probes run.
        var startupDone = true
        /// The kernel's start time of `pid`, recorded so a later agent knows it is the same process.
        var processStart: UInt64?
        /// Its stdin, when the spec asks for one (attach feeds it).
        var stdin: StdinRelay?
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
        initContainers = (pod[path: "spec.initContainers"]?.array ?? []).map { Container(name: $0["name"]?.string ?? "", spec: $0) }
        if !initContainers.isEmpty {
            initialized = false
            for i in containers.indices { containers[i].state = ["waiting": ["reason": "PodInitializing"]] }
        }
        // A sandbox left by an earlier run of this agent: take over its running processes.
        if let existing = try? await agent.onNetworkThread({ [pod] network in try network.pod(Self.sandboxName(pod)) }),
           await adopt(existing) {
            // Its init containers ran under the earlier agent (app containers run only after them).
            initialized = true
            for i in initContainers.indices {
                initContainers[i].state = ["terminated": ["exitCode": 0, "reason": "Completed"]]
                initContainers[i].ready = true
            }
            if mountsToken { renewToken(after: .zero) }  // how old the files are is unknown: renew now
            if !writtenVolumes.isEmpty { keepVolumesCurrent() }
            await report()
            return
        }
        // Its turn among the pods this node is starting (a burst waits rather than taking the machine).
        await agent.starts.enter()
        defer { agent.starts.leave() }
        if stopped { return }
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
        if mountsToken, !(await mountServiceAccount()) { return }
        if !(await setUpVolumes()) { return }
        if !initialized {
            await report()
            guard await runInitContainers() else {
                await report()
                return
            }
        }
        for i in containers.indices { await startContainer(i) }
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
        // Someone else changed the readiness this worker reported (the node lifecycle controller
        // while this node was cut off): report the truth again.
        func ready(_ status: JSON?) -> String? {
            status?["conditions"]?.array?.first { $0["type"]?.string == "Ready" }?["status"]?.string
        }
        if let reported, ready(pod["status"]) != ready(reported) {
            self.reported = nil
            await report()
        }
    }

    /// Reads what the container's environment needs from ConfigMaps and Secrets, then starts
    /// it; a missing one holds it in CreateContainerConfigError and is looked for again (2 s,
    /// doubling to 10 s).
    func startContainer(_ i: Int) async {
        guard !stopped, sandbox != nil, containers[i].pid == nil else { return }
        switch await configuredVariables(containers[i].spec) {
        case .success(let configured):
            containers[i].configRetry = nil
            startContainer(i, configured: configured)
        case .failure(let error):
            guard !stopped, containers[i].pid == nil else { return }
            let first = containers[i].state["waiting"]?["reason"]?.string != error.reason
            containers[i].state = ["waiting": ["reason": .string(error.reason), "message": .string(error.message)]]
            if first {
                let (pod, agent) = (self.pod, self.agent)
                Task { await agent.event(pod, type: "Warning", reason: "Failed", message: "Error: \(error.message)") }
            }
            let pause = containers[i].configRetry.map { min($0 * 2, .seconds(10)) } ?? .seconds(2)
            containers[i].configRetry = pause
            containers[i].restartTask = Task { [weak self] in
                try? await Task.sleep(for: pause)
                guard !Task.isCancelled, let self else { return }
                await self.startContainer(i)
                await self.report()
            }
        }
    }

    func startContainer(_ i: Int, configured: [(name: String, value: String)]) {
        guard !stopped, sandbox != nil, containers[i].pid == nil else { return }
        let spec = containers[i].spec
        let name = containers[i].name
        do {
            let started = try spawn(spec, name: name, configured: configured) { [weak self] exit in
                guard let self else { return }
                Task { await self.exited(name, exit) }
            }
            let pid = started.pid
            containers[i].pid = pid
            containers[i].stdin = started.stdin
            started.stdin?.startServing()
            containers[i].processStart = ProcessReaper.startTime(of: pid)
            containers[i].everStarted = true
            if let hook = spec[path: "lifecycle.postStart"] {
                containers[i].state = ["waiting": ["reason": "ContainerCreating"]]
                runPostStart(i, pid: pid, hook: hook, environment: started.environment)
            } else {
                markRunning(i, pid: pid, environment: started.environment)
            }
            saveRuntime()
            let (pod, agent) = (self.pod, self.agent)
            Task { await agent.event(pod, type: "Normal", reason: "Started", message: "Started container \(name)") }
        } catch let error as ContainerError {
            containers[i].state = ["waiting": ["reason": .string(error.reason), "message": .string(error.message)]]
            let pod = self.pod
            Task { await agent.event(pod, type: "Warning", reason: error.reason == "ErrImagePull" ? "Failed" : "FailedStart", message: error.message) }
            if error.reason == "RunContainerError" { scheduleRestart(i, failed: true) }
        } catch {
            logger.error("starting \(name): \(error)")
            containers[i].state = ["waiting": ["reason": "RunContainerError", "message": .string("\(error)")]]
            let (pod, agent) = (self.pod, self.agent)
            Task { await agent.event(pod, type: "Warning", reason: "Failed", message: "Error: cannot start container \(name): \(error)") }
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
        if releaseCgroup(name), exit != .exited(0) { terminated["reason"] = "OOMKilled" }
        containers[i].pid = nil
        containers[i].stdin?.close()
        containers[i].stdin = nil
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
        let pause = containers[i].backoff.pause(ranFor: containers[i].startedAt.map { $0.duration(to: .now) })
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
        await startContainer(i)
        await report()
    }

    /// The pod is gone from the API (or this node): the preStop sleep hooks (`lifecycle.preStop.
    /// sleep.seconds`, the longest, within the grace period: the time for every proxy to stop
    /// sending it connections), then SIGTERM to every container's process group, SIGKILL when the
    /// grace period is over, then the sandbox goes.
    func stop(grace given: Int64? = nil) async {
        stopped = true
        await starting?.value
        for c in containers { c.restartTask?.cancel(); c.probeTask?.cancel() }
        let grace = min(max(given ?? pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0), 30)
        let deadline = ContinuousClock.now + .seconds(grace)
        let pids = containers.compactMap(\.pid) + initContainers.compactMap(\.pid)
        if !pids.isEmpty {
            let running = containers.filter { $0.pid != nil }.map(\.name).joined(separator: ", ")
            await agent.event(pod, type: "Normal", reason: "Killing", message: "Stopping container \(running)")
            let hook = containers.filter { $0.pid != nil }.compactMap { $0.spec[path: "lifecycle.preStop.sleep.seconds"]?.int }.max() ?? 0
            if hook > 0 { try? await Task.sleep(for: .seconds(min(hook, grace))) }
        }
        for pid in pids { kill(-pid, SIGTERM) }
        while containers.contains(where: { $0.pid != nil }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for c in containers { if let pid = c.pid { kill(-pid, SIGKILL) } }
        for c in containers + initContainers { _ = releaseCgroup(c.name) }
        removePodFiles()
        guard sandbox != nil else { return }
        let name = Self.sandboxName(pod)
        do {
            try await agent.onNetworkThread { network in try network.removePod(name, killProcesses: true) }
        } catch {
            logger.error("removing sandbox \(name): \(error)")
        }
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

/// kubelet's CrashLoopBackOff: the first restart at once, then pauses of 10 s doubling to 5 min;
/// a container that ran 10 min before it ended starts over.
struct RestartBackoff: Sendable, Equatable {
    static let initial: Duration = .seconds(10)
    static let cap: Duration = .seconds(300)
    static let resetAfter: Duration = .seconds(600)
    /// The pause the next restart waits.
    private(set) var next: Duration = .zero

    /// The pause before this restart of a container that ran `ranFor` (nil: never started).
    mutating func pause(ranFor: Duration?) -> Duration {
        if let ranFor, ranFor > Self.resetAfter { next = .zero }
        let pause = next
        next = pause == .zero ? Self.initial : min(pause * 2, Self.cap)
        return pause
    }
}
