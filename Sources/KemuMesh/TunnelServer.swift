import Glibc
import KemuAPI
import KemuIP
import Logging
import NIOCore
import NIOHPACK
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import KemuPKI
import KemuSystem

/// What the destination side decides about one tunnelled connection.
public struct TunnelRequest: Sendable {
    /// The verified identity of the source workload (its certificate's SPIFFE ID).
    public var peer: SPIFFEID
    /// The client pod's address, as the source proxy reports it.
    public var source: IPv4Address?
    public var destination: MeshDirectory.LocalPod
    public var port: UInt16
}

/// The destination side of the mesh on a node (HBONE's inbound): TLS 1.3 on port 15008 with this
/// node's proxy identity, the client's SVID required and checked against the mesh CA; HTTP/2;
/// each stream a CONNECT to `ip:port` of a meshed pod bound to this node. The pod is dialled from
/// the client pod's own address where the node can (transparent), so it sees who called.
/// Answers: 200 (joined), 403 (authorization refused), 400 (not a CONNECT to a meshed pod here),
/// 503 (the pod refused or did not answer; `kemu-dial-errno` says why, as the dial's errno).
final class TunnelServer: Sendable {
    let directory: MeshDirectory
    let identities: MeshIdentities
    let group: any EventLoopGroup
    let transparent: Bool
    let counters: TunnelCounters
    let denials: MeshDenials
    let traffic: MeshTraffic
    let book: TunnelBook
    let logger = Logger(label: "kemu.mesh.server")
    /// Dials to pods and their last closes, off the event loop.
    let chores = KernelChores()
    /// The streams delivering now, and what they were allowed as: judged again when policies
    /// change, as ztunnel does (a connection a new DENY covers is closed).
    let live = Mutex<[ObjectIdentifier: (request: TunnelRequest, close: @Sendable () -> Void)]>([:])

    init(directory: MeshDirectory, identities: MeshIdentities, group: any EventLoopGroup, transparent: Bool, counters: TunnelCounters,
         denials: MeshDenials, traffic: MeshTraffic, book: TunnelBook) {
        self.book = book
        self.denials = denials
        self.traffic = traffic
        self.directory = directory
        self.identities = identities
        self.group = group
        self.transparent = transparent
        self.counters = counters
    }

    /// AuthorizationPolicy on a tunnelled connection, with the peer's verified identity.
    func authorize(_ r: TunnelRequest) -> Bool {
        let decision = directory.authorize(peer: r.peer, source: r.source, destination: r.destination, port: r.port)
        if !decision.allowed {
            denials.record(policy: decision.policy, peer: r.peer, source: r.source, destination: r.destination, port: r.port)
        }
        return decision.allowed
    }

    /// Judges every live stream again (the policies changed); closes those now refused.
    func recheckLive() {
        let streams = live.withLock { Array($0.values) }
        var closed = 0
        for (request, close) in streams where !authorize(request) {
            close()
            closed += 1
        }
        if closed > 0 { logger.info("closed \(closed) live connection(s) a changed AuthorizationPolicy refuses") }
    }

    /// A stream delivering now, until it closes (its pod's socket closes with it).
    func track(_ request: TunnelRequest, _ stream: FrameStream, pod: any Channel) {
        let key = ObjectIdentifier(stream)
        let loop = pod.eventLoop
        live.withLock { $0[key] = (request, { loop.execute { stream.closeAfterWrites() } }) }
        pod.closeFuture.whenComplete { [self] _ in _ = live.withLock { $0.removeValue(forKey: key) } }
    }

