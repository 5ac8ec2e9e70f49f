import Glibc
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// A tunnel's streams at the frame level: one handler after the tunnel's HTTP/2 handler (no
/// multiplexer, so no channel and pipeline per stream) keeps each tunnelled connection's state.
/// On the destination (`server` set) a stream is a CONNECT, answered once the pod is reached
/// (`TunnelServer.open`); on the source, `call` opens one for a client the engine handed over.
/// DATA goes between each stream and its socket (the pod's, or the client's). Flow control is
/// done here: a stream's window is given back as its socket takes the bytes (not while it is
/// full), the connection's as bytes arrive; a socket is read only while its stream may send.
///
/// Confined to the tunnel's event loop, hence `@unchecked Sendable`.
final class TunnelStreams: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// The destination side's server (nil on the source side).
    let server: TunnelServer?
    let peer: PeerIdentity
    var context: ChannelHandlerContext?
    var streams: [HTTP2StreamID: FrameStream] = [:]
    /// Streams whose pods were given bytes in this read: their sockets are flushed at its end.
    var delivered: [FrameStream] = []
    /// The next stream a call opens (the client's are odd).
    var nextID = 1
    /// Calls made before the HTTP/2 handler saw the channel active (and sent its preface): the
    /// connect's future completes first.
    var waiting: [(stream: FrameStream, headers: HPACKHeaders)]? = []
    /// Streams holding DATA for the end of the loop's tick (`FrameStream.flushOut`).
    private var holding: [FrameStream] = []

    init(server: TunnelServer?, peer: PeerIdentity) {
        self.server = server
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        let calls = waiting ?? []
        waiting = nil
        for (stream, headers) in calls where !stream.gone { send(stream, headers) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case let .headers(headers):
            if let stream = streams[frame.streamID] {
                stream.answer(headers.headers)  // a call's answer (trailers: nothing to carry)
            } else if let server {
                let stream = FrameStream()
                stream.place(frame.streamID, in: self)
                server.open(stream, headers.headers)
            }
        case let .data(payload):
            if let stream = streams[frame.streamID], stream.receive(payload), !stream.flushDue {
                stream.flushDue = true
                delivered.append(stream)
            }
        case let .windowUpdate(increment) where frame.streamID != .rootStream:
            streams[frame.streamID]?.windowOpened(increment)
        default:
            break
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Window events first: one comes with every DATA frame, a close once a stream.
        switch event {
        case let window as NIOHTTP2WindowUpdatedEvent where window.streamID == .rootStream:
            // The connection's window is given back as bytes arrive: each stream's holds its pod back.
            if let inbound = window.inboundWindowSize, let increment = Self.increment(inbound, target: TunnelSettings.connectionWindow) {
                write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)), flush: true)
            }
        case let window as NIOHTTP2WindowUpdatedEvent:
            if let inbound = window.inboundWindowSize { streams[window.streamID]?.inboundWindow(inbound) }
        case let closed as StreamClosedEvent:
            streams.removeValue(forKey: closed.streamID)?.streamClosed()
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for stream in streams.values { stream.mayRead() }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let open = Array(streams.values) + (waiting ?? []).map(\.stream)
        streams.removeAll()
        waiting = nil
        for stream in open { stream.streamClosed() }
        context.fireChannelInactive()
    }

    /// What to give back of a window down to `window` (nil while more than half is left).
    static func increment(_ window: Int, target: Int) -> Int? {
        window <= target / 2 ? target - window : nil
    }

    /// Opens a stream for `stream` with `headers` (a CONNECT); false when this tunnel can open
    /// no more (gone, or out of stream identifiers: a new tunnel is needed).
    func call(_ stream: FrameStream, _ headers: HPACKHeaders) -> Bool {
        guard let context, waiting != nil || context.channel.isActive, nextID < Int(Int32.max) else { return false }
        if waiting != nil {
            waiting?.append((stream, headers))
        } else {
            send(stream, headers)
        }
        return true
    }

    private func send(_ stream: FrameStream, _ headers: HPACKHeaders) {
        stream.place(HTTP2StreamID(nextID), in: self)
        nextID += 2
        write(HTTP2Frame(streamID: stream.id, payload: .headers(.init(headers: headers))), flush: true)
    }

    /// Writes what `stream` holds at the end of the loop's tick, with every other stream's.
    func release(_ stream: FrameStream) {
        holding.append(stream)
        guard holding.count == 1, let context else { return }
        context.eventLoop.execute { [self] in
            let due = holding
            holding.removeAll(keepingCapacity: true)
            for stream in due { stream.writeHeld() }
            self.context?.flush()
        }
    }

    func write(_ frame: HTTP2Frame, flush: Bool) {
        guard let context else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        if flush { context.flush() }
    }

    func respond(_ id: HTTP2StreamID, _ headers: HPACKHeaders, end: Bool) {
        write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: end))), flush: true)
    }

    func reset(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) {
        write(HTTP2Frame(streamID: id, payload: .rstStream(code)), flush: true)
    }
}

