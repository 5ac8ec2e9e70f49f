import Foundation
import KemuAPI
import KemuSystem
import Synchronization

/// What kubelet says about its machine besides readiness, so an overloaded machine is visible in
/// `kubectl describe node` rather than only in heartbeats that come late: MemoryPressure (less than
/// 5 % of memory, or 100 Mi, available — upstream's hard eviction signal) and PIDPressure (more than
/// 90 % of the kernel's thread limit in use); and how many pods wait for this agent to start them.
struct NodePressure: Equatable, Sendable {
    var memory = false
    var pids = false
    /// Pods waiting for a start slot (`StartGate`); reported in the Ready condition's message.
    var waitingStarts = 0

    /// The machine now (every node agent sees the same machine: one emulated node's pressure is
    /// the machine's).
    static func read(waitingStarts: Int = 0) -> NodePressure {
        var pressure = NodePressure(waitingStarts: waitingStarts)
        if let meminfo = try? FileSystem.readFile("/proc/meminfo") {
            func kibibytes(_ key: String) -> Double? {
                meminfo.split(separator: "\n").first { $0.hasPrefix(key + ":") }?
                    .split(separator: " ").dropFirst().first.flatMap { Double($0) }
            }
            if let total = kibibytes("MemTotal"), let available = kibibytes("MemAvailable") {
                pressure.memory = available < max(total * 0.05, 100 * 1024)
            }
        }
        // /proc/loadavg's fourth field: running/total scheduling entities (threads).
        if let load = try? FileSystem.readFile("/proc/loadavg"),
           let field = load.split(separator: " ").dropFirst(3).first, let slash = field.firstIndex(of: "/"),
           let threads = Double(field[field.index(after: slash)...]),
           let limit = [try? FileSystem.readFile("/proc/sys/kernel/threads-max"), try? FileSystem.readFile("/proc/sys/kernel/pid_max")]
            .compactMap({ $0.flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }).min() {
            pressure.pids = threads > limit * 0.9
        }
        return pressure
    }

    /// Whether a status post is owed: a condition flipped, or starts began or stopped waiting.
    func differs(from other: NodePressure) -> Bool {
        memory != other.memory || pids != other.pids || (waitingStarts == 0) != (other.waitingStarts == 0)
    }

    func conditions(at now: JSON) -> [JSON] {
        func condition(_ type: String, _ on: Bool, _ reason: (String, String), _ message: (String, String)) -> JSON {
            ["type": .string(type), "status": on ? "True" : "False", "reason": .string(on ? reason.0 : reason.1),
             "message": .string(on ? message.0 : message.1), "lastHeartbeatTime": now, "lastTransitionTime": now]
        }
        return [
            condition("MemoryPressure", memory, ("KubeletHasInsufficientMemory", "KubeletHasSufficientMemory"),
                      ("the machine has less than 5% of its memory available", "kubelet has sufficient memory available")),
            condition("DiskPressure", false, ("", "KubeletHasNoDiskPressure"), ("", "kubelet has no disk pressure")),
            condition("PIDPressure", pids, ("KubeletHasInsufficientPID", "KubeletHasSufficientPID"),
                      ("the machine uses more than 90% of its thread limit", "kubelet has sufficient PID available")),
        ]
    }

    var readyMessage: String {
        waitingStarts == 0 ? "kemu node agent is posting ready status"
            : "kemu node agent is posting ready status; \(waitingStarts) pods wait to be started"
    }
}

/// At most `limit` pods being started at once (sandbox, token, processes); the others wait their
/// turn in arrival order, so a burst of hundreds of pods does not take the machine at once.
final class StartGate: Sendable {
    let limit: Int
    private let state = Mutex<(running: Int, waiting: [CheckedContinuation<Void, Never>])>((0, []))

    init(limit: Int) { self.limit = max(1, limit) }

    func enter() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.running < limit {
                    s.running += 1
                    return true
                }
                s.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// The slot goes to the longest waiter, or is freed.
    func leave() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.running = max(0, s.running - 1)
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }

    var waiting: Int { state.withLock { $0.waiting.count } }
}
