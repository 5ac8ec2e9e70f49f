import Glibc
import KemuIP
import KemuSystem

/// Engine-side state of one endpoint. Connections keep a reference, so an endpoint that left
/// its pool still counts its connections down as they close.
final class Endpoint {
    /// Its weight may change in place (a route's weights shifted); the rest never does.
    fileprivate(set) var spec: EndpointSpec
    /// Smooth weighted round robin's running credit.
    fileprivate var credit = 0.0
    var active = 0
    /// PeakEWMA of the time to the first response byte, nanoseconds; 0 until the first answer.
    var latencyEWMA = 0.0
    /// When it last took a sample (monotonic ns).
    var latencySampledAt: UInt64 = 0
    var consecutiveFailures = 0
    var ejections = 0
    var ejectedUntil: UInt64 = 0
    /// When it left its pool (monotonic ns), 0 while it is in one.
    var removedAt: UInt64 = 0
    /// Why the last connect failed (an errno), for logs and metrics.
    var lastConnectError: Int32 = 0
    var stats = EndpointStats()

    init(_ spec: EndpointSpec) { self.spec = spec }

    /// Set by active health checks; left out of the choice like an ejected endpoint.
    var unhealthy = false
    var healthCheckFailures = 0
    /// When the check in flight started (0: none).
    var checkStarted: UInt64 = 0

    func isEjected(at now: UInt64) -> Bool { ejectedUntil > now || unhealthy }
}

public struct EndpointStats: Sendable, Equatable {
    public var opened: UInt64 = 0
    public var closed: UInt64 = 0
    public var connectFailures: UInt64 = 0
    public var ejections: UInt64 = 0
    public var bytesToEndpoint: UInt64 = 0
    public var bytesFromEndpoint: UInt64 = 0
    public var healthChecksFailed: UInt64 = 0
    /// Connect latency histogram over `ConnectLatency.bounds` (empty until the first connect: a
    /// proxy of 50,000 endpoints most of which never see a connection keeps no buckets for them),
    /// plus the sum in seconds.
    public var latencyBuckets: [UInt64] = []
    public var latencySum = 0.0

    mutating func observe(latencySeconds: Double) {
        latencySum += latencySeconds
        if latencyBuckets.isEmpty { latencyBuckets = [UInt64](repeating: 0, count: ConnectLatency.bounds.count + 1) }
        latencyBuckets[ConnectLatency.bounds.firstIndex { latencySeconds <= $0 } ?? ConnectLatency.bounds.count] += 1
    }
}

public enum ConnectLatency {
    /// Upper bounds in seconds: 100 µs to ~3 s.
    public static let bounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
}

/// The endpoints behind one frontend (a service port, for one traffic policy) and how to choose
/// among them. Owned by the engine's thread.
final class EndpointPool {
    let name: String
    private(set) var settings: PoolSettings
    private(set) var endpoints: [Endpoint] = []
    private var order: [Int] = []
    private var next = 0
    private var affinity: [UInt32: (endpoint: Endpoint, lastUsed: UInt64)] = [:]
    /// Smooth weighted round robin's credit of the refused share (`PoolSettings.unroutedWeight`),
    /// and what the endpoints weigh together (set at each update, not summed per connection).
    private var unroutedCredit = 0.0
    private var routedWeight = 0.0
    var stats = PoolStats()
    /// A capture pool's last connection (`ProxyEngine.capturePool`).
    var lastUsed: UInt64 = 0
    var random = SystemRandomNumberGenerator()
    /// When the next round of active health checks is due (monotonic ns).
    var nextHealthCheck: UInt64 = 0
    /// Endpoints that left while ejected, with their ejection: one that comes back at the same
    /// address before it ends (a pod restarted in place goes NotReady, then Ready) stays ejected
    /// for the rest of it, rather than coming back as new and taking new connections and flows
    /// at once — the very ones its failure was to keep away.
    private var departed: [SocketAddress: (until: UInt64, ejections: Int)] = [:]

