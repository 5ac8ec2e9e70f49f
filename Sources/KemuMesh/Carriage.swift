import Glibc
import KemuProxy
import KemuSystem
import NIOCore

/// A connection the engine handed to the mesh on the source node: the client's socket, the
/// stream it travels in, and what the engine hears of it. The client's socket joins the stream
/// as soon as the stream is open in its tunnel, so that what the client sends travels right
/// behind the CONNECT (the endpoint's node keeps it until the pod is reached), not a round trip
/// after it; a stream still waiting for its tunnel is joined at the answer. Until the
/// endpoint's first byte, a copy of what the client sent is kept, so that a dial that fails, or
/// an endpoint that ends the connection unanswered, gives the socket back to the engine for
/// another endpoint (its retries, replay and ejection). Before the answer, bytes past what the
/// copy may hold are not sent but parked, and reading stops: a refusal gives the whole
/// connection back, whatever the client sent.
///
/// Confined to the mesh's event loop, hence `@unchecked Sendable`.
final class Carriage: @unchecked Sendable {
    let handoff: MeshHandoff
    /// Where its reports wait for the end of the loop's tick.
    let reports: ReportBatch
    /// Called once the engine has been told the end (returned or closed).
    private let done: () -> Void
    /// The client's socket, once joined to the stream (it then owns the descriptor).
    let clientSide: SocketSide
    private(set) var joined = false
    /// The stream it travels in (placed in a tunnel by `TunnelClient`).
    let streamSide = FrameStream()
    /// The tunnel its call went into (`TunnelClient.expire` listens for the peer in it).
    weak var tunnel: TunnelStreams?
    /// The endpoint's first byte (or a clean end) came back: no replay from now on.
    private(set) var settled = false
    /// All the client sent, while a replay is possible; nil once too much.
    private var flight: [UInt8]?
    var clientEnded: Bool
    /// The engine has been told the end.
    private(set) var finished = false
    /// The CONNECT was answered 200.
    private var reached = false
    /// Still waiting for the CONNECT's answer (`CallClock`).
    var waiting: Bool { !reached && !finished }
    /// What the client sent before the answer that the copy could not hold, and whether its
    /// end came after it: sent at the answer, or given back with the rest.
    private(set) var parked: ByteBuffer?
    private var parkedEnd = false

    init(_ handoff: MeshHandoff, reports: ReportBatch, loop: MeshLoop, done: @escaping () -> Void) {
        self.handoff = handoff
        self.reports = reports
        self.done = done
        clientSide = SocketSide(loop: loop)
        flight = handoff.flight
        clientEnded = handoff.clientEnded
        clientSide.carriage = self
        streamSide.carriage = self
    }

    func record(_ bytes: ByteBuffer) {
        guard !settled, let kept = flight else { return }
        if kept.count + bytes.readableBytes > handoff.replayBytes {
            flight = nil
        } else {
            flight!.append(contentsOf: bytes.readableBytesView)
        }
    }

    /// The client's bytes, on their way into the stream: false when they are parked instead
    /// (before the answer, past what the copy may hold).
    func admit(_ bytes: ByteBuffer) -> Bool {
        if !reached, parked != nil || (flight?.count ?? 0) + bytes.readableBytes > handoff.replayBytes {
            if parked == nil { parked = bytes } else { parked!.writeImmutableBuffer(bytes) }
            return false
        }
        record(bytes)
        return true
    }

    /// The client's end of input: false when it waits behind parked bytes.
    func admitEnd() -> Bool {
        clientEnded = true
        guard parked == nil else {
            parkedEnd = true
            return false
        }
        return true
    }

    /// Joins the client's socket to the stream (watched by the loop from now on): once.
    func join() {
        guard !finished, !joined else { return }
        joined = true
        if clientSide.attach(handoff.client) != nil {
            // Closed: nothing to give back.
            finish(.closed(token: handoff.token, bytesUp: 0, bytesDown: 0))
            streamSide.cancel()
            return
        }
        guard !streamSide.gone else { return streamGoneBeforeJoin() }
        if !handoff.flight.isEmpty {
            streamSide.deliver(ByteBuffer(bytes: handoff.flight))
            streamSide.flushOut()
        }
        takeWaiting()
        GlueSide.join(clientSide, streamSide, traffic: clientSide.traffic)  // nil until the answer
        streamSide.flushEarly()
    }

    /// What the client sent already (its request, mostly: it follows the handshake the engine
    /// accepted) goes into the stream at once, behind the CONNECT in the same write, rather than
    /// at the socket's first read event; as much as the copy for a replay may hold.
    private func takeWaiting() {
        let room = min(handoff.replayBytes - (flight?.count ?? handoff.replayBytes), 16 << 10)
        guard room > 0, !clientEnded else { return }
        var bytes = ByteBuffer()
        let fd = handoff.client
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { space in
            guard let base = space.baseAddress else { return 0 }
            return max(0, TCPSocket.receive(fd, into: base, count: room))
        }
        guard bytes.readableBytes > 0, admit(bytes) else { return }
        send(bytes)
    }

    /// The client's bytes (admitted) into the stream.
    private func send(_ bytes: ByteBuffer) {
        clientSide.count(bytes.readableBytes)
        streamSide.deliver(bytes)
        streamSide.flushOut()
    }