/// One tunnelled connection's stream: its half of the glue (the socket, the pod's or the
/// client's, is the other). On the source side it belongs to a `Carriage`, which hears of the
/// answer (`onAnswer`), of the endpoint's first byte and of an end before it (a replay).
final class FrameStream: GlueSide, @unchecked Sendable {
    private(set) var id = HTTP2StreamID.rootStream
    weak var streams: TunnelStreams?
    /// A call's answer (the CONNECT's response headers), once.
    var onAnswer: ((HPACKHeaders) -> Void)?
    var answered = false
    /// Its socket was given bytes in the tunnel's current read (flushed at its end).
    var flushDue = false
    /// DATA that came before the pod was joined (kept, then delivered).
    var early: [ByteBuffer] = []
    var earlyEnd = false
    /// The peer ended its side (END_STREAM received).
    var inputEnded = false
    /// The stream is over (both ends, or reset): nothing more is sent on it.
    var gone = false
    /// What may still be sent before the peer gives window back: its initial window (the tunnel's
    /// settings, both ends'), less what was written, plus what it gave back. Counted here, as
    /// the HTTP/2 handler reports its window only as frames leave its buffer.
    var outboundWindow = TunnelSettings.streamWindow
    /// The inbound window last heard of, while the pod's socket is too full to give any back.
    var withheld: Int?
    /// The last bytes its socket gave, not yet a frame: written at the end of the loop's tick,
    /// or with the stream's end if that comes first (NIO reads a socket's bytes and its end in
    /// two steps): a response and its end in one DATA frame, not two.
    private var held: ByteBuffer?
    private var releasing = false

    func place(_ id: HTTP2StreamID, in streams: TunnelStreams) {
        self.id = id
        self.streams = streams
        streams.streams[id] = self
    }

    func answer(_ headers: HPACKHeaders) {
        guard !answered, let onAnswer else { return }
        answered = true
        onAnswer(headers)
    }

    /// DATA from the peer: true when the pod's socket was given bytes (to be flushed).
    func receive(_ payload: HTTP2Frame.FramePayload.Data) -> Bool {
        if payload.endStream { inputEnded = true }
        let bytes: ByteBuffer? = if case let .byteBuffer(b) = payload.data { b } else { nil }
        guard let partner else {
            if let bytes { early.append(bytes) }
            if payload.endStream { earlyEnd = true }
            return false
        }
        let delivered = (bytes?.readableBytes ?? 0) > 0
        if let bytes, delivered {
            carriage?.answered()
            count(bytes.readableBytes)
            partner.deliver(bytes)
        }
        guard payload.endStream else { return delivered }
        passEnd(partner, unsent: delivered || flushDue)
        return false
    }

