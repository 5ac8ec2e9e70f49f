import Foundation
import Glibc
import KemuAPI
import KemuSystem

/// Background processes of a cluster: started detached (own session, stdout/stderr to a log),
/// recorded by pid file, stopped by that pid only.
public enum Daemon {
    public static func start(_ name: String, _ files: ClusterFiles, _ argv: [String], namespace: NetworkNamespace?) throws -> pid_t {
        let log = try FileDescriptor(opening: files.log(name), flags: O_WRONLY | O_CREAT | O_APPEND)
        let null = try FileDescriptor(opening: "/dev/null", flags: O_RDONLY)
        var options = Spawn.Options(namespace: namespace)
        options.privateMounts = false  // agents create pod namespaces: their mounts must be the host's
        options.stdin = null.raw
        options.stdout = log.raw
        options.stderr = log.raw
        options.newSession = true
        // The API server first when the machine is short of CPU (pods run at +5/+10): heartbeats
        // and watches keep being answered through a burst of starting pods. The niceness reaches
        // the session's autogroup (see Spawn.Options.nice): with the thread's alone, a `get` took
        // up to 3 s in a storm of 1,000 pods, each pod's session an equal of the server's.
        if name == "server" { options.nice = -10 }
        let pid = try Spawn.spawn(argv, options)
        try FileSystem.writeFile(files.pidFile(name), "\(pid)\n")
        // How to start it again, for the supervisor.
        let spec: JSON = ["argv": .array(argv.map { .string($0) }), "namespace": namespace.map { .string($0.name) } ?? .null]
        try FileSystem.writeFile(specFile(name, files), spec.text(), mode: 0o600)
        return pid
    }

    static func specFile(_ name: String, _ files: ClusterFiles) -> String { "\(files.state)/\(name).spec.json" }

    /// Every daemon this cluster has started (the supervisor restarts those whose pid file says
    /// they should run).
    public static func specs(_ files: ClusterFiles) -> [String] {
        FileSystem.list(files.state).filter { $0.hasSuffix(".spec.json") }.map { String($0.dropLast(".spec.json".count)) }.sorted()
    }

    /// Starts a daemon again as it was started last.
    static func restart(_ name: String, _ files: ClusterFiles) throws -> pid_t {
        let spec = try JSON.parse(Array(try FileSystem.readFile(specFile(name, files)).utf8))
        let argv = (spec["argv"]?.array ?? []).compactMap(\.string)
        guard !argv.isEmpty else { throw KemuError(.invalidState, "\(specFile(name, files)) has no argv") }
        return try start(name, files, argv, namespace: spec["namespace"]?.string.map(NetworkNamespace.init))
    }

    /// Stops a daemon on purpose: its pid file goes first, so the supervisor leaves it stopped.
    /// Returns the pid signalled, nil when it was not running.
    @discardableResult
    public static func stop(_ name: String, _ files: ClusterFiles, signal: Int32 = SIGTERM) -> pid_t? {
        let pid = pid(name, files)
        try? FileSystem.removeFile(files.pidFile(name))
        guard let pid, runs(name, pid, files) else { return nil }
        kill(pid, signal)
        if signal != SIGSTOP { reap(name, pid, files) }
        return pid
    }

    /// The daemon's pid while it runs what was started (see `runs`), nil otherwise.
    public static func running(_ name: String, _ files: ClusterFiles) -> pid_t? {
        pid(name, files).flatMap { runs(name, $0, files) ? $0 : nil }
    }

