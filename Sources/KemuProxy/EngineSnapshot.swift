import KemuSystem

/// The engine's counters at one moment, for /metrics and tests.
public struct EngineSnapshot: Sendable {
    public struct EndpointState: Sendable {
        public var spec: EndpointSpec
        public var activeConnections: Int
        public var ejected: Bool
        /// False while active health checks find it down.
        public var healthy: Bool
        public var stats: EndpointStats
    }

    public struct PoolState: Sendable {
        public var name: String
        public var algorithm: BalancingAlgorithm
        public var stats: PoolStats
        public var endpoints: [EndpointState]
    }

    public var pools: [PoolState]
    public var listeners: [FrontendAddress]
    public var openConnections: Int
    /// UDP flows under way.
    public var openFlows: Int
}

extension ProxyEngine {
    func makeSnapshot() -> EngineSnapshot {
        EngineSnapshot(
            pools: pools.values.sorted { $0.name < $1.name }.map { pool in
                EngineSnapshot.PoolState(
                    name: pool.name, algorithm: pool.settings.algorithm, stats: pool.stats,
                    endpoints: pool.endpoints.map {
                        .init(spec: $0.spec, activeConnections: $0.active, ejected: $0.isEjected(at: now), healthy: !$0.unhealthy, stats: $0.stats)
                    })
            },
            listeners: listeners.values.map(\.address).sorted(),
            openConnections: openConnections + carried.count, openFlows: flows.count)
    }
}
