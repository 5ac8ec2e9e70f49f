import Foundation
import Glibc
import KemuAPI
import KemuIP
import KemuSystem
import Logging
import Synchronization
import Testing

@testable import KemuProxy

/// A backend on 127.0.0.1: greets each connection with its name and a newline, echoes what it
/// reads, and on end of stream closes its side (so half-closes are visible end to end).
final class EchoBackend: Sendable {
    let name: String
    let listener: Int32
    let address: SocketAddress
    let accepted = Atomic<Int>(0)

    init(_ name: String) throws {
        self.name = name
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = IPv4Address(127, 0, 0, 1).value.bigEndian
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        Glibc.listen(fd, 128)
        listener = fd
        address = TCPSocket.localAddress(fd)!
        let thread = Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }
                accepted.add(1, ordering: .relaxed)
                Thread { Self.serve(c, name) }.start()
            }
        }
        thread.start()
    }

    static func serve(_ fd: Int32, _ name: String) {
        _ = Array("\(name)\n".utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            var off = 0
            while off < n {
                let w = buffer.withUnsafeBytes { send(fd, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { close(fd); return }
                off += w
            }
        }
        close(fd)
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    /// A port on loopback nobody listens on.
    static func closedPort() -> SocketAddress {
        let fd = try! TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = TCPSocket.localAddress(fd)!
        close(fd)
        return address
    }
}

/// A blocking TCP connection to `address`; nil if the connect failed.
func connectBlocking(_ address: SocketAddress) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = address.port.bigEndian
    a.sin_addr.s_addr = address.ip.value.bigEndian
    let ok = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if ok == 0 { return fd }
    close(fd)
    return nil
}

/// A blocking client: connects, sends `payload`, shuts its write side, reads to end of stream.
func exchange(_ address: SocketAddress, _ payload: [UInt8]) -> (bytes: [UInt8], reset: Bool) {
    guard let fd = connectBlocking(address) else { return ([], true) }
    defer { close(fd) }
    let writer = Thread {
        var off = 0
        while off < payload.count {
            let w = payload.withUnsafeBytes { send(fd, $0.baseAddress! + off, min(65536, payload.count - off), Int32(MSG_NOSIGNAL)) }
            if w <= 0 { return }
            off += w
        }
        shutdown(fd, Int32(SHUT_WR))
    }
    writer.start()
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { return (result, true) }
        if n == 0 { return (result, false) }
        result.append(contentsOf: buffer[0..<n])
    }
}

/// Keeps what a logger was told.
final class CapturingLog: LogHandler, @unchecked Sendable {
    let lines = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append(event.message.description) }
    }
}

@Suite(.serialized) struct ProxyEngineTests {
    /// An engine with one pool, listening on a loopback port of its own.
    func withEngine(_ endpoints: [SocketAddress], mesh: (any MeshTunnels)? = nil, _ configure: (inout PoolSettings) -> Void = { _ in },
                    _ body: (ProxyEngine, SocketAddress) async throws -> Void) async throws {
        var engineSettings = EngineSettings()
        engineSettings.mesh = mesh
        let engine = try ProxyEngine(settings: engineSettings)
        engine.start()
        var settings = PoolSettings()
        configure(&settings)
        let fd = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = TCPSocket.localAddress(fd)!
        engine.send([.setPool("test", settings, endpoints.map { EndpointSpec($0) }), .listen(fd, FrontendAddress(address), Frontend(pool: "test", source: .node))])
        do {
            try await body(engine, address)
        } catch {
            await engine.stop()
            throw error
        }
        await engine.stop()
    }

    @Test func bytesGoBothWaysAndAHalfCloseIsCarriedThrough() async throws {
        let backend = try EchoBackend("a")
        defer { backend.stop() }
        try await withEngine([backend.address]) { _, address in
            let reply = exchange(address, Array("hello through the proxy".utf8))
            #expect(!reply.reset)
            #expect(String(decoding: reply.bytes, as: UTF8.self) == "a\nhello through the proxy")
        }
    }

