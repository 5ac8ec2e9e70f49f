import Logging
import NIOCore
import NIOHPACK

/// A tunnel's HTTP/2 connection (RFC 9113), right after TLS: frames in and out (`TunnelWire`),
/// the connection's settings and flow control, and each tunnelled connection's stream
/// (`FrameStream`). On the destination (`server` set) a stream is a CONNECT, answered once the
/// pod is reached (`TunnelServer.open`); on the source, `call` opens one for a client the engine
/// handed over. DATA goes between each stream and its socket (the pod's, or the client's).
///
/// Flow control: a stream's window is given back as its socket takes the bytes (not while it is
/// full), the connection's as bytes arrive; a socket is read only while its stream may send
/// (both windows open); DATA past a window waits in its stream. Everything written in a tick of
/// the event loop leaves at its end as one buffer: one TLS write for every stream that had
/// something to say.
///
/// Written for tunnels between node proxies, not as a general HTTP/2 stack: no priorities, no
/// push, header blocks only as big as a CONNECT's; a peer that breaks the protocol gets a
/// GOAWAY naming the frame at fault and loses the connection.
///
/// Confined to the tunnel's event loop, hence `@unchecked Sendable`.
final class TunnelStreams: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The destination side's server (nil on the source side).
    let server: TunnelServer?
    let peer: PeerIdentity
    var context: ChannelHandlerContext?
    var streams: [UInt32: FrameStream] = [:]
    /// Streams whose pods were given bytes in this read: their sockets are flushed at its end.
    var delivered: [FrameStream] = []
    /// The next stream a call opens (the client's are odd).
    var nextID: UInt32 = 1
    /// Calls made before the connection started, or past the peer's limit of open streams.
    var queued: [(stream: FrameStream, headers: HeaderBlock)] = []
    var started = false
    /// The peer said GOAWAY, or this side did: no new streams.
    var goingAway = false
    /// Streams holding DATA for the end of the loop's tick (`FrameStream.flushOut`).
    var holding: [FrameStream] = []
    /// Streams with DATA waiting for a window.
    var blocked: [FrameStream] = []
    var tickEndDue = false
    /// The peer broke the protocol: nothing more is read.
    var broken = false

    var reader: FrameReader
    var writer = FrameWriter()
    var inbound = ByteBuffer()
    private static let nothing = ByteBuffer()
    /// What was written this tick, sent at its end.
    var out = ByteBuffer()
    /// What the peer lets this side send on the connection (its WINDOW_UPDATEs on stream 0).
    var sendWindow = 65535
    /// What this side lets the peer send before giving window back.
    var receiveWindow = 65535
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE: a new stream's send window.
    var peerStreamWindow = 65535
    var peerMaxStreams = Int.max
    /// The highest stream the peer opened.
    var lastPeerStream: UInt32 = 0
    /// The label set of the last connection delivered from this tunnel (`TunnelServer.series`).
    var lastSeries: (baggage: String?, pod: MeshDirectory.LocalPod, series: MeshTraffic.Series)?
    /// Reads from the peer so far: a call waiting for its answer sees the peer alive, and busy
    /// answering calls before it, while this moves (`TunnelClient.expire`).
    private(set) var reads: UInt64 = 0

    init(server: TunnelServer?, peer: PeerIdentity) {
        self.server = server
        self.peer = peer
        reader = FrameReader(maxFrameSize: TunnelSettings.maxFrameSize, server: server != nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start() }
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        start()
        context.fireChannelActive()
    }

    /// The preface (a client's), this side's settings and the connection's window.
    func start() {
        guard !started else { return }
        started = true
        if server == nil { out.writeImmutableBuffer(FrameReader.preface) }
        FrameWriter.settings(TunnelSettings.local, into: &out)
        FrameWriter.windowUpdate(0, TunnelSettings.connectionWindow - receiveWindow, into: &out)
        receiveWindow = TunnelSettings.connectionWindow
        openQueued()
        flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        reads &+= 1
        do {
            // What the last read left (part of a frame) is completed from the new bytes, only as
            // far as needed; the rest is read where it lies (DATA in pieces: no copy).
            while inbound.readableBytes > 0, bytes.readableBytes > 0, !broken {
                var part = bytes.readSlice(length: min(reader.needed(inbound), bytes.readableBytes)) ?? ByteBuffer()
                inbound.writeBuffer(&part)
                while !broken, let frame = try reader.next(&inbound) { try handle(frame) }
            }
            let adopted = inbound.readableBytes == 0
            if adopted { inbound = bytes }
            while !broken, let frame = try reader.next(&inbound) { try handle(frame) }
            // Nothing of TLS's read buffer is kept here past the read: the part of a frame left
            // goes into a buffer of its own. A slice of it kept (even an empty one) made TLS's
            // next read copy its whole buffer, which never shrinks: after one bulk transfer, a
            // copy of hundreds of KiB per read (a third of the destination's CPU, one keep-alive
            // connection's p50 240 -> 290 us).
            if inbound.readableBytes == 0 {
                inbound = Self.nothing
            } else if adopted {
                var own = ByteBufferAllocator().buffer(capacity: inbound.readableBytes)
                own.writeBuffer(&inbound)
                inbound = own
            }
        } catch let error as TunnelWireError {
            fail(error)
        } catch {
            fail(TunnelWireError(code: .internalError, reason: "\(error)"))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        for stream in delivered {
            stream.flushDue = false
            stream.partner?.flushOut()
        }
        delivered.removeAll(keepingCapacity: true)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { streamsMayRead() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let open = Array(streams.values) + queued.map(\.stream)
        streams.removeAll()
        queued.removeAll()
        for stream in open { stream.streamClosed() }
        context.fireChannelInactive()
    }

    /// A stream no frame has opened yet (a frame on it is the peer's error).
    func idle(_ id: UInt32) -> Bool {
        isOurs(id) ? id >= nextID : id > lastPeerStream
    }

    func isOurs(_ id: UInt32) -> Bool { (id % 2 == 1) == (server == nil) }

    /// The peer broke the protocol: the connection ends with a GOAWAY that says why.
    func fail(_ error: TunnelWireError) {
        (goingAway, broken) = (true, true)
        FrameWriter.goAway(lastStream: lastPeerStream, error.code, into: &out)
        sendOut()
        Self.logger.info("tunnel peer \(peer.principal) broke HTTP/2: \(error)")
        context?.flush()
        context?.close(promise: nil)
    }

    static let logger = Logger(label: "kemu.mesh.tunnel")

    /// What to give back of a window down to `window` (nil while more than half is left).
    static func increment(_ window: Int, target: Int) -> Int? {
        window <= target / 2 ? target - window : nil
    }

    // What streams and their owners ask.

    /// Opens a stream for `stream` with `headers` (a CONNECT); false when this tunnel can open
    /// no more (gone, going away, or out of stream identifiers: a new tunnel is needed).
    func call(_ stream: FrameStream, _ headers: HPACKHeaders) -> Bool {
        call(stream, HeaderBlock(literal: headers))
    }

    func call(_ stream: FrameStream, _ headers: HeaderBlock) -> Bool {
        guard let context, !started || context.channel.isActive, !goingAway else { return false }
        guard Int(nextID) + 2 * queued.count < Int(Int32.max) else {
            // Out of stream identifiers: a new tunnel takes the next calls, this one ends with
            // its last stream.
            goingAway = true
            if streams.isEmpty && queued.isEmpty { context.close(promise: nil) }
            return false
        }
        queued.append((stream, headers))
        openQueued()
        return true
    }

    func openQueued() {
        guard started, !queued.isEmpty else { return }
        while !queued.isEmpty, streams.count < peerMaxStreams {
            let (stream, headers) = queued.removeFirst()
            guard !stream.gone else { continue }
            stream.place(nextID, in: self)
            nextID += 2
            sendHeaders(stream.id, headers, end: false)
        }
    }

    /// HEADERS: a CONNECT, or its answer (`end`: the stream's last word from this side).
    func sendHeaders(_ id: UInt32, _ headers: HPACKHeaders, end: Bool) {
        do {
            try writer.headers(id, headers, end: end, into: &out)
        } catch {
            return reset(id, .internalError)
        }
        sent(id, end: end)
    }

    /// HEADERS encoded already.
    func sendHeaders(_ id: UInt32, _ block: HeaderBlock, end: Bool) {
        writer.headers(id, block, end: end, into: &out)
        sent(id, end: end)
    }

    private func sent(_ id: UInt32, end: Bool) {
        flush()
        if end, let stream = streams[id] {
            stream.endSent = true
            closeIfDone(stream)
        }
    }

    /// Sends what windows allow of a stream's bytes; the rest waits in the stream for window.
    func send(_ stream: FrameStream, _ bytes: ByteBuffer, end: Bool) {
        if var pending = stream.pending {
            stream.pending = nil
            pending.writeImmutableBuffer(bytes)
            stream.pending = pending
            stream.pendingEnd = stream.pendingEnd || end
            return
        }
        var rest = bytes
        if !push(stream, &rest, end: end) {
            (stream.pending, stream.pendingEnd) = (rest, end)
            blocked.append(stream)
        }
    }

    /// Sends as much of `bytes` as the windows and the peer's frame size allow: true if all
    /// went (and the end with them).
    func push(_ stream: FrameStream, _ bytes: inout ByteBuffer, end: Bool) -> Bool {
        flush()
        repeat {
            let n = max(0, min(bytes.readableBytes, stream.sendWindow, sendWindow, writer.maxFrameSize))
            if n == 0 && bytes.readableBytes > 0 { return false }
            let part = bytes.readSlice(length: n) ?? ByteBuffer()
            stream.sendWindow -= n
            sendWindow -= n
            let last = end && bytes.readableBytes == 0
            FrameWriter.dataHead(stream.id, length: n, end: last, into: &out)
            if n > 4096 {  // large: its own write, not a copy
                sendOut()
                context?.write(wrapOutboundOut(part), promise: nil)
            } else {
                out.writeImmutableBuffer(part)
            }
        } while bytes.readableBytes > 0
        if end {
            stream.endSent = true
            closeIfDone(stream)
        }
        return true
    }

    func drainBlocked() {
        guard !blocked.isEmpty else { return }
        let due = blocked
        blocked.removeAll()
        for stream in due where !stream.gone {
            guard var rest = stream.pending else { continue }
            stream.pending = nil
            if push(stream, &rest, end: stream.pendingEnd) {
                stream.windowOpened()
            } else {
                stream.pending = rest
                blocked.append(stream)
            }
        }
    }

    func streamsMayRead() {
        for stream in streams.values { stream.mayRead() }
    }

    func windowUpdate(_ id: UInt32, _ increment: Int) {
        FrameWriter.windowUpdate(id, increment, into: &out)
        flush()
    }

    /// Resets a stream (RST_STREAM), which ends it here.
    func reset(_ id: UInt32, _ code: H2Code) {
        FrameWriter.reset(id, code, into: &out)
        flush()
        if let stream = streams[id] { finish(stream) }
    }

    func closeIfDone(_ stream: FrameStream) {
        if stream.inputEnded && stream.endSent { finish(stream) }
    }

    /// The stream is over (both ends, or a reset either way).
    func finish(_ stream: FrameStream) {
        guard streams[stream.id] === stream else { return }
        streams.removeValue(forKey: stream.id)
        stream.pending = nil
        stream.streamClosed()
        openQueued()
        if goingAway && streams.isEmpty { context?.close(promise: nil) }
    }

    /// Writes what `stream` holds at the end of the loop's tick, with every other stream's.
    func release(_ stream: FrameStream) {
        holding.append(stream)
        flush()
    }

    /// What was written goes out at the end of the loop's tick, with everything else written
    /// in it: the streams' held bytes, then every frame, in one write.
    func flush() {
        guard !tickEndDue, let context else { return }
        tickEndDue = true
        context.eventLoop.execute { [self] in
            while !holding.isEmpty {
                let due = holding
                holding.removeAll(keepingCapacity: true)
                for stream in due { stream.writeHeld() }
            }
            tickEndDue = false
            sendOut()
            self.context?.flush()
        }
    }

    /// Passes what was written so far to TLS (flushed by the caller, or at the tick's end).
    func sendOut() {
        guard out.readableBytes > 0, let context else { return }
        context.write(wrapOutboundOut(out), promise: nil)
        out = context.channel.allocator.buffer(capacity: 1024)
    }
}
