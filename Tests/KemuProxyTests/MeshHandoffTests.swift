import Foundation
import Glibc
import KemuIP
import KemuSystem
import Synchronization
import Testing

@testable import KemuProxy

/// A stand-in for the mesh: dials to `meshed` are handed over and treated as `behaviour` says,
/// each on a thread of its own (as the mesh's event loop would); others are the engine's.
final class FakeMesh: MeshTunnels, @unchecked Sendable {
    enum Behaviour {
        /// The dial fails with this errno before any byte.
        case dialFails(Int32)
        /// The endpoint is reached, then ends the connection unanswered after the client spoke.
        case endsUnanswered
        /// Carried to the end: answers "mesh\n" and what the client sent, then closes.
        case carries
    }

    let meshed: SocketAddress
    let behaviour: Behaviour
    let handoffs = Atomic<Int>(0)
    let closeRequests = Atomic<Int>(0)
    /// What `locate` answers (captured connections' pods); the endpoints dials named.
    let pods: [IPv4Address: (node: String, target: String)]
    let dialled = Mutex<[EndpointSpec]>([])

    init(meshed: SocketAddress, _ behaviour: Behaviour, pods: [IPv4Address: (node: String, target: String)] = [:]) {
        self.meshed = meshed
        self.behaviour = behaviour
        self.pods = pods
    }

    func dial(client: SocketAddress, endpoint: EndpointSpec) -> MeshDial {
        dialled.withLock { $0.append(endpoint) }
        guard endpoint.address == meshed else { return .direct }
        return .tunnel(MeshCarrier { handoff in
            self.handoffs.add(1, ordering: .relaxed)
            Thread { self.carry(handoff) }.start()
        })
    }

    func carry(_ h: MeshHandoff) {
        switch behaviour {
        case let .dialFails(error):
            h.report(.returned(token: h.token, client: h.client, error: error, flight: h.flight, clientEnded: h.clientEnded))
        case .endsUnanswered:
            h.report(.connected(token: h.token))
            let sent = Self.readSome(h.client)
            h.report(.returned(token: h.token, client: h.client, error: ECONNRESET, flight: h.flight + sent, clientEnded: false))
        case .carries:
            // As the mesh does: posted, the engine woken only at the end.
            _ = h.post(.connected(token: h.token), at: monotonicNanoseconds())
            let sent = Self.readSome(h.client)
            let answer = Array("mesh\n".utf8) + sent
            _ = h.post(.answered(token: h.token), at: monotonicNanoseconds())
            _ = answer.withUnsafeBytes { send(h.client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            Glibc.close(h.client)
            h.inbox.wake(unlessTakenSince: h.post(.closed(token: h.token, bytesUp: sent.count, bytesDown: answer.count), at: monotonicNanoseconds()))
        }
    }

    /// What the client sent first (the socket is non-blocking: polls for it).
    static func readSome(_ fd: Int32) -> [UInt8] {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, 2000)
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buffer[..<n]) : []
    }

    func close(token: UInt64) { closeRequests.add(1, ordering: .relaxed) }
    var policyGeneration: Int { 0 }
    func allows(client: SocketAddress, endpoint: EndpointSpec) -> Bool { true }
    func locate(_ address: IPv4Address) -> (node: String, target: String)? { pods[address] }
    func captureReady() {}
}

/// The engine hands a meshed dial's client socket to the mesh and keeps the connection's
/// accounts from what the mesh reports: a dial the mesh could not make is retried elsewhere, an
/// endpoint that ended it unanswered is replaced by a replay, a carried one is counted.
@Suite(.serialized) struct MeshHandoffTests {
    let engineTests = ProxyEngineTests()
    let replays = FirstFlightReplayTests()

    /// The engine's counters once the last client's close has reached it (at most a second).
    func settled(_ engine: ProxyEngine) async throws -> EngineSnapshot {
        var state = await engine.snapshot()
        for _ in 0..<100 where state.openConnections > 0 {
            try await Task.sleep(for: .milliseconds(10))
            state = await engine.snapshot()
        }
        return state
    }

    @Test func aDialTheMeshCouldNotMakeIsRetriedOnAnotherEndpoint() async throws {
        let live = try EchoBackend("live")
        defer { live.stop() }
        let meshed = EchoBackend.closedPort()
        let mesh = FakeMesh(meshed: meshed, .dialFails(ECONNREFUSED))
        try await engineTests.withEngine([meshed, live.address], mesh: mesh) { engine, address in
            for _ in 0..<6 {
                let reply = exchange(address, Array("x".utf8))
                #expect(String(decoding: reply.bytes, as: UTF8.self) == "live\nx" && !reply.reset)
            }
            let pool = await engine.snapshot().pools[0]
            let failed = try #require(pool.endpoints.first { $0.spec.address == meshed })
            #expect(mesh.handoffs.load(ordering: .relaxed) >= 1)
            #expect(failed.stats.connectFailures >= 1 && failed.activeConnections == 0)
            #expect(pool.stats.retries >= 1 && pool.stats.rejected == 0)
        }
    }