    /// The peer's END_STREAM: the socket's output ends, unless (on the source side) it came
    /// unanswered while the client was still sending: the client is then replayed elsewhere, as
    /// the engine replays a connection closed before its first byte. Bytes given to the socket
    /// in the same read (`unsent`) go out with its FIN, in one segment.
    private func passEnd(_ partner: GlueSide, unsent: Bool = false) {
        if let carriage {
            if carriage.replayElsewhere(clean: true) { return }
            carriage.settle()
        }
        if unsent { partner.holdForEnd() }
        partner.flushOut()
        partner.endOutput()
    }

    /// Hands the socket what came before the join.
    func flushEarly() {
        guard let partner else { return }
        for bytes in early where bytes.readableBytes > 0 {
            carriage?.answered()
            count(bytes.readableBytes)
            partner.deliver(bytes)
        }
        early.removeAll()
        partner.flushOut()
        if earlyEnd { passEnd(partner) }
    }

    /// The peer gave window back (WINDOW_UPDATE).
    func windowOpened(_ increment: Int) {
        outboundWindow += increment
        if outboundWindow > 0 { mayRead() }
    }

    /// The stream's inbound window, as DATA came.
    func inboundWindow(_ inbound: Int) {
        if partner?.writable ?? true {
            giveBack(inbound)
        } else {
            withheld = inbound
            readPending = true  // the pod's side asks `resumeReading` once its socket drains
        }
    }

    private func giveBack(_ inbound: Int) {
        withheld = nil
        guard !gone, !inputEnded, let increment = TunnelStreams.increment(inbound, target: TunnelSettings.streamWindow) else { return }
        streams?.write(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment)), flush: true)
    }

    /// The stream may send again: the pod, paused for it, is read.
    func mayRead() {
        if let partner, partner.readPending, writable {
            partner.readPending = false
            partner.resumeReading()
        }
    }

    /// The endpoint's side ended before its first byte: the client may go elsewhere (the
    /// carriage decides); else the client's side closes.
    override func ended() {
        countClosed()
        if let carriage, carriage.streamEnded() { return }
        super.ended()
    }

    /// The stream closed (both ends, or reset), or the tunnel did. A call not answered yet failed.
    func streamClosed() {
        gone = true
        if onAnswer != nil && !answered {
            answered = true
            carriage?.failed(ECONNRESET)
        }
        ended()
    }

    /// Ends the stream from this side: a reset, if it is still open (and placed).
    func cancel() {
        guard !gone else { return }
        gone = true
        if let streams, id != .rootStream { streams.reset(id, .cancel) }
    }

    // What the pod's side asks of the stream.

    override var writable: Bool {
        !gone && outboundWindow > 0 && (streams?.context?.channel.isWritable ?? false)
    }

    /// The pod's socket took what it was given: the window held back goes to the peer.
    override func resumeReading() {
        if let withheld { giveBack(withheld) }
    }

    override func startReading() {}

    /// What was delivered goes out at the end of the loop's tick.
    override func flushOut() {
        guard held != nil, !releasing, let streams else { return }
        releasing = true
        streams.release(self)
    }

    func writeHeld() {
        releasing = false
        guard let bytes = held else { return }
        held = nil
        if !gone { writeData(bytes, end: false) }
    }

    private func writeData(_ bytes: ByteBuffer, end: Bool) {
        streams?.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(bytes), endStream: end))), flush: end)
    }

    override func deliver(_ bytes: ByteBuffer) {
        guard !gone else { return }
        outboundWindow -= bytes.readableBytes
        if let previous = held { writeData(previous, end: false) }
        held = bytes
    }

    override func endOutput() {
        guard !gone, !outputEnded, let context = streams?.context else { return }
        outputEnded = true
        let last = held ?? context.channel.allocator.buffer(capacity: 0)
        held = nil
        writeData(last, end: true)
    }

    /// A stream both sides ended closes by itself once our END_STREAM is out; one still open
    /// either way is cancelled (RST_STREAM).
    override func closeAfterWrites() {
        guard !gone, let streams else { return }
        writeHeld()
        streams.context?.flush()
        if outputEnded && inputEnded { return }
        gone = true
        streams.reset(id, .cancel)
    }
}