    @Test func theAccessLogHasALinePerConnection() async throws {
        let backend = try EchoBackend("logged")
        defer { backend.stop() }
        let log = CapturingLog()
        var settings = EngineSettings()
        settings.accessLog = true
        let engine = try ProxyEngine(settings: settings, logger: Logger(label: "test") { _ in log })
        engine.start()
        let fd = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = TCPSocket.localAddress(fd)!
        engine.send([.setPool("default/web", PoolSettings(), [EndpointSpec(backend.address, target: "default/web-1")]), .listen(fd, FrontendAddress(address), Frontend(pool: "default/web", source: .node))])
        _ = exchange(address, Array("12345".utf8))
        _ = await engine.snapshot()  // the close was handled before this
        await engine.stop()
        let lines = log.lines.withLock { $0 }.filter { $0.hasPrefix("access: ") }
        #expect(lines.count == 1)
        #expect(lines.first?.contains("→ \(address) (default/web) → \(backend.address) default/web-1: 5 B up, 12 B down") == true, "\(lines)")
    }

    @Test func megabytesArriveIntactBothWays() async throws {
        let backend = try EchoBackend("big")
        defer { backend.stop() }
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<(6 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try await withEngine([backend.address]) { engine, address in
            let reply = exchange(address, payload)
            #expect(!reply.reset)
            #expect(reply.bytes.count == payload.count + 4)
            #expect(Array(reply.bytes.dropFirst(4)) == payload)
            let stats = await engine.snapshot().pools[0].endpoints[0].stats
            #expect(stats.bytesToEndpoint == UInt64(payload.count))
            #expect(stats.bytesFromEndpoint == UInt64(payload.count + 4))
        }
    }

    @Test func roundRobinSpreadsConnectionsOverEveryEndpoint() async throws {
        let backends = try ["a", "b", "c"].map { try EchoBackend($0) }
        defer { backends.forEach { $0.stop() } }
        try await withEngine(backends.map(\.address)) { _, address in
            let names = (0..<9).map { _ in String(decoding: exchange(address, []).bytes, as: UTF8.self) }
            #expect(names.sorted() == ["a\n", "a\n", "a\n", "b\n", "b\n", "b\n", "c\n", "c\n", "c\n"])
        }
    }

    @Test func aRefusedConnectIsRetriedElsewhereAndTheEndpointEjected() async throws {
        let live = try EchoBackend("live")
        defer { live.stop() }
        let dead = EchoBackend.closedPort()
        try await withEngine([dead, live.address]) { engine, address in
            for _ in 0..<10 {
                let reply = exchange(address, Array("x".utf8))
                #expect(String(decoding: reply.bytes, as: UTF8.self) == "live\nx")
            }
            let pool = await engine.snapshot().pools[0]
            let deadState = pool.endpoints.first { $0.spec.address == dead }!
            #expect(deadState.stats.connectFailures == 2)
            #expect(deadState.ejected)
            #expect(pool.stats.retries == 2)
            #expect(pool.stats.rejected == 0)
        }
    }

    @Test func withNoEndpointTheClientIsResetAtOnce() async throws {
        try await withEngine([]) { engine, address in
            let started = ContinuousClock.now
            let reply = exchange(address, Array("anyone?".utf8))
            #expect(reply.bytes.isEmpty)
            #expect(ContinuousClock.now - started < .seconds(1))
            #expect(await engine.snapshot().pools[0].stats.rejected == 1)
        }
    }

    @Test func whenEveryAttemptFailsTheClientIsReset() async throws {
        let dead = [EchoBackend.closedPort(), EchoBackend.closedPort()]
        try await withEngine(dead) { engine, address in
            let reply = exchange(address, Array("x".utf8))
            #expect(reply.bytes.isEmpty)
            let pool = await engine.snapshot().pools[0]
            // Four attempts (kube-proxy's count), each endpoint tried before one is tried again.
            #expect(pool.stats.rejected == 1 && pool.stats.retries == 3)
            #expect(pool.endpoints.map(\.stats.connectFailures) == [2, 2])
        }
    }

    @Test func manyShortConnectionsInParallelAreAllAnswered() async throws {
        // Descriptors are reused at once by later connections; nothing meant for an earlier one
        // (a dial timer) may touch them.
        let backend = try EchoBackend("only")
        defer { backend.stop() }
        try await withEngine([backend.address]) { engine, address in
            let answered = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                for _ in 0..<100 where String(decoding: exchange(address, []).bytes, as: UTF8.self) == "only\n" {
                    answered.add(1, ordering: .relaxed)
                }
            }
            #expect(answered.load(ordering: .relaxed) == 800)
            #expect(await engine.snapshot().pools[0].stats.rejected == 0)
        }
    }