    public static func pid(_ name: String, _ files: ClusterFiles) -> pid_t? {
        (try? FileSystem.readFile(files.pidFile(name))).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Whether `pid` still runs kemu (a recycled pid belongs to someone else: never signal it):
    /// a binary named kemu, or this very binary whatever its name (daemons are started with
    /// its absolute path: a copy installed as kemu-dev must still stop the cluster it started).
    public static func isKemu(_ pid: pid_t) -> Bool {
        guard let cmdline = try? FileSystem.readFile("/proc/\(pid)/cmdline") else { return false }
        return cmdline.split(separator: "\0").first.map { $0.hasSuffix("/kemu") || $0 == "kemu" || $0 == Executable.path } ?? false
    }

    /// Whether `pid` still runs what this cluster started as `name`: kemu (see `isKemu`), or the
    /// very binary its spec names, whatever it is called (a cluster brought up by a copy named
    /// kemu-dev and taken down by kemu: its supervisor must not be left running).
    public static func runs(_ name: String, _ pid: pid_t, _ files: ClusterFiles) -> Bool {
        if isKemu(pid) { return true }
        guard let spec = try? FileSystem.readFile(specFile(name, files)),
              let started = (try? JSON.parse(Array(spec.utf8)))?["argv"]?.array?.first?.string,
              let cmdline = try? FileSystem.readFile("/proc/\(pid)/cmdline") else { return false }
        return cmdline.split(separator: "\0").first.map { String($0) == started } ?? false
    }

    /// Waits until the daemon `pid` has written `file`; throws with its log's tail if it exits
    /// first or takes longer than `seconds`.
    public static func waitFor(file: String, pid: pid_t, name: String, files: ClusterFiles, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !FileSystem.exists(file) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw KemuError(.invalidState, "kemu \(name) exited:\n" + tail(files.log(name)))
            }
            guard Date() < deadline else { throw KemuError(.timeout, "kemu \(name) did not start within \(Int(seconds)) s (log \(files.log(name)))") }
            usleep(5000)
        }
    }

    /// The last lines of a log, indented, for an error message.
    public static func tail(_ path: String, lines: Int = 15) -> String {
        ((try? FileSystem.readFile(path)) ?? "").split(separator: "\n").suffix(lines).map { "  " + $0 }.joined(separator: "\n")
    }

    /// Waits (up to 5 s) until a daemon this command signalled is gone, so a start that follows
    /// does not meet the old one on its ports.
    public static func reap(_ name: String, _ pid: pid_t, _ files: ClusterFiles) {
        let deadline = Date().addingTimeInterval(5)
        while runs(name, pid, files), !isZombie(pid), Date() < deadline {
            _ = waitpid(pid, nil, WNOHANG)  // ours (an experiment started it): reaped here
            usleep(5000)
        }
    }

    public static func isZombie(_ pid: pid_t) -> Bool {
        ((try? FileSystem.readFile("/proc/\(pid)/stat")) ?? "").split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    /// SIGTERM to every daemon with a pid file (agents first, the server last), SIGKILL to any
    /// still running after 5 s. Only pids that still run kemu are signalled. Returns the names of
    /// the daemons signalled.
    @discardableResult
    public static func stopAll(_ files: ClusterFiles) -> [String] {
        // The supervisor first, so nothing is restarted behind our back; then every pid file
        // goes before its daemon is signalled.
        let supervisor = stop(Supervisor.name, files)
        let names = files.daemons.sorted { ($0 == "server" ? 1 : 0, $0) < ($1 == "server" ? 1 : 0, $1) }
        let pids = names.map { pid($0, files) }
        for name in names { try? FileSystem.removeFile(files.pidFile(name)) }
        var signalled: [(String, pid_t)] = supervisor.map { [(Supervisor.name, $0)] } ?? []
        for (name, pid) in zip(names, pids) {
            guard let pid, runs(name, pid, files) else { continue }
            kill(pid, SIGTERM)
            signalled.append((name, pid))
        }
        let deadline = Date().addingTimeInterval(5)
        for (name, pid) in signalled {
            while runs(name, pid, files) && Date() < deadline {
                _ = waitpid(pid, nil, WNOHANG)
                usleep(10_000)
            }
            if runs(name, pid, files) { kill(pid, SIGKILL) }
        }
        return signalled.map(\.0)
    }
}
