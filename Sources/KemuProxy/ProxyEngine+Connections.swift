import Glibc
import KemuSystem

extension ProxyEngine {
    func acceptAll(_ listenerFD: Int32) {
        guard let listener = listeners[listenerFD] else { return }
        for _ in 0..<256 {
            switch TCPSocket.accept(listenerFD) {
            case .none:
                return
            case let .failed(err):
                // Out of descriptors or buffers: pause this listener for 100 ms rather than spin.
                logger.warning("accept on \(listener.address): \(String(cString: strerror(err))); pausing it for 100 ms")
                epoll.remove(listenerFD)
                timers.push(.init(deadline: now + 100_000_000, kind: .resumeAccept, fd: listenerFD, generation: 0))
                return
            case let .connection(fd, peer):
                let (chosen, source) = listener.frontend.passthrough ? (capturePool(fd), listener.frontend.source) : route(listener, client: peer.ip)
                guard let pool = chosen, !pool.endpoints.isEmpty else {
                    // No endpoints: the client learns at once (a reset), as with kube-proxy's REJECT.
                    chosen?.stats.rejected += 1
                    TCPSocket.abort(fd)
                    continue
                }
                pool.stats.accepted += 1
                let c = Connection(client: fd, address: peer, frontend: listener.address.address, source: source, pool: pool, now: now)
                store(c, at: fd)
                if let rule = pool.settings.faults.first(where: { $0.matches(peer.ip) }) {
                    // Held or delayed: watched meanwhile (the client may leave).
                    guard watch(c) else { continue }
                    if injectFault(rule, c) { continue }
                }
                dial(c)
                // Watched once it is the engine's to carry: one the mesh took, or already over,
                // needs no epoll entry made and undone.
                if !c.watched, connection(fd) === c { _ = watch(c) }
            }
        }
    }

    /// Puts the client's socket in the epoll set; a connection that cannot be watched is reset.
    func watch(_ c: Connection) -> Bool {
        do {
            try epoll.add(c.client, events: Epoll.edgeAll, token: Token.connection(c.client))
            c.watched = true
            return true
        } catch {
            finish(c, reset: true)
            return false
        }
    }

    /// A Fault's action on a new connection; false when it should be dialled now.
    private func injectFault(_ rule: FaultRule, _ c: Connection) -> Bool {
        switch rule.action(roll: Double.random(in: 0..<100), spread: Double.random(in: -1...1)) {
        case .pass:
            return false
        case .abort:
            c.pool.stats.faultAborts += 1
            finish(c, reset: true)
        case .hang:
            c.pool.stats.faultHangs += 1
            c.hung = true
        case let .delay(nanoseconds):
            c.pool.stats.faultDelays += 1
            dialSequence &+= 1
            c.generation = dialSequence
            timers.push(.init(deadline: now + nanoseconds, kind: .delayedDial, fd: c.client, generation: c.generation))
        }
        return true
    }

    /// Picks an endpoint and starts connecting; on an immediate failure tries the next. A client
    /// with no endpoint left gets a reset.
    func dial(_ c: Connection) {
        let pool = c.pool
        while c.tried.count < max(pool.settings.connectAttempts, 1) {
            guard let e = pool.choose(client: c.clientAddress.ip, tried: c.tried, now: now) else { break }
            if !c.tried.isEmpty { pool.stats.retries += 1 }
            c.tried.append(e)
            c.endpoint = e
            e.active += 1
            // Engine-wide, not per connection: a timer outlives its connection, and the next
            // connection may get the same descriptor.
            dialSequence &+= 1
            c.generation = dialSequence
            c.dialStarted = now
            var source = dialSource(c.source, client: c.clientAddress.ip, endpoint: e.spec.address.ip)
            var (fd, err): (Int32, Int32)
            switch settings.mesh?.dial(client: c.clientAddress, endpoint: e.spec) ?? .direct {
            case let .tunnel(carrier):
                hand(c, to: carrier)
                return
            case .refused:
                refuse(c, e)
                return
            case .direct:
                (fd, err) = TCPSocket.connect(to: e.spec.address, from: source)
            }
            if fd < 0, source != nil {
                transparentDialFailed(err)
                source = nil
                (fd, err) = TCPSocket.connect(to: e.spec.address)
            }
            if fd < 0 {
                dialFailed(c, e, err)
                continue
            }
            c.upstream = fd
            store(c, at: fd)
            do {
                try epoll.add(fd, events: Epoll.edgeAll, token: Token.connection(fd))
            } catch {
                dropUpstream(c)
                dialFailed(c, e, ENOMEM)
                continue
            }
            if err == 0 {
                upstreamConnected(c)
            } else {
                timers.push(.init(deadline: now + pool.dialTimeout(attempt: c.tried.count - 1), kind: .dial, fd: c.client, generation: c.generation))
            }
            return
        }
        pool.stats.rejected += 1
        finish(c, reset: true)
    }

