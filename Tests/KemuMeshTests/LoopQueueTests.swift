import Foundation
import KemuAPI
@testable import KemuMesh
import NIOCore
import NIOHPACK
import NIOPosix
import Synchronization
import Testing

/// Work handed to the mesh's loop from other threads (the engine's new connections, the dials'
/// answers) does not keep the loop from its sockets, and all of it is done, in order.
@Suite struct LoopQueueTests {
    /// What the queue's work did, in order.
    final class Taken: Sendable {
        let items = Mutex<[Int]>([])
        func append(_ item: Int) { items.withLock { $0.append(item) } }
        var all: [Int] { items.withLock { $0 } }
    }

    /// Notes how much of the queue's work was done when a socket was first read.
    final class Reads: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let taken: Taken
        let firstRead = Mutex<Int?>(nil)
        init(taken: Taken) { self.taken = taken }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let done = taken.all.count
            firstRead.withLock { first in if first == nil { first = done } }
        }
    }

    /// Waits (up to 30 s) for `count` items taken.
    static func wait(for count: Int, _ taken: Taken) async throws {
        let deadline = Date().addingTimeInterval(30)
        while taken.all.count < count, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test func aBurstOfWorkFromAnotherThreadLeavesTheLoopReadingItsSockets() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let loop = group.next()
        let taken = Taken()
        let reads = Reads(taken: taken)
        // A listener on loopback and a client, both on the loop; the server's side counts reads.
        let server = try await ServerBootstrap(group: loop)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reads) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let client = try await ClientBootstrap(group: loop).connect(to: try #require(server.localAddress)).get()
        defer { client.close(promise: nil) }

        // 400 items of 1 ms each (a debug build's new connection), posted as they come.
        let queue = LoopQueue<Int>(loop: loop) { item in
            let until = Date().addingTimeInterval(0.001)
            while Date() < until {}
            taken.append(item)
        }
        for item in 0..<20 { queue.post(item) }
        try await Task.sleep(for: .milliseconds(5))
        // The client writes while the loop works through the queue.
        client.writeAndFlush(ByteBuffer(string: "hello"), promise: nil)
        for item in 20..<400 { queue.post(item) }

        try await Self.wait(for: 400, taken)
        #expect(taken.all == Array(0..<400), "every item once, in order")
        let readAt = try #require(reads.firstRead.withLock { $0 }, "the socket was read")
        #expect(readAt < 200, "the socket was read only after \(readAt) of 400 items: the queue kept the loop from it")
    }

    @Test func workPostedAfterTheQueueDrainedIsStillTaken() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let taken = Taken()
        let queue = LoopQueue<Int>(loop: group.next(), batch: 3) { item in taken.append(item) }
        for round in 0..<50 {
            for item in 0..<(round % 7) { queue.post(round * 10 + item) }
            try await Task.sleep(for: .milliseconds(round % 3))
        }
        let expected = (0..<50).flatMap { round in (0..<(round % 7)).map { round * 10 + $0 } }
        try await Self.wait(for: expected.count, taken)
        #expect(taken.all == expected)
    }

    @Test func theDestinationDialsWithinTheTimeoutTheSourceAsked() {
        #expect(ConnectCall([:]).dialTimeout == .seconds(2), "none asked: 2 s")
        #expect(ConnectCall([Mesh.dialTimeoutHeader: "250"]).dialTimeout == .milliseconds(250))
        #expect(ConnectCall([Mesh.dialTimeoutHeader: "600000"]).dialTimeout == .seconds(10), "at most 10 s")
        for hostile in ["", "-5", "0", "abc", "99999999999999999999999", "25O", " 250"] {
            #expect(ConnectCall([Mesh.dialTimeoutHeader: hostile]).dialTimeout == .seconds(2), "\(hostile)")
        }
    }

    /// The CONNECT's other headers, as the source sends them and as a peer might garble them.
    @Test func aConnectsHeadersAreReadInOnePass() {
        let call = ConnectCall([":method": "CONNECT", ":authority": "10.244.2.5:8080", "forwarded": "for=10.244.1.7",
                                "baggage": "k8s.namespace.name=shop, k8s.workload.name=caller,k8s.cluster.name=x"])
        #expect(call.isConnect && call.authority == "10.244.2.5:8080")
        #expect(call.source?.description == "10.244.1.7")
        #expect(call.workload == "caller")
        #expect(ConnectCall([":method": "GET"]).isConnect == false)
        for hostile in ["", "for=", "for=10.244.1", "by=10.244.1.7", "for=10.244.1.7;proto=x", "for=ä.1.2.3"] {
            #expect(ConnectCall(["forwarded": hostile]).source == nil, "\(hostile)")
        }
        for (baggage, workload) in [("", nil), ("k8s.workload.name=", ""), ("x=1", nil), ("k8s.workload.name=é", "é"), (",,,", nil)] as [(String, String?)] {
            #expect(ConnectCall(["baggage": baggage]).workload == workload, "\(baggage)")
        }
    }
}
