import Glibc
import KemuSystem

/// One client connection and, once a dial succeeded, its upstream.
final class Connection {
    let client: Int32
    let clientAddress: SocketAddress
    let pool: EndpointPool
    var upstream: Int32 = -1
    var endpoint: Endpoint?
    var tried: [Endpoint] = []
    var generation: UInt32 = 0
    var dialStarted: UInt64 = 0
    var connected = false
    var toUpstream = Direction()
    var toClient = Direction()
    var lastActive: UInt64

    struct Direction {
        var pipe: SplicePipe?
        /// Bytes in the pipe, not yet written on.
        var pending = 0
        var endOfStream = false
        var shutDown = false
    }

    init(client: Int32, address: SocketAddress, pool: EndpointPool, now: UInt64) {
        self.client = client
        clientAddress = address
        self.pool = pool
        lastActive = now
    }
}

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
                guard let pool = pools[listener.pool], !pool.endpoints.isEmpty else {
                    // No endpoints: the client learns at once (a reset), as with kube-proxy's REJECT.
                    pools[listener.pool]?.stats.rejected += 1
                    TCPSocket.abort(fd)
                    continue
                }
                pool.stats.accepted += 1
                let c = Connection(client: fd, address: peer, pool: pool, now: now)
                store(c, at: fd)
                do {
                    try epoll.add(fd, events: Epoll.edgeAll, token: Token.connection(fd))
                } catch {
                    forget(fd)
                    TCPSocket.abort(fd)
                    continue
                }
                dial(c)
            }
        }
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
            c.generation &+= 1
            c.dialStarted = now
            let (fd, err) = TCPSocket.connect(to: e.spec.address)
            if fd < 0 {
                dialFailed(c, e)
                continue
            }
            c.upstream = fd
            store(c, at: fd)
            do {
                try epoll.add(fd, events: Epoll.edgeAll, token: Token.connection(fd))
            } catch {
                dropUpstream(c)
                dialFailed(c, e)
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

    private func dialFailed(_ c: Connection, _ e: Endpoint) {
        e.active -= 1
        c.endpoint = nil
        if c.pool.failed(e, now: now) {
            logger.info("\(c.pool.name): ejected \(e.spec.address) for \(Double(e.ejectedUntil - now) / 1e9) s after failed connects")
        }
    }

    private func dropUpstream(_ c: Connection) {
        guard c.upstream >= 0 else { return }
        forget(c.upstream)
        epoll.remove(c.upstream)
        close(c.upstream)
        c.upstream = -1
    }

    func runTimers() {
        while let t = timers.first, t.deadline <= now {
            _ = timers.pop()
            switch t.kind {
            case .resumeAccept:
                if listeners[t.fd] != nil { try? epoll.add(t.fd, events: Epoll.readable, token: Token.listener(t.fd)) }
            case .dial:
                guard let c = connection(t.fd), c.client == t.fd, !c.connected, c.generation == t.generation, let e = c.endpoint else { continue }
                dropUpstream(c)
                dialFailed(c, e)
                dial(c)
            }
        }
    }

    func connectionEvent(_ fd: Int32, _ events: UInt32) {
        guard let c = connection(fd) else { return }
        if !c.connected {
            if fd == c.upstream {
                guard events & (Epoll.writable | Epoll.failed) != 0 else { return }
                let err = TCPSocket.pendingError(fd)
                if err == 0 {
                    upstreamConnected(c)
                } else if let e = c.endpoint {
                    dropUpstream(c)
                    dialFailed(c, e)
                    dial(c)
                }
            } else if events & Epoll.failed != 0 {
                finish(c, reset: true)  // the client went away while we dialled
            }
            return
        }
        pump(c)
    }

    private func upstreamConnected(_ c: Connection) {
        guard let e = c.endpoint else { return }
        c.connected = true
        c.pool.connected(e, latencyNanoseconds: now &- c.dialStarted)
        do {
            c.toUpstream.pipe = try takePipe()
            c.toClient.pipe = try takePipe()
        } catch {
            logger.warning("no pipe for a connection to \(e.spec.address): \(error)")
            finish(c, reset: true)
            return
        }
        // Bytes the client sent while we dialled raised an edge nobody consumed: move them now.
        pump(c)
    }

    /// Moves what can move both ways; ends the connection when both directions are done, or
    /// resets both sides when either fails.
    func pump(_ c: Connection) {
        guard let e = c.endpoint else { return }
        let up = move(&c.toUpstream, from: c.client, to: c.upstream)
        if up < 0 { finish(c, reset: true); return }
        let down = move(&c.toClient, from: c.upstream, to: c.client)
        if down < 0 { finish(c, reset: true); return }
        if up > 0 || down > 0 {
            c.lastActive = now
            e.stats.bytesToEndpoint &+= UInt64(up)
            e.stats.bytesFromEndpoint &+= UInt64(down)
        }
        if c.toUpstream.shutDown && c.toClient.shutDown { finish(c, reset: false) }
    }

    /// One direction until it would block: socket → pipe → socket. Returns the bytes written on,
    /// or -1 when a socket failed. At end of stream, once the pipe is empty, the write side is
    /// shut down (half-close passed on).
    @inline(__always)
    private func move(_ d: inout Connection.Direction, from src: Int32, to dst: Int32) -> Int {
        guard let pipe = d.pipe else { return 0 }
        var written = 0
        while true {
            if d.pending > 0 {
                let n = SplicePipe.move(from: pipe.readEnd, to: dst, length: d.pending)
                if n > 0 {
                    d.pending -= n
                    written += n
                    continue
                }
                return n == -Int(EAGAIN) ? written : -1
            }
            if d.endOfStream {
                if !d.shutDown {
                    TCPSocket.shutdownWrite(dst)
                    d.shutDown = true
                }
                return written
            }
            let n = SplicePipe.move(from: src, to: pipe.writeEnd, length: Int(settings.pipeBytes))
            if n > 0 {
                d.pending = n
            } else if n == 0 {
                d.endOfStream = true
            } else {
                return n == -Int(EAGAIN) ? written : -1
            }
        }
    }

    /// Closes both sockets (with a reset when `reset`), gives the endpoint's slot back and keeps
    /// empty pipes for the next connection.
    func finish(_ c: Connection, reset: Bool) {
        forget(c.client)
        if reset { TCPSocket.abort(c.client) } else { close(c.client) }
        if c.upstream >= 0 {
            forget(c.upstream)
            if reset { TCPSocket.abort(c.upstream) } else { close(c.upstream) }
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

    private func takePipe() throws -> SplicePipe {
        if let pipe = sparePipes.popLast() { return pipe }
        return try SplicePipe(size: settings.pipeBytes)
    }

    /// A pipe that may still hold bytes (a reset connection's) is closed, not reused.
    private func givePipe(_ pipe: SplicePipe, empty: Bool) {
        if empty && sparePipes.count < 1024 { sparePipes.append(pipe) } else { pipe.close() }
    }

    @inline(__always)
    func connection(_ fd: Int32) -> Connection? {
        fd >= 0 && Int(fd) < connections.count ? connections[Int(fd)] : nil
    }

    private func store(_ c: Connection, at fd: Int32) {
        let i = Int(fd)
        if i >= connections.count { connections.append(contentsOf: repeatElement(nil, count: max(i + 1 - connections.count, connections.count))) }
        if fd == c.client { openConnections += 1 }
        connections[i] = c
    }

    private func forget(_ fd: Int32) {
        guard let c = connection(fd) else { return }
        if fd == c.client { openConnections -= 1 }
        connections[Int(fd)] = nil
    }
}