    /// The CONNECT's 200: the connection is counted, and the client joined (if it was not
    /// yet) or let go on (what was parked sent, reading resumed).
    func connected(traffic: MeshTraffic.Series) {
        // Too late (timed out, or the engine ended it): the socket is no longer the mesh's.
        guard !finished else {
            streamSide.cancel()
            return
        }
        reached = true
        reports.post(.connected(token: handoff.token), for: handoff)
        (clientSide.traffic, streamSide.traffic) = (traffic, traffic)
        traffic.received.add(clientSide.bytes, ordering: .relaxed)
        guard joined else { return join() }
        if let bytes = parked {
            parked = nil
            record(bytes)
            send(bytes)
        }
        if parkedEnd {
            parkedEnd = false
            streamSide.endOutput()
        } else if clientSide.readPending, streamSide.writable {
            clientSide.readPending = false
            clientSide.resumeReading()
        }
    }

    /// The stream went before the client joined it: what the endpoint said goes to the client,
    /// which is then closed; if it said nothing, the client goes elsewhere.
    private func streamGoneBeforeJoin() {
        let said = streamSide.early.filter { $0.readableBytes > 0 }
        if said.isEmpty {
            if !replayElsewhere(clean: false) { abort() }
            return
        }
        answered()
        finish(.closed(token: handoff.token, bytesUp: 0, bytesDown: said.reduce(0) { $0 + $1.readableBytes }))
        for bytes in said { clientSide.deliver(bytes) }
        clientSide.closeAfterWrites()
    }

    /// The stream ended (closed or reset). True when that is handled here: the client given
    /// back for a replay, or not joined yet (the CONNECT's answer, the adoption or the timeout
    /// decides what becomes of it).
    func streamEnded() -> Bool {
        guard !finished else { return false }
        if !joined { return true }
        return replayElsewhere(clean: false)
    }

    func answered() {
        guard !settled else { return }
        settle()
        reports.post(.answered(token: handoff.token), for: handoff)
    }

    func settle() {
        settled = true
        flight = nil
    }

    /// Before the CONNECT's answer: the dial failed (`error`, EACCES for the mesh's refusal).
    func failed(_ error: Int32) {
        if !giveBack(error) { abort() }
    }

    /// The endpoint ended the connection before its first byte: the client goes back to the
    /// engine for a replay. Not when it cannot be: answered already, too much sent to replay, or
    /// a clean end after the client finished (that is an answer).
    func replayElsewhere(clean: Bool) -> Bool {
        guard joined, !(clean && clientEnded) else { return false }
        return giveBack(ECONNRESET)
    }

    /// The client's socket back to the engine, with all it sent (the loop no longer watches it).
    private func giveBack(_ error: Int32) -> Bool {
        guard !finished, !settled, let flight else { return false }
        let fd = joined ? clientSide.release() : handoff.client
        finished = true  // before the stream ends: its end reports nothing more
        streamSide.partner = nil
        streamSide.cancel()
        let all = parked.map { flight + $0.readableBytesView } ?? flight
        reports.post(.returned(token: handoff.token, client: fd, error: error, flight: all, clientEnded: clientEnded), for: handoff)
        done()
        return true
    }

    /// Ends it here: the client reset (the engine asked, or nothing could be given back).
    func abort() {
        guard !finished else { return }
        if joined { clientSide.abort() } else { TCPSocket.abort(handoff.client) }
        streamSide.cancel()
        closed()
    }

    /// Over: the engine hears the bytes each way.
    func closed() {
        finish(.closed(token: handoff.token, bytesUp: clientSide.bytes, bytesDown: streamSide.bytes))
    }

    private func finish(_ report: TunnelReport) {
        guard !finished else { return }
        finished = true
        reports.post(report, for: handoff)
        done()
    }
}

/// The reports of the carriages on one event loop, given to the engines at the end of the
/// loop's tick rather than one at a time, and without waking an engine's thread unless it must
/// act (a connection given back): it takes them on its next turn, which under load comes every
/// few hundred microseconds; a millisecond on, an engine that did not turn is woken. Each woken
/// engine took this loop's core from it (three reports a connection: connected, answered,
/// closed). Confined to the loop, hence `@unchecked Sendable`.
final class ReportBatch: @unchecked Sendable {
    let loop: MeshLoop
    private var pending: [(handoff: MeshHandoff, report: TunnelReport)] = []
    /// The engines given reports without a wake-up, with the mark of the last.
    private var unwoken: [ObjectIdentifier: (inbox: EngineInbox, mark: Int)] = [:]
    private var nudging = false

    /// How long a report may wait for an engine's own turn (nanoseconds).
    static let patience: UInt64 = 1_000_000

    init(loop: MeshLoop) { self.loop = loop }

    func post(_ report: TunnelReport, for handoff: MeshHandoff) {
        if pending.isEmpty { loop.atPassEnd { self.flush() } }
        pending.append((handoff, report))
    }

    func flush() {
        let due = pending
        pending = []
        let now = monotonicNanoseconds()
        for (handoff, report) in due {
            if case .returned = report {
                handoff.report(report)  // the engine dials elsewhere: at once
            } else {
                unwoken[ObjectIdentifier(handoff.inbox)] = (handoff.inbox, handoff.post(report, at: now))
            }
        }
        guard !unwoken.isEmpty, !nudging else { return }
        nudging = true
        loop.after(Self.patience) { [self] in
            nudging = false
            for (inbox, mark) in unwoken.values { inbox.wake(unlessTakenSince: mark) }
            unwoken.removeAll(keepingCapacity: true)
        }
    }
}
