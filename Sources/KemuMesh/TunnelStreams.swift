import KemuAPI
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// The destination side's streams at the frame level: one handler after a tunnel's HTTP/2
/// handler (no multiplexer, so no channel and pipeline per stream) keeps each CONNECT's state,
/// answers it once the pod is reached (`TunnelServer`), and carries DATA between the stream and
/// the pod's socket. Flow control is done here: a stream's window is given back as the pod's
/// socket takes the bytes (not while it is full), the connection's as bytes arrive; a pod is read
/// only while its stream may send.
///
/// Confined to the tunnel's event loop, hence `@unchecked Sendable`.
final class TunnelStreams: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    let server: TunnelServer
    let peer: PeerIdentity
    var context: ChannelHandlerContext?
    var streams: [HTTP2StreamID: FrameStream] = [:]
    /// Streams whose pods were given bytes in this read: their sockets are flushed at its end.
    var delivered: [FrameStream] = []

    init(server: TunnelServer, peer: PeerIdentity) {
        self.server = server
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case let .headers(headers):
            guard streams[frame.streamID] == nil else { return }  // trailers: nothing to carry
            let stream = FrameStream(id: frame.streamID, streams: self)
            streams[frame.streamID] = stream
            server.open(stream, headers.headers)
        case let .data(payload):
            if let stream = streams[frame.streamID], stream.receive(payload) { delivered.append(stream) }
        case let .windowUpdate(increment) where frame.streamID != .rootStream:
            streams[frame.streamID]?.windowOpened(increment)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        for stream in delivered { stream.partner?.flushOut() }
        delivered.removeAll(keepingCapacity: true)
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let closed as StreamClosedEvent:
            streams.removeValue(forKey: closed.streamID)?.streamClosed()
        case let window as NIOHTTP2WindowUpdatedEvent where window.streamID == .rootStream:
            // The connection's window is given back as bytes arrive: each stream's holds its pod back.
            if let inbound = window.inboundWindowSize, let increment = Self.increment(inbound, target: TunnelSettings.connectionWindow) {
                write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)), flush: true)
            }
        case let window as NIOHTTP2WindowUpdatedEvent:
            if let inbound = window.inboundWindowSize { streams[window.streamID]?.inboundWindow(inbound) }
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
        let open = streams
        streams.removeAll()
        for stream in open.values { stream.streamClosed() }
        context.fireChannelInactive()
    }

    /// What to give back of a window down to `window` (nil while more than half is left).
    static func increment(_ window: Int, target: Int) -> Int? {
        window <= target / 2 ? target - window : nil
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

/// One tunnelled connection on the destination side: its stream's half of the glue (the pod's
/// socket is the other).
final class FrameStream: GlueSide, @unchecked Sendable {
    let id: HTTP2StreamID
    weak var streams: TunnelStreams?
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

    init(id: HTTP2StreamID, streams: TunnelStreams) {
        self.id = id
        self.streams = streams
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
        if payload.endStream {
            if let bytes, bytes.readableBytes > 0 {
                count(bytes.readableBytes)
                partner.deliver(bytes)
            }
            partner.flushOut()
            partner.endOutput()
            return false
        }
        guard let bytes, bytes.readableBytes > 0 else { return false }
        count(bytes.readableBytes)
        partner.deliver(bytes)
        return true
    }

    /// Hands the pod what came before the join.
    func flushEarly() {
        guard let partner else { return }
        for bytes in early where bytes.readableBytes > 0 {
            count(bytes.readableBytes)
            partner.deliver(bytes)
        }
        early.removeAll()
        partner.flushOut()
        if earlyEnd { partner.endOutput() }
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

    /// The stream closed (both ends, or reset), or the tunnel did.
    func streamClosed() {
        gone = true
        ended()
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

    override func flushOut() { streams?.context?.flush() }

    override func deliver(_ bytes: ByteBuffer) {
        guard !gone else { return }
        outboundWindow -= bytes.readableBytes
        streams?.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(bytes)))), flush: false)
    }

    override func endOutput() {
        guard !gone, !outputEnded, let streams, let context = streams.context else { return }
        outputEnded = true
        streams.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(context.channel.allocator.buffer(capacity: 0)), endStream: true))),
                      flush: true)
    }

    /// A stream both sides ended closes by itself once our END_STREAM is out; one still open
    /// either way is cancelled (RST_STREAM).
    override func closeAfterWrites() {
        guard !gone, let streams else { return }
        streams.context?.flush()
        if outputEnded && inputEnded { return }
        gone = true
        streams.reset(id, .cancel)
    }
}

extension TunnelServer {
    /// A stream's CONNECT, judged and then answered once the pod is reached: 200 (joined), 403
    /// (authorization refused), 400 (not a CONNECT to a meshed pod here), 503 (the pod refused or
    /// did not answer; `kemu-dial-errno` says why, as the dial's errno).
    func open(_ stream: FrameStream, _ headers: HPACKHeaders) {
        guard let streams = stream.streams, let loop = streams.context?.eventLoop else { return }
        guard let id = streams.peer.id, let (pod, ip, port) = target(headers) else {
            return streams.respond(stream.id, [":status": "400"], end: true)
        }
        let source = Self.source(headers)
        let request = TunnelRequest(peer: id, source: source, destination: pod, port: port)
        guard authorize(request) else { return streams.respond(stream.id, [":status": "403"], end: true) }
        let workload = headers.first(name: "baggage")?.split(separator: ",")
            .first { $0.hasPrefix("k8s.workload.name=") }.map { String($0.dropFirst("k8s.workload.name=".count)) }
        let key = MeshTraffic.Key(reporter: "destination", sourceWorkload: workload ?? "unknown",
                                  sourceNamespace: id.workload?.namespace ?? "unknown", sourcePrincipal: id.description,
                                  destinationWorkload: MeshTraffic.workload(pod: pod.name, labels: pod.labels),
                                  destinationNamespace: pod.namespace, destinationPrincipal: directory.identity(pod).description)
        let podSide = ByteSide()
        dial(ip, port, from: source, on: loop, side: podSide).whenComplete { [self] result in
            guard !stream.gone, stream.streams != nil else {
                if case let .success(channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case let .success(channel):
                counters.accepted()
                streams.respond(stream.id, [":status": "200"], end: false)
                GlueSide.join(stream, podSide, traffic: traffic.opened(key))
                stream.flushEarly()
                track(request, stream, pod: channel)
            case let .failure(error):
                counters.unreachable()
                // Why, as the errno the source's engine would have met dialling itself: a
                // NetworkPolicy's refusal (ENETUNREACH) is then not the endpoint's failure.
                var headers: HPACKHeaders = [":status": "503"]
                if let code = (error as? IOError)?.errnoCode { headers.add(name: Mesh.dialErrorHeader, value: String(code)) }
                streams.respond(stream.id, headers, end: true)
            }
        }
    }
}
