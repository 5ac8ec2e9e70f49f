import Dispatch
import Foundation
import Glibc
import KemuSystem
import NIOCore
import NIOEmbedded
import Synchronization

/// A descriptor a `MeshLoop` watches (edge-triggered: readable, writable, peer closed), and
/// what is done when it is ready.
protocol MeshWatcher: AnyObject {
    func ready(_ events: UInt32)
    /// The loop stops: the descriptor is closed.
    func loopStopped()
}

/// An event loop of the mesh's own: one thread, epoll, raw descriptors, no NIO channel per
/// connection. On the destination, a NIO channel for each pod's socket was a quarter of the
/// loop's work per connection (its making: getsockname, getpeername, fcntl, two epoll_ctl,
/// futures; its close: lifecycle, deregistration). NIO's pipelines still carry each tunnel's
/// TLS and HTTP/2 (`TunnelSocket`), on an `EmbeddedEventLoop` this loop drives: its tasks run
/// at the end of each pass, with its clock moved to the real one.
///
/// Confined to its thread but for `execute` and `stop`, hence `@unchecked Sendable`.
final class MeshLoop: @unchecked Sendable {
    private let epoll: Epoll
    private let bell: EventSignal
    /// Work other threads handed over, taken at the next pass (`execute`).
    private let posted = Mutex<[@Sendable () -> Void]>([])
    private let running = Atomic<Bool>(true)
    /// The loop waits in epoll (or is about to): work handed over must ring the bell. While it
    /// is awake it takes what was posted at the end of its pass, and a ring (a write, and a
    /// read and an extra pass on the loop) would be wasted: one per new connection, before.
    private let sleeping = Atomic<Bool>(false)
    private var watchers: [Int32: any MeshWatcher] = [:]
    /// Watchers to be called again at the next pass (they stopped short of EAGAIN).
    private var again: [any MeshWatcher] = []
    /// Work for the end of this pass, after all it read (`atPassEnd`).
    private var passEnd: [() -> Void] = []
    /// Timers, in deadline order (monotonic nanoseconds).
    private var timers: [(deadline: UInt64, body: () -> Void)] = []
    /// NIO's view of this loop, for the tunnels' pipelines; made on the loop's thread.
    private(set) var nio: EmbeddedEventLoop!
    /// At most this many handed-over jobs a pass: a burst of dial answers does not keep the
    /// tunnels unread.
    static let batch = 64

    /// Its passes, when it has no thread of its own (`turn`).
    private var turns: Epoll.Events?

    /// Starts the loop's thread; with `threaded` false there is none, and the caller's thread
    /// runs each pass (`turn`: tests).
    init(name: String, threaded: Bool = true) throws {
        epoll = try Epoll()
        bell = try EventSignal()
        try epoll.add(bell.fd, events: Epoll.readable, token: UInt64(UInt32(bitPattern: bell.fd)))
        guard threaded else {
            nio = EmbeddedEventLoop()
            turns = Epoll.Events(capacity: 64)
            return
        }
        let made = DispatchSemaphore(value: 0)
        startThread(named: name) { [self] in
            nio = EmbeddedEventLoop()
            made.signal()
            serve()
        }
        made.wait()
    }

    /// From any thread: `body` runs on the loop at its next pass.
    func execute(_ body: @escaping @Sendable () -> Void) {
        let first = posted.withLock { posted in
            defer { posted.append(body) }
            return posted.isEmpty
        }
        if first && sleeping.load(ordering: .sequentiallyConsistent) { bell.signal() }
    }

    /// Stops the loop: every watched descriptor is closed on its thread (at once, on a loop
    /// without one).
    func stop() {
        running.store(false, ordering: .sequentiallyConsistent)
        if turns != nil { stopped() } else { bell.signal() }
    }

    /// On the loop: `watcher` hears of `fd` (edge-triggered, everything a socket reports).
    func watch(_ fd: Int32, _ watcher: any MeshWatcher) throws {
        try epoll.add(fd, events: Epoll.edgeAll, token: UInt64(UInt32(bitPattern: fd)))
        watchers[fd] = watcher
    }

    /// On the loop: `fd` is no longer watched (before it is closed, or handed elsewhere).
    func forget(_ fd: Int32) {
        guard watchers.removeValue(forKey: fd) != nil else { return }
        epoll.remove(fd)
    }

    /// On the loop: `watcher` is called again at the next pass, without waiting.
    func callAgain(_ watcher: any MeshWatcher) { again.append(watcher) }

    /// On the loop: `body` runs at the end of this pass, after what the pass read and timers.
    func atPassEnd(_ body: @escaping () -> Void) { passEnd.append(body) }

    /// On the loop: `body` runs `nanoseconds` from now.
    func after(_ nanoseconds: UInt64, _ body: @escaping () -> Void) {
        let deadline = monotonicNanoseconds() &+ nanoseconds
        var low = timers.count
        while low > 0, timers[low - 1].deadline > deadline { low -= 1 }
        timers.insert((deadline, body), at: low)
    }

    /// One pass that does not wait, on the caller's thread (a loop made without one).
    func turn() {
        if let turns { pass(turns, wait: false) }
    }

    private func serve() {
        let events = Epoll.Events(capacity: 256)
        while running.load(ordering: .acquiring) { pass(events) }
        stopped()
    }

    private func stopped() {
        for watcher in Array(watchers.values) { watcher.loopStopped() }
        watchers.removeAll()
        again.removeAll()
        timers.removeAll()
        nio.advanceTime(to: .now())
    }

    /// One wait for events, then what they ask for, handed-over work, timers and NIO's tasks.
    private func pass(_ events: Epoll.Events, wait: Bool = true) {
        let now = monotonicNanoseconds()
        // Asleep before looking at what was posted: a job posted after the look rings the bell.
        sleeping.store(true, ordering: .sequentiallyConsistent)
        let timeout: Int32 = if !wait || !again.isEmpty || !passEnd.isEmpty || !posted.withLock({ $0.isEmpty }) {
            0
        } else if let next = timers.first?.deadline {
            next > now ? Int32(min((next - now) / 1_000_000 + 1, 1000)) : 0
        } else {
            1000  // NIO's own timers (TLS's close) are run at least this often
        }
        let n = epoll.wait(events, timeoutMilliseconds: timeout)
        sleeping.store(false, ordering: .sequentiallyConsistent)
        let due = again
        again.removeAll(keepingCapacity: true)
        for watcher in due { watcher.ready(Epoll.readable) }
        for i in 0..<n {
            let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: events.token(i)))
            if fd == bell.fd {
                bell.drain()
            } else {
                watchers[fd]?.ready(events.events(i))
            }
        }
        let jobs = posted.withLock { posted -> ArraySlice<@Sendable () -> Void> in
            let n = min(posted.count, Self.batch)
            defer { posted.removeFirst(n) }
            return posted[..<n]
        }
        for job in jobs { job() }
        let later = monotonicNanoseconds()
        while let first = timers.first, first.deadline <= later {
            timers.removeFirst()
            first.body()
        }
        while !passEnd.isEmpty {
            let due = passEnd
            passEnd.removeAll(keepingCapacity: true)
            for body in due { body() }
        }
        nio.advanceTime(to: .now())
    }
}

/// A value made on a mesh loop and used only there, carried through another thread untouched
/// (a dial's answer, made on `KernelChores`' thread, brings back the side it is for).
struct LoopOwned<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
