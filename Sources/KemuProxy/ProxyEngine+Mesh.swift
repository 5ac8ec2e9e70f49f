import Glibc
import KemuSystem

/// Connections the mesh carries: handed over at the dial, accounted for from its reports.
extension ProxyEngine {
    /// Gives the client's socket to the mesh. One the engine watched goes as a descriptor of
    /// its own: this one closes at the end of the batch, so no event already fetched for it can
    /// reach a new connection that got its number. What the engine holds of the client's bytes
    /// (a replay) goes with it.
    func hand(_ c: Connection, to carrier: MeshCarrier) {
        guard let e = c.endpoint else { return }
        let fd = c.watched ? dup(c.client) : c.client
        guard fd >= 0 else {
            dialFailed(c, e, errno)
            finish(c, reset: true)
            return
        }
        forget(c.client)
        if c.watched {
            epoll.remove(c.client)
            closeLater(c.client, reset: false)
            c.watched = false
        }
        carrySequence &+= 1
        carried[carrySequence] = c
        let held = c.toUpstream.held
        let handoff = MeshHandoff(token: carrySequence, client: fd, flight: held, clientEnded: c.toUpstream.endOfStream,
                                  timeoutNanoseconds: c.pool.dialTimeout(attempt: c.tried.count - 1), replayBytes: settings.replayBytes,
                                  inbox: inbox)
        c.toUpstream = Connection.Direction()
        c.client = -1
        carrier.carry(handoff)
    }

    func tunnelReported(_ report: TunnelReport, at: UInt64) {
        // The latencies are the mesh's own, not how long the report waited for this thread.
        switch report {
        case let .connected(token):
            guard let c = carried[token], let e = c.endpoint else { return }
            c.connected = true
            c.pool.connected(e, latencyNanoseconds: at > c.dialStarted ? at - c.dialStarted : 0)
        case let .answered(token):
            guard let c = carried[token], let e = c.endpoint else { return }
            c.firstFlight = nil
            c.pool.answered(e, latencyNanoseconds: at > c.dialStarted ? at - c.dialStarted : 0, now: max(at, now))
        case let .returned(token, fd, error, flight, clientEnded):
            guard let c = carried.removeValue(forKey: token) else { close(fd); return }
            takeBack(c, fd, error: error, flight: flight, clientEnded: clientEnded)
        case let .closed(token, up, down):
            guard let c = carried.removeValue(forKey: token) else { return }
            (c.bytesUp, c.bytesDown) = (up, down)
            logAccess(c, how: "closed by the mesh")
            guard let e = c.endpoint else { return }
            e.active -= 1
            e.stats.bytesToEndpoint &+= UInt64(up)
            e.stats.bytesFromEndpoint &+= UInt64(down)
            if c.connected { e.stats.closed += 1 }
            c.endpoint = nil
        }
    }

    /// A carried connection given back: its dial failed (another endpoint is tried), the mesh
    /// refused it, or the endpoint ended it unanswered (replayed elsewhere).
    private func takeBack(_ c: Connection, _ fd: Int32, error: Int32, flight: [UInt8], clientEnded: Bool) {
        c.client = fd
        store(c, at: fd)
        c.toUpstream = Connection.Direction()
        c.toUpstream.held = flight
        c.toUpstream.endOfStream = clientEnded
        c.firstFlight = flight
        guard let e = c.endpoint else { finish(c, reset: true); return }
        guard watch(c) else { return }
        if c.connected {
            replay(c)
        } else if error == EACCES {
            refuse(c, e)
        } else {
            dialFailed(c, e, error)
            dial(c)
        }
    }

    /// The mesh's policies changed: connections the engine carries itself (the same node's pods,
    /// a plain client's to another node) that they now refuse are reset, as ztunnel closes
    /// those a new DENY covers. Tunnelled ones are judged at their destination.
    func judgeAgain(_ mesh: any MeshTunnels) {
        judgedPolicies = mesh.policyGeneration
        var closed = 0
        for case let c? in connections where c.client >= 0 && connections[Int(c.client)] === c && c.connected {
            guard let e = c.endpoint, !mesh.allows(client: c.clientAddress, endpoint: e.spec) else { continue }
            c.pool.stats.policyDenied += 1
            finish(c, reset: true)
            closed += 1
        }
        if closed > 0 { logger.info("reset \(closed) connection(s) a changed mesh policy refuses") }
    }

    /// The mesh refused this client: every endpoint of the Service would, and it is not the
    /// endpoint's fault. The client is reset.
    func refuse(_ c: Connection, _ e: Endpoint) {
        e.active -= 1
        c.endpoint = nil
        c.pool.stats.policyDenied += 1
        finish(c, reset: true)
    }
}

/// Connections captured on their way to a pod's own address (TPROXY: a meshed pod dialling
/// another meshed pod directly, as ztunnel captures them): each goes where its client meant, in
/// a pool of that one endpoint, so the mesh carries and judges it like a Service's.
extension ProxyEngine {
    /// The pool for a captured connection's destination (the accepted socket's own address),
    /// made on its first connection; nil when that is not a pod the mesh knows.
    func capturePool(_ fd: Int32) -> EndpointPool? {
        guard let destination = TCPSocket.localAddress(fd) else { return nil }
        if let pool = captured[destination] {
            pool.lastUsed = now
            return pool
        }
        guard let pod = settings.mesh?.locate(destination.ip) else { return nil }
        var settings = PoolSettings()
        settings.connectAttempts = 1  // one endpoint: nowhere else to go
        let pool = EndpointPool(name: "capture/\(destination)", settings: settings,
                                endpoints: [EndpointSpec(destination, target: pod.target, nodeName: pod.node)], now: now)
        pool.lastUsed = now
        captured[destination] = pool
        return pool
    }

    /// Drops the pools of destinations nobody has dialled for a minute and none is connected to.
    func forgetIdleCaptures() {
        guard !captured.isEmpty else { return }
        captured = captured.filter { _, pool in now &- pool.lastUsed < 60_000_000_000 || pool.endpoints.contains { $0.active > 0 } }
    }
}
