import NIOCore
import NIOPosix
import Synchronization

/// One side of a tunnelled connection: a byte channel (the client's socket the engine handed
/// over), a raw socket (the endpoint pod's, `PodSide`) or an HTTP/2 stream, joined to its
/// partner on the same event loop. Bytes read on one side are written on the other; reading
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

/// The byte channel side.
final class ByteSide: GlueSide, ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// A byte channel reads from its registration on (`adopt`): what it reads is first
    /// delivered on a later pass of the loop, after the join in the adoption's own call.
    override func startReading() { context?.read() }

    override var writable: Bool { context?.channel.isWritable ?? false }

    override func flushOut() { context?.flush() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { becameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushOut()
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
        context.close(promise: nil)
    }

    override func closeAfterWrites() {
        guard let context else { return }
        let channel = context.channel
        context.writeAndFlush(emptyWrite(context)).whenComplete { _ in channel.close(promise: nil) }
    }

    func emptyWrite(_ context: ChannelHandlerContext) -> NIOAny { NIOAny(context.channel.allocator.buffer(capacity: 0)) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let partner else { return }
        let bytes = unwrapInboundIn(data)
        if let carriage, !carriage.admit(bytes) { return }
        count(bytes.readableBytes)
        partner.deliver(bytes)
    }

    /// Not while the carriage parks what the client sent (until the CONNECT's answer), nor
    /// while the partner is full.
    func read(context: ChannelHandlerContext) {
        guard !heldForAnswer() else { return }
        if let partner, !partner.writable {
            readPending = true
            return
        }
        context.read()
    }

    override func resumeReading() {
        if !heldForAnswer() { context?.read() }
    }

    /// Whether the carriage parks what the client sent; if so, the read is noted as pending
    /// (`readPending`) and waits for the answer.
    private func heldForAnswer() -> Bool {
        guard carriage?.parked != nil else { return false }
        readPending = true
        return true
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent { inputEnded() }
        context.fireUserInboundEventTriggered(event)
    }

    /// The socket's input ended: so does the partner's output (after what was parked).
    private func inputEnded() {
        if let carriage, !carriage.admitEnd() { return }
        partner?.endOutput()
    }

    /// NIO closes a socket whose output was ended here once its input ends too, with no
    /// `inputClosed` event: that end is passed on as the event's would be (an END_STREAM, not the
    /// reset of a stream still open — one per connection, before).
    override func ended() {
        if outputEnded && !failed { inputEnded() }
        super.ended()
    }

    override func deliver(_ bytes: ByteBuffer) {
        context?.write(NIOAny(bytes), promise: nil)
    }

    /// A channel for a connected socket (the client's the engine handed over, or the pod's),
    /// with this side as its handler (`SocketAdopter`); `then` has it, within the call.
    func adopt(_ fd: Int32, on loop: any EventLoop, then: @escaping (Result<any Channel, any Error>) -> Void) {
        SocketAdopter.on(loop).adopt(fd, side: self, then: then)
    }

    /// Corks the socket: what is written next waits for the shutdown, and leaves with the FIN
    /// in one segment rather than two (one less packet through the client's stack, and its ACK).
    override func holdForEnd() {
        try? context?.channel.syncOptions?.setOption(Self.cork, value: 1)
    }

    static let cork = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_CORK))

    override func endOutput() {
        guard let context, !outputEnded else { return }
        outputEnded = true
        let channel = context.channel
        // Writes finish in order: once this empty one is out, so is everything before it. Not
        // NIO's own wait (`close(mode: .output)` with writes pending): on a socket whose input
        // ended already, it closes at once, and the writes still pending are dropped.
        context.writeAndFlush(emptyWrite(context)).whenComplete { _ in channel.close(mode: .output, promise: nil) }
    }
}

/// Makes channels of connected sockets on one event loop, all with one bootstrap (a bootstrap
/// each, and its options, were a tenth of each new connection's work on the loop): half-closes
/// allowed, read from their registration on. Called on the loop, an adoption completes within
/// the call, so what the caller does with the channel comes before anything is read. The
/// bootstrap's one default option, TCP_NODELAY, is dropped (`enableMPTCP` does that; an adopted
/// socket is not made by NIO, so MPTCP does not apply): the sockets have it already
/// (`TCPSocket.connect`, and the engine's listeners, whose sockets inherit it). Its bootstrap
/// is used only on its loop, hence `@unchecked Sendable`.
final class SocketAdopter: @unchecked Sendable {
    private let loop: any EventLoop
    private let bootstrap: ClientBootstrap
    private static let all = Mutex<[ObjectIdentifier: SocketAdopter]>([:])

    private init(_ loop: any EventLoop) {
        self.loop = loop
        bootstrap = ClientBootstrap(group: loop)
            .enableMPTCP(true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.allowRemoteHalfClosure, value: true)
                }
            }
    }

    /// The adopter of `loop`'s sockets.
    static func on(_ loop: any EventLoop) -> SocketAdopter {
        all.withLock { all in
            if let adopter = all[ObjectIdentifier(loop)] { return adopter }
            let adopter = SocketAdopter(loop)
            all[ObjectIdentifier(loop)] = adopter
            return adopter
        }
    }

    /// The channel goes to `then` with `side` as its handler (named: an unnamed handler's name
    /// is made up for it, a string per connection).
    func adopt(_ fd: Int32, side: ByteSide, then: @escaping (Result<any Channel, any Error>) -> Void) {
        loop.assertInEventLoop()
        bootstrap.withConnectedSocket(fd).assumeIsolated().whenComplete { result in
            guard case let .success(channel) = result else { return then(result) }
            do {
                try channel.pipeline.syncOperations.addHandler(side, name: "kemu.side")
                then(.success(channel))
            } catch {
                channel.close(promise: nil)
                then(.failure(error))
            }
        }
    }
}