    func bind(_ address: IPv4Address) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.accept(channel) }
            }
            .bind(host: address.description, port: Int(Mesh.tunnelPort)).get()
    }

    /// A new tunnel connection: TLS with this node's identity, then HTTP/2 with a stream per
    /// connection carried (`TunnelStreams`).
    func accept(_ channel: any Channel) throws {
        guard let credential = identities.credential(directory.nodeIdentity) else {
            identities.requestSoon()
            throw MeshError("no certificate for \(directory.nodeIdentity) yet")
        }
        let peer = PeerIdentity(book: book, local: credential.serial)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: credential.server))
        try sync.addHandler(peer)
        try sync.addHandler(TunnelStreams(server: self, peer: peer))
    }

    /// The pod a CONNECT asks for, if it is one this node may deliver to.
    func target(_ headers: HPACKHeaders) -> (MeshDirectory.LocalPod, IPv4Address, UInt16)? {
        guard headers.first(name: ":method") == "CONNECT", let authority = headers.first(name: ":authority"),
              let colon = authority.utf8.firstIndex(of: UInt8(ascii: ":")),
              let ip = IPv4Address(authority[..<colon]), let port = UInt16(authority[authority.index(after: colon)...]), port > 0,
              let pod = directory.localPod(ip), directory.meshed(namespace: pod.namespace) else { return nil }
        return (pod, ip, port)
    }

    /// The client's address from `forwarded: for=IP`.
    static func source(_ headers: HPACKHeaders) -> IPv4Address? {
        guard let forwarded = headers.first(name: "forwarded"), forwarded.hasPrefix("for=") else { return nil }
        return IPv4Address(forwarded.dropFirst(4))
    }

    /// The dial's timeout the source asked for (`Mesh.dialTimeoutHeader`, milliseconds), at most
    /// 10 s; 2 s if it asked none.
    static func dialTimeout(_ headers: HPACKHeaders) -> TimeAmount {
        guard let text = headers.first(name: Mesh.dialTimeoutHeader), let ms = Int64(text), ms > 0 else { return .seconds(2) }
        return .milliseconds(min(ms, 10_000))
    }

    /// The client's workload from `baggage: k8s.workload.name=NAME` (among others).
    static func workload(_ headers: HPACKHeaders) -> String? {
        guard let baggage = headers.first(name: "baggage") else { return nil }
        let key = "k8s.workload.name="
        for item in baggage.split(separator: ",") {
            let member = item.drop { $0 == " " }
            if member.hasPrefix(key) { return String(member.dropFirst(key.count)) }
        }
        return nil
    }

    /// Dials the pod, from the client's address where possible, off the event loop (`chores`).
    func dial(_ ip: IPv4Address, _ port: UInt16, from source: IPv4Address?, within timeout: TimeAmount, on loop: any EventLoop,
              side: ByteSide) -> EventLoopFuture<any Channel> {
        let from = transparent && source != ip ? source : nil
        let promise = loop.makePromise(of: (any Channel).self)
        let deadline = NIODeadline.now() + timeout
        chores.run(answeringOn: loop) {
            let (fd, started) = TCPSocket.connect(to: KemuSystem.SocketAddress(ip, port), from: from)
            let state = fd < 0 ? Dialling.failed(started) : Dialling.of(fd)
            return { self.dialled(fd, state, on: loop, side: side, promise: promise, deadline: deadline, pause: .milliseconds(1)) }
        }
        return promise.futureResult
    }

    /// Where a non-blocking connect is.
    enum Dialling {
        case connected, pending, failed(Int32)

        static func of(_ fd: Int32) -> Dialling {
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&poller, 1, 0) > 0 else { return .pending }
            let err = TCPSocket.pendingError(fd)
            return err == 0 ? .connected : .failed(err)
        }
    }

    /// A pod on this node answers within the connect call itself, almost always: the socket is
    /// then adopted at once, with none of a bootstrap's bind and connect steps. Else it is looked
    /// at again, at growing pauses, until the deadline.
    func dialled(_ fd: Int32, _ state: Dialling, on loop: any EventLoop, side: ByteSide, promise: EventLoopPromise<any Channel>,
                 deadline: NIODeadline, pause: TimeAmount) {
        switch state {
        case let .failed(err):
            if fd >= 0 { Glibc.close(fd) }
            promise.fail(IOError(errnoCode: err, reason: "connect"))
        case .pending where NIODeadline.now() >= deadline:
            dialled(fd, .failed(ETIMEDOUT), on: loop, side: side, promise: promise, deadline: deadline, pause: pause)
        case .pending:
            loop.scheduleTask(in: pause) {
                self.dialled(fd, Dialling.of(fd), on: loop, side: side, promise: promise, deadline: deadline, pause: min(pause * 2, .milliseconds(50)))
            }
        case .connected:
            // The channel closes a twin of the descriptor: the socket's own end (the FIN, or the
            // reset) comes when `chores` closes the other.
            let twin = dup(fd)
            let adopted = side.adopt(fd, on: loop)
            adopted.whenComplete { [chores] result in
                guard twin >= 0 else { return }
                guard case let .success(channel) = result else { return chores.close(twin) }
                channel.closeFuture.whenComplete { _ in chores.close(twin) }
            }
            adopted.cascade(to: promise)
        }
    }
}

