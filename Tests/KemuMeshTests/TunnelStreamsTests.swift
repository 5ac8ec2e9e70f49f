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

    /// The far end of a tunnelled connection's socket (a socket pair: the stream's `SocketSide`
    /// holds the other end), on a mesh loop the test turns itself.
    final class FarEnd {
        private(set) var fd: Int32
        let loop: MeshLoop
        /// Bytes still to write (a pattern), written as the side reads (`pump`).
        var outbox = 0

        init(fd: Int32, loop: MeshLoop) {
            self.fd = fd
            self.loop = loop
        }

        deinit {
            close()
            loop.stop()
        }

        func close() {
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }

        /// Writes what the outbox holds while the socket takes it, turning the loop (the side
        /// reads, the tunnel writes) until nothing moves.
        func pump() {
            var still = 0
            let chunk = [UInt8](repeating: 7, count: 64 << 10)
            while still < 3 {
                var moved = false
                while outbox > 0 {
                    let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, min(outbox, $0.count), Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                    guard n > 0 else { break }
                    outbox -= n
                    moved = true
                }
                loop.turn()
                still = moved ? 0 : still + 1
            }
        }

        func write(_ text: String) {
            _ = Array(text.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        }

        /// Reads all the side wrote so far (turning the loop between reads); nil once the side
        /// closed or shut its output.
        func drain() -> Int? {
            var total = 0
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            var still = 0
            while still < 3 {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n == 0 { return nil }
                if n > 0 {
                    total += n
                    still = 0
                } else {
                    still += 1
                }
                loop.turn()
            }
            return total
        }
    }

    /// A source-side tunnel, started, its peer's settings in, with one call placed and joined to
    /// a socket.
    func call() throws -> (peer: Peer, far: FarEnd, stream: FrameStream, side: SocketSide) {
        let loop = try MeshLoop(name: "test", threaded: false)
        let tunnel = EmbeddedChannel(loop: loop.nio)
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
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw IOError(errnoCode: errno, reason: "socketpair")
        }
        let side = SocketSide(loop: loop)
        #expect(side.attach(pair[0]) == nil)
        GlueSide.join(side, stream, traffic: nil)
        return (peer, FarEnd(fd: pair[1], loop: loop), stream, side)
    }

    @Test func aSocketIsNotReadPastItsStreamsWindow() throws {
        let (peer, far, stream, side) = try call()
        far.outbox = TunnelSettings.streamWindow
        far.pump()
        #expect(try peer.sent().data == TunnelSettings.streamWindow)
        #expect(!stream.writable, "the peer's window is spent")
        far.outbox = 1
        far.pump()
        #expect(side.readPending, "the socket waits for the window")
        try peer.send { _, out in FrameWriter.windowUpdate(1, 1 << 20, into: &out) }
        far.pump()
        #expect(try peer.sent().data == 1, "window given back: the socket is read again")
        #expect(stream.writable && !side.readPending)
    }

    /// Bytes past the connection's window wait in their stream, and go when it opens.
    @Test func bytesPastTheConnectionsWindowWaitForIt() throws {
        let (peer, far, stream, _) = try call()
        try peer.send { _, out in FrameWriter.settings([TunnelSetting(id: TunnelSetting.initialWindowSize, value: 1 << 30)], into: &out) }
        far.outbox = TunnelSettings.connectionWindow + (4 << 20)
        far.pump()
        #expect(try peer.sent().data == TunnelSettings.connectionWindow, "the connection's window, no more")
        #expect(!stream.writable)
        try peer.send { _, out in FrameWriter.windowUpdate(0, 1 << 20, into: &out) }
        far.pump()
        #expect(try peer.sent().data == 1 << 20)
        try peer.send { _, out in FrameWriter.windowUpdate(0, TunnelSettings.connectionWindow, into: &out) }
        far.pump()
        #expect(try peer.sent().data == 3 << 20, "the rest, once the window opens")
        #expect(stream.writable)
    }

    @Test func aStreamsWindowWaitsForItsSocketToDrain() throws {
        let (peer, far, _, _) = try call()
        try peer.send { _, out in
            for _ in 0..<3 {
                FrameWriter.dataHead(1, length: 1 << 20, end: false, into: &out)
                out.writeRepeatingByte(9, count: 1 << 20)
            }
        }
        far.pump()
        #expect(try peer.sent().windowUpdates.isEmpty, "no window back while the socket is full")
        var read = 0
        while read < 3 << 20, let n = far.drain(), n > 0 { read += n }
        #expect(read == 3 << 20)
        #expect(try peer.sent().windowUpdates == [3 << 20])
    }

    /// The endpoint ended its side, the client's output was ended, then the client closed: the
    /// stream ends cleanly (an END_STREAM, no reset). A client that fails resets it.
    @Test func aSocketClosedAfterItsOutputEndsItsStreamCleanly() throws {
        let (peer, far, stream, side) = try call()
        try peer.send { _, out in FrameWriter.dataHead(1, length: 0, end: true, into: &out) }
        far.pump()
        #expect(side.outputEnded)
        #expect(far.drain() == nil, "the socket's output was shut")
        shutdown(far.fd, Int32(SHUT_WR))
        far.pump()
        let clean = try peer.sent()
        #expect(clean.ends == 1 && clean.resets == 0, "\(clean)")
        #expect(stream.gone, "both ends sent: the stream is over")

        // The client goes with bytes unread: its socket is reset (ECONNRESET), and so is the stream.
        let (peer2, far2, _, _) = try call()
        try peer2.send { _, out in
            FrameWriter.dataHead(1, length: 5, end: false, into: &out)
            out.writeString("hello")
        }
        far2.pump()
        far2.close()
        far2.pump()
        #expect(try peer2.sent().resets == 1)
    }

    /// A socket's last bytes and its end leave in one DATA frame, END_STREAM set (a frame less
    /// per connection).
    @Test func aSocketsLastBytesAndItsEndGoInOneFrame() throws {
        let (peer, far, _, _) = try call()
        far.write("HTTP/1.1 200 OK\r\n\r\n")
        shutdown(far.fd, Int32(SHUT_WR))
        far.pump()
        let frames = try peer.frames()
        #expect(frames.count == 1, "\(frames)")
        guard case let .data(1, bytes, end: true, _)? = frames.first else {
            Issue.record("no DATA with END_STREAM: \(frames)")
            return
        }
        #expect(bytes.readableBytes == 19)
        // Bytes with no end behind them go out at the tick's end, the stream open.
        let (peer2, far2, _, _) = try call()
        far2.write("more")
        far2.pump()
        let more = try peer2.sent()
        #expect(more.data == 4 && more.ends == 0)
    }

    /// A ping is answered; DATA on a stream never opened is the peer's error: a GOAWAY that says
    /// so, the tunnel closed, and its streams' sockets with it.
    @Test func aPeerThatBreaksTheProtocolLosesTheTunnel() throws {
        let (peer, far, stream, _) = try call()
        try peer.send { _, out in FrameWriter.ping(42, ack: false, into: &out) }
        #expect(try peer.frames() == [.ping(42, ack: true)])
        try peer.send { _, out in
            FrameWriter.dataHead(7, length: 1, end: false, into: &out)
            out.writeInteger(UInt8(0))
        }
        #expect(try peer.frames() == [.goAway(lastStream: 0, .protocolError)])
        #expect(!peer.tunnel.isActive && stream.gone)
        #expect(far.drain() == nil, "the stream's socket goes with the tunnel")
    }

    /// A peer's GOAWAY: the streams past its last are refused, no new call is taken (a new
    /// tunnel is opened instead), and the tunnel closes once its last stream ends.
    @Test func aGoAwayEndsTheTunnelOnceItsStreamsAreDone() throws {
        let (peer, far, stream, _) = try call()
        defer { withExtendedLifetime(far) {} }  // its end would end the stream
        try peer.send { _, out in FrameWriter.goAway(lastStream: 1, .noError, into: &out) }
        let streams = try #require(stream.streams)
        #expect(!streams.call(FrameStream(), [":method": "CONNECT"]))
        #expect(peer.tunnel.isActive && !stream.gone, "stream 1 was taken: it goes on")
        try peer.send { _, out in FrameWriter.reset(1, .cancel, into: &out) }
        #expect(stream.gone && !peer.tunnel.isActive)
    }

    /// Calls past the peer's limit of open streams wait, and are opened as streams end.
    @Test func callsPastThePeersStreamLimitWaitForAStreamToEnd() throws {
        let (peer, far, stream, _) = try call()
        defer { withExtendedLifetime(far) {} }
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

    /// Nothing of a read's bytes is kept past the read, not even the part of a frame it ends
    /// with: TLS reads every record into one buffer that never shrinks, and a slice of it kept
    /// here made its next read copy it whole (hundreds of KiB after one bulk transfer). A write
    /// to the buffer after the read stays in place only if the tunnel let go of it.
    @Test func aReadsBufferIsNotKeptPastTheRead() throws {
        let (peer, far, _, _) = try call()
        defer { withExtendedLifetime(far) {} }
        var frames = ByteBuffer()
        FrameWriter.ping(1, ack: false, into: &frames)
        FrameWriter.ping(2, ack: false, into: &frames)
        for cut in [frames.readableBytes, frames.readableBytes - 3] {  // whole frames; a frame cut short
            var read = ByteBufferAllocator().buffer(capacity: 64 << 10)
            read.writeImmutableBuffer(frames.getSlice(at: frames.readerIndex, length: cut)!)
            try peer.tunnel.writeInbound(read)
            let before = read.withVeryUnsafeBytes { $0.baseAddress }
            read.writeInteger(UInt8(0))
            #expect(read.withVeryUnsafeBytes { $0.baseAddress } == before, "the read's buffer was copied: the tunnel kept a part of it")
            if cut < frames.readableBytes { try peer.tunnel.writeInbound(frames.getSlice(at: frames.readerIndex + cut, length: 3)!) }
            #expect(try peer.frames() == [.ping(1, ack: true), .ping(2, ack: true)])
        }
    }

    /// Random frames of every type, flags and stream, with payloads of random bytes (windows
    /// past 2^31, streams never opened, header blocks that do not decode): the tunnel never
    /// traps, and one that sent a GOAWAY is closed.
    @Test func randomFramesNeverTrap() async throws {
        var closed = 0
        for round in 0..<300 {
            if round % 20 == 0 { await Task.yield() }  // the cooperative pool is every suite's
            let (peer, far, _, _) = try call()
            defer { withExtendedLifetime(far) {} }
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
            _ = try? peer.tunnel.finish()
        }
        #expect(closed > 0)
    }
}
