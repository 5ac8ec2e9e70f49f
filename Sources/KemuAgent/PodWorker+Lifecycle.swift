import Glibc
import KemuAPI
import KemuSystem

/// A container's start as kubelet completes it: its `lifecycle.postStart` hook (exec inside the
/// container, httpGet to the pod, or sleep) runs first, the container shown as ContainerCreating
/// meanwhile; a failed hook is a FailedPostStartHook event and the container is killed, then
/// restarted by its policy. Only then is it running, with its probes.
extension PodWorker {
    func markRunning(_ i: Int, pid: pid_t, environment: [String: String]) {
        let spec = containers[i].spec
        containers[i].state = ["running": ["startedAt": .string(Timestamp.now())]]
        containers[i].startedAt = .now
        containers[i].ready = spec["readinessProbe"] == nil
        containers[i].startupDone = spec["startupProbe"] == nil
        if let sandbox {
            startProbes(i, ip: sandbox.ip.description, namespace: NetworkNamespace(sandbox.namespace), environment: environment)
        }
    }

    func runPostStart(_ i: Int, pid: pid_t, hook: JSON, environment: [String: String]) {
        guard let sandbox else { return }
        let (ip, namespace, reaper) = (sandbox.ip.description, NetworkNamespace(sandbox.namespace), agent.reaper)
        let spec = containers[i].spec
        // Upstream bounds a hook by nothing shorter than the grace period; kemu's is at most 30 s.
        let limit = Duration.seconds(min(max(pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 1), 30))
        Task {
            var failure: String?
            if let seconds = hook[path: "sleep.seconds"]?.int {
                try? await Task.sleep(for: min(.seconds(max(seconds, 0)), limit))
            } else if var action = Probe(hook, container: spec) {
                action.timeout = limit
                failure = await action.run(ip: ip, namespace: namespace, environment: environment, reaper: reaper, container: pid)
            } else {
                failure = "the hook has no exec, httpGet or sleep action"
            }
            await self.postStartDone(i, pid: pid, hook: hook, failure: failure, environment: environment)
        }
    }

    func postStartDone(_ i: Int, pid: pid_t, hook: JSON, failure: String?, environment: [String: String]) async {
        guard current(i, pid) else { return }
        if let failure {
            let command = hook[path: "exec.command"]?.array?.compactMap(\.string)
            let what = command.map { "Exec lifecycle hook ([\($0.joined(separator: " "))])" } ?? (hook["httpGet"] != nil ? "HTTP lifecycle hook" : "Lifecycle hook")
            let message = "\(what) for Container \"\(containers[i].name)\" in Pod \"\(name)_\(namespace)(\(uid))\" failed - error: \(failure)"
            await agent.event(pod, type: "Warning", reason: "FailedPostStartHook", message: message)
            kill(-pid, SIGKILL)  // exited() records it and restarts it by its policy
            return
        }
        markRunning(i, pid: pid, environment: environment)
        await report()
    }
}
