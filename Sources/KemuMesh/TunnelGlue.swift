import NIOCore

/// One side of a tunnelled connection: a socket (`SocketSide`: the client's the engine handed
/// over, or the endpoint pod's) or an HTTP/2 stream (`FrameStream`), joined to its partner on
/// the same loop. Bytes read on one side are written on the other; reading
/// stops while the partner cannot take more (its socket's buffer full, or HTTP/2 flow control);
/// an end of input is carried across as a half-close (a shutdown of the socket's output,
/// END_STREAM on the stream); a side that goes away takes the other with it.
///
/// Confined to its event loop (every call is on it), hence `@unchecked Sendable`.
class GlueSide: @unchecked Sendable {
    var partner: GlueSide?
    /// A read asked for while the partner was full.
    var readPending = false
    /// This side's output was ended (half-close sent).
    var outputEnded = false
    /// The connection's label set (`istio_tcp_*`), shared by both sides.
    var traffic: MeshTraffic.Series?
    /// What this side reads is the request (client to server), else the response.
    var carriesRequest = false
    /// Closed once, by whichever side goes first.
    var counted = false
    /// The bytes this side read (and passed on).
    var bytes = 0
    /// An error ended this side (a reset, say), not an end of its input.
    var failed = false
    /// On the source node, the connection the engine handed over (both sides share it; it
    /// holds them, and the mesh holds it until the engine has been told the end).
    weak var carriage: Carriage?

    func count(_ n: Int) {
        bytes += n
        guard let traffic else { return }
        if carriesRequest { traffic.received.add(n, ordering: .relaxed) } else { traffic.sent.add(n, ordering: .relaxed) }
    }

    /// Joins two sides (`a` reads the request); each starts reading.
    static func join(_ a: GlueSide, _ b: GlueSide, traffic: MeshTraffic.Series?) {
        a.partner = b
        b.partner = a
        (a.traffic, b.traffic, a.carriesRequest) = (traffic, traffic, true)
        a.startReading()
        b.startReading()
    }

    /// This side may take more again: a partner paused for it reads.
    func becameWritable() {
        if let partner, partner.readPending {
            partner.readPending = false
            partner.resumeReading()
        }
    }

    /// This side is gone: the partner closes once its writes are out.
    func ended() {
        countClosed()
        carriage?.closed()
        partner?.closeAfterWrites()
        partner = nil
    }

    /// The connection is counted closed once, by whichever side goes first.
    func countClosed() {
        guard !counted, let traffic else { return }
        counted = true
        partner?.counted = true
        traffic.closed.add(1, ordering: .relaxed)
    }

    // What the partner asks of this side.

    func startReading() {}
    var writable: Bool { false }
    /// Sends what was delivered (`deliver`) so far.
    func flushOut() {}
    /// Takes input again after a pause for the partner (`readPending`).
    func resumeReading() {}
    func deliver(_ bytes: ByteBuffer) {}
    func endOutput() {}
    /// The output ends right after what was delivered: it may wait to go out with the end.
    func holdForEnd() {}
    /// Closes once what was written is out.
    func closeAfterWrites() {}
}
