import CKemuShim
import Glibc

/// epoll(7) for an event loop kemu owns (the proxy's byte path). Each registration carries a
/// 64-bit token the loop chooses; `wait` fills a buffer the loop keeps, so the hot path
/// allocates nothing.
public final class Epoll: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        fd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
    }

    deinit { close(fd) }

    /// Readable, writable and peer-closed, edge-triggered: the loop reads and writes until EAGAIN.
    public static let edgeAll = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
    /// Readable, level-triggered (listening sockets, eventfds).
    public static let readable = EPOLLIN.rawValue
    public static let writable = EPOLLOUT.rawValue
    /// An error or hang-up on the descriptor (reported whether asked for or not).
    public static let failed = EPOLLERR.rawValue | EPOLLHUP.rawValue
    /// The peer will send no more (or the socket failed): read until end of stream.
    public static let peerClosed = EPOLLRDHUP.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue
    /// Anything a connection's socket may report.
    public static let any = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue

    /// Room for the events one `wait` returns; the loop keeps one and reads it after each wait.
    public final class Events {
        let buffer: UnsafeMutablePointer<epoll_event>
        public let capacity: Int32

        public init(capacity: Int32) {
            self.capacity = capacity
            buffer = .allocate(capacity: Int(capacity))
        }

        deinit { buffer.deallocate() }

        @inline(__always) public func token(_ i: Int) -> UInt64 { buffer[i].data.u64 }
        @inline(__always) public func events(_ i: Int) -> UInt32 { buffer[i].events }
    }

    public func add(_ descriptor: Int32, events: UInt32, token: UInt64) throws {
        var event = epoll_event()
        event.events = events
        event.data.u64 = token
        _ = try syscall("epoll_ctl add", "fd \(descriptor)") { epoll_ctl(fd, EPOLL_CTL_ADD, descriptor, &event) }
    }

    /// Forgets a descriptor (closing it does the same once no duplicate remains).
    public func remove(_ descriptor: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, descriptor, &event)
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever); returns how many events were written.
    /// An interrupted wait returns 0.
    public func wait(_ events: Events, timeoutMilliseconds: Int32) -> Int {
        let n = epoll_wait(fd, events.buffer, events.capacity, timeoutMilliseconds)
        return n < 0 ? 0 : Int(n)
    }
}

/// An eventfd(2) one thread writes to wake another's epoll loop.
public final class EventSignal: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        fd = try syscall("eventfd") { kemu_eventfd() }
    }

    deinit { close(fd) }

    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Clears the pending count (the loop calls it when woken).
    public func drain() {
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }
}

/// Monotonic clock in nanoseconds.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Raises this process's open-file limit (soft and, as root, hard) towards `wanted`: a proxy
/// holds a listening socket per service port and two sockets and two pipes per connection.
/// Returns the soft limit in force afterwards.
@discardableResult
public func raiseDescriptorLimit(to wanted: UInt) -> UInt {
    var limit = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    if limit.rlim_cur >= wanted { return limit.rlim_cur }
    var raised = rlimit(rlim_cur: wanted, rlim_max: max(limit.rlim_max, wanted))
    if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) != 0 {
        raised = rlimit(rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max)
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised)
    }
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    return limit.rlim_cur
}

/// Gives memory the process freed back to the system (malloc_trim): after a burst such as a
/// first list of 10,000 objects, RSS then shows what is kept, not what was parsed once.
public func returnFreedMemory() { kemu_malloc_trim() }
