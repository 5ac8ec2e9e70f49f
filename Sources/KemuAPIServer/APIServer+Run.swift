import Hummingbird
import KemuStore
import Logging
import NIOCore
import ServiceLifecycle

extension APIServer {
    /// Serves plain HTTP on `host:port` until the process is told to stop. SIGTERM/SIGINT drain
    /// through swift-service-lifecycle in reverse start order: open watches end first, then the
    /// HTTP server finishes its requests. `onRunning` gets the port actually bound (for port 0).
    /// `background` loops (controllers) run beside the server and are cancelled first on shutdown.
    public func run(host: String, port: Int, background: [@Sendable () async throws -> Void] = [],
                    onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        let app = Application(
            responder: self,
            configuration: .init(address: .hostname(host, port: port), serverName: "kemu"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: Logger(label: "kemu.apiserver")
        )
        let group = ServiceGroup(configuration: .init(
            services: [app, WatchCloser(watches: watches)] + background.map(BackgroundLoop.init),
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "kemu.apiserver")))
        try await group.run()
    }
}

/// A controller loop as a lifecycle service: cancelled when the server starts shutting down.
struct BackgroundLoop: Service {
    let body: @Sendable () async throws -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await body() } catch is CancellationError {}
        }
    }
}
