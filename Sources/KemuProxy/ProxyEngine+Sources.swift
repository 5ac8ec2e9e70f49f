import Glibc
import KemuIP

/// Whose address a dial is from, and what a refusal of it means.
extension ProxyEngine {
    /// The address to dial `endpoint` from for a client at `client`: the client's own where the
    /// frontend keeps it (nil: the node's, as a masquerade). Never for a client that is the
    /// endpoint itself (a pod reaching itself through its Service): kube-proxy masquerades that
    /// hairpin, since a packet from a pod's own address arriving at it would be dropped.
    func dialSource(_ source: ClientSource, client: IPv4Address, endpoint: IPv4Address) -> IPv4Address? {
        guard settings.transparentDial, client != endpoint else { return nil }
        switch source {
        case .node: return nil
        case .client: return client
        case .pods: return settings.podNetwork?.contains(client) == true ? client : nil
        }
    }

    /// The pool a listener's client goes to, and whose address its endpoint sees: an
    /// `externalTrafficPolicy: Local` frontend sends clients inside the cluster (the pod network,
    /// the node dialling its own address) to the cluster-wide pool (`Frontend.inClusterPool`).
    func route(_ listener: Listener, client: IPv4Address) -> (pool: EndpointPool?, source: ClientSource) {
        let frontend = listener.frontend
        if let inCluster = frontend.inClusterPool, settings.podNetwork?.contains(client) == true || client == listener.address.address.ip {
            return (pools[inCluster], .pods)
        }
        return (pools[frontend.pool], frontend.source)
    }

    /// A transparent dial that could not bind (no CAP_NET_ADMIN, an address in use): the dial
    /// goes from the node's address instead; said once, not per connection.
    func transparentDialFailed(_ err: Int32) {
        if !transparentFallbackLogged {
            transparentFallbackLogged = true
            logger.warning("cannot dial from a client's address (\(String(cString: strerror(err)))): such dials go from the node's address")
        }
    }

    /// A dial this node's NetworkPolicy refused: its output hook rejects with an ICMP error the
    /// proxy's socket receives (ENETUNREACH), or a datagram's send fails at once (EPERM). Not the
    /// endpoint's fault: it is not counted against it.
    static func refusedByPolicy(_ err: Int32) -> Bool { err == ENETUNREACH || err == EPERM }
}
