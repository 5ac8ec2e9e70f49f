@testable import KemuMesh
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A tunnel's streams at the frame level keep HTTP/2's flow control both ways: a socket is not
/// read past its stream's window, and a stream's window is not given back while its socket is
/// full (else a pod that never reads, or a client that does not, fills the proxy's memory).
@Suite struct TunnelStreamsTests {
    /// A source-side tunnel (active) with one call placed, joined to a socket.
    func call() throws -> (tunnel: EmbeddedChannel, socket: EmbeddedChannel, stream: FrameStream, side: ByteSide) {
        let tunnel = EmbeddedChannel()
        let peer = PeerIdentity(book: TunnelBook(trust: MeshTrust(node: "node-1")), local: "1")
        let streams = TunnelStreams(server: nil, peer: peer)
        try tunnel.pipeline.syncOperations.addHandler(streams)
        try tunnel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        let stream = FrameStream()
        #expect(streams.call(stream, [":method": "CONNECT", ":authority": "10.244.2.2:8080"]))
        let opened = try tunnel.readOutbound(as: HTTP2Frame.self)
        #expect(opened?.streamID == HTTP2StreamID(1))
        let socket = EmbeddedChannel()
        let side = ByteSide()
        try socket.pipeline.syncOperations.addHandler(side)
        try socket.connect(to: SocketAddress(ipAddress: "10.244.1.2", port: 40000)).wait()
        GlueSide.join(side, stream, traffic: nil)
        return (tunnel, socket, stream, side)
    }

    /// What was written on the tunnel so far: DATA bytes, WINDOW_UPDATEs, END_STREAMs, resets
    /// (once the loop's tick is over: a stream holds its last bytes until then).
    func sent(_ tunnel: EmbeddedChannel) throws -> (data: Int, windowUpdates: [Int], ends: Int, resets: Int) {
        tunnel.embeddedEventLoop.run()
        var (data, updates, ends, resets) = (0, [Int](), 0, 0)
        while let frame = try tunnel.readOutbound(as: HTTP2Frame.self) {
            switch frame.payload {
            case let .data(payload):
                if case let .byteBuffer(b) = payload.data { data += b.readableBytes }
                if payload.endStream { ends += 1 }
            case let .windowUpdate(increment): updates.append(increment)
            case .rstStream: resets += 1
            default: break
            }
        }
        return (data, updates, ends, resets)
    }

    @Test func aSocketIsNotReadPastItsStreamsWindow() throws {
        let (tunnel, socket, stream, side) = try call()
        for _ in 0..<4 { try socket.writeInbound(ByteBuffer(repeating: 7, count: TunnelSettings.streamWindow / 4)) }
        #expect(try sent(tunnel).data == TunnelSettings.streamWindow)
        #expect(!stream.writable, "the peer's window is spent")
        socket.read()
        #expect(side.readPending, "the socket waits for the window")
        try tunnel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(1), payload: .windowUpdate(windowSizeIncrement: 1 << 20)))
        #expect(stream.writable && !side.readPending, "window given back: the socket is read again")
    }

    @Test func aStreamsWindowWaitsForItsSocketToDrain() throws {
        let (tunnel, socket, _, _) = try call()
        socket.isWritable = false
        let spent = NIOHTTP2WindowUpdatedEvent(streamID: HTTP2StreamID(1), inboundWindowSize: 1 << 20, outboundWindowSize: nil)
        tunnel.pipeline.fireUserInboundEventTriggered(spent)
        #expect(try sent(tunnel).windowUpdates.isEmpty, "no window back while the socket is full")
        socket.isWritable = true
        socket.pipeline.fireChannelWritabilityChanged()
        #expect(try sent(tunnel).windowUpdates == [TunnelSettings.streamWindow - (1 << 20)])
    }

    /// The endpoint ended its side, the client's output was ended, then the client closed: NIO
    /// closes such a socket with no `inputClosed` event, and the stream still ends cleanly (an
    /// END_STREAM; a reset per connection, before). A client that fails resets it.
    @Test func aSocketClosedAfterItsOutputEndsItsStreamCleanly() throws {
        let (tunnel, socket, _, side) = try call()
        _ = try sent(tunnel)
        let end = HTTP2Frame.FramePayload.Data(data: .byteBuffer(ByteBuffer()), endStream: true)
        try tunnel.writeInbound(HTTP2Frame(streamID: HTTP2StreamID(1), payload: .data(end)))
        #expect(side.outputEnded)
        _ = try? socket.close().wait()  // EmbeddedChannel may have closed it whole at the output's end
        let clean = try sent(tunnel)
        #expect(clean.ends == 1 && clean.resets == 0, "\(clean)")

        let (tunnel2, socket2, _, _) = try call()
        _ = try sent(tunnel2)
        socket2.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        #expect(try sent(tunnel2).resets == 1)
        _ = try? socket2.finish()
    }

    /// NIO reads a socket's last bytes and its end in two steps, with a read-complete between
    /// them: both still leave in one DATA frame, END_STREAM set (a frame less per connection).
    @Test func aSocketsLastBytesAndItsEndGoInOneFrame() throws {
        let (tunnel, socket, _, _) = try call()
        _ = try sent(tunnel)
        try socket.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"))
        socket.pipeline.fireChannelReadComplete()
        socket.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        tunnel.embeddedEventLoop.run()
        var frames: [HTTP2Frame.FramePayload.Data] = []
        while let frame = try tunnel.readOutbound(as: HTTP2Frame.self) {
            if case let .data(payload) = frame.payload { frames.append(payload) }
        }
        #expect(frames.count == 1 && frames.first?.endStream == true, "\(frames)")
        // Bytes with no end behind them go out at the tick's end, the stream open.
        let (tunnel2, socket2, _, _) = try call()
        _ = try sent(tunnel2)
        try socket2.writeInbound(ByteBuffer(string: "more"))
        socket2.pipeline.fireChannelReadComplete()
        let more = try sent(tunnel2)
        #expect(more.data == 4 && more.ends == 0)
    }
}
