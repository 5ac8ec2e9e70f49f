import Glibc
import KemuSystem
import NIOCore
import NIOEmbedded

/// A tunnel's TCP connection on a `MeshLoop`: the socket is a raw descriptor, and what it carries
/// goes through a NIO pipeline (TLS, the peer's identity, HTTP/2) held by an `EmbeddedChannel`.
/// What is read is fired into the pipeline; what the pipeline writes is sent by the handler
/// nearest the socket (`Writer`), which keeps what the socket cannot take yet and makes the
/// channel unwritable while that is too much (`Unsent`).
///
/// Confined to its loop.
final class TunnelSocket: MeshWatcher {
    let fd: Int32
    let loop: MeshLoop
    let channel: EmbeddedChannel
    private let writer: Writer
    private var closed = false
    /// Bytes the socket has not taken yet, oldest first.
    private var unsent = Unsent()
    private var reads = SocketReads(size: 16 << 10)
    /// A connect under way, and who hears how it ends (0, or the errno).
    private var connecting: ((Int32) -> Void)?
    /// The embedded channel's address, which nothing reads.
    private static let nowhere = NIOCore.SocketAddress(sockaddr_in(), host: "")

    /// Watches `fd` with `handlers` after the writer, and makes the channel active (a TLS client
    /// starts its handshake then). The descriptor is closed if that fails. With `connecting`, a
    /// non-blocking connect is under way: the channel is active once it is done, and
    /// `connecting` hears how it ended (0, or the errno: the socket is closed then), within
    /// `connectTimeout`.
    init(fd: Int32, loop: MeshLoop, handlers: [any ChannelHandler], connecting: ((Int32) -> Void)? = nil,
         connectTimeout: UInt64 = 2_000_000_000) throws {
        self.fd = fd
        self.loop = loop
        self.connecting = connecting
        channel = EmbeddedChannel(loop: loop.nio)
        writer = Writer()
        writer.socket = self
        do {
            try channel.pipeline.syncOperations.addHandler(writer)
            try channel.pipeline.syncOperations.addHandlers(handlers)
            try loop.watch(fd, self)
        } catch {
            closed = true
            Glibc.close(fd)
            channel.close(promise: nil)
            throw error
        }
        if self.connecting == nil {
            channel.connect(to: Self.nowhere, promise: nil)
        } else {
            loop.after(connectTimeout) { [weak self] in self?.connected(ETIMEDOUT) }
        }
    }

    /// The connect ended (0, or the errno).
    private func connected(_ error: Int32) {
        guard let heard = connecting, !closed else { return }
        connecting = nil
        if error == 0 {
            channel.connect(to: Self.nowhere, promise: nil)
        } else {
            end()
        }
        heard(error)
    }

    func ready(_ events: UInt32) {
        guard !closed else { return }
        if connecting != nil {
            guard events & (Epoll.writable | Epoll.failed) != 0 else { return }
            connected(TCPSocket.pendingError(fd))
            guard !closed else { return }
        }
        if events & Epoll.writable != 0 { sendUnsent() }
        reads.saw(events)
        if events & (Epoll.readable | Epoll.peerClosed) != 0 { readAll() }
    }

    func loopStopped() { end() }

    /// Closes the socket `nanoseconds` from now unless `done` says otherwise by then: a peer
    /// that connects and never finishes its TLS handshake does not hold a descriptor (and, from
    /// the source, the node's tunnel: its calls would wait in it) for ever.
    func close(after nanoseconds: UInt64, unless done: @escaping () -> Bool) {
        loop.after(nanoseconds) { [weak self] in
            if let self, !done() { end() }
        }
    }

    /// Reads until the socket has nothing more (edge-triggered), at most a few reads at a time:
    /// the loop calls again for the rest (`SocketReads` tells when the socket is drained).
    private func readAll() {
        let pipeline = channel.pipeline.syncOperations
        var done = 0
        var ended = false
        while !closed {
            if done == 8 {
                loop.callAgain(self)
                break
            }
            let (buffer, got, drained) = reads.next(fd)
            if got > 0 {
                done += 1
                pipeline.fireChannelRead(NIOAny(buffer))
                if drained { break }
                continue
            }
            if got != -Int(EAGAIN) { ended = true }
            break
        }
        if done > 0 && !closed { pipeline.fireChannelReadComplete() }
        if ended { end() }
    }

    /// The socket ended (the peer's close or reset, an error) or the loop stopped: the channel
    /// closes below TLS, as NIO's own does when its socket ends (no close_notify to wait for).
    private func end() {
        guard !closed else { return }
        closeDescriptor()
        writer.context?.close(promise: nil)
    }

    private func closeDescriptor() {
        guard !closed else { return }
        closed = true
        loop.forget(fd)
        Glibc.close(fd)
        unsent.removeAll()
    }

    fileprivate func enqueue(_ bytes: ByteBuffer) {
        guard !closed else { return }
        unsent.append(bytes)
    }

    /// Sends what the socket takes; past the high mark the channel becomes unwritable, and
    /// writable again below the low one.
    fileprivate func sendUnsent() {
        guard !closed else { return }
        if unsent.send(to: fd) != 0 { return end() }
        if channel.isWritable != unsent.writable {
            channel.isWritable = unsent.writable
            channel.pipeline.syncOperations.fireChannelWritabilityChanged()
        }
    }

    /// The handler nearest the socket: writes go to it, a close closes it (then the channel).
    final class Writer: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        weak var socket: TunnelSocket?
        var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard let socket, !socket.closed else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            socket.enqueue(unwrapOutboundIn(data))
            promise?.succeed(())
        }

        func flush(context: ChannelHandlerContext) { socket?.sendUnsent() }

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            guard mode == .all else {
                promise?.fail(ChannelError.operationUnsupported)
                return
            }
            socket?.closeDescriptor()
            context.close(mode: mode, promise: promise)
        }
    }
}
