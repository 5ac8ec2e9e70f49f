import KemuAPI
import KemuStore
import Logging

/// Deletes objects whose owners are all gone (ownerReferences, background propagation): when a
/// ReplicaSet is deleted its Pods follow, and their dependents after them, through the same
/// watches. An owner deleted with `propagationPolicy: Orphan` has its dependents' references to it
/// removed by the API server first, so they stay.
public final class GarbageCollector: Sendable {
    let store: Store
    let logger = Logger(label: "kemu.gc")

    public init(store: Store) { self.store = store }

    /// Runs until cancelled, re-watching after a 410.
    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        // Watch first, then sweep once (dependents whose owners vanished while the server was
        // down), so no delete falls between the two.
        let streams = try APIResources.all.filter { ownersKinds.contains($0.kind) }.map {
            try store.watch(WatchFilter($0.qualifiedName), from: store.revision)
        }
        collect()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stream in streams {
                group.addTask {
                    for try await event in stream where event.type == .deleted { self.collect(owner: event.object.uid) }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Kinds that own other objects in kemu.
    let ownersKinds: Set<String> = ["Deployment", "ReplicaSet", "ReplicationController", "StatefulSet", "Service", "Pod", "Namespace"]

    /// Deletes every object that has owner references, all of whose owners are gone (or only
    /// those referring to `owner`, when given).
    public func collect(owner: String? = nil) {
        var live: Set<String>?
        for r in APIResources.all {
            for o in store.list(r.qualifiedName).items {
                let owners = (o[path: "metadata.ownerReferences"]?.array ?? []).compactMap { $0["uid"]?.string }
                guard !owners.isEmpty, owner.map(owners.contains) ?? true else { continue }
                if live == nil { live = liveUIDs() }
                guard owners.allSatisfy({ !live!.contains($0) }) else { continue }
                do {
                    try store.delete(r.qualifiedName, namespace: o.namespace, name: o.name, uid: o.uid)
                    logger.debug("deleted \(r.qualifiedName) \(o.namespace)/\(o.name): its owners are gone")
                } catch StoreError.notFound {
                } catch {
                    logger.warning("cannot delete \(r.qualifiedName) \(o.namespace)/\(o.name): \(error)")
                }
            }
        }
    }

    func liveUIDs() -> Set<String> {
        var uids: Set<String> = []
        for r in APIResources.all where ownersKinds.contains(r.kind) {
            for o in store.list(r.qualifiedName).items { uids.insert(o.uid) }
        }
        return uids
    }
}