    /// `err`: the connect's errno, or ETIMEDOUT for our own dial timeout.
    func dialFailed(_ c: Connection, _ e: Endpoint, _ err: Int32) {
        e.active -= 1
        c.endpoint = nil
        if Self.refusedByPolicy(err) {
            c.pool.stats.policyDenied += 1
            return
        }
        e.lastConnectError = err
        if c.pool.failed(e, now: now) {
            logger.info("\(c.pool.name): ejected \(e.spec.address) for \(Double(e.ejectedUntil - now) / 1e9) s after failed connects")
        }
    }

    func dropUpstream(_ c: Connection) {
        guard c.upstream >= 0 else { return }
        forget(c.upstream)
        closeLater(c.upstream, reset: false)
        c.upstream = -1
    }

    func runTimers() {
        while let t = timers.first, t.deadline <= now {
            _ = timers.pop()
            switch t.kind {
            case .resumeAccept:
                if listeners[t.fd] != nil { try? epoll.add(t.fd, events: Epoll.readable, token: Token.listener(t.fd)) }
            case .delayedDatagram:
                sendDelayedDatagram(t.generation)
            case .delayedDial:
                guard let c = connection(t.fd), c.client == t.fd, !c.connected, c.endpoint == nil, c.generation == t.generation else { continue }
                dial(c)
            case .dial:
                guard let c = connection(t.fd), c.client == t.fd, !c.connected, c.generation == t.generation, let e = c.endpoint else { continue }
                dropUpstream(c)
                dialFailed(c, e, ETIMEDOUT)
                dial(c)
            }
        }
    }

    func connectionEvent(_ fd: Int32, _ events: UInt32) {
        guard let c = connection(fd) else { return }
        if c.hung {
            if events & Epoll.peerClosed != 0 { finish(c, reset: false) }
            return
        }
        if !c.connected {
            if fd == c.upstream {
                guard events & (Epoll.writable | Epoll.failed) != 0 else { return }
                // Writable without an error is a finished connect (events are never stale: see
                // closeLater), so SO_ERROR is read only when something failed.
                let err = events & Epoll.failed == 0 ? 0 : TCPSocket.pendingError(fd)
                if err == 0 {
                    upstreamConnected(c)
                } else if let e = c.endpoint {
                    dropUpstream(c)
                    dialFailed(c, e, err)
                    dial(c)
                }
            } else if events & Epoll.failed != 0 {
                finish(c, reset: true)  // the client went away while we dialled
            }
            return
        }
        pump(c, fd: fd, events: events)
    }

    func upstreamConnected(_ c: Connection) {
        guard let e = c.endpoint else { return }
        c.connected = true
        c.pool.connected(e, latencyNanoseconds: now &- c.dialStarted)
        // Bytes the client sent while we dialled raised an edge nobody consumed: move them now.
        pump(c)
    }

