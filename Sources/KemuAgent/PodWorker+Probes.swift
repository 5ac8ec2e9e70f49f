import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// Startup, liveness and readiness probes of the running containers.
extension PodWorker {
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
            var verdicts = ProbeVerdicts(probe)
            while !Task.isCancelled {
                let failure = await probe.run(ip: ip, namespace: namespace, environment: environment, reaper: reaper, container: pid)
                if Task.isCancelled { return false }
                if let failure { await self.probeFailed(i, pid: pid, kind: kind, message: failure) }
                switch verdicts.record(passed: failure == nil) {
                case false?:
                    if kind == "Readiness" { await self.setReady(i, pid: pid, false) } else {
                        await self.unhealthy(i, pid: pid, kind: kind)
                        return false
                    }
                case true?:
                    if kind == "Readiness" { await self.setReady(i, pid: pid, true) }
                    if kind == "Startup" { await self.startupPassed(i, pid: pid); return true }
                case nil:
                    break
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
}
