import Glibc
import KemuSystem

/// A UDP flow: one client address and port at one frontend, bound to one endpoint, as a
/// conntrack entry binds it under kube-proxy's DNAT. Its upstream socket is connected to the
/// endpoint (from the client's own address and port where the frontend keeps it), so the
/// endpoint's replies — and the ICMP error of an endpoint nobody listens at any more — arrive
/// on it alone.
final class Flow {
    let key: FlowKey
    let pool: EndpointPool
    let endpoint: Endpoint
    let upstream: Int32
    let opened: UInt64
    var lastActive: UInt64
    var answered = false

    init(key: FlowKey, pool: EndpointPool, endpoint: Endpoint, upstream: Int32, now: UInt64) {
        self.key = key
        self.pool = pool
        self.endpoint = endpoint
        self.upstream = upstream
        opened = now
        lastActive = now
    }
}

struct FlowKey: Hashable {
    let frontend: FrontendAddress
    let client: SocketAddress
}

extension ProxyEngine {
    /// A frontend's socket is readable: every datagram waiting goes to its flow's endpoint.
    func receiveDatagrams(_ fd: Int32) {
        guard let listener = listeners[fd] else { return }
        for _ in 0..<256 {
            let (n, client) = DatagramSocket.receive(fd, into: scratch, count: Self.scratchBytes)
            if n < 0 { return }
            forward(UnsafeRawBufferPointer(start: scratch, count: n), from: client, at: listener)
        }
    }

    private func forward(_ datagram: UnsafeRawBufferPointer, from client: SocketAddress, at listener: Listener) {
        let key = FlowKey(frontend: listener.address, client: client)
        let (chosen, source) = route(listener, client: client.ip)
        guard let pool = chosen else { return }
        pool.stats.datagramsIn += 1
        if let rule = pool.settings.faults.first(where: { $0.matches(client.ip) }) {
            switch rule.action(roll: Double.random(in: 0..<100), spread: Double.random(in: -1...1)) {
            case .pass: break
            case .abort, .hang:
                pool.stats.faultAborts += 1
                pool.stats.datagramsDropped += 1
                return
            case let .delay(nanoseconds):
                pool.stats.faultDelays += 1
                guard delayedDatagrams.count < 65536 else { pool.stats.datagramsDropped += 1; return }
                dialSequence &+= 1
                delayedDatagrams[dialSequence] = (key, Array(datagram))
                timers.push(.init(deadline: now + nanoseconds, kind: .delayedDatagram, fd: -1, generation: dialSequence))
                return
            }
        }
        send(datagram, key: key, pool: pool, source: source)
    }

    /// Sends on the client's flow, opening one (an endpoint chosen as for a new connection) when
    /// there is none or the frontend's pool changed. An endpoint found dead (its last datagram
    /// drew an ICMP error) loses the flow, and this datagram goes to another endpoint at once.
    /// `source`: where a new flow dials from (the route's, found with `pool`).
    private func send(_ datagram: UnsafeRawBufferPointer, key: FlowKey, pool: EndpointPool, source: ClientSource) {
        var tried: [Endpoint] = []
        while tried.count < max(pool.settings.connectAttempts, 1) {
            var flow = flows[key]
            if let f = flow, f.pool !== pool {
                endFlow(f)
                flow = nil
            }
            if flow == nil { flow = openFlow(key, pool: pool, source: source, tried: &tried) }
            guard let flow else { break }
            let n = DatagramSocket.send(flow.upstream, from: datagram.baseAddress ?? UnsafeRawPointer(scratch), count: datagram.count)
            if n >= 0 || n == -Int(EAGAIN) || n == -Int(ENOBUFS) {
                // A full socket buffer drops the datagram, as a full queue on the way would.
                if n < 0 { pool.stats.datagramsDropped += 1 }
                flow.lastActive = now
                flow.endpoint.stats.bytesToEndpoint &+= UInt64(max(n, 0))
                return
            }
            // ECONNREFUSED and the like: the endpoint said nobody listens; or policy refused.
            endpointDied(flow, errno: Int32(-n))
        }
        pool.stats.datagramsDropped += 1
    }

