import Foundation
import Glibc
import KemuIP
@testable import KemuLab
import KemuSystem
import Synchronization
import Testing

/// The load generator on real sockets (loopback, no root): open-loop latencies, and hostile answers.
@Suite struct LoadGeneratorTests {
    /// A tiny HTTP endpoint on 127.0.0.1 that answers every request with `pod=NAME`, and can be
    /// frozen: while frozen it accepts nothing and answers nothing, as a SIGSTOPped pod.
    final class FreezableEndpoint: @unchecked Sendable {
        let listener: Int32
        let port: UInt16
        let frozenUntil = Atomic<Int64>(0)  // ms since 1970
        let stopped = Atomic<Bool>(false)

        init() throws {
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.listener = listener
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
            Glibc.listen(listener, 512)
            _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
            port = UInt16(bigEndian: a.sin_port)
            Thread { [self] in serve() }.start()
        }

        static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

        func freeze(seconds: Double) { frozenUntil.store(Self.nowMs() + Int64(seconds * 1000), ordering: .relaxed) }

        private func waitWhileFrozen() {
            while Self.nowMs() < frozenUntil.load(ordering: .relaxed) { usleep(1000) }
        }

        private func serve() {
            while !stopped.load(ordering: .relaxed) {
                waitWhileFrozen()
                let fd = accept(listener, nil, nil)
                if fd < 0 { continue }
                Thread { [self] in
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while recv(fd, &buffer, buffer.count, 0) > 0 {
                        waitWhileFrozen()
                        let body = "pod=web-1 namespace=default\n"
                        let response = "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                        _ = send(fd, response, response.utf8.count, Int32(MSG_NOSIGNAL))
                    }
                    close(fd)
                }.start()
            }
        }

        func stop() {
            stopped.store(true, ordering: .relaxed)
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
    }

    /// Runs a load on a thread of its own: the generator blocks until it is over, and a blocked
    /// thread of Swift's small cooperative pool would starve every other test running beside it.
    func run(_ settings: LoadGenerator.Settings) async -> [LoadResult] {
        await withCheckedContinuation { continuation in
            Thread {
                let results = Mutex<[LoadResult]>([])
                LoadGenerator(settings).run { result in results.withLock { $0.append(result) } }
                continuation.resume(returning: results.withLock { $0 })
            }.start()
        }
    }

    /// The test: a fixed-rate load against an endpoint frozen for 1 s. Timed from when
    /// each request was due, the stall shows in p99 (about the freeze itself); timed from when each
    /// went out, the backlog sent after the thaw looks fast and hides it.
    @Test func aFrozenEndpointShowsInTheOpenLoopP99() async throws {
        let endpoint = try FreezableEndpoint()
        defer { endpoint.stop() }
        var settings = LoadGenerator.Settings(target: SocketAddress(IPv4Address(127, 0, 0, 1), endpoint.port))
        (settings.clients, settings.rate, settings.duration, settings.timeout, settings.keepAlive) = (4, 200, 3, 5, true)
        let freezer = Thread { usleep(800_000); endpoint.freeze(seconds: 1) }
        freezer.start()
        let results = await run(settings)
        #expect(results.count >= 550, "a 3 s load at 200/s sends its 600 requests, backlog included (sent \(results.count))")
        #expect(results.allSatisfy { $0.ok })
        #expect(Set(results.map(\.detail)) == ["web-1"])
        let corrected = LatencySummary(milliseconds: results.map(\.correctedMs))
        let raw = LatencySummary(milliseconds: results.map(\.rawMs))
        #expect(corrected.p99 >= 500, "open-loop p99 \(corrected.p99) ms")
        #expect(corrected.max >= 900 && corrected.max < 1500, "the longest wait is about the freeze: \(corrected.max) ms")
        #expect(raw.p99 < corrected.p99 / 2, "raw p99 \(raw.p99) ms hides what the clients waited (open loop: \(corrected.p99) ms)")
        #expect(results.allSatisfy { $0.correctedMs >= $0.rawMs - 0.01 && $0.sent >= $0.intended - 0.001 })
    }

    @Test func aClosedLoopLoadTimesFromTheSend() async throws {
        let endpoint = try FreezableEndpoint()
        defer { endpoint.stop() }
        var settings = LoadGenerator.Settings(target: SocketAddress(IPv4Address(127, 0, 0, 1), endpoint.port))
        (settings.clients, settings.rate, settings.duration) = (2, 0, 0.3)
        let results = await run(settings)
        #expect(results.count > 10)
        #expect(results.allSatisfy { $0.ok && abs($0.correctedMs - $0.rawMs) < 0.01 })
    }

    @Test func failuresAreNamed() async throws {
        // Nothing listens on a port just freed: refused, each time, and the load goes on.
        let endpoint = try FreezableEndpoint()
        let port = endpoint.port
        endpoint.stop()
        var settings = LoadGenerator.Settings(target: SocketAddress(IPv4Address(127, 0, 0, 1), port))
        (settings.clients, settings.rate, settings.duration) = (1, 50, 0.2)
        let results = await run(settings)
        #expect(results.count >= 9)
        #expect(results.allSatisfy { !$0.ok && $0.detail == "refused" })
    }

    @Test func answersAreParsedWithoutTrusting() {
        let parse = { (text: String, ended: Bool) in HTTPLoadClient.parse(Array(text.utf8), ended: ended) }
        #expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npod=web-2\n", false)! == (true, "web-2"))
        #expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npod=", false) == nil)  // not all of it yet
        #expect(parse("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false)! == (false, "http-503"))
        #expect(parse("HTTP/1.1 200 OK\r\n\r\nhello", true)! == (true, "-"))
        #expect(parse("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", false)! == (true, "-"))
        #expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", true)! == (true, "-"))
        #expect(parse("garbage\r\n\r\n", true)! == (false, "http-0"))
        #expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod= ", false)! == (true, "-"))
    }

    @Test func resultLinesRoundTrip() throws {
        let r = LoadResult(intended: 1700000000.1234, sent: 1700000000.5, ok: false, detail: "connect-timeout", correctedMs: 376.55, rawMs: 250.01)
        let parsed = try #require(LoadResult(line: r.line.dropLast()))
        #expect(parsed.ok == false && parsed.detail == "connect-timeout")
        #expect(abs(parsed.correctedMs - 376.55) < 0.01 && abs(parsed.rawMs - 250.01) < 0.01 && abs(parsed.intended - r.intended) < 0.001)
        for bad in ["", "1 2 ok", "1 2 maybe web 3 4", "x 2 ok web 3 4", "1 2 ok web nan 4", "1 2 ok web 3 inf"] {
            #expect(LoadResult(line: bad[...]) == nil, "\(bad)")
        }
    }

    @Test func settingsOutOfRangeAreNamed() {
        var s = LoadGenerator.Settings(target: SocketAddress(IPv4Address(127, 0, 0, 1), 1))
        #expect(s.problem == nil)
        s.clients = 0
        #expect(s.problem?.hasPrefix("clients") == true)
        s.clients = 1
        s.rate = .nan
        #expect(s.problem?.hasPrefix("rate") == true)
        s.rate = 1
        s.timeout = 1e12
        #expect(s.problem?.hasPrefix("timeout") == true)
    }
}
