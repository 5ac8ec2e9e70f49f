import Glibc
import KemuSystem

/// Dials the mesh takes: a tunnel's first byte, and refusals.
extension ProxyEngine {
    /// A mesh tunnel's first byte: whether the endpoint's node reached it (0) or why not.
    func tunnelAnswered(_ c: Connection, _ events: UInt32) {
        guard events & (Epoll.readable | Epoll.failed | Epoll.peerClosed) != 0, let e = c.endpoint else { return }
        var outcome: UInt8 = 0
        let n = read(c.upstream, &outcome, 1)
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        if n == 1 && outcome == 0 {
            upstreamConnected(c)
            return
        }
        let err = n == 1 ? Int32(outcome) : n == 0 ? ECONNRESET : errno
        dropUpstream(c)
        if err == EACCES {
            // The endpoint's proxy refused this client (authorization).
            refuse(c, e)
            return
        }
        dialFailed(c, e, err)
        dial(c)
    }

    /// The mesh's policies changed: connections the engine carries itself (the same node's pods,
    /// a plain client's to another node) that they now refuse are reset, as ztunnel closes
    /// those a new DENY covers. Tunnelled ones are judged at their destination.
    func judgeAgain(_ mesh: any MeshTunnels) {
        judgedPolicies = mesh.policyGeneration
        var closed = 0
        for case let c? in connections where c.client >= 0 && connections[Int(c.client)] === c && c.connected && !c.tunneled {
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
