import KemuAPI
import Synchronization

/// A live watch: its filter and the stream it feeds.
final class Watcher: Sendable {
    let filter: WatchFilter
    let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    /// Set when the consumer goes away; the next commit drops the watcher. (Set, never locked: a
    /// stream can end inside a commit, while the store's lock is held.)
    let cancelled = Atomic<Bool>(false)

    init(filter: WatchFilter, continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) {
        self.filter = filter
        self.continuation = continuation
    }
}

extension Store {
    /// Watches `filter` from `revision`:
    /// - nil or 0: the current matching objects as ADDED, then every change ("Get State and Start
    ///   at Most Recent");
    /// - N: every change after revision N, or `.expired` (410) when the history no longer reaches
    ///   back that far.
    /// A watcher that falls more than `bufferLimit` events behind is ended with `.expired`, and a
    /// client re-lists, as with any 410.
    public func watch(_ filter: WatchFilter, from revision: Int64? = nil, bufferLimit: Int = 10_000) throws
        -> AsyncThrowingStream<WatchEvent, any Error> {
        try state.withLock { s in
            var initial: [WatchEvent] = []
            if let revision, revision > 0 {
                guard let changes = s.history.since(revision) else {
                    throw StoreError.expired(requested: revision, oldest: s.history.compacted)
                }
                for c in changes where c.resource == filter.resource {
                    if let e = filter.event(old: c.old, new: c.new, deletedAs: c.deleted) { initial.append(e) }
                }
            } else {
                let byNamespace = s.objects[filter.resource] ?? [:]
                for ns in (filter.namespace.map { [$0] } ?? byNamespace.keys.sorted()) {
                    for (_, o) in (byNamespace[ns] ?? [:]).sorted(by: { $0.key < $1.key }) where filter.matches(o) {
                        initial.append(WatchEvent(.added, o))
                    }
                }
            }
            let (stream, continuation) = AsyncThrowingStream.makeStream(
                of: WatchEvent.self, bufferingPolicy: .bufferingOldest(initial.count + bufferLimit))
            for e in initial { continuation.yield(e) }
            let watcher = Watcher(filter: filter, continuation: continuation)
            continuation.onTermination = { _ in watcher.cancelled.store(true, ordering: .relaxed) }
            s.nextWatcherID += 1
            s.watchers[filter.resource, default: [:]][s.nextWatcherID] = watcher
            return stream
        }
    }

    /// Number of live watches, for metrics and tests.
    public var watchCount: Int {
        state.withLock { s in s.watchers.values.reduce(0) { $0 + $1.values.filter { !$0.cancelled.load(ordering: .relaxed) }.count } }
    }

    func publish(_ s: inout State, _ change: Change) {
        guard let watchers = s.watchers[change.resource] else { return }
        var gone: [Int] = []
        let encoding = EncodingCache()
        for (id, w) in watchers {
            if w.cancelled.load(ordering: .relaxed) { gone.append(id); continue }
            guard var event = w.filter.event(old: change.old, new: change.new, deletedAs: change.deleted) else { continue }
            event.encoding = encoding
            switch w.continuation.yield(event) {
            case .enqueued: break
            case .dropped:
                w.continuation.finish(throwing: StoreError.expired(requested: change.revision, oldest: change.revision))
                gone.append(id)
            case .terminated: gone.append(id)
            @unknown default: gone.append(id)
            }
        }
        for id in gone { s.watchers[change.resource]?[id] = nil }
    }
}
