@testable import KemuMesh
import NIOCore
import NIOEmbedded
import NIOHPACK
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A tunnel's HTTP/2 connection, seen from its peer's side of the wire: flow control holds both
/// ways (a socket is not read past its stream's window, a stream's window is not given back
/// while its socket is full: else a pod that never reads, or a client that does not, fills the
/// proxy's memory), streams end cleanly, and a peer that breaks the protocol loses the tunnel.
@Suite struct TunnelStreamsTests {
    /// The far end of a source-side tunnel: reads what the tunnel wrote, writes frames to it.
    final class Peer {
        let tunnel: EmbeddedChannel
        var reader = FrameReader(maxFrameSize: 1 << 24, server: true)
        var writer = FrameWriter()

        init(tunnel: EmbeddedChannel) { self.tunnel = tunnel }

        /// Every frame written so far (once the loop's tick is over: writes wait for its end).
        func frames() throws -> [TunnelFrame] {
            tunnel.embeddedEventLoop.run()
            var bytes = ByteBuffer()
            while var part = try tunnel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
            var frames: [TunnelFrame] = []
            while let frame = try reader.next(&bytes) { frames.append(frame) }
            #expect(bytes.readableBytes == 0, "a frame cut short")
            return frames
        }

        /// Writes frames to the tunnel, cut in random places (as TLS records and reads cut them).
        func send(_ write: (inout FrameWriter, inout ByteBuffer) throws -> Void) throws {
            var out = ByteBuffer()
            try write(&writer, &out)
            while out.readableBytes > 0, let part = out.readSlice(length: min(out.readableBytes, Int.random(in: 1...20_000))) {
                try tunnel.writeInbound(part)
            }
        }

        /// What the frames so far carried: DATA bytes, stream WINDOW_UPDATEs, END_STREAMs, resets.
        func sent() throws -> (data: Int, windowUpdates: [Int], ends: Int, resets: Int) {
            var (data, updates, ends, resets) = (0, [Int](), 0, 0)
            for frame in try frames() {
                switch frame {
                case let .data(_, bytes, end, _):
                    data += bytes.readableBytes
                    if end { ends += 1 }
                case let .windowUpdate(id, increment) where id != 0: updates.append(increment)
                case .reset: resets += 1
                default: break
                }
            }
            return (data, updates, ends, resets)
        }
    }

    /// A source-side tunnel, started, its peer's settings in, with one call placed and joined to
    /// a socket.
    func call() throws -> (peer: Peer, socket: EmbeddedChannel, stream: FrameStream, side: ByteSide) {
        let tunnel = EmbeddedChannel()
        let identity = PeerIdentity(book: TunnelBook(trust: MeshTrust(node: "node-1")), local: "1")
        let streams = TunnelStreams(server: nil, peer: identity)
        try tunnel.pipeline.syncOperations.addHandler(streams)
        try tunnel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        let peer = Peer(tunnel: tunnel)
        let start = try peer.frames()
        #expect(start.contains(.settings(TunnelSettings.local)), "\(start)")
        #expect(start.contains(.windowUpdate(0, TunnelSettings.connectionWindow - 65535)), "\(start)")
        try peer.send { _, out in
            FrameWriter.settings(TunnelSettings.local, into: &out)
            FrameWriter.windowUpdate(0, TunnelSettings.connectionWindow - 65535, into: &out)
        }
        #expect(try peer.frames() == [.settingsAck])
        let stream = FrameStream()
        #expect(streams.call(stream, [":method": "CONNECT", ":authority": "10.244.2.2:8080"]))
        let opened = try peer.frames()
        guard case let .headers(1, headers, end: false)? = opened.first else {
            Issue.record("no CONNECT on stream 1: \(opened)")
            throw CancellationError()
        }
        #expect(headers.first(name: ":authority") == "10.244.2.2:8080")
        let socket = EmbeddedChannel()
        let side = ByteSide()
        try socket.pipeline.syncOperations.addHandler(side)
        try socket.connect(to: SocketAddress(ipAddress: "10.244.1.2", port: 40000)).wait()
        GlueSide.join(side, stream, traffic: nil)
        return (peer, socket, stream, side)
    }

