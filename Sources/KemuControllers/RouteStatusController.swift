import Foundation
import KemuAPI
import KemuStore
import Logging

/// Gateway API routes in their mesh shape (GAMMA), reported as an implementation does: for each
/// parentRef that is a Service in the route's namespace, an entry in `status.parents` under
/// kemu's controller name with `Accepted` (the Service exists; what kemu does not follow is said
/// in its message) and `ResolvedRefs` (every backendRef of the rule followed names a port of a
/// Service in the route's namespace; else BackendNotFound, RefNotPermitted or InvalidKind).
/// Other controllers' entries are left as they are.
public final class RouteStatusController: Sendable {
    public static let controllerName = "kemu.dev/mesh"
    static let resources = ["httproutes.gateway.networking.k8s.io", "tcproutes.gateway.networking.k8s.io"]
    let store: Store
    let logger = Logger(label: "kemu.routes")
    private let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    /// A route's key: its namespace, and `RESOURCE/NAME` (a route name has no slash).
    static func key(_ resource: String, _ route: JSON) -> Key { Key(namespace: route.namespace, name: "\(resource)/\(route.name)") }

    func follow() async throws {
        let routes = try Self.resources.map { r in (r, try store.watch(WatchFilter(r))) }
        let services = try store.watch(WatchFilter("services"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (resource, events) in routes {
                group.addTask { for try await e in events where e.type != .deleted { self.queue.add(Self.key(resource, e.object)) } }
            }
            group.addTask {
                // A Service came or went: the routes of its namespace may name it.
                for try await e in services {
                    for resource in Self.resources {
                        for route in self.store.list(resource, namespace: e.object.namespace).items { self.queue.add(Self.key(resource, route)) }
                    }
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "route \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    self.logger.warning("route \(key.namespace)/\(key.name): \(error) (failure \(count); retrying in \(retry) s)")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    public func reconcile(_ key: Key) throws {
        guard let slash = key.name.firstIndex(of: "/") else { return }
        let resource = String(key.name[..<slash]), name = String(key.name[key.name.index(after: slash)...])
        guard let route = store.get(resource, namespace: key.namespace, name: name), route.deletionTimestamp == nil,
              case let .success(parsed) = TrafficRoute.parse(route) else { return }
        let now = Timestamp.now()
        let old = route[path: "status.parents"]?.array ?? []
        var parents = old.filter { $0["controllerName"]?.string != Self.controllerName }
        let resolved = resolvedRefs(parsed)
        for ref in route[path: "spec.parentRefs"]?.array ?? [] {
            guard let service = TrafficRoute.serviceParent(ref, namespace: route.namespace)?.service else { continue }
            let previous = old.first { $0["controllerName"]?.string == Self.controllerName && $0["parentRef"] == ref }?["conditions"]?.array ?? []
            let exists = store.get("services", namespace: route.namespace, name: service) != nil
            let accepted = exists
                ? Condition("Accepted", true, "Accepted", parsed.notes.isEmpty ? "kemu splits the Service's connections by the backends' weights"
                            : "accepted; not followed: " + parsed.notes.joined(separator: "; "))
                : Condition("Accepted", false, "NoMatchingParent", "Service \(route.namespace)/\(service) not found")
            let conditions = [accepted, resolved].map { $0.json(previous: previous, generation: route.generation, now: now) }
            parents.append(["parentRef": ref, "controllerName": .string(Self.controllerName), "conditions": .array(conditions)])
        }
        _ = try Workload.modify(store, resource, route, part: .status) { $0["status", default: [:]]["parents"] = .array(parents) }
    }

    /// ResolvedRefs for the rule kemu follows.
    func resolvedRefs(_ route: TrafficRoute) -> Condition {
        for (i, b) in route.backends.enumerated() {
            let field = "backendRefs[\(i)] \(b.service)"
            guard b.resolvable else {
                return b.unresolvedReason == "InvalidKind" ? Condition("ResolvedRefs", false, "InvalidKind", "\(field): kemu follows Services only")
                    : Condition("ResolvedRefs", false, "RefNotPermitted", "\(field): a Service in another namespace needs a ReferenceGrant, which kemu does not serve")
            }
            guard let service = store.get("services", namespace: route.namespace, name: b.service) else {
                return Condition("ResolvedRefs", false, "BackendNotFound", "\(field): Service \(route.namespace)/\(b.service) not found; its share of connections is refused")
            }
            guard (service[path: "spec.ports"]?.array ?? []).contains(where: { $0["port"]?.int == Int64(b.port) }) else {
                return Condition("ResolvedRefs", false, "BackendNotFound", "\(field): the Service has no port \(b.port); its share of connections is refused")
            }
        }
        return Condition("ResolvedRefs", true, "ResolvedRefs", "every backendRef names a Service port")
    }

    struct Condition {
        var type: String
        var status: Bool
        var reason: String
        var message: String

        init(_ type: String, _ status: Bool, _ reason: String, _ message: String) {
            (self.type, self.status, self.reason, self.message) = (type, status, reason, message)
        }

        /// The condition as the API shows it; its transition time kept while its status holds.
        func json(previous: [JSON], generation: Int64, now: String) -> JSON {
            let text = status ? "True" : "False"
            let before = previous.first { $0["type"]?.string == type }
            let since = before?["status"]?.string == text ? before?["lastTransitionTime"]?.string ?? now : now
            return ["type": .string(type), "status": .string(text), "reason": .string(reason), "message": .string(message),
                    "observedGeneration": .int(generation), "lastTransitionTime": .string(since)]
        }
    }
}
