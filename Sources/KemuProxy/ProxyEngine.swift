import Foundation
import Glibc
import KemuIP
import KemuSystem
import Logging
import Synchronization

/// What the engine is told to do. The control plane sends commands in batches (one wake-up per
/// batch); the engine's thread owns all connection and pool state, so the byte path takes no lock.
public enum EngineCommand: Sendable {
    /// Creates or updates a pool. Open connections keep going; endpoints that left are drained.
    case setPool(String, PoolSettings, [EndpointSpec])
    case removePool(String)
    /// Starts accepting (TCP) or receiving (UDP) on a socket the caller bound (the engine owns it
    /// from now on) and sends its connections and flows to the frontend's pool.
    case listen(Int32, FrontendAddress, Frontend)
    /// Sends an address's new connections to another pool, or with another source (a traffic
    /// policy changed).
    case route(FrontendAddress, Frontend)
    /// Stops accepting on an address and closes its socket; TCP connections already made go
    /// on, UDP flows end.
    case unlisten(FrontendAddress)
    /// Calls back, on the engine's thread, with the counters.
    case snapshot(@Sendable (EngineSnapshot) -> Void)
    /// What became of a connection the mesh carries, and when (monotonic nanoseconds: a
    /// report may wait for the engine's next turn).
    case tunnel(TunnelReport, at: UInt64)
}

public struct EngineSettings: Sendable {
    /// A connection with no bytes either way for this long is closed; 0 never.
    public var idleTimeoutSeconds: Double = 3600
    /// A log line per connection as it ends (client, frontend, pool, endpoint, bytes, duration).
    public var accessLog = false
    /// The splice pipe per direction (bounded buffer: reading stops while it is full).
    public var pipeBytes: Int32 = 256 * 1024
    /// First-flight replay: a copy of what the client sent is kept until the endpoint's first
    /// byte back (at most this much); an endpoint that resets or closes before answering (a
    /// killed process) gets the connection replayed on another endpoint, the client none the
    /// wiser. 0 turns it off.
    public var replayBytes = 16 * 1024
    /// When the engine stops (SIGTERM), listeners close at once (new connections are refused)
    /// and connections under way get this long to finish before they are reset.
    public var stopDrainSeconds = 2.0
    /// Dial endpoints from the client's own address where the frontend's `ClientSource` says
    /// so (IP_TRANSPARENT). Only where the namespace hands endpoints' replies back to the proxy
    /// (`TransparentDial.install`); else every dial is from the node's address.
    public var transparentDial = false
    /// The cluster's pod network: the clients whose address a ClusterIP dial keeps.
    public var podNetwork: IPv4Network?
    /// A UDP flow (client address and port → endpoint) with no datagram either way for this
    /// long ends (conntrack's UDP timeout: 30 s unreplied, 120 s once both ways; one figure here).
    public var flowIdleSeconds = 120.0
    /// UDP flows at most (each holds a socket); past it a new client's datagrams are dropped.
    public var maxFlows = 65536
    /// The mesh's tunnels between node proxies: a dial it takes goes through one of them.
    public var mesh: (any MeshTunnels)?
    public init() {}
}

/// The byte path: one thread, one epoll set, listening sockets and proxied connections. Each
/// accepted connection gets an endpoint from its pool, a non-blocking connect with a timeout,
/// retries on other endpoints, and then two splice(2) pipes carrying bytes each way inside the
/// kernel, half-closes passed through.
public final class ProxyEngine: @unchecked Sendable {
    let settings: EngineSettings
    let logger: Logger
    let epoll: Epoll
    /// Commands from other threads.
    let inbox: EngineInbox
    private let running = Atomic<Bool>(false)
    private let stopped = Mutex<CheckedContinuation<Void, Never>?>(nil)

