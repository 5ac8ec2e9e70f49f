import KemuAPI
import KemuStore
import Logging

/// ResourceQuota status, as upstream's quota controller keeps it: `hard` as the spec says and
/// `used` for each of its names (Quota's accounting), recomputed when anything of the namespace
/// that quotas count changes. (The API server's admission refuses what would exceed it.)
public final class ResourceQuotaController: Sendable {
    static let quotas = "resourcequotas"
    /// The stored resources a quota counts by default; `count/…` names of other kinds are
    /// recomputed with the quota's own changes.
    static let counted = ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers"]
    let store: Store
    let logger = Logger(label: "kemu.quota")
    private let queue = WorkQueue()

    public init(store: Store) { self.store = store }

    public typealias Key = EndpointSliceController.Key

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let streams = try ([Self.quotas] + Self.counted).map { try store.watch(WatchFilter($0)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stream in streams {
                group.addTask {
                    for try await e in stream {
                        for quota in self.store.list(Self.quotas, namespace: e.object.namespace).items {
                            self.queue.add(Key(namespace: quota.namespace, name: quota.name))
                        }
                    }
                }
            }
            group.addTask {
                try await self.queue.process(self.logger, { "quota \($0.namespace)/\($0.name)" }, self.reconcile) { key, error, count, retry in
                    Workload.reportFailure(self.store, resource: Self.quotas, key, error, count: count, retry: retry, component: "resourcequota-controller")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    public func reconcile(_ key: Key) throws {
        guard let quota = store.get(Self.quotas, namespace: key.namespace, name: key.name), quota.deletionTimestamp == nil else { return }
        let hard = quota[path: "spec.hard"]?.object ?? JSONObject()
        var used = JSONObject()
        var listed: [String: [JSON]] = [:]
        for (name, _) in hard {
            let resource = Self.resource(for: name)
            guard let resource, APIResources.all.contains(where: { $0.stored && $0.qualifiedName == resource }) else { continue }
            if listed[resource] == nil { listed[resource] = store.list(resource, namespace: quota.namespace).items }
            let total = (listed[resource] ?? []).compactMap { Quota.usage(of: $0, resource: resource, for: name) }.reduce(0, &+)
            used[name] = .string(Quota.format(total, name: name))
        }
        try Workload.modify(store, Self.quotas, quota, part: .status) { $0["status"] = ["hard": .object(hard), "used": .object(used)] }
    }

    /// The stored resource a quota name counts.
    static func resource(for name: String) -> String? {
        switch name {
        case "services.loadbalancers", "services.nodeports": return "services"
        case "requests.cpu", "cpu", "requests.memory", "memory", "limits.cpu", "limits.memory": return "pods"
        default:
            if name.hasPrefix("count/") { return String(name.dropFirst(6)) }
            return counted.contains(name) || name == "resourcequotas" ? name : nil
        }
    }
}
