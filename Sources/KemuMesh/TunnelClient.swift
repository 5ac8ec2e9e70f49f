import Glibc
import KemuAPI
import KemuIP
import KemuProxy
import KemuSystem
import Logging
import NIOCore
import NIOHPACK
import NIOSSL
import Synchronization

/// HTTP/2 settings of every tunnel (ztunnel's windows: 4 MiB per stream, 16 MiB per
/// connection). The peer is a mutually authenticated node proxy whose streams come and go with
/// its clients' connections (thousands a second, some cancelled).
enum TunnelSettings {
    static let streamWindow = 4 << 20
    static let connectionWindow = 16 << 20
    static let maxFrameSize = 1 << 20
    /// Streams open at once on a tunnel: as many as a client pod may hold connections to one
    /// node (each is a socket on both nodes anyway). At 1,000, as before, a client with 1,500
    /// connections open (wrk -c1500) had 500 of them wait for a stream and time out.
    static let maxStreams = 1 << 20
    static let local = [
        TunnelSetting(id: TunnelSetting.enablePush, value: 0),
        TunnelSetting(id: TunnelSetting.maxConcurrentStreams, value: UInt32(maxStreams)),
        TunnelSetting(id: TunnelSetting.initialWindowSize, value: UInt32(streamWindow)),
        TunnelSetting(id: TunnelSetting.maxFrameSize, value: UInt32(maxFrameSize)),
    ]
}

/// Counts of what the tunnels did, for /metrics and `kemu mesh status`.
public final class TunnelCounters: Sendable {
    struct Values { var opened = 0, accepted = 0, unreachable = 0, tunnels = 0, failedTunnels = 0, open = 0 }
    let values = Mutex(Values())
    func opened() { values.withLock { $0.opened += 1 } }
    func accepted() { values.withLock { $0.accepted += 1 } }
    func unreachable() { values.withLock { $0.unreachable += 1 } }
    func tunnel(_ ok: Bool) { values.withLock { if ok { $0.tunnels += 1; $0.open += 1 } else { $0.failedTunnels += 1 } } }
    func tunnelClosed() { values.withLock { $0.open -= 1 } }

    public var text: String {
        let v = values.withLock { $0 }
        return """
        # HELP kemu_mesh_streams_opened_total Connections this node sent through a tunnel.
        # TYPE kemu_mesh_streams_opened_total counter
        kemu_mesh_streams_opened_total \(v.opened)
        # HELP kemu_mesh_streams_accepted_total Tunnelled connections this node delivered to its pods.
        # TYPE kemu_mesh_streams_accepted_total counter
        kemu_mesh_streams_accepted_total \(v.accepted)
        # HELP kemu_mesh_streams_unreachable_total Tunnelled connections whose pod did not answer.
        # TYPE kemu_mesh_streams_unreachable_total counter
        kemu_mesh_streams_unreachable_total \(v.unreachable)
        # HELP kemu_mesh_tunnels_opened_total Tunnel connections (mutual TLS, HTTP/2) this node opened, by outcome.
        # TYPE kemu_mesh_tunnels_opened_total counter
        kemu_mesh_tunnels_opened_total{outcome="ok"} \(v.tunnels)
        kemu_mesh_tunnels_opened_total{outcome="failed"} \(v.failedTunnels)
        # HELP kemu_mesh_tunnels_open Tunnel connections this node holds open.
        # TYPE kemu_mesh_tunnels_open gauge
        kemu_mesh_tunnels_open \(v.open)

        """
    }
}

/// The source side of the mesh (HBONE's outbound): a connection from a meshed pod on this node to
/// a meshed endpoint on another goes A's proxy → B's proxy as an HTTP/2 CONNECT stream inside a
/// mutual-TLS tunnel, one tunnel per (source identity, destination node) shared by every such
/// connection. The engine hands the client's socket over (`MeshTunnels`, `Carriage`).
public final class TunnelClient: MeshTunnels, @unchecked Sendable {
    struct Key: Hashable {
        var source: SPIFFEID
        var node: String
    }

