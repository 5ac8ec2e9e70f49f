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
        var terminalEnd: Int32 = -1  // the agent's copy of a terminal's secondary end: closed once spawned
        defer { if terminalEnd >= 0 { close(terminalEnd) } }
        if spec["tty"]?.bool == true {
            (relay, terminalEnd) = try terminal(for: spec, name: name, log: log, options: &options)
        } else if spec["stdin"]?.bool == true {
            let stdin = try StdinRelay(path: StdinRelay.socketPath(logDirectory: logDirectory, container: name), once: spec["stdinOnce"]?.bool == true)
            relay = stdin
            options.stdin = stdin.readEnd
        } else {
            options.stdin = -1
        }
        do {
            if spec["tty"]?.bool != true {
                options.stdout = log.raw
                options.stderr = log.raw
            }
            options.newSession = true
            options.workingDirectory = spec["workingDir"]?.string
            let mounts = try mounts(of: spec)
            own(mounts, for: identity)
            try apply(mounts, to: &options, container: name, workingDir: spec["workingDir"]?.string)
            if mountsToken { options.bindMounts.append((tokenDirectory, Self.tokenMountPath, true)) }
            // The container's own hostname; kemu's state out of sight; its user, not root.
            options.hostname = hostname
            options.hiddenPaths = agent.config.hiddenPaths
            options.identity = identity
            options.nice = Self.niceness(Self.qosClass(pod))
            options.cgroupFiles = limitGroup(spec, name: name)?.procsFiles ?? []
            let pid = try agent.reaper.spawn(argv, options, onExit: onExit)
            logger.info("started \(name) as pid \(pid): \(argv.joined(separator: " "))")
            return (pid, relay, environment)
        } catch {
            relay?.close()
            throw error
        }
    }
}

/// Resource limits, as kubelet enforces them: a container with `limits.memory` or `limits.cpu`
/// runs in a control group of its own (`<uid>_<container>` in the node's) with that memory limit
/// (the kernel's OOM killer past it: the container ends OOMKilled) and a CFS quota. Where the
/// machine has no control groups kemu can use, limits are admitted and scheduled on but not held.
extension PodWorker {
    func limitGroup(_ spec: JSON, name: String) -> ContainerCgroup? {
        let memory = Quantity.milli(spec[path: "resources.limits.memory"]).map { max($0 / 1000, 1) }
        let cpu = Quantity.milli(spec[path: "resources.limits.cpu"])
        guard memory != nil || cpu != nil, let tree = agent.cgroups else { return nil }
        do {
            return try tree.container("\(uid)_\(name)", memoryLimit: memory, cpuLimitMilli: cpu)
        } catch {
            logger.warning("control group for \(name): \(error); it runs without its limits")
            return nil
        }
    }

    /// Removes a container's control group once it has ended (what it left running is killed);
    /// true if the OOM killer killed any of its processes.
    func releaseCgroup(_ name: String) -> Bool {
        guard let group = agent.cgroups?.existing("\(uid)_\(name)"), let dir = group.directories.first, FileSystem.exists(dir) else { return false }
        let killed = group.oomKills > 0
        group.remove()
        return killed
    }
}

/// `tty: true` (`kubectl run -it`): the container's stdin, stdout and stderr are one terminal of
/// its own; what it prints on it goes to its log (so attach and logs see it), and with `stdin`
/// the relay writes into it (the terminal echoes, as a real one does).
extension PodWorker {
    func terminal(for spec: JSON, name: String, log: FileDescriptor, options: inout Spawn.Options) throws -> (StdinRelay?, Int32) {
        let (primary, secondary): (Int32, Int32)
        do {
            (primary, secondary) = try Terminal.openPair()
        } catch {
            throw ContainerError(reason: "RunContainerError", message: "cannot allocate a terminal: \(error)")
        }
        Terminal.setSize(primary, rows: 24, columns: 80)  // a terminal's usual size until told otherwise
        options.stdin = secondary
        options.stdout = secondary
        options.stderr = secondary
        options.controllingTerminal = true
        let output = dup(log.raw), reader = primary
        startThread(named: "kemu-tty-log") {
            var buffer = [UInt8](repeating: 0, count: 32 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }  // EIO: the container's side is closed
                _ = buffer.withUnsafeBytes { write(output, $0.baseAddress, n) }
            }
            close(reader)
            close(output)
        }
        guard spec["stdin"]?.bool == true else { return (nil, secondary) }
        do {
            return (try StdinRelay(path: StdinRelay.socketPath(logDirectory: logDirectory, container: name),
                                   once: spec["stdinOnce"]?.bool == true, terminal: dup(primary)), secondary)
        } catch {
            close(secondary)
            throw error
        }
    }
}