    @Test func connectionsToARemovedEndpointAreClosedAfterTheDrainTime() async throws {
        let backend = try EchoBackend("old")
        defer { backend.stop() }
        try await withEngine([backend.address], { $0.drainSeconds = 0 }) { engine, address in
            // A client that keeps its connection open: it sends nothing and never shuts down.
            let fd = try #require(connectBlocking(address))
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } == 4)
            var settings = PoolSettings()
            settings.drainSeconds = 0
            engine.send([.setPool("test", settings, [])])
            // The once-a-second sweep closes it.
            var timeout = timeval(tv_sec: 3, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            #expect(n == -1 && errno == ECONNRESET)
        }
    }
}

/// SIGTERM to a proxy: listeners close at once, what is under way may finish.
@Suite(.serialized) struct ProxyStopTests {
    func engine(drain: Double, to backend: EchoBackend) throws -> (ProxyEngine, SocketAddress) {
        var settings = EngineSettings()
        settings.stopDrainSeconds = drain
        let engine = try ProxyEngine(settings: settings)
        engine.start()
        let fd = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = TCPSocket.localAddress(fd)!
        engine.send([.setPool("test", PoolSettings(), [EndpointSpec(backend.address)]), .listen(fd, FrontendAddress(address), Frontend(pool: "test", source: .node))])
        return (engine, address)
    }

    func read(_ fd: Int32) -> (String, reset: Bool) {
        var out: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (String(decoding: out, as: UTF8.self), n < 0) }
            out += buffer[0..<n]
        }
    }

    @Test func newConnectionsAreRefusedAndOnesUnderWayFinish() async throws {
        let backend = try EchoBackend("b")
        defer { backend.stop() }
        // (A drain long enough for a loaded machine: the test once took 29 s in the full suite.)
        let (engine, address) = try engine(drain: 60, to: backend)
        let fd = try #require(connectBlocking(address))
        defer { close(fd) }
        var greeting = [UInt8](repeating: 0, count: 2)
        #expect(greeting.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 2, Int32(MSG_WAITALL)) } == 2)
        let stopping = Task { await engine.stop() }
        var refused = false
        for _ in 0..<100 where !refused {
            if let probe = connectBlocking(address) { close(probe); try await Task.sleep(for: .milliseconds(10)) } else { refused = true }
        }
        #expect(refused, "the listener still accepts after stop()")
        // The connection made before goes on to its natural end, answered and not reset.
        _ = Array("hello".utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        shutdown(fd, Int32(SHUT_WR))
        let (echo, reset) = read(fd)
        #expect(echo == "hello" && !reset)
        await stopping.value  // returns once the last connection ended, long before the 60 s
    }

    @Test func connectionsStillOpenAfterTheDrainAreReset() async throws {
        let backend = try EchoBackend("b")
        defer { backend.stop() }
        let (engine, address) = try engine(drain: 0.3, to: backend)
        let fd = try #require(connectBlocking(address))
        defer { close(fd) }
        var greeting = [UInt8](repeating: 0, count: 2)
        #expect(greeting.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 2, Int32(MSG_WAITALL)) } == 2)
        await engine.stop()
        #expect(read(fd).reset)
    }
}

/// Faults in the byte path: what a matching client gets, and that others get none of it.
@Suite(.serialized) struct ProxyFaultTests {
    let engineTests = ProxyEngineTests()