    @Test func aSocketIsNotReadPastItsStreamsWindow() throws {
        let (peer, socket, stream, side) = try call()
        for _ in 0..<4 { try socket.writeInbound(ByteBuffer(repeating: 7, count: TunnelSettings.streamWindow / 4)) }
        #expect(try peer.sent().data == TunnelSettings.streamWindow)
        #expect(!stream.writable, "the peer's window is spent")
        socket.read()
        #expect(side.readPending, "the socket waits for the window")
        try peer.send { _, out in FrameWriter.windowUpdate(1, 1 << 20, into: &out) }
        #expect(stream.writable && !side.readPending, "window given back: the socket is read again")
    }

    /// Bytes past the connection's window wait in their stream, and go when it opens.
    @Test func bytesPastTheConnectionsWindowWaitForIt() throws {
        let (peer, socket, stream, _) = try call()
        try peer.send { _, out in FrameWriter.settings([TunnelSetting(id: TunnelSetting.initialWindowSize, value: 1 << 30)], into: &out) }
        for _ in 0..<5 { try socket.writeInbound(ByteBuffer(repeating: 1, count: TunnelSettings.connectionWindow / 4)) }
        #expect(try peer.sent().data == TunnelSettings.connectionWindow, "the connection's window, no more")
        #expect(!stream.writable)
        try peer.send { _, out in FrameWriter.windowUpdate(0, 1 << 20, into: &out) }
        #expect(try peer.sent().data == 1 << 20)
        try peer.send { _, out in FrameWriter.windowUpdate(0, TunnelSettings.connectionWindow, into: &out) }
        #expect(try peer.sent().data == TunnelSettings.connectionWindow / 4 - (1 << 20))
        #expect(stream.writable)
    }

    @Test func aStreamsWindowWaitsForItsSocketToDrain() throws {
        let (peer, socket, _, _) = try call()
        socket.isWritable = false
        try peer.send { _, out in
            for _ in 0..<3 {
                FrameWriter.dataHead(1, length: 1 << 20, end: false, into: &out)
                out.writeRepeatingByte(9, count: 1 << 20)
            }
        }
        #expect(try peer.sent().windowUpdates.isEmpty, "no window back while the socket is full")
        socket.isWritable = true
        socket.pipeline.fireChannelWritabilityChanged()
        #expect(try peer.sent().windowUpdates == [3 << 20])
    }

    /// The endpoint ended its side, the client's output was ended, then the client closed: NIO
    /// closes such a socket with no `inputClosed` event, and the stream still ends cleanly (an
    /// END_STREAM, no reset). A client that fails resets it.
    @Test func aSocketClosedAfterItsOutputEndsItsStreamCleanly() throws {
        let (peer, socket, stream, side) = try call()
        try peer.send { _, out in FrameWriter.dataHead(1, length: 0, end: true, into: &out) }
        #expect(side.outputEnded)
        _ = try? socket.close().wait()  // EmbeddedChannel may have closed it whole at the output's end
        let clean = try peer.sent()
        #expect(clean.ends == 1 && clean.resets == 0, "\(clean)")
        #expect(stream.gone, "both ends sent: the stream is over")

        let (peer2, socket2, _, _) = try call()
        socket2.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        #expect(try peer2.sent().resets == 1)
        _ = try? socket2.finish()
    }

    /// NIO reads a socket's last bytes and its end in two steps, with a read-complete between
    /// them: both still leave in one DATA frame, END_STREAM set (a frame less per connection).
    @Test func aSocketsLastBytesAndItsEndGoInOneFrame() throws {
        let (peer, socket, _, _) = try call()
        try socket.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"))
        socket.pipeline.fireChannelReadComplete()
        socket.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let frames = try peer.frames()
        #expect(frames.count == 1, "\(frames)")
        guard case let .data(1, bytes, end: true, _)? = frames.first else {
            Issue.record("no DATA with END_STREAM: \(frames)")
            return
        }
        #expect(bytes.readableBytes == 19)
        // Bytes with no end behind them go out at the tick's end, the stream open.
        let (peer2, socket2, _, _) = try call()
        try socket2.writeInbound(ByteBuffer(string: "more"))
        socket2.pipeline.fireChannelReadComplete()
        let more = try peer2.sent()
        #expect(more.data == 4 && more.ends == 0)
    }