    let directory: MeshDirectory
    let identities: MeshIdentities
    let loop: MeshLoop
    let counters: TunnelCounters
    let denials: MeshDenials
    let traffic: MeshTraffic
    let book: TunnelBook
    let logger = Logger(label: "kemu.mesh.client")
    /// Open tunnels; touched only on `loop`.
    var tunnels: [Key: EventLoopFuture<TunnelStreams>] = [:]
    /// The connections the engine handed over, by its token; touched only on `loop`.
    var carriages: [UInt64: Carriage] = [:]
    let reports: ReportBatch
    /// The last CONNECT made (`connect`); touched only on `loop`.
    var lastConnect: (client: IPv4Address, endpoint: KemuSystem.SocketAddress, timeout: UInt64, workload: String, headers: HeaderBlock)?
    /// The label set of the last connection opened (`series`); touched only on `loop`.
    var lastSeries: (key: MeshTraffic.Key, series: MeshTraffic.Series)?

    init(directory: MeshDirectory, identities: MeshIdentities, loop: MeshLoop, counters: TunnelCounters,
         denials: MeshDenials, traffic: MeshTraffic, book: TunnelBook) {
        self.book = book
        reports = ReportBatch(loop: loop)
        self.denials = denials
        self.traffic = traffic
        self.directory = directory
        self.identities = identities
        self.loop = loop
        self.counters = counters
    }

    /// What the mesh makes of a connection from `client` to `endpoint`, decided here.
    enum Verdict {
        /// Not the mesh's, or judged here and allowed: the engine dials (or keeps) it itself.
        case direct
        /// A meshed client to another node's meshed pod: through a tunnel, judged there.
        case tunnel(source: MeshDirectory.LocalPod, namespace: String)
        case refused
    }

    /// Every dial of the node asks: a plain cluster pays one lookup (no allocation) per dial.
    /// What the engine carries itself is judged here: the same node's pods (with the client's
    /// identity, if meshed) and a plain client's connection to another node's meshed pod
    /// (plaintext: no identity, as the destination would judge it; STRICT by the pod's labels).
    func judge(client: KemuSystem.SocketAddress, endpoint: EndpointSpec, record: Bool) -> Verdict {
        guard directory.anyMeshed, let slash = endpoint.target.firstIndex(of: "/"),
              case let namespace = String(endpoint.target[..<slash]), directory.meshed(namespace: namespace) else { return .direct }
        let source = directory.localPod(client.ip).flatMap { directory.meshed(namespace: $0.namespace) ? $0 : nil }
        let local = endpoint.nodeName.isEmpty || endpoint.nodeName == directory.node
        if let source, !local { return .tunnel(source: source, namespace: namespace) }
        guard let destination = local ? directory.localPod(endpoint.address.ip) : directory.anyPod(endpoint.address.ip) else {
            // Another node's pod not known yet: a plain client of a namespace STRICT as a whole
            // is refused here; else that node's nftables judge STRICT.
            return !local && directory.strictWhateverTheLabels(namespace: namespace) ? .refused : .direct
        }
        let peer = source.map(directory.identity)
        if peer == nil && directory.strict(destination) {
            if record { denials.record(policy: nil, peer: nil, source: client.ip, destination: destination, port: endpoint.address.port) }
            return .refused
        }
        let decision = directory.authorize(peer: peer, source: client.ip, destination: destination, port: endpoint.address.port)
        if !decision.allowed {
            if record { denials.record(policy: decision.policy, peer: peer, source: client.ip, destination: destination, port: endpoint.address.port) }
            return .refused
        }
        return .direct
    }

