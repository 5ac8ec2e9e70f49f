import CKemuShim
import Foundation
import Glibc
import Synchronization

/// Starts child processes and reports each one's end the moment it happens: one thread blocks in
/// waitpid(-1) for every child of the process, so an exit is seen at once (no polling, no probe
/// period), and no zombie is left. A process using it must start all its children through it,
/// since the reaper collects whatever child ends.
public final class ProcessReaper: Sendable {
    public typealias Handler = @Sendable (ProcessExit) -> Void

    private struct State {
        var handlers: [pid_t: Handler] = [:]
        var threadRunning = false
    }
    private let state = Mutex(State())
    /// Held while a spawn registers its handler, so the reaper cannot collect a child that has
    /// no handler yet: it waits on this lock before looking the pid up.
    private let registering = NSLock()

    public static let shared = ProcessReaper()

    public init() {}

    /// Spawns `argv` and calls `onExit` on the reaper's thread when it ends.
    public func spawn(_ argv: [String], _ options: Spawn.Options, onExit: @escaping Handler) throws -> pid_t {
        registering.lock()
        defer { registering.unlock() }
        let pid = try Spawn.spawn(argv, options)
        let start = state.withLock { s -> Bool in
            s.handlers[pid] = onExit
            if s.threadRunning { return false }
            s.threadRunning = true
            return true
        }
        if start {
            startThread(named: "kemu-reaper") { [self] in reap() }
        }
        return pid
    }

    /// Spawns `argv` and waits for it to end; `started` gets its pid first (to kill it on a timeout).
    public func spawnAndWait(_ argv: [String], _ options: Spawn.Options, started: (pid_t) -> Void = { _ in }) async throws -> ProcessExit {
        try await withCheckedThrowingContinuation { continuation in
            do {
                started(try spawn(argv, options) { continuation.resume(returning: $0) })
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    public var running: Int { state.withLock { $0.handlers.count } }

    /// Watches a process this one did not start (a node agent taking over its predecessor's
    /// containers): `onExit` runs when it ends, with nil, since only a parent learns the status.
    /// Uses a pidfd, so a recycled pid can never be mistaken for it. False if it is gone already.
    public static func adopt(_ pid: pid_t, onExit: @escaping @Sendable (ProcessExit?) -> Void) -> Bool {
        let fd = kemu_pidfd_open(pid)
        guard fd >= 0 else { return false }
        startThread(named: "kemu-adopted-\(pid)") {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            while poll(&poller, 1, -1) < 0 && errno == EINTR {}
            close(fd)
            onExit(nil)
        }
        return true
    }

    /// The kernel's start time of `pid` (clock ticks since boot, /proc/PID/stat field 22): with
    /// the pid, it names one process for good, across pid reuse.
    public static func startTime(of pid: pid_t) -> UInt64? {
        guard let stat = try? FileSystem.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After "pid (comm)": state is field 3, so starttime (22) is the 20th here.
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    private func reap() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, 0)
            if pid > 0 {
                registering.lock()
                let handler = state.withLock { $0.handlers.removeValue(forKey: pid) }
                registering.unlock()
                handler?(Spawn.decode(status))
                continue
            }
            if errno == EINTR { continue }
            // ECHILD: no children left. Stop; the next spawn starts the thread again.
            let stop = state.withLock { s -> Bool in
                if s.handlers.isEmpty { s.threadRunning = false; return true }
                return false
            }
            if stop { return }
            usleep(1000)
        }
    }
}
