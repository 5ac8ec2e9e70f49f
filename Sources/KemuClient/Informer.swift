import KemuAPI
import Logging
import Synchronization

/// What an informer tells its handler.
public enum InformerEvent: Sendable {
    case added(JSON)
    case updated(old: JSON, new: JSON)
    case deleted(JSON)
    /// The cache holds the whole list: sent after the first list, and after every re-list.
    case synced
}

/// Keeps a local copy of one resource (optionally one namespace, one label selector) the way
/// client-go's informers do: list, then watch from the list's revision; on 410 Expired list again
/// and report only the differences; when the connection drops, reconnect with growing pauses
/// (100 ms doubling to 5 s) and resume from the last revision seen.
public final class Informer: Sendable {
    public let resource: APIResource
    let client: APIClient
    let namespace: String?
    let labels: String?
    let fields: String?
    let transform: (@Sendable (JSON) -> JSON)?
    let cache: Cache
    let pageSize: Int
    let logger: Logger
    private let state = Mutex<(objects: [String: JSON], revisions: [String: Int64], revision: String)>(([:], [:], ""))

    /// What the informer keeps of each object.
    public enum Cache: Sendable {
        /// The (transformed) objects: `get`, `items`, and the old object of every update.
        case objects
        /// Only each object's resourceVersion, for a handler that keeps its own compact form
        /// (a proxy of 10,000 Services): after a re-list, an update's old object and a deleted
        /// object are stubs with namespace, name and resourceVersion; `get` and `items` are empty.
        case revisions
    }

    /// `transform` trims each object before it is cached and handed on (client-go's
    /// SetTransform): a proxy of 10,000 Services keeps only what it reads. Lists come in pages of
    /// `pageSize` (client-go's pager: 500), so a re-list never holds all the objects' JSON at once.
    public init(_ client: APIClient, _ resource: APIResource, namespace: String? = nil, labels: String? = nil, fields: String? = nil,
                cache: Cache = .objects, pageSize: Int = 500, transform: (@Sendable (JSON) -> JSON)? = nil) {
        self.client = client
        self.cache = cache
        self.pageSize = pageSize
        self.transform = transform
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        logger = Logger(label: "kemu.informer.\(resource.qualifiedName)")
    }

    /// The cached object, if the informer has seen it.
    public func get(namespace: String = "", name: String) -> JSON? { state.withLock { $0.objects[namespace + "/" + name] } }

    /// Every cached object, sorted by namespace/name.
    public var items: [JSON] { state.withLock { $0.objects.sorted { $0.key < $1.key }.map(\.value) } }

    /// Runs until the task is cancelled, calling `handler` for every change in order.
    public func run(_ handler: @Sendable (InformerEvent) async -> Void) async throws {
        var pause = Duration.milliseconds(100)
        var needsList = true
        while !Task.isCancelled {
            do {
                if needsList {
                    try await relist(handler)
                    needsList = false
                }
                let from = state.withLock { $0.revision }
                for try await event in client.watch(resource, namespace: namespace, labels: labels, fields: fields, from: from) {
                    pause = .milliseconds(100)
                    await apply(event, handler)
                }
            } catch let error as ClientError where error.code == 410 {
                logger.debug("watch expired; listing again")
                needsList = true
                continue
            } catch is CancellationError {
                return
            } catch {
                logger.debug("\(resource.qualifiedName): \(error); retrying in \(pause)")
            }
            // Jittered, and capped at 1 s: after an API-server restart every informer is back
            // within a second, without all of them knocking at the same instant.
            try? await Task.sleep(for: pause * Double.random(in: 0.8...1.2))
            pause = min(pause * 2, .seconds(1))
        }
    }

    /// Lists, replaces the cache, and reports what changed since the cache was last right. In
    /// `.revisions` mode each page is reported as it comes (the whole list's JSON is never held).
    func relist(_ handler: @Sendable (InformerEvent) async -> Void) async throws {
        let keepObjects = cache == .objects
        let transform = self.transform
        let (old, oldRevisions) = state.withLock { ($0.objects, $0.revisions) }
        var fresh: [String: JSON] = [:]
        var freshRevisions: [String: Int64] = [:]
        let revision = try await client.list(resource, namespace: namespace, labels: labels, fields: fields, limit: pageSize) { items in
            for item in items {
                let o = transform?(item) ?? item
                let key = Self.key(o)
                if keepObjects { fresh[key] = o; continue }
                freshRevisions[key] = o.resourceVersion ?? 0
                if let before = oldRevisions[key] {
                    if before != o.resourceVersion ?? 0 { await handler(.updated(old: Self.stub(key, before), new: o)) }
                } else {
                    await handler(.added(o))
                }
            }
        }
        state.withLock { s in
            (s.objects, s.revisions, s.revision) = (fresh, freshRevisions, revision)
        }
        for (key, o) in fresh.sorted(by: { $0.key < $1.key }) {
            if let before = old[key] {
                if before.resourceVersion != o.resourceVersion { await handler(.updated(old: before, new: o)) }
            } else {
                await handler(.added(o))
            }
        }
        for (key, o) in old.sorted(by: { $0.key < $1.key }) where fresh[key] == nil { await handler(.deleted(o)) }
        for (key, revision) in oldRevisions.sorted(by: { $0.key < $1.key }) where freshRevisions[key] == nil {
            await handler(.deleted(Self.stub(key, revision)))
        }
        await handler(.synced)
    }

    /// What `.revisions` hands on for an object it no longer holds.
    static func stub(_ key: String, _ revision: Int64) -> JSON {
        let (namespace, name) = key.firstIndex(of: "/").map { (String(key[..<$0]), String(key[key.index(after: $0)...])) } ?? ("", key)
        var o: JSON = [:]
        o.namespace = namespace
        o.name = name
        o.resourceVersion = revision
        return o
    }

    func apply(_ event: WatchEvent, _ handler: @Sendable (InformerEvent) async -> Void) async {
        var event = event
        if let transform { event.object = transform(event.object) }
        let key = Self.key(event.object)
        let revision = event.object[path: "metadata.resourceVersion"]?.string ?? ""
        let keepObjects = cache == .objects
        let before: JSON? = state.withLock { s in
            let before = keepObjects ? s.objects[key] : s.revisions[key].map { Self.stub(key, $0) }
            switch (event.type, keepObjects) {
            case (.deleted, true): s.objects[key] = nil
            case (.deleted, false): s.revisions[key] = nil
            case (.added, true), (.modified, true): s.objects[key] = event.object
            case (.added, false), (.modified, false): s.revisions[key] = event.object.resourceVersion ?? 0
            case (.bookmark, _): break
            }
            if !revision.isEmpty { s.revision = revision }
            return before
        }
        switch (event.type, before) {
        case (.deleted, _): await handler(.deleted(event.object))
        case (.added, nil), (.modified, nil): await handler(.added(event.object))
        case (.added, let old?), (.modified, let old?): await handler(.updated(old: old, new: event.object))
        case (.bookmark, _): break
        }
    }

    static func key(_ o: JSON) -> String { o.namespace + "/" + o.name }
}
