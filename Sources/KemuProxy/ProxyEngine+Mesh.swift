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

    /// The mesh refused this client: every endpoint of the Service would, and it is not the
    /// endpoint's fault. The client is reset.
    func refuse(_ c: Connection, _ e: Endpoint) {
        e.active -= 1
        c.endpoint = nil
        c.pool.stats.policyDenied += 1
        finish(c, reset: true)
    }
}
