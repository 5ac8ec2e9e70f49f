import CKemuShim
import Foundation

/// Starts a thread that the kernel knows by `name` (its first 15 bytes), so that `top -H`, `perf`
/// and /proc/PID/task/*/comm tell kemu's threads apart. Foundation's `Thread.name` names only the
/// `Thread` object on Linux: every thread of a proxy showed as "kemu".
public func startThread(named name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread {
        kemu_name_thread(name)
        body()
    }
    thread.name = name
    thread.start()
}