    init(name: String, settings: PoolSettings, endpoints: [EndpointSpec], now: UInt64) {
        self.name = name
        self.settings = settings
        update(settings: settings, endpoints: endpoints, now: now)
    }

    /// Takes a new endpoint list: endpoints that stay keep their counts and ejection state; ones
    /// that leave are returned (their connections may need draining); affinity to them is dropped.
    @discardableResult
    func update(settings: PoolSettings, endpoints specs: [EndpointSpec], now: UInt64) -> [Endpoint] {
        if settings.affinitySeconds == nil || settings != self.settings { affinity.removeAll() }
        self.settings = settings
        var old: [SocketAddress: Endpoint] = [:]
        for e in endpoints { old[e.spec.address] = e }
        var fresh: [Endpoint] = []
        if !departed.isEmpty { departed = departed.filter { $0.value.until > now } }
        for spec in specs {
            if let kept = old.removeValue(forKey: spec.address), kept.spec.isSame(spec) {
                kept.spec.weight = spec.weight
                fresh.append(kept)
            } else {
                let endpoint = Endpoint(spec)
                if let ejection = departed.removeValue(forKey: spec.address) {
                    (endpoint.ejectedUntil, endpoint.ejections) = (ejection.until, ejection.ejections)
                }
                fresh.append(endpoint)
            }
        }
        let changed = fresh.map { ObjectIdentifier($0) } != endpoints.map { ObjectIdentifier($0) }
        endpoints = fresh
        let removed = Array(old.values)
        for e in removed {
            e.removedAt = now
            if e.ejectedUntil > now { departed[e.spec.address] = (e.ejectedUntil, e.ejections) }
        }
        if !removed.isEmpty { affinity = affinity.filter { $0.value.endpoint.removedAt == 0 } }
        if changed {
            order = Array(endpoints.indices).shuffled(using: &random)
            next = 0
        }
        // New weights start a new cycle, so its proportions are exact from the next connection.
        unroutedCredit = 0
        routedWeight = 0
        for e in endpoints {
            e.credit = 0
            routedWeight += e.spec.weight
        }
        return removed
    }

    /// The endpoint for a new connection from `client`, avoiding those already tried for it
    /// while others remain; nil only when the pool is empty. Ejected endpoints are used only
    /// when every candidate is ejected.
    func choose(client: IPv4Address, tried: [Endpoint], now: UInt64) -> Endpoint? {
        if settings.unroutedWeight > 0, tried.isEmpty, refusesShare() { return nil }
        let untried = { (e: Endpoint) in !tried.contains { $0 === e } }
        if let seconds = settings.affinitySeconds, tried.isEmpty, let pinned = affinity[client.value],
           now &- pinned.lastUsed < UInt64(seconds * 1e9), pinned.endpoint.removedAt == 0, !pinned.endpoint.isEjected(at: now) {
            affinity[client.value]!.lastUsed = now
            return pinned.endpoint
        }
        // Untried and healthy first; then untried; once every endpoint was tried (a lone
        // endpoint whose SYN was lost), the attempts left go to them again with longer timeouts.
        var usable = { (e: Endpoint) in untried(e) && !e.isEjected(at: now) }
        if !endpoints.contains(where: usable) { usable = untried }
        if !endpoints.contains(where: usable) { usable = { !$0.isEjected(at: now) } }
        if !endpoints.contains(where: usable) { usable = { _ in true } }
        guard let chosen = pick(usable, now: now) else { return nil }
        if settings.affinitySeconds != nil { affinity[client.value] = (chosen, now) }
        return chosen
    }

    /// Whether this connection falls in the unrouted share: two-way smooth weighted round
    /// robin between what the endpoints carry and what no endpoint does. The two credits sum
    /// to the round's total, so the unrouted one wins when it holds more than half of it.
    private func refusesShare() -> Bool {
        let total = routedWeight + settings.unroutedWeight
        unroutedCredit += settings.unroutedWeight
        guard 2 * unroutedCredit > total else { return false }
        unroutedCredit -= total
        return true
    }