    public func dial(client: KemuSystem.SocketAddress, endpoint: EndpointSpec) -> MeshDial {
        let (source, namespace): (MeshDirectory.LocalPod, String)
        switch judge(client: client, endpoint: endpoint, record: true) {
        case .direct: return .direct
        case .refused: return .refused
        case let .tunnel(s, n): (source, namespace) = (s, n)
        }
        let (identity, key) = labels(source, endpoint.target, namespace)
        let request = Request(source: identity, client: client.ip, node: endpoint.nodeName, endpoint: endpoint.address, traffic: key)
        // Started on the loop, a batch per pass (`MeshLoop.execute`).
        return .tunnel(MeshCarrier { handoff in self.loop.execute { self.start(request, handoff) } })
    }

    /// The last tunnelled dial's source pod and target, and its identity and label set.
    private let lastDial = Mutex<(source: MeshDirectory.LocalPod, target: String, identity: SPIFFEID, key: MeshTraffic.Key)?>(nil)

    /// A dial's source identity and label set; a dial like the one before (the same pod to the
    /// same target) takes the last ones, not made again (each is a few strings).
    func labels(_ source: MeshDirectory.LocalPod, _ target: String, _ namespace: String) -> (SPIFFEID, MeshTraffic.Key) {
        lastDial.withLock { last in
            if let last, last.target == target, last.source == source { return (last.identity, last.key) }
            let name = target.split(separator: "/").map(String.init)
            let identity = directory.identity(source)
            let key = MeshTraffic.Key(reporter: "source", sourceWorkload: MeshTraffic.workload(pod: source.name, labels: source.labels),
                                      sourceNamespace: source.namespace, sourcePrincipal: identity.description,
                                      destinationWorkload: name.count == 2 ? MeshTraffic.workload(pod: name[1], labels: [:]) : "unknown",
                                      destinationNamespace: namespace, destinationPrincipal: "unknown")
            last = (source, target, identity, key)
            return (identity, key)
        }
    }

    struct Request {
        var source: SPIFFEID
        var client: IPv4Address
        var node: String
        var endpoint: KemuSystem.SocketAddress
        var traffic: MeshTraffic.Key
    }

    /// The proxy's capture listener is up (`captureReady`): the node's nftables may send it
    /// meshed pods' connections to pods' own addresses.
    let capturing = Atomic<Bool>(false)

    public func captureReady() {
        capturing.store(true, ordering: .relaxed)
        directory.changes.continuation.yield()
    }

    public func locate(_ address: IPv4Address) -> (node: String, target: String)? {
        guard let pod = directory.anyPod(address) else { return nil }
        let node = directory.localPod(address) != nil ? directory.node : pod.node
        return node.isEmpty ? nil : (node, pod.namespace + "/" + pod.name)
    }

    public func close(token: UInt64) {
        loop.execute { self.carriages[token]?.abort() }
    }

    /// Moves when a policy changes: the engine then asks `allows` of what it carries itself.
    public var policyGeneration: Int { directory.policyGeneration.load(ordering: .relaxed) }

    /// Whether a connection the engine carries itself is still allowed (a tunnelled one is
    /// judged again at its destination). A refusal is recorded as a denial.
    public func allows(client: KemuSystem.SocketAddress, endpoint: EndpointSpec) -> Bool {
        if case .refused = judge(client: client, endpoint: endpoint, record: true) { return false }
        return true
    }

    /// On the loop: opens the stream for a connection the engine handed over.
    func start(_ r: Request, _ handoff: MeshHandoff) {
        counters.opened()
        let carriage = Carriage(handoff, reports: reports, loop: loop) { [weak self] in self?.carriages[handoff.token] = nil }
        carriages[handoff.token] = carriage
        guard identities.credential(r.source) != nil else {
            identities.requestSoon()
            carriage.failed(EACCES)
            return
        }
        // Weakly: the carriage holds its stream (`carriages` holds it until the engine heard the end).
        carriage.streamSide.onAnswer = { [weak carriage, weak self] headers in
            if let carriage, let self { answered(headers, carriage, r) }
        }
        place(carriage, r, again: true)
        if !carriage.finished { expire(carriage, every: .nanoseconds(Int64(clamping: handoff.timeoutNanoseconds))) }
    }

