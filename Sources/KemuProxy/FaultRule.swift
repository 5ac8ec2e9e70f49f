import KemuAPI
import KemuIP

/// What a pool does to a new connection from a matching client before dialling: reset it, hold
/// it unanswered, or dial only after a delay. One rule per client (Faults on a Service never
/// overlap: the API refuses that), the first that matches.
public struct FaultRule: Sendable, Equatable {
    /// Clients it applies to; empty: all.
    public var sources: [IPv4Network]
    public var abortPercent: Double
    public var hangPercent: Double
    public var delayNanoseconds: UInt64
    public var jitterNanoseconds: UInt64
    /// The Fault's namespace/name, for logs.
    public var origin: String

    public init(_ fault: Fault) {
        sources = fault.sources.compactMap { IPv4Network($0) }
        abortPercent = fault.abortPercent
        hangPercent = fault.hangPercent
        delayNanoseconds = UInt64(max(fault.latencyMilliseconds, 0)) * 1_000_000
        jitterNanoseconds = UInt64(max(fault.jitterMilliseconds, 0)) * 1_000_000
        origin = "\(fault.namespace)/\(fault.name)"
    }

    public func matches(_ client: IPv4Address) -> Bool {
        sources.isEmpty || sources.contains { $0.contains(client) }
    }

    public enum Action: Equatable { case abort, hang, delay(UInt64), pass }

    /// What to do with one connection; `roll` is uniform in 0..<100, `spread` in -1...1.
    public func action(roll: Double, spread: Double) -> Action {
        if roll < abortPercent { return .abort }
        if roll < abortPercent + hangPercent { return .hang }
        guard delayNanoseconds > 0 || jitterNanoseconds > 0 else { return .pass }
        let delay = Double(delayNanoseconds) + spread * Double(jitterNanoseconds)
        return delay >= 1 ? .delay(UInt64(delay)) : .pass
    }
}

extension ServicePlan {
    /// Puts the Faults on this Service into every pool of the plan.
    public mutating func inject(_ faults: [Fault]) {
        guard !faults.isEmpty else { return }
        let rules = faults.sorted { $0.name < $1.name }.filter { $0.abortPercent > 0 || $0.hangPercent > 0 || $0.latencyMilliseconds > 0 }.map(FaultRule.init)
        for name in pools.keys { pools[name]?.settings.faults = rules }
    }
}