    func rule(abort: Double = 0, hang: Double = 0, latency: Int = 0, sources: [String] = []) -> FaultRule {
        FaultRule(Fault(name: "f", service: "s", sources: sources, latencyMilliseconds: latency, abortPercent: abort, hangPercent: hang))
    }

    @Test func aRuleAbortsThenHangsThenDelaysByItsShares() {
        let r = FaultRule(Fault(name: "f", service: "s", latencyMilliseconds: 100, jitterMilliseconds: 50, abortPercent: 30, hangPercent: 10))
        #expect(r.action(roll: 29.9, spread: 0) == .abort)
        #expect(r.action(roll: 30, spread: 0) == .hang && r.action(roll: 39.9, spread: 0) == .hang)
        #expect(r.action(roll: 40, spread: -1) == .delay(50_000_000) && r.action(roll: 99, spread: 1) == .delay(150_000_000))
        #expect(rule(abort: 5).action(roll: 50, spread: 0) == .pass)
        #expect(rule(sources: ["10.244.1.0/24"]).matches(IPv4Address(10, 244, 1, 9)) && !rule(sources: ["10.244.1.0/24"]).matches(IPv4Address(127, 0, 0, 1)))
    }

    @Test func aFaultsPlanCarriesItsRulesToEveryPool() {
        var plan = ServicePlan()
        plan.pools = ["default/web": .init(settings: PoolSettings(), endpoints: []), "default/web@local": .init(settings: PoolSettings(), endpoints: [])]
        plan.inject([Fault(name: "b", service: "web", bytesPerSecond: 1000), Fault(name: "a", service: "web", abortPercent: 10)])
        #expect(plan.pools.values.allSatisfy { $0.settings.faults.map(\.origin) == ["default/a"] })  // bandwidth is not the proxy's
    }

    @Test func matchingClientsAreResetHeldOrDelayedAndOthersServed() async throws {
        let backend = try EchoBackend("f")
        defer { backend.stop() }
        try await engineTests.withEngine([backend.address], { $0.faults = [rule(abort: 100)] }) { engine, address in
            // Nothing sent: a send could take the reset's error first and leave recv an end of stream.
            let fd = try #require(connectBlocking(address))
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, 0)
            #expect(n < 0 && errno == ECONNRESET)
            close(fd)
            #expect(await engine.snapshot().pools[0].stats.faultAborts == 1)
            #expect(backend.accepted.load(ordering: .relaxed) == 0)
        }
        try await engineTests.withEngine([backend.address], { $0.faults = [rule(abort: 100, sources: ["10.0.0.0/8"])] }) { _, address in
            #expect(String(decoding: exchange(address, Array("x".utf8)).bytes, as: UTF8.self) == "f\nx")
        }
        try await engineTests.withEngine([backend.address], { $0.faults = [rule(latency: 200)] }) { engine, address in
            let started = ContinuousClock.now
            #expect(String(decoding: exchange(address, Array("x".utf8)).bytes, as: UTF8.self) == "f\nx")
            #expect(ContinuousClock.now - started >= .milliseconds(190))  // a lower bound: the delay happened
            #expect(await engine.snapshot().pools[0].stats.faultDelays == 1)
        }
        let acceptedBefore = backend.accepted.load(ordering: .relaxed)
        try await engineTests.withEngine([backend.address], { $0.faults = [rule(hang: 100)] }) { engine, address in
            let fd = try #require(connectBlocking(address))
            var wait = timeval(tv_sec: 0, tv_usec: 300_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
            _ = Array("x".utf8).withUnsafeBytes { send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, 0)
            #expect(n < 0 && errno == EAGAIN)  // accepted, never answered, not closed
            #expect(backend.accepted.load(ordering: .relaxed) == acceptedBefore)
            #expect(await engine.snapshot().pools[0].stats.faultHangs == 1)
            close(fd)
            var open = 1
            for _ in 0..<100 where open > 0 {
                open = await engine.snapshot().openConnections
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(open == 0)  // the client left: so did the held connection
        }
    }
}

/// A backend that reads what a connection sends, then goes without a word: a reset (a killed
/// process) or a plain close.
final class SilentBackend: Sendable {
    let listener: Int32
    let address: SocketAddress
    let accepted = Atomic<Int>(0)