    /// The calls waiting for their answer (`expire`).
    private lazy var clock = CallClock(loop: loop) { [unowned self] entry in
        guard let carriage = entry.carriage else { return }
        let waited = entry.waited + entry.interval
        let mark = entry.mark
        let heard = carriage.tunnel.map { ObjectIdentifier($0) == mark?.tunnel ? $0.reads != mark?.reads : $0.reads > 0 } ?? false
        guard heard, waited < Self.answerPatience else { return carriage.failed(ETIMEDOUT) }  // resets its stream
        expire(carriage, every: min(entry.interval, Self.answerPatience - waited), waited: waited)
    }

    /// How long a call may wait for its answer while its peer is heard from: Istio's connect
    /// timeout.
    static let answerPatience = TimeAmount.seconds(10)

    /// The call's timer. Its endpoint's node dials the pod within the dial's timeout itself
    /// (`Mesh.dialTimeoutHeader`) and answers 503 past it; here a call that waited that long
    /// while its tunnel heard nothing from the peer fails (ETIMEDOUT: the engine tries another
    /// endpoint, a node gone silent is failed over as fast as a pod that is), but while the peer
    /// is heard from it waits on: the peer is busy answering the calls before it. A burst of a
    /// thousand new connections takes the peer longer than one dial's timeout to answer, and
    /// failing them all only sent it each again (a retry storm: the client's connections reset).
    func expire(_ carriage: Carriage, every interval: TimeAmount, waited: TimeAmount = .zero) {
        let mark = carriage.tunnel.map { (tunnel: ObjectIdentifier($0), reads: $0.reads) }
        clock.wait(CallClock.Entry(deadline: .now() + interval, carriage: carriage, interval: interval, waited: waited, mark: mark))
    }

    /// Opens the carriage's stream in the tunnel to its endpoint's node; a tunnel that can open
    /// no more (closing, or out of stream identifiers) is left to end, and a new one opened.
    func place(_ carriage: Carriage, _ r: Request, again: Bool) {
        let pending = tunnel(r)
        pending.whenComplete { [self] result in
            // Given back already (timed out, or the engine ended it): no stream for it.
            guard !carriage.finished else { return }
            guard case let .success(streams) = result else { return carriage.failed(EHOSTUNREACH) }
            if streams.call(carriage.streamSide, connect(r, timeout: carriage.handoff.timeoutNanoseconds)) {
                carriage.tunnel = streams
                // Open now (not waiting for a stream slot): the client's bytes may follow the CONNECT.
                if carriage.streamSide.streams != nil { carriage.join() }
                return
            }
            let key = Key(source: r.source, node: r.node)
            if tunnels[key] === pending { tunnels[key] = nil }
            if again { place(carriage, r, again: false) } else { carriage.failed(EHOSTUNREACH) }
        }
    }

    /// The CONNECT for a request: the endpoint, the client's address, its workload, the dial's
    /// timeout. The last one is kept (on `loop`), encoded: a call like the one before sends its
    /// bytes again.
    func connect(_ r: Request, timeout: UInt64) -> HeaderBlock {
        if let last = lastConnect, last.client == r.client, last.endpoint == r.endpoint, last.timeout == timeout,
           last.workload == r.traffic.sourceWorkload {
            return last.headers
        }
        let headers = HeaderBlock(literal: Self.connect(r, timeout: timeout))
        lastConnect = (r.client, r.endpoint, timeout, r.traffic.sourceWorkload, headers)
        return headers
    }

    static func connect(_ r: Request, timeout: UInt64) -> HPACKHeaders {
        [":method": "CONNECT", ":authority": "\(r.endpoint.ip):\(r.endpoint.port)",
         "forwarded": "for=\(r.client)", "baggage": "k8s.workload.name=\(r.traffic.sourceWorkload)",
         Mesh.dialTimeoutHeader: String(max(1, timeout / 1_000_000))]
    }