    /// Smooth weighted round robin over the usable endpoints: each gains its weight, the richest
    /// is chosen and pays the round's total. Over any cycle each gets exactly its share.
    private func smoothWeighted(_ usable: (Endpoint) -> Bool) -> Endpoint? {
        var total = 0.0
        var best: Endpoint?
        for e in endpoints where usable(e) {
            e.credit += e.spec.weight
            total += e.spec.weight
            if best.map({ e.credit > $0.credit }) ?? true { best = e }
        }
        best?.credit -= total
        return best
    }

    private func pick(_ usable: (Endpoint) -> Bool, now: UInt64) -> Endpoint? {
        guard !endpoints.isEmpty else { return nil }
        if settings.weighted { return pickWeighted(usable, now: now) }
        switch settings.algorithm {
        case .roundRobin:
            return nextInTurn(usable)
        case .leastConnections:
            // The fewest open connections; among equals, the next in turn.
            var least = Int.max
            for e in endpoints where e.active < least && usable(e) { least = e.active }
            guard least != Int.max else { return nil }
            return nextInTurn { usable($0) && $0.active == least }
        case .random:
            let candidates = endpoints.filter(usable)
            return candidates.randomElement(using: &random)
        case .powerOfTwoChoices:
            let candidates = endpoints.filter(usable)
            guard candidates.count > 1 else { return candidates.first }
            let a = Int.random(in: 0..<candidates.count, using: &random)
            var b = Int.random(in: 0..<(candidates.count - 1), using: &random)
            if b >= a { b += 1 }
            return Self.cost(candidates[a], now: now) <= Self.cost(candidates[b], now: now) ? candidates[a] : candidates[b]
        }
    }

    /// The algorithms with weights: round robin is smooth weighted; the others divide what they
    /// compare (open connections, cost) by the weight, or draw in proportion to it.
    private func pickWeighted(_ usable: (Endpoint) -> Bool, now: UInt64) -> Endpoint? {
        func weighing(_ e: Endpoint) -> Bool { usable(e) && e.spec.weight > 0 }
        switch settings.algorithm {
        case .roundRobin:
            return smoothWeighted(weighing)
        case .leastConnections:
            return endpoints.filter(weighing).min { Double($0.active + 1) / $0.spec.weight < Double($1.active + 1) / $1.spec.weight }
        case .random:
            return draw(endpoints.filter(weighing))
        case .powerOfTwoChoices:
            let candidates = endpoints.filter(weighing)
            // Two drawn in proportion to their weights; the cheaper one wins.
            guard candidates.count > 1, let a = draw(candidates), let b = draw(candidates) else { return candidates.first }
            return Self.cost(a, now: now) <= Self.cost(b, now: now) ? a : b
        }
    }

    /// One of `candidates`, drawn in proportion to its weight.
    private func draw(_ candidates: [Endpoint]) -> Endpoint? {
        let total = candidates.reduce(0.0) { $0 + $1.spec.weight }
        guard total > 0 else { return nil }
        var left = Double.random(in: 0..<total, using: &random)
        for e in candidates {
            left -= e.spec.weight
            if left < 0 { return e }
        }
        return candidates.last
    }

    /// An endpoint never measured counts as 1 ms, so new ones are tried; an estimate decays
    /// while no answer refreshes it (as tower's PeakEwma reads it), so a slow endpoint left
    /// alone is tried again after a while.
    static func cost(_ e: Endpoint, now: UInt64) -> Double {
        guard e.latencyEWMA > 0 else { return 1e6 * Double(e.active + 1) }
        let decayed = e.latencyEWMA * exp(-Double(now &- e.latencySampledAt) / decayNanoseconds)
        return max(decayed, 1) * Double(e.active + 1)
    }

    private func nextInTurn(_ usable: (Endpoint) -> Bool) -> Endpoint? {
        for k in 0..<order.count {
            let i = order[(next + k) % order.count]
            if usable(endpoints[i]) {
                next = (next + k + 1) % order.count
                return endpoints[i]
            }
        }
        return nil
    }