    init(reset: Bool) throws {
        listener = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        address = TCPSocket.localAddress(listener)!
        let fd = listener
        Thread { [self] in
            var flags = fcntl(fd, F_GETFL)
            flags &= ~O_NONBLOCK
            _ = fcntl(fd, F_SETFL, flags)
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }
                accepted.add(1, ordering: .relaxed)
                var buffer = [UInt8](repeating: 0, count: 1024)
                _ = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                if reset { TCPSocket.abort(c) } else { close(c) }
            }
        }.start()
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }
}

@Suite(.serialized) struct FirstFlightReplayTests {
    let engineTests = ProxyEngineTests()

    /// Connects, sends `text`, keeps its side open, and reads `count` bytes (or to the end).
    func ask(_ address: SocketAddress, _ text: String, count: Int) -> (String, reset: Bool) {
        guard let fd = connectBlocking(address) else { return ("", true) }
        defer { close(fd) }
        _ = Array(text.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var got: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while got.count < count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return (String(decoding: got, as: UTF8.self), true) }
            if n == 0 { break }
            got += buffer[..<n]
        }
        return (String(decoding: got, as: UTF8.self), false)
    }

    @Test func anEndpointThatResetsOrClosesBeforeAnsweringIsReplacedUnseen() async throws {
        let good = try EchoBackend("good")
        defer { good.stop() }
        for reset in [true, false] {
            let silent = try SilentBackend(reset: reset)
            defer { silent.stop() }
            try await engineTests.withEngine([silent.address, good.address]) { engine, address in
                for _ in 0..<6 {
                    let (reply, wasReset) = ask(address, "hello", count: 10)
                    #expect(!wasReset && reply == "good\nhello", "reset: \(reset)")
                }
                let pool = await engine.snapshot().pools[0]
                #expect(pool.stats.replays >= 1 && pool.stats.rejected == 0)
                #expect(silent.accepted.load(ordering: .relaxed) >= 1)
            }
        }
    }

    @Test func aClientThatFinishedGetsTheEndpointsSilenceAsItsAnswer() async throws {
        let silent = try SilentBackend(reset: false)
        defer { silent.stop() }
        try await engineTests.withEngine([silent.address]) { engine, address in
            // Sent and half-closed: a plain close with nothing said is the answer, not a failure.
            let reply = exchange(address, Array("bye".utf8))
            #expect(reply.bytes.isEmpty && !reply.reset)
            #expect(await engine.snapshot().pools[0].stats.replays == 0)
        }
    }
}

@Suite(.serialized) struct ActiveHealthCheckTests {
    @Test func anEndpointFailingItsChecksGetsNoConnectionsTillItPasses() async throws {
        let good = try EchoBackend("up")
        defer { good.stop() }
        let dead = EchoBackend.closedPort()
        try await ProxyEngineTests().withEngine([dead, good.address], { $0.healthCheckSeconds = 1 }) { engine, address in
            // Two failed checks (a sweep a second) and the dead endpoint is out of the choice.
            var states: [Bool] = []
            for _ in 0..<60 {
                states = await engine.snapshot().pools[0].endpoints.map(\.healthy)
                if states == [false, true] { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(states == [false, true])
            for _ in 0..<6 { #expect(String(decoding: exchange(address, Array("x".utf8)).bytes, as: UTF8.self) == "up\nx") }
            let pool = await engine.snapshot().pools[0]
            #expect(pool.stats.retries == 0)  // no client connection was even tried on it
            #expect(pool.endpoints[0].stats.connectFailures == 0 && pool.endpoints[0].stats.healthChecksFailed >= 2)
            #expect(pool.endpoints[1].stats.healthChecksFailed == 0 && pool.endpoints[1].healthy)
        }
    }
}
