import Glibc
import KemuSystem

/// One client connection and, once a dial succeeded, its upstream.
final class Connection {
    /// The client's socket (a carried connection given back comes with another descriptor).
    var client: Int32
    let clientAddress: SocketAddress
    /// The address the client connected to (ClusterIP:port, NodePort, …).
    let frontend: SocketAddress
    /// Whose address the endpoint sees (the frontend's, when the client connected).
    let source: ClientSource
    let pool: EndpointPool
    let opened: UInt64
    var bytesUp = 0
    var bytesDown = 0
    var upstream: Int32 = -1
    /// The client's socket is in the engine's epoll set (not before its first dial: one the
    /// mesh takes at once never is).
    var watched = false
    var endpoint: Endpoint?
    var tried: [Endpoint] = []
    var generation: UInt32 = 0
    var dialStarted: UInt64 = 0
    var connected = false
    /// Held by a hang Fault: never dialled, closed when the client goes.
    var hung = false
    /// What the client sent before the endpoint's first byte back, for a replay elsewhere; nil
    /// once the endpoint answered, the bytes went by splice, or there were too many.
    var firstFlight: [UInt8]? = []
    var toUpstream = Direction()
    var toClient = Direction()
    var lastActive: UInt64

    struct Direction {
        /// Set once the direction carries bulk bytes (see `move`).
        var pipe: SplicePipe?
        /// Bytes in the pipe, not yet written on.
        var pending = 0
        /// Copied bytes the destination could not take yet.
        var held: [UInt8] = []
        var endOfStream = false
        var shutDown = false
        var waiting: Bool { pending > 0 || !held.isEmpty }
    }

    init(client: Int32, address: SocketAddress, frontend: SocketAddress, source: ClientSource, pool: EndpointPool, now: UInt64) {
        self.client = client
        clientAddress = address
        self.frontend = frontend
        self.source = source
        self.pool = pool
        opened = now
        lastActive = now
    }
}