    /// A connect that worked: resets the failure run; the connect latency histogram.
    func connected(_ e: Endpoint, latencyNanoseconds: UInt64) {
        e.consecutiveFailures = 0
        e.stats.opened += 1
        e.stats.observe(latencySeconds: Double(latencyNanoseconds) / 1e9)
    }

    /// How fast the last answers came decays with this time constant (Linkerd's default).
    static let decayNanoseconds = 10e9

    /// The endpoint's first response byte came `latencyNanoseconds` after the dial began (for
    /// UDP, a flow's first reply after its first datagram): PeakEWMA's sample. A sample above
    /// the average replaces it (the peak); below, it moves the average by how long it has been
    /// since the last one.
    func answered(_ e: Endpoint, latencyNanoseconds: UInt64, now: UInt64) {
        let sample = Double(latencyNanoseconds)
        if e.latencyEWMA == 0 || sample > e.latencyEWMA {
            e.latencyEWMA = sample
        } else {
            let elapsed = Double(now &- e.latencySampledAt)
            let weight = exp(-elapsed / Self.decayNanoseconds)
            e.latencyEWMA = e.latencyEWMA * weight + sample * (1 - weight)
        }
        e.latencySampledAt = now
    }

    /// A connect that failed; may eject the endpoint. Returns true when it did.
    @discardableResult
    func failed(_ e: Endpoint, now: UInt64) -> Bool {
        e.stats.connectFailures += 1
        e.consecutiveFailures += 1
        if let pinned = affinity.first(where: { $0.value.endpoint === e }) { affinity[pinned.key] = nil }
        let policy = settings.ejection
        guard e.consecutiveFailures >= policy.consecutiveFailures, !e.isEjected(at: now), e.removedAt == 0 else { return false }
        let ejected = endpoints.filter { $0.isEjected(at: now) }.count
        guard ejected == 0 || Double(ejected + 1) <= policy.maxShare * Double(endpoints.count) else { return false }
        var seconds = min(policy.baseSeconds * Double(1 << min(e.ejections, 20)), policy.maxSeconds)
        if policy.jitterRatio > 0 { seconds = min(seconds * (1 + Double.random(in: 0...policy.jitterRatio, using: &random)), policy.maxSeconds) }
        e.ejectedUntil = now &+ UInt64(seconds * 1e9)
        e.ejections += 1
        e.consecutiveFailures = 0
        e.stats.ejections += 1
        stats.ejections += 1
        return true
    }

    /// Forgets affinity entries older than the timeout (called now and then, not per connection).
    func expireAffinity(now: UInt64) {
        guard let seconds = settings.affinitySeconds, !affinity.isEmpty else { return }
        let ttl = UInt64(seconds * 1e9)
        affinity = affinity.filter { now &- $0.value.lastUsed < ttl }
    }

    func dialTimeout(attempt: Int) -> UInt64 {
        UInt64(settings.firstDialTimeoutMilliseconds) * 1_000_000 << UInt64(min(attempt, 10))
    }
}

public struct PoolStats: Sendable, Equatable {
    public var accepted: UInt64 = 0
    /// Client connections closed because no endpoint could be reached.
    public var rejected: UInt64 = 0
    public var retries: UInt64 = 0
    public var ejections: UInt64 = 0
    /// Connections replayed on another endpoint after theirs ended before answering.
    public var replays: UInt64 = 0
    /// Connections a Fault reset, held unanswered, or delayed.
    public var faultAborts: UInt64 = 0
    public var faultHangs: UInt64 = 0
    public var faultDelays: UInt64 = 0
    /// UDP: datagrams from clients passed on, replies passed back, and datagrams dropped (no
    /// endpoint, a Fault, a full flow table, an endpoint found dead).
    public var datagramsIn: UInt64 = 0
    public var datagramsOut: UInt64 = 0
    public var datagramsDropped: UInt64 = 0
    /// Dials this node's NetworkPolicy refused (not counted against the endpoint).
    public var policyDenied: UInt64 = 0
}
