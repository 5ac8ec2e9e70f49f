import KemuAPI

/// The store's indexes, kept under its lock with every change: by label (a Service's slices, a
/// ReplicaSet's pods) and by owner uid (the garbage collector's dependents).
extension Store {
    /// Every object, of any resource, with an ownerReference to `uid`.
    public func dependents(of uid: String) -> [(resource: String, object: JSON)] {
        state.withLock { s in
            (s.ownerIndex[uid] ?? []).sorted().compactMap { ref in
                s.objects[ref.resource]?[ref.namespace]?[ref.name].map { (ref.resource, $0) }
            }
        }
    }

    struct ObjectRef: Hashable, Comparable {
        var resource, namespace, name: String
        static func < (a: ObjectRef, b: ObjectRef) -> Bool { (a.resource, a.namespace, a.name) < (b.resource, b.namespace, b.name) }
    }


    static func index(_ s: inout State, _ resource: String, _ object: JSON, present: Bool) {
        let ref = ObjectRef(resource: resource, namespace: object.namespace, name: object.name)
        for owner in object.ownerUIDs {
            if present {
                s.ownerIndex[owner, default: []].insert(ref)
            } else {
                s.ownerIndex[owner]?.remove(ref)
                if s.ownerIndex[owner]?.isEmpty == true { s.ownerIndex[owner] = nil }
            }
        }
        for (key, value) in object.labels {
            let label = "\(key)=\(value)"
            if present {
                s.labelIndex[resource, default: [:]][object.namespace, default: [:]][label, default: []].insert(object.name)
            } else {
                s.labelIndex[resource]?[object.namespace]?[label]?.remove(object.name)
                if s.labelIndex[resource]?[object.namespace]?[label]?.isEmpty == true { s.labelIndex[resource]?[object.namespace]?[label] = nil }
            }
        }
    }
}
