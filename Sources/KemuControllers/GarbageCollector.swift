import KemuAPI
import KemuStore
import Logging
import Synchronization

/// Deletes objects whose owners are all gone (ownerReferences): when a ReplicaSet is deleted its
/// Pods follow, and their dependents after them, through the same watches. Foreground
/// propagation: an owner marked for deletion with the `foregroundDeletion` finalizer has its
/// dependents deleted first (in the foreground too, when they own things themselves), and goes
/// when the last of them is gone. An owner deleted with `propagationPolicy: Orphan` has its
/// dependents' references to it removed by the API server first, so they stay.
public final class GarbageCollector: Sendable {
    public static let foreground = "foregroundDeletion"
    let store: Store
    let logger = Logger(label: "kemu.gc")
    /// Owners being deleted in the foreground (uid → where they are): a dependent's deletion
    /// moves on only its own owners, instead of a walk over every object at every delete.
    private let foregroundOwners = Mutex<[String: (resource: String, namespace: String, name: String)]>([:])

    public init(store: Store) { self.store = store }

    /// Runs until cancelled, re-watching after a 410.
    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        // Watch first, then sweep once (dependents whose owners vanished while the server was
        // down, foreground deletions left half done), so no change falls between the two.
        let revision = store.revision
        let streams = try APIResources.all.filter(\.stored).map { r in (r.qualifiedName, try store.watch(WatchFilter(r.qualifiedName), from: revision)) }
        collect()
        advanceForeground()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (resource, stream) in streams {
                group.addTask {
                    for try await event in stream {
                        if event.type == .deleted {
                            _ = self.foregroundOwners.withLock { $0.removeValue(forKey: event.object.uid) }
                            self.collect(owner: event.object.uid)
                            self.advanceForeground(ownersOf: event.object)
                        } else if event.object.deletionTimestamp != nil, event.object.finalizers.contains(Self.foreground) {
                            self.advance(resource, event.object)
                        }
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Moves on the foreground deletions of a deleted object's owners.
    func advanceForeground(ownersOf object: JSON) {
        for uid in object.ownerUIDs {
            guard let at = foregroundOwners.withLock({ $0[uid] }) else { continue }
            guard let owner = store.get(at.resource, namespace: at.namespace, name: at.name), owner.uid == uid,
                  owner.finalizers.contains(Self.foreground) else {
                _ = foregroundOwners.withLock { $0.removeValue(forKey: uid) }
                continue
            }
            advance(at.resource, owner)
        }
    }

    /// Moves every foreground deletion on by one step (the sweep at start).
    func advanceForeground() {
        for r in APIResources.all where r.stored {
            for o in store.list(r.qualifiedName).items where o.deletionTimestamp != nil && o.finalizers.contains(Self.foreground) {
                advance(r.qualifiedName, o)
            }
        }
    }

    /// One step of `owner`'s foreground deletion: deletes its dependents (dropping only the
    /// reference from those another live owner keeps), or, once none is left, lifts the
    /// finalizer so the owner goes.
    func advance(_ resource: String, _ owner: JSON) {
        foregroundOwners.withLock { $0[owner.uid] = (resource, owner.namespace, owner.name) }
        let dependents = store.dependents(of: owner.uid)
        do {
            guard !dependents.isEmpty else {
                try store.modify(resource, namespace: owner.namespace, name: owner.name) { o in
                    guard o.uid == owner.uid else { throw StoreError.notFound(resource: resource, name: owner.name) }
                    o.finalizers.removeAll { $0 == Self.foreground }
                }
                logger.debug("\(resource) \(owner.namespace)/\(owner.name): dependents gone, deleted")
                return
            }
            for (r, d) in dependents where d.deletionTimestamp == nil {
                if d.ownerUIDs.contains(where: { $0 != owner.uid && ownerAlive(d, $0) }) {
                    try store.modify(r, namespace: d.namespace, name: d.name) { $0.removeOwnerReference(owner.uid) }
                    continue
                }
                if !store.dependents(of: d.uid).isEmpty {
                    try store.modify(r, namespace: d.namespace, name: d.name) { o in
                        if !o.finalizers.contains(Self.foreground) { o.finalizers.append(Self.foreground) }
                    }
                }
                try store.delete(r, namespace: d.namespace, name: d.name, uid: d.uid)
            }
        } catch StoreError.notFound {
        } catch {
            logger.warning("foreground deletion of \(resource) \(owner.namespace)/\(owner.name): \(error)")
        }
    }

    /// Deletes every object that has owner references, all of whose owners are gone (or only
    /// those referring to `owner`, when given).
    public func collect(owner: String? = nil) {
        if let owner {
            // Only the objects that name it (the store indexes owner references).
            let dependents = store.dependents(of: owner)
            for (r, o) in dependents where o.ownerUIDs.allSatisfy({ !ownerAlive(o, $0) }) { delete(r, o) }
            return
        }
        for r in APIResources.all where r.stored {
            for o in store.list(r.qualifiedName).items {
                let owners = o.ownerUIDs
                guard !owners.isEmpty, owner.map(owners.contains) ?? true else { continue }
                guard owners.allSatisfy({ !ownerAlive(o, $0) }) else { continue }
                delete(r.qualifiedName, o)
            }
        }
    }

    private func delete(_ resource: String, _ o: JSON) {
        do {
            try store.delete(resource, namespace: o.namespace, name: o.name, uid: o.uid)
            logger.debug("deleted \(resource) \(o.namespace)/\(o.name): its owners are gone")
        } catch StoreError.notFound {
        } catch {
            logger.warning("cannot delete \(resource) \(o.namespace)/\(o.name): \(error)")
        }
    }

    /// Whether the owner `dependent` refers to by `uid` exists: looked up by the reference's
    /// kind and name (any kind, a user's own ownerReferences too), in the dependent's namespace
    /// when the kind is namespaced. A reference to a kind kemu does not serve is taken as alive:
    /// nothing can tell it is gone, so the dependent is left alone (as upstream's collector does
    /// with an owner it cannot resolve).
    func ownerAlive(_ dependent: JSON, _ uid: String) -> Bool {
        guard let ref = (dependent[path: "metadata.ownerReferences"]?.array ?? []).first(where: { $0["uid"]?.string == uid }) else {
            return false
        }
        // Without an apiVersion (kemu's own tests write such references) the kind alone decides.
        let apiVersion = ref["apiVersion"]?.string ?? ""
        let group = apiVersion.contains("/") ? String(apiVersion.split(separator: "/")[0]) : apiVersion.isEmpty ? nil : ""
        guard let kind = ref["kind"]?.string, let name = ref["name"]?.string,
              let r = APIResources.all.first(where: { $0.stored && (group == nil || $0.group == group) && $0.kind == kind }) else {
            return true
        }
        return store.get(r.qualifiedName, namespace: r.namespaced ? dependent.namespace : "", name: name)?.uid == uid
    }
}
