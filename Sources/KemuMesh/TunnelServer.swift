import Glibc
import KemuAPI
import KemuIP
import Logging
import NIOCore
import NIOHPACK
import NIOSSL
import NIOTLS
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
/// Tunnels and pods' sockets are raw descriptors on a loop of the mesh's own (`MeshLoop`).
final class TunnelServer: Sendable {
    let directory: MeshDirectory
    let identities: MeshIdentities
    let loop: MeshLoop
    let transparent: Bool
    let counters: TunnelCounters
    let denials: MeshDenials
    let traffic: MeshTraffic
    let book: TunnelBook
    let logger = Logger(label: "kemu.mesh.server")
    /// Dials to pods, off the loop.
    let chores: KernelChores

    init(directory: MeshDirectory, identities: MeshIdentities, loop: MeshLoop, chores: KernelChores, transparent: Bool,
         counters: TunnelCounters, denials: MeshDenials, traffic: MeshTraffic, book: TunnelBook) {
        self.chores = chores
        self.book = book
        self.denials = denials
        self.traffic = traffic
        self.directory = directory
        self.identities = identities
        self.loop = loop
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

    /// Judges every stream delivering now again (the policies changed), as ztunnel does: those
    /// a new DENY covers are closed. Each tunnel's streams are judged on its own loop, from what
    /// each was allowed as (`FrameStream.admitted`): nothing is kept per connection for this.
    func recheckLive() {
        book.eachOnItsLoop { [self] tunnel in
                guard let streams = try? tunnel.pipeline.syncOperations.handler(type: TunnelStreams.self) else { return }
                var closed = 0
                for stream in streams.streams.values where !stream.gone {
                    guard let request = stream.admitted, !authorize(request) else { continue }
                    stream.closeAfterWrites()
                    closed += 1
                }
                if closed > 0 { logger.info("closed \(closed) live connection(s) a changed AuthorizationPolicy refuses") }
        }
    }

    /// Accepts tunnels on `address` (port 15008), on the loop; `stop` ends it. Throws when the
    /// address cannot be bound (the node's address not there yet).
    func listen(_ address: IPv4Address) throws {
        let fd = try TCPSocket.listen(on: KemuSystem.SocketAddress(address, Mesh.tunnelPort), backlog: 1024, freeBind: false)
        TCPSocket.setNoDelay(fd)  // accepted tunnels inherit it
        let listener = TunnelListener(fd: fd, server: self)
        loop.execute { [loop] in
            do { try loop.watch(fd, listener) } catch { listener.loopStopped() }
        }
    }

    /// Stops the loop: the listener, every tunnel and every socket close.
    func stop() { loop.stop() }

    /// A new tunnel connection: TLS with this node's identity, then HTTP/2 with a stream per
    /// connection carried (`TunnelStreams`). Without a certificate yet, it is closed.
    func accept(_ fd: Int32) {
        guard let credential = identities.credential(directory.nodeIdentity) else {
            Glibc.close(fd)
            identities.requestSoon()
            logger.info("refused a tunnel: no certificate for \(directory.nodeIdentity) yet")
            return
        }
        let peer = PeerIdentity(book: book, local: credential.serial, loop: loop)
        do {
            let socket = try TunnelSocket(fd: fd, loop: loop, handlers: [NIOSSLServerHandler(context: credential.server), peer,
                                                                          TunnelStreams(server: self, peer: peer)])
            socket.close(after: Mesh.handshakeNanoseconds) { peer.id != nil }
        } catch {
            logger.warning("cannot take a tunnel: \(error)")
        }
    }

    /// The pod a CONNECT asks for, if it is one this node may deliver to.
    func target(_ call: ConnectCall) -> (MeshDirectory.LocalPod, IPv4Address, UInt16)? {
        guard call.isConnect, let authority = call.authority, let colon = authority.utf8.firstIndex(of: UInt8(ascii: ":")),
              let ip = IPv4Address(authority[..<colon]), let port = UInt16(authority[authority.index(after: colon)...]), port > 0,
              let pod = directory.localPod(ip), directory.meshed(namespace: pod.namespace) else { return nil }
        return (pod, ip, port)
    }

    /// What a dial to a pod ends in, on the loop: 0 (`side` has the socket), or the errno.
    typealias Dialled = (Int32) -> Void

    /// Dials the pod, from the client's address where possible, off the loop (`chores`).
    func dial(_ ip: IPv4Address, _ port: UInt16, from source: IPv4Address?, within timeout: TimeAmount, side: SocketSide,
              then: @escaping Dialled) {
        let from = transparent && source != ip ? source : nil
        let deadline = monotonicNanoseconds() &+ UInt64(max(timeout.nanoseconds, 0))
        let answer = LoopOwned((side, then))
        chores.run(answeringOn: loop) {
            let (fd, started) = TCPSocket.connect(to: KemuSystem.SocketAddress(ip, port), from: from)
            let state = fd < 0 ? Dialling.failed(started) : Dialling.of(fd)
            return { self.dialled(fd, state, side: answer.value.0, deadline: deadline, pause: 1_000_000, then: answer.value.1) }
        }
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
    func dialled(_ fd: Int32, _ state: Dialling, side: SocketSide, deadline: UInt64, pause: UInt64, then: @escaping Dialled) {
        switch state {
        case let .failed(err):
            if fd >= 0 { Glibc.close(fd) }
            then(err)
        case .pending where monotonicNanoseconds() >= deadline:
            dialled(fd, .failed(ETIMEDOUT), side: side, deadline: deadline, pause: pause, then: then)
        case .pending:
            loop.after(pause) {
                self.dialled(fd, Dialling.of(fd), side: side, deadline: deadline, pause: min(pause * 2, 50_000_000), then: then)
            }
        case .connected:
            then(side.attach(fd) ?? 0)
        }
    }
}

extension TunnelServer {
    /// A stream's CONNECT, judged and then answered once the pod is reached: 200 (joined), 403
    /// (authorization refused), 400 (not a CONNECT to a meshed pod here), 503 (the pod refused or
    /// did not answer; `kemu-dial-errno` says why, as the dial's errno).
    func open(_ stream: FrameStream, _ headers: HPACKHeaders) {
        guard let streams = stream.streams, streams.context != nil else { return }
        let call = ConnectCall(headers)
        guard let id = streams.peer.id, let (pod, ip, port) = target(call) else {
            return streams.sendHeaders(stream.id, [":status": "400"], end: true)
        }
        let source = call.source
        let request = TunnelRequest(peer: id, source: source, destination: pod, port: port)
        guard authorize(request) else { return streams.sendHeaders(stream.id, [":status": "403"], end: true) }
        let podSide = SocketSide(loop: loop)
        dial(ip, port, from: source, within: call.dialTimeout, side: podSide) { [self] error in
            guard !stream.gone, stream.streams != nil else {
                if error == 0 { podSide.closeAfterWrites() }
                return
            }
            guard error != 0 else {
                counters.accepted()
                streams.sendHeaders(stream.id, HeaderBlock.ok, end: false)
                GlueSide.join(stream, podSide, traffic: series(streams, call, pod: pod, peer: id))
                stream.flushEarly()
                stream.admitted = request
                return
            }
            counters.unreachable()
            // Why, as the errno the source's engine would have met dialling itself: a
            // NetworkPolicy's refusal (ENETUNREACH) is then not the endpoint's failure.
            streams.sendHeaders(stream.id, [":status": "503", Mesh.dialErrorHeader: String(error)], end: true)
        }
    }
}

extension TunnelServer {
    /// The label set of a connection delivered here, counted opened. A tunnel's peer is one
    /// identity, and its connections mostly come from one workload to one pod: the tunnel keeps
    /// the last label set, and a connection like the one before takes it without making one.
    func series(_ streams: TunnelStreams, _ call: ConnectCall, pod: MeshDirectory.LocalPod, peer: SPIFFEID) -> MeshTraffic.Series {
        if let last = streams.lastSeries, last.baggage == call.baggage, last.pod == pod {
            last.series.opened.add(1, ordering: .relaxed)
            return last.series
        }
        let key = MeshTraffic.Key(reporter: "destination", sourceWorkload: call.workload ?? "unknown",
                                  sourceNamespace: peer.workload?.namespace ?? "unknown", sourcePrincipal: streams.peer.principal,
                                  destinationWorkload: MeshTraffic.workload(pod: pod.name, labels: pod.labels),
                                  destinationNamespace: pod.namespace, destinationPrincipal: directory.identity(pod).description)
        let series = traffic.opened(key)
        streams.lastSeries = (call.baggage, pod, series)
        return series
    }
}

/// A CONNECT's headers, read in one pass (names are lower case in HTTP/2).
struct ConnectCall {
    var isConnect = false
    var authority: String?
    /// `forwarded: for=IP`: the client's address.
    var forwarded: String?
    /// `baggage: k8s.workload.name=NAME` (among others): the client's workload.
    var baggage: String?
    /// `Mesh.dialTimeoutHeader`, milliseconds.
    var timeout: String?

    init(_ headers: HPACKHeaders) {
        for (name, value, _) in headers {
            switch name {
            case ":method": isConnect = value == "CONNECT"
            case ":authority": authority = value
            case "forwarded": forwarded = value
            case "baggage": baggage = value
            case Mesh.dialTimeoutHeader: timeout = value
            default: break
            }
        }
    }

    /// The client's address.
    var source: IPv4Address? {
        guard let forwarded, forwarded.utf8.starts(with: "for=".utf8) else { return nil }
        return IPv4Address(Substring(forwarded.utf8.dropFirst(4)))
    }

    /// The dial's timeout the source asked for, at most 10 s; 2 s if it asked none.
    var dialTimeout: TimeAmount {
        guard let timeout, let ms = Int64(timeout), ms > 0 else { return .seconds(2) }
        return .milliseconds(min(ms, 10_000))
    }

    /// The client's workload.
    var workload: String? {
        guard let baggage else { return nil }
        let key = "k8s.workload.name=".utf8
        for member in baggage.utf8.split(separator: UInt8(ascii: ",")) {
            let trimmed = member.drop { $0 == UInt8(ascii: " ") }
            if trimmed.starts(with: key) { return String(Substring(trimmed.dropFirst(key.count))) }
        }
        return nil
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
    /// The mesh loop the tunnel is on (nil: the channel's own event loop).
    let loop: MeshLoop?

    init(expected: SPIFFEID? = nil, book: TunnelBook, local: String, loop: MeshLoop? = nil) {
        self.expected = expected
        self.book = book
        self.local = local
        self.loop = loop
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            let der = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate?.toDERBytes()
            let read = der.flatMap { SVID.identity(certificateDER: $0) }
            let refusal = read.flatMap { book.trust.refusal(peer: $0, local: local) }
            if let read, read.id == expected ?? read.id, refusal == nil {
                id = read.id
                book.add(peer: read, local: local, channel: context.channel, loop: loop)
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
    /// How long a tunnel's TLS handshake may take, from the TCP connection (Istio's connect
    /// timeout).
    static let handshakeNanoseconds: UInt64 = 10_000_000_000
    /// On a 503: the errno of the destination's dial to the pod.
    static let dialErrorHeader = "kemu-dial-errno"
    /// A CONNECT's header: how long the destination may take to reach the pod (milliseconds),
    /// the source engine's timeout for this attempt.
    static let dialTimeoutHeader = "kemu-dial-timeout-ms"
}

/// The tunnel listener (port 15008) on the server's loop: it accepts until the backlog is empty.
final class TunnelListener: MeshWatcher, @unchecked Sendable {
    let fd: Int32
    let server: TunnelServer
    private var closed = false

    init(fd: Int32, server: TunnelServer) {
        self.fd = fd
        self.server = server
    }

    func ready(_ events: UInt32) {
        while !closed {
            switch TCPSocket.accept(fd) {
            case let .connection(tunnel, _):
                server.accept(tunnel)
            case .none:
                return
            case let .failed(err):
                // Out of descriptors, say: no new edge may come for what waits; look again soon.
                server.logger.warning("accepting tunnels: \(String(cString: strerror(err))); again in 100 ms")
                server.loop.after(100_000_000) { [weak self] in self?.ready(Epoll.readable) }
                return
            }
        }
    }

    func loopStopped() {
        guard !closed else { return }
        closed = true
        server.loop.forget(fd)
        Glibc.close(fd)
    }
}
