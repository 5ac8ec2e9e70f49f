import Foundation
import KemuAPI
import Synchronization

/// Kubernetes objects under one global revision (see README). Thread-safe; every write is
/// serialized, logged (when persistent) and delivered to watchers in revision order.
public final class Store: Sendable {
    struct State {
        var revision: Int64 = 0
        /// resource → namespace → name → object
        var objects: [String: [String: [String: JSON]]] = [:]
        /// resource → namespace → "key=value" → names: a list by label (an EndpointSlice's
        /// Service, a ReplicaSet's pods) reads only the objects that carry the label.
        var labelIndex: [String: [String: [String: Set<String>]]] = [:]
        /// Owner uid → the objects naming it in ownerReferences (resource, namespace, name): the
        /// garbage collector's question at every delete, which was a walk over every object.
        var ownerIndex: [String: Set<ObjectRef>] = [:]
        var history: EventHistory
        var watchers: [String: [Int: Watcher]] = [:]
        var nextWatcherID = 0
        var log: WriteAheadLog?
        /// resource → what runs, under the lock, as each of its objects goes.
        var deleteHooks: [String: [@Sendable (JSON) -> Void]] = [:]
        /// resource → the revision of its last write since this process started.
        var lastWrite: [String: Int64] = [:]
    }

    let state: Mutex<State>

    /// True for the length of a `?dryRun=All` request (upstream's server-side dry run): every
    /// check runs and every write returns what it would have stored, but nothing is written,
    /// logged, published to watchers or handed to delete hooks.
    @TaskLocal public static var dryRun = false

    /// A store in memory only. `historyLimit` is how many events a watch can resume across.
    public init(historyLimit: Int = 10_000) {
        state = Mutex(State(history: EventHistory(limit: historyLimit)))
    }

    /// A store kept in `directory` (created if missing): loads the last snapshot and log.
    public init(directory: String, historyLimit: Int = 10_000, compactAfterBytes: Int = 64 << 20, sync: SyncPolicy = .batch) throws {
        let log = try WriteAheadLog(directory: directory, compactAfterBytes: compactAfterBytes, sync: sync)
        var s = State(history: EventHistory(limit: historyLimit))
        let loaded = try log.load()
        s.revision = loaded.revision
        for (resource, object) in loaded.objects {
            s.objects[resource, default: [:]][object.namespace, default: [:]][object.name] = object
            Self.index(&s, resource, object, present: true)
        }
        // What the log holds since the snapshot can be replayed to a watch resuming after a
        // restart (an informer's last revision); nothing before the snapshot can.
        s.history.compacted = loaded.snapshotRevision
        for change in loaded.changes { s.history.append(change) }
        s.log = log
        state = Mutex(s)
    }

    /// The revision of the last write.
    public var revision: Int64 { state.withLock { $0.revision } }

    /// The revision of the last write to any of `resources` in this process (0: none yet), for
    /// caches of what those objects say (the RBAC authorizer's compiled rules).
    public func lastWrite(to resources: [String]) -> Int64 {
        state.withLock { s in resources.map { s.lastWrite[$0] ?? 0 }.max() ?? 0 }
    }

    // MARK: reads

    public func get(_ resource: String, namespace: String = "", name: String) -> JSON? {
        state.withLock { $0.objects[resource]?[namespace]?[name] }
    }

    /// Objects of `resource` (in `namespace`, or every one for nil) that match the selectors, sorted
    /// by namespace and name, and the revision they were read at.
    public func list(_ resource: String, namespace: String? = nil, labels: LabelSelector = .everything,
                     fields: FieldSelector = .everything) -> (items: [JSON], revision: Int64) {
        let filter = WatchFilter(resource, namespace: namespace, labels: labels, fields: fields)
        return state.withLock { s in
            let byNamespace = s.objects[resource] ?? [:]
            let namespaces = namespace.map { [$0] } ?? byNamespace.keys.sorted()
            var items: [JSON] = []
            let indexed = labels.requirements.first { $0.op == .equals || ($0.op == .in && $0.values.count == 1) }
            for ns in namespaces {
                guard let objects = byNamespace[ns] else { continue }
                if let name = fields.name {
                    if let o = objects[name], filter.matches(o) { items.append(o) }
                    continue
                }
                if let r = indexed {
                    let names = s.labelIndex[resource]?[ns]?["\(r.key)=\(r.values[0])"] ?? []
                    for name in names.sorted() { if let o = objects[name], filter.matches(o) { items.append(o) } }
                    continue
                }
                // Match first, sort what matched: a selective list of a big namespace stays cheap.
                items += objects.filter { filter.matches($0.value) }.sorted { $0.key < $1.key }.map(\.value)
            }
            return (items, s.revision)
        }
    }

