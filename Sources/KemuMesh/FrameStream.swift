import Glibc
import NIOCore
import NIOHPACK

/// One tunnelled connection's stream: its half of the glue (the socket, the pod's or the
/// client's, is the other). On the source side it belongs to a `Carriage`, which hears of the
/// answer (`onAnswer`), of the endpoint's first byte and of an end before it (a replay).
final class FrameStream: GlueSide, @unchecked Sendable {
    private(set) var id: UInt32 = 0
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
    /// This side's END_STREAM went out.
    var endSent = false
    /// The stream is over (both ends, or reset): nothing more is sent on it.
    var gone = false
    /// On the destination, what the stream was allowed as, once joined to its pod: judged
    /// again when the policies change (`TunnelServer.recheckLive`).
    var admitted: TunnelRequest?
    /// What the peer lets this stream send (its initial window, plus its WINDOW_UPDATEs, less
    /// what was sent).
    var sendWindow = 65535
    /// What this side lets the peer send on it before giving window back.
    var receiveWindow = TunnelSettings.streamWindow
    /// The window is not given back while the pod's socket is too full.
    private var withholding = false
    /// DATA past the windows, sent as they open (`pendingEnd`: with the stream's end).
    var pending: ByteBuffer?
    var pendingEnd = false
    /// The last bytes its socket gave, not yet a frame: written at the end of the loop's tick,
    /// or with the stream's end if that comes first (NIO reads a socket's bytes and its end in
    /// two steps): a response and its end in one DATA frame, not two.
    private var held: ByteBuffer?
    private var releasing = false

    func place(_ id: UInt32, in streams: TunnelStreams) {
        self.id = id
        self.streams = streams
        sendWindow = streams.peerStreamWindow
        streams.streams[id] = self
    }

    func answer(_ headers: HPACKHeaders) {
        guard !answered, let onAnswer else { return }
        answered = true
        onAnswer(headers)
    }

    /// DATA from the peer: true when the pod's socket was given bytes (to be flushed).
    func receive(_ bytes: ByteBuffer, end: Bool) -> Bool {
        if end { inputEnded = true }
        guard let partner else {
            early.append(bytes)
            if end { earlyEnd = true }
            return false
        }
        let delivered = bytes.readableBytes > 0
        if delivered {
            carriage?.answered()
            count(bytes.readableBytes)
            partner.deliver(bytes)
        }
        guard end else { return delivered }
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

    /// The peer gave window back (WINDOW_UPDATE), or the connection's opened.
    func windowOpened() {
        if sendWindow > 0 { mayRead() }
    }

    /// DATA came: its window goes back to the peer, unless the pod's socket is full.
    func inboundWindow() {
        if partner?.writable ?? true {
            giveBack()
        } else {
            withholding = true
            readPending = true  // the pod's side asks `resumeReading` once its socket drains
        }
    }

    private func giveBack() {
        withholding = false
        guard !gone, !inputEnded, let streams,
              let increment = TunnelStreams.increment(receiveWindow, target: TunnelSettings.streamWindow) else { return }
        receiveWindow += increment
        streams.windowUpdate(id, increment)
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
        if let streams, id != 0 { streams.reset(id, .cancel) }
    }

    // What the pod's side asks of the stream.

    override var writable: Bool {
        guard !gone, pending == nil, sendWindow > held?.readableBytes ?? 0, let streams else { return false }
        return streams.sendWindow > 0 && (streams.context?.channel.isWritable ?? false)
    }

    /// The pod's socket took what it was given: the window held back goes to the peer.
    override func resumeReading() {
        if withholding { giveBack() }
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
        if !gone { streams?.send(self, bytes, end: false) }
    }

    override func deliver(_ bytes: ByteBuffer) {
        guard !gone else { return }
        if let previous = held { streams?.send(self, previous, end: false) }
        held = bytes
    }

    override func endOutput() {
        guard !gone, !outputEnded, let streams else { return }
        outputEnded = true
        let last = held ?? ByteBuffer()
        held = nil
        streams.send(self, last, end: true)
    }

    /// A stream both sides ended closes by itself once our END_STREAM is out; one still open
    /// either way is cancelled (RST_STREAM). Called by the socket's side as it goes.
    override func closeAfterWrites() {
        guard !gone, let streams else { return }
        writeHeld()
        streams.flush()
        if outputEnded && inputEnded { return }
        gone = true
        streams.reset(id, .cancel)
    }
}
