import KemuSystem
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The API server's address on the cluster fabric. `kemu server` runs in the host's namespace
/// (so kubectl reaches it on loopback) while nodes reach it at the control-plane host's address
/// inside the cluster: this service owns a socket listening there, made inside the cp
/// namespace, and splices each connection to the server's loopback port. TLS passes through
/// untouched, so clients see the server's own certificate.
public struct FabricListener: Service {
    let socket: Int32
    let target: @Sendable () -> Int
    var targetHost = "127.0.0.1"

    /// Relays every connection accepted on `socket` to `targetHost`:`target()` (the port is asked
    /// per connection: the server's port is known only once it listens).
    public init(socket: Int32, target: @escaping @Sendable () -> Int, targetHost: String = "127.0.0.1") {
        self.socket = socket
        self.target = target
        self.targetHost = targetHost
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let target = self.target
        let host = targetHost
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: host, port: target())
                    .flatMapThrowing { outbound in
                        // Both channels live on the inbound connection's event loop, where this runs.
                        let (left, right) = RelayHandler.pair()
                        try inbound.pipeline.syncOperations.addHandler(left)
                        try outbound.pipeline.syncOperations.addHandler(right)
                    }
            }
            .withBoundSocket(socket).get()
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Two handlers, one per connection, each writing what it reads into the other's channel;
/// reading (NIO's autoRead) pauses while the other side cannot take more (backpressure), and a
/// close on either side closes both. The accepted connection is registered, and starts reading,
/// only once the initializer has connected its partner and added both handlers.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (RelayHandler, RelayHandler) {
        let a = RelayHandler(), b = RelayHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.write(data) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.close() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
    }

    func read(context: ChannelHandlerContext) {
        if partner?.writable ?? false { context.read() } else { pendingRead = true }
    }

    private func write(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func flush() { context?.flush() }
    private func close() { context?.close(promise: nil) }
    private var writable: Bool { context?.channel.isWritable ?? false }

    private func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }
}
