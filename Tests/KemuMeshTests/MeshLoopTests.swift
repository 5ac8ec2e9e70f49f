import Dispatch
import Foundation
@testable import KemuMesh
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The mesh's own loop: work handed over from other threads (the engine's new connections, the
/// dials' answers) does not keep it from its sockets, all of it is done in order, and timers fire
/// in the order of their deadlines.
@Suite struct MeshLoopTests {
    final class Log: Sendable {
        let items = Mutex<[Int]>([])
        let firstRead = Mutex<Int?>(nil)
        func append(_ item: Int) { items.withLock { $0.append(item) } }
        var all: [Int] { items.withLock { $0 } }
    }

    /// Notes how much of the handed-over work was done when its socket was first read.
    final class Reader: MeshWatcher, @unchecked Sendable {
        let fd: Int32
        let log: Log
        init(fd: Int32, log: Log) {
            self.fd = fd
            self.log = log
        }

        func ready(_ events: UInt32) {
            var byte: UInt8 = 0
            guard recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 1 else { return }
            let done = log.all.count
            log.firstRead.withLock { first in if first == nil { first = done } }
        }

        func loopStopped() { close(fd) }
    }

    static func wait(until done: @escaping () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(30)
        while !done(), Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test func aBurstOfWorkFromAnotherThreadLeavesTheLoopReadingItsSockets() async throws {
        let loop = try MeshLoop(name: "test-mesh-loop")
        defer { loop.stop() }
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let log = Log()
        let reader = Reader(fd: pair[0], log: log)
        let watching = Atomic<Bool>(false)
        loop.execute {
            _ = try? loop.watch(reader.fd, reader)
            watching.store(true, ordering: .relaxed)
        }
        try await Self.wait { watching.load(ordering: .relaxed) }
        // The loop is held in one job while 5,000 jobs pile up; the 100th makes the socket
        // readable.
        let held = DispatchSemaphore(value: 0)
        loop.execute { held.wait() }
        let peer = pair[1]
        for i in 0..<5_000 {
            loop.execute {
                log.append(i)
                var byte: UInt8 = 1
                if i == 100 { _ = send(peer, &byte, 1, 0) }
            }
        }
        held.signal()
        try await Self.wait { log.all.count == 5_000 }
        #expect(log.all == Array(0..<5_000), "every job, in order")
        let first = try #require(log.firstRead.withLock { $0 }, "the socket was read")
        #expect(first < 5_000, "read only once the burst was over")
    }

    @Test func timersFireInTheOrderOfTheirDeadlines() async throws {
        let loop = try MeshLoop(name: "test-mesh-timers")
        defer { loop.stop() }
        let log = Log()
        loop.execute {
            for (delay, item) in [(30, 3), (10, 1), (20, 2), (0, 0)] {
                loop.after(UInt64(delay) * 1_000_000) { log.append(item) }
            }
        }
        try await Self.wait { log.all.count == 4 }
        #expect(log.all == [0, 1, 2, 3])
    }
}