    /// The CONNECT's answer: the client joins the stream, or goes back to the engine.
    func answered(_ headers: HPACKHeaders, _ carriage: Carriage, _ r: Request) {
        // Given back already (timed out, or the engine ended it): the answer comes too late.
        guard !carriage.finished else { return carriage.streamSide.cancel() }
        let code: Int32 = switch headers.first(name: ":status") {
        case "200": 0
        case "403": EACCES
        case "503": headers.first(name: Mesh.dialErrorHeader).flatMap(Int32.init).flatMap(Self.dialError) ?? ECONNREFUSED
        default: EPROTO
        }
        guard code == 0 else {
            carriage.failed(code)
            carriage.streamSide.cancel()
            return
        }
        carriage.connected(traffic: series(r.traffic))
    }

    /// A connection's label set, counted opened; the last one is kept (on `loop`), and a
    /// connection like the one before takes it without the lookup.
    func series(_ key: MeshTraffic.Key) -> MeshTraffic.Series {
        if let last = lastSeries, last.key == key {
            last.series.opened.add(1, ordering: .relaxed)
            return last.series
        }
        let series = traffic.opened(key)
        lastSeries = (key, series)
        return series
    }

    /// The destination's dial error it names, of those a dial can meet (else nil).
    static func dialError(_ code: Int32) -> Int32? {
        [ECONNREFUSED, ETIMEDOUT, ENETUNREACH, EHOSTUNREACH, EPERM, ECONNRESET].contains(code) ? code : nil
    }

    /// The tunnel for this source identity to the endpoint's node, opened if there is none.
    func tunnel(_ r: Request) -> EventLoopFuture<TunnelStreams> {
        let key = Key(source: r.source, node: r.node)
        if let open = tunnels[key] { return open }
        guard let address = directory.nodeAddress(r.node), let credential = identities.credential(r.source) else {
            return loop.nio.makeFailedFuture(MeshError("no address for node \(r.node)"))
        }
        let expected = SPIFFEID.node(domain: directory.trustDomain, name: r.node)
        let promise = loop.nio.makePromise(of: TunnelStreams.self)
        let opened = promise.futureResult
        tunnels[key] = opened  // before the callbacks: a connect that failed at once runs them now
        let peer = PeerIdentity(expected: expected, book: book, local: credential.serial, loop: loop)
        let streams = TunnelStreams(server: nil, peer: peer)
        do {
            let tls = try NIOSSLClientHandler(context: credential.client, serverHostname: nil)
            let (fd, started) = TCPSocket.connect(to: KemuSystem.SocketAddress(address, Mesh.tunnelPort))
            guard fd >= 0 else { throw IOError(errnoCode: started, reason: "connect") }
            let socket = try TunnelSocket(fd: fd, loop: loop, handlers: [tls, peer, streams]) { [self] error in
                guard error == 0, let channel = streams.context?.channel else {
                    return promise.fail(IOError(errnoCode: error == 0 ? ECONNRESET : error, reason: "connect"))
                }
                counters.tunnel(true)
                channel.closeFuture.whenComplete { [self] _ in
                    if tunnels[key] === opened { tunnels[key] = nil }
                    counters.tunnelClosed()
                }
                promise.succeed(streams)
            }
            // A peer that takes the connection but not the handshake: the calls waiting in the
            // tunnel fail over (`expire`), and the next ones open a new tunnel.
            socket.close(after: Mesh.handshakeNanoseconds) { peer.id != nil }
        } catch {
            promise.fail(error)
        }
        opened.whenFailure { [self] error in
            counters.tunnel(false)
            if tunnels[key] === opened { tunnels[key] = nil }
            logger.info("no tunnel to \(r.node) (\(address)) for \(r.source): \(error)")
        }
        return opened
    }
}