extension TunnelServer {
    /// A stream's CONNECT, judged and then answered once the pod is reached: 200 (joined), 403
    /// (authorization refused), 400 (not a CONNECT to a meshed pod here), 503 (the pod refused or
    /// did not answer; `kemu-dial-errno` says why, as the dial's errno).
    func open(_ stream: FrameStream, _ headers: HPACKHeaders) {
        guard let streams = stream.streams, let loop = streams.context?.eventLoop else { return }
        guard let id = streams.peer.id, let (pod, ip, port) = target(headers) else {
            return streams.sendHeaders(stream.id, [":status": "400"], end: true)
        }
        let source = Self.source(headers)
        let request = TunnelRequest(peer: id, source: source, destination: pod, port: port)
        guard authorize(request) else { return streams.sendHeaders(stream.id, [":status": "403"], end: true) }
        let key = MeshTraffic.Key(reporter: "destination", sourceWorkload: Self.workload(headers) ?? "unknown",
                                  sourceNamespace: id.workload?.namespace ?? "unknown", sourcePrincipal: streams.peer.principal,
                                  destinationWorkload: MeshTraffic.workload(pod: pod.name, labels: pod.labels),
                                  destinationNamespace: pod.namespace, destinationPrincipal: directory.identity(pod).description)
        let podSide = ByteSide()
        dial(ip, port, from: source, within: Self.dialTimeout(headers), on: loop, side: podSide).whenComplete { [self] result in
            guard !stream.gone, stream.streams != nil else {
                if case let .success(channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case let .success(channel):
                counters.accepted()
                streams.sendHeaders(stream.id, [":status": "200"], end: false)
                GlueSide.join(stream, podSide, traffic: traffic.opened(key))
                stream.flushEarly()
                track(request, stream, pod: channel)
            case let .failure(error):
                counters.unreachable()
                // Why, as the errno the source's engine would have met dialling itself: a
                // NetworkPolicy's refusal (ENETUNREACH) is then not the endpoint's failure.
                var headers: HPACKHeaders = [":status": "503"]
                if let code = (error as? IOError)?.errnoCode { headers.add(name: Mesh.dialErrorHeader, value: String(code)) }
                streams.sendHeaders(stream.id, headers, end: true)
            }
        }
    }
}

/// The verified identity of a tunnel connection's peer, read once its TLS handshake is done,
/// and judged by this node's trust (revoked serials, its clock); an accepted tunnel goes in the
/// book, to be judged again when that trust changes.
final class PeerIdentity: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    var id: SPIFFEID? {
        didSet { principal = id?.description ?? "unknown" }
    }
    /// `id` as text (the metrics' principal label), made once, not per connection.
    private(set) var principal = "unknown"
    /// The identity the peer must have (a client checking its server); nil: any.
    let expected: SPIFFEID?
    let book: TunnelBook
    /// The serial of the certificate this side presented.
    let local: String

    init(expected: SPIFFEID? = nil, book: TunnelBook, local: String) {
        self.expected = expected
        self.book = book
        self.local = local
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            let der = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate?.toDERBytes()
            let read = der.flatMap { SVID.identity(certificateDER: $0) }
            let refusal = read.flatMap { book.trust.refusal(peer: $0, local: local) }
            if let read, read.id == expected ?? read.id, refusal == nil {
                id = read.id
                book.add(peer: read, local: local, channel: context.channel)
            } else {
                context.fireErrorCaught(MeshError(refusal ?? "the tunnel's peer is \(read?.id.description ?? "no mesh identity"), not \(expected?.description ?? "a mesh identity")"))
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension Mesh {
    /// On a 503: the errno of the destination's dial to the pod.
    static let dialErrorHeader = "kemu-dial-errno"
    /// A CONNECT's header: how long the destination may take to reach the pod (milliseconds),
    /// the source engine's timeout for this attempt.
    static let dialTimeoutHeader = "kemu-dial-timeout-ms"
}