    // Everything below belongs to the engine's thread.
    var listeners: [Int32: Listener] = [:]
    var listenerByAddress: [FrontendAddress: Int32] = [:]
    var pools: [String: EndpointPool] = [:]
    /// Connections by descriptor: each connection appears under its client and upstream fds.
    var connections: [Connection?] = []
    var openConnections = 0
    var timers = TimerHeap()
    var dialSequence: UInt32 = 0
    var closing: [Int32] = []
    /// Stopping: listeners are closed and no new one opens.
    var draining = false
    /// The copy buffer every connection shares on this thread (see `move`).
    static let scratchBytes = 64 * 1024
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: ProxyEngine.scratchBytes, alignment: 64)
    var sparePipes: [SplicePipe] = []
    var now: UInt64 = monotonicNanoseconds()
    var nextSweep: UInt64 = 0
    /// The mesh's policy generation the live connections were last judged at.
    var judgedPolicies = 0
    /// Captured connections' pools, by the pod address they went to.
    var captured: [SocketAddress: EndpointPool] = [:]
    /// Connections the mesh carries (their client socket is the mesh's), by token.
    var carried: [UInt64: Connection] = [:]
    var carrySequence: UInt64 = 0
    /// Active health checks in flight, by descriptor.
    var checks: [Int32: (pool: EndpointPool, endpoint: Endpoint)] = [:]
    /// UDP flows, by frontend and client, and by their upstream socket.
    var flows: [FlowKey: Flow] = [:]
    var flowByUpstream: [Int32: Flow] = [:]
    var transparentFallbackLogged = false
    /// Datagrams a delay Fault holds, by timer generation.
    var delayedDatagrams: [UInt32: (key: FlowKey, bytes: [UInt8])] = [:]

    struct Listener {
        let address: FrontendAddress
        var frontend: Frontend
    }

    public init(settings: EngineSettings = EngineSettings(), logger: Logger = Logger(label: "kemu.proxy.engine")) throws {
        self.settings = settings
        self.logger = logger
        epoll = try Epoll()
        inbox = try EngineInbox()
        try epoll.add(inbox.signal.fd, events: Epoll.readable, token: Token.wake)
    }

    deinit { scratch.deallocate() }

    /// Starts the engine's thread.
    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // A write to a socket the peer reset must fail with EPIPE, not kill the process
        // (spawned programs get the default back: kemu_spawn resets every signal).
        signal(SIGPIPE, SIG_IGN)
        startThread(named: "kemu-proxy") { [self] in
            loop()
            let continuation = stopped.withLock { c in defer { c = nil }; return c }
            continuation?.resume()
        }
    }

    /// Stops the thread: listeners close at once, connections under way get
    /// `stopDrainSeconds` to finish, then every socket left is closed (with a reset).
    public func stop() async {
        guard running.load(ordering: .acquiring) else { return }
        await withCheckedContinuation { continuation in
            stopped.withLock { $0 = continuation }
            running.store(false, ordering: .releasing)
            inbox.signal.signal()
        }
    }

    /// Queues commands for the engine's thread and wakes it (`EngineInbox.send`).
    public func send(_ commands: [EngineCommand]) { inbox.send(commands) }

    public func snapshot() async -> EngineSnapshot {
        await withCheckedContinuation { continuation in
            send([.snapshot { continuation.resume(returning: $0) }])
        }
    }

    enum Token {
        static let wake: UInt64 = 0
        static func listener(_ fd: Int32) -> UInt64 { 1 << 32 | UInt64(UInt32(fd)) }
        static func connection(_ fd: Int32) -> UInt64 { 2 << 32 | UInt64(UInt32(fd)) }
        static func healthCheck(_ fd: Int32) -> UInt64 { 3 << 32 | UInt64(UInt32(fd)) }
        static func datagramListener(_ fd: Int32) -> UInt64 { 4 << 32 | UInt64(UInt32(fd)) }
        static func flow(_ fd: Int32) -> UInt64 { 5 << 32 | UInt64(UInt32(fd)) }
    }

    private func loop() {
        let events = Epoll.Events(capacity: 512)
        while running.load(ordering: .relaxed) { turn(events) }
        // Draining: nothing new is accepted; what is under way may finish.
        draining = true
        for fd in Array(checks.keys) { endHealthCheck(fd, healthy: nil) }
        for fd in Array(listeners.keys) { closeListener(fd, acceptingFirst: true) }
        let deadline = now + UInt64(max(settings.stopDrainSeconds, 0) * 1e9)
        while openConnections + carried.count > 0 && now < deadline { turn(events, wakeBy: deadline) }
        shutdownAll()
        closeDeferred()
    }

    /// One wait for events and what they ask for, timers and the sweep included.
    private func turn(_ events: Epoll.Events, wakeBy limit: UInt64 = .max) {
        let next = min(timers.first?.deadline ?? .max, limit)
        let timeout = next == .max ? 1000 : next > now ? Int32(min((next - now) / 1_000_000 + 1, 1000)) : 0
        let n = epoll.wait(events, timeoutMilliseconds: timeout)
        now = monotonicNanoseconds()
        for i in 0..<n {
            let token = events.token(i)
            let fd = Int32(truncatingIfNeeded: token & 0xffff_ffff)
            switch token >> 32 {
            case 0: applyCommands(woken: true)
            case 1: acceptAll(fd)
            case 3: healthCheckEvent(fd, events.events(i))
            case 4: receiveDatagrams(fd)
            case 5: flowEvent(fd)
            default: connectionEvent(fd, events.events(i))
            }
        }
        runTimers()
        if let mesh = settings.mesh, mesh.policyGeneration != judgedPolicies { judgeAgain(mesh) }
        if now >= nextSweep { sweep() }
        applyCommands(woken: false)  // what was posted without a wake-up
        closeDeferred()
    }

    private func applyCommands(woken: Bool) {
        if woken { inbox.signal.drain() }
        for command in inbox.take() { apply(command) }
    }

    func apply(_ command: EngineCommand) {
        switch command {
        case let .setPool(name, poolSettings, endpoints):
            if let pool = pools[name] {
                pool.update(settings: poolSettings, endpoints: endpoints, now: now)
                endFlowsToRemovedEndpoints(of: pool)
            } else {
                pools[name] = EndpointPool(name: name, settings: poolSettings, endpoints: endpoints, now: now)
            }
        case let .removePool(name):
            if let pool = pools.removeValue(forKey: name) {
                pool.update(settings: pool.settings, endpoints: [], now: now)
                endFlowsToRemovedEndpoints(of: pool)
            }
        case let .listen(fd, address, frontend):
            if draining { close(fd); return }
            if let old = listenerByAddress[address] { closeListener(old, acceptingFirst: true) }
            if address.transport == .tcp { TCPSocket.setNoDelay(fd) }  // accepted sockets inherit it
            do {
                let token = address.transport == .tcp ? Token.listener(fd) : Token.datagramListener(fd)
                try epoll.add(fd, events: Epoll.readable, token: token)
                listeners[fd] = Listener(address: address, frontend: frontend)
                listenerByAddress[address] = fd
            } catch {
                logger.error("cannot watch the listener on \(address): \(error)")
                close(fd)
            }
        case let .route(address, frontend):
            if let fd = listenerByAddress[address] { listeners[fd]?.frontend = frontend }
        case let .unlisten(address):
            if let fd = listenerByAddress[address] { closeListener(fd) }
        case let .snapshot(reply):
            reply(makeSnapshot())
        case let .tunnel(report, at):
            tunnelReported(report, at: at)
        }
    }

    /// `acceptingFirst`: connections the kernel already completed for it are taken and served
    /// first (closing a listener resets those in its queue) — a stopping proxy refuses new
    /// connections, it does not reset ones it had.
    private func closeListener(_ fd: Int32, acceptingFirst: Bool = false) {
        if acceptingFirst && listeners[fd]?.address.transport == .tcp { acceptAll(fd) }
        guard let listener = listeners.removeValue(forKey: fd) else { return }
        listenerByAddress[listener.address] = nil
        epoll.remove(fd)
        close(fd)
        if listener.address.transport == .udp { endFlows { $0.key.frontend == listener.address } }
    }

    /// Once a second: idle connections, connections past their endpoint's drain time, and
    /// expired affinity.
    private func sweep() {
        nextSweep = now + 1_000_000_000
        let idle = settings.idleTimeoutSeconds > 0 ? UInt64(settings.idleTimeoutSeconds * 1e9) : UInt64.max
        for case let c? in connections where c.client >= 0 && connections[Int(c.client)] === c {
            if now &- c.lastActive > idle {
                finish(c, reset: true)
            } else if drained(c) {
                finish(c, reset: true)
            }
        }
        for (token, c) in carried where drained(c) { settings.mesh?.close(token: token) }
        let flowIdle = UInt64(max(settings.flowIdleSeconds, 0.001) * 1e9)
        endFlows { self.now &- $0.lastActive > flowIdle }
        for pool in pools.values { pool.expireAffinity(now: now) }
        forgetIdleCaptures()
        runHealthChecks()
    }

    /// Past its endpoint's drain time (the endpoint left its Service).
    private func drained(_ c: Connection) -> Bool {
        guard let e = c.endpoint, e.removedAt != 0, let drain = c.pool.settings.drainSeconds else { return false }
        return now &- e.removedAt >= UInt64(drain * 1e9)
    }

    private func shutdownAll() {
        for fd in Array(checks.keys) { endHealthCheck(fd, healthy: nil) }
        for fd in Array(listeners.keys) { closeListener(fd) }
        for case let c? in connections where c.client >= 0 && connections[Int(c.client)] === c { finish(c, reset: true) }
        for token in carried.keys { settings.mesh?.close(token: token) }
        endFlows { _ in true }
        for pipe in sparePipes { pipe.close() }
        sparePipes.removeAll()
    }
}

/// A min-heap of deadlines: dial timeouts, and listeners paused after accept failed.
struct TimerHeap {
    enum Kind { case dial, delayedDial, resumeAccept, delayedDatagram }
    struct Entry {
        var deadline: UInt64
        var kind: Kind
        var fd: Int32
        /// Which dial of the connection this is for; a stale entry is skipped.
        var generation: UInt32
    }

    private var heap: [Entry] = []
    var first: Entry? { heap.first }

    mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].deadline <= heap[i].deadline { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
                if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
