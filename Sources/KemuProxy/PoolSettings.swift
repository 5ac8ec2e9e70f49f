import KemuSystem

// What a pool is told (by the proxy's plan, or a test): its endpoints and how to choose among
// them. What it keeps and how it chooses are EndpointPool's.

/// How a pool picks among its endpoints; a Service chooses with the annotation
/// `kemu.io/load-balancer`, the cluster sets the default.
public enum BalancingAlgorithm: String, Sendable, CaseIterable, Codable {
    /// In turn, over an order shuffled at every endpoint change so nodes do not move in lock-step
    /// (kube-proxy's userspace mode).
    case roundRobin = "round-robin"
    /// The endpoint with the fewest open connections through this proxy (ties in turn).
    case leastConnections = "least-connections"
    case random
    /// Two random endpoints, the one with the lower cost wins: a peak-sensitive, time-decaying
    /// average of the time to the first response byte × (open connections + 1) — Linkerd's
    /// PeakEWMA over P2C. A slow answer counts at once; fast ones bring it down over ~10 s.
    case powerOfTwoChoices = "p2c-ewma"
}

/// One endpoint as the control plane sees it.
public struct EndpointSpec: Hashable, Sendable {
    public var address: SocketAddress
    /// The pod, for metrics and logs ("default/web-1"); empty when unknown.
    public var target: String
    public var nodeName: String
    /// Its share of a weighted pool's connections (a route's backend weight over the backend's
    /// endpoints); unweighted pools leave it 1.
    public var weight = 1.0

    public init(_ address: SocketAddress, target: String = "", nodeName: String = "", weight: Double = 1) {
        self.address = address
        self.target = target
        self.nodeName = nodeName
        self.weight = weight
    }

    /// The same endpoint, whatever its weight.
    func isSame(_ other: EndpointSpec) -> Bool {
        address == other.address && target == other.target && nodeName == other.nodeName
    }
}

/// Passive outlier ejection: after `consecutiveFailures` failed connects in a row an endpoint is
/// left out for `baseSeconds` × 2^(ejections so far), at most `maxSeconds`; never more than
/// `maxShare` of a pool's endpoints at once (but always one may go).
public struct EjectionPolicy: Sendable, Equatable, Codable {
    public var consecutiveFailures = 2
    public var baseSeconds = 1.0
    public var maxSeconds = 60.0
    public var maxShare = 0.5
    /// Each ejection lasts up to this much longer, at random (Linkerd's jitter), so endpoints
    /// ejected together do not all come back together.
    public var jitterRatio = 0.0

    public init() {}
}

/// What a pool does; the engine applies a new one without touching open connections.
public struct PoolSettings: Sendable, Equatable {
    public var algorithm: BalancingAlgorithm = .roundRobin
    /// ClientIP session affinity: seconds a client stays with its endpoint after its last
    /// connection; nil for none.
    public var affinitySeconds: Double?
    /// Endpoints tried per client connection (kube-proxy's userspace mode: 4).
    public var connectAttempts = 4
    /// The first dial's timeout; each retry doubles it (250 ms, 500 ms, 1 s, 2 s).
    public var firstDialTimeoutMilliseconds = 250
    public var ejection = EjectionPolicy()
    /// Connections to an endpoint that left the pool are closed after this many seconds; nil lets
    /// them finish.
    public var drainSeconds: Double?
    /// Faults on the Service (kemu.dev/v1 Fault): aborts, hangs and delays before the dial.
    public var faults: [FaultRule] = []
    /// Active TCP health checks: every endpoint is connected to this often (seconds, 0: never);
    /// two failed checks in a row (a connect refused, or unanswered within 1 s) take it out of
    /// the choice until one succeeds.
    public var healthCheckSeconds = 0
    /// A route splits the Service by weight: endpoints are chosen in proportion to their
    /// weights (smooth weighted round robin, nginx's: exact over every cycle), and
    /// `unroutedWeight` — the weight of backends that resolve to no endpoint — is the share of
    /// new connections refused, as the Gateway API asks.
    public var weighted = false
    public var unroutedWeight = 0.0

    public init() {}
}
