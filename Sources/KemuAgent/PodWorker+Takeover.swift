import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// Taking over from an earlier run of the agent: the runtime record beside the logs, and adoption.
extension PodWorker {
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
    func adopt(_ existing: PodSandbox) async -> Bool {
        guard let text = try? FileSystem.readFile(runtimeRecord), let record = try? JSON.parse(Array(text.utf8)) else { return false }
        var alive: [(Int, pid_t)] = []
        for (i, c) in containers.enumerated() {
            guard let entry = record[path: "containers"]?[c.name] else { continue }
            containers[i].restartCount = Int(entry["restartCount"]?.int ?? 0)
            guard let pid = entry["pid"]?.int.map({ pid_t($0) }), let start = entry["processStart"]?.string.flatMap({ UInt64($0) }),
                  ProcessReaper.startTime(of: pid) == start else {
                // It ran and died while no agent watched (a crashed node): its next start is a restart.
                if entry["pid"] != nil { containers[i].restartCount += 1 }
                continue
            }
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
            await startContainer(i)
        }
        saveRuntime()
        return true
    }
}