    @Test func anAuthorizationRefusalResetsTheClientWithoutBlamingTheEndpoint() async throws {
        let meshed = EchoBackend.closedPort()
        let mesh = FakeMesh(meshed: meshed, .dialFails(EACCES))
        try await engineTests.withEngine([meshed], mesh: mesh) { engine, address in
            let reply = exchange(address, Array("x".utf8))
            #expect(reply.bytes.isEmpty)
            let pool = await engine.snapshot().pools[0]
            #expect(pool.stats.policyDenied == 1 && pool.endpoints[0].stats.connectFailures == 0 && !pool.endpoints[0].ejected)
        }
    }

    @Test func anEndpointEndingUnansweredInTheMeshIsReplayedElsewhere() async throws {
        let good = try EchoBackend("good")
        defer { good.stop() }
        let meshed = EchoBackend.closedPort()
        let mesh = FakeMesh(meshed: meshed, .endsUnanswered)
        try await engineTests.withEngine([meshed, good.address], mesh: mesh) { engine, address in
            for _ in 0..<6 {
                let (reply, wasReset) = replays.ask(address, "hello", count: 10)
                #expect(!wasReset && reply == "good\nhello")
            }
            let pool = try await settled(engine).pools[0]
            #expect(mesh.handoffs.load(ordering: .relaxed) >= 1)
            #expect(pool.stats.replays >= 1 && pool.stats.rejected == 0)
            #expect(pool.endpoints.allSatisfy { $0.activeConnections == 0 })
        }
    }

    @Test func aCarriedConnectionIsCountedWhenTheMeshEndsIt() async throws {
        let meshed = EchoBackend.closedPort()
        let mesh = FakeMesh(meshed: meshed, .carries)
        try await engineTests.withEngine([meshed], mesh: mesh) { engine, address in
            let (reply, wasReset) = replays.ask(address, "hello", count: 10)
            #expect(!wasReset && reply == "mesh\nhello")
            let state = try await settled(engine)
            let endpoint = state.pools[0].endpoints[0]
            #expect(state.openConnections == 0 && endpoint.activeConnections == 0)
            #expect(endpoint.stats.bytesToEndpoint == 5 && endpoint.stats.bytesFromEndpoint == 10 && endpoint.stats.closed == 1)
        }
    }

    /// A passthrough listener's connection goes to the address its client dialled (here the
    /// listener's own: TPROXY brings others' to it), as the pod the mesh locates there.
    @Test func aCapturedConnectionGoesWhereItsClientMeantAsThePodThere() async throws {
        let listener = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = try #require(TCPSocket.localAddress(listener))
        let mesh = FakeMesh(meshed: address, .carries, pods: [address.ip: ("node-2", "shop/web-1")])
        var settings = EngineSettings()
        settings.mesh = mesh
        let engine = try ProxyEngine(settings: settings)
        engine.start()
        engine.send([.listen(listener, FrontendAddress(address), Frontend(pool: "", source: .client, passthrough: true))])
        let (reply, wasReset) = replays.ask(address, "hello", count: 10)
        #expect(!wasReset && reply == "mesh\nhello")
        let spec = mesh.dialled.withLock { $0.first }
        #expect(spec?.address == address && spec?.nodeName == "node-2" && spec?.target == "shop/web-1")
        #expect(try await settled(engine).openConnections == 0)
        await engine.stop()
    }

    @Test func aCapturedConnectionToNoKnownPodIsReset() async throws {
        let listener = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 1), 0), freeBind: false)
        let address = try #require(TCPSocket.localAddress(listener))
        let mesh = FakeMesh(meshed: address, .carries)
        var settings = EngineSettings()
        settings.mesh = mesh
        let engine = try ProxyEngine(settings: settings)
        engine.start()
        engine.send([.listen(listener, FrontendAddress(address), Frontend(pool: "", source: .client, passthrough: true))])
        let reply = exchange(address, Array("x".utf8))
        #expect(reply.bytes.isEmpty && mesh.handoffs.load(ordering: .relaxed) == 0)
        await engine.stop()
    }
}
