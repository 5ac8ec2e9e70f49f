import Foundation
import Hummingbird
import KemuAPI
import KemuStore
import NIOCore
import Synchronization

extension APIServer {
    /// `?watch=true`: a chunked 200 with one `{"type":…,"object":…}` line per event (reference §6).
    func watch(_ t: Target, _ request: Request, _ query: Query) throws -> Response {
        let labels = try query["labelSelector"].map(LabelSelector.init(parsing:)) ?? .everything
        let fields = try query["fieldSelector"].map(FieldSelector.init(parsing:)) ?? .everything
        let filter = WatchFilter(t.resource.qualifiedName, namespace: t.namespace, labels: labels, fields: fields)
        // "" and "0" both mean: the current state first, then changes.
        let revision = query["resourceVersion"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        // Any length a client asks for is served (at most a day: it watches again after).
        let timeout = try query.integer("timeoutSeconds", in: 0...Int64.max).map { Double(min($0, Self.longestWatch)) }
        let table = Tables.wanted(request)
        let includeObject = query["includeObject"]
        let resource = t.resource

        let events: AsyncThrowingStream<WatchEvent, any Error>
        do {
            events = try store.watch(filter, from: revision)
        } catch let error as StoreError {
            // Upstream answers a too-old revision inside the watch: 200, one ERROR event, done.
            let line = Self.line(["type": "ERROR", "object": error.apiError(about: resource).status])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: line)))
        }
        let channel = t.channel
        let target = t
        let lines = Self.lines(events, timeout: timeout, registry: watches, disconnect: { channel?.close(promise: nil) }) { event, first in
            var object = event.object
            if target.presented != nil, !table {
                // Another resource's shape: this watcher's own bytes, not the shared encoding.
                return Self.line(["type": .string(event.type.rawValue), "object": target.outward(object)])
            }
            if table {
                object = Tables.table([object], resource, revision: object.resourceVersion ?? 0, includeObject: includeObject, headers: first)
            } else if let encoding = event.encoding {
                // Made once for every watcher of this change.
                return encoding.bytes(event.type.rawValue) { Self.line(["type": .string(event.type.rawValue), "object": object]) }
            }
            return Self.line(["type": .string(event.type.rawValue), "object": object])
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(asyncSequence: lines))
    }

    static func line(_ event: JSON) -> [UInt8] {
        var bytes = event.bytes()
        bytes.append(0x0A)
        return bytes
    }

    static let longestWatch: Int64 = 86_400

    /// How far a watch's client may fall behind, in events written but not yet sent: past it, the
    /// client gets a final ERROR 410 (Expired) and must re-list, and one that does not read even
    /// that is disconnected after `cutOffAfter`. Upstream's cacher likewise ends slow watchers.
    static let watchBacklog = 1_000
    static let cutOffAfter: Duration = .seconds(5)

    /// The watch as chunks, ending cleanly after `timeout` seconds, or when the store ends it
    /// (a watcher that fell behind the store gets a final ERROR 410 event), or when the client
    /// falls `watchBacklog` events behind (410, then `disconnect` if it still does not read).
    /// Memory per watch is bounded by the backlog: nothing else buffers events.
    static func lines(_ events: AsyncThrowingStream<WatchEvent, any Error>, timeout: Double?, registry: WatchRegistry,
                      disconnect: @escaping @Sendable () -> Void = {},
                      _ encode: @escaping @Sendable (WatchEvent, Bool) -> [UInt8]) -> AsyncMapSequence<AsyncStream<ByteBuffer>, ByteBuffer> {
        let pending = Counter()
        let stream = AsyncStream(ByteBuffer.self, bufferingPolicy: .bufferingOldest(watchBacklog + 1)) { continuation in
            let id = registry.add(continuation)
            let feeder = Task {
                var first = true
                do {
                    for try await event in events {
                        if pending.value.load(ordering: .relaxed) >= watchBacklog {
                            throw StoreError.expired(requested: event.object.resourceVersion ?? 0, oldest: event.object.resourceVersion ?? 0)
                        }
                        pending.value.add(1, ordering: .relaxed)
                        continuation.yield(ByteBuffer(bytes: encode(event, first)))
                        first = false
                    }
                } catch let error as StoreError {
                    let status = APIError(code: 410, reason: "Expired",
                                          message: "the watch fell too far behind (\(watchBacklog) events unread); list again: \(error)").status
                    continuation.yield(ByteBuffer(bytes: line(["type": "ERROR", "object": status])))
                    // Its last line is queued; a client that never reads it is cut off.
                    try? await Task.sleep(for: cutOffAfter)
                    if pending.value.load(ordering: .relaxed) > 0 { disconnect() }
                } catch {}
                continuation.finish()
            }
            let timer = Task {
                guard let timeout else { return }
                try await Task.sleep(for: .seconds(timeout))
                continuation.finish()
            }
            continuation.onTermination = { _ in
                registry.remove(id)
                feeder.cancel()
                timer.cancel()
            }
        }
        return stream.map { chunk in
            pending.value.subtract(1, ordering: .relaxed)
            return chunk
        }
    }
}

/// Events handed to a watch's client but not yet taken by its connection.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
