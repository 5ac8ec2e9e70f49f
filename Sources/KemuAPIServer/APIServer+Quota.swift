import KemuAPI

extension APIServer {
    /// Upstream's ResourceQuota admission, on create (also a server-side apply that creates): the new object must fit every quota of its
    /// namespace — what the namespace holds now plus what it adds, for each name the quota
    /// limits — or the create is Forbidden with upstream's message (Quota.refusal). A quota on a
    /// compute resource makes every container of a pod state it ("must specify").
    func createWithinQuota(_ o: JSON, _ r: APIResource) throws -> JSON {
        guard r.namespaced, r.stored, r.resource != "events", !store.list("resourcequotas", namespace: o.namespace).items.isEmpty else {
            return try createAllocating(r, o)
        }
        return try Quota.serialized {
            try admitQuota(o, r)
            return try createAllocating(r, o)
        }
    }

    func admitQuota(_ o: JSON, _ r: APIResource) throws {
        let quotas = store.list("resourcequotas", namespace: o.namespace).items
        guard !quotas.isEmpty else { return }
        let existing = store.list(r.qualifiedName, namespace: o.namespace).items
        if let reason = Quota.refusal(o, resource: r.qualifiedName, quotas: quotas, existing: existing) {
            throw APIError(code: 403, reason: "Forbidden", message: "\(r.qualifiedName) \"\(o.name)\" is forbidden: \(reason)",
                           name: o.name, kind: r.resource, group: r.group)
        }
    }

    /// Upstream's Priority admission, on a new pod (Priorities): Forbidden for a class that is not there.
    func admitPriority(_ pod: inout JSON) throws {
        if let problem = Priorities.apply(to: &pod, classes: store.list("priorityclasses.scheduling.k8s.io").items) {
            throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(pod.name)\" is forbidden: \(problem)", name: pod.name, kind: "pods")
        }
    }

    /// Upstream's LimitRanger, on a new pod: the namespace's LimitRanges' defaults filled in,
    /// then their bounds checked (Forbidden, every breach listed).
    func admitLimitRanges(_ pod: inout JSON) throws {
        let ranges = store.list("limitranges", namespace: pod.namespace).items
        guard !ranges.isEmpty else { return }
        let problems = LimitRanges.apply(to: &pod, ranges)
        if !problems.isEmpty {
            throw APIError(code: 403, reason: "Forbidden", message: "pods \"\(pod.name)\" is forbidden: [\(problems.joined(separator: ", "))]",
                           name: pod.name, kind: "pods")
        }
    }
}
