import CKemuShim
import Dispatch
import Foundation
import Glibc
import Synchronization

/// A thread kemu owns, for work that must happen inside another network namespace.
///
/// `setns(2)` moves only the calling thread. Swift tasks hop threads at every `await`, so a task
/// must never switch namespaces itself. Instead it hands a short, synchronous job to this thread,
/// which enters the namespace, runs the job (typically: open a socket or a netlink handle, which
/// stays in that namespace for its whole life), and goes home again before the next job.
public final class NamespaceThread: Sendable {
    private struct Job: @unchecked Sendable {
        let body: () -> Void
        let done: DispatchSemaphore
    }

    private let queue = Mutex<[Job]>([])
    private let wakeup = DispatchSemaphore(value: 0)
    /// The thread's own network namespace, to which it returns after each job.
    private let home: FileDescriptor
    private let threadID = Mutex<pthread_t?>(nil)

    /// Starts the thread. It lives as long as the process; kemu keeps one per process.
    public init(name: String = "kemu-netns") throws {
        home = try FileDescriptor(opening: "/proc/thread-self/ns/net")
        let started = DispatchSemaphore(value: 0)
        startThread(named: name) { [self] in
            threadID.withLock { $0 = pthread_self() }
            started.signal()
            serve()
        }
        started.wait()
    }

    /// The process-wide namespace thread.
    public static let shared: NamespaceThread = {
        do { return try NamespaceThread() } catch { fatalError("cannot start the namespace thread: \(error)") }
    }()

    private func serve() -> Never {
        while true {
            wakeup.wait()
            var job: Job? = queue.withLock { $0.removeFirst() }
            let done = job!.done
            job!.body()
            // Release the job, and with it the caller's closure, before the caller resumes: its
            // closure is only borrowed (withoutActuallyEscaping) and must be gone by then.
            job = nil
            done.signal()
        }
    }

    /// Runs `body` on this thread, in this thread's home namespace, and returns its result.
    public func run<T>(_ body: () throws -> T) throws -> T {
        if let me = threadID.withLock({ $0 }), pthread_equal(me, pthread_self()) != 0 {
            return try body()  // already here: a nested call must not wait on itself
        }
        return try withoutActuallyEscaping(body) { escapable in
            let box = ResultBox<T>()
            let done = DispatchSemaphore(value: 0)
            queue.withLock { $0.append(Job(body: { box.result = Result { try escapable() } }, done: done)) }
            wakeup.signal()
            done.wait()
            return try box.result!.get()
        }
    }

    /// Runs `body` inside the network namespace behind `namespace`, then returns home.
    public func run<T>(in namespace: FileDescriptor, _ body: () throws -> T) throws -> T {
        try run {
            try check("setns", namespace.path, kemu_setns(namespace.raw, kemu_clone_newnet) == 0 ? 0 : errno)
            defer { goHome() }
            return try body()
        }
    }

    /// `ip netns add`: a new network namespace, bind-mounted at `path` so it outlives this thread;
    /// `inside` runs in it before the thread goes home.
    public func createNamespace<T>(at path: String, inside: () throws -> T) throws -> T {
        try run {
            try check("unshare", "CLONE_NEWNET for \(path)", kemu_unshare(kemu_clone_newnet) == 0 ? 0 : errno)
            defer { goHome() }
            // thread-self, not self: the new namespace belongs to this thread only.
            try check("mount --bind /proc/thread-self/ns/net", path,
                      kemu_bind_mount("/proc/thread-self/ns/net", path))
            return try inside()
        }
    }

    private func goHome() {
        if kemu_setns(home.raw, kemu_clone_newnet) != 0 {
            // A namespace thread stuck in a foreign namespace would silently misplace every later
            // socket; there is no safe way on.
            fatalError("setns back to the namespace thread's home failed: \(SystemError("setns", "home", errno: errno))")
        }
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
