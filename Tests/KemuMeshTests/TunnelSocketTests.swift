@testable import KemuMesh
import NIOCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A tunnel's raw socket under its NIO pipeline: what the socket reads goes up the pipeline,
/// what the pipeline writes reaches the socket, the peer's end closes the channel, and a peer
/// that never finishes its handshake is not kept.
@Suite struct TunnelSocketTests {
    /// Echoes what it reads, in capitals.
    final class Shout: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data)).uppercased()
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
        }
    }

    func pair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IOError(errnoCode: errno, reason: "socketpair")
        }
        return (fds[0], fds[1])
    }

    /// What the far end reads now: the text ("" for nothing yet), nil at the end of the stream,
    /// and any other failure by its errno (a full run once read "" where the end was due: this
    /// names what recv met next time).
    func read(_ fd: Int32) -> String? {
        var bytes = [UInt8](repeating: 0, count: 1024)
        let n = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n == 0 { return nil }
        if n < 0 { return errno == EAGAIN ? "" : "recv failed: errno \(errno)" }
        return String(decoding: bytes[..<n], as: UTF8.self)
    }

    @Test func bytesGoThroughThePipelineBothWaysAndThePeersEndClosesIt() throws {
        let loop = try MeshLoop(name: "test", threaded: false)
        defer { loop.stop() }
        let (near, far) = try pair()
        defer { close(far) }
        let socket = try TunnelSocket(fd: near, loop: loop, handlers: [Shout()])
        #expect(socket.channel.isActive)
        _ = send(far, "hello", 5, 0)
        loop.turn()
        #expect(read(far) == "HELLO")
        shutdown(far, Int32(SHUT_WR))
        loop.turn()
        loop.turn()
        #expect(!socket.channel.isActive, "the peer's end closes the channel")
        #expect(read(far) == nil, "and the socket")
    }

    @Test func aPeerThatNeverFinishesItsHandshakeIsClosed() throws {
        let loop = try MeshLoop(name: "test", threaded: false)
        defer { loop.stop() }
        let (near, far) = try pair()
        defer { close(far) }
        let (near2, far2) = try pair()
        defer { close(far2) }
        let stuck = try TunnelSocket(fd: near, loop: loop, handlers: [])
        stuck.close(after: 1_000_000) { false }
        let done = try TunnelSocket(fd: near2, loop: loop, handlers: [])
        done.close(after: 1_000_000) { true }
        loop.turn()
        #expect(read(far) == "", "open until its time is up")
        // Its time is up 1 ms on; the loop is turned until its socket is closed, for at most 2 s
        // (a test thread on a loaded machine may sleep far past what it asked).
        var turns = 0
        repeat {
            usleep(5_000)
            loop.turn()
            turns += 1
        } while read(far) == "" && turns < 400
        #expect(read(far) == nil, "closed once it is (\(turns) turns)")
        #expect(!stuck.channel.isActive)
        #expect(read(far2) == "" && done.channel.isActive, "a socket whose handshake was done is kept")
    }
}
