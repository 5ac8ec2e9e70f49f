import Foundation
import Glibc
import KemuAPI
import KemuSystem

extension PodWorker {
    /// Starts a container's process in the sandbox: the image's argv under Kubernetes' rules, its
    /// environment, user, mounts, niceness, its log file as stdout and stderr, and a stdin relay
    /// when the spec asks for stdin (the caller starts it serving, or closes it on failure).
    func spawn(_ spec: JSON, name: String, configured: [(name: String, value: String)],
               onExit: @escaping ProcessReaper.Handler) throws -> (pid: pid_t, stdin: StdinRelay?, environment: [String: String]) {
        guard let sandbox else { throw ContainerError(reason: "CreateContainerError", message: "the pod has no sandbox") }
        var environment = agent.environment(for: pod, container: spec, podIP: sandbox.ip.description, configured: configured)
        let argv = try agent.config.images.argv(
            image: spec["image"]?.string ?? "",
            command: spec["command"]?.array?.compactMap(\.string).map { Self.expand($0, environment) },
            args: spec["args"]?.array?.compactMap(\.string).map { Self.expand($0, environment) },
            path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        let identity = try identity(of: spec)
        if !(spec["env"]?.array ?? []).contains(where: { $0["name"]?.string == "HOME" }) { environment["HOME"] = Self.home(of: identity) }
        let log = try FileDescriptor(opening: "\(logDirectory)/\(name).log", flags: O_WRONLY | O_CREAT | O_APPEND)
        var options = Spawn.Options(namespace: NetworkNamespace(sandbox.namespace), environment: environment)
        var relay: StdinRelay?
        if spec["stdin"]?.bool == true {
            let stdin = try StdinRelay(path: StdinRelay.socketPath(logDirectory: logDirectory, container: name), once: spec["stdinOnce"]?.bool == true)
            relay = stdin
            options.stdin = stdin.readEnd
        } else {
            options.stdin = -1
        }
        do {
            options.stdout = log.raw
            options.stderr = log.raw
            options.newSession = true
            options.workingDirectory = spec["workingDir"]?.string
            let mounts = try mounts(of: spec)
            own(mounts, for: identity)
            apply(mounts, to: &options, workingDir: spec["workingDir"]?.string)
            if mountsToken { options.bindMounts.append((tokenDirectory, Self.tokenMountPath)) }
            // The container's own hostname; kemu's state out of sight; its user, not root.
            options.hostname = hostname
            options.hiddenPaths = agent.config.hiddenPaths
            options.identity = identity
            options.nice = Self.niceness(Self.qosClass(pod))
            let pid = try agent.reaper.spawn(argv, options, onExit: onExit)
            logger.info("started \(name) as pid \(pid): \(argv.joined(separator: " "))")
            return (pid, relay, environment)
        } catch {
            relay?.close()
            throw error
        }
    }
}
