import Synchronization

/// ResourceQuota accounting, shared by the API server's admission (is a new object within every
/// quota of its namespace?) and the quota controller (status.used): what an object counts
/// against each resource name a quota may list. Upstream's names: object counts (`pods`,
/// `services`, `configmaps`, `secrets`, `persistentvolumeclaims`, `replicationcontrollers`,
/// `resourcequotas`, `services.nodeports`, `services.loadbalancers`, and `count/<resource>[.<group>]`
/// for any kind) and compute (`requests.cpu` or `cpu`, `requests.memory` or `memory`,
/// `limits.cpu`, `limits.memory`), in thousandths of the unit (Quantity).
public enum Quota {
    /// Check and create as one step wherever a namespace has quotas (the API server's handlers
    /// and the controllers run on many threads): two creates that each fit alone must not both
    /// pass together. Creates in namespaces without quotas never wait for it.
    static let admission = Mutex(())

    public static func serialized<T>(_ body: () throws -> T) throws -> T {
        try admission.withLock { _ in try body() }
    }

    /// What `object` (stored as `resource`, e.g. `pods` or `deployments.apps`) counts for `name`;
    /// nil when it does not count for it at all.
    public static func usage(of object: JSON, resource: String, for name: String) -> Int64? {
        let pod = resource == "pods"
        if pod, ["Succeeded", "Failed"].contains(object[path: "status.phase"]?.string ?? "") { return nil }  // terminal pods are free
        switch name {
        case "pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers", "resourcequotas":
            return resource == name ? 1000 : nil
        case "services.loadbalancers":
            return resource == "services" && object[path: "spec.type"]?.string == "LoadBalancer" ? 1000 : nil
        case "services.nodeports":
            guard resource == "services", ["NodePort", "LoadBalancer"].contains(object[path: "spec.type"]?.string ?? "") else { return nil }
            return Int64((object[path: "spec.ports"]?.array ?? []).count) * 1000
        case "requests.cpu", "cpu": return pod ? compute(object, "requests", "cpu") : nil
        case "requests.memory", "memory": return pod ? compute(object, "requests", "memory") : nil
        case "limits.cpu": return pod ? compute(object, "limits", "cpu") : nil
        case "limits.memory": return pod ? compute(object, "limits", "memory") : nil
        default:
            guard name.hasPrefix("count/") else { return nil }
            return String(name.dropFirst(6)) == resource ? 1000 : nil
        }
    }

    /// A pod's sum over its containers (init containers run one at a time: the largest of them
    /// counts if it is more), as upstream's resource helpers.
    static func compute(_ pod: JSON, _ kind: String, _ key: String) -> Int64 {
        let amount = { (c: JSON) in Quantity.milli(c[path: "resources.\(kind).\(key)"]) ?? 0 }
        let containers = (pod[path: "spec.containers"]?.array ?? []).reduce(Int64(0)) { $0 &+ amount($1) }
        let inits = (pod[path: "spec.initContainers"]?.array ?? []).map(amount).max() ?? 0
        return max(containers, inits)
    }

    /// For compute names a pod must state the amount in every container: the containers that do
    /// not (upstream's "must specify").
    public static func unspecified(_ pod: JSON, for name: String) -> [String] {
        let field: String
        switch name {
        case "requests.cpu", "cpu": field = "requests.cpu"
        case "requests.memory", "memory": field = "requests.memory"
        case "limits.cpu": field = "limits.cpu"
        case "limits.memory": field = "limits.memory"
        default: return []
        }
        return (pod[path: "spec.containers"]?.array ?? []).filter { $0[path: "resources.\(field)"] == nil }.compactMap { $0["name"]?.string }
    }

    /// A quantity in thousandths, written back as upstream prints it: `500m`, `2`, `64Mi`.
    public static func format(_ milli: Int64, name: String) -> String {
        let memory = name.hasSuffix("memory") || name == "memory"
        if memory, milli % 1000 == 0 {
            let bytes = milli / 1000
            for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] where bytes > 0 && bytes % (Int64(1) << shift) == 0 {
                return "\(bytes >> shift)\(suffix)"
            }
            return "\(bytes)"
        }
        return milli % 1000 == 0 ? "\(milli / 1000)" : "\(milli)m"
    }

    /// Why `object` may not be created beside `existing` (the namespace's objects of its
    /// resource) under `quotas`, in upstream's words after `<resource> "<name>" is forbidden: `;
    /// nil when it fits every quota.
    public static func refusal(_ object: JSON, resource: String, quotas: [JSON], existing: [JSON]) -> String? {
        for quota in quotas.sorted(by: { $0.name < $1.name }) {
            var exceeded: [(name: String, requested: Int64, used: Int64, limit: String)] = []
            var unstated: [String] = []
            for (name, limit) in (quota[path: "spec.hard"]?.object ?? JSONObject()).sorted(by: { $0.key < $1.key }) {
                guard let requested = usage(of: object, resource: resource, for: name) else { continue }
                let missing = resource == "pods" ? unspecified(object, for: name) : []
                if !missing.isEmpty { unstated.append("\(name) for: \(missing.joined(separator: ","))") }
                let used = existing.compactMap { usage(of: $0, resource: resource, for: name) }.reduce(0, &+)
                if used &+ requested > Quantity.milli(limit) ?? 0 {
                    exceeded.append((name, requested, used, limit.string ?? limit.text()))
                }
            }
            if !unstated.isEmpty { return "failed quota: \(quota.name): must specify \(unstated.joined(separator: "; "))" }
            if !exceeded.isEmpty {
                let requested = exceeded.map { "\($0.name)=\(format($0.requested, name: $0.name))" }.joined(separator: ",")
                let used = exceeded.map { "\($0.name)=\(format($0.used, name: $0.name))" }.joined(separator: ",")
                let limited = exceeded.map { "\($0.name)=\($0.limit)" }.joined(separator: ",")
                return "exceeded quota: \(quota.name), requested: \(requested), used: \(used), limited: \(limited)"
            }
        }
        return nil
    }
}