    /// One page of a list (`?limit=&continue=`): the matching objects after `after` (namespace,
    /// name) in (namespace, name) order, at most `limit`. `more` says whether matching objects
    /// follow; `remaining` counts them when nothing but the namespace selects (nil otherwise,
    /// as upstream leaves remainingItemCount out under a selector).
    public func listPage(_ resource: String, namespace: String? = nil, labels: LabelSelector = .everything,
                         fields: FieldSelector = .everything, after: (String, String)?, limit: Int)
        -> (items: [JSON], revision: Int64, more: Bool, remaining: Int?) {
        let filter = WatchFilter(resource, namespace: namespace, labels: labels, fields: fields)
        let counting = labels.isEmpty && fields.terms.isEmpty
        return state.withLock { s in
            let byNamespace = s.objects[resource] ?? [:]
            let indexed = labels.requirements.first { $0.op == .equals || ($0.op == .in && $0.values.count == 1) }
            var items: [JSON] = []
            var more = false
            var remaining = 0
            for ns in namespace.map({ [$0] }) ?? byNamespace.keys.sorted() where after == nil || ns >= after!.0 {
                guard let objects = byNamespace[ns] else { continue }
                var names: [String]
                if let name = fields.name {
                    names = [name]
                } else if let r = indexed {
                    names = Array(s.labelIndex[resource]?[ns]?["\(r.key)=\(r.values[0])"] ?? [])
                } else {
                    names = Array(objects.keys)
                }
                if let after, ns == after.0 { names.removeAll { $0 <= after.1 } }
                names.sort()
                for (i, name) in names.enumerated() {
                    guard let o = objects[name], filter.matches(o) else { continue }
                    if items.count < limit { items.append(o); continue }
                    more = true
                    if counting { remaining += names.count - i }
                    break
                }
                if more && !counting { break }
            }
            return (items, s.revision, more, counting && more ? remaining : nil)
        }
    }

    // MARK: writes

    /// Stores a new object. Sets resourceVersion, uid, creationTimestamp and generation 1; a
    /// missing name with `metadata.generateName` gets that prefix and five random characters.
    @discardableResult
    public func create(_ resource: String, _ object: JSON) throws -> JSON {
        var object = object
        try state.withLock { s in
            let namespace = object.namespace
            if object.name.isEmpty {
                guard let prefix = object[path: "metadata.generateName"]?.string, !prefix.isEmpty else {
                    throw StoreError.invalid("metadata.name: Required value: name or generateName is required")
                }
                repeat { object.name = prefix + Self.randomSuffix() } while s.objects[resource]?[namespace]?[object.name] != nil
            }
            if s.objects[resource]?[namespace]?[object.name] != nil {
                throw StoreError.alreadyExists(resource: resource, name: object.name)
            }
            object.uid = UUID().uuidString.lowercased()
            object["metadata", default: [:]]["creationTimestamp"] = .string(Timestamp.now())
            object.generation = 1
            try commit(&s, resource, old: nil, new: &object)
        }
        return object
    }

    /// How an update treats `status` (Kubernetes' status subresource split).
    public enum UpdatePart: Sendable {
        /// The whole object as given.
        case all
        /// Everything but `status`, which keeps its stored value (PUT on the object).
        case main
        /// Only `status` (PUT on /status); everything else keeps its stored value.
        case status
    }