    private func openFlow(_ key: FlowKey, pool: EndpointPool, source: ClientSource, tried: inout [Endpoint]) -> Flow? {
        guard flows.count < settings.maxFlows else {
            if pool.stats.datagramsDropped == 0 { logger.warning("\(pool.name): \(settings.maxFlows) UDP flows open; datagrams of new clients are dropped") }
            return nil
        }
        while let e = pool.choose(client: key.client.ip, tried: tried, now: now), !tried.contains(where: { $0 === e }) {
            tried.append(e)
            if tried.count > 1 { pool.stats.retries += 1 }
            var from = dialSource(source, client: key.client.ip, endpoint: e.spec.address.ip).map { _ in key.client }
            var fd = DatagramSocket.connect(to: e.spec.address, from: from)
            if fd < 0, from != nil {
                transparentDialFailed(Int32(-fd))
                from = nil
                fd = DatagramSocket.connect(to: e.spec.address, from: nil)
            }
            guard fd >= 0 else {
                e.lastConnectError = Int32(-fd)
                pool.failed(e, now: now)
                continue
            }
            do {
                try epoll.add(fd, events: Epoll.readable, token: Token.flow(fd))
            } catch {
                close(fd)
                return nil
            }
            let flow = Flow(key: key, pool: pool, endpoint: e, upstream: fd, now: now)
            flows[key] = flow
            flowByUpstream[fd] = flow
            e.active += 1
            pool.stats.accepted += 1
            return flow
        }
        return nil
    }

    /// An endpoint's replies: each goes back to the client from the frontend's own address.
    func flowEvent(_ fd: Int32) {
        guard let flow = flowByUpstream[fd] else { return }
        guard let listenerFD = listenerByAddress[flow.key.frontend] else { endFlow(flow); return }
        for _ in 0..<256 {
            let (n, _) = DatagramSocket.receive(fd, into: scratch, count: Self.scratchBytes)
            if n == -Int(EAGAIN) { return }
            if n < 0 { endpointDied(flow, errno: Int32(-n)); return }
            if !flow.answered {
                // Time to the first reply: what P2C weighs an endpoint by.
                flow.answered = true
                flow.pool.connected(flow.endpoint, latencyNanoseconds: now &- flow.opened)
                flow.pool.answered(flow.endpoint, latencyNanoseconds: now &- flow.opened, now: now)
            }
            flow.lastActive = now
            flow.endpoint.stats.bytesFromEndpoint &+= UInt64(n)
            if DatagramSocket.send(listenerFD, from: scratch, count: n, to: flow.key.client) >= 0 {
                flow.pool.stats.datagramsOut += 1
            }
        }
    }

    /// The endpoint answered with an ICMP error (port unreachable: its process is gone): the
    /// flow ends, counted as a failure towards ejection; the client's next datagram opens a
    /// flow to another endpoint.
    private func endpointDied(_ flow: Flow, errno err: Int32) {
        if Self.refusedByPolicy(err) {
            flow.pool.stats.policyDenied += 1
            endFlow(flow)
            return
        }
        flow.endpoint.lastConnectError = err
        if flow.pool.failed(flow.endpoint, now: now) {
            logger.info("\(flow.pool.name): ejected \(flow.endpoint.spec.address) after UDP errors (\(String(cString: strerror(err))))")
        }
        endFlow(flow)
    }

    func endFlow(_ flow: Flow) {
        guard flows[flow.key] === flow else { return }
        flows[flow.key] = nil
        flowByUpstream[flow.upstream] = nil
        epoll.remove(flow.upstream)
        closing.append(flow.upstream)
        flow.endpoint.active -= 1
        flow.endpoint.stats.closed += 1
    }

    func endFlows(where condition: (Flow) -> Bool) {
        for flow in flows.values where condition(flow) { endFlow(flow) }
    }

    /// Upstream's conntrack cleanup for UDP (pkg/proxy/conntrack): a flow to an endpoint that
    /// left ends at once, so the client's next datagram goes to one that is there — where TCP
    /// connections drain, UDP has no end of its own to wait for.
    func endFlowsToRemovedEndpoints(of pool: EndpointPool) {
        guard !flows.isEmpty else { return }
        endFlows { $0.pool === pool && $0.endpoint.removedAt != 0 }
    }

    /// A delay Fault's datagram, when its time came.
    func sendDelayedDatagram(_ generation: UInt32) {
        guard let (key, bytes) = delayedDatagrams.removeValue(forKey: generation),
              let fd = listenerByAddress[key.frontend], let listener = listeners[fd] else { return }
        let (chosen, source) = route(listener, client: key.client.ip)
        guard let pool = chosen else { return }
        bytes.withUnsafeBytes { send($0, key: key, pool: pool, source: source) }
    }
}
