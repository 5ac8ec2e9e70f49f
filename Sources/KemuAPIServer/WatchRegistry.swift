import NIOCore
import ServiceLifecycle
import Synchronization

/// The watch streams being served, so a stopping server can end them: a watch with no new events
/// would otherwise hold its connection open and the graceful shutdown would wait forever.
final class WatchRegistry: Sendable {
    private let open = Mutex<(next: Int, streams: [Int: AsyncStream<ByteBuffer>.Continuation])>((0, [:]))

    func add(_ continuation: AsyncStream<ByteBuffer>.Continuation) -> Int {
        open.withLock { state in
            state.next += 1
            state.streams[state.next] = continuation
            return state.next
        }
    }

    func remove(_ id: Int) { _ = open.withLock { $0.streams.removeValue(forKey: id) } }

    /// Ends every watch; clients see a clean end of stream and re-watch elsewhere (or later).
    func closeAll() {
        let streams = open.withLock { state in
            defer { state.streams.removeAll() }
            return Array(state.streams.values)
        }
        for s in streams { s.finish() }
    }
}

/// Runs until the server is asked to stop, then ends every watch. Started after the HTTP server,
/// so it is stopped (reverse order) before the server waits for connections to go idle.
struct WatchCloser: Service {
    let watches: WatchRegistry

    func run() async throws {
        try? await gracefulShutdown()
        watches.closeAll()
    }
}
