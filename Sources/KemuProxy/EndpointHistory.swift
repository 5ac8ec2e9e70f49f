import Foundation
import KemuAPI
import KemuClient
import KemuSystem
import Synchronization

/// The last changes of each Service's endpoints as this proxy applied them, with the time
/// (served at `/endpoints`, so an experiment can tell when an endpoint left every proxy).
final class EndpointHistory: Sendable {
    /// How many changes of a Service's endpoints are kept.
    static let length = 64
    private let changes = Mutex<[ServiceKey: [(Date, [SocketAddress])]]>([:])

    /// Records the plan's endpoints if they differ from the last ones recorded (only Services
    /// that have endpoints or had some, so a large quiet cluster keeps nothing).
    func remember(_ key: ServiceKey, _ plan: ServicePlan, at time: Date) {
        let endpoints = Set(plan.pools.values.flatMap { $0.endpoints.map(\.address) }).sorted { ($0.ip, $0.port) < ($1.ip, $1.port) }
        changes.withLock { history in
            let last = history[key]?.last?.1
            guard last != endpoints, !(last == nil && endpoints.isEmpty) else { return }
            var list = history[key] ?? []
            list.append((time, endpoints))
            if list.count > Self.length { list.removeFirst(list.count - Self.length) }
            history[key] = list
        }
    }

    /// `{"default/web": [{"time": 1700000000.123, "endpoints": ["10.244.1.2:8080"]}, …]}`
    func json(service: String? = nil) -> JSON {
        changes.withLock { history in
            var out = JSONObject()
            for (key, list) in history.sorted(by: { $0.key < $1.key }) where service == nil || key.description == service {
                out[key.description] = .array(list.map { ["time": .double($0.0.timeIntervalSince1970), "endpoints": .array($0.1.map { .string($0.description) })] })
            }
            return .object(out)
        }
    }
}
