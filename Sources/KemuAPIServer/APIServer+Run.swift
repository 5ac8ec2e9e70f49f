import Hummingbird
import KemuStore
import Logging
import NIOCore
import ServiceLifecycle

extension APIServer {
    /// Serves plain HTTP on `host:port` until the process is told to stop. SIGTERM/SIGINT drain
    /// through swift-service-lifecycle in reverse start order: open watches end first, then the
    /// HTTP server finishes its requests. `onRunning` gets the port actually bound (for port 0).
    public func run(host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        let app = Application(
            responder: self,
            configuration: .init(address: .hostname(host, port: port), serverName: "kemu"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: Logger(label: "kemu.apiserver")
        )
        let group = ServiceGroup(configuration: .init(
            services: [app, WatchCloser(watches: watches)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "kemu.apiserver")))
        try await group.run()
    }
}