    /// Replaces a stored object. If the new object carries a resourceVersion, it must be the stored
    /// one (else `.conflict`); without one the update is unconditional. uid and creationTimestamp
    /// cannot change; generation goes up by one when `spec` changes.
    @discardableResult
    public func update(_ resource: String, _ object: JSON, part: UpdatePart = .all, whileAlive owner: Owner? = nil) throws -> JSON {
        var object = object
        try state.withLock { s in
            guard let current = s.objects[resource]?[object.namespace]?[object.name] else {
                throw StoreError.notFound(resource: resource, name: object.name)
            }
            if let owner {
                let o = s.objects[owner.resource]?[owner.namespace]?[owner.name]
                guard let o, o.uid == owner.uid, o.deletionTimestamp == nil else {
                    throw StoreError.ownerGone(resource: owner.resource, name: owner.name)
                }
            }
            if let expected = object.resourceVersion, expected != current.resourceVersion {
                throw StoreError.conflict(resource: resource, name: object.name)
            }
            switch part {
            case .all: break
            case .main: object["status"] = current["status"]
            case .status:
                var merged = current
                merged["status"] = object["status"]
                object = merged
            }
            object.uid = current.uid
            object["metadata", default: [:]]["creationTimestamp"] = current[path: "metadata.creationTimestamp"]
            object.generation = current.generation + (object["spec"] != current["spec"] ? 1 : 0)
            // Once deletion has begun it cannot be undone; the last finalizer removed ends it.
            // A graceful deletion (grace period > 0) waits for its final delete instead.
            if let deleting = current[path: "metadata.deletionTimestamp"] {
                object["metadata", default: [:]]["deletionTimestamp"] = deleting
                object["metadata", default: [:]]["deletionGracePeriodSeconds"] = current[path: "metadata.deletionGracePeriodSeconds"]
                if object.finalizers.isEmpty && (current[path: "metadata.deletionGracePeriodSeconds"]?.int ?? 0) == 0 {
                    try commit(&s, resource, old: current, new: &object, deleting: true)
                    return
                }
            }
            try commit(&s, resource, old: current, new: &object)
        }
        return object
    }

    /// An object that must exist, with this uid and not marked for deletion, when a change
    /// made on its behalf commits: a controller adopting a dependent checks its owner in the same
    /// step, so a delete with `propagationPolicy: Orphan` cannot lose the race to a re-adoption.
    public struct Owner: Sendable {
        public var resource, namespace, name, uid: String
        public init(_ resource: String, _ object: JSON) {
            (self.resource, namespace, name, uid) = (resource, object.namespace, object.name, object.uid)
        }
    }

    /// Reads, changes and writes an object in one step, retrying when another writer got there
    /// first: what controllers use instead of get + update. With `whileAlive`, only while that
    /// owner lives.
    @discardableResult
    public func modify(_ resource: String, namespace: String = "", name: String, part: UpdatePart = .all, whileAlive owner: Owner? = nil,
                       _ change: (inout JSON) throws -> Void) throws -> JSON {
        while true {
            guard var object = get(resource, namespace: namespace, name: name) else {
                throw StoreError.notFound(resource: resource, name: name)
            }
            try change(&object)
            do {
                return try update(resource, object, part: part, whileAlive: owner)
            } catch StoreError.conflict {
                continue
            }
        }
    }

    /// Removes an object; `uid` / `resourceVersion` preconditions guard against deleting a newer
    /// object of the same name. Returns the object as it was, with the delete's resourceVersion.
    /// An object with finalizers is only marked (deletionTimestamp set) and returned as updated;
    /// it goes when an update removes its last finalizer.
    @discardableResult
    public func delete(_ resource: String, namespace: String = "", name: String,
                       uid: String? = nil, resourceVersion: Int64? = nil) throws -> JSON {
        try state.withLock { s in
            guard let current = s.objects[resource]?[namespace]?[name] else {
                throw StoreError.notFound(resource: resource, name: name)
            }
            if let uid, uid != current.uid { throw StoreError.conflict(resource: resource, name: name) }
            if let resourceVersion, resourceVersion != current.resourceVersion {
                throw StoreError.conflict(resource: resource, name: name)
            }
            var gone = current
            if !current.finalizers.isEmpty {
                // Marked already, and final (grace 0): nothing more to do until the finalizers go.
                if current.deletionTimestamp != nil && (current[path: "metadata.deletionGracePeriodSeconds"]?.int ?? 0) == 0 { return current }
                if current.deletionTimestamp == nil { gone["metadata", default: [:]]["deletionTimestamp"] = .string(Timestamp.now()) }
                gone["metadata", default: [:]]["deletionGracePeriodSeconds"] = 0
                try commit(&s, resource, old: current, new: &gone)
                return gone
            }
            try commit(&s, resource, old: current, new: &gone, deleting: true)
            return gone
        }
    }