    /// Moves what can move after `events` on `fd` (fd -1: both ways, all events): reading the
    /// side that became readable, writing to the side that became writable if bytes wait for it.
    /// Ends the connection when both directions are done, or resets both sides when either fails.
    func pump(_ c: Connection, fd: Int32 = -1, events: UInt32 = Epoll.any) {
        guard let e = c.endpoint else { return }
        let all = fd < 0
        let closing = events & Epoll.peerClosed != 0
        var up = 0, down = 0
        // Before the endpoint's first byte, its events read the client too: whether the client
        // had finished decides if an endpoint that closes unanswered is an answer or a replay.
        let unanswered = fd == c.upstream && c.bytesDown == 0 && c.firstFlight != nil
        if all || (fd == c.client && events & (Epoll.readable | Epoll.peerClosed) != 0) || (fd == c.upstream && c.toUpstream.waiting) || unanswered {
            up = move(&c.toUpstream, from: c.client, to: c.upstream, drain: all || fd != c.client || closing, otherDone: c.toClient.shutDown,
                      record: &c.firstFlight, undeliverable: c.bytesDown == 0)
            if up == Self.endedUnanswered { replay(c); return }
            if up < 0 { finish(c, reset: true); return }
        }
        if all || (fd == c.upstream && events & (Epoll.readable | Epoll.peerClosed) != 0) || (fd == c.client && c.toClient.waiting) {
            var none: [UInt8]? = nil
            down = move(&c.toClient, from: c.upstream, to: c.client, drain: all || fd != c.upstream || closing, otherDone: c.toUpstream.shutDown,
                        record: &none, unanswered: c.bytesDown == 0 && c.firstFlight != nil,
                        // A clean end with nothing said is an answer when the client had finished.
                        unansweredEnd: c.bytesDown == 0 && c.firstFlight != nil && !c.toUpstream.endOfStream)
            if down == Self.endedUnanswered { replay(c); return }
            if down < 0 { finish(c, reset: true); return }
            if down > 0 {
                c.firstFlight = nil
                if c.bytesDown == 0 { c.pool.answered(e, latencyNanoseconds: now &- c.dialStarted, now: now) }
            }
        }
        if up > 0 || down > 0 {
            c.lastActive = now
            c.bytesUp += up
            c.bytesDown += down
            e.stats.bytesToEndpoint &+= UInt64(up)
            e.stats.bytesFromEndpoint &+= UInt64(down)
        }
        if c.toUpstream.shutDown && c.toClient.shutDown { finish(c, reset: false) }
    }

