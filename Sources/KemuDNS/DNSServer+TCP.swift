import KemuSystem
import NIOCore
import NIOPosix

/// DNS over TCP (RFC 1035 4.2.2, RFC 7766): what a client does after a truncated UDP answer
/// (a headless Service with many endpoints). Each message is framed by a two-byte length;
/// answers are not cut. Idle connections close after 10 s.
/// What `run` holds of the TCP side (kept apart so DNSServer.swift needs no NIO names).
protocol TCPListener: Sendable {
    func close(promise: EventLoopPromise<Void>?)
}

struct NIOListener: TCPListener {
    let channel: any Channel
    func close(promise: EventLoopPromise<Void>?) { channel.close(promise: promise) }
}

extension DNSServer {
    func serveTCP() async throws -> any TCPListener {
        // Free-bind, as the UDP socket: the DNS IP becomes local when the proxy adds its route.
        let socket = try TCPSocket.listen(on: config.address, backlog: 128)
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(10)))
                    try channel.pipeline.syncOperations.addHandler(DNSStreamHandler { [self] query in
                        respond(to: query, limit: Int(UInt16.max))
                    })
                }
            }
            .withBoundSocket(socket)
            .map { NIOListener(channel: $0) }.get()
    }
}

/// Splits a TCP stream into length-prefixed DNS messages and writes each reply the same way.
final class DNSStreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let answer: @Sendable ([UInt8]) -> [UInt8]?
    private var pending = ByteBuffer()

    init(_ answer: @escaping @Sendable ([UInt8]) -> [UInt8]?) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        pending.writeBuffer(&chunk)
        while let length = pending.getInteger(at: pending.readerIndex, as: UInt16.self),
              pending.readableBytes >= 2 + Int(length) {
            pending.moveReaderIndex(forwardBy: 2)
            let query = pending.readBytes(length: Int(length)) ?? []
            guard let reply = answer(query) else { context.close(promise: nil); return }
            var out = context.channel.allocator.buffer(capacity: reply.count + 2)
            out.writeInteger(UInt16(reply.count))
            out.writeBytes(reply)
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
        pending.discardReadBytes()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