    /// Graceful deletion (pods): marks the object with deletionTimestamp = now + `seconds` and
    /// deletionGracePeriodSeconds = `seconds`, or shortens a mark already there; the object stays
    /// until a final `delete` (the node agent's, once its processes are gone). Returns the object.
    @discardableResult
    public func markForDeletion(_ resource: String, namespace: String = "", name: String, gracePeriodSeconds seconds: Int64,
                                uid: String? = nil) throws -> JSON {
        try state.withLock { s in
            guard let current = s.objects[resource]?[namespace]?[name] else {
                throw StoreError.notFound(resource: resource, name: name)
            }
            if let uid, uid != current.uid { throw StoreError.conflict(resource: resource, name: name) }
            if current.deletionTimestamp != nil, let grace = current[path: "metadata.deletionGracePeriodSeconds"]?.int, grace <= seconds {
                return current
            }
            var marked = current
            marked["metadata", default: [:]]["deletionTimestamp"] = .string(Timestamp.format(Date().addingTimeInterval(Double(seconds))))
            marked["metadata", default: [:]]["deletionGracePeriodSeconds"] = .int(seconds)
            try commit(&s, resource, old: current, new: &marked)
            return marked
        }
    }

    /// Runs `hook` with every `resource` object as it is deleted, whoever deletes it, before the
    /// delete is visible: for bookkeeping that must never lag the store (the API server's
    /// allocations). The hook runs under the store's lock and must not call back into the store.
    public func onDelete(_ resource: String, _ hook: @escaping @Sendable (JSON) -> Void) {
        state.withLock { $0.deleteHooks[resource, default: []].append(hook) }
    }

    /// Assigns the next revision, logs, applies and publishes one change. Called with the lock held,
    /// so revisions, the log and every watcher see changes in one order.
    func commit(_ s: inout State, _ resource: String, old: JSON?, new object: inout JSON, deleting: Bool = false) throws {
        if Self.dryRun {
            object.resourceVersion = old?.resourceVersion  // nothing new was written
            return
        }
        let revision = s.revision + 1
        object.resourceVersion = revision
        try s.log?.append(revision: revision, resource: resource, object: object, deleted: deleting)
        s.revision = revision
        s.lastWrite[resource] = revision
        if let previous = s.objects[resource]?[object.namespace]?[object.name] { Self.index(&s, resource, previous, present: false) }
        if deleting {
            s.objects[resource]?[object.namespace]?[object.name] = nil
            for hook in s.deleteHooks[resource] ?? [] { hook(object) }
        } else {
            s.objects[resource, default: [:]][object.namespace, default: [:]][object.name] = object
            Self.index(&s, resource, object, present: true)
        }
        let change = Change(revision: revision, resource: resource, old: old, new: deleting ? nil : object, deleted: deleting ? object : nil)
        s.history.append(change)
        publish(&s, change)
        if s.log?.wantsCompaction == true { try compact(&s) }
    }

    func compact(_ s: inout State) throws {
        var all: [(String, JSON)] = []
        for (resource, byNamespace) in s.objects {
            for (_, objects) in byNamespace { for (_, o) in objects { all.append((resource, o)) } }
        }
        try s.log?.snapshot(revision: s.revision, objects: all)
    }

    static func randomSuffix() -> String {
        // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement()! })
    }
}

/// One committed change: `new` is nil for a delete, `deleted` is the object as deleted.
struct Change: Sendable {
    var revision: Int64
    var resource: String
    var old: JSON?
    var new: JSON?
    var deleted: JSON?
}

/// The last `limit` changes, for watches that resume from a revision.
struct EventHistory {
    let limit: Int
    private var ring: [Change] = []
    private var head = 0
    /// The newest revision that can no longer be replayed (0: everything since the start is here).
    var compacted: Int64 = 0

    init(limit: Int) { self.limit = max(1, limit) }

    mutating func append(_ change: Change) {
        if ring.count < limit {
            ring.append(change)
        } else {
            compacted = ring[head].revision
            ring[head] = change
            head = (head + 1) % limit
        }
    }

    /// Changes after `revision`, oldest first; nil when some of them are gone.
    func since(_ revision: Int64) -> [Change]? {
        guard revision >= compacted else { return nil }
        let ordered = ring.count < limit ? ring : Array(ring[head...] + ring[..<head])
        return ordered.filter { $0.revision > revision }
    }
}
