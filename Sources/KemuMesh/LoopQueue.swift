import Glibc
import NIOCore
import KemuSystem
import NIOPosix
import Synchronization

/// Work other threads hand an event loop (the engine's connections for the tunnels), taken a
/// batch at a time between the loop's I/O passes. `EventLoop.execute` would run each as it
/// comes, and NIO's loop runs tasks for as long as more keep coming before it looks at a
/// socket: a burst of a thousand new connections (a millisecond each in a debug build) left
/// the tunnels unread for a second, their peers' answers waiting in the socket while the calls
/// timed out and were sent again. Here a pipe rings the loop: its byte is read in an I/O pass,
/// a batch is taken, and the bell is rung again for the next pass while work is left. Within a
/// millisecond of a pass the loop is asked with `execute` instead (NIO's own wake-up, free while
/// the loop is awake: a pipe's write and read per connection cost the mesh 5 % of its new
/// connections a second); past it, the bell rings.
final class LoopQueue<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])
    private let loop: any EventLoop
    private let batch: Int
    private let take: @Sendable (Item) -> Void
    /// The pipe's write end; -1 when there is no pipe (the loop is then asked with `execute`).
    private let bell: Int32
    /// The bell has a reader (a pipe without one would raise SIGPIPE).
    private let heard = Atomic<Bool>(true)
    /// When the bell was last answered, in an I/O pass (monotonic nanoseconds).
    private let lastPass = Atomic<UInt64>(0)
    static var patience: UInt64 { 1_000_000 }

    init(loop: any EventLoop, batch: Int = 32, take: @escaping @Sendable (Item) -> Void) {
        self.loop = loop
        self.batch = batch
        self.take = take
        guard let (reader, writer) = try? UnixSocket.pipe(for: "the mesh's bell") else {
            bell = -1
            return
        }
        _ = fcntl(writer, F_SETFL, fcntl(writer, F_GETFL) | O_NONBLOCK)
        bell = writer
        let ringing = NIOPipeBootstrap(group: loop)
            .channelInitializer { [weak self] channel in
                let ringing = Ringing(queue: self)
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ringing) }
            }
            .takingOwnershipOfDescriptor(input: reader)
        ringing.whenFailure { [weak self] _ in
            Glibc.close(reader)
            self?.unheard()
        }
    }

    deinit {
        if bell >= 0 { Glibc.close(bell) }  // the read end sees its end and closes
    }

    /// From any thread.
    func post(_ item: Item) {
        let first = items.withLock { items in
            defer { items.append(item) }
            return items.isEmpty
        }
        if first { ring(passNeeded: false) }
    }

    /// The bell's reader is gone: the loop is asked with `execute`, for what came meanwhile too.
    func unheard() {
        heard.store(false, ordering: .sequentiallyConsistent)
        loop.execute { self.rang() }
    }

    /// Asks the loop for a batch: at its next pass over the sockets if `passNeeded` or the last
    /// was a while ago, else as a task.
    private func ring(passNeeded: Bool) {
        let recent = monotonicNanoseconds() &- lastPass.load(ordering: .relaxed) < Self.patience
        guard bell >= 0, heard.load(ordering: .sequentiallyConsistent), passNeeded || !recent else { return loop.execute { self.rang() } }
        var byte: UInt8 = 1
        _ = write(bell, &byte, 1)  // a full pipe has rung already
    }

    /// On the loop: a batch is taken; the bell rings again if more is left.
    func rang() {
        let due = items.withLock { items -> ArraySlice<Item> in
            let n = min(items.count, batch)
            defer { items.removeFirst(n) }
            return items[..<n]
        }
        for item in due { take(item) }
        if !items.withLock({ $0.isEmpty }) { ring(passNeeded: true) }
    }

    /// The bell was heard in an I/O pass.
    func answered() {
        lastPass.store(monotonicNanoseconds(), ordering: .relaxed)
        rang()
    }

    /// Reads the bell's bytes. Weakly: the queue's end closes the bell, and its reader with it.
    private final class Ringing: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        weak let queue: LoopQueue?

        init(queue: LoopQueue?) { self.queue = queue }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

        func channelReadComplete(context: ChannelHandlerContext) { queue?.answered() }

        func channelInactive(context: ChannelHandlerContext) { queue?.unheard() }
    }
}