    /// A ping is answered; DATA on a stream never opened is the peer's error: a GOAWAY that says
    /// so, the tunnel closed, and its streams' sockets with it.
    @Test func aPeerThatBreaksTheProtocolLosesTheTunnel() throws {
        let (peer, socket, stream, _) = try call()
        try peer.send { _, out in FrameWriter.ping(42, ack: false, into: &out) }
        #expect(try peer.frames() == [.ping(42, ack: true)])
        try peer.send { _, out in
            FrameWriter.dataHead(7, length: 1, end: false, into: &out)
            out.writeInteger(UInt8(0))
        }
        #expect(try peer.frames() == [.goAway(lastStream: 0, .protocolError)])
        #expect(!peer.tunnel.isActive && stream.gone)
        socket.embeddedEventLoop.run()
        #expect(!socket.isActive, "the stream's socket goes with the tunnel")
    }

    /// A peer's GOAWAY: the streams past its last are refused, no new call is taken (a new
    /// tunnel is opened instead), and the tunnel closes once its last stream ends.
    @Test func aGoAwayEndsTheTunnelOnceItsStreamsAreDone() throws {
        let (peer, _, stream, _) = try call()
        try peer.send { _, out in FrameWriter.goAway(lastStream: 1, .noError, into: &out) }
        let streams = try #require(stream.streams)
        #expect(!streams.call(FrameStream(), [":method": "CONNECT"]))
        #expect(peer.tunnel.isActive && !stream.gone, "stream 1 was taken: it goes on")
        try peer.send { _, out in FrameWriter.reset(1, .cancel, into: &out) }
        #expect(stream.gone && !peer.tunnel.isActive)
    }

    /// Calls past the peer's limit of open streams wait, and are opened as streams end.
    @Test func callsPastThePeersStreamLimitWaitForAStreamToEnd() throws {
        let (peer, _, stream, _) = try call()
        try peer.send { _, out in FrameWriter.settings([TunnelSetting(id: TunnelSetting.maxConcurrentStreams, value: 1)], into: &out) }
        let streams = try #require(stream.streams)
        let next = FrameStream()
        #expect(streams.call(next, [":method": "CONNECT", ":authority": "10.244.2.3:8080"]))
        #expect(try peer.frames() == [.settingsAck], "stream 1 is open: the call waits")
        try peer.send { _, out in FrameWriter.reset(1, .cancel, into: &out) }
        let opened = try peer.frames()
        guard case .headers(3, _, end: false)? = opened.first else {
            Issue.record("no CONNECT on stream 3 once stream 1 ended: \(opened)")
            return
        }
        #expect(stream.gone && !next.gone)
    }

    /// Random frames of every type, flags and stream, with payloads of random bytes (windows
    /// past 2^31, streams never opened, header blocks that do not decode): the tunnel never
    /// traps, and one that sent a GOAWAY is closed.
    @Test func randomFramesNeverTrap() async throws {
        var closed = 0
        for round in 0..<300 {
            if round % 20 == 0 { await Task.yield() }  // the cooperative pool is every suite's
            let (peer, socket, _, _) = try call()
            for _ in 0..<20 {
                // Mostly the length each type must have, so that most frames get past the framing.
                let type = UInt8.random(in: 0...10)
                let lengths: [UInt8: Int] = [2: 5, 3: 4, 4: 6 * Int.random(in: 0...2), 6: 8, 7: 8, 8: 4]
                let length = Bool.random() || Bool.random() ? lengths[type] ?? Int.random(in: 0...24) : Int.random(in: 0...24)
                var frame = ByteBuffer()
                let flags: UInt8 = Bool.random() ? [0, 1, 4, 5][Int.random(in: 0...3)] : UInt8.random(in: 0...255)
                FrameWriter.head(length, type, flags, [0, 1, 1, 2, 3, 5][Int.random(in: 0...5)], into: &frame)
                frame.writeBytes((0..<length).map { _ in UInt8.random(in: 0...255) })
                guard peer.tunnel.isActive else { break }
                try peer.tunnel.writeInbound(frame)
            }
            let frames = try peer.frames()
            if frames.contains(where: { if case .goAway = $0 { true } else { false } }) {
                #expect(!peer.tunnel.isActive, "\(frames)")
                closed += 1
            }
            _ = try? socket.finish()
            _ = try? peer.tunnel.finish()
        }
        #expect(closed > 0)
    }
}
