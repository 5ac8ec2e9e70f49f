import Glibc
import KemuProxy
import KemuSystem
import NIOCore
import NIOPosix

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
    var client: (any Channel)?
    let clientSide = ByteSide()
    /// The stream it travels in (placed in a tunnel by `TunnelClient`).
    let streamSide = FrameStream()
    /// The tunnel its call went into (`TunnelClient.expire` listens for the peer in it).
    weak var tunnel: TunnelStreams?
    /// The endpoint's first byte (or a clean end) came back: no replay from now on.
    private(set) var settled = false
    /// All the client sent, while a replay is possible; nil once too much.
    private var flight: [UInt8]?
    var clientEnded: Bool
    /// The client's socket is being (or was) adopted by a channel: it owns the descriptor.
    private var adopting = false
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

    init(_ handoff: MeshHandoff, reports: ReportBatch, done: @escaping () -> Void) {
        self.handoff = handoff
        self.reports = reports
        self.done = done
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

    /// Joins the client's socket to the stream (adopted by a channel on `loop`): once.
    func join(on loop: any EventLoop) {
        guard !finished, !adopting else { return }
        adopting = true
        clientSide.adopt(handoff.client, on: loop) { [self] result in
            guard case let .success(channel) = result else {
                // NIO closed the socket: nothing to give back.
                finish(.closed(token: handoff.token, bytesUp: 0, bytesDown: 0))
                streamSide.cancel()
                return
            }
            client = channel
            guard !finished else {
                // The engine ended it meanwhile (`abort`): the client is reset now.
                TCPSocket.setResetOnClose(handoff.client)
                channel.close(promise: nil)
                return
            }
            guard !streamSide.gone else {
                // The stream was reset while the socket was adopted.
                streamGoneBeforeJoin(channel)
                return
            }
            if !handoff.flight.isEmpty {
                streamSide.deliver(channel.allocator.buffer(bytes: handoff.flight))
                streamSide.flushOut()
            }
            takeWaiting(channel.allocator)
            GlueSide.join(clientSide, streamSide, traffic: clientSide.traffic)  // nil until the answer
            streamSide.flushEarly()
        }
    }

    /// What the client sent already (its request, mostly: it follows the handshake the engine
    /// accepted) goes into the stream at once, behind the CONNECT in the same write, rather than
    /// at the socket's first read event; as much as the copy for a replay may hold.
    private func takeWaiting(_ allocator: ByteBufferAllocator) {
        let room = min(handoff.replayBytes - (flight?.count ?? handoff.replayBytes), 16 << 10)
        guard room > 0, !clientEnded else { return }
        var bytes = allocator.buffer(capacity: room)
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
    func connected(on loop: any EventLoop, traffic: MeshTraffic.Series) {
        // Too late (timed out, or the engine ended it): the socket is no longer the mesh's.
        guard !finished else {
            streamSide.cancel()
            return
        }
        reached = true
        reports.post(.connected(token: handoff.token), for: handoff)
        (clientSide.traffic, streamSide.traffic) = (traffic, traffic)
        traffic.received.add(clientSide.bytes, ordering: .relaxed)
        guard adopting else { return join(on: loop) }
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
    private func streamGoneBeforeJoin(_ channel: any Channel) {
        let said = streamSide.early.filter { $0.readableBytes > 0 }
        if said.isEmpty {
            if !replayElsewhere(clean: false) { abort() }
            return
        }
        answered()
        for bytes in said { channel.write(bytes, promise: nil) }
        channel.writeAndFlush(channel.allocator.buffer(capacity: 0)).whenComplete { _ in channel.close(promise: nil) }
        finish(.closed(token: handoff.token, bytesUp: 0, bytesDown: said.reduce(0) { $0 + $1.readableBytes }))
    }

    /// The stream ended (closed or reset). True when that is handled here: the client given
    /// back for a replay, or not joined yet (the CONNECT's answer, the adoption or the timeout
    /// decides what becomes of it).
    func streamEnded() -> Bool {
        guard !finished else { return false }
        if client == nil { return true }
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
        guard client != nil, !(clean && clientEnded) else { return false }
        return giveBack(ECONNRESET)
    }

    /// The client's socket back to the engine, with all it sent. Once adopted, the channel owns
    /// the descriptor: the engine gets a new one of the same socket, and the channel closes its
    /// own.
    private func giveBack(_ error: Int32) -> Bool {
        // Not while a channel adopts the socket: it owns the descriptor, and has no new one yet.
        guard !finished, !settled, let flight, !(adopting && client == nil) else { return false }
        let fd = client == nil ? handoff.client : dup(handoff.client)
        guard fd >= 0 else { return false }
        finished = true  // before the channels close: their ends report nothing more
        detach()
        let all = parked.map { flight + $0.readableBytesView } ?? flight
        reports.post(.returned(token: handoff.token, client: fd, error: error, flight: all, clientEnded: clientEnded), for: handoff)
        done()
        return true
    }

    /// Ends it here: the client reset (the engine asked, or nothing could be given back).
    func abort() {
        guard !finished else { return }
        if adopting && client == nil {
            // The socket is being adopted: the adoption closes it, seeing this.
            streamSide.cancel()
            closed()
            return
        }
        // The channel (if adopted) owns the descriptor while open: the option is the socket's.
        TCPSocket.setResetOnClose(handoff.client)
        if let client { client.close(promise: nil) } else { close(handoff.client) }
        streamSide.cancel()
        closed()
    }

    /// Over: the engine hears the bytes each way.
    func closed() {
        finish(.closed(token: handoff.token, bytesUp: clientSide.bytes, bytesDown: streamSide.bytes))
    }

    private func detach() {
        clientSide.partner = nil
        streamSide.partner = nil
        client?.close(promise: nil)
        streamSide.cancel()
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
    let loop: any EventLoop
    private var pending: [(handoff: MeshHandoff, report: TunnelReport)] = []
    /// The engines given reports without a wake-up, with the mark of the last.
    private var unwoken: [ObjectIdentifier: (inbox: EngineInbox, mark: Int)] = [:]
    private var nudge: Scheduled<Void>?

    /// How long a report may wait for an engine's own turn.
    static let patience = TimeAmount.milliseconds(1)

    init(loop: any EventLoop) { self.loop = loop }

    func post(_ report: TunnelReport, for handoff: MeshHandoff) {
        if pending.isEmpty { loop.execute { self.flush() } }
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
        guard !unwoken.isEmpty, nudge == nil else { return }
        nudge = loop.scheduleTask(in: Self.patience) { [self] in
            nudge = nil
            for (inbox, mark) in unwoken.values { inbox.wake(unlessTakenSince: mark) }
            unwoken.removeAll(keepingCapacity: true)
        }
    }
}