    /// One direction until it would block. Returns the bytes written on, or -1 when a socket
    /// failed; at end of stream, once nothing waits, the write side is shut down (half-close
    /// passed on).
    ///
    /// Small exchanges are copied through one buffer the engine shares (recv, send: two calls
    /// per message, and a short read means the socket is empty, so no third call to learn it).
    /// A read that fills the buffer turns the direction to splice(2) for good: bulk bytes then go
    /// socket → pipe → socket inside the kernel. Without `drain`, a short read ends the turn (the
    /// next arrival raises a new edge); with it (the peer closed, or the edge was consumed
    /// earlier) reading goes on until the socket says EAGAIN or end of stream.
    ///
    /// `record` keeps a copy of what is copied (until more than `replayBytes`; splice ends it).
    /// With `unanswered`, a source that fails before its first byte returns `endedUnanswered`
    /// and nothing is passed on (the connection may be replayed); with `unansweredEnd`, one that
    /// ends before it too. With `undeliverable` (and a complete `record`), a destination that
    /// fails (an endpoint that reset the connection before reading it) returns `endedUnanswered`.
    @inline(__always)
    private func move(_ d: inout Connection.Direction, from src: Int32, to dst: Int32, drain: Bool, otherDone other: Bool,
                      record: inout [UInt8]?, unanswered: Bool = false, unansweredEnd: Bool = false, undeliverable: Bool = false) -> Int {
        let sendFailed = undeliverable && record != nil ? Self.endedUnanswered : -1
        var written = 0
        while true {
            if d.pending > 0, let pipe = d.pipe {
                let n = SplicePipe.move(from: pipe.readEnd, to: dst, length: d.pending)
                if n > 0 {
                    d.pending -= n
                    written += n
                    continue
                }
                return n == -Int(EAGAIN) ? written : -1
            }
            if !d.held.isEmpty {
                let n = d.held.withUnsafeBytes { TCPSocket.send(dst, from: $0.baseAddress!, count: $0.count) }
                if n == d.held.count {
                    d.held.removeAll()
                    written += n
                    continue
                }
                if n >= 0 { d.held.removeFirst(n); return written + n }
                return n == -Int(EAGAIN) ? written : sendFailed
            }
            if d.endOfStream {
                if !d.shutDown {
                    // When the other direction is already over, the close that follows sends
                    // the FIN: no shutdown call needed.
                    if !other { TCPSocket.shutdownWrite(dst) }
                    d.shutDown = true
                }
                return written
            }
            if let pipe = d.pipe {
                record = nil
                let n = SplicePipe.move(from: src, to: pipe.writeEnd, length: Int(settings.pipeBytes))
                if n > 0 {
                    d.pending = n
                } else if n == 0 {
                    d.endOfStream = true
                } else {
                    return n == -Int(EAGAIN) ? written : -1
                }
                continue
            }
            let n = TCPSocket.receive(src, into: scratch, count: Self.scratchBytes)
            if n == 0 && unansweredEnd && written == 0 { return Self.endedUnanswered }
            if n == 0 { d.endOfStream = true; continue }
            if n < 0 { return n == -Int(EAGAIN) ? written : unanswered && written == 0 ? Self.endedUnanswered : -1 }
            if record != nil {
                if record!.count + n <= settings.replayBytes {
                    record!.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: n))
                } else {
                    record = nil
                }
            }
            let sent = TCPSocket.send(dst, from: scratch, count: n)
            if sent < 0 && sent != -Int(EAGAIN) { return record != nil ? sendFailed : -1 }
            let done = max(sent, 0)
            written += done
            if done < n {
                d.held = Array(UnsafeRawBufferPointer(start: scratch + done, count: n - done))
                return written
            }
            if n == Self.scratchBytes {
                do { d.pipe = try takePipe() } catch { return -1 }
                continue
            }
            if !drain { return written }
        }
    }

    static let endedUnanswered = -2

    /// The endpoint reset or closed the connection before its first byte back: it goes (counted
    /// as a failure, towards ejection) and what the client sent is replayed on another endpoint,
    /// within the pool's connect attempts. Reached only while `firstFlight` holds all the
    /// client sent and nothing went back to the client.
    func replay(_ c: Connection) {
        guard let flight = c.firstFlight, let e = c.endpoint else { finish(c, reset: true); return }
        dropUpstream(c)
        e.active -= 1
        e.stats.closed += 1
        c.endpoint = nil
        c.connected = false
        _ = c.pool.failed(e, now: now)
        c.pool.stats.replays += 1
        let clientEnded = c.toUpstream.endOfStream
        if let pipe = c.toUpstream.pipe { givePipe(pipe, empty: false) }
        c.toUpstream = Connection.Direction()
        c.toUpstream.held = flight
        c.toUpstream.endOfStream = clientEnded
        c.bytesUp = 0
        if settings.accessLog { logger.info("replay: \(c.clientAddress) → \(c.frontend): \(e.spec.address) ended before answering; \(flight.count) B again elsewhere") }
        dial(c)
    }

    /// The access log's line for a connection that ended (`EngineSettings.accessLog`).
    func logAccess(_ c: Connection, how: String) {
        guard settings.accessLog else { return }
        let target = c.endpoint.map { "\($0.spec.address) \($0.spec.target)" } ?? "no endpoint"
        logger.info("access: \(c.clientAddress) → \(c.frontend) (\(c.pool.name)) → \(target): \(c.bytesUp) B up, \(c.bytesDown) B down, \((now &- c.opened) / 1_000_000) ms, \(how)")
    }

    /// Closes both sockets (with a reset when `reset`), gives the endpoint's slot back and keeps
    /// empty pipes for the next connection.
    func finish(_ c: Connection, reset: Bool) {
        logAccess(c, how: reset ? "reset" : "closed")
        forget(c.client)
        closeLater(c.client, reset: reset)
        if c.upstream >= 0 {
            forget(c.upstream)
            closeLater(c.upstream, reset: reset)
            c.upstream = -1
        }
        if let e = c.endpoint {
            e.active -= 1
            if c.connected { e.stats.closed += 1 }
            c.endpoint = nil
        }
        for pipe in [c.toUpstream.pipe, c.toClient.pipe].compactMap({ $0 }) { givePipe(pipe, empty: !reset) }
        c.toUpstream.pipe = nil
        c.toClient.pipe = nil
    }
}
